"""Knock many hosts at once: the library API behind ``aioknock run host1 host2 ...``.

Each host gets its own knock (fresh RAND, IV and time fields, its own CLIENT
by route) and its own absolute schedule; all hosts are in flight together up
to a concurrency bound. The codec, and with it the cipher's key material, is
built once for all hosts. A host that cannot be resolved, routed or knocked
fails alone, with its reason, and the others go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import resource
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
)
from typing import Any

from ..config.settings import ClientSettings
from ..config.values import override
from ..errors import AioknockError, ConfigError
from ..logs import get_logger
from .attempts import VERIFY_ATTEMPT, VERIFY_RETRY
from .datagrams import Datagrams
from .hostknock import (
    JSON_FIELDS,
    HostSpec,
    KnockResult,
    Ports,
    begun,
    failed,
    host_settings,
    knock_ports,
    refused,
    spa_packet,
    still_closed,
)
from .sender import HOLD_MAX, Mode, Resolved, resolve, send_knock

__all__ = ["JSON_FIELDS", "HostSpec", "KnockResult", "host_settings", "knock", "knock_many"]

log = get_logger("aioknock.fleet")

ARGUMENT = "knock_many() argument"
FD_HEADROOM = 64
# Knocks per second the default concurrency plans for, by mode: about a third of what
# one core sends (benchmarks/bench_fleet.py: ~58k bare SYNs/s, ~18k open_connection
# attempts/s), so the loop keeps its schedule with room to spare.
SYN_RATE = 20_000
CONNECT_RATE = 6_000
START_BATCH = 32  # hosts started per loop pass: timers due meanwhile wait for one batch


def open_files() -> int:
    """The soft limit of open files (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def hosts_that_fit(sockets_per_host: int) -> int:
    """Hosts whose sockets (and one more each, for the route look-up) fit under the
    open-files limit, with headroom for the loop itself (a quarter of a small limit)."""
    soft = open_files()
    return max(1, (soft - min(FD_HEADROOM, soft // 4)) // (sockets_per_host + 1))


def sockets_per_host(knocks_per_host: int, timeout: float, *, watch: bool = True) -> int:
    """Sockets one host holds at once: one unless its knocks are watched to the end."""
    if not watch:
        return 1
    hold = min(max(timeout, 0.05), HOLD_MAX)
    return max(1, min(knocks_per_host, math.ceil(hold / timeout) + 1 if timeout else 1))


def default_concurrency(
    knocks_per_host: int, timeout: float, mode: Mode = "syn", *, watch: bool = True
) -> int:
    """Hosts in flight: their sockets fit under RLIMIT_NOFILE with headroom, and
    together they ask for at most ``SYN_RATE`` (``CONNECT_RATE``) knocks per second
    (each host sends one per ``timeout``). More would not finish sooner: the loop
    would fall behind its schedule and send late, back-to-back knocks."""
    by_fds = hosts_that_fit(sockets_per_host(knocks_per_host, timeout, watch=watch))
    rate = SYN_RATE if mode == "syn" else CONNECT_RATE
    by_rate = math.ceil(rate * timeout) if timeout > 0 else by_fds
    return max(1, min(by_fds, by_rate))


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns (old, new). For the CLI only:
    a library should not change its host process's limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _verify(target: Resolved, port: int, within: float) -> bool:
    """Try to connect to the protected port until it answers or ``within`` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            async with asyncio.timeout(min(VERIFY_ATTEMPT, max(0.05, deadline - loop.time()))):
                _, writer = await asyncio.open_connection(target.address, port,
                                                          family=target.family)  # fmt: skip
        except (OSError, TimeoutError):
            if loop.time() + VERIFY_RETRY >= deadline:
                return False
            await asyncio.sleep(VERIFY_RETRY)
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True


async def knock(host: str, what: ClientSettings | Ports, *, watch: bool = True,
                **overrides: Any) -> KnockResult:  # fmt: skip
    """Knock one host with an encoded knock (settings) or a fixed port sequence;
    ``overrides`` are settings keys (``timeout=0.1``, ``verify=22``...).

    Never raises for a network or knock failure: the result says what went wrong.
    Cancelling it closes every socket it opened.
    """
    try:
        _, settings = host_settings(host, _settings(what, overrides))  # its <host> blocks
    except ConfigError as exc:  # blocks that are wrong together, for this host
        return refused(host, exc)
    datagrams = Datagrams()
    try:
        return await _knock(host, settings, watch, datagrams)
    finally:
        datagrams.close()


def _settings(what: ClientSettings | Ports, overrides: Mapping[str, Any]) -> ClientSettings:
    if isinstance(what, ClientSettings):
        return override(what, overrides, ARGUMENT)
    return override(ClientSettings(), {**overrides, "sequence": list(what)}, ARGUMENT)


async def _knock(
    host: str, settings: ClientSettings, watch: bool, datagrams: Datagrams
) -> KnockResult:
    result = begun(host, settings)
    try:
        target = await resolve(host, settings.family)
        result.address = target.address
        if settings.protocol == "spa":
            packet = spa_packet(settings, target, result)
            if not settings.test:
                await datagrams.send(target, settings.spa_server_port, packet)
        else:
            await _send_ports(settings, target, result, watch)
        if settings.verify and not settings.test:
            result.verified = await _verify(target, settings.verify, settings.verify_timeout)
            if not result.verified:
                raise still_closed(settings)
        result.ok = True
    except (AioknockError, OSError) as exc:
        failed(result, exc)
    finally:
        result.finished = time.time()
    return result


async def _send_ports(
    settings: ClientSettings, target: Resolved, result: KnockResult, watch: bool
) -> None:
    ports = knock_ports(settings, target, result)
    if settings.test:
        return
    mode: Mode = "connect" if settings.connect else "syn"
    result.attempts = await send_knock(target, ports, settings.timeout, mode=mode,
                                       jitter=settings.jitter, watch=watch)  # fmt: skip


async def _iterate(
    targets: Iterable[HostSpec] | AsyncIterable[HostSpec],
) -> AsyncIterator[HostSpec]:
    if isinstance(targets, AsyncIterable):
        async for t in targets:
            yield t
    else:
        for t in targets:
            yield t


async def knock_many(
    targets: Iterable[HostSpec] | AsyncIterable[HostSpec],
    what: ClientSettings | Ports,
    *,
    concurrency: int | None = None,
    watch: bool = True,
    **overrides: Any,
) -> AsyncIterator[KnockResult]:
    """Knock every target, ``concurrency`` hosts at a time (None: the settings'
    ``concurrency``, where 0 sizes it); yields results as hosts finish. ``overrides``
    are settings keys for every host (``timeout=0.1``, ``verify=22``...).

    A target is a host name or address, or ``(host, {"port": 2222, ...})`` to override
    settings for that host, or ``(host, settings)``: its whole settings, as they are. Breaking out
    of the loop, or cancelling the task that runs it, cancels the hosts in flight and
    closes all their sockets.

    A full garbage collection walks every live object and holds up the knocks due
    meanwhile (~8 ms with 1,000 hosts in flight); a tool that knocks large fleets at
    tight timeouts can call ``gc.freeze()`` after start-up, as the CLI does.
    """
    settings = _settings(what, overrides)
    if concurrency is None:
        concurrency = settings.concurrency or _default_for(settings, watch)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    concurrency = _within_open_files(concurrency, settings, watch)
    results = _knock_all(_iterate(targets), settings, concurrency, watch)
    try:
        async for result in results:
            yield result
    finally:
        await results.aclose()  # now, not when the collector finds it: sockets close


def _default_for(settings: ClientSettings, watch: bool) -> int:
    mode: Mode = "connect" if settings.connect else "syn"
    return default_concurrency(_knocks_per_host(settings), settings.timeout, mode, watch=watch)


def _knocks_per_host(settings: ClientSettings) -> int:
    if settings.protocol == "spa":
        return 1
    return len(settings.sequence) or settings.codec.knock_length


def _within_open_files(concurrency: int, settings: ClientSettings, watch: bool) -> int:
    """``concurrency``, or what the open-files limit allows if that is less (said once:
    a run held back by it is slower than it need be, and one beyond it fails hosts)."""
    per_host = sockets_per_host(_knocks_per_host(settings), settings.timeout, watch=watch)
    fit = hosts_that_fit(per_host)
    if fit < concurrency or (not settings.concurrency and fit < _by_rate(settings)):
        log.warning("the open-files limit (%d) lets %d hosts be knocked at once%s; "
                    "ulimit -n raises it", open_files(), fit,
                    f", not {concurrency}" if fit < concurrency else "")  # fmt: skip
    return min(concurrency, fit)


def _by_rate(settings: ClientSettings) -> int:
    rate = CONNECT_RATE if settings.connect else SYN_RATE
    return math.ceil(rate * settings.timeout) if settings.timeout > 0 else 1 << 30


async def _knock_all(
    source: AsyncIterator[HostSpec], settings: ClientSettings, concurrency: int, watch: bool
) -> AsyncGenerator[KnockResult, None]:
    running: set[asyncio.Task[KnockResult]] = set()
    # Finished hosts arrive through callbacks: asyncio.wait() over the running set would
    # cost O(hosts in flight) per finished host.
    finished: collections.deque[asyncio.Task[KnockResult]] = collections.deque()
    wake = asyncio.Event()

    def on_done(task: asyncio.Task[KnockResult]) -> None:
        finished.append(task)
        wake.set()

    exhausted = False
    started = 0
    datagrams = Datagrams()
    try:
        while True:
            while not exhausted and len(running) < concurrency:
                if started and started % START_BATCH == 0:
                    # Let the batch send its first knocks and due timers fire: a host's
                    # start (resolve, encode, first connect) runs without suspending.
                    await asyncio.sleep(0)
                try:
                    target = await anext(source)
                except StopAsyncIteration:
                    exhausted = True
                    break
                try:
                    host, own = host_settings(target, settings)
                except ConfigError as exc:  # a bad per-host override: that host fails alone
                    yield refused(target, exc)
                    continue
                task = asyncio.create_task(_knock(host, own, watch, datagrams))
                task.add_done_callback(on_done)
                running.add(task)
                started += 1
            if not running:
                return
            while not finished:
                wake.clear()
                await wake.wait()
            while finished:
                task = finished.popleft()
                running.discard(task)
                yield task.result()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        datagrams.close()
