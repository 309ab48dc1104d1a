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
import dataclasses
import math
import resource
import secrets
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.settings import FLAG, ClientSettings
from ..errors import AioknockError
from ..knock import codec_for, knock_inputs, local_address_for
from .sender import HOLD_MAX, Attempt, Mode, Target, resolve, send_knock

Ports = Sequence[int | tuple[int, str]]
FD_HEADROOM = 64
# Knocks per second the default concurrency plans for, by mode: about a third of what
# one core sends (benchmarks/bench_fleet.py: ~58k bare SYNs/s, ~18k open_connection
# attempts/s), so the loop keeps its schedule with room to spare.
SYN_RATE = 20_000
CONNECT_RATE = 6_000
START_BATCH = 32  # hosts started per loop pass: timers due meanwhile wait for one batch
VERIFY_ATTEMPT = 0.5


@dataclass(slots=True)
class KnockResult:
    """What happened to one host; ``ok`` is False with ``error`` saying why."""

    host: str
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
        """The client's ``--json`` object, extended with the host's outcome."""
        return {
            "host": self.host,
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


@dataclass(frozen=True, slots=True)
class Options:
    timeout: float | None = None  # None: the settings' timeout (0.2 s for a bare sequence)
    family: int = socket.AF_UNSPEC
    mode: Mode = "syn"
    jitter: float = 0.0
    verify: int | None = None
    verify_timeout: float = 3.0
    watch: bool = True
    send: bool = True  # False: resolve and encode only (-test)


def default_concurrency(knocks_per_host: int, timeout: float, mode: Mode = "syn") -> int:
    """Hosts in flight: their sockets fit under RLIMIT_NOFILE with headroom, and
    together they ask for at most ``SYN_RATE`` (``CONNECT_RATE``) knocks per second
    (each host sends one per ``timeout``). More would not finish sooner: the loop
    would fall behind its schedule and send late, back-to-back knocks."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    hold = min(max(timeout, 0.05), HOLD_MAX)
    per_host = max(1, min(knocks_per_host, math.ceil(hold / timeout) + 1 if timeout else 1))
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    by_fds = (soft - FD_HEADROOM) // (per_host + 1)
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


async def _verify(target: Target, port: int, within: float) -> bool:
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


def _client_for(settings: ClientSettings, target: Target) -> str:
    if settings.client.lower() not in ("", "auto"):
        return settings.client
    # A connected UDP socket to a numeric address: a route lookup, no packet, no DNS.
    return local_address_for(target.address, target.family)


async def knock(
    host: str,
    what: ClientSettings | Ports,
    *,
    timeout: float | None = None,
    family: int = socket.AF_UNSPEC,
    mode: Mode = "syn",
    jitter: float = 0.0,
    verify: int | None = None,
    verify_timeout: float = 3.0,
    watch: bool = True,
) -> KnockResult:
    """Knock one host with an encoded knock (settings) or a fixed port sequence.

    Never raises for a network or knock failure: the result says what went wrong.
    Cancelling it closes every socket it opened.
    """
    options = Options(timeout, family, mode, jitter, verify, verify_timeout, watch)
    return await _knock(host, what, options)


async def _knock(host: str, what: ClientSettings | Ports, options: Options) -> KnockResult:
    result = KnockResult(host, started=time.time())
    try:
        target = await resolve(host, options.family)
        result.address = target.address
        if isinstance(what, ClientSettings):
            timeout = what.timeout if options.timeout is None else options.timeout
            codec = codec_for(what)
            client = _client_for(what, target) if "CLIENT" in codec.format.fields else ""
            inputs = knock_inputs(what, client, host)
            plan = codec.build(inputs, time.time(), secrets.token_bytes)
            result.values, result.payload, result.ports = plan.values, plan.payload, plan.ports
            ports: Ports = plan.ports
        else:
            timeout = 0.2 if options.timeout is None else options.timeout
            ports = what
            result.ports = [p if isinstance(p, int) else p[0] for p in what]
        if not options.send:
            result.ok = True
            return result
        result.attempts = await send_knock(
            target, ports, timeout, mode=options.mode, jitter=options.jitter, watch=options.watch
        )
        if options.verify is not None:
            result.verified = await _verify(target, options.verify, options.verify_timeout)
        result.ok = True
    except (AioknockError, OSError) as exc:
        result.error = str(exc)
    finally:
        result.finished = time.time()
    return result


Target_ = str | tuple[str, Mapping[str, Any]]


async def _iterate(targets: Iterable[Target_] | AsyncIterable[Target_]) -> AsyncIterator[Target_]:
    if isinstance(targets, AsyncIterable):
        async for t in targets:
            yield t
    else:
        for t in targets:
            yield t


async def knock_many(
    targets: Iterable[Target_] | AsyncIterable[Target_],
    what: ClientSettings | Ports,
    *,
    concurrency: int | None = None,
    timeout: float | None = None,
    family: int = socket.AF_UNSPEC,
    mode: Mode = "syn",
    jitter: float = 0.0,
    verify: int | None = None,
    verify_timeout: float = 3.0,
    watch: bool = True,
    send: bool = True,
) -> AsyncIterator[KnockResult]:
    """Knock every target, ``concurrency`` hosts at a time; yields results as hosts finish.

    A target is a host name or address, or ``(host, {"port": 2222, ...})`` to override
    settings for that host. Breaking out of the loop, or cancelling the task that runs
    it, cancels the hosts in flight and closes all their sockets.

    A full garbage collection walks every live object and holds up the knocks due
    meanwhile (~8 ms with 1,000 hosts in flight); a tool that knocks large fleets at
    tight timeouts can call ``gc.freeze()`` after start-up, as the CLI does.
    """
    options = Options(timeout, family, mode, jitter, verify, verify_timeout, watch, send)
    if concurrency is None:
        per_host = 8 if not isinstance(what, ClientSettings) else codec_for(what).knock_length
        t = what.timeout if isinstance(what, ClientSettings) and timeout is None else timeout
        concurrency = default_concurrency(per_host, t or 0.0, mode)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency}")
    running: set[asyncio.Task[KnockResult]] = set()
    # Finished hosts arrive through callbacks: asyncio.wait() over the running set would
    # cost O(hosts in flight) per finished host.
    finished: collections.deque[asyncio.Task[KnockResult]] = collections.deque()
    wake = asyncio.Event()

    def on_done(task: asyncio.Task[KnockResult]) -> None:
        finished.append(task)
        wake.set()

    source = _iterate(targets)
    exhausted = False
    started = 0
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
                    host, per_host_what = _target(target, what)
                except ValueError as exc:  # a bad per-host override: that host fails alone
                    now = time.time()
                    name = target if isinstance(target, str) else str(target[0])
                    yield KnockResult(name, started=now, finished=now, error=str(exc))
                    continue
                task = asyncio.create_task(_knock(host, per_host_what, options))
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


def _target(target: Target_, what: ClientSettings | Ports) -> tuple[str, ClientSettings | Ports]:
    if isinstance(target, str):
        return target, what
    host, overrides = target
    if not overrides:
        return host, what
    if not isinstance(what, ClientSettings):
        raise ValueError(f"{host}: per-host settings need knock settings, not a port sequence")
    try:
        return host, with_overrides(what, overrides)
    except ValueError as exc:
        raise ValueError(f"{host}: {exc}") from None


def with_overrides(settings: ClientSettings, overrides: Mapping[str, Any]) -> ClientSettings:
    """``settings`` with some keys replaced, each value read and checked by its table kind."""
    table = {k.name: k for k in ClientSettings.table()}
    changes: dict[str, Any] = {}
    flags = dict(settings.flags)
    for key, raw in overrides.items():
        if key.startswith("flag") and key[4:].isdigit():
            try:
                flags[int(key[4:])] = FLAG(raw) % 256
            except (ValueError, TypeError):
                raise ValueError(f"{key}: expected {FLAG.expected}, got {raw!r}") from None
            continue
        if key not in table:
            raise ValueError(f"unknown setting {key!r}")
        try:
            changes[key] = table[key].kind(raw)
        except (ValueError, TypeError):
            raise ValueError(f"{key}: expected {table[key].kind.expected}, got {raw!r}") from None
    return dataclasses.replace(settings, **changes, flags=flags)
