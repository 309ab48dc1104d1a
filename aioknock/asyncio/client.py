"""One knock for one host: the client's address by route, the clock and the random source.

The codec below receives only their results; this is the one place that asks the
kernel which address reaches a host (``client = auto``).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Sequence

from ..codec import sealed, spa
from ..codec.pipeline import KnockPlan
from ..codec.sequence import proto_of
from ..config.kinds import AUTO, SOURCE
from ..config.settings import ClientSettings, KnockSettings
from ..errors import KnockError, SendError


def local_address_for(remote: str, family: int = socket.AF_UNSPEC) -> str:
    """The source address the kernel would pick to reach ``remote``; sends nothing.

    A connected UDP socket makes the kernel choose a route without any packet
    leaving the host.
    """
    try:
        infos = socket.getaddrinfo(_host(remote), 9, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise SendError(f"cannot resolve {remote!r}: {exc.strerror}") from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(addr)
        except OSError as exc:
            raise SendError(f"no route to {remote} ({addr[0]}): {exc.strerror}") from None
        return str(sock.getsockname()[0])


def _host(remote: str) -> str | bytes:
    """``remote`` for getaddrinfo: an address literal as its ASCII bytes, the very bytes
    the IDNA codec would make of it, so that a literal does not import that codec
    (~1.5 ms of a start-up); a name as it is, for the codec."""
    if remote.isascii():
        try:
            ipaddress.ip_address(remote)
        except ValueError:
            return remote
        return remote.encode("ascii")
    return remote


def client_address(settings: ClientSettings, remote: str, family: int = socket.AF_UNSPEC) -> str:
    """The address this host knocks ``remote`` from: ``client``, or the route's (auto)."""
    return local_address_for(remote, family) if settings.client == AUTO else settings.client


def client_for(settings: ClientSettings, remote: str, family: int = socket.AF_UNSPEC) -> str:
    """The address the knock's CLIENT carries for ``remote`` ("" when it carries none)."""
    if not settings.codec.needs_client:
        return ""
    return carried(settings, remote, client_address(settings, remote, family))


def carried(settings: ClientSettings, remote: str, address: str) -> str:
    """``address`` as the knock's CLIENT: an IPv4 address, or a KnockError saying why not."""
    if not settings.codec.needs_client:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address at all: the codec says why
    if isinstance(ip, ipaddress.IPv6Address):
        raise KnockError(
            f"CLIENT holds an IPv4 address, but the route to {remote} uses {address}; "
            "set client = x.x.x.x"
        )
    return address


def plan_knock(settings: ClientSettings, client: str, now: float | None = None) -> KnockPlan:
    """Encode one knock carrying ``client`` at ``now`` (epoch seconds, default: now)."""
    codec = settings.codec
    # Randomness from ``secrets``, the project's rule (its import costs ~2 ms of a start-up).
    inputs = codec.inputs(client, settings.port, settings.flags, secrets.randbelow(256))
    return codec.build(inputs, time.time() if now is None else now, secrets.token_bytes)


def build_knock(settings: ClientSettings, now: float | None = None) -> KnockPlan:
    """Encode one knock for ``settings.remote`` at time ``now`` (default: now)."""
    return plan_knock(settings, client_for(settings, settings.remote), now)


def plan_sealed(
    settings: ClientSettings, host: str, now: float | None = None, *, source: str | None = None
) -> bytes:
    """One sealed knock for ``host`` (its server_id, its derived key with ``master``):
    the wire bytes, fresh nonce and time; ``codec.ports`` maps them onto the span. With
    ``client`` set it carries that address; else it opens for its source, and is bound
    to it: ``source``, or the address the kernel uses to reach ``host``."""
    carried = None if settings.client == AUTO else settings.client
    msg = sealed.message_for(
        time.time() if now is None else now,
        [(port, proto_of(proto)) for proto, port in settings.spa_access],
        address=carried,
        flags=sorted(settings.flags.items()),
    )
    if carried is None and source is None:
        source = local_address_for(host)
    return settings.sealed_for(host).seal(msg, source=source)


def decode_knock(settings: KnockSettings, ports: Sequence[int]) -> dict[str, int | str]:
    """Decode and verify the ports of one knock; raises KnockError with the reason."""
    return settings.codec.decode(list(ports)).fields.shown


def spa_allow(settings: ClientSettings, remote: str, family: int = socket.AF_UNSPEC) -> str:
    """The address an SPA packet asks the server to open for: ``allow_ip``, the
    route's local address (auto), or 0.0.0.0 for the packet's source (fwknop -s)."""
    if settings.allow_ip == SOURCE:
        return "0.0.0.0"
    if settings.allow_ip == AUTO:
        return local_address_for(remote, family)
    return settings.allow_ip


def spa_user(settings: ClientSettings) -> str:
    """The user name the packet carries, as fwknop: ``spoof_user`` or this user."""
    return settings.spoof_user or _local_user()


@functools.cache
def _local_user() -> str:
    import getpass  # an SPA packet's user only

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root" if os.getuid() == 0 else "nobody"


def build_spa(settings: ClientSettings, allow: str, now: float | None = None) -> bytes:
    """One SPA datagram: fresh random value, salt and timestamp."""
    assert settings.spa_keys is not None  # protocol = spa builds them, or fails to load
    msg = spa.SpaMessage(
        allow=allow, access=settings.spa_access, username=spa_user(settings),
        timestamp=int(time.time() if now is None else now),
        client_timeout=settings.client_timeout, digest_type=settings.digest_type,
    )  # fmt: skip
    return spa.build(msg, settings.spa_keys)
