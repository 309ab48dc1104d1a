"""One host's knock without an event loop: ``aioknock run HOST`` from a shell.

A fleet needs the event loop; one host does not, and importing and starting one
(asyncio, uvloop, ssl) is most of a one-knock command's start-up. This sends the same
knock with the same rules as ``send_knock`` (``attempts.py``: the absolute schedule,
one non-blocking ``connect()`` per port so the SYNs leave in order, each attempt
watched until it resolves or ``hold`` closes it, never retransmitted) with ``poll()``
instead of a loop, and ``-verify`` by blocking connects. ``KeyboardInterrupt`` closes
every socket on its way out.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Sequence

from ..codec.sequence import hits
from ..config.settings import ClientSettings
from ..errors import AioknockError
from .attempts import (
    VERIFY_ATTEMPT,
    VERIFY_RETRY,
    Attempt,
    Resolved,
    check_pacing,
    hold,
    outcome,
    resolve_now,
    schedule,
    sockaddr,
    syn,
    udp,
)
from .hostknock import KnockResult, begun, failed, knock_ports, spa_packet, still_closed


def knock_one(host: str, settings: ClientSettings) -> KnockResult:
    """``settings`` (the host's own) knock ``host``; never raises for a network or knock
    failure: the result says what went wrong."""
    result = begun(host, settings)
    try:
        target = resolve_now(host, settings.family)
        result.address = target.address
        if settings.protocol == "spa":
            packet = spa_packet(settings, target, result)
            if not settings.test:
                _send_datagram(target, settings.spa_server_port, packet)
        else:
            ports = knock_ports(settings, target, result)
            if not settings.test:
                result.attempts = send_now(target, ports, settings.timeout, settings.jitter)
        if settings.verify and not settings.test:
            result.verified = verify_now(target, settings.verify, settings.verify_timeout)
            if not result.verified:
                raise still_closed(settings)
        result.ok = True
    except (AioknockError, OSError) as exc:
        failed(result, exc)
    finally:
        result.finished = time.time()
    return result


def _send_datagram(target: Resolved, port: int, payload: bytes) -> None:
    with socket.socket(target.family, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, sockaddr(target, port))


def send_now(
    target: Resolved, ports: Sequence[int | tuple[int, str]], timeout: float, jitter: float = 0.0
) -> list[Attempt]:
    """``send_knock(..., watch=True)`` in this thread: every attempt's outcome."""
    knocks = hits(ports)
    check_pacing(timeout, jitter)
    watches = _Watches(hold(timeout))
    try:
        for (port, proto), slot in zip(knocks, schedule(time.monotonic(), len(knocks),
                                                        timeout, jitter), strict=True):  # fmt: skip
            watches.until(slot)
            attempt = Attempt(port, time.monotonic())
            watches.attempts.append(attempt)
            if proto == "udp":
                attempt.outcome = udp(target, port)
            else:
                watches.add(attempt, *syn(target, port))
        watches.until(None)
    finally:
        watches.close()
    return watches.results()


def _late_outcome(sock: socket.socket) -> str:
    """An attempt at its deadline: an answer already in counts, however late this
    process got to look (a loaded machine may run it long after the poll)."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return outcome(err)
    try:
        sock.getpeername()
    except OSError:  # ENOTCONN: the handshake is still in progress
        return "no answer"
    return "open"


class _Watches:
    """The attempts of one knock, and the sockets still waiting for their outcome."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.attempts: list[Attempt] = []
        self.poll = select.poll()
        self.open: dict[int, tuple[socket.socket, Attempt, float]] = {}  # fd: ..., deadline

    def add(self, attempt: Attempt, sock: socket.socket, err: int) -> None:
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            attempt.outcome = outcome(err)
            return
        self.open[sock.fileno()] = (sock, attempt, attempt.sent + self.hold)
        self.poll.register(sock.fileno(), select.POLLOUT)

    def until(self, when: float | None) -> None:
        """Follow the open attempts until ``when`` (None: until each has its outcome)."""
        while True:
            now = time.monotonic()
            self._expire(now)
            if when is None and not self.open:
                return
            if when is not None and now >= when:
                return
            wake = min((d for _, _, d in self.open.values()), default=when)
            if when is not None and wake is not None:
                wake = min(wake, when)
            assert wake is not None
            for fd, _ in self.poll.poll(max(0.0, wake - now) * 1000 + 0.5):
                sock = self.open[fd][0]
                self._close(fd, outcome(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))

    def _expire(self, now: float) -> None:
        for fd in [fd for fd, (_, _, deadline) in self.open.items() if deadline <= now]:
            self._close(fd, _late_outcome(self.open[fd][0]))

    def _close(self, fd: int, what: str) -> None:
        sock, attempt, _ = self.open.pop(fd)
        self.poll.unregister(fd)
        sock.close()
        attempt.outcome = what

    def close(self) -> None:
        for fd in list(self.open):
            self._close(fd, "cancelled")

    def results(self) -> list[Attempt]:
        for attempt in self.attempts:
            if attempt.outcome == "pending":
                attempt.outcome = "no answer"
        return self.attempts


def verify_now(target: Resolved, port: int, within: float) -> bool:
    """Connect to the protected port until it answers or ``within`` runs out."""
    deadline = time.monotonic() + within
    address = sockaddr(target, port)
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.socket(target.family, socket.SOCK_STREAM) as sock:
                sock.settimeout(min(VERIFY_ATTEMPT, max(0.05, left)))
                sock.connect(address)
        except OSError:
            if time.monotonic() + VERIFY_RETRY >= deadline:
                return False
            time.sleep(VERIFY_RETRY)
        else:
            return True
