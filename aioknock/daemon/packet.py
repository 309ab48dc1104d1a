"""What every recognizer reads: one packet as seen on the wire or in a firewall log."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..codec.sequence import Proto


@dataclass(frozen=True, slots=True)
class Packet:
    """Who knocked, on which port, when (``now``: epoch seconds when it was seen)."""

    now: float
    src: str
    dport: int
    proto: Proto = "tcp"
    sport: int = 0  # 0 = unknown; with it, a retransmitted SYN is told from a new knock
    dst: str = ""  # the address knocked, where known ("" in logs read by pattern)
    payload: bytes = b""  # a UDP datagram's data (captured or received), for SPA


IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def unmapped(ip: IP) -> IP:
    """An IPv4 client seen by a dual-stack socket as ::ffff:a.b.c.d is a.b.c.d."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def same_ip(a: str, b: str) -> bool:
    """Whether two texts name one address (IPv4-mapped IPv6 as its IPv4); False for
    anything that is not an address."""
    try:
        return unmapped(ipaddress.ip_address(a)) == unmapped(ipaddress.ip_address(b))
    except ValueError:
        return False
