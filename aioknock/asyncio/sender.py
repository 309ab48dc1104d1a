"""Send a knock: one TCP connection attempt per port, on an absolute schedule.

Each attempt is a non-blocking ``connect()`` issued by the scheduler itself, so
the SYN leaves inside that call and knock i+1 can never overtake knock i. The
attempt is then watched by the event loop (no task per knock) and closed at the
next slot, at most ``HOLD_MAX`` seconds later: before Linux's first SYN
retransmission (1 s), so every knock is exactly one SYN. Closing a socket in
SYN-SENT sends nothing. ``mode="connect"`` instead runs
``asyncio.open_connection`` per knock and cancels it at the same deadline, for
networks whose middleboxes want to see the handshake attempted by a stream.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import SendError

HOLD_MAX = 0.9
Mode = Literal["syn", "connect"]

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


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> Target:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, 0, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SendError(f"cannot resolve {host!r}: {exc.strerror}") from None
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
        deadline: float, done: asyncio.Future[None] | None,
    ) -> None:  # fmt: skip
        self.loop, self.sock, self.attempt, self.done = loop, sock, attempt, done
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
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


def _syn(target: Target, port: int) -> tuple[socket.socket, int]:
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex(_sockaddr(target, port))
    if err in LOCAL_ERRORS:
        sock.close()
        raise SendError(f"cannot knock {target.host} ({target.address}) port {port}: "
                        f"{os.strerror(err)}")  # fmt: skip
    return sock, err


async def _open(target: Target, port: int, attempt: Attempt) -> None:
    try:
        _, writer = await asyncio.open_connection(target.address, port)
    except ConnectionRefusedError:
        attempt.outcome = "refused"
    except OSError as exc:
        if exc.errno in LOCAL_ERRORS:
            raise SendError(f"cannot knock {target.host} ({target.address}) port {port}: "
                            f"{exc.strerror}") from None  # fmt: skip
        attempt.outcome = (exc.strerror or str(exc)).lower()
    else:
        attempt.outcome = "open"
        writer.close()


async def send_knock(
    target: Target, ports: Sequence[int], timeout: float, *, mode: Mode = "syn"
) -> list[Attempt]:
    """Knock ``ports`` in order, knock i at start + i * timeout on the loop's clock."""
    loop = asyncio.get_running_loop()
    hold = min(timeout, HOLD_MAX)
    attempts: list[Attempt] = []
    watches: list[_Watch] = []
    tasks: list[asyncio.Task[None]] = []
    start = loop.time()
    try:
        for i, port in enumerate(ports):
            delay = start + i * timeout - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            attempt = Attempt(port, loop.time())
            attempts.append(attempt)
            if mode == "connect":
                task = asyncio.create_task(_open(target, port, attempt))
                loop.call_at(attempt.sent + hold, task.cancel)
                tasks.append(task)
                continue
            sock, err = _syn(target, port)
            if err in (0, errno.EINPROGRESS):
                done = loop.create_future() if i == len(ports) - 1 else None
                watches.append(_Watch(loop, sock, attempt, attempt.sent + hold, done))
            else:
                sock.close()
                attempt.outcome = _outcome(err)
        if watches and watches[-1].done is not None:
            await watches[-1].done
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, SendError):
                raise result
    finally:
        for watch in watches:
            watch.close("cancelled")
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    for attempt in attempts:
        if attempt.outcome == "pending":
            attempt.outcome = "no answer"
    return attempts
