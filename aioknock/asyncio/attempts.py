"""One knock's connection attempts, as the kernel sees them: no event loop here.

The asyncio sender (``sender.py``, fleets) and the blocking one (``oneshot.py``, one
host from the command line: no event loop to import or start) share these: how a
host is resolved and checked, how a SYN or a datagram leaves, what an error means,
and the absolute schedule of a knock.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Sequence

from ..errors import SendError
from ..records import MutableRecord, Record

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Literal, TypeAlias


HOLD_MIN = 0.05
HOLD_MAX = 0.9
Mode: TypeAlias = "Literal['syn', 'connect']"
VERIFY_ATTEMPT = 0.5  # -verify: one connect's bound, then a retry VERIFY_RETRY later
VERIFY_RETRY = 0.1
UDP_PAYLOAD = b"\0"  # one byte, as knockd's knock client sends

# connect() errors that mean the knock cannot leave this host at all.
LOCAL_ERRORS = {
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT,
    errno.EACCES, errno.EPERM, errno.EINVAL,
}  # fmt: skip


class Attempt(MutableRecord):
    """What became of one knock: ``no answer`` is what a dropping firewall gives."""

    __slots__ = ("outcome", "port", "sent")

    def __init__(self, port: int, sent: float, outcome: str = "pending") -> None:
        self.port = port
        self.sent = sent  # loop time when the SYN left
        self.outcome = outcome


class Resolved(Record):
    """A resolved host: the socket family and address the knocks go to."""

    __slots__ = ("address", "family", "host", "sockaddr")

    def __init__(self, host: str, family: int, address: str, sockaddr: tuple[object, ...]) -> None:
        self.host = host
        self.family = family
        self.address = address
        self.sockaddr = sockaddr


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


def check_name(host: str) -> None:
    if not host or not host.isprintable() or any(c.isspace() for c in host):
        # A NUL cuts a name short in some resolvers (uvloop's): another host is knocked.
        raise SendError(f"cannot resolve {host!r}: not a valid host name")


def resolve_now(host: str, family: int = socket.AF_UNSPEC) -> Resolved:
    """``resolve`` without an event loop: the resolver's answer, blocking."""
    check_name(host)
    if (target := numeric_target(host, family)) is not None:
        return target
    try:
        infos = socket.getaddrinfo(host, 0, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise unresolved(host, exc) from None
    except (UnicodeError, ValueError):  # IDNA: an empty or over-long label; a NUL
        raise SendError(f"cannot resolve {host!r}: not a valid host name") from None
    return first_address(host, infos)


def unresolved(host: str, exc: socket.gaierror) -> SendError:
    return SendError(f"cannot resolve {host!r}: {exc.strerror}")


def first_address(host: str, infos: Sequence[tuple[object, ...]]) -> Resolved:
    fam, _, _, _, sockaddr = infos[0]
    assert isinstance(fam, int) and isinstance(sockaddr, tuple)
    return Resolved(host, fam, str(sockaddr[0]), tuple(sockaddr))


def sockaddr(target: Resolved, port: int) -> tuple[object, ...]:
    return (target.sockaddr[0], port, *target.sockaddr[2:])


def outcome(err: int) -> str:
    if err == 0:
        return "open"
    if err == errno.ECONNREFUSED:
        return "refused"
    return os.strerror(err).lower()


def cannot(target: Resolved, port: int, err: int) -> SendError:
    return SendError(f"cannot knock {target.host} ({target.address}) port {port}: "
                     f"{os.strerror(err)}")  # fmt: skip


def syn(target: Resolved, port: int) -> tuple[socket.socket, int]:
    """A non-blocking connect(): its SYN has left when this returns (or it raises)."""
    try:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
    except OSError as exc:  # EMFILE, ENOBUFS, EAFNOSUPPORT...
        raise cannot(target, port, exc.errno or errno.EINVAL) from None
    try:
        sock.setblocking(False)
        err = sock.connect_ex(sockaddr(target, port))
    except BaseException:
        sock.close()
        raise
    if err not in (0, errno.EINPROGRESS, errno.ECONNREFUSED):
        # Everything else (no route, ENOBUFS, EAGAIN...) means no SYN left: not a knock.
        sock.close()
        raise cannot(target, port, err)
    return sock, err


def udp(target: Resolved, port: int) -> str:
    """One datagram; there is no answer to wait for. Any error means it did not leave."""
    try:
        with socket.socket(target.family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(UDP_PAYLOAD, sockaddr(target, port))
    except OSError as exc:
        raise cannot(target, port, exc.errno or errno.EINVAL) from None
    return "sent"


def hold(timeout: float) -> float:
    """How long a watched attempt is kept: long enough to learn its outcome, short
    enough that it never retransmits its SYN."""
    return min(max(timeout, HOLD_MIN), HOLD_MAX)


def schedule(start: float, count: int, timeout: float, jitter: float = 0.0) -> list[float]:
    """Absolute send times: knock i at start + i * timeout, plus up to ``jitter`` of
    random spread that never lets a knock overtake the one before it."""
    times = [start + i * timeout for i in range(count)]
    if jitter > 0:
        import secrets  # a jittered knock only

        draw = secrets.SystemRandom().uniform
        spread = [t + draw(0, jitter) for t in times]
        times = [max(spread[: i + 1]) for i in range(count)]
    return times


def check_pacing(timeout: float, jitter: float) -> None:
    if not timeout >= 0 or not jitter >= 0:  # also NaN
        raise ValueError(f"timeout and jitter must be >= 0, not {timeout!r}, {jitter!r}")
