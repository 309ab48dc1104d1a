"""The knock daemon under a flood: ingest rate, memory and false opens, per run mode.

    sudo python benchmarks/bench_daemon.py [--modes network,file,spoof] [--rates 0,100000]
        [--packets 100000] [--sources 10000] [--knocks 5] [--forged 100]
        [--spoof-rates 5000,50000] [--spoof-knocks 5] [--spoof-pool 130047] [--profile] [--keep]

Root and Linux only. The script builds two network namespaces joined by a veth pair
(server 198.18.0.1/15 on veth-s, client 198.18.0.2/15 on veth-c, IPv6 off, a static
neighbour entry so no packet waits for ARP); nftables in the server namespace drops all
incoming TCP, as a firewall in front of knock ports does. Every packet stays inside
those namespaces, which are deleted again on exit, also on Ctrl-C or error.

The daemon is the real ``aioknock daemon`` command (``aioknock.cli.main.main``, uvloop,
logging to a file) run in the server namespace by a small driver that subclasses
``KnockDaemon`` and ``Sniffer`` only to watch: it times the batches the daemon hands
to its engine, keeps the recognizers' accept/refuse verdicts, reads the capture
socket's PACKET_STATISTICS before it closes, and on exit (SIGTERM) writes the daemon's
counts, the recognizers' sources in progress, CPU time and RSS (VmRSS when it starts
running, VmHWM at exit).
Settings: ``knock = CLIENT,PORT,RAND,THISMINUTE,CHECKSUM``, Blowfish, ``iv = yes``
(32 ports per knock on ``portspan = 745-1000``), ``max_sources = 10000``,
``knock_timeout = 10``, ``cooldown = 0``; ``backend = command`` with
``open = touch DIR/open_%IP%_%PORT%_%PROTO%``, so every door opened leaves a file.

The stream: ``--packets`` random TCP SYNs (90% to random ports of the span, the rest to
random other ports) from ``--sources`` addresses 198.19.x.y (each one at least once),
random source ports, in random order. Woven into it, each knock's 32 SYNs spread over
thousands of flood SYNs: ``--knocks`` genuine knocks built with the library
(``build_knock``, CLIENT = their source 198.18.1.j), each replayed once by the same
source and once by another (198.18.3.j), and ``--forged`` random 32-port knocks
(198.18.2.f). The real client, ``aioknock run`` (timeout 0.02 s), knocks from the
client namespace as well (CLIENT = 198.18.0.2).

* network: a raw socket (IP_HDRINCL) in the client namespace sends the stream to
  198.18.0.1, as fast as possible (rate 0) or paced (``--rates``), bounded in count and
  to 60 s; ``aioknock run`` starts when half the stream is out. The daemon captures on
  veth-s (AF_PACKET + BPF: only SYNs to the span reach Python).
* file: the stream as kernel log lines (iptables LOG / nftables log format), appended in
  chunks of 1,000 lines as fast as possible to the file the daemon follows
  (``log_format = kernel``, ``from_start = yes``); then ``aioknock run -logtofile``
  appends its knock while the daemon is still reading. No packet is sent.

Ingest rate = packets processed / time spent processing them: the daemon's batches form
bursts (a gap of 10 ms or more between batches ends one: the daemon was idle); rate and
pkt/CPU-s (packets / the daemon's CPU seconds) are taken over the bursts of >= 1,000
packets. In file mode a batch's time starts when the read that found its lines began.
A false open is an accepted knock, or a door file, for anything but a genuine knock
(a replay counts as false); the genuine knocks (woven and ``aioknock run``) pass if
every one was accepted. Evictions (room made in the source table) are counted too.

* spoof: network mode against a flood of spoofed sources, one row per ``--spoof-rates``
  rate R: SYNs paced at R (90% to the span, as above), each from the next address of a
  shuffled pool of 198.18.4.0 - 198.19.255.254 (130,047 addresses: 198.18.0.0/15 but
  the /22 of the namespaces and the genuine, forged and cross sources, and the broadcast
  address). The pool is cycled in the same order: at R = 50,000/s an address recurs
  every 2.6 s (~4 SYNs within knock_timeout), at 5,000/s never. Once the source table's
  probation tier is full (and, where the pool recurs within 5 s, after its first
  recurrence), ``--spoof-knocks`` genuine knocks (198.18.1.j, ``build_knock``) start
  0.5 s apart at the client's default timing, a SYN every 0.2 s (6.2 s per knock), and
  ``aioknock run`` with its default timeout (0.2 s) starts with the first; the flood
  goes on until all are done. A genuine knock counts if the daemon accepted it; the
  driver counts each genuine source's SYNs that reached the daemon, so a knock lost to
  kernel drops is told from one lost to eviction. ``--spoof-pool`` cycles fewer
  addresses (each then recurs sooner and reaches the main tier).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _flood import BURST_GAP, NET, RUN_LIMIT, Run, Watch, env_for, in_ns, send_paced, watched_daemon
from _procs import (
    daemon_run_options,
    fmt,
    interrupt_on_signals,
    need_root,
    print_head,
    run,
    scratch,
    stop,
    verdict,
)

from aioknock.daemon.recognizer import PROBATION, Grant

if TYPE_CHECKING:
    from aioknock.asyncio.daemon import KnockDaemon
    from aioknock.daemon.encoded import EncodedKnocks
    from aioknock.daemon.packet import Packet
    from aioknock.daemon.recognizer import SourceTable, Verdict

SERVER, CLIENT = "198.18.0.1", "198.18.0.2"  # veth-s, veth-c
SERVER_IF, CLIENT_IF = "veth-s", "veth-c"
KNOCK = "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM"
SPAN_LOW, SPAN_HIGH = 745, 1000  # portspan 745-1000: 256 ports
SPAN = f"{SPAN_LOW}-{SPAN_HIGH}"
KEY = "bench-daemon flood key"
DOOR_PORT = 22
KNOCK_PORTS = 32  # Blowfish + RandomIV: 9 bytes -> 16 + 16-byte header -> 32 ports
SPAN_SHARE = 0.9  # flood SYNs to the span; the rest to other ports
MAX_PACKETS = 1_000_000
SENDER_MAX = MAX_PACKETS + 100_000  # SYNs the sender sends at most (flood + knocks)
MAX_SOURCES = 60_000  # 198.19.0.1 - 198.19.239.250
CHUNK_LINES = 1000
RUN_GAP = 0.02  # seconds between the SYNs (lines) of `aioknock run`: > BURST_GAP
KNOCK_TIMEOUT = 10.0  # the daemon's knock_timeout
MAX_DECISIONS = 10_000  # decisions the driver keeps for the report
TOUCH = shutil.which("touch") or "/usr/bin/touch"
MAX_TRACKED = 10_000  # the daemon's max_sources
# The spoofed flood: every address of 198.18.0.0/15 but 198.18.0.0/22 (the namespaces,
# genuine, forged and cross sources) and the broadcast address 198.19.255.255.
RESERVED = ("198.18.0.", "198.18.1.", "198.18.2.", "198.18.3.")
SPOOF_BASE = int(ipaddress.ip_address("198.18.4.0"))
SPOOF_POOL = NET.num_addresses - 4 * 256 - 1  # 130,047 addresses
SPOOF_MAX_RATE = 100_000  # SYN/s: a spoofed run stays under ~15 s and MAX_PACKETS
SPOOF_STAGGER = 0.5  # seconds between the starts of the woven knocks
SPOOF_LEAD_MAX = 5.0  # seconds of flood at most before the first knock
SPOOF_TAIL = 0.5  # seconds of flood after the last knock's last SYN
CLIENT_GAP = 0.2  # seconds between a knock's SYNs: the client's default timeout
RUN_STARTUP = 1.0  # seconds `aioknock run` may take to start (ip netns exec, imports)
WATCHED = frozenset([f"198.18.1.{j}" for j in range(1, 251)] + ["198.18.0.2"])


def flood_source(i: int) -> str:
    return f"198.19.{i // 250}.{i % 250 + 1}"


def genuine_source(j: int) -> str:
    return f"198.18.1.{j + 1}"


def forged_source(f: int) -> str:
    return f"198.18.2.{f + 1}"


def cross_source(j: int) -> str:
    return f"198.18.3.{j + 1}"


def spoof_source(i: int) -> str:
    """The i-th address of the spoofed pool (198.18.4.0 - 198.19.255.254), cycling."""
    return socket.inet_ntoa((SPOOF_BASE + i % SPOOF_POOL).to_bytes(4, "big"))


def is_flood(src: str) -> bool:
    """A flood source: random (198.19.x.y) or spoofed (anything outside 198.18.0.0/22)."""
    return not src.startswith(RESERVED)


def kind_of(src: str) -> str:
    if src == CLIENT:
        return "run"  # aioknock run, genuine
    if is_flood(src):
        return "flood"
    return {"1": "genuine", "2": "forged", "3": "cross"}.get(src.split(".")[2], "other")


# --------------------------------------------------------------------- the stream


@dataclass
class Stream:
    """Every SYN of one run, in sending order: (source, source port, destination port)."""

    syns: list[tuple[str, int, int]]
    flood: int  # how many of them are the random flood
    genuine: list[tuple[str, list[int]]]  # the genuine knocks: source and ports
    marks: dict[str, int] = field(default_factory=dict)  # genuine knock j first/last index
    cue: int = -1  # the index at which `aioknock run` starts (-1: half the stream)
    client_gap: float | None = RUN_GAP  # `aioknock run`'s timeout (None: its default)
    spoof_rate: float = 0.0  # > 0: a spoofed-source flood paced at this rate
    lead: float = 0.0  # spoofed: seconds of flood before the first knock
    pool: int = 0  # spoofed: addresses cycled through

    @property
    def recurs(self) -> bool:
        """Spoofed: whether an address comes again (the pool is used up)."""
        return self.flood > self.pool

    @property
    def to_span(self) -> int:
        return sum(1 for _, _, d in self.syns if SPAN_LOW <= d <= SPAN_HIGH)

    @property
    def cue_index(self) -> int:
        return self.cue if self.cue >= 0 else len(self.syns) // 2

    @property
    def gap(self) -> float:
        return CLIENT_GAP if self.client_gap is None else self.client_gap


def genuine_ports(src: str) -> list[int]:
    """The ports of a genuine knock from ``src`` (CLIENT = src), built by the library."""
    from aioknock import ClientSettings, build_knock

    settings = ClientSettings.of(knock=KNOCK, portspan=SPAN, encrypt=True, cipher="Blowfish",
                                 key=KEY, iv=True, remote=SERVER, client=src,
                                 port=DOOR_PORT)  # fmt: skip
    return list(build_knock(settings).ports)


def flood_port(rng: random.Random) -> int:
    """A random destination port: one of the span's, or (1 - SPAN_SHARE) another."""
    span_size = SPAN_HIGH - SPAN_LOW + 1
    if rng.random() < SPAN_SHARE:
        return SPAN_LOW + rng.randrange(span_size)
    dport = rng.randrange(1, 65536 - span_size)
    return dport + (span_size if dport >= SPAN_LOW else 0)


def build_stream(packets: int, sources: int, knocks: int, forged: int, seed: int) -> Stream:
    rng = random.Random(seed)
    span_size = SPAN_HIGH - SPAN_LOW + 1
    order = list(range(sources)) + [rng.randrange(sources) for _ in range(packets - sources)]
    rng.shuffle(order)
    items: list[tuple[float, str, int, int]] = []
    for i, s in enumerate(order):
        dport = flood_port(rng)  # before the source port: the same stream as before for a seed
        items.append((float(i), flood_source(s), rng.randrange(1024, 65536), dport))
    # Knock-shaped SYNs: 32 ports, one every `gap` flood SYNs.
    gap = max(1, packets // (max(knocks, 1) * KNOCK_PORTS * 4))
    width = KNOCK_PORTS * gap

    def weave(src: str, ports: list[int], start: float) -> None:
        for m, port in enumerate(ports):
            items.append((start + m * gap + 0.5, src, rng.randrange(1024, 65536), port))

    genuine: list[tuple[str, list[int]]] = []
    for j in range(knocks):
        src = genuine_source(j)
        ports = genuine_ports(src)
        start = (j + 0.2) * packets / knocks
        weave(src, ports, start)
        weave(src, ports, start + width + gap)  # replayed by the same source
        weave(cross_source(j), ports, start + width + gap)  # replayed by another
        genuine.append((src, ports))
    for f in range(forged):
        ports = [SPAN_LOW + rng.randrange(span_size) for _ in range(KNOCK_PORTS)]
        weave(forged_source(f), ports, rng.uniform(0, max(0.0, packets - width)))
    items.sort(key=lambda t: t[0])
    syns = [(src, sport, dport) for _, src, sport, dport in items]
    marks: dict[str, int] = {}
    for j, (src, ports) in enumerate(genuine):
        idx = [i for i, (s, _, d) in enumerate(syns) if s == src]
        marks[f"{j}:first"], marks[f"{j}:last"] = idx[0], idx[len(ports) - 1]
    return Stream(syns, packets, genuine, marks)


def spoof_timing(rate: float, knocks: int, pool: int = SPOOF_POOL) -> tuple[float, float]:
    """(lead, duration) of a spoofed run: the knocks begin once the probation tier is
    full and, where the pool recurs within SPOOF_LEAD_MAX, after its first recurrence;
    the flood lasts until the last woven knock and `aioknock run` are done."""
    fill = (1 + PROBATION) * MAX_TRACKED / rate
    cycle = pool / rate
    lead = min(SPOOF_LEAD_MAX, max(1.0, 1.2 * fill, cycle + 0.4))
    knock = (KNOCK_PORTS - 1) * CLIENT_GAP
    return lead, lead + max((knocks - 1) * SPOOF_STAGGER, RUN_STARTUP) + knock + SPOOF_TAIL


def build_spoof_stream(rate: float, knocks: int, seed: int, size: int = SPOOF_POOL) -> Stream:
    """A flood paced at ``rate`` in which every SYN comes from the next address of a
    shuffled pool of ``size`` (one recurs only after ``size`` SYNs), with ``knocks`` genuine
    knocks woven in at the client's default timing (a SYN every CLIENT_GAP seconds),
    SPOOF_STAGGER apart; `aioknock run` (default timeout) starts at the first of them."""
    rng = random.Random(seed)
    lead, duration = spoof_timing(rate, knocks, size)
    pool = [spoof_source(i) for i in range(size)]
    rng.shuffle(pool)
    events: list[tuple[float, int, int, int]] = []  # (flood index, knock j, SYN m, port)
    genuine: list[tuple[str, list[int]]] = []
    for j in range(knocks):
        src = genuine_source(j)
        ports = genuine_ports(src)
        genuine.append((src, ports))
        for m, port in enumerate(ports):
            events.append(((lead + j * SPOOF_STAGGER + m * CLIENT_GAP) * rate, j, m, port))
    events.sort()
    flood = int(duration * rate)
    syns: list[tuple[str, int, int]] = []
    marks: dict[str, int] = {}
    e = 0
    for k in range(flood):
        while e < len(events) and events[e][0] <= k:
            _, j, m, port = events[e]
            if m in (0, KNOCK_PORTS - 1):
                marks[f"{j}:{'first' if m == 0 else 'last'}"] = len(syns)
            syns.append((genuine[j][0], rng.randrange(1024, 65536), port))
            e += 1
        dport = flood_port(rng)
        syns.append((pool[k % size], rng.randrange(1024, 65536), dport))
    cue = marks["0:first"] if knocks else len(syns) // 2
    return Stream(syns, flood, genuine, marks, cue=cue, client_gap=None, spoof_rate=rate,
                  lead=lead, pool=size)  # fmt: skip


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(array("H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def syn_packet(src: str, dst: str, sport: int, dport: int, seq: int, ident: int) -> bytes:
    """An IPv4 header and a 20-byte TCP SYN with a valid checksum (IP_HDRINCL)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, ident, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("H", _checksum(ip)) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    csum = _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    return ip + tcp[:16] + struct.pack("H", csum) + tcp[18:]


def kernel_line(src: str, sport: int, dport: int, ident: int, when: float) -> str:
    """One SYN as iptables LOG / nftables log writes it to kern.log."""
    from aioknock.codec.logtemplate import syslog_date

    return (
        f"{syslog_date(when)} server kernel: [{when % 100000:12.6f}] akbench: IN={SERVER_IF} "
        f"OUT= MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC={src} DST={SERVER} LEN=60 "
        f"TOS=0x00 PREC=0x00 TTL=64 ID={ident} DF PROTO=TCP SPT={sport} DPT={dport} "
        "WINDOW=64240 RES=0x00 SYN URGP=0"
    )


# ------------------------------------------------- run inside the client namespace


def sender_main(
    netns: str, packets_path: str, rate: float, limit: float, marks_json: str, out: str,
    cue: int = -1,
) -> None:  # fmt: skip
    """Send the prepared 40-byte SYNs to their (single) destination; bounded in time.
    Prints "cue" once packet ``cue`` (-1: half of them) is due."""
    data = Path(packets_path).read_bytes()
    count = len(data) // 40
    if count > SENDER_MAX or len(data) % 40:
        raise SystemExit("bad packet file")
    dst = {data[i * 40 + 16 : i * 40 + 20] for i in range(count)}
    if len(dst) != 1 or ipaddress.ip_address(next(iter(dst))) not in NET:
        raise SystemExit("packets must all go to one address in 198.18.0.0/15")
    marks: dict[int, str] = {v: k for k, v in json.loads(marks_json).items()}
    chunks = [data[i * 40 : i * 40 + 40] for i in range(count)]
    cue = count // 2 if cue < 0 else cue
    send_paced(netns, chunks, str(ipaddress.ip_address(next(iter(dst)))), rate, limit, cue,
               marks, out)  # fmt: skip


# ------------------------------------------------- run inside the server namespace


class DaemonWatch(Watch):
    """bench_daemon's watch: accept/refuse verdicts, in file mode when the read that found
    a batch's lines began, evictions from the source tables, the SYNs of the genuine
    sources and the peak of the sources past probation."""

    def __init__(self) -> None:
        super().__init__(50, {"poll": None, "evictions": 0, "evicted": [], "syns_from": {},
                              "main_peak": 0})  # fmt: skip
        self.watched: list[EncodedKnocks] = []

    def record(self, verdict: Verdict, now: float) -> None:
        decisions = self.state["decisions"]
        if verdict.verdict != "ignore" and len(decisions) < MAX_DECISIONS:
            address, port = "", 0
            if isinstance(verdict, Grant):
                address, port = verdict.address, verdict.ports[0][0]
            decisions.append([verdict.verdict, verdict.source, address, port, now,
                              getattr(verdict, "reason", "")])  # fmt: skip

    def batch_start(self) -> tuple[float, float]:
        # File mode: a batch's time starts when the read that found its lines began.
        start = self.state["poll"] or super().batch_start()
        self.state["poll"] = None
        return start

    def counted(self, packets: list[Packet]) -> None:
        state = self.state
        counted = state["syns_from"]  # SYNs from genuine sources, sources past probation
        for p in packets:
            if p.src in WATCHED:
                counted[p.src] = counted.get(p.src, 0) + 1
        main = sum(r._windows._main for r in self.watched)
        state["main_peak"] = max(state["main_peak"], main)

    def recognizers_changed(self, daemon: KnockDaemon) -> None:
        from aioknock.daemon.encoded import EncodedKnocks

        for r in daemon.engine.recognizers:
            if isinstance(r, EncodedKnocks) and r not in self.watched:
                self.watched.append(r)
                self.watch_evictions(r._windows)

    def watch_evictions(self, table: SourceTable[Any]) -> None:
        state, evict = self.state, table.evict

        def evicted(src: str) -> None:
            state["evictions"] += 1
            if not is_flood(src) and len(state["evicted"]) < MAX_DECISIONS:
                state["evicted"].append([src, time.time()])
            evict(src)

        table.evict = evicted  # type: ignore[method-assign]

    def patch(self) -> None:
        import aioknock.asyncio.daemon as daemon_mod
        from aioknock.asyncio.follow import Follower

        super().patch()
        state = self.state

        class WatchedFollower(Follower):
            def poll_once(self) -> list[str]:
                t0, c0 = time.perf_counter(), time.process_time()
                lines = super().poll_once()
                if lines and state["poll"] is None:
                    state["poll"] = (t0, c0)
                return lines

        setattr(daemon_mod, "Follower", WatchedFollower)  # noqa: B010 - module attribute


def driver_main(conf: str, out: str, profile: str) -> int:
    """``aioknock daemon -conf CONF``, watched; writes what it saw to ``out`` on exit."""
    from aioknock.daemon.encoded import EncodedKnocks

    watch = DaemonWatch()
    rc = watch.run(conf, profile)
    d = watch.daemon
    tables = [r._windows for r in d.engine.recognizers if isinstance(r, EncodedKnocks)] if d else []
    watch.report(
        out,
        rc,
        sources=sum(r.sources for r in d.engine.recognizers) if d else -1,
        main_sources=sum(t._main for t in tables),  # past probation
        source_bound=sum(t.limit + t.probation for t in tables),
        max_sources=d.settings.max_sources if d else -1,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    return rc


# ------------------------------------------------------------- host side helpers


@dataclass(frozen=True)
class Pair:
    server: str
    client: str


@contextlib.contextmanager
def namespaces() -> Iterator[Pair]:
    """Server and client namespaces joined by veth-s <-> veth-c; TCP in the server dropped."""
    pair = Pair(f"akbd-{os.getpid()}-s", f"akbd-{os.getpid()}-c")
    created: list[str] = []
    try:
        for ns in (pair.server, pair.client):
            run(["ip", "netns", "add", ns])
            created.append(ns)
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", pair.server, "link", "add", SERVER_IF, "type", "veth",
             "peer", "name", CLIENT_IF, "netns", pair.client])  # fmt: skip
        for ns, dev, addr in ((pair.server, SERVER_IF, SERVER), (pair.client, CLIENT_IF, CLIENT)):
            assert ipaddress.ip_address(addr) in NET
            run(["ip", "-n", ns, "addr", "add", f"{addr}/15", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        mac = json.loads(run(["ip", "-j", "-n", pair.server, "link", "show", SERVER_IF]))[0]
        run(["ip", "-n", pair.client, "neigh", "replace", SERVER, "lladdr", mac["address"],
             "dev", CLIENT_IF, "nud", "permanent"])  # fmt: skip
        ruleset = (
            "table inet akbench {\n  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            "    meta l4proto tcp counter drop\n  }\n}\n"
        )
        run(["ip", "netns", "exec", pair.server, "nft", "-f", "-"], input=ruleset)
        yield pair
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def link_stats(ns: str, dev: str) -> dict[str, int]:
    info = json.loads(run(["ip", "-j", "-s", "-n", ns, "link", "show", dev]))[0]["stats64"]
    return {"rx": info["rx"]["packets"], "rx_dropped": info["rx"]["dropped"],
            "tx": info["tx"]["packets"], "tx_dropped": info["tx"]["dropped"]}  # fmt: skip


def nft_counter(ns: str) -> int:
    text = run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "akbench"])
    m = re.search(r"counter packets (\d+)", text)
    return int(m.group(1)) if m else -1


def write_confs(tmp: Path, mode: str, logfile: Path, opens: Path,
                client_timeout: float | None = RUN_GAP) -> tuple[Path, Path]:  # fmt: skip
    """The daemon's and `aioknock run`'s configurations (client_timeout None: its default)."""
    keyfile = tmp / "knock.key"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    common = {"knock": KNOCK, "portspan": SPAN, "encrypt": "yes", "cipher": "Blowfish",
              "iv": "yes", "key_file": str(keyfile)}  # fmt: skip
    daemon = {
        **common, "runmode": mode, "interface": SERVER_IF, "logfile": str(logfile),
        "log_format": "kernel", "from_start": "yes", "max_sources": str(MAX_TRACKED),
        "knock_timeout": f"{KNOCK_TIMEOUT:g}", "backend": "command", "duration": "30",
        "cooldown": "0",
        "open": f"{TOUCH} {opens}/open_%IP%_%PORT%_%PROTO%",
    }  # fmt: skip
    client = {**common, "remote": SERVER, "port": str(DOOR_PORT), "quiet": "yes"}
    if mode == "file":
        client |= {"logtofile": "yes", "logfile": str(logfile)}
    if client_timeout is not None:
        client["timeout"] = str(client_timeout)
    paths = tmp / f"daemon-{mode}.conf", tmp / f"client-{mode}.conf"
    for path, values in zip(paths, (daemon, client), strict=True):
        path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return paths


# ---------------------------------------------------------------------- one run


@dataclass
class Result(Run):
    mode: str
    stream: Stream
    nft: int = -1
    run_rc: int = -1
    run_err: str = ""
    lines: int = 0  # file mode: lines in the followed file at the end

    @property
    def ingest_rate(self) -> float:
        packets, wall, _ = self.busy()
        return packets / wall if wall > 0 else 0.0

    @property
    def cpu_rate(self) -> float:
        packets, _, cpu = self.busy()
        return packets / cpu if cpu > 0 else 0.0

    def true_opens(self) -> tuple[int, int]:
        """(genuine knocks accepted, genuine knocks sent); aioknock run counts as one."""
        genuine = {src for src, _ in self.stream.genuine} | {CLIENT}
        accepted = {d[2] for d in self.accepts() if d[2] in genuine and d[1] == d[2]}
        return len(accepted), len(genuine)

    def false_opens(self) -> int:
        genuine = {src for src, _ in self.stream.genuine} | {CLIENT}
        seen: set[str] = set()
        false = 0
        for d in self.accepts():
            if d[2] not in genuine or d[1] != d[2] or d[2] in seen:
                false += 1
            seen.add(d[2])
        by_file = sum(1 for name in self.opens if name.split("_")[1] not in genuine)
        return max(false, by_file)

    def genuine_syns(self) -> dict[str, tuple[int, int]]:
        """Per genuine source: (its SYNs that reached the daemon, SYNs it sent)."""
        sent: dict[str, int] = {CLIENT: KNOCK_PORTS}
        for src, _, _ in self.stream.syns:
            if src in WATCHED:
                sent[src] = sent.get(src, 0) + 1
        got = self.driver.get("syns_from", {})
        return {src: (got.get(src, 0), n) for src, n in sent.items()}

    def losses(self) -> list[str]:
        """Why each genuine knock that was not accepted failed, as far as it shows."""
        accepted = {d[2] for d in self.accepts() if d[1] == d[2]}
        evicted = {a for a, _ in self.driver.get("evicted", [])}
        out = []
        for src, (got, sent) in self.genuine_syns().items():
            if src in accepted:
                continue
            why = [f"{sent - got} of its {sent} SYNs lost in the kernel"] if got < sent else []
            why += ["evicted from the source table"] if src in evicted else []
            out.append(f"{src}: {', '.join(why) or 'every SYN read, not evicted'}")
        return out


def write_blob(path: Path, stream: Stream) -> None:
    """The stream as 40-byte IPv4 + TCP SYNs to the server, for the sender."""
    rng = random.Random(1)
    with open(path, "wb") as f:
        for i, (src, sport, dport) in enumerate(stream.syns):
            f.write(syn_packet(src, SERVER, sport, dport, rng.getrandbits(32), i & 0xFFFF or 1))


def in_client(pair: Pair, tmp: Path, argv: list[str]) -> subprocess.Popen[str]:
    """This Python running ``argv`` in the client namespace."""
    return in_ns(pair.client, tmp, [sys.executable, *argv])


def send_and_knock(pair: Pair, tmp: Path, label: str, blob: Path, cconf: Path,
                   stream: Stream, rate: float, res: Result) -> None:  # fmt: skip
    """Send the stream from the client namespace; `aioknock run` starts at its cue."""
    sent_json = tmp / f"sender-{label}.json"
    call = (pair.client, str(blob), rate, RUN_LIMIT, json.dumps(stream.marks), str(sent_json),
            stream.cue_index)  # fmt: skip
    sender = in_client(pair, tmp, ["-c", f"import bench_daemon as b; b.sender_main(*{call!r})"])
    try:
        assert sender.stdout is not None
        sender.stdout.readline()  # "cue" (or EOF: it failed)
        client = in_client(pair, tmp, ["-m", "aioknock", "run", "-conf", str(cconf)])
        try:
            _, serr = sender.communicate(timeout=RUN_LIMIT + 10)
            _, cerr = client.communicate(timeout=RUN_LIMIT)
            res.run_rc, res.run_err = client.returncode, cerr.strip()
        finally:
            stop(client, signal.SIGINT)
    finally:
        stop(sender, signal.SIGINT)
    res.marks = res.read_sender(sender, serr, sent_json)


def run_network(pair: Pair, tmp: Path, stream: Stream, rate: float, profile: bool) -> Result:
    if stream.spoof_rate:
        label, name = f"spoof-{int(rate)}", f"spoof {spoof_name(stream)}"
    else:
        label, name = f"network-{int(rate)}", "network " + ("max" if not rate else f"{rate:,.0f}/s")
    res = Result(name, "network", stream)
    opens = tmp / f"opens-{label}"
    opens.mkdir()
    dconf, cconf = write_confs(tmp, "network", tmp / "unused.log", opens, stream.client_gap)
    blob = tmp / f"{label}.pkts"
    write_blob(blob, stream)
    ready = rf"capturing on {SERVER_IF}"
    with watched_daemon(pair.server, "bench_daemon", tmp, label, dconf, profile, ready, res):
        link0, nft0 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
        send_and_knock(pair, tmp, label, blob, cconf, stream, rate, res)
    link1, nft1 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
    res.link = {k: link1[k] - link0[k] for k in link1}
    res.nft = nft1 - nft0
    res.opens = sorted(p.name for p in opens.iterdir())
    return res


def run_file(pair: Pair, tmp: Path, stream: Stream, profile: bool) -> Result:
    label = "file"
    res = Result("file max", "file", stream)
    opens = tmp / f"opens-{label}"
    opens.mkdir()
    logfile = tmp / "kern.log"
    logfile.touch()
    dconf, cconf = write_confs(tmp, "file", logfile, opens)
    now = time.time()
    lines = [kernel_line(src, sport, dport, i & 0xFFFF, now)
             for i, (src, sport, dport) in enumerate(stream.syns)]  # fmt: skip
    chunks = ["".join(f"{line}\n" for line in lines[i : i + CHUNK_LINES]).encode()
              for i in range(0, len(lines), CHUNK_LINES)]  # fmt: skip
    mark_at = {v // CHUNK_LINES: k for k, v in stream.marks.items()}
    with watched_daemon(pair.server, "bench_daemon", tmp, label, dconf, profile, r"following ",
                        res):  # fmt: skip
        fd = os.open(logfile, os.O_WRONLY | os.O_APPEND)
        try:
            res.send_start = time.time()
            p0 = time.perf_counter()
            for c, chunk in enumerate(chunks):
                if time.perf_counter() - p0 > RUN_LIMIT:
                    break
                if c in mark_at:
                    res.marks[mark_at[c]] = time.time()
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                res.sent += chunk.count(b"\n")
            res.send_wall = time.perf_counter() - p0
        finally:
            os.close(fd)
        # The real client appends its knock while the daemon works through the flood.
        client = subprocess.run(
            ["ip", "netns", "exec", pair.client, sys.executable, "-m", "aioknock", "run",
             "-conf", str(cconf)],
            cwd=tmp, env=env_for(tmp), capture_output=True, text=True, timeout=RUN_LIMIT,
        )  # fmt: skip
        res.run_rc, res.run_err = client.returncode, client.stderr.strip()
        res.lines = logfile.read_bytes().count(b"\n")
    res.opens = sorted(p.name for p in opens.iterdir())
    return res


# ---------------------------------------------------------------------- report


def print_table(rows: list[Result]) -> None:
    head = (f"{'run':<17} {'SYNs sent':>9} {'send s':>6} {'sent/s':>8} {'to daemon':>9} "
            f"{'kdrop':>6} {'daemon pkts':>11} {'ingest s':>8} {'ingest/s':>8} {'pkt/CPU-s':>9} "
            f"{'RSS0 MB':>7} {'peak MB':>7} {'sources':>7} {'acc':>4} {'ref':>4} {'ign':>4} "
            f"{'true':>5} {'false':>5}")  # fmt: skip
    print_head(head)
    for r in rows:
        d = r.driver
        counts = d.get("counts", {})
        kernel = d.get("kernel")
        # What reached the daemon: SYNs its capture filter passed, or lines in its log file.
        to_daemon = kernel["received"] if kernel else r.lines
        kdrop = kernel["dropped"] if kernel else None
        true, genuine = r.true_opens()
        print(f"{r.label:<17} {r.sent:>9,} {r.send_wall:>6.2f} "
              f"{r.sent / r.send_wall if r.send_wall else 0:>8,.0f} {to_daemon:>9,} "
              f"{fmt(kdrop, ','):>6} {counts.get('packets', 0):>11,} "
              f"{r.busy()[1]:>8.2f} {r.ingest_rate:>8,.0f} "
              f"{r.cpu_rate:>9,.0f} {d.get('rss_ready_kb', 0) / 1024:>7.1f} "
              f"{d.get('hwm_kb', 0) / 1024:>7.1f} {d.get('sources', -1):>7,} "
              f"{counts.get('accept', 0):>4} {counts.get('refuse', 0):>4} "
              f"{counts.get('ignore', 0):>4} {f'{true}/{genuine}':>5} "
              f"{r.false_opens():>5}")  # fmt: skip


def print_spoof_table(rows: list[Result]) -> None:
    width = max(17, *(len(r.label) for r in rows))
    head = (f"{'run':<{width}} {'SYNs sent':>9} {'send s':>6} {'sent/s':>7} {'recur s':>7} "
            f"{'kdrop':>6} {'daemon pkts':>11} {'CPU s':>5} {'evictions':>9} {'sources':>7} "
            f"{'main':>6} {'genuine':>7} {'%':>6} {'false':>5}")  # fmt: skip
    print_head(head)
    for r in rows:
        d, s = r.driver, r.stream
        counts, kernel = d.get("counts", {}), d.get("kernel") or {}
        true, genuine = r.true_opens()
        recur = s.pool / s.spoof_rate if s.recurs else None
        print(f"{r.label:<{width}} {r.sent:>9,} {r.send_wall:>6.2f} "
              f"{r.sent / r.send_wall if r.send_wall else 0:>7,.0f} {fmt(recur, '.2f'):>7} "
              f"{fmt(kernel.get('dropped'), ','):>6} {counts.get('packets', 0):>11,} "
              f"{d.get('cpu_total', 0):>5.2f} {d.get('evictions', 0):>9,} "
              f"{d.get('sources', -1):>7,} {d.get('main_sources', -1):>6,} "
              f"{f'{true}/{genuine}':>7} {100 * true / genuine:>5.1f}% "
              f"{r.false_opens():>5}")  # fmt: skip
        for note in spoof_notes(r):
            print(f"    note: {note}")


def spoof_notes(r: Result) -> list[str]:
    """What a spoofed row's figures do not say by themselves."""
    notes = []
    dropped = (r.driver.get("kernel") or {}).get("dropped", 0)
    if dropped:
        lost = sum(n - got for got, n in r.genuine_syns().values())
        notes.append(f"the sender outran the daemon: {dropped:,} SYNs dropped in the kernel "
                     f"(capture buffer full), {lost} of them genuine")  # fmt: skip
    s = r.stream
    if s.recurs:
        cycle, peak = s.pool / s.spoof_rate, r.driver.get("main_peak", -1)
        on_probation = PROBATION * r.driver.get("max_sources", 0) / (s.spoof_rate * SPAN_SHARE)
        notes.append(f"the pool of {s.pool:,} spoofed addresses recurs every {cycle:.2f} s: "
                     f"~{KNOCK_TIMEOUT / cycle:.1f} SYNs per address within knock_timeout; "
                     f"probation holds {on_probation:.2f} s of span SYNs; at most {peak:,} "
                     "sources were past probation at once")  # fmt: skip
    return notes + [f"not accepted: {loss}" for loss in r.losses()]


def spoof_name(s: Stream) -> str:
    pool = "" if s.pool == SPOOF_POOL else f" pool {s.pool:,}"
    return f"{s.spoof_rate:,.0f}/s{pool}"


def describe_stream(s: Stream) -> str:
    if not s.spoof_rate:
        extra = len(s.syns) - s.flood
        return (f"{s.flood:,} random SYNs from "
                f"{len({src for src, _, _ in s.syns if src.startswith('198.19.')}):,} flood "
                f"sources + {extra:,} knock-shaped ({len(s.genuine)} genuine, {len(s.genuine)} "
                f"replayed by the same source, {len(s.genuine)} by another, "
                f"{extra // KNOCK_PORTS - 3 * len(s.genuine)} forged); {s.to_span:,} to the "
                "span")  # fmt: skip
    cycle = s.pool / s.spoof_rate
    recur = (f"each recurring every {cycle:.2f} s" if s.recurs
             else f"each once (the pool would recur after {cycle:.1f} s)")  # fmt: skip
    return (f"{s.flood:,} SYNs at {s.spoof_rate:,.0f}/s ({s.flood / s.spoof_rate:.2f} s) from "
            f"{min(s.flood, s.pool):,} spoofed addresses in 198.18.4.0-{spoof_source(s.pool - 1)}, "
            f"{recur}; + {len(s.syns) - s.flood} SYNs of {len(s.genuine)} genuine knocks (a SYN "
            f"every {CLIENT_GAP} s, starting {SPOOF_STAGGER} s apart from +{s.lead:.2f} s) and "
            f"`aioknock run` (default timeout {CLIENT_GAP} s) from +{s.lead:.2f} s; "
            f"{s.to_span:,} to the span")  # fmt: skip


def details(r: Result) -> None:
    d = r.driver
    r.print_title(describe_stream(r.stream))
    if r.mode == "network":
        k = d.get("kernel") or {}
        print(f"  server veth: rx {r.link.get('rx', 0):,} packets, rx dropped "
              f"{r.link.get('rx_dropped', 0)}; nftables input drop counter {r.nft:,}; "
              f"capture socket (PACKET_STATISTICS): {k.get('received', 0):,} passed the "
              f"filter, {k.get('dropped', 0):,} dropped (socket buffer full)")  # fmt: skip
    bursts = d.get("bursts", [])
    print(f"  daemon: {r.stopped_line}")
    print(f"  ingest bursts (batches < {BURST_GAP * 1000:.0f} ms apart): "
          f"{d.get('burst_count', 0)}; of >= 1,000 packets: " + "; ".join(
        f"{b['packets']:,} pkts in {b['end'] - b['start']:.3f} s, {b['batches']:,} batches, "
        f"{b['cpu1'] - b['cpu0']:.2f} CPU-s, from +{b['epoch'] - r.send_start:.2f} s"
        for b in bursts[:8])
        + ("; ..." if len(bursts) > 8 else "" if bursts else "none"))  # fmt: skip
    print_memory(r)
    print_decisions(r)
    print_genuine(r)
    if r.run_rc != 0:
        print(f"  aioknock run failed: exit {r.run_rc}: {r.run_err}")
    print(f"  door files: {len(r.opens)} ({', '.join(r.opens[:8])})")
    r.print_profile()


def print_memory(r: Result) -> None:
    d = r.driver
    ready, peak, sources = d.get("rss_ready_kb", 0), d.get("hwm_kb", 0), d.get("sources", 0)
    print(
        f"  memory: RSS {ready / 1024:.1f} MB when ready, peak (VmHWM) {peak / 1024:.1f} MB "
        f"(+{(peak - ready) / 1024:.1f} MB"
        + (
            f", {(peak - ready) / sources:.1f} kB per tracked source"
            if sources > 0 and r.mode == "network"  # file mode: mostly its read buffers
            else ""
        )
        + f"), {d.get('rss_end_kb', 0) / 1024:.1f} MB at exit; sources in progress at exit "
        f"{sources:,}, {d.get('main_sources', -1):,} of them past probation (max_sources "
        f"{d.get('max_sources', -1):,}, probation {PROBATION} x that); daemon CPU "
        f"{d.get('cpu_total', 0):.2f} s"
    )


def print_decisions(r: Result) -> None:
    d = r.driver
    why: dict[str, int] = {}
    for v, src, _, _, _, reason in d.get("decisions", []):
        key = f"{v} {kind_of(src)}: {re.sub(r'[0-9.]+', 'N', reason)}"
        why[key] = why.get(key, 0) + 1
    for key, n in sorted(why.items()):
        print(f"    {n:>5} x {key}")
    evicted = d.get("evicted", [])
    print(f"  evictions (room made in the source table): "
          f"{d.get('evictions', 0):,}; of knocks not from the flood: {len(evicted)}"
          + (" (" + ", ".join(f"{kind_of(a)} {a}" for a, _ in evicted[:6]) + ")" if evicted
             else ""))  # fmt: skip


def print_genuine(r: Result) -> None:
    d, s = r.driver, r.stream
    first = min((t for k, t in r.marks.items() if k.endswith("first")), default=None)
    last = max((t for k, t in r.marks.items() if k.endswith("last")), default=None)
    if first is not None and last is not None:
        verb = "sent" if r.mode == "network" else "written"
        print(f"  genuine knocks woven in: {verb} +{first - r.send_start:.2f} to "
              f"+{last - r.send_start:.2f} s of a {r.send_wall:.2f} s flood")  # fmt: skip
    evicted = {a for a, _ in d.get("evicted", [])}
    syns = r.genuine_syns() if r.mode == "network" else {}
    for src in [g for g, _ in s.genuine] + [CLIENT]:
        got = [x for x in d.get("decisions", []) if x[1] == src]
        what = [f"{x[0]} at +{x[4] - r.send_start:.2f} s ({x[5]})" for x in got[:3]]
        what = what or ["no decision"]
        if src in evicted:
            what.append("evicted (source table full)")
        if src == CLIENT and got and got[0][0] == "accept" and r.mode == "network":
            first_syn = got[0][4] - (KNOCK_PORTS - 1) * s.gap - r.send_start
            what.append(f"its first SYN about +{first_syn:.2f} s")
        if src in syns:
            what.append(f"{syns[src][0]}/{syns[src][1]} of its SYNs reached the daemon")
        name = "aioknock run" if src == CLIENT else "woven"
        print(f"    {name} {src}: {'; '.join(what)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="network,file,spoof",
                        help="network, file, spoof (spoofed sources), comma-separated")  # fmt: skip
    parser.add_argument("--rates", default="0,100000",
                        help="network send rates, SYN/s (0 = as fast as possible)")  # fmt: skip
    parser.add_argument("--spoof-rates", default="5000,50000",
                        help=f"spoofed flood rates, SYN/s (1-{SPOOF_MAX_RATE:,})")  # fmt: skip
    parser.add_argument("--spoof-pool", type=int, default=SPOOF_POOL,
                        help=f"spoofed addresses to cycle (at most {SPOOF_POOL:,})")  # fmt: skip
    parser.add_argument("--spoof-knocks", type=int, default=5,
                        help="genuine knocks woven into each spoofed flood")  # fmt: skip
    parser.add_argument("--packets", type=int, default=100_000, help="random SYNs in the flood")
    parser.add_argument("--sources", type=int, default=10_000, help="flood source addresses")
    parser.add_argument("--knocks", type=int, default=5, help="genuine knocks woven in")
    parser.add_argument("--forged", type=int, default=100, help="random 32-port knocks")
    daemon_run_options(parser)
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.spoof_rates = [float(x) for x in args.spoof_rates.split(",") if x.strip()]
    if not set(args.modes) <= {"network", "file", "spoof"}:
        parser.error("modes: network, file, spoof")
    if not all(0 <= r <= 10_000_000 for r in args.rates):
        parser.error("rates >= 0")
    if not all(1 <= r <= SPOOF_MAX_RATE for r in args.spoof_rates):
        parser.error(f"spoof rates 1-{SPOOF_MAX_RATE:,}")
    if not 1_000 <= args.spoof_pool <= SPOOF_POOL:
        parser.error(f"spoof pool 1,000-{SPOOF_POOL:,}")
    if not (1 <= args.knocks <= 250 and 0 <= args.forged <= 250 and 1 <= args.spoof_knocks <= 8):
        parser.error("knocks 1-250, forged 0-250, spoof knocks 1-8")
    for rate in args.spoof_rates:
        flood = rate * spoof_timing(rate, args.spoof_knocks, args.spoof_pool)[1]
        if flood + KNOCK_PORTS * args.spoof_knocks > SENDER_MAX:
            parser.error(f"spoofed flood at {rate:,.0f}/s: more than {SENDER_MAX:,} SYNs")
    if not 1 <= args.sources <= min(MAX_SOURCES, args.packets) <= args.packets <= MAX_PACKETS:
        parser.error(f"1 <= sources <= {MAX_SOURCES}, sources <= packets <= {MAX_PACKETS}")
    need_root(parser, ("ip", "nft", "sysctl"))
    return args


def run_all(pair: Pair, tmp: Path, args: argparse.Namespace) -> list[Result]:
    rows: list[Result] = []
    for mode in args.modes:
        for rate in {"network": args.rates, "file": [0.0], "spoof": args.spoof_rates}[mode]:
            sub = tmp / f"{mode}-{int(rate)}"
            sub.mkdir()
            if mode == "spoof":
                stream = build_spoof_stream(rate, args.spoof_knocks, args.seed, args.spoof_pool)
            else:
                stream = build_stream(args.packets, args.sources, args.knocks, args.forged,
                                      args.seed)  # fmt: skip
            if mode == "file":
                rows.append(run_file(pair, sub, stream, args.profile))
            else:
                rows.append(run_network(pair, sub, stream, rate, args.profile))
    return rows


def checks(rows: list[Result]) -> None:
    print("\nChecks:")
    false = sum(r.false_opens() for r in rows)
    print(f"  [{verdict(false == 0)}] false opens == 0: "
          + ", ".join(f"{r.label} {r.false_opens()}" for r in rows))  # fmt: skip
    for r in rows:
        true, genuine = r.true_opens()
        if r.stream.spoof_rate:
            why = "" if true == genuine else f" ({'; '.join(r.losses())})"
            print(f"  [{verdict(true == genuine)}] spoofed sources at {spoof_name(r.stream)}: "
                  f"genuine knocks accepted {true}/{genuine}{why}")  # fmt: skip
        else:
            print(f"  [{verdict(true == genuine)}] {r.label}: genuine knocks during the flood "
                  f"accepted: {true}/{genuine}")  # fmt: skip
    spoofed = [r for r in rows if r.stream.spoof_rate]
    if spoofed:
        full = [r.stream.spoof_rate for r in spoofed if r.true_opens()[0] == r.true_opens()[1]]
        print(f"  highest spoofed rate with every genuine knock accepted: "
              f"{f'{max(full):,.0f}/s' if full else 'none'}")  # fmt: skip
    bounded = all(0 <= r.driver.get("main_sources", -1) <= r.driver.get("max_sources", 0)
                  and r.driver.get("sources", -1) <= r.driver.get("source_bound", 0)
                  for r in rows)  # fmt: skip
    print(f"  [{verdict(bounded)}] sources in progress <= max_sources past probation, <= "
          f"{1 + PROBATION} x max_sources in all: " + ", ".join(
              f"{r.label} {r.driver.get('main_sources')}/{r.driver.get('sources')}"
              for r in rows))  # fmt: skip


def main() -> int:
    args = parse_args()
    interrupt_on_signals()
    print(f"aioknock daemon (CLI, uvloop), knock = {KNOCK}, Blowfish iv=yes, portspan {SPAN}: "
          f"{KNOCK_PORTS} ports per knock; max_sources {MAX_TRACKED}; {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}\n", flush=True)  # fmt: skip
    with scratch("akbd-", args.keep) as tmp, namespaces() as pair:
        rows = run_all(pair, tmp, args)
    plain = [r for r in rows if not r.stream.spoof_rate]
    spoofed = [r for r in rows if r.stream.spoof_rate]
    if plain:
        print_table(plain)
    if spoofed:
        print("\nSpoofed sources (a new address per SYN, genuine knocks at 0.2 s per SYN):")
        print_spoof_table(spoofed)
    for r in rows:
        details(r)
    checks(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
