"""``aioknock run``: which hosts, what people read on stderr, and one host without a loop.

One host (the everyday ``aioknock run HOST``) is knocked in this thread
(``asyncio/oneshot.py``): no event loop is imported or started, which is most of a
one-knock command's start-up. Several hosts, ``--hosts``, ``logtofile`` and
``-connect`` run on the event loop (``fleetrun.py``).
"""

from __future__ import annotations

import argparse
import sys
import time

from ..asyncio.hostknock import KnockResult, host_settings, refused
from ..asyncio.oneshot import knock_one
from ..config.kinds import BOOL_WORDS
from ..config.settings import ClientSettings
from ..errors import ConfigError
from ..logs import DEBUG, get_logger
from .exits import EXIT_FAILED
from .hosts import parse_line, read_hosts_file, stdin_hosts
from .loop import run_async
from .output import emit_json, say

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any


log = get_logger("aioknock")


def run(ns: argparse.Namespace, settings: ClientSettings) -> int:
    listed, total = targets(ns, settings)
    if total == 1 and not settings.logtofile and not settings.connect:
        return _run_one(ns, settings, listed[0])
    from .fleetrun import run_many  # the event loop and the fleet engine: not for one host

    return run_async(run_many(ns, settings, listed, total))


def _run_one(ns: argparse.Namespace, settings: ClientSettings, target: Any) -> int:
    try:
        host, own = host_settings(target, settings)
    except ConfigError as exc:  # a bad per-host override
        result = refused(target, exc)
    else:
        result = knock_one(host, own)
    report(result, settings, single=True)
    if ns.json:
        emit_json(result.as_json())
    if settings.test:
        say("test mode: nothing sent")
    return 0 if result.ok else EXIT_FAILED


def targets(ns: argparse.Namespace, settings: ClientSettings) -> tuple[Any, int | None]:
    """The hosts to knock and how many (None: not known ahead, from stdin)."""
    if ns.hosts == "-":
        if ns.targets:
            raise ConfigError("give hosts as arguments or with --hosts, not both",
                              source="command line")  # fmt: skip
        return stdin_hosts(settings), None
    for word in ns.targets:
        if not word.strip():
            raise ConfigError("an empty host name", source="command line")
        # "-encrypt yes", "-debug 2": would be knocked as hosts (2 is 0.0.0.2).
        if word.lower() in BOOL_WORDS or word.isdigit():
            i = ns.argv.index(word)
            switch = ns.argv[i - 1].lstrip("-") if i > 0 else "encrypt"
            raise ConfigError(f"{word!r} is not a host: switches take no value (write "
                              f"-{switch} or -no{switch})", source="command line")  # fmt: skip
    listed: list[Any] = [parse_line(t, "command line", settings) for t in ns.targets]
    if ns.hosts:
        listed += read_hosts_file(ns.hosts, settings)
    if not listed:
        listed = [settings.remote]
    return listed, len(listed)


class Progress:
    """done/total, rate and failures on a terminal; nothing when stderr is not one."""

    def __init__(self, total: int | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="host", file=sys.stderr, dynamic_ncols=True,
                        leave=False, mininterval=0.2)  # fmt: skip
        self.failed = 0

    def update(self, ok: bool) -> None:
        if not ok:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class Tally:
    """Hosts done so far, for the progress bar and the summary."""

    __slots__ = ("failed", "ok", "progress", "started", "total")

    def __init__(self, total: int | None, progress: Progress | None) -> None:
        self.total = total
        self.progress = progress
        self.ok = 0
        self.failed = 0
        self.started = time.monotonic()

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def count(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.progress is not None:
            self.progress.update(ok)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def report(result: KnockResult, settings: ClientSettings, *, single: bool) -> None:
    """One host's knock is the command's output (``say``); a fleet's hosts', diagnostics
    (made only when ``-debug`` shows them: a fleet has thousands)."""
    tell = say if single else log.debug
    shown = single or log.is_enabled_for(DEBUG)
    if shown and result.ports:
        if result.protocol == "spa":
            tell(f"SPA packet for {result.host}: {len(result.payload)} bytes to udp port "
                 f"{result.ports[0]}")  # fmt: skip
        else:
            tell(f"knock for {result.host}: {' '.join(map(str, result.ports))}")
    if result.values:
        log.debug("values  %s", " ".join(map(str, result.values)))
        log.debug("payload %s", " ".join(map(str, result.payload)))
    for a in result.attempts:
        log.debug("%s port %d: %s", result.host, a.port, a.outcome)
    if not result.ok:
        log.error("%s", result.error)
        return
    if result.verified:
        say(f"{result.host}: port {settings.verify} open after the knock")
    if shown and result.attempts:
        tell(f"sent {len(result.attempts)} knocks to {result.host} ({result.address})")
