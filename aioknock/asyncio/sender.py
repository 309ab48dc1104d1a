"""Send a knock: one TCP connection attempt per port, on an absolute schedule.

Each attempt is a non-blocking ``connect()`` issued by the scheduler itself, so
the SYN leaves inside that call and knock i+1 can never overtake knock i. The
attempt is then watched by the event loop (no task per knock) and closed at the
next slot, but at least ``HOLD_MIN`` (so even ``timeout = 0`` learns what became
of each knock) and at most ``HOLD_MAX`` seconds later: before Linux's first SYN
retransmission (1 s), so every knock is exactly one SYN. Closing a socket in
SYN-SENT sends nothing. ``send_knock`` returns once every knock is decided or
given up. ``mode="connect"`` instead runs ``asyncio.open_connection`` per knock
as a task bounded by the same deadline, for networks whose middleboxes want to
see the handshake attempted by a stream; each task sends its SYN in its first
step, and tasks start in creation order, so the order holds there too.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..codec.sequence import hits
from ..errors import SendError

HOLD_MIN = 0.05
HOLD_MAX = 0.9
Mode = Literal["syn", "connect"]
UDP_PAYLOAD = b"\0"  # one byte, as knockd's knock client sends

# connect() errors that mean the knock cannot leave this host at all.
LOCAL_ERRORS = {
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
    errno.EACCES, errno.EPERM, errno.EINVAL,
}  # fmt: skip


@dataclass(slots=True)
class Attempt:
    """What became of one knock: ``no answer`` is what a dropping firewall gives."""

    port: int
    sent: float  # loop time when the SYN left
    outcome: str = "pending"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A resolved host: the socket family and address the knocks go to."""

    host: str
    family: int
    address: str
    sockaddr: tuple[object, ...]


def numeric_target(host: str, family: int = socket.AF_UNSPEC) -> Resolved | None:
    """A Resolved for a literal address without a resolver round trip, else None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return None  # the resolver turns the scope into an interface index
    fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if family not in (socket.AF_UNSPEC, fam):
        want = "IPv4" if family == socket.AF_INET else "IPv6"
        raise SendError(f"{host} is not an {want} address")
    sockaddr: tuple[object, ...] = (str(ip), 0, 0, 0) if fam == socket.AF_INET6 else (str(ip), 0)
    return Resolved(host, fam, str(ip), sockaddr)


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> Resolved:
    if not host or not host.isprintable() or any(c.isspace() for c in host):
        # A NUL cuts a name short in some resolvers (uvloop's): another host is knocked.
        raise SendError(f"cannot resolve {host!r}: not a valid host name")
    if (target := numeric_target(host, family)) is not None:
        return target
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, 0, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SendError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except (UnicodeError, ValueError):  # IDNA: an empty or over-long label; a NUL
        raise SendError(f"cannot resolve {host!r}: not a valid host name") from None
    fam, _, _, _, sockaddr = infos[0]
    return Resolved(host, fam, str(sockaddr[0]), tuple(sockaddr))


def _sockaddr(target: Resolved, port: int) -> tuple[object, ...]:
    return (target.sockaddr[0], port, *target.sockaddr[2:])


def _outcome(err: int) -> str:
    if err == 0:
        return "open"
    if err == errno.ECONNREFUSED:
        return "refused"
    return os.strerror(err).lower()


class _Watch:
    """Follows one attempt until it resolves or its deadline closes it."""

    __slots__ = ("attempt", "done", "handle", "loop", "sock")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, attempt: Attempt,
        deadline: float,
    ) -> None:  # fmt: skip
        self.loop, self.sock, self.attempt = loop, sock, attempt
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), self._ready)
        self.handle = loop.call_at(deadline, self.close, "no answer")

    def _ready(self) -> None:
        self.close(_outcome(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))

    def close(self, outcome: str) -> None:
        if self.sock.fileno() < 0:
            return
        self.loop.remove_writer(self.sock.fileno())
        self.handle.cancel()
        self.sock.close()
        self.attempt.outcome = outcome
        if not self.done.done():
            self.done.set_result(None)


def _cannot(target: Resolved, port: int, err: int) -> SendError:
    return SendError(f"cannot knock {target.host} ({target.address}) port {port}: "
                     f"{os.strerror(err)}")  # fmt: skip


def _syn(target: Resolved, port: int) -> tuple[socket.socket, int]:
    try:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
    except OSError as exc:  # EMFILE, ENOBUFS, EAFNOSUPPORT...
        raise _cannot(target, port, exc.errno or errno.EINVAL) from None
    try:
        sock.setblocking(False)
        err = sock.connect_ex(_sockaddr(target, port))
    except BaseException:
        sock.close()
        raise
    if err not in (0, errno.EINPROGRESS, errno.ECONNREFUSED):
        # Everything else (no route, ENOBUFS, EAGAIN...) means no SYN left: not a knock.
        sock.close()
        raise _cannot(target, port, err)
    return sock, err


def _udp(target: Resolved, port: int) -> str:
    """One datagram; there is no answer to wait for. Any error means it did not leave."""
    try:
        with socket.socket(target.family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(UDP_PAYLOAD, _sockaddr(target, port))
    except OSError as exc:
        raise _cannot(target, port, exc.errno or errno.EINVAL) from None
    return "sent"


async def _open(target: Resolved, port: int, attempt: Attempt, deadline: float) -> None:
    # The deadline is armed inside the task, so the connection attempt (and its SYN)
    # always starts, however late the task gets to run.
    try:
        async with asyncio.timeout_at(deadline):
            _, writer = await asyncio.open_connection(target.address, port, family=target.family)
    except TimeoutError:
        attempt.outcome = "no answer"
    except ConnectionRefusedError:
        attempt.outcome = "refused"
    except OSError as exc:
        if exc.errno in LOCAL_ERRORS:
            raise _cannot(target, port, exc.errno or errno.EINVAL) from None
        attempt.outcome = (exc.strerror or str(exc)).lower()
    else:
        attempt.outcome = "open"
        writer.close()


def _first_error(tasks: Sequence[asyncio.Task[None]]) -> BaseException | None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None


def schedule(
    start: float, count: int, timeout: float, jitter: float = 0.0, rng: random.Random | None = None
) -> list[float]:
    """Absolute send times: knock i at start + i * timeout, plus up to ``jitter`` of
    random spread that never lets a knock overtake the one before it."""
    times = [start + i * timeout for i in range(count)]
    if jitter > 0:
        draw = (rng or random.SystemRandom()).uniform
        spread = [t + draw(0, jitter) for t in times]
        times = [max(spread[: i + 1]) for i in range(count)]
    return times


async def send_knock(
    target: Resolved,
    ports: Sequence[int | tuple[int, str]],
    timeout: float,
    *,
    mode: Mode = "syn",
    jitter: float = 0.0,
    watch: bool = True,
) -> list[Attempt]:
    """Knock ``ports`` (``port`` or ``(port, "udp")``) in order on an absolute schedule.

    With ``watch=False`` a TCP attempt is closed when the next knock leaves (at once
    at ``timeout = 0``, by a timer when the next slot is beyond ``HOLD_MAX``) without
    learning its outcome: the cheapest way to send one SYN, for fleets, and one
    socket per host however far behind the loop falls. Raises ``SendError`` when a
    knock cannot leave this host; every socket opened so far is closed first (also
    when cancelled).
    """
    knocks = hits(ports)
    if not timeout >= 0 or not jitter >= 0:  # also NaN
        raise ValueError(f"timeout and jitter must be >= 0, not {timeout!r}, {jitter!r}")
    if mode not in ("syn", "connect"):
        raise ValueError(f"mode must be 'syn' or 'connect', not {mode!r}")
    run = _Knocking(target, timeout, mode, watch)
    slots = schedule(run.loop.time(), len(knocks), timeout, jitter)
    try:
        for i, ((port, proto), slot) in enumerate(zip(knocks, slots, strict=True)):
            while (delay := slot - run.loop.time()) > 0:
                await asyncio.sleep(delay)
            run.release()  # the last attempt's slot is over (or the loop is catching up)
            run.raise_failed()
            run.send(port, proto, slots[i + 1] if i + 1 < len(slots) else math.inf)
        await run.finish()
    finally:
        await run.close()
    return run.results()


class _Knocking:
    """One host's knock in flight: its attempts, and what still holds a socket."""

    def __init__(self, target: Resolved, timeout: float, mode: Mode, watch: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.target, self.timeout, self.mode, self.watch = target, timeout, mode, watch
        self.hold = min(max(timeout, HOLD_MIN), HOLD_MAX)
        self.attempts: list[Attempt] = []
        self.watches: list[_Watch] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.held: socket.socket | None = None  # watch=False: the last TCP attempt

    def send(self, port: int, proto: str, next_slot: float) -> None:
        attempt = Attempt(port, self.loop.time())
        self.attempts.append(attempt)
        if proto == "udp":
            attempt.outcome = _udp(self.target, port)
        elif self.mode == "connect":
            coro = _open(self.target, port, attempt, attempt.sent + self.hold)
            self.tasks.append(asyncio.create_task(coro))
        else:
            self._syn(attempt, next_slot)

    def _syn(self, attempt: Attempt, next_slot: float) -> None:
        sock, err = _syn(self.target, attempt.port)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            attempt.outcome = _outcome(err)
        elif self.watch:
            self.watches.append(_Watch(self.loop, sock, attempt, attempt.sent + self.hold))
        elif self.timeout > 0:
            self.held = sock
            attempt.outcome = "sent"
            if next_slot - attempt.sent > HOLD_MAX:  # close before a retransmission
                self.loop.call_at(attempt.sent + HOLD_MAX, sock.close)
        else:
            sock.close()
            attempt.outcome = "sent"

    def release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def raise_failed(self) -> None:
        if (error := _first_error(self.tasks)) is not None:
            raise error

    async def finish(self) -> None:
        """Wait for the last knocks' outcomes (each bounded by its deadline)."""
        if self.held is not None:
            last = self.attempts[-1].sent + min(self.timeout, HOLD_MAX)
            await asyncio.sleep(max(0.0, last - self.loop.time()))
        pending = [w.done for w in self.watches if not w.done.done()] + self.tasks
        if pending:
            await asyncio.wait(pending)
        self.raise_failed()

    async def close(self) -> None:
        self.release()
        for w in self.watches:
            w.close("cancelled")
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def results(self) -> list[Attempt]:
        for attempt in self.attempts:
            if attempt.outcome == "pending":
                attempt.outcome = "no answer"
        return self.attempts
