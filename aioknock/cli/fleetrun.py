"""``aioknock run`` on the event loop: many hosts at once, ``--hosts -``, ``logtofile``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from ..asyncio.client import carried, client_address, plan_knock
from ..asyncio.fleet import knock_many, raise_fd_limit
from ..asyncio.hostknock import KnockResult, host_settings
from ..asyncio.logfile import write_knock
from ..config.settings import ClientSettings
from ..logs import get_logger
from .exits import EXIT_FAILED, EXIT_INTERRUPTED
from .output import emit_json, say
from .run import Progress, Tally, report

log = get_logger("aioknock")


async def run_many(
    ns: argparse.Namespace, settings: ClientSettings, targets: Any, total: int | None
) -> int:
    if settings.logtofile:
        return await _log_to_file(settings, targets, json_out=ns.json)
    tally = _start_run(ns, settings, total)
    single = total == 1
    try:
        async for result in knock_many(targets, settings, watch=single or settings.debug > 0):
            report(result, settings, single=single)
            tally.count(result.ok)
            if ns.json:
                emit_json(result.as_json())  # a closed pipe stops no knock
    except asyncio.CancelledError:
        tally.close()
        left = f" of {total}" if total else ""
        log.error("interrupted: %d%s hosts done (%d failed); the others were stopped "
                  "mid-knock or not started; every socket is closed", tally.done, left,
                  tally.failed)  # fmt: skip
        # The top-level task: the summary above is the whole report, so the runner
        # returns 130 instead of raising KeyboardInterrupt for a second line.
        return EXIT_INTERRUPTED
    tally.close()
    if settings.test:
        say("test mode: nothing sent")
    if not single:
        say(f"knocked {tally.done} hosts in {time.monotonic() - tally.started:.2f} s: "
            f"{tally.ok} ok, {tally.failed} failed")  # fmt: skip
    return EXIT_FAILED if tally.failed else 0


def _start_run(ns: argparse.Namespace, settings: ClientSettings, total: int | None) -> Tally:
    """Room for a fleet (open files), a short GC pause, and a progress bar on a terminal."""
    if not settings.concurrency and total != 1:
        old, new = raise_fd_limit()
        if new != old:
            log.debug("raised the open-files limit from %d to %d", old, new)
    # What is alive now (modules, settings, codec) lives until exit: frozen, a full
    # collection mid-run walks only the run's objects and keeps its pause short.
    gc.freeze()
    shown = total != 1 and sys.stderr.isatty() and not settings.quiet and not ns.json
    return Tally(total, Progress(total) if shown else None)


async def _log_to_file(settings: ClientSettings, targets: Any, *, json_out: bool) -> int:
    """``logtofile``: each host's knock as faked log lines, hosts one after another."""
    hosts = [host_settings(target, settings) async for target in _aiter(targets)]
    for host, own in hosts:
        address = await asyncio.to_thread(client_address, own, host)
        result = KnockResult(host, address=host, started=time.time(), ok=True)
        plan = plan_knock(own, carried(own, host, address))
        result.values, result.payload, result.ports = plan.values, plan.payload, plan.ports
        say(f"knock for {host}: {' '.join(map(str, plan.ports))}")
        if not settings.test:
            await write_knock(settings.logfile, settings.fileformat, client=address,
                              remote=host, ports=plan.ports, timeout=settings.timeout)  # fmt: skip
            say(f"wrote {len(plan.ports)} lines to {settings.logfile}")
        result.finished = time.time()
        if json_out:
            emit_json(result.as_json())
    if settings.test:
        say("test mode: nothing sent")
    return 0


async def _aiter(targets: Any) -> AsyncIterator[Any]:
    if hasattr(targets, "__aiter__"):
        async for t in targets:
            yield t
    else:
        for t in targets:
            yield t
