"""IP packets built byte by byte, with every length and checksum right unless told not.

Shared by the parser tests (test_frames.py) and the sniffer's namespace tests, which
send them raw. The checksum here is the textbook word-by-word sum, kept independent
of the package's (a big-integer remainder) so that one checks the other.
"""

from __future__ import annotations

import ipaddress
import struct

SYN, ACK, RST, FIN = 0x02, 0x10, 0x04, 0x01
V4_SRC, V4_DST = "198.18.0.1", "198.18.0.2"
V6_SRC, V6_DST = "2001:2::1", "2001:2::2"
_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp(sport: int, dport: int, flags: int = SYN, options: bytes = b"", data: bytes = b"") -> bytes:
    """A TCP header (checksum zero: ``ipv4``/``ipv6`` fill it in)."""
    doff = (20 + len(options)) // 4
    header = struct.pack(">HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 64240, 0, 0)
    return header + options + data


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack(">BBH", 0, proto, length)
    return src + dst + struct.pack(">I3xB", length, proto)


def with_checksum(segment: bytes, proto: int, src: bytes, dst: bytes) -> bytes:
    """``segment`` with its TCP or UDP checksum filled in (anything else unchanged)."""
    at = {6: 16, 17: 6}.get(proto)
    if at is None or len(segment) < at + 2:
        return segment
    blank = segment[:at] + b"\0\0" + segment[at + 2 :]
    value = internet_checksum(_pseudo(src, dst, proto, len(segment)) + blank)
    if proto == 17 and value == 0:
        value = 0xFFFF  # RFC 768: zero means "no checksum"
    return blank[:at] + struct.pack(">H", value) + blank[at + 2 :]


def ipv4(
    src: str, payload: bytes, proto: int = 6, *, options: bytes = b"", frag: int = 0,
    more: bool = False, ihl: int | None = None, dst: str = V4_DST, total: int | None = None,
    transport_sum: bool = True,
) -> bytes:  # fmt: skip
    """An IPv4 packet; ``ihl`` and ``total`` override the true lengths (the header
    checksum then covers ``ihl`` words, as a receiver would read it)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    if transport_sum and not (frag or more):
        payload = with_checksum(payload, proto, s, d)
    ihl = (20 + len(options)) // 4 if ihl is None else ihl
    total = 20 + len(options) + len(payload) if total is None else total
    flags_frag = (0x2000 if more else 0) | frag
    header = struct.pack(">BBHHHBBH4s4s", 0x40 | ihl, 0, total, 7, flags_frag, 64, proto, 0, s, d)
    packet = header + options + payload
    summed = packet[: max(ihl * 4, 20)]
    check = internet_checksum(summed[:10] + b"\0\0" + summed[12:])
    return packet[:10] + struct.pack(">H", check) + packet[12:]


def ext_header(next_header: int, units: int = 0) -> bytes:
    """Hop-by-hop / routing / destination options header of (units + 1) * 8 bytes."""
    return bytes([next_header, units]) + bytes(6 + 8 * units)


def frag_header(next_header: int, offset: int = 0, more: bool = False) -> bytes:
    return struct.pack(">BBHI", next_header, 0, (offset << 3) | more, 0x1234)


def ipv6(
    src: str, payload: bytes, next_header: int = 6, dst: str = V6_DST, *,
    transport_sum: bool = True,
) -> bytes:  # fmt: skip
    """An IPv6 packet; the TCP/UDP checksum is filled in behind the extension headers
    at the front of ``payload`` (not behind a fragment that is not whole)."""
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    if transport_sum:
        payload = _fill_behind_extensions(payload, next_header, s, d)
    head = struct.pack(">IHBB", 6 << 28, len(payload), next_header, 64)
    return head + s + d + payload


def _fill_behind_extensions(payload: bytes, proto: int, src: bytes, dst: bytes) -> bytes:
    offset = 0
    while proto in _EXTENSIONS or proto == 44:
        if len(payload) < offset + 8:
            return payload
        if proto == 44:
            if struct.unpack_from(">H", payload, offset + 2)[0] & 0xFFF9:
                return payload
            step = 8
        else:
            step = (payload[offset + 1] + 1) * 8
        proto, offset = payload[offset], offset + step
    return payload[:offset] + with_checksum(payload[offset:], proto, src, dst)


def patched(packet: bytes, at: int, value: bytes) -> bytes:
    """``packet`` with ``value`` written at ``at``: a damaged copy."""
    return packet[:at] + value + packet[at + len(value) :]


def flipped(packet: bytes, at: int, bits: int = 0x40) -> bytes:
    return patched(packet, at, bytes([packet[at] ^ bits]))


def ether(payload: bytes, ethertype: int, vlans: tuple[int, ...] = ()) -> bytes:
    head = bytes.fromhex("020000000002020000000001")
    for tpid in vlans:
        head += struct.pack(">HH", tpid, 100)
    return head + struct.pack(">H", ethertype) + payload


def cooked(payload: bytes, ethertype: int) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, bytes(8), ethertype) + payload
