"""Knock a fleet: aioknock.knock_many against knockd's ``knock`` + ``xargs -P 256``.

    sudo python benchmarks/bench_fleet.py [--hosts 1,1000,10000] [--timeouts 0,0.1]
                                          [--modes syn,connect] [--skip-knock] [--profile]

Root and Linux only. The script builds its own network namespace, where ``lo`` is up
and 127.0.0.0/8 stands for the fleet (host i is 127.0.(i // 250).(i % 250 + 1)), and
loads an nftables ruleset there that drops TCP to the knock ports, so every attempt
hangs as against a real firewall. Every packet stays inside that namespace, which is
deleted again on exit, also on Ctrl-C or error.

The measured sender runs inside the namespace as a small driver process: it calls
``aioknock.knock_many`` on uvloop with ``watch=False`` (as the CLI does for fleets),
one encoded knock per host: ``knock = CLIENT,PORT,RAND,CHECKSUM`` unencrypted, 8 bytes
on a portspan of 256 ports = 8 knocks (8 SYNs) per host, ``client = auto`` resolved per
host. It reports its wall time, CPU time and peak RSS (getrusage). tcpdump captures the
SYNs on ``lo`` (pcap, snaplen 96, 64 MiB buffer) and the capture gives SYNs per second,
hosts whose SYNs arrived complete and in order, duplicated SYNs (same 4-tuple and
sequence number: retransmissions; the capture runs on for 1.1 s after the sender exits
so that late ones show), tcpdump's kernel drops, and the inter-knock gap error (actual
gap between a host's consecutive SYNs minus the requested timeout).

Then knockd's ``knock`` client (one process per host, one SYN per port: a non-blocking
connect() closed at once) knocks the same hosts with the same ports through
``xargs -P 256 -L 1 knock -d <ms>``, and the table gives the ratio of SYN rates.
Last, the encode-only figure: knocks encoded per second with Blowfish and ``iv = yes``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _procs import fmt, interrupt_on_signals, run, stop, verdict
from bench_encode import measure

from aioknock.codec.ciphers import CryptCBC
from aioknock.codec.fields import KnockFormat
from aioknock.codec.pipeline import Codec
from aioknock.codec.portspan import PortSpan

ROOT = Path(__file__).resolve().parent.parent
FORMAT = "CLIENT,PORT,RAND,CHECKSUM"  # 4 + 2 + 1 + 1 = 8 bytes
PORTSPAN = "20000-20255"  # 256 ports: one byte per knock, 8 knocks per host
MAX_HOSTS = 60_000  # 127.0.0.1 - 127.0.239.250
RUN_LIMIT = 60.0  # seconds: no sender runs longer than this
SETTLE = 1.1  # seconds of capture after the sender exits: retransmissions come at 1 s
XARGS_P = 256
SYN_FILTER = "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"

# The measured sender. argv: hosts timeout mode loop out.json [profile.txt]
DRIVER = r"""
import asyncio, gc, json, resource, sys, time
import uvloop
from aioknock import ClientSettings, knock_many
from aioknock.asyncio.fleet import raise_fd_limit

m, timeout, mode, loop, out = sys.argv[1:6]
m, timeout = int(m), float(timeout)
profile = sys.argv[6] if len(sys.argv) > 6 else ""
gc.freeze()  # as the CLI does before a run
fd_limit = raise_fd_limit()
settings = ClientSettings.of(knock=FORMAT, portspan=PORTSPAN, timeout=timeout,
                             connect=mode == "connect")
hosts = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(m)]
results = []

async def run():
    async for result in knock_many(hosts, settings, watch=False):
        results.append(result)

def measured():
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, e0 = time.perf_counter(), time.time()
    (uvloop.run if loop == "uvloop" else asyncio.run)(run())
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall, e0, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, r1

if profile:
    import cProfile, io, pstats
    prof = cProfile.Profile()
    wall, e0, cpu, r1 = prof.runcall(measured)
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    with open(profile, "w") as f:
        f.write(text.getvalue())
else:
    wall, e0, cpu, r1 = measured()
errors = {}
for r in results:
    if not r.ok:  # one line per reason, with the host taken out
        reason = r.error.replace(f"{r.host} ({r.address})", "HOST").replace(r.host, "HOST")
        errors[reason] = errors.get(reason, 0) + 1
with open(out, "w") as f:
    json.dump({
        "wall": wall, "started": e0, "cpu": cpu, "maxrss_kb": r1.ru_maxrss,
        "fd_limit": fd_limit, "done": len(results), "errors": errors,
        "ports": {r.address: r.ports for r in results if r.ok},
    }, f)
""".replace("FORMAT", repr(FORMAT)).replace("PORTSPAN", repr(PORTSPAN))

LINE = re.compile(r"^(\d+\.\d+) IP (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[S\], seq (\d+)")


def host(i: int) -> str:
    return f"127.0.{i // 250}.{i % 250 + 1}"


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A fresh network namespace with ``lo`` up and the knock ports dropped."""
    ns = f"akbench-{os.getpid()}"
    run(["ip", "netns", "add", ns])
    try:
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        lo, hi = PORTSPAN.split("-")
        ruleset = (
            "table inet akbench {\n  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    tcp dport {lo}-{hi} counter drop\n  }}\n}}\n"
        )
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=ruleset)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


@dataclass
class Capture:
    """tcpdump on ``lo`` in the namespace, writing a pcap of the SYNs."""

    ns: str
    path: Path
    proc: subprocess.Popen[bytes] | None = None
    dropped: int = 0
    packets: list[tuple[float, str, int, str, int, int]] = field(default_factory=list)

    def start(self) -> None:
        err = self.path.with_suffix(".err")
        cmd = ["ip", "netns", "exec", self.ns, "tcpdump", "-i", "lo", "-nn", "-s", "96",
               "-B", "65536", "-Z", "root", "-w", str(self.path), SYN_FILTER]  # fmt: skip
        with open(err, "wb") as errf:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
        deadline = time.monotonic() + 5
        while "listening on" not in err.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {err.read_text(errors='replace')}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop(self.proc, signal.SIGINT)
        self.proc = None
        errtext = self.path.with_suffix(".err").read_text(errors="replace")
        m = re.search(r"(\d+) packets? dropped by kernel", errtext)
        self.dropped = int(m.group(1)) if m else -1
        text = run(["tcpdump", "-r", str(self.path), "-nn", "-tt"], timeout=60)
        for line in text.splitlines():
            if g := LINE.match(line):
                ts, src, sport, dst, dport, seq = g.groups()
                self.packets.append((float(ts), src, int(sport), dst, int(dport), int(seq)))
        self.packets.sort(key=lambda p: p[0])  # stable: capture order breaks ties


@dataclass
class Row:
    sender: str
    hosts: int
    timeout: float
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float | None = None
    syns: int = 0
    expected: int = 0
    complete: int = 0
    dups: int = 0
    late: int = 0
    dropped: int = 0
    gap_med: float | None = None
    gap_p99: float | None = None
    gap_p99_by_knock: list[float] = field(default_factory=list)  # gap k: knock k -> k + 1
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.syns / self.wall if self.wall else 0.0


def analyse(row: Row, cap: Capture, ports: dict[str, list[int]]) -> None:
    """Fill the capture-derived columns of ``row`` from the SYNs and the expected ports."""
    seen: dict[tuple[str, int, str, int, int], float] = {}
    per_host: dict[str, list[tuple[float, int]]] = {}
    for ts, src, sport, dst, dport, seq in cap.packets:
        key = (src, sport, dst, dport, seq)
        if key in seen:  # same 4-tuple and ISN: a retransmission
            row.dups += 1
            row.late += ts - seen[key] > 0.9
            continue
        seen[key] = ts
        per_host.setdefault(dst, []).append((ts, dport))
    row.syns = len(seen)
    row.dropped = cap.dropped
    row.expected = sum(len(p) for p in ports.values())
    row.complete = sum(1 for h, p in ports.items() if [d for _, d in per_host.get(h, [])] == p)
    if row.timeout > 0:
        gaps = [
            (b[0] - a[0] - row.timeout) * 1000
            for syns in per_host.values()
            for a, b in itertools.pairwise(syns)
        ]
        by_knock: dict[int, list[float]] = {}
        for syns in per_host.values():
            for k, (a, b) in enumerate(itertools.pairwise(syns)):
                by_knock.setdefault(k, []).append((b[0] - a[0] - row.timeout) * 1000)
        row.gap_p99_by_knock = [
            statistics.quantiles(g, n=100, method="inclusive")[98] if len(g) >= 2 else g[0]
            for _, g in sorted(by_knock.items())
        ]
        if len(gaps) >= 2:
            row.gap_med = statistics.median(gaps)
            row.gap_p99 = statistics.quantiles(gaps, n=100, method="inclusive")[98]
        elif gaps:
            row.gap_med = row.gap_p99 = gaps[0]


def run_aioknock(
    ns: str, tmp: Path, m: int, timeout: float, mode: str, loop: str, profile: bool
) -> tuple[Row, dict[str, list[int]]]:
    label = f"{m}-{timeout}-{mode}-{loop}"
    sender = f"aioknock {mode}" + ("" if loop == "uvloop" else f" {loop}")
    out, prof = tmp / f"aioknock-{label}.json", tmp / f"profile-{label}.txt"
    cap = Capture(ns, tmp / f"aioknock-{label}.pcap")
    cap.start()
    try:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", DRIVER,
               str(m), str(timeout), mode, loop, str(out)]  # fmt: skip
        cmd += [str(prof)] if profile else []
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=RUN_LIMIT)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"driver failed ({res.returncode}): {res.stderr.strip()}")
        time.sleep(SETTLE)
    finally:
        cap.stop()
    data = json.loads(out.read_text())
    row = Row(sender, m, timeout, data["wall"], data["cpu"],
              data["maxrss_kb"] / 1024, errors=data["errors"])  # fmt: skip
    analyse(row, cap, data["ports"])
    if profile:
        print(f"\n--- cProfile of {sender}, {m} hosts, timeout {timeout} s ---")
        print(prof.read_text())
    return row, data["ports"]


def run_knock(ns: str, tmp: Path, timeout: float, ports: dict[str, list[int]]) -> Row:
    listing = tmp / f"knock-{len(ports)}-{timeout}.txt"
    listing.write_text("".join(f"{h} {' '.join(map(str, p))}\n" for h, p in ports.items()))
    cap = Capture(ns, listing.with_suffix(".pcap"))
    cap.start()
    try:
        cmd = ["ip", "netns", "exec", ns, "xargs", "-P", str(XARGS_P), "-L", "1", "-a",
               str(listing), "knock", "-d", str(round(timeout * 1000))]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_LIMIT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise RuntimeError(f"knock failed ({res.returncode}): {res.stderr.strip()[:500]}")
        time.sleep(SETTLE)
    finally:
        cap.stop()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    row = Row(f"knock+xargs -P{XARGS_P}", len(ports), timeout, wall, cpu)
    analyse(row, cap, ports)
    return row


def print_table(rows: list[Row]) -> None:
    head = (f"{'sender':<20} {'hosts':>6} {'timeout':>7} {'wall s':>7} {'cpu s':>6} "
            f"{'RSS MB':>6} {'SYNs':>6} {'SYN/s':>8} {'complete':>13} {'dup':>4} {'late':>4} "
            f"{'kdrop':>5} {'gap med ms':>10} {'gap p99 ms':>10}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        complete = f"{r.complete}/{r.hosts}"
        print(f"{r.sender:<20} {r.hosts:>6} {r.timeout:>7g} {r.wall:>7.3f} {r.cpu:>6.2f} "
              f"{fmt(r.rss_mb, '.1f'):>6} {r.syns:>6} {r.rate:>8,.0f} {complete:>13} "
              f"{r.dups:>4} {r.late:>4} {r.dropped:>5} {fmt(r.gap_med, '.2f'):>10} "
              f"{fmt(r.gap_p99, '.2f'):>10}")  # fmt: skip
        if r.hosts > 1 and r.gap_p99_by_knock:
            by_knock = " ".join(f"{g:.1f}" for g in r.gap_p99_by_knock)
            print(f"    gap p99 ms by knock (1st gap first): {by_knock}")
        for error, count in r.errors.items():
            print(f"    {count} hosts failed: {error}")


def targets(rows: list[Row]) -> None:
    def find(sender: str, m: int, t: float) -> Row | None:
        return next((r for r in rows if r.sender == sender and r.hosts == m and r.timeout == t),
                    None)  # fmt: skip

    syn0, knock0 = find("aioknock syn", 10_000, 0.0), find(f"knock+xargs -P{XARGS_P}", 10_000, 0)
    syn1 = find("aioknock syn", 1000, 0.1)
    syn10k = [r for r in rows if r.sender == "aioknock syn" and r.hosts == 10_000]
    ours = [r for r in rows if r.sender == "aioknock syn"]
    print("\nTargets (aioknock syn, 8 knocks per host):")
    ratio = syn0.rate / knock0.rate if syn0 and knock0 and knock0.rate else None
    print(f"  [{verdict(None if ratio is None else ratio >= 3)}] timeout 0, 10,000 hosts: "
          f"SYN rate >= 3x knock+xargs -P{XARGS_P}: {fmt(ratio, '.2f')}x")  # fmt: skip
    print(f"  [{verdict(None if syn1 is None else syn1.wall < 1.5)}] timeout 0.1 s, 1,000 hosts "
          f"in < 1.5 s wall: {fmt(syn1.wall if syn1 else None, '.3f')} s")  # fmt: skip
    complete = all(r.complete == r.hosts for r in ours) if ours else None
    print(
        f"  [{verdict(complete)}] 100% of hosts complete and in order: "
        + ", ".join(f"{r.complete}/{r.hosts}@{r.timeout:g}" for r in ours)
    )
    dups = sum(r.dups for r in ours)
    print(
        f"  [{verdict(dups == 0 if ours else None)}] 0 duplicated SYNs: {dups} "
        f"(late retransmissions: {sum(r.late for r in ours)})"
    )
    p99 = syn1.gap_p99 if syn1 else None
    print(f"  [{verdict(None if p99 is None else p99 < 10)}] gap error p99 < 10 ms at 1,000 "
          f"hosts: {fmt(p99, '.2f')} ms")  # fmt: skip
    rss = max((r.rss_mb or 0 for r in syn10k), default=None)
    print(f"  [{verdict(None if rss is None else rss < 150)}] peak RSS < 150 MB at 10,000 hosts: "
          f"{fmt(rss, '.1f')} MB")  # fmt: skip
    if any(r.dropped for r in rows):
        print("  note: tcpdump reported kernel drops; SYN counts may be low")


def encode_figure(seconds: float) -> None:
    print("\nEncode only (codec built once; fresh RAND/IV per knock):")
    for fields in (FORMAT, "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM"):
        codec = Codec(KnockFormat.parse(fields), CryptCBC("Blowfish", b"k", iv=True),
                      PortSpan.parse("745-1000"))  # fmt: skip
        rate = measure(codec, seconds)
        print(f"  Blowfish iv=yes, {fields:<38} {codec.knock_length:>3} ports: "
              f"{rate:>10,.0f} knocks/s")  # fmt: skip


def parse_list(text: str, kind: type[float] | type[int]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,1000,10000", help="fleet sizes (comma-separated)")
    parser.add_argument("--timeouts", default="0,0.1", help="seconds between knocks")
    parser.add_argument(
        "--modes", default="syn,connect", help="aioknock modes: syn, connect or both"
    )
    parser.add_argument("--loops", default="uvloop", help="event loops: uvloop, asyncio or both")
    parser.add_argument("--skip-knock", action="store_true", help="do not run knock + xargs")
    parser.add_argument("--profile", action="store_true", help="cProfile each aioknock run")
    parser.add_argument("--encode-seconds", type=float, default=0.5)
    parser.add_argument("--keep", action="store_true", help="keep the pcaps and driver output")
    args = parser.parse_args()
    sizes, timeouts = parse_list(args.hosts, int), parse_list(args.timeouts, float)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    if not all(1 <= m <= MAX_HOSTS for m in sizes) or not all(0 <= t <= 1 for t in timeouts):
        parser.error(f"hosts must be 1-{MAX_HOSTS}, timeouts 0-1 s")
    if not set(modes) <= {"syn", "connect"} or not set(loops) <= {"uvloop", "asyncio"}:
        parser.error("modes: syn, connect; loops: uvloop, asyncio")
    if sys.platform != "linux" or os.geteuid() != 0:
        parser.error("needs root on Linux (network namespaces, nftables, tcpdump)")
    need = ["ip", "nft", "tcpdump", "xargs"] + ([] if args.skip_knock else ["knock"])
    if missing := [c for c in need if shutil.which(c) is None]:
        parser.error(f"missing commands: {', '.join(missing)}")

    interrupt_on_signals()
    print(f"aioknock.knock_many on uvloop, watch=False; knock = {FORMAT} unencrypted, portspan "
          f"{PORTSPAN} (256 ports): 8 SYNs per host; {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}\n", flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="akbench-"))
    rows: list[Row] = []
    try:
        with namespace() as ns:
            for m in sizes:
                fleet_ports: dict[str, list[int]] | None = None
                for timeout in timeouts:
                    for mode in modes:
                        for loop in loops:
                            row, ports = run_aioknock(ns, tmp, m, timeout, mode, loop, args.profile)
                            rows.append(row)
                            if timeout == 0 and fleet_ports is None:
                                fleet_ports = ports
                if not args.skip_knock and 0.0 in timeouts:
                    if fleet_ports is None:  # every host failed: knock fixed ports instead
                        fleet_ports = {host(i): list(range(20000, 20008)) for i in range(m)}
                    rows.append(run_knock(ns, tmp, 0.0, fleet_ports))
    except KeyboardInterrupt:
        print("\ninterrupted; namespace removed", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"\npcaps and driver output kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if rows:
            print_table(rows)
    targets(rows)
    knock_rows = {r.hosts: r for r in rows if r.sender.startswith("knock")}
    for r in rows:
        if r.sender == "aioknock syn" and r.timeout == 0 and (k := knock_rows.get(r.hosts)):
            print(f"  SYN rate ratio aioknock/knock at {r.hosts} hosts, timeout 0: "
                  f"{r.rate / k.rate if k.rate else 0:.2f}x")  # fmt: skip
    by_mode = {(r.sender, r.hosts): r for r in rows if r.timeout == 0}
    for m in sorted({r.hosts for r in rows}):
        syn, conn = by_mode.get(("aioknock syn", m)), by_mode.get(("aioknock connect", m))
        if syn and conn and conn.rate:
            print(f"  mechanism at {m} hosts, timeout 0: scheduler connect() {syn.rate:,.0f} "
                  f"SYN/s vs open_connection task {conn.rate:,.0f} SYN/s "
                  f"({syn.rate / conn.rate:.2f}x)")  # fmt: skip
    encode_figure(args.encode_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
