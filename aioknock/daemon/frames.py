"""Captured frames to ``Packet`` objects, and the kernel filter that picks them. No sockets.

``decode_frame`` and ``build_filter`` answer the same question -- "is this an initial
TCP SYN or a UDP datagram, and to which port?" -- once in Python and once as a
classic BPF program run by the kernel, so only knocks cross into Python. They are
kept in one module, with the IPv6 walk bounded by one constant, so a property test
can hold them to the same answers. The parser alone also checks what the kernel
checks before a socket sees a packet (lengths, checksums, martian addresses): a
capture sees frames the kernel then drops, and those must not count as knocks.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from typing import Literal

from .packet import Packet

Link = Literal["ethernet", "cooked", "ip"]
Frame = bytes | bytearray | memoryview
Instruction = tuple[int, int, int, int]  # (code, jt, jf, k), as struct sock_filter

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
_VLAN_TPIDS = (0x8100, 0x88A8)
_LINK_HEADER = {"ethernet": 14, "cooked": 16}  # cooked: pcap's LINUX_SLL (tcpdump -i any)

#: IPv6 extension headers walked, in Python and in the kernel: hop-by-hop, routing,
#: destination options (length in 8-octet units) and fragment (always 8 octets).
IPV6_EXTENSIONS = frozenset({0, 43, 60})
IPV6_FRAGMENT = 44
#: At most this many extension headers before TCP/UDP; more is not a knock.
MAX_IPV6_EXTENSIONS = 6

BPF_MAXINSNS = 4096  # the kernel's limit for one classic program
SNAPLEN = 0xFFFF  # an accepted packet is passed whole (the parser needs only headers)
PACKET_OUTGOING = 4
_SKF_AD_PROTOCOL = 0xFFFFF000  # SKF_AD_OFF + 0: skb->protocol, host order
_SKF_AD_PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + 4: PACKET_HOST, ..., PACKET_OUTGOING


def decode_frame(
    frame: Frame, now: float, *, link: Link = "ethernet", loopback: bool = False,
    transport_checksum: bool = True,
) -> Packet | None:  # fmt: skip
    """The knock candidate in ``frame``: an initial TCP SYN (SYN set, ACK clear) or a UDP
    datagram over IPv4 or IPv6 that the kernel itself would accept; ``None`` for
    anything else.

    ``link`` says what precedes the IP header: an Ethernet II header (an 802.1Q/802.1ad
    tag is skipped), a Linux "cooked" header, or nothing (``AF_PACKET``/``SOCK_DGRAM``,
    what the sniffer reads; the version nibble then tells IPv4 from IPv6).

    Refused, as the kernel refuses them before any socket sees them: a frame shorter
    than the lengths its headers announce, an IPv4 header with a bad checksum, any
    fragment (reassembly is the kernel's; a knock is never fragmented), a TCP data
    offset outside the segment, and, unless ``loopback`` (captured on a loopback
    device), a martian source (0/8, 127/8, 224/3, IPv6 ::, ::1, ff00::/8, IPv4-mapped)
    or a loopback destination. ``transport_checksum`` verifies the TCP/UDP checksum;
    the sniffer clears it when the capture says the checksum was verified already
    or is not filled in yet (offload), and then the kernel's own check decides.
    """
    if link == "ip":
        return _decode_ip(memoryview(frame), now, loopback, transport_checksum)
    offset = _LINK_HEADER[link]
    if len(frame) < offset:
        return None
    ethertype = int.from_bytes(frame[offset - 2 : offset], "big")
    while ethertype in _VLAN_TPIDS and link == "ethernet":
        offset += 4
        if len(frame) < offset:
            return None
        ethertype = int.from_bytes(frame[offset - 2 : offset], "big")
    version = frame[offset] >> 4 if len(frame) > offset else 0
    if (ethertype, version) in ((ETH_P_IP, 4), (ETH_P_IPV6, 6)):
        return _decode_ip(memoryview(frame)[offset:], now, loopback, transport_checksum)
    return None


def _decode_ip(ip: memoryview, now: float, loopback: bool, checksum: bool) -> Packet | None:
    version = ip[0] >> 4 if ip else 0
    if version == 4:
        return _decode_ipv4(ip, now, loopback, checksum)
    if version == 6:
        return _decode_ipv6(ip, now, loopback, checksum)
    return None


_IPV4 = struct.Struct(">BxHxxHxB2x4s4s")  # version/IHL, length, flags/offset, protocol


def _decode_ipv4(ip: memoryview, now: float, loopback: bool, checksum: bool) -> Packet | None:
    if len(ip) < 20:
        return None
    first, total, fragment, proto, src, dst = _IPV4.unpack_from(ip)
    ihl = (first & 0x0F) * 4
    if not 20 <= ihl <= total <= len(ip) or int.from_bytes(ip[:ihl], "big") % 0xFFFF:
        return None  # too short for what it says, or a bad header checksum (see _sum)
    if fragment & 0x3FFF:
        return None  # more fragments, or a later one
    if not loopback and (src[0] in _MARTIAN_V4_SOURCE or src[0] >= 224 or dst[0] in (0, 127)):
        return None
    pseudo = int.from_bytes(src + dst, "big") + proto if checksum else None
    return _decode_transport(
        ip[ihl:total], proto, socket.inet_ntop(socket.AF_INET, src),
        socket.inet_ntop(socket.AF_INET, dst), now, pseudo,
    )  # fmt: skip


def _decode_ipv6(ip: memoryview, now: float, loopback: bool, checksum: bool) -> Packet | None:
    if len(ip) < 40:
        return None
    end = 40 + int.from_bytes(ip[4:6], "big")
    if end == 40 or end > len(ip):
        return None  # a jumbogram (payload length 0) is not a knock either
    ip = ip[:end]
    proto, offset = ip[6], 40
    for _ in range(MAX_IPV6_EXTENSIONS):
        if proto in IPV6_EXTENSIONS:
            if len(ip) < offset + 2:
                return None
            proto, offset = ip[offset], offset + (ip[offset + 1] + 1) * 8
        elif proto == IPV6_FRAGMENT:
            if len(ip) < offset + 8 or int.from_bytes(ip[offset + 2 : offset + 4], "big") & 0xFFF9:
                return None  # only an atomic fragment (offset 0, no more) is whole
            proto, offset = ip[offset], offset + 8
        else:
            break
    if not loopback and _martian_v6(ip[8:24], ip[24:40]):
        return None
    pseudo = int.from_bytes(ip[8:40], "big") + proto if checksum else None
    return _decode_transport(ip[offset:], proto, _ipv6_text(ip[8:24]), _ipv6_text(ip[24:40]),
                             now, pseudo, v6=True)  # fmt: skip


def _ipv6_text(address: memoryview) -> str:
    """As ``ipaddress`` writes it, an IPv4-mapped one as IPv4; ``inet_ntop`` is faster
    but writes the deprecated IPv4-compatible ::/96 in dotted form."""
    if address[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, address[12:])
    text = socket.inet_ntop(socket.AF_INET6, address)
    return str(ipaddress.IPv6Address(bytes(address))) if "." in text else text


#: First octets of IPv4 sources the kernel drops as martians (with 224 and above).
_MARTIAN_V4_SOURCE = frozenset({0, 127})
_V6_ZERO, _V6_ONE = bytes(16), bytes(15) + b"\x01"
_V4_MAPPED = bytes(10) + b"\xff\xff"


def _martian_v6(src: memoryview, dst: memoryview) -> bool:
    return (
        src in (_V6_ZERO, _V6_ONE)
        or src[0] == 0xFF
        or src[:12] == _V4_MAPPED
        or dst in (_V6_ZERO, _V6_ONE)
    )


def _decode_transport(
    segment: memoryview, proto: int, src: str, dst: str, now: float, pseudo: int | None,
    v6: bool = False,
) -> Packet | None:  # fmt: skip
    """``segment`` runs to the end of the IP payload; ``pseudo`` (the pseudo-header's
    addresses and protocol, as one number: see ``_sum``) is given when the checksum
    is to be verified."""
    if proto == socket.IPPROTO_TCP:
        if len(segment) < 20 or segment[13] & 0x12 != 0x02:
            return None
        if not 20 <= (segment[12] >> 4) * 4 <= len(segment):
            return None
        if pseudo is not None and (pseudo + len(segment) + _sum(segment)) % 0xFFFF:
            return None
        sport, dport = struct.unpack_from(">HH", segment)
        return Packet(now, src, dport, "tcp", sport, dst)
    if proto == socket.IPPROTO_UDP:
        length = int.from_bytes(segment[4:6], "big") if len(segment) >= 8 else 0
        if not 8 <= length <= len(segment):
            return None
        if pseudo is not None and not _udp_checksum_ok(pseudo, segment[:length], v6):
            return None
        sport, dport = struct.unpack_from(">HH", segment)
        return Packet(now, src, dport, "udp", sport, dst, bytes(segment[8:length]))
    return None


def _udp_checksum_ok(pseudo: int, datagram: memoryview, v6: bool) -> bool:
    if not datagram[6] | datagram[7]:  # "no checksum": allowed over IPv4 only
        return not v6
    return (pseudo + len(datagram) + _sum(datagram)) % 0xFFFF == 0


def _sum(data: memoryview) -> int:
    """``data`` (zero-padded to 16-bit words) as one big-endian number. The Internet
    checksum (RFC 1071) is right when the ones' complement sum of all words is 0xFFFF;
    as 2**16 is 1 modulo 0xFFFF, that is this number (plus the pseudo-header's, where
    there is one) being 0 modulo 0xFFFF -- one conversion instead of a loop over
    words. (Data of only zeros would pass too; no IP header or pseudo-header is.)"""
    number = int.from_bytes(data, "big")
    return number << 8 if len(data) & 1 else number


# ------------------------------------------------------------------ kernel filter

# Classic BPF opcodes (linux/filter.h); only those the program below uses.
LD_W_ABS, LD_H_ABS, LD_B_ABS = 0x20, 0x28, 0x30
LD_H_IND, LD_B_IND, LD_MEM = 0x48, 0x50, 0x60
LDX_IMM, LDX_MEM, LDX_MSH = 0x01, 0x61, 0xB1
ST, ALU_ADD_K, ALU_ADD_X, ALU_AND_K, ALU_LSH_K = 0x02, 0x04, 0x0C, 0x54, 0x64
JA, JEQ, JGT, JGE, JSET = 0x05, 0x15, 0x25, 0x35, 0x45
RET_K, TAX, TXA = 0x06, 0x07, 0x87


class _Assembler:
    """Collects instructions whose jump targets may be labels, then resolves them."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int | str]] = []
        self.labels: dict[str, int] = {}

    def __call__(self, code: int, k: int | str = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def resolve(self) -> list[Instruction]:
        out: list[Instruction] = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            rel = [self.labels[t] - pc - 1 if isinstance(t, str) else t for t in (jt, jf, k)]
            if code != JA and not all(0 <= r <= 255 for r in rel[:2]):
                raise AssertionError(f"jump out of range at {pc}: {self.code[pc]}")
            out.append((code, rel[0], rel[1], rel[2]))
        return out


def port_ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    """``ports`` as sorted, disjoint, inclusive ``(low, high)`` ranges."""
    ranges: list[tuple[int, int]] = []
    for port in sorted(set(ports)):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"capture filter: {port!r} is not a port number (1-65535)")
        if ranges and ranges[-1][1] == port - 1:
            ranges[-1] = (ranges[-1][0], port)
        else:
            ranges.append((port, port))
    return ranges


def build_filter(tcp_ports: Iterable[int], udp_ports: Iterable[int]) -> list[Instruction]:
    """A classic BPF program for an ``AF_PACKET``/``SOCK_DGRAM`` socket (data starts at
    the IP header) that passes what ``decode_frame(..., link="ip")`` would return for a
    wanted port, and nothing else: incoming (not ``PACKET_OUTGOING``) IPv4/IPv6 TCP SYNs
    without ACK to ``tcp_ports`` and UDP datagrams to ``udp_ports``. IPv6 extension
    headers are walked as in the parser (up to ``MAX_IPV6_EXTENSIONS``); ports are
    compared as ranges, so a contiguous span costs three instructions.

    Both sides drop, alike: fragments (an IPv6 atomic fragment is whole and kept),
    IPv6 behind AH/ESP/mobility headers or a longer chain, IHL < 5, headers cut short.
    Only the parser checks total lengths, checksums and martian addresses: what the
    kernel passes is a superset of what the parser keeps, never the other way round.
    Raises ``ValueError`` if the ports need more than ``BPF_MAXINSNS`` instructions.
    """
    tcp, udp = port_ranges(tcp_ports), port_ranges(udp_ports)
    a = _Assembler()
    _emit_ip_headers(a)
    _emit_ipv6_walk(a)
    _emit_transport(a, tcp, udp)
    if len(a.code) > BPF_MAXINSNS:
        raise ValueError(
            f"capture filter: {len(tcp)} TCP and {len(udp)} UDP port ranges need "
            f"{len(a.code)} BPF instructions, over the kernel's {BPF_MAXINSNS}; "
            "use fewer, contiguous port ranges"
        )
    return a.resolve()


def _emit_ip_headers(a: _Assembler) -> None:
    """Drop what this host sends; route by skb->protocol, not by guessing. IPv4 leaves
    A = protocol and X = header length for "transport"; IPv6 goes to "walk0"."""
    a(LD_W_ABS, _SKF_AD_PKTTYPE)
    a(JEQ, PACKET_OUTGOING, "drop0", 0)
    a(LD_W_ABS, _SKF_AD_PROTOCOL)
    a(JEQ, ETH_P_IP, 0, "ip6")
    # IPv4: version 4 and IHL >= 5 in one byte, not a fragment, X = header length.
    a(LD_B_ABS, 0)
    a(JGE, 0x45, 0, "drop0")
    a(JGT, 0x4F, "drop0", 0)
    a(LD_H_ABS, 6)
    a(JSET, 0x3FFF, "drop0", 0)
    a(LDX_MSH, 0)
    a(LD_B_ABS, 9)
    a(JA, "transport")
    a.label("ip6")
    a(JEQ, ETH_P_IPV6, 0, "drop0")
    a(LD_B_ABS, 0)
    a(ALU_AND_K, 0xF0)
    a(JEQ, 0x60, 0, "drop0")
    a(LDX_IMM, 40)
    a(LD_B_ABS, 6)
    a(JA, "walk0")
    a.label("drop0")
    a(RET_K, 0)


def _emit_ipv6_walk(a: _Assembler) -> None:
    """Unrolled (classic BPF has no backward jumps). A = next header, X = offset."""
    for i in range(MAX_IPV6_EXTENSIONS + 1):
        a.label(f"walk{i}")
        last = i == MAX_IPV6_EXTENSIONS
        for ext in sorted(IPV6_EXTENSIONS):
            a(JEQ, ext, f"drop_w{i}" if last else f"ext{i}", 0)
        a(JEQ, IPV6_FRAGMENT, f"drop_w{i}" if last else f"frag{i}", 0)
        a(JA, "transport")
        if not last:
            a.label(f"ext{i}")  # X += (hdr[1] + 1) * 8; A = hdr[0]
            a(LD_B_IND, 1)
            a(ALU_ADD_K, 1)
            a(ALU_LSH_K, 3)
            a(ALU_ADD_X)
            a(ST, 0)
            a(LD_B_IND, 0)
            a(LDX_MEM, 0)
            a(JA, f"walk{i + 1}")
            a.label(f"frag{i}")  # an atomic fragment only; X += 8; A = hdr[0]
            a(LD_H_IND, 2)
            a(ALU_AND_K, 0xFFF9)
            a(JEQ, 0, 0, f"drop_w{i}")
            a(LD_B_IND, 0)
            a(ST, 0)
            a(TXA)
            a(ALU_ADD_K, 8)
            a(TAX)
            a(LD_MEM, 0)
            a(JA, f"walk{i + 1}")
        a.label(f"drop_w{i}")
        a(RET_K, 0)


def _emit_transport(a: _Assembler, tcp: list[tuple[int, int]], udp: list[tuple[int, int]]) -> None:
    """A = protocol, X = offset of its header. The header's last byte is probed first,
    so a truncated header is dropped here as the parser drops it."""
    a.label("transport")
    a(JEQ, socket.IPPROTO_TCP, 0, 1)
    a(JA, "tcp")
    a(JEQ, socket.IPPROTO_UDP, 0, 1)
    a(JA, "udp")
    a(RET_K, 0)
    a.label("tcp")
    if tcp:
        a(LD_B_IND, 19)
        a(LD_B_IND, 13)
        a(ALU_AND_K, 0x12)
        a(JEQ, 0x02, 1, 0)
        a(RET_K, 0)
        a(LD_H_IND, 2)
        _emit_ranges(a, tcp)
    a(RET_K, 0)
    a.label("udp")
    if udp:
        a(LD_B_IND, 7)
        a(LD_H_IND, 2)
        _emit_ranges(a, udp)
    a(RET_K, 0)


def _emit_ranges(a: _Assembler, ranges: list[tuple[int, int]]) -> None:
    # Only short, local jumps: a long list cannot overflow the 8-bit jump offsets.
    for low, high in ranges:
        if low == high:
            a(JEQ, low, 0, 1)
        else:
            a(JGE, low, 0, 2)
            a(JGT, high, 1, 0)
        a(RET_K, SNAPLEN)
