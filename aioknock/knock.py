"""Glue between settings and the pure codec: the public build/parse entry points.

This is where the clock, the random source and the routing table are consulted;
the codec below only ever receives their results.
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
import socket
import time
from collections.abc import Sequence

from .codec.ciphers import Cipher, CryptCBC, Plain
from .codec.fields import KnockFormat, KnockInputs
from .codec.knock import Codec, KnockPlan
from .codec.portspan import PortSpan
from .config.settings import ClientSettings, KnockSettings
from .errors import KnockError, SendError


@functools.lru_cache(maxsize=32)
def _codec(
    knock: str, portbytes: int, portspan: str, encrypt: bool, cipher: str, key: str, iv: bool,
    localtime: bool,
) -> Codec:  # fmt: skip
    fmt = KnockFormat.parse(knock, portbytes=portbytes)
    crypto: Cipher = CryptCBC(cipher, key.encode(), iv=iv) if encrypt else Plain()
    return Codec(fmt, crypto, PortSpan.parse(portspan), localtime)


def codec_for(settings: KnockSettings) -> Codec:
    """The codec for these settings, built once (key schedule included) and reused."""
    return _codec(
        settings.knock, settings.portbytes, settings.portspan, settings.encrypt,
        settings.cipher, settings.key, settings.iv, settings.localtime,
    )  # fmt: skip


def local_address_for(remote: str, family: int = socket.AF_UNSPEC) -> str:
    """The source address the kernel would pick to reach ``remote``; sends nothing.

    A connected UDP socket makes the kernel choose a route without any packet
    leaving the host.
    """
    try:
        infos = socket.getaddrinfo(remote, 9, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise SendError(f"cannot resolve {remote!r}: {exc.strerror}") from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(addr)
        except OSError as exc:
            raise SendError(f"no route to {remote} ({addr[0]}): {exc.strerror}") from None
        return str(sock.getsockname()[0])


def client_address(settings: ClientSettings) -> str:
    if settings.client.lower() in ("", "auto"):
        return local_address_for(settings.remote)
    return settings.client


def knock_inputs(
    settings: ClientSettings, client: str | None = None, remote: str | None = None
) -> KnockInputs:
    """The knock's inputs; ``remote``: the host knocked (default ``settings.remote``)."""
    needs_client = "CLIENT" in codec_for(settings).format.fields
    address = (client or client_address(settings)) if needs_client else "0.0.0.0"
    try:
        ipv6 = isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address)
    except ValueError:
        ipv6 = False  # not an address at all: KnockFormat.pack rejects it with the reason
    if needs_client and ipv6:
        raise KnockError(
            f"CLIENT holds an IPv4 address, but the route to {remote or settings.remote} uses "
            f"{address}; set client = x.x.x.x"
        )
    return KnockInputs(address, settings.port, settings.flags, secrets.randbelow(256))


def build_knock(settings: ClientSettings, now: float | None = None) -> KnockPlan:
    """Encode one knock for ``settings`` at time ``now`` (epoch seconds, default: now)."""
    return codec_for(settings).build(
        knock_inputs(settings), time.time() if now is None else now, secrets.token_bytes
    )


def parse_knock(settings: KnockSettings, ports: Sequence[int]) -> dict[str, int | str]:
    """Decode and verify the ports of one knock; raises KnockError with the reason."""
    return codec_for(settings).parse(list(ports))
