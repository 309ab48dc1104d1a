"""Frame parsing and the kernel filter, without sockets.

The filter is run here by a small classic-BPF interpreter (it belongs to the tests,
not the package) and held to the parser's answer on random packets: on a packet
whose lengths and checksums are right, the kernel lets it through exactly when
``decode_frame`` sees a knock to a wanted port; on any packet, never less.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar

import pytest
from helpers.packets import (
    ACK,
    FIN,
    RST,
    SYN,
    V4_DST,
    V6_DST,
    cooked,
    ether,
    ext_header,
    flipped,
    frag_header,
    internet_checksum,
    ipv4,
    ipv6,
    patched,
    tcp,
    udp,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aioknock.daemon import frames
from aioknock.daemon.frames import build_filter, decode_frame, port_ranges
from aioknock.daemon.packet import Packet

PACKET_HOST = 0
T = TypeVar("T")

# ------------------------------------------------------------------- parsing


def test_ipv4_syn_over_ethernet() -> None:
    frame = ether(ipv4("198.18.0.1", tcp(50000, 40000)), 0x0800)
    assert decode_frame(frame, 12.5) == Packet(12.5, "198.18.0.1", 40000, "tcp", 50000, V4_DST)
    assert decode_frame(frame[14:], 1.0, link="ip") == Packet(
        1.0, "198.18.0.1", 40000, "tcp", 50000, V4_DST
    )


def test_ipv4_options_and_tcp_options_honoured() -> None:
    opts = bytes([0x94, 4, 0, 0]) + bytes([1] * 8)  # router alert + NOPs: IHL 8
    segment = tcp(1234, 22, options=bytes.fromhex("020405b40402080a00000001000000000103030701"))
    packet = decode_frame(ipv4("198.18.0.1", segment, options=opts), 0.0, link="ip")
    assert packet == Packet(0.0, "198.18.0.1", 22, "tcp", 1234, V4_DST)


def test_udp_and_ipv6() -> None:
    frame = ether(ipv6("2001:2::1", udp(5353, 7000, b"x"), 17), 0x86DD)
    assert decode_frame(frame, 0.0) == Packet(0.0, "2001:2::1", 7000, "udp", 5353, V6_DST, b"x")


@pytest.mark.parametrize("flags", [SYN | ACK, ACK, RST, FIN | ACK, 0])
def test_only_initial_syns(flags: int) -> None:
    assert decode_frame(ipv4("198.18.0.1", tcp(1, 2, flags)), 0.0, link="ip") is None
    # Other bits beside SYN (ECN, FIN, PSH...) do not matter; only ACK does.
    assert decode_frame(ipv4("198.18.0.1", tcp(1, 2, flags | SYN)), 0.0, link="ip") == (
        None if flags & ACK else Packet(0.0, "198.18.0.1", 2, "tcp", 1, V4_DST)
    )


def test_vlan_tags_skipped() -> None:
    ip = ipv4("198.18.0.9", tcp(3, 4))
    want = Packet(0.0, "198.18.0.9", 4, "tcp", 3, V4_DST)
    assert decode_frame(ether(ip, 0x0800, (0x8100,)), 0.0) == want
    assert decode_frame(ether(ip, 0x0800, (0x88A8, 0x8100)), 0.0) == want  # QinQ
    assert decode_frame(ether(ip, 0x0800, (0x8100,))[:17], 0.0) is None


def test_cooked_link() -> None:
    frame = cooked(ipv6("2001:2::1", tcp(3, 4)), 0x86DD)
    assert decode_frame(frame, 0.0, link="cooked") == Packet(0.0, "2001:2::1", 4, "tcp", 3, V6_DST)


def test_ipv4_mapped_source_shown_as_ipv4() -> None:
    """Never on a real interface (a martian there), but shown as IPv4 where taken."""
    packet = decode_frame(ipv6("::ffff:198.18.0.7", tcp(3, 4)), 0.0, link="ip", loopback=True)
    assert packet is not None and packet.src == "198.18.0.7"


def test_ipv6_extension_headers_walked() -> None:
    chain = (
        ext_header(43, 1)  # hop-by-hop, 16 bytes
        + ext_header(44, 0)  # routing
        + frag_header(60, 0)  # an atomic fragment (RFC 6946): the whole packet
        + ext_header(6, 2)  # destination options, 24 bytes
        + tcp(999, 40001)
    )
    packet = decode_frame(ipv6("2001:2::1", chain, 0), 0.0, link="ip")
    assert packet == Packet(0.0, "2001:2::1", 40001, "tcp", 999, V6_DST)


def test_ipv6_extension_chain_is_bounded() -> None:
    def build(n: int) -> bytes:
        payload = tcp(1, 2)
        nh = 6
        for _ in range(n):
            payload = ext_header(nh) + payload
            nh = 60
        return ipv6("2001:2::1", payload, nh)

    assert decode_frame(build(frames.MAX_IPV6_EXTENSIONS), 0.0, link="ip") is not None
    assert decode_frame(build(frames.MAX_IPV6_EXTENSIONS + 1), 0.0, link="ip") is None
    program = build_filter([2], [])
    assert accepts(program, build(frames.MAX_IPV6_EXTENSIONS))
    assert not accepts(program, build(frames.MAX_IPV6_EXTENSIONS + 1))


def test_fragments_are_not_knocks() -> None:
    """A first fragment whose rest never comes would never reach a socket: no knock."""
    for packet in (
        ipv4("198.18.0.1", tcp(1, 2), more=True),
        ipv4("198.18.0.1", tcp(1, 2), frag=185),
        ipv6("2001:2::1", frag_header(6, 0, more=True) + tcp(1, 2), 44),
        ipv6("2001:2::1", frag_header(6, 185) + tcp(1, 2), 44),
    ):
        assert decode_frame(packet, 0.0, link="ip") is None
    atomic = ipv6("2001:2::1", frag_header(6) + tcp(1, 2), 44)
    assert decode_frame(atomic, 0.0, link="ip") == Packet(0.0, "2001:2::1", 2, "tcp", 1, V6_DST)


KNOCKS = [
    ipv4("198.18.0.1", tcp(1, 2)),
    ipv4("198.18.0.1", udp(1, 2), 17),
    ipv4("198.18.0.1", tcp(1, 2), options=bytes(8)),
    ipv6("2001:2::1", tcp(1, 2)),
    ipv6("2001:2::1", ext_header(17, 1) + udp(1, 2), 0),
    ipv6("2001:2::1", frag_header(6) + tcp(1, 2), 44),
]


@pytest.mark.parametrize("packet", KNOCKS, ids=range(len(KNOCKS)))
def test_truncated_is_none(packet: bytes) -> None:
    assert decode_frame(packet, 0.0, link="ip") is not None
    for size in range(len(packet)):
        assert decode_frame(packet[:size], 0.0, link="ip") is None, size
    frame = ether(packet, 0x0800 if packet[0] >> 4 == 4 else 0x86DD)
    for size in range(14 + 1):
        assert decode_frame(frame[:size], 0.0) is None


@pytest.mark.parametrize(
    "frame",
    [
        ether(bytes(28), 0x0806),  # ARP
        ether(ipv6("2001:2::1", tcp(1, 2)), 0x0800),  # ethertype and version disagree
        ipv4("198.18.0.1", bytes(8), 1),  # ICMP
        ipv4("198.18.0.1", tcp(1, 2), ihl=4),  # IHL below the minimum
        ipv6("2001:2::1", bytes(8), 58),  # ICMPv6
        ipv6("2001:2::1", tcp(1, 2), 59),  # no next header
    ],
)
def test_not_a_knock(frame: bytes) -> None:
    link: frames.Link = "ethernet" if frame[0] == 2 else "ip"
    assert decode_frame(frame, 0.0, link=link) is None


def test_memoryview_input() -> None:
    buf = bytearray(ipv4("198.18.0.1", tcp(1, 2)) + bytes(100))
    assert decode_frame(memoryview(buf)[:40], 0.0, link="ip") == Packet(
        0.0, "198.18.0.1", 2, "tcp", 1, V4_DST
    )


# ------------------------------------------------------------- the BPF filter

BPF_LD, BPF_LDX, BPF_ST, BPF_ALU, BPF_JMP, BPF_RET, BPF_MISC = 0, 1, 2, 4, 5, 6, 7


def run_bpf(
    program: list[tuple[int, int, int, int]], data: bytes, *, protocol: int, pkttype: int
) -> int:
    """Classic BPF as the kernel runs it on a socket: returns the bytes to keep (0 = drop).

    Implements the instructions ``build_filter`` emits, the two ancillary loads, and the
    kernel's rule that a load past the end of the packet drops it.
    """
    a = x = pc = 0
    mem = [0] * 16
    ancillary = {0xFFFFF000: protocol, 0xFFFFF004: pkttype}

    def load(offset: int, size: int) -> int | None:
        if offset < 0 or offset + size > len(data):
            return None
        return int.from_bytes(data[offset : offset + size], "big")

    while True:
        assert 0 <= pc < len(program), "ran off the end of the program"
        code, jt, jf, k = program[pc]
        pc += 1
        cls, size = code & 0x07, {0x00: 4, 0x08: 2, 0x10: 1}.get(code & 0x18, 0)
        mode = code & 0xE0
        if cls == BPF_LD:
            if mode == 0x20 and k in ancillary:  # ABS, ancillary
                a = ancillary[k]
                continue
            if mode in (0x20, 0x40):  # ABS, IND
                value = load(k + (x if mode == 0x40 else 0), size)
                if value is None:
                    return 0
                a = value
            elif mode == 0x60:
                a = mem[k]
            elif mode == 0x00:
                a = k
            else:
                raise AssertionError(f"unsupported ld {code:#x}")
        elif cls == BPF_LDX:
            if mode == 0x00:
                x = k
            elif mode == 0x60:
                x = mem[k]
            elif mode == 0xA0:  # MSH: 4 * (P[k] & 0xf)
                value = load(k, 1)
                if value is None:
                    return 0
                x = (value & 0x0F) * 4
            else:
                raise AssertionError(f"unsupported ldx {code:#x}")
        elif cls == BPF_ST:
            mem[k] = a
        elif cls == BPF_ALU:
            src = x if code & 0x08 else k
            op = code & 0xF0
            a = {0x00: a + src, 0x50: a & src, 0x60: a << src}[op] & 0xFFFFFFFF
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == 0x00:
                pc += k
                continue
            src = x if code & 0x08 else k
            taken = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if taken else jf
        elif cls == BPF_RET:
            return k
        elif cls == BPF_MISC:
            if code == 0x07:
                x = a
            else:
                a = x
        else:
            raise AssertionError(f"unsupported class {code:#x}")


def check_structure(program: list[tuple[int, int, int, int]]) -> None:
    """What the kernel's checker insists on: in-range forward jumps, ending in ret."""
    assert 0 < len(program) <= 4096
    assert program[-1][0] & 0x07 == BPF_RET
    for pc, (code, jt, jf, k) in enumerate(program):
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
        if code & 0x07 == BPF_JMP:
            targets = [k] if code == 0x05 else [jt, jf]
            assert all(pc + 1 + t < len(program) for t in targets), pc


def accepts(program: list[tuple[int, int, int, int]], ip: bytes, pkttype: int = 0) -> bool:
    version = ip[0] >> 4 if ip else 0
    protocol = {4: 0x0800, 6: 0x86DD}.get(version, 0x0806)
    return run_bpf(program, ip, protocol=protocol, pkttype=pkttype) > 0


def test_port_ranges() -> None:
    assert port_ranges([5, 3, 4, 4, 9, 10, 1]) == [(1, 1), (3, 5), (9, 10)]
    with pytest.raises(ValueError, match="not a port number"):
        port_ranges([0])
    with pytest.raises(ValueError, match="not a port number"):
        port_ranges([65536])


def test_filter_basic() -> None:
    program = build_filter(range(40000, 40010), [7000])
    check_structure(program)
    src = "198.18.0.1"
    assert accepts(program, ipv4(src, tcp(1, 40000)))
    assert accepts(program, ipv4(src, tcp(1, 40009)))
    assert not accepts(program, ipv4(src, tcp(1, 40010)))
    assert not accepts(program, ipv4(src, tcp(1, 39999)))
    assert not accepts(program, ipv4(src, tcp(1, 40000, SYN | ACK)))
    assert not accepts(program, ipv4(src, tcp(1, 7000)))  # TCP to a UDP-only port
    assert accepts(program, ipv4(src, udp(1, 7000), 17))
    assert not accepts(program, ipv4(src, udp(1, 40000), 17))
    assert accepts(program, ipv6("2001:2::1", ext_header(6) + tcp(1, 40005), 60))
    assert not accepts(program, ipv4(src, tcp(1, 40000)), pkttype=frames.PACKET_OUTGOING)
    assert run_bpf(program, ipv4(src, tcp(1, 40000)), protocol=0x0806, pkttype=0) == 0
    # skb->protocol and the version nibble must agree (link="ip" parsing relies on it).
    assert run_bpf(program, ipv6("2001:2::1", tcp(1, 40000)), protocol=0x0800, pkttype=0) == 0
    assert run_bpf(program, ipv4(src, tcp(1, 40000)), protocol=0x86DD, pkttype=0) == 0


EVERY_PORT = range(1, 65536)
ALL_KNOCKS = build_filter(EVERY_PORT, EVERY_PORT)  # only the packet's shape decides


@pytest.mark.parametrize("packet", KNOCKS, ids=range(len(KNOCKS)))
def test_filter_drops_truncated(packet: bytes) -> None:
    program = ALL_KNOCKS
    assert accepts(program, packet)
    for size in range(len(packet)):
        assert not accepts(program, packet[:size]), size


def test_filter_drops_fragments() -> None:
    program = ALL_KNOCKS
    assert not accepts(program, ipv4("198.18.0.1", tcp(1, 2), more=True))
    assert not accepts(program, ipv6("2001:2::1", frag_header(6, 0, True) + tcp(1, 2), 44))
    assert accepts(program, ipv6("2001:2::1", frag_header(6) + tcp(1, 2), 44))
    for offset in (1, 185, 0x1000, 0x1FFF):
        assert not accepts(program, ipv4("198.18.0.1", tcp(1, 2), frag=offset))
        assert not accepts(program, ipv6("2001:2::1", frag_header(6, offset) + tcp(1, 2), 44))


def test_filter_compresses_ranges() -> None:
    base = len(build_filter([], []))
    program = build_filter([*range(10000, 20000), *range(30000, 40000), *range(50000, 62768)], [])
    assert sum(r[1] - r[0] + 1 for r in port_ranges(range(10000, 20000))) == 10000
    assert len(program) - base <= 3 * 3 + 6
    check_structure(program)


def test_filter_too_many_ranges() -> None:
    scattered = range(1, 65536, 2)
    with pytest.raises(ValueError, match=r"32768 TCP .* over the kernel's 4096"):
        build_filter(scattered, [])
    # Just under the limit still builds, with every jump in range.
    program = build_filter(range(1, 2 * 1300, 2), range(30001, 30001 + 2 * 600, 2))
    check_structure(program)
    assert accepts(program, ipv4("198.18.0.1", tcp(1, 2 * 1299 + 1)))
    assert not accepts(program, ipv4("198.18.0.1", tcp(1, 2 * 1299 + 2)))
    assert accepts(program, ipv4("198.18.0.1", udp(1, 30001 + 2 * 599), 17))


def test_empty_filter_drops_all() -> None:
    program = build_filter([], [])
    assert not accepts(program, ipv4("198.18.0.1", tcp(1, 2)))
    assert not accepts(program, ipv4("198.18.0.1", udp(1, 2), 17))


# ------------------------------------------------- property: filter == parser

PORTS_LIST = [1, 2, 22, 999, 1000, 1001, 4000, 40000, 40001, 65534, 65535]
PORTS = st.sampled_from(PORTS_LIST)
port_sets = st.frozensets(PORTS, max_size=6) | st.builds(
    lambda lo, n: frozenset(range(lo, min(65536, lo + n))),
    st.sampled_from([1, 999, 1000, 40000, 65530]),
    st.integers(1, 40),
)


def rarely(draw: st.DrawFn, usual: T, strategy: st.SearchStrategy[T]) -> T:
    """Mostly ``usual``, sometimes something from ``strategy``: most packets are knocks."""
    return usual if draw(st.sampled_from([True] * 6 + [False])) else draw(strategy)


@st.composite
def transports(draw: st.DrawFn, near: frozenset[int]) -> tuple[int, bytes]:
    proto = draw(st.sampled_from([6, 6, 6, 17, 17, 1, 58, 59, 132]))
    sport = draw(st.integers(0, 65535))
    dport = draw(st.sampled_from(sorted(near)) | st.integers(0, 65535))
    if proto == 6:
        flags = rarely(draw, SYN, st.sampled_from([SYN | ACK, ACK, RST, SYN | FIN, SYN | 0xC0]))
        flags = rarely(draw, flags, st.integers(0, 255))
        return proto, tcp(sport, dport, flags, bytes(4 * draw(st.integers(0, 2))))
    if proto == 17:
        return proto, udp(sport, dport, draw(st.binary(max_size=8)))
    return proto, draw(st.binary(min_size=0, max_size=24))


#: A packet and whether it is *clean*: every length and checksum right, so that only
#: its shape (and, off loopback, its addresses) decides whether it is a knock.
Drawn = tuple[bytes, bool]


@st.composite
def ip_packets(draw: st.DrawFn, near: frozenset[int] = frozenset(PORTS_LIST)) -> Drawn:
    """IPv4/IPv6 packets, mostly well-formed, some mangled, truncated or junk."""
    proto, payload = draw(transports(near))
    kind = draw(st.sampled_from(["v4", "v4", "v6", "v6", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=80)), False
    if kind == "v4":
        options = bytes(4 * draw(st.sampled_from([0, 1, 3, 10])))
        ihl: int | None = rarely(draw, None, st.integers(0, 15))
        frag = rarely(draw, 0, st.sampled_from([1, 185, 0x1000, 0x1FFF]))
        src = str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
        packet = ipv4(src, payload, proto, options=options, frag=frag,
                      more=rarely(draw, False, st.just(True)), ihl=ihl)  # fmt: skip
        clean = ihl is None or ihl * 4 == 20 + len(options)
    else:
        chain = draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=8))
        nh = proto
        for kind_ in reversed(chain):
            if kind_ == 44:
                offset = rarely(draw, 0, st.sampled_from([1, 8191]))
                payload = frag_header(nh, offset, rarely(draw, False, st.just(True))) + payload
            else:
                payload = ext_header(nh, draw(st.integers(0, 3))) + payload
            nh = kind_
        src_int = draw(st.integers(0, 2**128 - 1) | st.integers(0xFFFF00000000, 0xFFFFFFFFFFFF))
        packet, clean = ipv6(str(ipaddress.IPv6Address(src_int)), payload, nh), True
    if not rarely(draw, True, st.just(False)):
        packet = packet[: draw(st.integers(0, len(packet)))]
        clean = False
    return packet, clean


@st.composite
def filter_cases(draw: st.DrawFn) -> tuple[Drawn, frozenset[int], frozenset[int]]:
    tcp_ports, udp_ports = draw(port_sets), draw(port_sets)
    near = {p + d for p in tcp_ports | udp_ports for d in (-1, 0, 1)} & set(range(65536))
    return draw(ip_packets(frozenset(near) or frozenset(PORTS_LIST))), tcp_ports, udp_ports


def check_agreement(accepted: bool, drawn: Drawn, wanted: bool) -> None:
    """The kernel never drops what the parser takes; on a clean packet, the two agree."""
    clean = drawn[1]
    if wanted:
        assert accepted
    if clean:
        assert accepted == wanted


@settings(max_examples=1000, deadline=None)
@given(ip_packets())
def test_filter_agrees_with_parser_on_structure(drawn: Drawn) -> None:
    """With every port wanted, only the packet's shape decides: the sharpest check."""
    parsed = decode_frame(drawn[0], 0.0, link="ip", loopback=True)
    check_agreement(accepts(ALL_KNOCKS, drawn[0]), drawn, parsed is not None and parsed.dport != 0)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(filter_cases())
def test_filter_agrees_with_parser(case: tuple[Drawn, frozenset[int], frozenset[int]]) -> None:
    drawn, tcp_ports, udp_ports = case
    program = build_filter(tcp_ports, udp_ports)
    parsed = decode_frame(drawn[0], 0.0, link="ip", loopback=True)
    wanted = parsed is not None and parsed.dport in (
        tcp_ports if parsed.proto == "tcp" else udp_ports
    )
    check_agreement(accepts(program, drawn[0]), drawn, wanted)


@settings(max_examples=300, deadline=None)
@given(ip_packets())
def test_link_headers_agree(drawn: Drawn) -> None:
    packet = drawn[0]
    assume(packet[:1] and packet[0] >> 4 in (4, 6))
    ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    direct = decode_frame(packet, 3.0, link="ip")
    assert decode_frame(ether(packet, ethertype), 3.0) == direct
    assert decode_frame(ether(packet, ethertype, (0x8100,)), 3.0) == direct
    assert decode_frame(cooked(packet, ethertype), 3.0, link="cooked") == direct


# ------------------------------------------- property: what the kernel would drop


def martian(address: str) -> bool:
    """The rule, said with ``ipaddress`` rather than with the parser's bytes."""
    a = ipaddress.ip_address(address)
    if isinstance(a, ipaddress.IPv4Address):
        return a in ipaddress.ip_network("0.0.0.0/8") or a.is_loopback or int(a) >> 29 == 7
    return a.is_unspecified or a.is_loopback or a.is_multicast or a.ipv4_mapped is not None


@settings(max_examples=500, deadline=None)
@given(ip_packets())
def test_martian_sources_only_on_loopback(drawn: Drawn) -> None:
    packet = drawn[0]
    there = decode_frame(packet, 0.0, link="ip", loopback=True)
    here = decode_frame(packet, 0.0, link="ip")
    if there is None:
        assert here is None
        return
    v6 = packet[0] >> 4 == 6
    src = str(ipaddress.ip_address(packet[8:24] if v6 else packet[12:16]))
    assert (here is None) == (martian(src) or martian(there.dst)), (src, there)
    assert here is None or here == there


@settings(max_examples=300, deadline=None)
@given(ip_packets(), st.data())
def test_any_changed_byte_is_refused(drawn: Drawn, data: st.DataObject) -> None:
    """Headers and checksums together catch every changed byte of a knock that a
    checksum covers: all of IPv4; IPv6 but for traffic class, flow label and hop
    limit (bytes 0-3, 7), here without extension headers (no checksum covers them).
    The one exception: a UDP checksum over IPv4 changed to zero ("no checksum")."""
    packet = drawn[0]
    parsed = decode_frame(packet, 0.0, link="ip", loopback=True)
    assume(parsed is not None)
    assert parsed is not None
    v6 = packet[0] >> 4 == 6
    assume(not v6 or packet[6] in (6, 17))
    covered = [i for i in range(len(packet)) if not v6 or (i >= 4 and i != 7)]
    at = data.draw(st.sampled_from(covered))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != packet[at]))
    changed = packet[:at] + bytes([new]) + packet[at + 1 :]
    if decode_frame(changed, 0.0, link="ip", loopback=True) is not None:
        ihl = (packet[0] & 15) * 4
        assert parsed.proto == "udp" and not v6
        assert at in (ihl + 6, ihl + 7) and changed[ihl + 6 : ihl + 8] == b"\0\0"


# ------------------------------------------------------ what the kernel would drop

GOOD_V4 = ipv4("198.18.0.1", tcp(1, 40000))
GOOD_V6 = ipv6("2001:2::1", tcp(1, 40000))


def test_checksums_are_verified() -> None:
    assert decode_frame(GOOD_V4, 0.0, link="ip") is not None
    assert internet_checksum(GOOD_V4[:20]) == 0
    bad_ip, bad_tcp, bad_tcp6 = flipped(GOOD_V4, 10), flipped(GOOD_V4, 36), flipped(GOOD_V6, 56)
    for packet in (bad_ip, bad_tcp, bad_tcp6):
        assert decode_frame(packet, 0.0, link="ip") is None
    # Offloaded (the capture says so): the kernel checks the TCP sum, not us; the IP
    # header's sum is always there to check.
    assert decode_frame(bad_tcp, 0.0, link="ip", transport_checksum=False) is not None
    assert decode_frame(bad_tcp6, 0.0, link="ip", transport_checksum=False) is not None
    assert decode_frame(bad_ip, 0.0, link="ip", transport_checksum=False) is None
    assert decode_frame(ipv4("198.18.0.1", tcp(1, 2), transport_sum=False), 0.0, link="ip") is None


def test_udp_checksum_zero_means_none_over_ipv4_only() -> None:
    v4 = ipv4("198.18.0.1", udp(1, 7000, b"x"), 17, transport_sum=False)
    v6 = ipv6("2001:2::1", udp(1, 7000, b"x"), 17, transport_sum=False)
    assert decode_frame(v4, 0.0, link="ip") == Packet(
        0.0, "198.18.0.1", 7000, "udp", 1, V4_DST, b"x"
    )
    assert decode_frame(v6, 0.0, link="ip") is None
    good6 = ipv6("2001:2::1", udp(1, 7000, b"x"), 17)
    assert decode_frame(good6, 0.0, link="ip") is not None


def test_lengths_are_checked() -> None:
    v4 = ipv4("198.18.0.1", tcp(1, 40000))
    assert decode_frame(v4 + bytes(6), 0.0, link="ip") is not None  # Ethernet padding
    for total in (0, 19, 20, 39, 41, 1500):  # shorter than its headers, or than it says
        assert decode_frame(ipv4("198.18.0.1", tcp(1, 2), total=total), 0.0, link="ip") is None
    four, six_words = patched(tcp(1, 2), 12, b"\x40"), patched(tcp(1, 2), 12, b"\x60")
    assert decode_frame(ipv4("198.18.0.1", four), 0.0, link="ip") is None
    assert decode_frame(ipv4("198.18.0.1", six_words), 0.0, link="ip") is None  # past the end
    assert decode_frame(ipv4("198.18.0.1", six_words + bytes(4)), 0.0, link="ip") is not None
    short_udp = patched(udp(1, 2, b"abc"), 4, b"\x00\x07")
    long_udp = patched(udp(1, 2, b"abc"), 4, b"\x00\x0c")
    assert decode_frame(ipv4("198.18.0.1", short_udp, 17), 0.0, link="ip") is None
    assert decode_frame(ipv4("198.18.0.1", long_udp, 17), 0.0, link="ip") is None
    trailing = ipv4("198.18.0.1", patched(udp(1, 2, b"abc"), 4, b"\x00\x0a"), 17)
    assert decode_frame(trailing, 0.0, link="ip") is None  # its sum covers 10 bytes, not 11
    six = GOOD_V6
    assert decode_frame(six + bytes(8), 0.0, link="ip") is not None
    assert decode_frame(patched(six, 4, b"\x00\x00"), 0.0, link="ip") is None  # jumbogram
    assert decode_frame(patched(six, 4, b"\x00\x13"), 0.0, link="ip") is None
    assert decode_frame(patched(six, 4, b"\x00\x15"), 0.0, link="ip") is None


@pytest.mark.parametrize(
    "src", ["127.0.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.1.1.1", "255.255.255.255",
            "240.0.0.1"],
)  # fmt: skip
def test_martian_ipv4_sources(src: str) -> None:
    packet = ipv4(src, tcp(1, 2))
    assert decode_frame(packet, 0.0, link="ip") is None
    assert decode_frame(packet, 0.0, link="ip", loopback=True) is not None


@pytest.mark.parametrize("src", ["::", "::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:198.18.0.7"])
def test_martian_ipv6_sources(src: str) -> None:
    packet = ipv6(src, tcp(1, 2))
    assert decode_frame(packet, 0.0, link="ip") is None
    assert decode_frame(packet, 0.0, link="ip", loopback=True) is not None


def test_loopback_destinations_only_on_loopback() -> None:
    for packet in (ipv4("198.18.0.1", tcp(1, 2), dst="127.0.0.1"),
                   ipv6("2001:2::1", tcp(1, 2), dst="::1")):  # fmt: skip
        assert decode_frame(packet, 0.0, link="ip") is None
        assert decode_frame(packet, 0.0, link="ip", loopback=True) is not None
