"""``send_knock`` with real sockets, on loopback only.

Every packet here goes to 127.0.0.1 or ::1. The "unusable address" cases use
multicast and broadcast addresses, which the kernel refuses inside ``connect()``
(ENETUNREACH) before any packet is built; the "unresolvable name" case uses a
name under ``.invalid`` too long for DNS, which the resolver rejects without
sending a query (a short one would be sent to the configured nameserver).

Three kinds of port:
- a listener (asyncio server) that records, in order, the port each accepted
  connection came in on -> outcome ``open``;
- a closed port: bound but not listening, so nothing else can take it -> ``refused``;
- a silent port: a listener whose accept queue is full, so the kernel drops
  further SYNs as a dropping firewall would -> ``no answer``.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import os
import select
import socket
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers.loopback import HAVE_IPV6, needs_ipv6

from aioknock.asyncio.oneshot import knock_one, send_now
from aioknock.asyncio.sender import HOLD_MAX, HOLD_MIN, Attempt, Mode, Resolved, resolve, send_knock
from aioknock.config.settings import ClientSettings
from aioknock.errors import SendError

LOOPBACK = "127.0.0.1"
MODES: list[Mode] = ["syn", "connect"]
TIMEOUT = 0.05
# Correctness, not speed: a knock never leaves before its slot (EARLY: clock resolution);
# how late one leaves is the machine's load, so LATE bounds one slot generously. That
# lateness does not add up: test_lateness_does_not_accumulate, by an injected overshoot.
# Slots count from a clock reading just before the sender is called: the schedule starts
# at or after it (the first knock may itself be late, and the second then on time).
LATE = 0.3
EARLY = 0.002
# connect mode learns an outcome only once its task has run open_connection to the end,
# over several loop turns: more than a loaded machine does in 50 ms, so it holds longer.
CONNECT_HOLD = 0.2
# Injected into every wait of a sender: each slot's wait ends this much late. GAP > it,
# so every slot is still waited for; a relative schedule (last send + gap) would be
# i * OVERSHOOT late at knock i: past OVERSHOOT + LATE from knock 5 of 10 on.
OVERSHOOT = 0.08
GAP = 0.12
# Too long for DNS (263 > 253 characters): refused by the resolver before any query.
UNRESOLVABLE = ".".join(["k" * 63] * 4) + ".invalid"


@dataclass
class Accepts:
    """Connections accepted by the listeners, in the order the loop saw them."""

    seen: list[tuple[float, int, int]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def record(self, port: int) -> None:
        self.seen.append((asyncio.get_running_loop().time(), next(self._seq), port))

    def ports(self) -> list[int]:
        return [port for _, _, port in sorted(self.seen)]


class _Record(asyncio.Protocol):
    """Records the listener port a connection came in on, then closes it."""

    def __init__(self, accepts: Accepts) -> None:
        self.accepts = accepts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepts.record(transport.get_extra_info("sockname")[1])
        transport.close()


@dataclass
class Ports:
    host: str
    family: int
    accepts: Accepts
    listening: list[int]
    closed: list[int]
    silent: int

    @property
    def target(self) -> Resolved:
        return Resolved(self.host, self.family, self.host, (self.host, 0))


@pytest.fixture
def plain_sockets() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


async def _ports(host: str, socks: list[socket.socket]) -> AsyncIterator[Ports]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    accepts = Accepts()
    servers: list[asyncio.Server] = []
    listening: list[int] = []
    for _ in range(3):
        server = await loop.create_server(lambda: _Record(accepts), host, 0, family=family)
        servers.append(server)
        listening.append(server.sockets[0].getsockname()[1])
    closed: list[int] = []
    for _ in range(3):
        s = socket.socket(family, socket.SOCK_STREAM)
        socks.append(s)
        s.bind((host, 0))  # bound, not listening: connect() is refused (RST)
        closed.append(s.getsockname()[1])
    # Accept queue of one, filled: the kernel drops every further SYN.
    silent = socket.socket(family, socket.SOCK_STREAM)
    socks.append(silent)
    silent.bind((host, 0))
    silent.listen(0)
    filler = socket.create_connection((host, silent.getsockname()[1]), timeout=2)
    socks.append(filler)
    try:
        yield Ports(host, family, accepts, listening, closed, silent.getsockname()[1])
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
async def v4(plain_sockets: list[socket.socket]) -> AsyncIterator[Ports]:
    async for p in _ports(LOOPBACK, plain_sockets):
        yield p


@pytest.fixture
async def v6(plain_sockets: list[socket.socket]) -> AsyncIterator[Ports]:
    if not HAVE_IPV6:
        pytest.skip("::1 is not available on this host")
    async for p in _ports("::1", plain_sockets):
        yield p


def _mixed(p: Ports) -> tuple[list[int], list[str]]:
    """A knock visiting every kind of port, listeners more than once."""
    (l1, l2, l3), (c1, c2, c3), s = p.listening, p.closed, p.silent
    ports = [l1, c1, l2, s, c2, l3, l1, c3, s, l2]
    kind = {**dict.fromkeys(p.listening, "open"), **dict.fromkeys(p.closed, "refused")}
    kind[s] = "no answer"
    return ports, [kind[port] for port in ports]


async def _until(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Poll ``condition`` every 10 ms until it holds (True) or ``within`` s pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _settle(p: Ports, expected: int) -> None:
    """Let the listeners' accept callbacks run (bounded: the caller checks the count)."""
    await _until(lambda: len(p.accepts.seen) >= expected)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _check_schedule(
    attempts: list[Attempt], timeout: float, start: float, late: float = LATE
) -> list[float]:
    """Each knock's lateness against its slot ``start + i * timeout``: never early, at
    most ``late``."""
    errors = [a.sent - (start + i * timeout) for i, a in enumerate(attempts)]
    assert all(-EARLY <= e <= late for e in errors), [round(e * 1000, 2) for e in errors]
    return errors


def _slot(mode: Mode) -> float:
    """The gap (and so the hold) a test of outcomes uses in ``mode``."""
    return TIMEOUT if mode == "syn" else CONNECT_HOLD


# ------------------------------------------------------------------ order, outcome


async def _in_order(p: Ports, mode: Mode) -> None:
    ports, outcomes = _mixed(p)
    start = asyncio.get_running_loop().time()
    attempts = await send_knock(p.target, ports, _slot(mode), mode=mode)
    assert [a.port for a in attempts] == ports
    assert [a.outcome for a in attempts] == outcomes
    opened = [port for port, o in zip(ports, outcomes, strict=True) if o == "open"]
    await _settle(p, len(opened))
    assert p.accepts.ports() == opened
    _check_schedule(attempts, _slot(mode), start)


@pytest.mark.parametrize("mode", MODES)
async def test_attempts_arrive_in_order_with_right_outcomes(v4: Ports, mode: Mode) -> None:
    await _in_order(v4, mode)


@needs_ipv6
@pytest.mark.parametrize("mode", MODES)
async def test_ipv6_loopback(v6: Ports, mode: Mode) -> None:
    target = await resolve("::1")
    assert (target.family, target.address) == (socket.AF_INET6, "::1")
    ports, outcomes = _mixed(v6)
    attempts = await send_knock(target, ports, _slot(mode), mode=mode)
    assert [(a.port, a.outcome) for a in attempts] == list(zip(ports, outcomes, strict=True))
    opened = [port for port, o in zip(ports, outcomes, strict=True) if o == "open"]
    await _settle(v6, len(opened))
    assert v6.accepts.ports() == opened


async def test_resolve_numeric_loopback() -> None:
    target = await resolve(LOOPBACK)
    assert (target.family, target.address, target.sockaddr[0]) == (
        socket.AF_INET, LOOPBACK, LOOPBACK,
    )  # fmt: skip


# --------------------------------------------------------------------- schedule


async def test_schedule_is_absolute(v4: Ports) -> None:
    """Knock i leaves at start + i * timeout, never before; a refused knock ends at once."""
    ports = [v4.closed[i % 3] for i in range(16)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    attempts = await send_knock(v4.target, ports, TIMEOUT)
    done = loop.time()
    errors = _check_schedule(attempts, TIMEOUT, t0)
    print("schedule errors (ms):", [round(e * 1000, 2) for e in errors])
    assert {a.outcome for a in attempts} == {"refused"}
    assert done - t0 >= 15 * TIMEOUT - EARLY, done - t0
    # Refused at once: nothing to wait for after the last knock (not a hold, say).
    assert done - attempts[-1].sent < LATE, done - attempts[-1].sent


def _late_asyncio(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sender's asyncio with a ``sleep`` that wakes OVERSHOOT late, as a busy
    loop's does; returns the delays it was asked for."""
    from aioknock.asyncio import sender

    asked: list[float] = []

    async def sleep(delay: float) -> None:
        asked.append(delay)
        await asyncio.sleep(delay + OVERSHOOT)

    late = types.ModuleType("asyncio")
    late.__dict__.update(vars(asyncio), sleep=sleep)
    monkeypatch.setattr(sender, "asyncio", late)
    return asked


class _Poll:
    """``select.poll()`` whose ``poll`` waits ``by`` s longer than asked (the blocking
    sender's one way to wait); ``wakes``: each wake-up asked for, in monotonic time."""

    def __init__(self, by: float, wakes: list[float]) -> None:
        self.real, self.by, self.wakes = select.poll(), by, wakes

    def register(self, fd: int, mask: int) -> None:
        self.real.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self.real.unregister(fd)

    def poll(self, ms: float) -> list[tuple[int, int]]:
        self.wakes.append(time.monotonic() + ms / 1000)
        return self.real.poll(ms + self.by * 1000)


def _late_poll(monkeypatch: pytest.MonkeyPatch, by: float) -> list[float]:
    """oneshot's ``select`` with ``_Poll(by)`` for poll objects; returns their wakes."""
    from aioknock.asyncio import oneshot

    wakes: list[float] = []
    late = types.ModuleType("select")
    late.__dict__.update(vars(select), poll=lambda: _Poll(by, wakes))
    monkeypatch.setattr(oneshot, "select", late)
    return wakes


@pytest.mark.parametrize("which", ["send_knock", "send_now"])
async def test_lateness_does_not_accumulate(
    v4: Ports, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """Every wait ends OVERSHOOT late, yet knock i leaves near start + i * gap, not
    start + i * (gap + OVERSHOOT): the schedule is absolute, shown on any machine."""
    ports = [v4.closed[i % 3] for i in range(10)]
    if which == "send_knock":
        waits = _late_asyncio(monkeypatch)
        start = asyncio.get_running_loop().time()
        attempts = await send_knock(v4.target, ports, GAP)
    else:
        waits = _late_poll(monkeypatch, OVERSHOOT)
        start = time.monotonic()
        attempts = send_now(v4.target, ports, GAP)
    assert waits, "the overshoot was not injected where the sender waits"
    assert {a.outcome for a in attempts} == {"refused"}
    errors = _check_schedule(attempts, GAP, start, late=OVERSHOOT + LATE)
    assert errors[1] >= OVERSHOOT - EARLY, errors  # the first wait did overshoot


async def test_last_silent_knock_is_held_one_slot(v4: Ports) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    attempts = await send_knock(v4.target, [v4.closed[0], v4.silent], 0.1)
    elapsed = loop.time() - t0
    assert [a.outcome for a in attempts] == ["refused", "no answer"]
    # Not held at all: 0.1 s; held HOLD_MAX: 1 s.
    assert 0.2 - EARLY <= elapsed <= 0.2 + LATE, elapsed


def _timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The due times of the timers armed on the running (asyncio) loop from now on:
    call_later, sleep and timeouts arm theirs through call_at too."""
    loop = asyncio.get_running_loop()
    real = loop.call_at
    whens: list[float] = []

    def call_at(
        when: float, callback: Callable[..., object], *args: object, context: Any = None
    ) -> asyncio.TimerHandle:
        whens.append(when)
        return real(when, callback, *args, context=context)

    monkeypatch.setattr(loop, "call_at", call_at)
    return whens


async def test_hold_never_reaches_the_first_retransmission(
    v4: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a long timeout the silent knock is closed after HOLD_MAX, not at the next slot."""
    assert HOLD_MAX < 1.0
    timers = _timers(monkeypatch)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    attempts = await send_knock(v4.target, [v4.silent], 5.0)
    elapsed = loop.time() - t0
    assert attempts[0].outcome == "no answer"
    # Its close is due at sent + HOLD_MAX, before the kernel's first retransmission (1 s),
    # however late the loop then runs it.
    assert [w - attempts[0].sent for w in timers] == [pytest.approx(HOLD_MAX)], timers
    assert HOLD_MAX - EARLY <= elapsed < 2.0, elapsed


async def _timeout_zero(p: Ports, mode: Mode) -> None:
    ports, outcomes = _mixed(p)
    loop = asyncio.get_running_loop()
    held = HOLD_MIN if mode == "syn" else CONNECT_HOLD
    with pytest.MonkeyPatch.context() as mp:
        if mode == "connect":  # 50 ms is too short for its tasks on a loaded machine
            mp.setattr("aioknock.asyncio.attempts.HOLD_MIN", CONNECT_HOLD)
        t0 = loop.time()
        attempts = await send_knock(p.target, ports, 0, mode=mode)
        elapsed = loop.time() - t0
    assert [a.port for a in attempts] == ports
    sent = [a.sent for a in attempts]
    assert sent == sorted(sent)
    assert sent[-1] - sent[0] < LATE  # back to back (spaced by a hold: 0.45 s at least)
    # Each knock is still held the minimum hold, long enough to learn its outcome.
    for a, expected in zip(attempts, outcomes, strict=True):
        assert a.outcome == expected, (a, expected)
    assert held - EARLY <= elapsed < held + LATE, elapsed  # held HOLD_MAX: 0.9 s
    opened = [port for port, o in zip(ports, outcomes, strict=True) if o == "open"]
    await _settle(p, len(opened))
    # Wire order at timeout 0 is shown by the capture in test_netns_knock.py.
    assert sorted(p.accepts.ports()) == sorted(opened)


@pytest.mark.parametrize("mode", MODES)
async def test_timeout_zero_keeps_order(v4: Ports, mode: Mode) -> None:
    await _timeout_zero(v4, mode)


@pytest.mark.parametrize("last", ["closed", "listening"])
async def test_earlier_knocks_decided_when_last_resolves_at_once(v4: Ports, last: str) -> None:
    """Every knock gets its real outcome, whatever the last one did."""
    end = v4.closed[0] if last == "closed" else v4.listening[0]
    attempts = await send_knock(v4.target, [v4.silent, v4.listening[1], end], 0)
    assert [a.outcome for a in attempts][:2] == ["no answer", "open"]


async def test_empty_knock() -> None:
    assert await send_knock(await resolve(LOOPBACK), [], TIMEOUT) == []


# ----------------------------------------------------------------- local errors


async def test_unresolvable_name_is_a_send_error() -> None:
    with pytest.raises(SendError, match=r"cannot resolve"):
        await resolve(UNRESOLVABLE)


@pytest.mark.parametrize("name", ["knock..invalid", "k" * 64 + ".invalid", "bad\x00name"])
async def test_malformed_name_is_a_send_error(name: str) -> None:
    """Names the IDNA codec or the resolver refuse locally: one clear error, no traceback."""
    with pytest.raises(SendError, match=r"cannot resolve"):
        await resolve(name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "address", ["224.0.0.1", "255.255.255.255", pytest.param("ff02::1", marks=needs_ipv6)]
)
async def test_unusable_address_is_a_send_error(address: str, mode: Mode) -> None:
    before = _open_fds()
    target = await resolve(address)
    with pytest.raises(SendError, match=rf"cannot knock {address} .*port 40000"):
        await send_knock(target, [40000, 40001], TIMEOUT, mode=mode)
    assert _open_fds() == before


@pytest.mark.parametrize("bad", [0, 65536, -1])
async def test_port_out_of_range_rejected_before_sending(v4: Ports, bad: int) -> None:
    before = _open_fds()
    with pytest.raises(ValueError, match=str(bad)):
        await send_knock(v4.target, [v4.listening[0], bad], TIMEOUT)
    await asyncio.sleep(0.02)
    assert v4.accepts.seen == []  # nothing was sent
    assert _open_fds() == before


# ------------------------------------------------------------------ cancellation


async def _cancel_midway(p: Ports, mode: Mode) -> None:
    """Cancelled with a silent knock in flight: every socket is closed, and the last
    knock (to a listener) never leaves."""
    # Silent knocks hold a socket open for 18 slots (0.9 s) after the first listener
    # knock: a window in which even a loaded machine's poll sees both, and cancels.
    ports = [p.silent, p.listening[0], *[p.silent] * 18, p.listening[1]]
    before = _open_fds()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.create_task(send_knock(p.target, ports, TIMEOUT, mode=mode))
    assert await _until(lambda: bool(p.accepts.seen) and _open_fds() > before)
    assert not task.done()  # a silent knock is in flight, the last is still to come
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _open_fds() == before  # closed by the cancel, not by their own deadlines later
    # Past the last knock's slot (and its accept, had it been sent): a fixed wait, as
    # only time shows that nothing happens; a late wake-up just waits longer.
    await asyncio.sleep(t0 + (len(ports) + 2) * TIMEOUT - loop.time())
    assert p.accepts.ports() == [p.listening[0]]
    assert _open_fds() == before
    gc.collect()  # a leaked socket would warn (an error here) now, in this test


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_midway_leaves_nothing_open(v4: Ports, mode: Mode) -> None:
    await _cancel_midway(v4, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_timeout_cancels_cleanly(v4: Ports, mode: Mode) -> None:
    """An outer asyncio.timeout (how a caller bounds a knock) is a cancellation too."""
    before = _open_fds()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.12):  # 40 knocks: 2 s, ended at the third
            await send_knock(v4.target, [v4.silent] * 40, TIMEOUT, mode=mode)
    await asyncio.sleep(0.05)
    assert _open_fds() == before
    gc.collect()


async def test_timeout_zero_silent_knock_held_hold_min(v4: Ports) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    attempts = await send_knock(v4.target, [v4.silent] * 3, 0)
    elapsed = loop.time() - t0
    assert [a.outcome for a in attempts] == ["no answer"] * 3
    assert HOLD_MIN - EARLY <= elapsed < HOLD_MIN + LATE, elapsed  # held HOLD_MAX: 0.9 s


async def test_bad_mode_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        await send_knock(await resolve(LOOPBACK), [1], 0, mode="udp")  # type: ignore[arg-type]


# ------------------------------------------------- the same under uvloop (the CLI's loop)


def _uvloop_run(scenario: Callable[[Ports, Mode], Awaitable[None]], host: str, mode: Mode) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def body() -> None:
        socks: list[socket.socket] = []
        try:
            async for p in _ports(host, socks):
                await scenario(p, mode)
        finally:
            for s in socks:
                s.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", [_in_order, _timeout_zero, _cancel_midway])
def test_uvloop(scenario: Callable[[Ports, Mode], Awaitable[None]], mode: Mode) -> None:
    _uvloop_run(scenario, LOOPBACK, mode)


@needs_ipv6
def test_uvloop_ipv6() -> None:
    _uvloop_run(_in_order, "::1", "syn")


@pytest.mark.parametrize("timeout", [-0.1, float("nan")])
async def test_bad_timeout_rejected(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        await send_knock(await resolve(LOOPBACK), [1], timeout)


def _recording_syn(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[socket.socket], list[int], list[float]]:
    """Wraps the sender's connect(): the sockets it made, how many earlier ones were
    still open at each call, and the loop time of each call (just after its ``sent``)."""
    from aioknock.asyncio import attempts, sender

    made: list[socket.socket] = []
    open_before: list[int] = []
    called: list[float] = []
    real = attempts.syn

    def syn(target: Resolved, port: int) -> tuple[socket.socket, int]:
        called.append(asyncio.get_running_loop().time())
        open_before.append(sum(s.fileno() >= 0 for s in made))
        sock, err = real(target, port)
        made.append(sock)
        return sock, err

    monkeypatch.setattr(sender, "syn", syn)
    return made, open_before, called


async def test_unwatched_one_socket_per_host_when_the_loop_falls_behind(
    v4: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled loop makes the overdue knocks leave back to back; each still closes
    the one before it, so a host never holds more than one socket (fleets size their
    concurrency on that)."""
    made, open_before, _ = _recording_syn(monkeypatch)
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, lambda: __import__("time").sleep(0.3))  # the loop stalls
    attempts = await send_knock(v4.target, [v4.silent] * 8, TIMEOUT, watch=False)
    late = [a.sent - attempts[0].sent - i * TIMEOUT for i, a in enumerate(attempts)]
    assert max(late) > 0.1, late  # the stall happened: some knocks were caught up
    assert len(made) == 8 and open_before == [0] * 8, open_before
    assert all(s.fileno() < 0 for s in made)
    assert [a.outcome for a in attempts] == ["sent"] * 8


async def test_unwatched_long_timeout_closes_before_the_retransmission(
    v4: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    made, _, called = _recording_syn(monkeypatch)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(send_knock(v4.target, [v4.silent] * 2, 1.2, watch=False))
    assert await _until(lambda: bool(made))
    assert len(made) == 1 and made[0].fileno() >= 0  # held after its SYN
    # Due just after sent + HOLD_MAX, this wake-up runs after the sender's close timer
    # (timers run in order of when they are due), however late the loop gets to both.
    await asyncio.sleep(called[0] + HOLD_MAX + 0.001 - loop.time())
    assert made[0].fileno() < 0, loop.time() - called[0]
    attempts = await task
    assert len(made) == 2 and all(s.fileno() < 0 for s in made)
    assert [a.outcome for a in attempts] == ["sent", "sent"]


@pytest.mark.parametrize("err", [errno.ENOBUFS, errno.EAGAIN, errno.EMFILE])
async def test_a_datagram_that_did_not_leave_is_a_send_error(
    monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    def sendto(self: socket.socket, data: bytes, address: object) -> int:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(socket.socket, "sendto", sendto)
    target = Resolved(LOOPBACK, socket.AF_INET, LOOPBACK, (LOOPBACK, 0))
    with pytest.raises(SendError, match=os.strerror(err)):
        await send_knock(target, [(41999, "udp")], 0)


@pytest.mark.parametrize("err", [errno.ENOBUFS, errno.EAGAIN])
async def test_a_syn_that_did_not_leave_is_a_send_error(
    monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: err)
    target = Resolved(LOOPBACK, socket.AF_INET, LOOPBACK, (LOOPBACK, 0))
    with pytest.raises(SendError, match=os.strerror(err)):
        await send_knock(target, [41999], 0, watch=False)


# ------------------------------------------------------------------ one host, no event loop


@pytest.mark.parametrize("timeout", [0.0, TIMEOUT])
async def test_blocking_sender_sends_the_same_knock(v4: Ports, timeout: float) -> None:
    """``oneshot.send_now`` (one host from the CLI) keeps send_knock's order, outcomes and
    schedule (the listeners' kernel completes each handshake; nothing needs the loop)."""
    ports, outcomes = _mixed(v4)
    start = time.monotonic()
    attempts = send_now(v4.target, ports, timeout)
    assert [a.port for a in attempts] == ports
    assert [a.outcome for a in attempts] == outcomes
    if timeout:
        _check_schedule(attempts, timeout, start)


async def test_blocking_sender_holds_a_silent_knock_below_the_retransmission(
    v4: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    wakes = _late_poll(monkeypatch, 0.0)
    t0 = time.monotonic()
    attempts = send_now(v4.target, [v4.silent], 5.0)
    elapsed = time.monotonic() - t0
    assert attempts[0].outcome == "no answer"
    # The wait it asks for ends at sent + HOLD_MAX (then it closes the socket), before the
    # kernel's first retransmission (1 s), however late the wake-up itself comes; 0.05:
    # the few statements between its reading of the clock and _Poll's.
    assert wakes and all(w - attempts[0].sent < HOLD_MAX + 0.05 for w in wakes), wakes
    assert wakes[-1] - attempts[0].sent >= HOLD_MAX - EARLY, wakes
    assert HOLD_MAX - EARLY <= elapsed < 2.0, elapsed
    t0 = time.monotonic()
    attempts = send_now(v4.target, [v4.closed[0], v4.silent, (v4.closed[1], "udp")], 0.1)
    elapsed = time.monotonic() - t0
    assert [a.outcome for a in attempts] == ["refused", "no answer", "sent"]
    assert 0.2 - EARLY <= elapsed <= 0.2 + LATE, elapsed  # held HOLD_MAX: 1 s


async def test_blocking_sender_interrupted_leaves_nothing_open(
    v4: Ports, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aioknock.asyncio import attempts, oneshot

    real, calls = attempts.syn, 0

    def syn(target: Resolved, port: int) -> tuple[socket.socket, int]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return real(target, port)

    monkeypatch.setattr(oneshot, "syn", syn)
    before = _open_fds()
    with pytest.raises(KeyboardInterrupt):
        send_now(v4.target, [v4.silent] * 6, 0.0)
    assert _open_fds() == before


async def test_knock_one_verifies_the_port(v4: Ports) -> None:
    settings = ClientSettings.of(sequence=str(v4.closed[0]), timeout=0.0, verify=v4.listening[0],
                                 verify_timeout=2.0)  # fmt: skip
    result = knock_one(LOOPBACK, settings)
    assert (result.ok, result.verified, result.ports) == (True, True, [v4.closed[0]])
    closed = ClientSettings.of(sequence=str(v4.closed[0]), timeout=0.0, verify=v4.closed[1],
                               verify_timeout=0.3)  # fmt: skip
    result = knock_one(LOOPBACK, closed)
    assert not result.ok and result.verified is False
    assert result.error == f"127.0.0.1: port {v4.closed[1]} still closed 0.3 s after the knock"
    assert not knock_one(UNRESOLVABLE, settings).ok
