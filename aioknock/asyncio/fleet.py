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
import logging
import math
import resource
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import ClientSettings
from ..config.values import override, place, placed
from ..errors import AioknockError, ConfigError, SendError
from .client import build_spa, client_for, plan_knock, spa_allow
from .datagrams import Datagrams
from .sender import HOLD_MAX, Attempt, Mode, Resolved, resolve, send_knock

log = logging.getLogger("aioknock.fleet")

Ports = Sequence[int | tuple[int, str]]
ARGUMENT = "knock_many() argument"
FD_HEADROOM = 64
# Knocks per second the default concurrency plans for, by mode: about a third of what
# one core sends (benchmarks/bench_fleet.py: ~58k bare SYNs/s, ~18k open_connection
# attempts/s), so the loop keeps its schedule with room to spare.
SYN_RATE = 20_000
CONNECT_RATE = 6_000
START_BATCH = 32  # hosts started per loop pass: timers due meanwhile wait for one batch
VERIFY_ATTEMPT = 0.5


# The --json object, one per host: (name, JSON type, meaning). The manual and the
# README document it from this table; ``KnockResult.as_json`` writes exactly these.
JSON_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("host", "string", "the host as given (name or address)"),
    ("protocol", "string", "what was sent: knockclient (the prototype's knock), sequence "
                           "(knockd's) or spa (fwknop's datagram)"),
    ("remote", "string", "the same: the prototype client's name for it"),
    ("address", "string", "the address knocked, as resolved"),
    ("values", "array of integers", "the knock's bytes before encryption (empty for a "
                                    "sequence or SPA)"),
    ("payload", "array of integers", "the bytes sent: the (encrypted) knock, or the SPA "
                                     "datagram"),
    ("ports", "array of integers", "the ports knocked, in order (SPA: the server's UDP port)"),
    ("started", "number", "epoch seconds when this host's knock began"),
    ("finished", "number", "epoch seconds when it ended (after -verify, if asked)"),
    ("ok", "boolean", "the knock left, and with -verify the port then accepted a connection; "
                      "false counts as failed in the summary and the exit status"),
    ("error", "string or null", "why ok is false (null when it is true)"),
    ("verified", "boolean or null", "-verify's answer: the port accepted a connection "
                                    "(true) or stayed closed (false); null: not asked"),
)  # fmt: skip


@dataclass(slots=True)
class KnockResult:
    """What happened to one host; ``ok`` is False with ``error`` saying why (a port
    that -verify found still closed included)."""

    host: str
    protocol: str = "knockclient"
    address: str = ""
    ports: list[int] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    payload: bytes = b""
    attempts: list[Attempt] = field(default_factory=list)
    started: float = 0.0  # epoch seconds
    finished: float = 0.0
    ok: bool = False
    error: str = ""
    verified: bool | None = None  # None: not asked

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: the fields of ``JSON_FIELDS``, in its order."""
        values = {
            "host": self.host,
            "protocol": self.protocol,
            "remote": self.host,
            "address": self.address,
            "values": self.values,
            "payload": list(self.payload),
            "ports": self.ports,
            "started": round(self.started, 6),
            "finished": round(self.finished, 6),
            "ok": self.ok,
            "error": self.error or None,
            "verified": self.verified,
        }
        return {name: values[name] for name, _, _ in JSON_FIELDS}


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
            if loop.time() + 0.1 >= deadline:
                return False
            await asyncio.sleep(0.1)
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
        now = time.time()
        return KnockResult(host, started=now, finished=now, error=str(exc))
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
    kind = "sequence" if settings.sequence and settings.protocol != "spa" else settings.protocol
    result = KnockResult(host, kind, started=time.time())
    try:
        target = await resolve(host, settings.family)
        result.address = target.address
        if settings.protocol == "spa":
            await _send_spa(settings, target, result, datagrams)
        else:
            await _send_ports(settings, target, result, watch)
        if settings.verify and not settings.test:
            result.verified = await _verify(target, settings.verify, settings.verify_timeout)
            if not result.verified:
                raise SendError(f"port {settings.verify} still closed "
                                f"{settings.verify_timeout:g} s after the knock")  # fmt: skip
        result.ok = True
    except (AioknockError, OSError) as exc:
        # Every line names its host ("Too many open files" alone says nothing of which).
        error = str(exc) if isinstance(exc, AioknockError) else exc.strerror or str(exc)
        result.error = error if host in error else f"{host}: {error}"
    finally:
        result.finished = time.time()
    return result


async def _send_ports(
    settings: ClientSettings, target: Resolved, result: KnockResult, watch: bool
) -> None:
    ports = _ports(settings, target, result)
    if settings.test:
        return
    mode: Mode = "connect" if settings.connect else "syn"
    result.attempts = await send_knock(target, ports, settings.timeout, mode=mode,
                                       jitter=settings.jitter, watch=watch)  # fmt: skip


async def _send_spa(
    settings: ClientSettings, target: Resolved, result: KnockResult, datagrams: Datagrams
) -> None:
    """One datagram of its own (random value, salt, timestamp) for this host."""
    packet = build_spa(settings, spa_allow(settings, target.address, target.family))
    result.payload, result.ports = packet, [settings.spa_server_port]
    if not settings.test:
        await datagrams.send(target, settings.spa_server_port, packet)


def _ports(settings: ClientSettings, target: Resolved, result: KnockResult) -> Ports:
    """What to send: the fixed sequence, or a fresh knock for this host."""
    if settings.sequence:
        result.ports = [port for port, _ in settings.sequence]
        return settings.sequence
    client = client_for(settings, target.address, target.family)
    plan = plan_knock(settings, client)
    result.values, result.payload, result.ports = plan.values, plan.payload, plan.ports
    return plan.ports


# A host; or a host and its own settings, whole or as keys to change.
HostSpec = str | tuple[str, ClientSettings | Mapping[str, Any]]


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
                    now = time.time()
                    yield KnockResult(_host_of(target), started=now, finished=now, error=str(exc))
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


def _host_of(target: HostSpec) -> str:
    return target if isinstance(target, str) else str(target[0])


def host_settings(
    target: HostSpec, settings: ClientSettings, where: str | None = None
) -> tuple[str, ClientSettings]:
    """A target's host and its settings: ``settings.for_host(host)`` (the config file's
    ``<host>`` blocks), then the target's own keys (those the table marks per-host),
    checked whole; a ConfigError about those keys names ``where`` (by default the host)."""
    if isinstance(target, str):
        return target, settings.for_host(target)
    host, overrides = target
    if isinstance(overrides, ClientSettings):
        return host, overrides  # built (and checked) already: a hosts-file line's
    if not overrides:
        return host, settings.for_host(host)
    at = host if where is None else where
    if settings.sequence:
        raise ConfigError("a fixed sequence has no per-host settings", **place(at))
    own = override(settings.for_host(host), overrides, at, host=True)
    try:
        own.check_sendable()
    except ConfigError as exc:
        raise placed(exc, {}, at) from None
    return host, own
