"""The knock daemon under a flood: ingest rate, memory and false opens, per run mode.

    sudo python benchmarks/bench_daemon.py [--modes network,file] [--rates 0,100000]
        [--packets 100000] [--sources 10000] [--knocks 5] [--forged 100] [--profile] [--keep]

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
every one was accepted. Evictions (``max_sources`` reached) are counted too.
"""

from __future__ import annotations

import argparse
import asyncio
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
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import fmt, interrupt_on_signals, run, stop, verdict

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
NET = ipaddress.ip_network("198.18.0.0/15")
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
MAX_SOURCES = 60_000  # 198.19.0.1 - 198.19.239.250
RUN_LIMIT = 60.0  # seconds: no sender, writer or drain runs longer than this
BURST_GAP = 0.01  # seconds without a batch that end a burst (idle, not ingesting)
CHUNK_LINES = 1000
RUN_GAP = 0.02  # seconds between the SYNs (lines) of `aioknock run`: > BURST_GAP
MAX_DECISIONS = 10_000  # decisions the driver keeps for the report
TOUCH = shutil.which("touch") or "/usr/bin/touch"


def flood_source(i: int) -> str:
    return f"198.19.{i // 250}.{i % 250 + 1}"


def genuine_source(j: int) -> str:
    return f"198.18.1.{j + 1}"


def forged_source(f: int) -> str:
    return f"198.18.2.{f + 1}"


def cross_source(j: int) -> str:
    return f"198.18.3.{j + 1}"


def kind_of(src: str) -> str:
    if src == CLIENT:
        return "run"  # aioknock run, genuine
    if src.startswith("198.19."):
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

    @property
    def to_span(self) -> int:
        return sum(1 for _, _, d in self.syns if SPAN_LOW <= d <= SPAN_HIGH)


def build_stream(packets: int, sources: int, knocks: int, forged: int, seed: int) -> Stream:
    from aioknock import ClientSettings, build_knock

    rng = random.Random(seed)
    span_size = SPAN_HIGH - SPAN_LOW + 1
    order = list(range(sources)) + [rng.randrange(sources) for _ in range(packets - sources)]
    rng.shuffle(order)
    items: list[tuple[float, str, int, int]] = []
    for i, s in enumerate(order):
        if rng.random() < SPAN_SHARE:
            dport = SPAN_LOW + rng.randrange(span_size)
        else:
            dport = rng.randrange(1, 65536 - span_size)
            dport += span_size if dport >= SPAN_LOW else 0
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
        settings = ClientSettings.of(knock=KNOCK, portspan=SPAN, encrypt=True, cipher="Blowfish",
                                  key=KEY, iv=True, remote=SERVER, client=src,
                                  port=DOOR_PORT)  # fmt: skip
        ports = build_knock(settings).ports
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


def _in_namespace(name: str) -> bool:
    """Whether this process runs in the network namespace ``ip netns`` knows as ``name``."""
    here, there = os.stat("/proc/self/ns/net"), os.stat(f"/run/netns/{name}")
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def sender_main(
    netns: str, packets_path: str, rate: float, limit: float, marks_json: str, out: str
) -> None:
    """Send the prepared 40-byte SYNs to their (single) destination; bounded in time."""
    data = Path(packets_path).read_bytes()
    count = len(data) // 40
    if count > MAX_PACKETS + 100_000 or len(data) % 40:
        raise SystemExit("bad packet file")
    dst = {data[i * 40 + 16 : i * 40 + 20] for i in range(count)}
    if len(dst) != 1 or ipaddress.ip_address(next(iter(dst))) not in NET:
        raise SystemExit("packets must all go to one address in 198.18.0.0/15")
    if not _in_namespace(netns):
        raise SystemExit(f"refusing to send: not inside network namespace {netns}")
    address = (str(ipaddress.ip_address(next(iter(dst)))), 0)
    marks: dict[int, str] = {v: k for k, v in json.loads(marks_json).items()}
    times: dict[str, float] = {}
    chunks = [data[i * 40 : i * 40 + 40] for i in range(count)]
    errors: dict[str, int] = {}
    sent = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t0, p0 = time.time(), time.perf_counter()
    half = count // 2
    for i, pkt in enumerate(chunks):
        if not i & 63:
            now = time.perf_counter()
            if now - p0 > limit:
                break
            if half and i >= half:
                print("half", flush=True)  # the parent starts `aioknock run` now
                half = 0
            if rate and (ahead := p0 + i / rate - now) > 0:
                time.sleep(ahead)
        if i in marks:
            times[marks[i]] = time.time()
        try:
            sock.sendto(pkt, address)
            sent += 1
        except OSError as exc:
            name = os.strerror(exc.errno or 0)
            errors[name] = errors.get(name, 0) + 1
    wall = time.perf_counter() - p0
    sock.close()
    with open(out, "w") as f:
        json.dump({"sent": sent, "wall": wall, "start": t0, "errors": errors, "marks": times}, f)


# ------------------------------------------------- run inside the server namespace


def _proc_status(*names: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in names:
                out[key] = int(value.split()[0])  # kB
    return out


def driver_main(conf: str, out: str, profile: str) -> int:
    """``aioknock daemon -conf CONF``, watched; writes what it saw to ``out`` on exit."""
    from aioknock.asyncio.daemon import KnockDaemon

    state: dict[str, Any] = {"kernel": None, "burst": None, "bursts": [], "burst_count": 0,
                             "decisions": [], "rss_ready_kb": 0, "poll": None,
                             "evictions": 0, "evicted": []}  # fmt: skip
    daemons: list[KnockDaemon] = []

    end_burst = _watch(state, daemons)
    rc = _run_daemon(["daemon", "-conf", conf], profile)
    end_burst()
    status = _proc_status("VmRSS", "VmHWM")
    d = daemons[-1] if daemons else None
    result = {
        "rc": rc,
        "counts": d.counts if d else {},
        "sources": sum(r.sources for r in d.engine.recognizers) if d else -1,
        "max_sources": d.settings.max_sources if d else -1,
        "cpu_total": time.process_time(),
        "rss_end_kb": status["VmRSS"],
        "hwm_kb": status["VmHWM"],
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        **state,
    }
    Path(out).write_text(json.dumps(result))
    return rc


def _watch(state: dict[str, Any], daemons: list[Any]) -> Callable[[], None]:
    """Put watching subclasses in the daemon's place; returns what ends the last burst."""
    import aioknock.asyncio.daemon as daemon_mod
    import aioknock.asyncio.sniffer as sniffer_mod
    from aioknock.asyncio.follow import Follower
    from aioknock.daemon.encoded import EncodedKnocks
    from aioknock.daemon.packet import Packet
    from aioknock.daemon.recognizer import Grant, SourceTable, Verdict

    watched: list[Any] = []

    def end_burst() -> None:
        """Keep bursts of 1,000 packets or more (at most 50) and count all."""
        b = state["burst"]
        if b is not None:
            state["burst_count"] += 1
            if b["packets"] >= 1000 and len(state["bursts"]) < 50:
                state["bursts"].append(b)
            state["burst"] = None

    class WatchedSniffer(sniffer_mod.Sniffer):
        def close(self) -> None:
            if self._sock.fileno() >= 0:
                with contextlib.suppress(OSError):
                    received, dropped = self.stats()  # since the socket was opened
                    k = state["kernel"] or {"received": 0, "dropped": 0}
                    k["received"] += received
                    k["dropped"] += dropped
                    state["kernel"] = k
            super().close()

    class WatchedFollower(Follower):
        def poll_once(self) -> list[str]:
            # File mode: a batch's time starts when the read that found its lines began.
            t0, c0 = time.perf_counter(), time.process_time()
            lines = super().poll_once()
            if lines and state["poll"] is None:
                state["poll"] = (t0, c0)
            return lines

    def watch_evictions(table: SourceTable[Any]) -> None:
        evict = table.evict

        def evicted(src: str) -> None:
            state["evictions"] += 1
            if kind_of(src) != "flood" and len(state["evicted"]) < MAX_DECISIONS:
                state["evicted"].append([src, time.time()])
            evict(src)

        table.evict = evicted  # type: ignore[method-assign]

    def record(verdict: Verdict, now: float) -> None:
        if verdict.verdict != "ignore" and len(state["decisions"]) < MAX_DECISIONS:
            address, port = "", 0
            if isinstance(verdict, Grant):
                address, port = verdict.address, verdict.ports[0][0]
            state["decisions"].append([verdict.verdict, verdict.source, address, port, now,
                                       getattr(verdict, "reason", "")])  # fmt: skip

    class WatchedDaemon(daemon_mod.KnockDaemon):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            engine = self.engine
            judge = type(engine)._judge

            def judged(verdict: Verdict, now: float) -> None:
                record(verdict, now)
                judge(engine, verdict, now)

            engine._judge = judged  # type: ignore[method-assign]
            self._watch_queues()
            daemons.append(self)

        def _switch(self, conf: Any) -> None:
            super()._switch(conf)
            self._watch_queues()

        def _watch_queues(self) -> None:
            for r in self.engine.recognizers:
                if isinstance(r, EncodedKnocks) and r not in watched:
                    watched.append(r)
                    watch_evictions(r._windows)

        async def run(self, stop: asyncio.Event) -> None:
            state["rss_ready_kb"] = _proc_status("VmRSS")["VmRSS"]
            await super().run(stop)

        def _receive(self, packets: list[Packet], seen: int) -> None:
            t0, c0 = state["poll"] or (time.perf_counter(), time.process_time())
            state["poll"] = None
            b = state["burst"]
            if b is None or t0 - b["end"] > BURST_GAP:
                end_burst()
                b = state["burst"] = {
                    "start": t0,
                    "end": t0,
                    "epoch": time.time(),
                    "cpu0": c0,
                    "cpu1": c0,
                    "packets": 0,
                    "batches": 0,
                }
            super()._receive(packets, seen)
            b["end"], b["cpu1"] = time.perf_counter(), time.process_time()
            b["packets"] += len(packets)
            b["batches"] += 1

    setattr(sniffer_mod, "Sniffer", WatchedSniffer)  # noqa: B010 - module attribute
    setattr(daemon_mod, "Sniffer", WatchedSniffer)  # noqa: B010
    setattr(daemon_mod, "KnockDaemon", WatchedDaemon)  # noqa: B010
    setattr(daemon_mod, "Follower", WatchedFollower)  # noqa: B010
    return end_burst


def _run_daemon(argv: list[str], profile: str) -> int:
    """The CLI's ``main``, under cProfile when ``profile`` names a file for its report."""
    from aioknock.cli.main import main as cli_main

    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        rc = prof.runcall(cli_main, argv)
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
        Path(profile).write_text(text.getvalue())
    else:
        rc = cli_main(argv)
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


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def wait_idle(pid: int, limit: float = RUN_LIMIT) -> float:
    """Wait until the process uses < 5% CPU over 0.4 s; returns the seconds waited."""
    t0 = time.monotonic()
    last, quiet = cpu_ticks(pid), 0
    while time.monotonic() - t0 < limit and quiet < 2:
        time.sleep(0.2)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if now - last <= 1 else 0
        last = now
    return time.monotonic() - t0


def wait_log(path: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"daemon not ready: {path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.02)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    return {**env, "HOME": str(home), "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT}"}


def write_confs(tmp: Path, mode: str, logfile: Path, opens: Path) -> tuple[Path, Path]:
    keyfile = tmp / "knock.key"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    common = {"knock": KNOCK, "portspan": SPAN, "encrypt": "yes", "cipher": "Blowfish",
              "iv": "yes", "key_file": str(keyfile)}  # fmt: skip
    daemon = {
        **common, "runmode": mode, "interface": SERVER_IF, "logfile": str(logfile),
        "log_format": "kernel", "from_start": "yes", "max_sources": "10000",
        "knock_timeout": "10", "backend": "command", "duration": "30", "cooldown": "0",
        "open": f"{TOUCH} {opens}/open_%IP%_%PORT%_%PROTO%",
    }  # fmt: skip
    client = {**common, "remote": SERVER, "port": str(DOOR_PORT), "quiet": "yes"}
    if mode == "file":
        client |= {"logtofile": "yes", "logfile": str(logfile)}
    client["timeout"] = str(RUN_GAP)
    paths = tmp / f"daemon-{mode}.conf", tmp / f"client-{mode}.conf"
    for path, values in zip(paths, (daemon, client), strict=True):
        path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return paths


# ---------------------------------------------------------------------- one run


@dataclass
class Result:
    label: str
    mode: str
    stream: Stream
    sent: int = 0
    send_wall: float = 0.0
    send_start: float = 0.0
    send_errors: dict[str, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    driver: dict[str, Any] = field(default_factory=dict)
    link: dict[str, int] = field(default_factory=dict)
    nft: int = -1
    run_rc: int = -1
    run_err: str = ""
    opens: list[str] = field(default_factory=list)
    lines: int = 0  # file mode: lines in the followed file at the end
    stopped_line: str = ""
    profile: str = ""

    def busy(self) -> tuple[int, float, float]:
        """Packets, wall seconds and CPU seconds of the bursts of >= 1,000 packets."""
        bursts = self.driver.get("bursts", [])
        return (
            sum(b["packets"] for b in bursts),
            sum(b["end"] - b["start"] for b in bursts),
            sum(b["cpu1"] - b["cpu0"] for b in bursts),
        )

    @property
    def ingest_rate(self) -> float:
        packets, wall, _ = self.busy()
        return packets / wall if wall > 0 else 0.0

    @property
    def cpu_rate(self) -> float:
        packets, _, cpu = self.busy()
        return packets / cpu if cpu > 0 else 0.0

    def accepts(self) -> list[list[Any]]:
        return [d for d in self.driver.get("decisions", []) if d[0] == "accept"]

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


def start_daemon(pair: Pair, tmp: Path, conf: Path, label: str, profile: bool) -> tuple[
    subprocess.Popen[bytes], Path, Path, Path
]:  # fmt: skip
    out, err = tmp / f"driver-{label}.json", tmp / f"daemon-{label}.log"
    prof = tmp / f"{label}.prof"
    code = (f"import sys, bench_daemon as b; sys.exit(b.driver_main({str(conf)!r}, {str(out)!r}, "
            f"{str(prof) if profile else ''!r}))")  # fmt: skip
    with open(err, "wb") as errf:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", pair.server, sys.executable, "-c", code],
            cwd=tmp, env=env_for(tmp), stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
        )  # fmt: skip
    return proc, out, err, prof


def finish_daemon(proc: subprocess.Popen[bytes], res: Result, out: Path, err: Path,
                  prof: Path) -> None:  # fmt: skip
    wait_idle(proc.pid)
    stop(proc, signal.SIGTERM, wait=15)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"daemon failed ({proc.returncode}): {err.read_text()[-2000:]}")
    res.driver = json.loads(out.read_text())
    log = err.read_text(errors="replace")
    m = re.search(r"stopped: .*", log)
    res.stopped_line = m.group(0) if m else "(no summary line)"
    if "Traceback" in log:
        raise RuntimeError(f"the daemon raised: {log[-3000:]}")
    if prof.exists():
        res.profile = prof.read_text()


def run_network(pair: Pair, tmp: Path, stream: Stream, rate: float, profile: bool) -> Result:
    label = f"network-{int(rate)}"
    res = Result("network " + ("max" if not rate else f"{rate:,.0f}/s"), "network", stream)
    opens = tmp / f"opens-{label}"
    opens.mkdir()
    dconf, cconf = write_confs(tmp, "network", tmp / "unused.log", opens)
    blob = tmp / f"{label}.pkts"
    rng = random.Random(1)
    with open(blob, "wb") as f:
        for i, (src, sport, dport) in enumerate(stream.syns):
            f.write(syn_packet(src, SERVER, sport, dport, rng.getrandbits(32), i & 0xFFFF or 1))
    proc, out, err, prof = start_daemon(pair, tmp, dconf, label, profile)
    try:
        wait_log(err, rf"capturing on {SERVER_IF}", proc)
        link0, nft0 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
        sent_json = tmp / f"sender-{label}.json"
        call = (pair.client, str(blob), rate, RUN_LIMIT, json.dumps(stream.marks), str(sent_json))
        code = f"import bench_daemon as b; b.sender_main(*{call!r})"
        sender = subprocess.Popen(
            ["ip", "netns", "exec", pair.client, sys.executable, "-c", code],
            cwd=tmp, env=env_for(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sender.stdout is not None
            sender.stdout.readline()  # "half": half the stream is out (or EOF: it failed)
            # The real client knocks from the middle of the flood on.
            client = subprocess.Popen(
                ["ip", "netns", "exec", pair.client, sys.executable, "-m", "aioknock", "run",
                 "-conf", str(cconf)],
                cwd=tmp, env=env_for(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            try:
                _, serr = sender.communicate(timeout=RUN_LIMIT + 10)
                _, cerr = client.communicate(timeout=RUN_LIMIT)
                res.run_rc, res.run_err = client.returncode, cerr.strip()
            finally:
                stop(client, signal.SIGINT)
        finally:
            stop(sender, signal.SIGINT)
        if sender.returncode != 0:
            raise RuntimeError(f"sender failed ({sender.returncode}): {serr.strip()}")
        sent = json.loads(sent_json.read_text())
        res.sent, res.send_wall, res.send_start = sent["sent"], sent["wall"], sent["start"]
        res.send_errors, res.marks = sent["errors"], sent["marks"]
        finish_daemon(proc, res, out, err, prof)
        link1, nft1 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
        res.link = {k: link1[k] - link0[k] for k in link1}
        res.nft = nft1 - nft0
    finally:
        stop(proc, signal.SIGTERM)
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
    proc, out, err, prof = start_daemon(pair, tmp, dconf, label, profile)
    try:
        wait_log(err, r"following ", proc)
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
        finish_daemon(proc, res, out, err, prof)
    finally:
        stop(proc, signal.SIGTERM)
    res.opens = sorted(p.name for p in opens.iterdir())
    return res


# ---------------------------------------------------------------------- report


def print_table(rows: list[Result]) -> None:
    head = (f"{'run':<17} {'SYNs sent':>9} {'send s':>6} {'sent/s':>8} {'to daemon':>9} "
            f"{'kdrop':>6} {'daemon pkts':>11} {'ingest s':>8} {'ingest/s':>8} {'pkt/CPU-s':>9} "
            f"{'RSS0 MB':>7} {'peak MB':>7} {'sources':>7} {'acc':>4} {'ref':>4} {'ign':>4} "
            f"{'true':>5} {'false':>5}")  # fmt: skip
    print(head)
    print("-" * len(head))
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


def details(r: Result) -> None:
    d = r.driver
    s = r.stream
    print(f"\n{r.label}:")
    extra = len(s.syns) - s.flood
    print(f"  stream: {s.flood:,} random SYNs from "
          f"{len({src for src, _, _ in s.syns if src.startswith('198.19.')}):,} flood sources + "
          f"{extra:,} knock-shaped ({len(s.genuine)} genuine, {len(s.genuine)} replayed by the "
          f"same source, {len(s.genuine)} by another, {extra // KNOCK_PORTS - 3 * len(s.genuine)}"
          f" forged); {s.to_span:,} to the span")  # fmt: skip
    if r.send_errors:
        print(f"  send errors: {r.send_errors}")
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
        for b in bursts))  # fmt: skip
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
        f"{sources:,} (max_sources {d.get('max_sources', -1):,}); daemon CPU "
        f"{d.get('cpu_total', 0):.2f} s"
    )
    why: dict[str, int] = {}
    for v, src, _, _, _, reason in d.get("decisions", []):
        key = f"{v} {kind_of(src)}: {re.sub(r'[0-9.]+', 'N', reason)}"
        why[key] = why.get(key, 0) + 1
    for key, n in sorted(why.items()):
        print(f"    {n:>5} x {key}")
    evicted = d.get("evicted", [])
    print(f"  evictions (more than max_sources knocks in progress): "
          f"{d.get('evictions', 0):,}; of knocks not from the flood: {len(evicted)}"
          + (" (" + ", ".join(f"{kind_of(a)} {a}" for a, _ in evicted[:6]) + ")" if evicted
             else ""))  # fmt: skip
    first = min((t for k, t in r.marks.items() if k.endswith("first")), default=None)
    last = max((t for k, t in r.marks.items() if k.endswith("last")), default=None)
    if first is not None and last is not None:
        verb = "sent" if r.mode == "network" else "written"
        print(f"  genuine knocks woven in: {verb} +{first - r.send_start:.2f} to "
              f"+{last - r.send_start:.2f} s of a {r.send_wall:.2f} s flood")  # fmt: skip
    for src in [g for g, _ in s.genuine] + [CLIENT]:
        got = [x for x in d.get("decisions", []) if x[1] == src]
        what = "; ".join(f"{x[0]} at +{x[4] - r.send_start:.2f} s ({x[5]})" for x in got[:3])
        if any(a == src for a, _ in evicted):
            what = "; ".join(filter(None, [what, "evicted (max_sources)"]))
        name = "aioknock run" if src == CLIENT else "woven"
        if src == CLIENT and got and got[0][0] == "accept" and r.mode == "network":
            first_syn = got[0][4] - (KNOCK_PORTS - 1) * RUN_GAP - r.send_start
            what += f"; its first SYN about +{first_syn:.2f} s"
        print(f"    {name} {src}: {what or 'no decision (a SYN lost?)'}")
    if r.run_rc != 0:
        print(f"  aioknock run failed: exit {r.run_rc}: {r.run_err}")
    print(f"  door files: {len(r.opens)} ({', '.join(r.opens[:8])})")
    if r.profile:
        print(f"\n--- cProfile of the daemon, {r.label} (slowed down by the profiler) ---")
        print(r.profile.rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="network,file", help="network, file or both")
    parser.add_argument("--rates", default="0,100000",
                        help="network send rates, SYN/s (0 = as fast as possible)")  # fmt: skip
    parser.add_argument("--packets", type=int, default=100_000, help="random SYNs in the flood")
    parser.add_argument("--sources", type=int, default=10_000, help="flood source addresses")
    parser.add_argument("--knocks", type=int, default=5, help="genuine knocks woven in")
    parser.add_argument("--forged", type=int, default=100, help="random 32-port knocks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon")
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not set(modes) <= {"network", "file"} or not all(0 <= r <= 10_000_000 for r in rates):
        parser.error("modes: network, file; rates >= 0")
    if not 1 <= args.sources <= min(MAX_SOURCES, args.packets) <= args.packets <= MAX_PACKETS:
        parser.error(f"1 <= sources <= {MAX_SOURCES}, sources <= packets <= {MAX_PACKETS}")
    if not (1 <= args.knocks <= 250 and 0 <= args.forged <= 250):
        parser.error("knocks 1-250, forged 0-250")
    if sys.platform != "linux" or os.geteuid() != 0:
        parser.error("needs root on Linux (network namespaces, nftables, raw sockets)")
    if missing := [c for c in ("ip", "nft", "sysctl") if shutil.which(c) is None]:
        parser.error(f"missing commands: {', '.join(missing)}")

    interrupt_on_signals()
    print(f"aioknock daemon (CLI, uvloop), knock = {KNOCK}, Blowfish iv=yes, portspan {SPAN}: "
          f"{KNOCK_PORTS} ports per knock; max_sources 10000; {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}\n", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="akbd-"))
    rows: list[Result] = []
    try:
        with namespaces() as pair:
            for mode in modes:
                for rate in rates if mode == "network" else [0.0]:
                    stream = build_stream(args.packets, args.sources, args.knocks, args.forged,
                                          args.seed)  # fmt: skip
                    sub = tmp / f"{mode}-{int(rate)}"
                    sub.mkdir()
                    if mode == "network":
                        rows.append(run_network(pair, sub, stream, rate, args.profile))
                    else:
                        rows.append(run_file(pair, sub, stream, args.profile))
    except KeyboardInterrupt:
        print("\ninterrupted; namespaces removed", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"\nfiles kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    for r in rows:
        details(r)
    print("\nChecks:")
    false = sum(r.false_opens() for r in rows)
    print(f"  [{verdict(false == 0)}] false opens == 0: "
          + ", ".join(f"{r.label} {r.false_opens()}" for r in rows))  # fmt: skip
    for r in rows:
        true, genuine = r.true_opens()
        print(f"  [{verdict(true == genuine)}] {r.label}: genuine knocks during the flood "
              f"accepted: {true}/{genuine}")  # fmt: skip
    bounded = all(0 <= r.driver.get("sources", -1) <= r.driver.get("max_sources", 0) for r in rows)
    print(f"  [{verdict(bounded)}] sources in progress <= max_sources: "
          + ", ".join(f"{r.label} {r.driver.get('sources')}" for r in rows))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
