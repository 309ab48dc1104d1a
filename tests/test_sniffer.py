"""The sniffer against the real kernel: a namespace pair, real SYNs and datagrams.

The sniffer runs in the server namespace as a small script printing one JSON line
per packet; the client namespace sends to wanted and unwanted ports (bounded: one
packet each, 10 ms apart). Only the wanted ones may come out, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import packets
from helpers.netns import NetnsPair, requires_root

from aioknock.asyncio.sniffer import CaptureError, Sniffer
from aioknock.errors import AioknockError

ROOT = Path(__file__).resolve().parent.parent

# Prints "ready", then [src, dport, proto, sport] per packet. A JSON line [tcp, udp] on
# stdin swaps the filter (answered by "updated"); end of stdin prints the kernel's
# {"stats": [received, dropped], "refused": n} and stops it.
SNIFF = textwrap.dedent(
    """
    import asyncio, json, sys
    from aioknock.asyncio.sniffer import Sniffer

    async def main():
        iface, tcp, udp = sys.argv[1] or None, json.loads(sys.argv[2]), json.loads(sys.argv[3])
        loop = asyncio.get_running_loop()
        with Sniffer(tcp, udp, interface=iface) as sniffer:
            def command():
                line = sys.stdin.readline()
                if not line:
                    loop.remove_reader(0)
                    stats = {"stats": sniffer.stats(), "refused": sniffer.refused}
                    print(json.dumps(stats), flush=True)
                    sniffer.close()
                    return
                sniffer.update_filter(*json.loads(line))
                print(json.dumps("updated"), flush=True)
            loop.add_reader(0, command)
            print(json.dumps("ready"), flush=True)
            async for p in sniffer:
                print(json.dumps([p.src, p.dport, p.proto, p.sport]), flush=True)

    asyncio.run(main())
    """
)

# argv[1]: JSON list of [proto, dst, dport, sport]; proto "tcp" (a SYN from a non-blocking
# connect, closed 0.5 s later, before any retransmission), "udp" (one datagram) or
# "conn" (a whole connection to a listener: SYN, ACKs, data, FIN).
SEND = textwrap.dedent(
    """
    import json, socket, sys, time
    held, t0 = [], time.monotonic()
    for i, (proto, dst, dport, sport) in enumerate(json.loads(sys.argv[1])):
        time.sleep(max(0.0, t0 + 0.01 * i - time.monotonic()))
        fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        s = socket.socket(fam, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
        if proto == "udp":
            s.sendto(b"knock", (dst, dport))
            s.close()
        elif proto == "conn":
            s.settimeout(3)
            s.connect((dst, dport))
            s.sendall(b"ping")
            s.recv(4)
            s.close()
        else:
            s.setblocking(False)
            s.connect_ex((dst, dport))
            held.append((time.monotonic(), s))
    for t, s in held:
        time.sleep(max(0.0, t + 0.5 - time.monotonic()))
        s.close()
    """
)

ECHO = textwrap.dedent(
    """
    import socket, sys
    addr = ("", int(sys.argv[1]))
    with socket.create_server(addr, family=socket.AF_INET6, dualstack_ipv6=True) as srv:
        srv.settimeout(8)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(3)
            conn.sendall(conn.recv(4))
    """
)

TCP_WANTED = [*range(40000, 40003), 45000]
UDP_WANTED = [41000]


class SniffProc:
    """The sniffer script in a namespace, read line by line with deadlines."""

    def __init__(self, pair: NetnsPair, iface: str | None, tcp: Sequence[int], udp: Sequence[int]):
        args = [
            sys.executable,
            "-c",
            SNIFF,
            iface or "",
            json.dumps(list(tcp)),
            json.dumps(list(udp)),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = pair.popen(pair.server, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)  # fmt: skip
        self._buf = b""
        self.received = self.dropped = self.refused = -1
        assert self.read(1, timeout=5.0) == ["ready"], self._stderr()

    def _stderr(self) -> str:
        """For assertion messages: what the script said before it died."""
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "(sniffer still running)"
        assert self.proc.stderr is not None
        return str(self.proc.stderr.read().decode(errors="replace"))

    def read(self, count: int, timeout: float) -> list[Any]:
        """Up to ``count`` lines, waiting at most ``timeout`` seconds for them."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        lines: list[Any] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while len(lines) < count:
                while b"\n" in self._buf and len(lines) < count:
                    line, self._buf = self._buf.split(b"\n", 1)
                    lines.append(json.loads(line))
                left = deadline - time.monotonic()
                if len(lines) >= count or left <= 0 or not sel.select(left):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._buf += chunk
        return lines

    def command(self, tcp: Sequence[int], udp: Sequence[int]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([list(tcp), list(udp)]).encode() + b"\n")
        self.proc.stdin.flush()
        assert self.read(1, timeout=5.0) == ["updated"], self._stderr()

    def stop(self) -> list[Any]:
        """Close stdin (the script stops by itself) and return the packets not yet read."""
        rest, err = self.proc.communicate(timeout=5)  # closes stdin
        assert self.proc.returncode == 0, err.decode(errors="replace")
        *lines, last = [json.loads(line) for line in (self._buf + rest).decode().splitlines()]
        self.received, self.dropped = last["stats"]
        self.refused = last["refused"]
        return lines


def send(pair: NetnsPair, events: list[list[Any]], ns: str | None = None) -> None:
    res = pair.run(ns or pair.client, [sys.executable, "-c", SEND, json.dumps(events)], check=False)
    assert res.returncode == 0, res.stderr


def expect(
    pair: NetnsPair, sniff: SniffProc, events: list[list[Any]], wanted: list[list[Any]],
    ns: str | None = None,
) -> None:  # fmt: skip
    """Send ``events`` (from the client by default): exactly ``wanted`` is reported, in order."""
    send(pair, events, ns)
    got = sniff.read(len(wanted), timeout=3.0)
    got += sniff.read(100, timeout=0.2)  # anything extra that is still on its way
    assert got == wanted


@requires_root
@pytest.mark.parametrize("by_name", [False, True], ids=["all-interfaces", "named-interface"])
def test_reports_exactly_the_wanted_packets(pair: NetnsPair, by_name: bool) -> None:
    c4, s4, c6, s6 = pair.client_ip, pair.server_ip, pair.client_ip6, pair.server_ip6
    pair.nft_drop([*range(40000, 40010), 41000])
    pair.nft_drop([40000, 41000, 41001], "udp")
    pair.popen(pair.server, [sys.executable, "-c", ECHO, "45000"])  # dual-stack
    pair.wait_port(45000)
    sniff = SniffProc(pair, pair.server_if if by_name else None, TCP_WANTED, UDP_WANTED)
    events: list[list[Any]] = [
        ["tcp", s4, 40000, 51000],
        ["tcp", s4, 40005, 51001],  # unwanted TCP port
        ["udp", s4, 41000, 51002],
        ["udp", s4, 40000, 51003],  # a TCP knock port, but UDP
        ["tcp", s4, 41000, 51004],  # a UDP knock port, but TCP
        ["tcp", s6, 40002, 51005],
        ["udp", s6, 41001, 51006],  # unwanted UDP port
        ["udp", s6, 41000, 51007],
        ["tcp", s6, 39999, 51008],  # just below the span
        ["tcp", s4, 40001, 51009],
        ["conn", s4, 45000, 51010],  # one SYN; its ACKs, data and FIN are not knocks
        ["tcp", s6, 40003, 51011],  # just above the span
        ["tcp", s6, 40000, 51012],
    ]
    wanted = [
        [c4, 40000, "tcp", 51000],
        [c4, 41000, "udp", 51002],
        [c6, 40002, "tcp", 51005],
        [c6, 41000, "udp", 51007],
        [c4, 40001, "tcp", 51009],
        [c4, 45000, "tcp", 51010],
        [c6, 40000, "tcp", 51012],
    ]
    expect(pair, sniff, events, wanted)
    assert sniff.stop() == []
    assert (sniff.received, sniff.dropped) == (len(wanted), 0)  # all else stopped in-kernel


# argv[1]: interface, argv[2]: destination MAC, argv[3]: JSON list of hex IP packets,
# written raw to the link one by one, 10 ms apart: no stack fills in any field.
RAW_SEND = textwrap.dedent(
    """
    import json, socket, sys, time
    iface, mac, frames = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM) as s:
        for packet in json.loads(frames):
            data = bytes.fromhex(packet)
            ethertype = 0x0800 if data[0] >> 4 == 4 else 0x86DD
            s.sendto(data, (iface, ethertype, 0, 0, mac))
            time.sleep(0.01)
    """
)


@requires_root
def test_frames_the_kernel_would_drop_are_not_knocks(pair: NetnsPair) -> None:
    """Issue 12, point 3: written raw to the wire (so no offload marks the checksum as
    pending), only the valid frames come out; each refusal is counted."""
    c4, s4, c6, s6 = pair.client_ip, pair.server_ip, pair.client_ip6, pair.server_ip6
    syn = packets.tcp(52100, 40000)
    valid4 = packets.ipv4(c4, syn, dst=s4)
    valid6 = packets.ipv6(c6, packets.tcp(52101, 40001), dst=s6)
    bad = [
        packets.flipped(valid4, 10),  # IP header checksum
        packets.flipped(valid4, 37),  # TCP checksum
        packets.flipped(valid6, 57),  # TCP checksum over IPv6
        packets.ipv4(c4, syn, dst=s4, more=True),  # a first fragment, never completed
        packets.ipv4(c4, syn, dst=s4, total=24),  # shorter than its headers
        packets.ipv4("127.0.0.1", syn, dst=s4),  # martian sources on a real interface
        packets.ipv4("224.0.0.9", syn, dst=s4),
        packets.ipv6("::1", syn, dst=s6),
        packets.ipv4(c4, packets.udp(52102, 41000, b"x"), 17, dst=s4)[:-1] + b"y",  # UDP sum
    ]
    last = packets.ipv4(c4, packets.tcp(52103, 40002), dst=s4)
    mac = pair.run(pair.server, ["cat", f"/sys/class/net/{pair.server_if}/address"]).stdout
    sniff = SniffProc(pair, pair.server_if, TCP_WANTED, UDP_WANTED)
    frames = [valid4, *bad, valid6, last]
    res = pair.run(pair.client, [sys.executable, "-c", RAW_SEND, pair.client_if, mac.strip(),
                                 json.dumps([f.hex() for f in frames])], check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    wanted = [[c4, 40000, "tcp", 52100], [c6, 40001, "tcp", 52101], [c4, 40002, "tcp", 52103]]
    got = sniff.read(len(wanted), timeout=3.0) + sniff.read(100, timeout=0.2)
    assert got == wanted
    assert sniff.stop() == []
    assert sniff.received == len(frames) - 1  # the kernel's filter drops the fragment
    assert sniff.refused == len(bad) - 1


@requires_root
def test_outgoing_and_loopback(pair: NetnsPair) -> None:
    sniff = SniffProc(pair, None, TCP_WANTED, UDP_WANTED)
    # SYNs the server itself sends out are not knocks (the client answers with RSTs);
    # on lo a packet passes twice (out and in) and is reported once.
    events = [
        ["tcp", pair.client_ip, 40000, 52000],
        ["udp", pair.client_ip6, 41000, 52001],
        ["tcp", "127.0.0.1", 40001, 52002],
        ["udp", "::1", 41000, 52003],
    ]
    wanted = [["127.0.0.1", 40001, "tcp", 52002], ["::1", 41000, "udp", 52003]]
    expect(pair, sniff, events, wanted, pair.server)
    assert sniff.stop() == []


@requires_root
def test_named_interface_ignores_others(pair: NetnsPair) -> None:
    sniff = SniffProc(pair, pair.server_if, TCP_WANTED, UDP_WANTED)
    send(pair, [["tcp", "127.0.0.1", 40001, 52002]], pair.server)
    expect(pair, sniff, [["tcp", pair.server_ip, 40001, 52004]],
           [[pair.client_ip, 40001, "tcp", 52004]])  # fmt: skip
    assert sniff.stop() == []


@requires_root
def test_update_filter(pair: NetnsPair) -> None:
    pair.nft_drop(range(40000, 40010))
    s4 = pair.server_ip
    sniff = SniffProc(pair, pair.server_if, [40000], [])
    expect(pair, sniff, [["tcp", s4, 40000, 53000], ["tcp", s4, 40001, 53001]],
           [[pair.client_ip, 40000, "tcp", 53000]])  # fmt: skip
    # Near the instruction limit: the kernel's checker accepts the program too.
    scattered = [*range(1, 2 * 1200, 2), 40001]
    sniff.command(scattered, [])
    expect(pair, sniff, [["tcp", s4, 40000, 53002], ["tcp", s4, 40001, 53003]],
           [[pair.client_ip, 40001, "tcp", 53003]])  # fmt: skip
    assert sniff.stop() == []


@requires_root
def test_missing_interface_is_one_clear_error() -> None:
    with pytest.raises(CaptureError, match=r"^network interface 'aknope0' does not exist$"):
        Sniffer([40000], interface="aknope0")


def test_not_root_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", refuse)
    with pytest.raises(AioknockError, match=r"needs root or CAP_NET_RAW$"):
        Sniffer([40000])


def test_bad_ports_fail_before_any_socket() -> None:
    with pytest.raises(ValueError, match="not a port number"):
        Sniffer([70000])


async def test_async_iteration_batches_and_backpressure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio part alone: frames come from a socketpair instead of the kernel."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    monkeypatch.setattr(Sniffer, "_open", lambda self, program, rcvbuf: ours)
    frames = [packets.ipv4(packets.V4_SRC, packets.tcp(1000 + i, 40000 + i)) for i in range(10)]
    for i, frame in enumerate(frames):
        theirs.send(frame)
        if i % 3 == 0:
            theirs.send(b"\x45garbage")  # not a knock: parsed to nothing
        if i == 5:
            theirs.send(frame[:-1] + bytes([frame[-1] ^ 1]))  # a bad TCP checksum
    ticks = iter(range(100))
    with theirs, Sniffer([1], batch=4, max_queue=3, clock=lambda: float(next(ticks))) as sniffer:
        ours.setblocking(False)
        got, queued, paused = [], 0, False
        async for packet in sniffer:
            got.append(packet)
            await asyncio.sleep(0.001)  # a slow consumer: the reader fires meanwhile
            queued = max(queued, len(sniffer._ready))
            paused |= bool(sniffer._ready) and not sniffer._reading
            if len(got) == len(frames):
                sniffer.close()
    assert paused and queued < 3 + 4  # reading stopped once max_queue packets waited
    assert [(p.src, p.dport, p.sport) for p in got] == [
        ("198.18.0.1", 40000 + i, 1000 + i) for i in range(10)
    ]
    assert [p.now for p in got] == sorted(p.now for p in got)
    assert sniffer.refused == 4 + 1
    assert ours.fileno() == -1


async def test_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    monkeypatch.setattr(Sniffer, "_open", lambda self, program, rcvbuf: ours)
    datagram = packets.ipv4(packets.V4_SRC, packets.udp(7, 9), 17)
    with theirs, Sniffer([], [9], batch=2) as sniffer:
        ours.setblocking(False)
        for _ in range(5):
            theirs.send(datagram)
        sizes = []
        async for batch in sniffer.batches():
            assert {(p.src, p.dport, p.proto, p.sport) for p in batch} == {
                ("198.18.0.1", 9, "udp", 7)
            }
            sizes.append(len(batch))
            if sum(sizes) == 5:
                sniffer.close()
    assert sizes == [2, 2, 1]
