"""Captured frames to ``Packet`` objects, and the kernel filter that picks them. No sockets.

``decode_frame`` and ``build_filter`` answer the same question -- "is this an initial
TCP SYN or a UDP datagram, and to which port?" -- once in Python and once as a
classic BPF program run by the kernel, so only knocks cross into Python. They are
kept in one module, with the IPv6 walk bounded by one constant, so a property test
can hold them to exactly the same answers.
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


def decode_frame(frame: Frame, now: float, *, link: Link = "ethernet") -> Packet | None:
    """The knock candidate in ``frame``: an initial TCP SYN (SYN set, ACK clear) or a UDP
    datagram over IPv4 or IPv6; ``None`` for anything else, a non-first fragment, or
    input too short to hold every header it announces.

    ``link`` says what precedes the IP header: an Ethernet II header (an 802.1Q/802.1ad
    tag is skipped), a Linux "cooked" header, or nothing (``AF_PACKET``/``SOCK_DGRAM``,
    what the sniffer reads; the version nibble then tells IPv4 from IPv6).
    """
    if link == "ip":
        return _decode_ip(frame, 0, now)
    offset = _LINK_HEADER[link]
    if len(frame) < offset:
        return None
    ethertype = int.from_bytes(frame[offset - 2 : offset], "big")
    while ethertype in _VLAN_TPIDS and link == "ethernet":
        offset += 4
        if len(frame) < offset:
            return None
        ethertype = int.from_bytes(frame[offset - 2 : offset], "big")
    if ethertype == ETH_P_IP and len(frame) > offset and frame[offset] >> 4 == 4:
        return _decode_ip(frame, offset, now)
    if ethertype == ETH_P_IPV6 and len(frame) > offset and frame[offset] >> 4 == 6:
        return _decode_ip(frame, offset, now)
    return None


def _decode_ip(frame: Frame, start: int, now: float) -> Packet | None:
    if len(frame) <= start:
        return None
    version = frame[start] >> 4
    if version == 4:
        ihl = (frame[start] & 0x0F) * 4
        if ihl < 20 or len(frame) < start + 20:
            return None
        if int.from_bytes(frame[start + 6 : start + 8], "big") & 0x1FFF:
            return None  # a later fragment: no transport header
        proto = frame[start + 9]
        src = socket.inet_ntop(socket.AF_INET, bytes(frame[start + 12 : start + 16]))
        dst = socket.inet_ntop(socket.AF_INET, bytes(frame[start + 16 : start + 20]))
        return _decode_transport(frame, start + ihl, proto, src, dst, now)
    if version != 6 or len(frame) < start + 40:
        return None
    proto, offset = frame[start + 6], start + 40
    for _ in range(MAX_IPV6_EXTENSIONS):
        if proto in IPV6_EXTENSIONS:
            if len(frame) < offset + 2:
                return None
            proto, offset = frame[offset], offset + (frame[offset + 1] + 1) * 8
        elif proto == IPV6_FRAGMENT:
            if len(frame) < offset + 8:
                return None
            if int.from_bytes(frame[offset + 2 : offset + 4], "big") & 0xFFF8:
                return None
            proto, offset = frame[offset], offset + 8
        else:
            break
    address = ipaddress.IPv6Address(bytes(frame[start + 8 : start + 24]))
    src = str(address.ipv4_mapped or address)
    dst = str(ipaddress.IPv6Address(bytes(frame[start + 24 : start + 40])))
    return _decode_transport(frame, offset, proto, src, dst, now)


def _decode_transport(
    frame: Frame, offset: int, proto: int, src: str, dst: str, now: float
) -> Packet | None:
    if proto == socket.IPPROTO_TCP:
        if len(frame) < offset + 20 or frame[offset + 13] & 0x12 != 0x02:
            return None
        sport, dport = struct.unpack_from(">HH", frame, offset)
        return Packet(now, src, dport, "tcp", sport, dst)
    if proto == socket.IPPROTO_UDP:
        if len(frame) < offset + 8:
            return None
        sport, dport = struct.unpack_from(">HH", frame, offset)
        return Packet(now, src, dport, "udp", sport, dst)
    return None


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

    Both sides drop, alike: non-first fragments, IPv6 behind AH/ESP/mobility headers
    or a longer chain, IHL < 5. Neither checks checksums, IP total length or the TCP
    data offset: a knock is read from its headers, and its source can be forged anyway.
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
    # IPv4: version 4 and IHL >= 5 in one byte, no later fragment, X = header length.
    a(LD_B_ABS, 0)
    a(JGE, 0x45, 0, "drop0")
    a(JGT, 0x4F, "drop0", 0)
    a(LD_H_ABS, 6)
    a(JSET, 0x1FFF, "drop0", 0)
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
            a.label(f"frag{i}")  # first fragment only; X += 8; A = hdr[0]
            a(LD_H_IND, 2)
            a(ALU_AND_K, 0xFFF8)
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
