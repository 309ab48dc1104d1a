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

from ..errors import SendError

HOLD_MIN = 0.05
HOLD_MAX = 0.9
Mode = Literal["syn", "connect"]
Proto = Literal["tcp", "udp"]
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
class Target:
    """A resolved host: the socket family and address the knocks go to."""

    host: str
    family: int
    address: str
    sockaddr: tuple[object, ...]


def numeric_target(host: str, family: int = socket.AF_UNSPEC) -> Target | None:
    """A Target for a literal address without a resolver round trip, else None."""
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
    return Target(host, fam, str(ip), sockaddr)


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> Target:
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
    return Target(host, fam, str(sockaddr[0]), tuple(sockaddr))


def _sockaddr(target: Target, port: int) -> tuple[object, ...]:
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


def _cannot(target: Target, port: int, err: int) -> SendError:
    return SendError(f"cannot knock {target.host} ({target.address}) port {port}: "
                     f"{os.strerror(err)}")  # fmt: skip


def _syn(target: Target, port: int) -> tuple[socket.socket, int]:
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


def _udp(target: Target, port: int) -> str:
    """One datagram; there is no answer to wait for. Any error means it did not leave."""
    try:
        with socket.socket(target.family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(UDP_PAYLOAD, _sockaddr(target, port))
    except OSError as exc:
        raise _cannot(target, port, exc.errno or errno.EINVAL) from None
    return "sent"


async def _open(target: Target, port: int, attempt: Attempt, deadline: float) -> None:
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


def _normalize(ports: Sequence[int | tuple[int, str]]) -> list[tuple[int, Proto]]:
    out: list[tuple[int, Proto]] = []
    for item in ports:
        port, proto = (item, "tcp") if isinstance(item, int) else item
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"ports must be 1-65535, not {port!r}")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"protocol must be tcp or udp, not {proto!r}")
        out.append((port, "udp" if proto == "udp" else "tcp"))
    return out


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
    target: Target,
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
    knocks = _normalize(ports)
    if not timeout >= 0 or not jitter >= 0:  # also NaN
        raise ValueError(f"timeout and jitter must be >= 0, not {timeout!r}, {jitter!r}")
    if mode not in ("syn", "connect"):
        raise ValueError(f"mode must be 'syn' or 'connect', not {mode!r}")
    loop = asyncio.get_running_loop()
    hold = min(max(timeout, HOLD_MIN), HOLD_MAX)
    attempts: list[Attempt] = []
    watches: list[_Watch] = []
    tasks: list[asyncio.Task[None]] = []
    held: socket.socket | None = None  # watch=False: the last TCP attempt, still open
    slots = schedule(loop.time(), len(knocks), timeout, jitter)
    try:
        for i, ((port, proto), slot) in enumerate(zip(knocks, slots, strict=True)):
            while (delay := slot - loop.time()) > 0:
                await asyncio.sleep(delay)
            if held is not None:  # its slot is over (or the loop is catching up)
                held.close()
                held = None
            if (error := _first_error(tasks)) is not None:
                raise error
            attempt = Attempt(port, loop.time())
            attempts.append(attempt)
            if proto == "udp":
                attempt.outcome = _udp(target, port)
            elif mode == "connect":
                coro = _open(target, port, attempt, attempt.sent + hold)
                tasks.append(asyncio.create_task(coro))
            else:
                sock, err = _syn(target, port)
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    attempt.outcome = _outcome(err)
                elif watch:
                    watches.append(_Watch(loop, sock, attempt, attempt.sent + hold))
                elif timeout > 0:
                    held = sock
                    attempt.outcome = "sent"
                    next_slot = slots[i + 1] if i + 1 < len(slots) else math.inf
                    if next_slot - attempt.sent > HOLD_MAX:  # close before a retransmission
                        loop.call_at(attempt.sent + HOLD_MAX, sock.close)
                else:
                    sock.close()
                    attempt.outcome = "sent"
        if held is not None:
            await asyncio.sleep(max(0.0, attempts[-1].sent + min(timeout, HOLD_MAX) - loop.time()))
        # Each is bounded by its deadline (at most hold after the last knock).
        pending = [w.done for w in watches if not w.done.done()] + tasks
        if pending:
            await asyncio.wait(pending)
        if (error := _first_error(tasks)) is not None:
            raise error
    finally:
        if held is not None:
            held.close()
        for w in watches:
            w.close("cancelled")
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    for attempt in attempts:
        if attempt.outcome == "pending":
            attempt.outcome = "no answer"
    return attempts
