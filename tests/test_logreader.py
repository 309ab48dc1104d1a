"""``LineReader``: knocks out of kernel (iptables LOG / nftables log), client and custom lines.

The kernel lines below are real: written by nftables ``log`` in a network
namespace (kernel 6.18); the root test at the end produces and parses fresh ones.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from helpers.netns import NetnsPair, requires_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioknock.codec.logtemplate import LogTemplate
from aioknock.config.settings import DEFAULT_FILEFORMAT, DaemonSettings
from aioknock.daemon.logreader import LineReader
from aioknock.daemon.packet import Packet
from aioknock.errors import ConfigError, InvalidValue

KERNEL = LineReader.build("kernel")
NOW = 1_700_000_000.0

V4_SYN = (
    "aioknock: IN=veth-s OUT= MAC=da:dc:84:bc:6d:21:9a:9b:b6:f9:c4:10:08:00 SRC=198.18.0.1 "
    "DST=198.18.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=54776 DF PROTO=TCP SPT=41846 "
    "DPT=40001 WINDOW=64240 RES=0x00 SYN URGP=0 "
)
V4_UDP = (
    "aioknock: IN=veth-s OUT= MAC=da:dc:84:bc:6d:21:9a:9b:b6:f9:c4:10:08:00 SRC=198.18.0.1 "
    "DST=198.18.0.2 LEN=29 TOS=0x00 PREC=0x00 TTL=64 ID=31144 DF PROTO=UDP SPT=45323 "
    "DPT=40002 LEN=9 "
)
# nftables "log flags all" / iptables --log-tcp-sequence: SEQ= and ACK=0 on a bare SYN.
V4_SYN_ALL = (
    "aioknock: IN=veth-s OUT= MACSRC=9a:9b:b6:f9:c4:10 MACDST=da:dc:84:bc:6d:21 MACPROTO=0800 "
    "SRC=198.18.0.1 DST=198.18.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=58739 DF PROTO=TCP "
    "SPT=44582 DPT=40003 SEQ=2306054498 ACK=0 WINDOW=64240 RES=0x00 SYN URGP=0 "
    "OPT (020405B40402080AB96A342F000000000103030A) "
)
V6_SYN = (
    "aioknock: IN=veth-s OUT= MAC=da:dc:84:bc:6d:21:9a:9b:b6:f9:c4:10:86:dd "
    "SRC=2001:0002:0000:0000:0000:0000:0000:0001 DST=2001:0002:0000:0000:0000:0000:0000:0002 "
    "LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=151846 PROTO=TCP SPT=58890 DPT=40001 WINDOW=64800 "
    "RES=0x00 SYN URGP=0 "
)
V6_UDP = (
    "aioknock: IN=veth-s OUT= MAC=da:dc:84:bc:6d:21:9a:9b:b6:f9:c4:10:86:dd "
    "SRC=2001:0002:0000:0000:0000:0000:0000:0001 DST=2001:0002:0000:0000:0000:0000:0000:0002 "
    "LEN=49 TC=0 HOPLIMIT=64 FLOWLBL=846183 PROTO=UDP SPT=60684 DPT=40002 LEN=9 "
)
V6_SYN_ALL = (
    "aioknock: IN=veth-s OUT= MACSRC=9a:9b:b6:f9:c4:10 MACDST=da:dc:84:bc:6d:21 MACPROTO=86dd "
    "SRC=2001:0002:0000:0000:0000:0000:0000:0001 DST=2001:0002:0000:0000:0000:0000:0000:0002 "
    "LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=100906 PROTO=TCP SPT=37396 DPT=40003 SEQ=1954969971 "
    "ACK=0 WINDOW=64800 RES=0x00 SYN URGP=0 OPT (020405A00402080ADB37526C000000000103030A) "
)
# iptables LOG as ufw sets it up, in kern.log (no space between prefix and IN= is a
# common --log-prefix mistake and must still read).
UFW = (
    "Nov 26 14:27:02 gate kernel: [12345.678901] [UFW BLOCK] IN=eth0 OUT= "
    "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.9 DST=192.0.2.1 LEN=60 "
    "TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=51000 DPT=40017 WINDOW=29200 "
    "RES=0x00 SYN URGP=0 "
)
BRIDGED = (
    "kernel: knockIN=br0 OUT=br0 PHYSIN=eth1 PHYSOUT=eth2 MAC=52:54:00:12:34:56:52:54:00:65:43:21"
    ":08:00 SRC=203.0.113.9 DST=192.0.2.1 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=1 PROTO=UDP "
    "SPT=5353 DPT=7000 LEN=40 MARK=0x4b4e4f43 "
)

SYSLOG_PREFIXES = [
    "",
    "[ 2358.032604] ",  # dmesg
    "Nov 26 14:27:02 gate kernel: ",  # kern.log / journalctl -k
    "Nov  6 04:07:09 gate kernel: [ 2358.032604] ",  # kern.log with kernel timestamps
    "2024-11-26T14:27:02.123456+01:00 gate kernel: ",  # rsyslog high-precision
    "<4>Nov 26 14:27:02 kernel: ",  # raw syslog with priority
    "6,1234,2358032604,-;",  # /dev/kmsg record
]


def v4(port: int, proto: str = "tcp", sport: int = 0) -> Packet:
    return Packet(NOW, "198.18.0.1", port, "udp" if proto == "udp" else "tcp", sport)


@pytest.mark.parametrize("prefix", SYSLOG_PREFIXES)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (V4_SYN, Packet(NOW, "198.18.0.1", 40001, "tcp", 41846)),
        (V4_UDP, Packet(NOW, "198.18.0.1", 40002, "udp", 45323)),
        (V4_SYN_ALL, Packet(NOW, "198.18.0.1", 40003, "tcp", 44582)),
        (V6_SYN, Packet(NOW, "2001:2::1", 40001, "tcp", 58890)),
        (V6_UDP, Packet(NOW, "2001:2::1", 40002, "udp", 60684)),
        (V6_SYN_ALL, Packet(NOW, "2001:2::1", 40003, "tcp", 37396)),
        (UFW, Packet(NOW, "203.0.113.9", 40017, "tcp", 51000)),
        (BRIDGED, Packet(NOW, "203.0.113.9", 7000, "udp", 5353)),
    ],
    ids=["v4-syn", "v4-udp", "v4-flags-all", "v6-syn", "v6-udp", "v6-flags-all", "ufw", "bridge"],
)
def test_kernel_lines(prefix: str, line: str, expected: Packet) -> None:
    assert KERNEL.decode(prefix + line, NOW) == expected
    assert KERNEL.decode((prefix + line).rstrip(), NOW) == expected


@pytest.mark.parametrize("name", ["kernel", "iptables", "nftables", " NFTables "])
def test_kernel_format_names(name: str) -> None:
    assert LineReader.build(name).decode(V4_SYN, NOW) == v4(40001, sport=41846)


TCP_TAIL = "DPT=40001 WINDOW=64240 RES=0x00 SYN URGP=0 "


@pytest.mark.parametrize(
    "flags",
    [
        "ACK SYN",  # the server's answer
        "ACK",
        "ACK PSH",
        "ACK FIN",
        "ACK RST",
        "RST",  # no SYN: not a connection attempt
        "FIN",
        "",
        "SEQ=1 ACK=5 ACK SYN",
        "CWR ECE ACK SYN",
    ],
)
def test_tcp_without_bare_syn_is_not_a_knock(flags: str) -> None:
    line = V4_SYN.replace("RES=0x00 SYN URGP=0", f"RES=0x00 {flags} URGP=0")
    assert KERNEL.decode(line, NOW) is None
    assert KERNEL.decode(line.replace("DPT=40001", "DPT=40001 SEQ=1 ACK=0"), NOW) is None


@pytest.mark.parametrize("flags", ["SYN", "CWR ECE SYN", "ECE SYN", "SEQ=1 ACK=0 SYN"])
def test_syn_variants_are_knocks(flags: str) -> None:
    line = V4_SYN.replace("RES=0x00 SYN URGP=0", f"RES=0x00 {flags} URGP=0")
    assert KERNEL.decode(line, NOW) == v4(40001, sport=41846)


@pytest.mark.parametrize(
    "line",
    [
        # ICMP errors quote the offending header: its ports are not a knock from SRC.
        "IN=eth0 OUT= SRC=192.0.2.1 DST=198.18.0.1 LEN=57 TOS=0x00 PREC=0xC0 TTL=64 ID=1 "
        "PROTO=ICMP TYPE=3 CODE=3 [SRC=198.18.0.1 DST=192.0.2.1 LEN=29 TOS=0x00 PREC=0x00 "
        "TTL=64 ID=2 DF PROTO=UDP SPT=45323 DPT=40002 LEN=9 ] ",
        "IN=eth0 OUT= SRC=2001:0002:0000:0000:0000:0000:0000:0002 DST=2001:0002:0000:0000:0000"
        ":0000:0000:0001 LEN=97 TC=0 HOPLIMIT=64 FLOWLBL=0 PROTO=ICMPv6 TYPE=1 CODE=4 [SRC="
        "2001:0002:0000:0000:0000:0000:0000:0001 DST=2001:0002:0000:0000:0000:0000:0000:0002 "
        "LEN=49 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=UDP SPT=1 DPT=40002 LEN=9 ] ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF "
        "PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1 ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=40 PROTO=UDPLITE SPT=1 DPT=40002 LEN=9 ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=40 PROTO=SCTP SPT=1 DPT=40002 ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=40 PROTO=TCP INCOMPLETE [8 bytes] ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=40 FRAG:185 PROTO=TCP ",
        "IN=eth0 OUT= SRC=198.18.0.1 DST=198.18.0.2 LEN=40 PROTO=47 ",
        V4_SYN.replace("DPT=40001", "DPT=0"),
        V4_SYN.replace("DPT=40001", "DPT=65536"),
        V4_SYN.replace("DPT=40001", "DPT=400011"),
        V4_SYN.replace("DPT=40001", "DPT=-1"),
        V4_SYN.replace("DPT=40001", "DPT=4\u0660001"),  # an Arabic-Indic digit
        V4_SYN.replace("SPT=41846", "SPT=65536"),
        V4_SYN.replace("SPT=41846", "SPT="),
        V4_SYN.replace("SRC=198.18.0.1", "SRC=198.18.0.256"),
        V4_SYN.replace("SRC=198.18.0.1", "SRC=198.018.0.1"),
        V4_SYN.replace("SRC=198.18.0.1", "SRC="),
        V4_SYN.replace("SRC=198.18.0.1 DST=198.18.0.2", "SRC=198.18.0.1"),
        V4_SYN.replace("IN=veth-s OUT= ", ""),  # not the kernel's format
        V4_SYN.replace("PROTO=TCP SPT=41846 DPT=40001", "PROTO=TCP DPT=40001 SPT=41846"),
        V4_SYN.replace("PROTO=TCP", "PROTO=tcp"),
        "",
        "IN= OUT=",
        "Nov 26 14:27:02 gate sshd[42]: Accepted publickey for root from 203.0.113.9 port 5",
    ],
)
def test_not_knocks(line: str) -> None:
    assert KERNEL.decode(line, NOW) is None


def test_ipv4_mapped_source_is_ipv4() -> None:
    line = V6_SYN.replace(
        "SRC=2001:0002:0000:0000:0000:0000:0000:0001", "SRC=0000:0000:0000:0000:0000:ffff:c612:0001"
    )
    assert KERNEL.decode(line, NOW) == Packet(NOW, "198.18.0.1", 40001, "tcp", 58890)


def test_long_hostile_lines_parse_in_linear_time() -> None:
    """A log line may carry a stranger's text (an sshd user name): no regex blow-up."""
    hostile = [
        "IN=a OUT=b SRC=1 DST=1 " * 2700,
        "IN= OUT= " * 7000,
        "SRC=1 DST=1 " * 5000,
        "IN= OUT= SRC=1.2.3.4 DST=1.2.3.4 PROTO=TCP " * 1500,
        "IN= OUT= SRC=1.2.3.4 DST=1.2.3.4 " + "x " * 30000,
        "IN=" * 20000 + " OUT=",
    ]
    readers = [KERNEL, LineReader.build("client", DEFAULT_FILEFORMAT)]
    for line in hostile:
        for reader in readers:
            start = time.process_time()  # CPU, not wall: a loaded machine is no failure
            assert reader.decode(line, NOW) is None
            assert time.process_time() - start < 0.2, line[:40]


# ------------------------------------------------------------------ client format


def _client_line(template: str, client: str, remoteport: int, clientport: int = 40999) -> str:
    return LogTemplate(template).format(
        when=NOW, client=client, remote="192.0.2.1", clientport=clientport, remoteport=remoteport
    )


@pytest.mark.parametrize("client", ["198.18.0.1", "2001:2::1", "::ffff:198.18.0.1"])
def test_client_default_fileformat(client: str) -> None:
    reader = LineReader.build("client", DEFAULT_FILEFORMAT)
    line = _client_line(DEFAULT_FILEFORMAT, client, 40017, 51000)
    expected = Packet(
        NOW, str(ipaddress.ip_address(client.removeprefix("::ffff:"))), 40017, "tcp", 51000
    )
    assert reader.decode(line, NOW) == expected
    # The default template imitates the kernel, so log_format = kernel reads it too.
    assert KERNEL.decode(line, NOW) == expected


@pytest.mark.parametrize(
    "template",
    [
        "_DATE_ knock from _CLIENT_ to _REMOTE_:_REMOTEPORT_ (source port _CLIENTPORT_)",
        "_REMOTEPORT_|_CLIENT_",
        "[_CLIENT_]:_CLIENTPORT_ -> [_REMOTE_]:_REMOTEPORT_ (.*+?) \\d",  # regex characters
    ],
)
def test_client_custom_templates(template: str) -> None:
    reader = LineReader.build("client", template)
    line = _client_line(template, "2001:2::7", 40123, 333)
    sport = 0 if "_CLIENTPORT_" not in template else 333
    assert reader.decode(line, NOW) == Packet(NOW, "2001:2::7", 40123, "tcp", sport)
    assert reader.decode(line.replace("40123", "70000"), NOW) is None


def test_client_lines_with_host_names_or_scope_ids() -> None:
    reader = LineReader.build("client", DEFAULT_FILEFORMAT)
    assert reader.decode(_client_line(DEFAULT_FILEFORMAT, "knock.example", 40001), NOW) is None
    scoped = _client_line(DEFAULT_FILEFORMAT, "fe80::1%eth0", 40001)
    assert reader.decode(scoped, NOW) == Packet(NOW, "fe80::1", 40001, "tcp", 40999)


@pytest.mark.parametrize("template", ["", "_DATE_ _CLIENT_", "_DATE_ _REMOTEPORT_ only"])
def test_client_template_without_its_fields(template: str) -> None:
    with pytest.raises(InvalidValue):
        LineReader.build("client", template)
    with pytest.raises(ConfigError) as err:
        DaemonSettings.of(log_format="client", fileformat=template)
    assert err.value.key == "fileformat"


# ------------------------------------------------------------------- custom regex


def test_custom_regex_with_named_groups() -> None:
    reader = LineReader.build(r"knock (?P<src>\S+):(?P<sport>\d+) -> (?P<dport>\d+)/(?P<proto>\w+)")
    assert reader.decode("x knock 198.18.0.1:5 -> 40001/UDP", NOW) == v4(40001, "udp", 5)
    assert reader.decode("knock 2001:2::1:5 -> 40001/tcp", NOW) == Packet(
        NOW, "2001:2::1", 40001, "tcp", 5
    )
    assert reader.decode("knock 198.18.0.1:5 -> 40001/icmp", NOW) is None
    assert reader.decode("knock 198.18.0.1:5 -> 0/tcp", NOW) is None
    assert reader.decode("knock 198.18.0.1:70000 -> 1/tcp", NOW) is None
    assert reader.decode("knock host:5 -> 40001/tcp", NOW) is None
    assert reader.decode("unrelated", NOW) is None


def test_custom_regex_minimal_and_optional_groups() -> None:
    reader = LineReader.build(r"from (?P<src>[\d.]+)(?: port (?P<dport>\S+))?")
    assert reader.decode("from 198.18.0.1 port 40001", NOW) == v4(40001)
    assert reader.decode("from 198.18.0.1", NOW) is None  # dport did not take part
    assert reader.decode("from 198.18.0.1 port 4_000", NOW) is None
    assert reader.decode("from 198.18.0.1 port 4e3", NOW) is None
    assert reader.decode("from 198.18.0.1 port " + "9" * 5000, NOW) is None


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        (r"(?P<src>\S+ (?P<dport>\d+)", "not a regular expression"),
        (r"(?P<src>)(?P<src>)", "not a regular expression"),
        ("*", "not a regular expression"),
        (r"(?P<src>\S+) (\d+)", "dport"),
        (r"(?P<dport>\d+)", "src"),
        (r"SRC=(\S+) DPT=(\d+)", "dport, src"),
        ("", "dport, src"),
        ("clients", "dport, src"),  # not the name client
    ],
)
def test_bad_patterns_are_config_errors(pattern: str, needle: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(needle)):
        LineReader.build(pattern)
    with pytest.raises(ConfigError) as err:
        DaemonSettings.of(log_format=pattern)
    assert err.value.key == "log_format"
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ fuzzing

READERS = [
    KERNEL,
    LineReader.build("client", DEFAULT_FILEFORMAT),
    LineReader.build(r"(?P<src>\S+) (?P<dport>\S+) (?P<sport>\S*) ?(?P<proto>\S*)"),
]
TOKENS = st.sampled_from(
    [
        "IN=eth0", "OUT=", "IN=", "OUT=eth0", "MAC=00:11", "SRC=198.18.0.1", "SRC=2001:2::1",
        "SRC=", "SRC=x", "DST=198.18.0.2", "DST=", "LEN=60", "PROTO=TCP", "PROTO=UDP",
        "PROTO=ICMP", "PROTO=", "SPT=1", "SPT=", "SPT=99999", "DPT=40001", "DPT=0", "DPT=",
        "SYN", "ACK", "ACK=0", "[SRC=198.18.0.9", "]", "INCOMPLETE", "%", "fe80::1%eth0", "\x00",
        "\ufffd", "0", "65535", "tcp", "udp",
    ]
)  # fmt: skip


def _valid(packet: Packet | None) -> bool:
    if packet is None:
        return True
    ip = ipaddress.ip_address(packet.src)
    return (
        str(ip) == packet.src
        and not (isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.scope_id))
        and 0 < packet.dport < 65536
        and 0 <= packet.sport < 65536
        and packet.proto in ("tcp", "udp")
        and packet.now == NOW
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_never_raises(line: str) -> None:
    for reader in READERS:
        assert _valid(reader.decode(line, NOW))


@settings(max_examples=300, deadline=None)
@given(st.lists(TOKENS, max_size=30), st.sampled_from([" ", "  ", "\t"]))
def test_token_soup_never_raises(tokens: list[str], sep: str) -> None:
    line = sep.join(tokens)
    for reader in READERS:
        assert _valid(reader.decode(line, NOW))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([V4_SYN, V4_UDP, V4_SYN_ALL, V6_SYN, V6_UDP, V6_SYN_ALL, UFW]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), st.text(max_size=3)), max_size=4),
)
def test_mutated_real_lines_never_raise(line: str, edits: list[tuple[int, int, str]]) -> None:
    for pos, cut, text in edits:
        line = line[:pos] + text + line[pos + cut :]
    assert _valid(KERNEL.decode(line, NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 65535),
    st.integers(0, 65535),
    st.sampled_from(["tcp", "udp"]),
    st.sampled_from(SYSLOG_PREFIXES),
)
def test_kernel_round_trip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dport: int,
    sport: int,
    proto: str,
    prefix: str,
) -> None:
    """Any address and ports, written as the kernel writes them (IPv6 in full)."""
    src = ip.exploded if ip.version == 6 else str(ip)
    line = (
        f"{prefix}aioknock: IN=eth0 OUT= SRC={src} DST={src} LEN=60 PROTO={proto.upper()} "
        f"SPT={sport} DPT={dport} " + ("WINDOW=1 RES=0x00 SYN URGP=0 " if proto == "tcp" else "")
    )
    expected_ip = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip
    assert KERNEL.decode(line, NOW) == Packet(NOW, str(expected_ip), dport, proto, sport)  # type: ignore[arg-type]


# ----------------------------------------------------- real kernel output (root)

SENDER = textwrap.dedent(
    """
    import socket, sys, time
    v4, v6 = sys.argv[1], sys.argv[2]
    for fam, host in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        for port in (40001, 40003):  # one SYN each, closed before any retransmission
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, port))
            time.sleep(0.05)
            s.close()
        for port in (40002, 40005):
            with socket.socket(fam, socket.SOCK_DGRAM) as u:
                u.sendto(b"x", (host, port))
    with socket.create_connection((v4, 40004), timeout=3) as c:  # a whole flow, logged
        c.sendall(b"ping")
        c.recv(4)
    time.sleep(0.2)
    """
)

LISTEN = textwrap.dedent(
    """
    import socket, sys
    with socket.socket() as srv:
        srv.bind((sys.argv[1], 40004))
        srv.listen(1)
        srv.settimeout(8)
        conn, _ = srv.accept()
        with conn:
            conn.recv(4)
            conn.sendall(b"pong")
    """
)


@contextlib.contextmanager
def _kernel_log_from_all_namespaces() -> Iterator[None]:
    """nf_log writes nothing for other namespaces unless nf_log_all_netns (restored after)."""
    path = "/proc/sys/net/netfilter/nf_log_all_netns"
    if not os.path.exists(path):
        subprocess.run(["modprobe", "nf_log_syslog"], capture_output=True, check=False)
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def _kmsg_messages(fd: int, prefixes: tuple[str, ...], want: int, timeout: float) -> list[str]:
    """Kernel messages starting with one of ``prefixes`` (records after ``fd``'s position)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            record = os.read(fd, 8192).decode(errors="replace")
        except BlockingIOError:
            time.sleep(0.02)
            continue
        except BrokenPipeError:  # overwritten while we were reading: go on
            continue
        message = record.split(";", 1)[-1].split("\n", 1)[0]
        if message.startswith(prefixes):
            got.append(message)
    return got


@requires_root
def test_real_kernel_lines(pair: NetnsPair) -> None:
    """nftables ``log`` output for IPv4 and IPv6 SYN, UDP, flags all, a flow, ICMP errors."""
    tag = f"ak{os.getpid() % 100000}"
    rules = textwrap.dedent(
        f"""
        table inet aioknock_logtest {{
          chain input {{
            type filter hook input priority 0; policy accept;
            tcp dport 40001 log prefix "{tag}-syn: " drop
            udp dport 40002 log prefix "{tag}-udp: " drop
            tcp dport 40003 log prefix "{tag}-all: " flags all drop
            tcp dport 40004 log prefix "{tag}-flow: "
          }}
        }}
        """
    )
    pair.run(pair.server, ["nft", "-f", "-"], input=rules)
    client_rules = textwrap.dedent(
        f"""
        table inet aioknock_logtest {{
          chain input {{
            type filter hook input priority 0; policy accept;
            meta l4proto {{ icmp, ipv6-icmp }} log prefix "{tag}-icmp: "
          }}
        }}
        """
    )
    pair.run(pair.client, ["nft", "-f", "-"], input=client_rules)
    pair.popen(pair.server, [sys.executable, "-c", LISTEN, pair.server_ip])
    pair.wait_port(40004)

    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        with _kernel_log_from_all_namespaces():
            pair.run(pair.client, [sys.executable, "-c", SENDER, pair.server_ip, pair.server_ip6])
            prefixes = tuple(f"{tag}-{k}: " for k in ("syn", "udp", "all", "flow", "icmp"))
            # 2 SYN + 2 UDP + 2 flags-all + >= 5 flow (SYN, ACK, data, FIN...) + >= 2 ICMP
            messages = _kmsg_messages(fd, prefixes, want=13, timeout=4)
    finally:
        os.close(fd)

    def parsed(kind: str) -> list[Packet | None]:
        return [KERNEL.decode(m, NOW) for m in messages if m.startswith(f"{tag}-{kind}: ")]

    client4, client6 = pair.client_ip, pair.client_ip6
    text = "\n".join(messages)
    for kind, port, proto in (("syn", 40001, "tcp"), ("udp", 40002, "udp"), ("all", 40003, "tcp")):
        packets = parsed(kind)
        assert [(p.src, p.dport, p.proto) if p else None for p in packets] == [
            (client4, port, proto),
            (client6, port, proto),
        ], text
        assert all(p is not None and 1024 <= p.sport < 65536 for p in packets)
    assert any(" SRC=fd00:0198:0018:0000:0000:0000:0000:0001 " in m for m in messages), text
    assert any(" ACK=0 " in m for m in messages if m.startswith(f"{tag}-all: ")), text

    flow = parsed("flow")
    assert len(flow) >= 4, text  # SYN, ACK, data, FIN (+ ACKs)
    assert [(p.src, p.dport) for p in flow if p] == [(client4, 40004)], text

    icmp = [m for m in messages if m.startswith(f"{tag}-icmp: ")]
    assert any("PROTO=ICMP " in m and "DPT=40005" in m for m in icmp), text
    assert any("PROTO=ICMPv6 " in m and "DPT=40005" in m for m in icmp), text
    assert parsed("icmp") == [None] * len(icmp), text


# --------------------------------------------------------------- forged kernel lines

# The kernel quotes user-chosen text in messages of its own: a crashing program's file
# name in its segfault line (facility kernel). A name built like a firewall line:
FORGED = (
    "IN=lo OUT= SRC=203.0.113.9 DST=198.18.0.2 LEN=60 TTL=64 ID=1 PROTO=TCP SPT=4242 "
    "DPT=7000 WINDOW=1 RES=0x00 SYN URGP=0 x"
)
SEGFAULT = f"evil[4242]: segfault at 0 ip 0000 sp 0000 error 4 in {FORGED}[55d0+1000]"
# ... and one whose 15-character process name (comm) starts the message.
COMM = "IN=lo OUT= SRC[4242]: segfault at 0 ip 0000 sp 0000 error 4 in " + FORGED


def test_ip_fields_must_follow_in_and_out_directly() -> None:
    assert KERNEL.decode("IN=lo OUT= junk " + FORGED.split(" ", 2)[2], NOW) is None


def test_kmsg_lines_must_begin_with_the_prefix() -> None:
    anchored = LineReader.build("kernel", anchored=True)
    assert anchored.decode(SEGFAULT, NOW) is None
    assert anchored.decode(COMM, NOW) is None
    assert anchored.decode(V4_SYN.removeprefix("aioknock: "), NOW) == v4(40001, sport=41846)
    assert anchored.decode(V4_SYN, NOW) is None  # a prefix the daemon was not told about
    with_prefix = LineReader.build("kernel", prefix="aioknock: ", anchored=True)
    assert with_prefix.decode(V4_SYN, NOW) == v4(40001, sport=41846)
    assert with_prefix.decode("aioknock: " + SEGFAULT, NOW) is None
    assert with_prefix.decode(SEGFAULT.replace("in IN=", "in aioknock: IN="), NOW) is None


def test_log_prefix_must_stand_right_before_in() -> None:
    reader = LineReader.build("kernel", prefix="aioknock: ")
    for prefix in SYSLOG_PREFIXES:
        assert reader.decode(prefix + V4_SYN, NOW) == v4(40001, sport=41846)
    assert reader.decode(UFW, NOW) is None  # another rule's prefix


# ------------------------------------------------- issue 12: linear in the line


class _Counting:
    """Stands in for a compiled pattern and counts the scans it is asked for."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.calls = pattern, 0

    def match(self, line: str, pos: int = 0) -> re.Match[str] | None:
        self.calls += 1
        return self.pattern.match(line, pos)


@pytest.mark.parametrize("line", ["IN=" * 2700, "IN= " * 2000, "x IN=a" * 1300, "knock: IN=" * 800])
def test_a_kernel_line_is_read_in_one_pass(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: a line of repeated IN= blocked the loop (24 KB took 0.9 s). Each token is
    scanned once: a token whose IN= fails is not tried again at the IN= inside it."""
    from aioknock.daemon import logreader

    counting = _Counting(logreader._TOKEN_END)
    monkeypatch.setattr(logreader, "_TOKEN_END", counting)
    for reader in (KERNEL, LineReader.build("kernel", prefix="knock: ")):
        counting.calls = 0
        assert reader.decode(line, NOW) is None
        assert counting.calls <= len(line.split()) + 1, counting.calls
