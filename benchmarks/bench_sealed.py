"""Sealed knocks (issue 10, proof 5): encoding, the recognizer's tag checks, the daemon.

    sudo .venv/bin/python benchmarks/bench_sealed.py [--parts codec,recognizer,daemon]
        [--runs 5] [--seconds 0.2] [--packets 100000] [--sources 10000] [--genuine 10]
        [--noisy 4] [--forged 50] [--rates 0,20000] [--junk 20000:0.1,10000:0.5]
        [--seed 1] [--profile] [--keep]

Parts 1 and 2 run in-process (no root, no socket); part 3 needs root on Linux. Every
packet of part 3 stays inside the two network namespaces of ``bench_daemon.namespaces``
(server 198.18.0.1 on veth-s, client 198.18.0.2 on veth-c; nftables drops all TCP into
the server), deleted again on exit, Ctrl-C, SIGTERM or error; the raw sender checks that
it runs in the client namespace and that every packet goes to 198.18.0.0/15, and it is
bounded in count and to 60 s, as is the real client.

1. codec: sealed knocks built per second, the median of ``--runs`` runs of ``--seconds``:
   ``SealedCodec.build`` (fresh nonce from ``secrets``, time, one port) and the client's
   whole path, ``plan_sealed`` + ``ports`` from ``ClientSettings`` (``protocol = sealed``,
   a keygen key, ``client`` auto, IPv4 or IPv6), for tag_bits 64 and 128; then what the
   daemon pays per candidate: a tag that does not verify (``verify``), a genuine knock's
   ``open`` (tag, ChaCha20, parse), ``unpack`` of 16 ports; and the HMAC-SHA256 of a tag's
   input with pycryptodome (what the codec uses) and with the standard library.
2. recognizer: ``SealedKnocks.receive`` fed ``Packet`` objects on a fake clock (100,000
   SYN/s, ``knock_timeout`` 10 s, ``max_sources`` 10,000): random span SYNs from 10,000
   sources and from one; label-ordered junk (labels in knock order, padding bits zero
   where a label ends a knock, and the label 0 doubled once a cycle: the pattern that
   made most tag checks per SYN among those tried, periodic orders with 1-3 doubled
   labels per one or two cycles) from one source and from 100; the tests' crafted window
   (8 candidates on its last SYN); genuine knocks, clean and with 2 strays. Per stream:
   microseconds per SYN, ``tag_checks`` per SYN and per second, ``most_checks`` (the most
   one SYN cost: at most ``MAX_TAG_CHECKS``).
3. daemon: the real ``aioknock daemon`` (CLI, uvloop) in the server namespace, run by a
   ``_flood.Watch`` driver (times the batches, keeps verdicts, PACKET_STATISTICS, CPU,
   VmRSS/VmHWM; counts the windows the recognizer found to hold no knock, and reads its
   ``tag_checks`` and ``most_checks`` at exit) with ``protocol = sealed``, ``server_id =
   gate.bench``, a keygen key, ``knock_timeout = 2``, ``backend = command``, ``open =
   touch DIR/open_%IP%_%PORT%_%PROTO%``, ``cooldown = 0``. A raw socket (IP_HDRINCL) in
   the client namespace sends ``--packets`` SYNs to random ports of the span 32768-65535
   from ``--sources`` spoofed addresses 198.19.x.y (each at least once), random source
   ports, random order; in a junk row (``--junk`` RATE:SHARE) that share of them are
   part 2's label-ordered junk, 68 SYNs from each of the first sources (5 flood SYNs
   apart). Woven in, a knock's SYNs 40 flood SYNs apart: ``--genuine`` sealed knocks
   built with ``plan_sealed`` (``client = auto``: no address carried; each sent from its
   own spoofed source 198.18.1.j, so the daemon opens for that source), the first
   ``--noisy`` with 1 or 2 stray span SYNs from their source injected among their own
   (a random label, or one that fits next to a neighbour's); each genuine knock replayed
   later by its source and by another (198.18.3.j); ``--forged`` random 16-SYN knocks
   with the labels in order (198.18.2.f: one tag check each). When half the stream is
   out, the real ``aioknock run -protocol sealed`` knocks from 198.18.0.2. One row per
   ``--rates`` rate (random flood) and per ``--junk`` row; rate 0 = as fast as the sender
   goes. After the stream the daemon gets ``knock_timeout`` + 1 s (the forged windows
   expire), then it is stopped once idle.

False opens: any accept or door file but one per genuine knock for its own source (a
replay accepted counts, and so would a copy from another source accepted because the
original was lost in the kernel: it is shown as *relayed* as well). Genuine: every woven
knock and ``aioknock run`` accepted (fails where the kernel dropped one of their SYNs).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import json
import os
import random
import re
import resource
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _flood import BURST_GAP, RUN_LIMIT, Run, Watch, in_ns, watched_daemon
from _procs import (
    daemon_run_options,
    fmt,
    interrupt_on_signals,
    need_root,
    print_checks,
    print_head,
    scratch,
    stop,
)
from _rates import CodecRow, rate_of
from bench_daemon import (
    CLIENT,
    SERVER,
    SERVER_IF,
    TOUCH,
    Pair,
    cross_source,
    flood_source,
    forged_source,
    genuine_source,
    is_flood,
    link_stats,
    namespaces,
    nft_counter,
    syn_packet,
)
from Crypto.Hash import HMAC, SHA256

from aioknock.asyncio.client import plan_sealed
from aioknock.codec.sealed import DATA_BITS, LABELS, SealedCodec, SealedMessage
from aioknock.config.settings import ClientSettings
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant
from aioknock.daemon.sealedknocks import MAX_TAG_CHECKS, SealedKnocks

if TYPE_CHECKING:
    from aioknock.asyncio.daemon import KnockDaemon
    from aioknock.daemon.recognizer import Verdict

SERVER_ID = "gate.bench"  # the daemon's server_id, and the client's for 198.18.0.1
BOUND = "198.18.1.1"  # parts 1-2: the source a knock for the packet's source is made for
DOOR_PORT = 22
SPAN_START, SPAN_SIZE = 32768, 32768  # the sealed knock's default span
NOW = 1_764_000_000.0  # the fake clock of part 2
STEP = 1e-5  # part 2: seconds between SYNs (100,000 SYN/s)
KNOCK_TIMEOUT = 2.0  # part 3: the daemon's knock_timeout
GAP = 40  # part 3: flood SYNs between two SYNs of a woven knock
JUNK_BURST = 68  # SYNs of one junk source (four cycles of 17 labels)
JUNK_SPACING = 5  # flood SYNs between two of a junk burst's
MAX_PACKETS = 1_000_000
MAX_SOURCES = 60_000  # 198.19.0.1 - 198.19.239.250
MAX_WOVEN = 250  # genuine, cross and forged sources are 198.18.{1,2,3}.1-250
MAX_DECISIONS = 5_000  # verdicts about non-flood sources the driver keeps
FORGED_REASON = "no sealed knock among the last 16 SYNs (tag did not verify)"
REPLAYED = "replayed sealed knock"
ADDRESSES: tuple[tuple[str, str | None], ...] = (
    ("source", None), ("IPv4", "198.18.1.1"), ("IPv6", "2001:db8::1"),
)  # fmt: skip


def new_key() -> bytes:
    return secrets.token_bytes(32)


def key_line(key: bytes) -> str:
    """The key as ``aioknock keygen`` writes it: one line of base64."""
    return base64.b64encode(key).decode("ascii")


def span_port(label: int, bits: int) -> int:
    return SPAN_START + (label << DATA_BITS | bits)


def random_port(rng: random.Random) -> int:
    return SPAN_START + rng.randrange(SPAN_SIZE)


# ======================================================================= 1. codec


def codec_part(runs: int, seconds: float) -> list[CodecRow]:
    rows: list[CodecRow] = []

    def measure(what: str, fn: Callable[[], object]) -> None:
        fn()  # warm (imports, caches)
        rows.append(CodecRow(what, [rate_of(fn, seconds) for _ in range(runs)]))

    key = new_key()
    for tag in (64, 128):
        codec = SealedCodec(key, SERVER_ID, tag)
        for name, address in ADDRESSES:
            msg = SealedMessage(int(time.time()), DOOR_PORT, address=address)
            syns = len(codec.build(msg, source=BOUND))
            measure(f"SealedCodec.build, tag {tag}, {name} ({syns} SYNs)",
                    partial(codec.build, msg, source=BOUND))  # fmt: skip
    for tag in (64, 128):
        for name, address in ADDRESSES:
            settings = ClientSettings.of(protocol="sealed", key=key_line(key), tag_bits=tag,
                                         server_id=SERVER_ID, client=address or "auto",
                                         remote=SERVER, port=DOOR_PORT)  # fmt: skip
            syns = len(client_path(settings, BOUND))
            measure(f"plan_sealed + ports, tag {tag}, {name} ({syns} SYNs)",
                    partial(client_path, settings, BOUND))  # fmt: skip
    codec = SealedCodec(key, SERVER_ID)
    wire = codec.seal(SealedMessage(int(time.time()), DOOR_PORT), source=BOUND)
    wrong = wire[:-1] + bytes([wire[-1] ^ 1])
    ports = codec.ports(wire)
    measure("daemon, a candidate whose tag fails: verify",
            lambda: codec.verify(wrong, BOUND))  # fmt: skip
    measure("daemon, a genuine knock: open (tag, ChaCha20, parse)",
            lambda: codec.open(wire, BOUND))  # fmt: skip
    measure("daemon, 16 ports to wire bytes: unpack (no tag)", lambda: codec.unpack(ports))
    # What the tag covers: the server_id, the source (IPv4-mapped), nonce and ciphertext.
    mapped = ipaddress.IPv6Address(f"::ffff:{BOUND}").packed
    body = codec._head + mapped + wire[: -codec.tag_bytes]
    mac_key = codec._mac_key
    measure(f"HMAC-SHA256 of {len(body)} bytes: pycryptodome HMAC.new (the codec's)",
            lambda: HMAC.new(mac_key, body, digestmod=SHA256).digest())  # fmt: skip
    measure(f"HMAC-SHA256 of {len(body)} bytes: stdlib hmac.digest",
            lambda: hmac.digest(mac_key, body, "sha256"))  # fmt: skip
    return rows


def client_path(settings: ClientSettings, source: str) -> list[int]:
    """What ``aioknock run`` does per host for a sealed knock once it knows the address
    it sends from (hostknock.knock_ports): with ``client = auto`` the knock is bound to
    ``source``."""
    wire = plan_sealed(settings, SERVER, source=source)
    return settings.sealed_for(SERVER).ports(wire)


def print_codec(rows: list[CodecRow], runs: int) -> None:
    width = max(len(r.what) for r in rows)
    head = f"{'operation':<{width}} {'per s':>9} {'us each':>8} {'range per s':>17}"
    print(f"1. Codec (median of {runs} runs; one core):")
    print_head(head)
    for r in rows:
        span = f"{min(r.rates):,.0f}-{max(r.rates):,.0f}"
        print(f"{r.what:<{width}} {r.median:>9,.0f} {1e6 / r.median:>8.1f} {span:>17}")


# =================================================================== 2. recognizer


def padding_bits(codec: SealedCodec) -> dict[int, int]:
    """For each label that ends one of the knock lengths the daemon searches, the most
    padding bits a candidate ending there has (a candidate needs them zero)."""
    out: dict[int, int] = {}
    for n in codec.lengths():
        pad = max(DATA_BITS * n - 8 * size for size in codec.wire_sizes(n))
        out[(n - 1) % LABELS] = max(out.get((n - 1) % LABELS, 0), pad)
    return out


def junk_ports(codec: SealedCodec, rng: random.Random, count: int) -> list[int]:
    """Label-ordered junk made to cost tag checks: labels 0, 0, 1, 2, ..., 15, 0, 0, 1, ...
    (the label 0 doubled once a cycle), random data bits, the padding bits zero where a
    label ends a knock length: ~2 tag checks a SYN, up to 8 on one."""
    pads = padding_bits(codec)
    out: list[int] = []
    cycle = [0, *range(LABELS)]
    while len(out) < count:
        for label in cycle:
            bits = rng.randrange(1 << DATA_BITS) & ~((1 << pads.get(label, 0)) - 1)
            out.append(span_port(label, bits))
    return out[:count]


def crafted(rng: random.Random) -> list[int]:
    """The tests' window whose last SYN ends 4 arrangements of 16 SYNs and 4 of 32 (the
    last one's padding bits zero): 8 candidates, K tag checks on one SYN."""
    ports = [span_port(label, rng.randrange(1 << DATA_BITS))
             for label in [*range(16), 0, 0, 1, 1, *range(2, 16)]]  # fmt: skip
    ports[-1] &= ~0xFF
    return ports


def with_strays(ports: list[int], strays: int, rng: random.Random) -> list[int]:
    """``ports`` with ``strays`` span SYNs inserted among them (after the first, before
    the last), each of a random label or of one that fits next to a neighbour's."""
    out = list(ports)
    for _ in range(strays):
        at = rng.randrange(1, len(out))
        label = rng.choice([rng.randrange(LABELS), at % LABELS, (at - 1) % LABELS])
        out.insert(at, span_port(label, rng.randrange(1 << DATA_BITS)))
    return out


@dataclass
class RecognizerRow:
    what: str
    syns: int
    seconds: float
    checks: int
    most: int
    grants: int
    refusals: int

    @property
    def us_per_syn(self) -> float:
        return 1e6 * self.seconds / self.syns

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.seconds if self.seconds else 0.0


def woven_source(j: int) -> str:
    """Part 2's genuine knocks' sources: 198.18.1.1-250, 198.18.2.1-250."""
    return f"198.18.{1 + j // 250}.{j % 250 + 1}"


def interleave(rng: random.Random, streams: list[tuple[str, list[int]]]) -> list[tuple[str, int]]:
    """Several sources' SYNs merged at random, each source's in its own order."""
    keyed = []
    for src, ports in streams:
        at = sorted(rng.random() for _ in ports)
        keyed += [(t, src, port) for t, port in zip(at, ports, strict=True)]
    keyed.sort()
    return [(src, port) for _, src, port in keyed]


def recognizer_streams(codec: SealedCodec, seed: int) -> list[tuple[str, list[tuple[str, int]]]]:
    rng = random.Random(seed)
    many = [(flood_source(rng.randrange(10_000)), random_port(rng)) for _ in range(100_000)]
    one = [("198.19.0.1", random_port(rng)) for _ in range(20_000)]
    ordered = [("198.19.0.1", span_port(i % LABELS, rng.randrange(1 << DATA_BITS)))
               for i in range(5_000)]  # fmt: skip
    pads = padding_bits(codec)
    zeroed = [(src, port & ~((1 << pads.get((port - SPAN_START) >> DATA_BITS, 0)) - 1))
              for src, port in ordered]  # fmt: skip
    junk_one = [("198.19.0.1", port) for port in junk_ports(codec, rng, 5_000)]
    junk_many = interleave(rng, [(flood_source(s), junk_ports(codec, rng, JUNK_BURST))
                                 for s in range(100)])  # fmt: skip
    burst = [(flood_source(s), port) for s in range(200) for port in crafted(rng)]
    now = int(NOW)
    msg = SealedMessage(now, DOOR_PORT)  # a fresh nonce each, bound to its source
    genuine = [(woven_source(j), port) for j in range(500)
               for port in codec.build(msg, source=woven_source(j))]  # fmt: skip
    noisy = [(woven_source(j), port) for j in range(500)
             for port in with_strays(codec.build(msg, source=woven_source(j)), 2, rng)]  # fmt: skip
    return [
        ("random span SYNs, 10,000 sources", many),
        ("random span SYNs, one source", one),
        ("labels in order, random bits, one source", ordered),
        ("labels in order, padding bits zero, one source", zeroed),
        ("label-ordered junk (label 0 doubled), one source", junk_one),
        (f"label-ordered junk, 100 sources x {JUNK_BURST} SYNs", junk_many),
        ("crafted window (8 candidates on its last SYN), x 200", burst),
        ("genuine knocks (16 SYNs), 500 sources", genuine),
        ("genuine knocks + 2 stray SYNs each, 500 sources", noisy),
    ]


def feed(codec: SealedCodec, syns: list[tuple[str, int]]) -> tuple[float, SealedKnocks,
                                                                   list[Verdict]]:  # fmt: skip
    rec = SealedKnocks(codec, knock_timeout=10.0, max_sources=10_000, time_tolerance=120.0,
                       allow_nat=False)  # fmt: skip
    packets = [Packet(NOW + i * STEP, src, port, "tcp", 1024 + i % 64000)
               for i, (src, port) in enumerate(syns)]  # fmt: skip
    out: list[Verdict] = []
    receive = rec.receive
    t0 = time.perf_counter()
    for p in packets:
        out += receive(p)
    elapsed = time.perf_counter() - t0
    out += rec.handle_timer(NOW + len(packets) * STEP + 60.0)  # the windows left, said
    return elapsed, rec, out


def recognizer_part(seed: int) -> list[RecognizerRow]:
    codec = SealedCodec(new_key(), SERVER_ID)
    rows: list[RecognizerRow] = []
    for what, syns in recognizer_streams(codec, seed):
        elapsed, rec, verdicts = feed(codec, syns)
        rows.append(RecognizerRow(what, len(syns), elapsed, rec.tag_checks, rec.most_checks,
                                  sum(isinstance(v, Grant) for v in verdicts),
                                  sum(v.verdict == "refuse" for v in verdicts)))  # fmt: skip
    return rows


def print_recognizer(rows: list[RecognizerRow], per_check: float) -> None:
    width = max(len(r.what) for r in rows)
    head = (f"{'stream (SealedKnocks.receive, in-process)':<{width}} {'SYNs':>7} {'us/SYN':>7} "
            f"{'SYN/s':>9} {'checks':>7} {'chk/SYN':>7} {'checks/s':>8} {'most':>4} "
            f"{'grant':>5} {'refuse':>6}")  # fmt: skip
    print(f"\n2. Recognizer (tag_bits 64, knock_timeout 10 s, max_sources 10,000; "
          f"MAX_TAG_CHECKS = {MAX_TAG_CHECKS}):")  # fmt: skip
    print_head(head)
    for r in rows:
        print(f"{r.what:<{width}} {r.syns:>7,} {r.us_per_syn:>7.1f} {r.syns / r.seconds:>9,.0f} "
              f"{r.checks:>7,} {r.checks / r.syns:>7.2f} {fmt(r.checks_per_s or None, ',.0f'):>8} "
              f"{r.most:>4} {r.grants:>5} {r.refusals:>6}")  # fmt: skip
    for r in rows:
        if r.checks >= 1000:
            print(f"    {r.what}: {r.checks:,} tag checks x {1e6 * per_check:.1f} us "
                  f"(SealedCodec.verify) = ~{100 * r.checks * per_check / r.seconds:.0f}% of "
                  "its time")  # fmt: skip
    print("    checks = tag checks (SealedKnocks.tag_checks), checks/s = of them per second of "
          "receive; most = the most tag checks one SYN cost; grant/refuse: verdicts, with the "
          "windows left said at the end (refusals are rate-limited per source)")  # fmt: skip


# ======================================================================= 3. daemon


@dataclass
class Woven:
    """A knock-shaped sequence woven into the flood."""

    kind: str  # genuine, replay (same source), cross (another source), forged
    src: str
    ports: list[int]  # as sent (a genuine knock with its strays)
    strays: int = 0
    of: str = ""  # replay, cross: the genuine source whose knock it repeats


@dataclass
class Stream:
    syns: list[tuple[str, int, int]]  # (source, source port, destination port), in order
    flood: int  # random SYNs
    junk: int  # of the flood: label-ordered junk SYNs
    junk_sources: int
    sources: int
    woven: list[Woven]
    run_syns: int  # SYNs of `aioknock run`'s knock
    marks: dict[str, int] = field(default_factory=dict)  # "SRC:first|last" -> index

    @property
    def genuine(self) -> list[Woven]:
        return [w for w in self.woven if w.kind == "genuine"]

    def of_kind(self, kind: str) -> list[Woven]:
        return [w for w in self.woven if w.kind == kind]

    @property
    def cue(self) -> int:
        return len(self.syns) // 2


def genuine_knock(settings: ClientSettings, src: str) -> list[int]:
    """A sealed knock built by the client's own path, fresh nonce and time, no address
    carried (``client = auto``): bound to ``src``, the address it is sent from."""
    return client_path(settings, src)


def build_stream(settings: ClientSettings, packets: int, sources: int, junk_share: float,
                 genuine: int, noisy: int, forged: int, seed: int) -> Stream:  # fmt: skip
    rng = random.Random(seed)
    codec = settings.sealed_for(SERVER)
    junk_sources = round(junk_share * packets / JUNK_BURST)
    junk = junk_sources * JUNK_BURST
    randoms = packets - junk
    plain = sources - junk_sources  # the junk sources send junk only
    order = list(range(junk_sources, sources))
    order += [rng.randrange(junk_sources, sources) for _ in range(randoms - plain)]
    rng.shuffle(order)
    items: list[tuple[float, str, int, int]] = [
        (float(i) * packets / max(randoms, 1), flood_source(s), rng.randrange(1024, 65536),
         random_port(rng))
        for i, s in enumerate(order)
    ]  # fmt: skip
    for s in range(junk_sources):
        start = rng.uniform(0, max(0.0, packets - JUNK_BURST * JUNK_SPACING))
        for m, port in enumerate(junk_ports(codec, rng, JUNK_BURST)):
            items.append((start + m * JUNK_SPACING + 0.25, flood_source(s),
                          rng.randrange(1024, 65536), port))  # fmt: skip
    woven: list[tuple[float, Woven]] = []
    for j in range(genuine):
        src = genuine_source(j)
        ports = genuine_knock(settings, src)
        strays = (1 + j % 2) if j < noisy else 0
        sent = with_strays(ports, strays, rng)
        start = (j + 0.3) * packets / genuine
        width = (len(sent) + 4) * GAP
        woven += [(start, Woven("genuine", src, sent, strays)),
                  (start + width, Woven("replay", src, ports, of=src)),
                  (start + 2 * width, Woven("cross", cross_source(j), ports, of=src))]  # fmt: skip
    for f in range(forged):
        ports = [span_port(m, rng.randrange(1 << DATA_BITS)) for m in range(LABELS)]
        woven.append((rng.uniform(0, max(0.0, packets - 20 * GAP)),
                      Woven("forged", forged_source(f), ports)))  # fmt: skip
    for start, w in woven:
        for m, port in enumerate(w.ports):
            items.append((start + m * GAP + 0.5, w.src, rng.randrange(1024, 65536), port))
    items.sort(key=lambda t: t[0])
    syns = [(src, sport, dport) for _, src, sport, dport in items]
    marks: dict[str, int] = {}
    genuine_srcs = {w.src for _, w in woven if w.kind == "genuine"}
    for i, (src, _, _) in enumerate(syns):
        if src in genuine_srcs:
            marks.setdefault(f"{src}:first", i)
    for _, w in woven:
        if w.kind == "genuine":
            idx = [i for i, (s, _, _) in enumerate(syns) if s == w.src]
            marks[f"{w.src}:last"] = idx[len(w.ports) - 1]
    return Stream(syns, packets, junk, junk_sources, sources, [w for _, w in woven],
                  len(genuine_knock(settings, CLIENT)), marks)  # fmt: skip


def write_blob(path: Path, stream: Stream) -> None:
    """The stream as 40-byte IPv4 + TCP SYNs to the server (bench_daemon's sender reads it)."""
    rng = random.Random(2)
    with open(path, "wb") as f:
        for i, (src, sport, dport) in enumerate(stream.syns):
            f.write(syn_packet(src, SERVER, sport, dport, rng.getrandbits(32), i & 0xFFFF or 1))


# ------------------------------------------------- run inside the server namespace


class SealedWatch(Watch):
    """bench_sealed's watch: the flood's verdicts tallied by kind and reason, every other
    source's kept one by one, the SYNs of the non-flood sources counted."""

    def __init__(self) -> None:
        super().__init__(50, {"tallies": {}, "syns_from": {}, "failed": {}, "flood_failed": {}})
        self.watched: list[SealedKnocks] = []

    def recognizers_changed(self, daemon: KnockDaemon) -> None:
        for r in daemon.engine.recognizers:
            if isinstance(r, SealedKnocks) and r not in self.watched:
                self.watched.append(r)
                self.watch_failures(r)

    def watch_failures(self, rec: SealedKnocks) -> None:
        """Count the windows that looked complete and held no knock (``_failed``), by
        source outside the flood and by reason in it: what the rate-limited log does not
        say line by line."""
        failed, flood, fail = self.state["failed"], self.state["flood_failed"], rec._failed

        def watched(src: str, window: Any, reason: str) -> None:
            if is_flood(src):
                key = re.sub(r"[0-9]+", "N", reason)
                flood[key] = flood.get(key, 0) + 1
            elif src not in failed and len(failed) < MAX_DECISIONS:
                failed[src] = reason
            fail(src, window, reason)

        rec._failed = watched  # type: ignore[method-assign]

    def record(self, verdict: Verdict, now: float) -> None:
        reason = getattr(verdict, "reason", "")
        if is_flood(verdict.source) and not isinstance(verdict, Grant):
            key = f"{verdict.verdict}|{re.sub(r'[0-9]+', 'N', reason)}"
            tallies = self.state["tallies"]
            tallies[key] = tallies.get(key, 0) + 1
            return
        decisions = self.state["decisions"]
        if len(decisions) < MAX_DECISIONS:
            address = verdict.address if isinstance(verdict, Grant) else ""
            decisions.append([verdict.verdict, verdict.source, address, now, reason])

    def counted(self, packets: list[Packet]) -> None:
        counted = self.state["syns_from"]
        for p in packets:
            if not is_flood(p.src):
                counted[p.src] = counted.get(p.src, 0) + 1


def driver_main(conf: str, out: str, profile: str) -> int:
    """``aioknock daemon -conf CONF``, watched; writes what it saw to ``out`` on exit."""
    watch = SealedWatch()
    rc = watch.run(conf, profile)
    d = watch.daemon
    sealed = [r for r in d.engine.recognizers if isinstance(r, SealedKnocks)] if d else []
    watch.report(
        out,
        rc,
        tag_checks=sum(r.tag_checks for r in sealed),
        most_checks=max((r.most_checks for r in sealed), default=-1),
        recognizers=len(sealed),
        sources=sum(r.sources for r in sealed),
        replays=sum(len(r.replays) for r in sealed),
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    return rc


# ------------------------------------------------------------- host side


@dataclass
class DaemonRow(Run):
    stream: Stream
    rate: float
    nft: int = -1
    run_rc: int = -1
    run_err: str = ""

    @property
    def name(self) -> str:
        s = self.stream
        kind = f"junk {100 * s.junk / s.flood:.0f}%" if s.junk else "random"
        return f"{kind} {'max' if not self.rate else f'{self.rate:,.0f}/s'}"

    def decisions(self, kind: str | None = None) -> list[list[Any]]:
        return [d for d in self.driver.get("decisions", []) if kind is None or d[0] == kind]

    def expected(self) -> set[str]:
        """The sources whose knocks are genuine: the woven ones and `aioknock run`'s."""
        return {w.src for w in self.stream.genuine} | {CLIENT}

    def accepted(self) -> set[str]:
        """Sources for which a knock was accepted (opened for the source itself)."""
        return {d[1] for d in self.decisions("accept") if d[1] == d[2]}

    def true_opens(self) -> tuple[int, int]:
        genuine = self.expected()
        return len(self.accepted() & genuine), len(genuine)

    def noisy_opens(self) -> tuple[int, int]:
        noisy = {w.src for w in self.stream.genuine if w.strays}
        return len(self.accepted() & noisy), len(noisy)

    def relayed(self) -> list[str]:
        """Accepts from a cross source: a copy first used there (its original lost)."""
        cross = {w.src for w in self.stream.of_kind("cross")}
        return [d[1] for d in self.decisions("accept") if d[1] in cross]

    def false_opens(self) -> int:
        genuine, seen, false = self.expected(), set(), 0
        for d in self.decisions("accept"):
            if d[1] not in genuine or d[2] != d[1] or d[1] in seen:
                false += 1
            seen.add(d[1])
        by_file = sum(1 for name in self.opens if name.split("_")[1] not in genuine)
        return max(false, by_file)

    def reached(self, src: str) -> int:
        return int(self.driver.get("syns_from", {}).get(src, 0))

    def sent_from(self, src: str) -> int:
        return sum(len(w.ports) for w in self.stream.woven if w.src == src)

    def whole(self, kind: str) -> list[Woven]:
        """``kind``'s sequences whose every SYN reached the daemon (for a genuine source:
        its knock's and its replay's)."""
        reached, sent = self.reached, self.sent_from
        return [w for w in self.stream.of_kind(kind) if reached(w.src) == sent(w.src)]

    def failed(self, kind: str, reason: str) -> int:
        """Of ``kind``'s sources, those with a window that held no knock for ``reason``."""
        failed = self.driver.get("failed", {})
        return sum(1 for w in self.stream.of_kind(kind) if failed.get(w.src) == reason)

    def replays_refused(self) -> tuple[int, int, int]:
        """Replays by the same source: (refused as replayed, read whole after their
        original was accepted, sent)."""
        accepted = self.accepted()
        replays = self.stream.of_kind("replay")
        refused = {d[1] for d in self.decisions("refuse") if d[4] == REPLAYED}
        whole = [w for w in self.whole("replay") if w.of in accepted]
        return sum(w.src in refused for w in replays), len(whole), len(replays)

    def copies_refused(self) -> tuple[int, int, int, int]:
        """Copies of genuine knocks from another source: (found to hold no knock, the tag
        binding the original source; refused as replayed; read whole; sent)."""
        copies = self.stream.of_kind("cross")
        refused = {d[1] for d in self.decisions("refuse") if d[4] == REPLAYED}
        return (self.failed("cross", FORGED_REASON), sum(w.src in refused for w in copies),
                len(self.whole("cross")), len(copies))  # fmt: skip

    def losses(self) -> list[str]:
        out = []
        for src in sorted(self.expected() - self.accepted()):
            sent = self.sent_from(src) if src != CLIENT else self.stream.run_syns
            out.append(f"{src}: {self.reached(src)} of its {sent} SYNs reached the daemon")
        return out

    @property
    def kernel(self) -> dict[str, int]:
        k: dict[str, int] = self.driver.get("kernel") or {}
        return k


def write_confs(tmp: Path, key: bytes, opens: Path) -> tuple[Path, Path]:
    keyfile = tmp / "sealed.key"
    keyfile.write_text(key_line(key) + "\n")
    keyfile.chmod(0o600)
    common = {"protocol": "sealed", "server_id": SERVER_ID, "key_file": str(keyfile)}
    daemon = {**common, "runmode": "network", "interface": SERVER_IF,
              "knock_timeout": f"{KNOCK_TIMEOUT:g}", "backend": "command", "duration": "30",
              "cooldown": "0", "open": f"{TOUCH} {opens}/open_%IP%_%PORT%_%PROTO%"}  # fmt: skip
    client = {**common, "remote": SERVER, "port": str(DOOR_PORT), "quiet": "yes"}
    paths = tmp / f"daemon-{opens.name}.conf", tmp / f"client-{opens.name}.conf"
    for path, values in zip(paths, (daemon, client), strict=True):
        path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return paths


def send_and_knock(pair: Pair, tmp: Path, label: str, blob: Path, cconf: Path,
                   stream: Stream, rate: float, row: DaemonRow) -> None:  # fmt: skip
    """The stream from the client namespace (bench_daemon's raw sender); the real
    ``aioknock run`` when half of it is out."""
    sent_json = tmp / f"sender-{label}.json"
    call = (pair.client, str(blob), rate, RUN_LIMIT, json.dumps(stream.marks), str(sent_json),
            stream.cue)  # fmt: skip
    code = f"import bench_daemon as b; b.sender_main(*{call!r})"
    sender = in_ns(pair.client, tmp, [sys.executable, "-c", code])
    try:
        assert sender.stdout is not None
        sender.stdout.readline()  # "cue" (or EOF: it failed)
        argv = [sys.executable, "-m", "aioknock", "run", "-conf", str(cconf)]
        client = in_ns(pair.client, tmp, argv)
        try:
            _, serr = sender.communicate(timeout=RUN_LIMIT + 10)
            _, cerr = client.communicate(timeout=RUN_LIMIT)
            row.run_rc, row.run_err = client.returncode, cerr.strip()[:300]
        finally:
            stop(client, signal.SIGINT)
    finally:
        stop(sender, signal.SIGINT)
    row.marks = row.read_sender(sender, serr, sent_json)


def run_daemon(pair: Pair, tmp: Path, args: argparse.Namespace, rate: float,
               junk_share: float) -> DaemonRow:  # fmt: skip
    label = f"{f'junk{round(100 * junk_share)}' if junk_share else 'random'}-{int(rate)}"
    opens = tmp / f"opens-{label}"
    opens.mkdir()
    key = new_key()
    dconf, cconf = write_confs(tmp, key, opens)
    settings = ClientSettings.of(protocol="sealed", key=key_line(key), server_id=SERVER_ID,
                                 remote=SERVER, port=DOOR_PORT)  # fmt: skip
    stream = build_stream(settings, args.packets, args.sources, junk_share, args.genuine,
                          args.noisy, args.forged, args.seed)  # fmt: skip
    row = DaemonRow(label, stream=stream, rate=rate)
    blob = tmp / f"{label}.pkts"
    write_blob(blob, stream)
    with watched_daemon(pair.server, "bench_sealed", tmp, label, dconf, args.profile,
                        rf"capturing on {SERVER_IF}", row):  # fmt: skip
        link0, nft0 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
        send_and_knock(pair, tmp, label, blob, cconf, stream, rate, row)
        time.sleep(KNOCK_TIMEOUT + 1.0)  # the forged windows expire and are said
    link1, nft1 = link_stats(pair.server, SERVER_IF), nft_counter(pair.server)
    row.link = {k: link1[k] - link0[k] for k in link1}
    row.nft = nft1 - nft0
    row.opens = sorted(p.name for p in opens.iterdir())
    return row


def daemon_part(tmp: Path, args: argparse.Namespace) -> list[DaemonRow]:
    rows: list[DaemonRow] = []
    with namespaces() as pair:
        for rate in args.rates:
            rows.append(run_daemon(pair, tmp, args, rate, 0.0))
        for rate, share in args.junk:
            rows.append(run_daemon(pair, tmp, args, rate, share))
    return rows


def verify_cost() -> float:
    """Seconds per failing tag check (SealedCodec.verify), measured here and now."""
    codec = SealedCodec(new_key(), SERVER_ID)
    wire = codec.seal(SealedMessage(int(time.time()), DOOR_PORT), source=BOUND)
    wrong = wire[:-1] + bytes([wire[-1] ^ 1])
    rates = [rate_of(lambda: codec.verify(wrong, BOUND), 0.1) for _ in range(3)]
    return 1 / statistics.median(rates)


def print_daemon(rows: list[DaemonRow], per_check: float) -> None:
    print(f"\n3. Daemon (aioknock daemon, protocol = sealed, capturing on {SERVER_IF}):")
    width = max(len(r.name) for r in rows)
    head = (f"{'run':<{width}} {'SYNs sent':>9} {'send s':>6} {'sent/s':>7} {'to daemon':>9} "
            f"{'kdrop':>6} {'read':>7} {'checks':>7} {'chk/SYN':>7} {'most':>4} {'ingest/s':>8} "
            f"{'pkt/CPU-s':>9} {'CPU s':>5} {'RSS0 MB':>7} {'peak MB':>7} {'genuine':>7} "
            f"{'noisy':>5} {'false':>5}")  # fmt: skip
    print_head(head)
    for r in rows:
        d, k = r.driver, r.kernel
        packets, busy, cpu = r.busy()
        read = d.get("counts", {}).get("packets", 0)
        checks = d.get("tag_checks", 0)
        true, genuine = r.true_opens()
        noisy, noisy_all = r.noisy_opens()
        print(f"{r.name:<{width}} {r.sent:>9,} {r.send_wall:>6.2f} "
              f"{r.sent / r.send_wall if r.send_wall else 0:>7,.0f} {k.get('received', 0):>9,} "
              f"{k.get('dropped', 0):>6,} {read:>7,} {checks:>7,} "
              f"{checks / read if read else 0:>7.3f} {d.get('most_checks', -1):>4} "
              f"{packets / busy if busy else 0:>8,.0f} {packets / cpu if cpu else 0:>9,.0f} "
              f"{d.get('cpu_total', 0):>5.2f} {d.get('rss_ready_kb', 0) / 1024:>7.1f} "
              f"{d.get('hwm_kb', 0) / 1024:>7.1f} {f'{true}/{genuine}':>7} "
              f"{f'{noisy}/{noisy_all}':>5} {r.false_opens():>5}")  # fmt: skip
    print("    to daemon = SYNs the capture filter passed (the span), kdrop = of those dropped "
          "by the kernel (socket buffer full), read = SYNs the daemon judged; checks = tag "
          "checks (SealedKnocks.tag_checks), most = the most one SYN cost; ingest/s and "
          "pkt/CPU-s over the busy bursts (batches < 10 ms apart, >= 1,000 SYNs); CPU s = the "
          "daemon's whole run (start-up included); genuine = woven + aioknock run accepted, "
          "noisy = of the woven, those with stray SYNs")  # fmt: skip
    for r in rows:
        checks, (_, busy, cpu) = r.driver.get("tag_checks", 0), r.busy()
        if cpu:
            print(f"    {r.name}: tag checks ~{checks:,} x {1e6 * per_check:.1f} us "
                  f"(SealedCodec.verify, measured here) = ~{checks * per_check:.2f} CPU-s of the "
                  f"{cpu:.2f} CPU-s busy ({100 * checks * per_check / cpu:.0f}%)")  # fmt: skip


def describe(s: Stream) -> str:
    g = s.genuine
    strays = ", ".join(f"{w.src} +{w.strays}" for w in g if w.strays)
    junk = (f", {s.junk:,} of them label-ordered junk from {s.junk_sources} sources "
            f"({JUNK_BURST} SYNs each)" if s.junk else "")  # fmt: skip
    return (f"{s.flood:,} SYNs to random span ports from {s.sources:,} sources 198.19.x.y{junk}; "
            f"+ {len(g)} genuine knocks (198.18.1.j, {sum(len(w.ports) for w in g)} SYNs; with "
            f"strays: {strays or 'none'}), each replayed by its source and by 198.18.3.j, "
            f"{len(s.of_kind('forged'))} forged (198.18.2.f): {len(s.syns):,} SYNs; aioknock "
            f"run from {CLIENT} at SYN {s.cue:,}")  # fmt: skip


def daemon_details(r: DaemonRow) -> None:
    d = r.driver
    r.print_title(describe(r.stream))
    k = r.kernel
    print(f"  server veth: rx {r.link.get('rx', 0):,} packets, rx dropped "
          f"{r.link.get('rx_dropped', 0)}; nftables input drop counter {r.nft:,}; capture "
          f"socket: {k.get('received', 0):,} passed the filter, {k.get('dropped', 0):,} "
          "dropped")  # fmt: skip
    print(f"  daemon: {r.stopped_line}; CPU {d.get('cpu_total', 0):.2f} s; RSS "
          f"{d.get('rss_ready_kb', 0) / 1024:.1f} MB when ready, peak "
          f"{d.get('hwm_kb', 0) / 1024:.1f} MB; sources in progress at exit "
          f"{d.get('sources', -1):,}; replay memory {d.get('replays', -1)} nonces")  # fmt: skip
    bursts = d.get("bursts", [])
    print(f"  busy bursts (batches < {BURST_GAP * 1000:.0f} ms apart): "
          f"{d.get('burst_count', 0)}; of >= 1,000 SYNs: " + ("; ".join(
              f"{b['packets']:,} in {b['end'] - b['start']:.3f} s ({b['batches']:,} batches, "
              f"{b['cpu1'] - b['cpu0']:.2f} CPU-s) from +{b['epoch'] - r.send_start:.2f} s"
              for b in bursts[:6]) + ("; ..." if len(bursts) > 6 else "") or "none"))  # fmt: skip
    for key, n in sorted(d.get("tallies", {}).items(), key=lambda kv: -kv[1]):
        v, reason = key.split("|", 1)
        print(f"    {n:>6,} x {v} flood: {reason}")
    kinds = {w.src: w.kind for w in r.stream.woven if w.kind != "replay"} | {CLIENT: "run"}
    flood_failed = sorted(d.get("flood_failed", {}).items(), key=lambda kv: -kv[1])
    for key, n in flood_failed:
        print(f"    {n:>6,} x a window of the flood held no knock: {key}")
    failed: dict[str, int] = {}
    for src, reason in d.get("failed", {}).items():
        key = f"{kinds.get(src, 'other')}: {reason}"
        failed[key] = failed.get(key, 0) + 1
    for key, n in sorted(failed.items()):
        print(f"    {n:>6,} x sources whose window held no knock, {key}")
    why: dict[str, int] = {}
    for x in r.decisions():
        if x[0] == "accept" and kinds.get(x[1]) in ("genuine", "run"):
            continue
        key = f"{x[0]} {kinds.get(x[1], 'other')}: {x[4]}"
        why[key] = why.get(key, 0) + 1
    for key, n in sorted(why.items()):
        print(f"    {n:>6,} x {key}")
    accepted = {x[1]: x[3] for x in r.decisions("accept")}
    for w in r.stream.genuine:
        last = r.marks.get(f"{w.src}:last")
        when = (f", {accepted[w.src] - last:.3f} s after its last SYN was sent"
                if w.src in accepted and last else "")  # fmt: skip
        noise = f" (+{w.strays} stray)" if w.strays else ""
        print(f"    woven {w.src}{noise}: {'accepted' if w.src in accepted else 'NOT accepted'}"
              f"{when}; {r.reached(w.src)}/{r.sent_from(w.src)} of its SYNs (knock and "
              "replay) reached the daemon")  # fmt: skip
    print(f"    aioknock run {CLIENT}: exit {r.run_rc}"
          + (f" ({r.run_err})" if r.run_err else "")
          + f"; {'accepted' if CLIENT in accepted else 'NOT accepted'}; "
          f"{r.reached(CLIENT)} of its SYNs reached the daemon")  # fmt: skip
    print(f"  door files: {len(r.opens)} ({', '.join(r.opens[:12])})")
    for loss in r.losses():
        print(f"  not accepted: {loss}")
    for src in r.relayed():
        print(f"  relayed: accepted from {src}, a copy of another source's knock")
    r.print_profile()


def daemon_checks(rows: list[DaemonRow]) -> list[tuple[bool | None, str]]:
    out: list[tuple[bool | None, str]] = []
    false = [r.false_opens() for r in rows]
    relayed = [f"{r.name} {len(r.relayed())}" for r in rows if r.relayed()]
    note = (f" (of them relayed, a copy from another source first used where the original "
            f"lost SYNs in the kernel: {', '.join(relayed)})" if relayed else "")  # fmt: skip
    out.append((sum(false) == 0, "false opens == 0: " + ", ".join(
        f"{r.name} {f}" for r, f in zip(rows, false, strict=True)) + note))  # fmt: skip
    wrong = [(r, [w.src for w in r.whole("genuine") if w.src not in r.accepted()]) for r in rows]
    out.append((not any(w for _, w in wrong), "every woven genuine knock whose SYNs all reached "
                "the daemon was accepted: " + ", ".join(
                    f"{r.name} {len(r.whole('genuine')) - len(w)}/{len(r.whole('genuine'))}"
                    for r, w in wrong)))  # fmt: skip
    for r in rows:
        true, genuine = r.true_opens()
        noisy, noisy_all = r.noisy_opens()
        dropped = r.kernel.get("dropped", 0)
        note = f"; {dropped:,} SYNs dropped in the kernel" if dropped else ""
        why = f" ({'; '.join(r.losses())})" if true < genuine else ""
        out.append((true == genuine, f"{r.name}: genuine knocks accepted {true}/{genuine}, "
                                     f"with strays {noisy}/{noisy_all}{note}{why}"))  # fmt: skip
    for r in rows:
        refused, due, sent = r.replays_refused()
        text = (f"{r.name}: replays from the same source refused as replayed {refused} (of "
                f"{due} read whole after their original, {sent} sent)")  # fmt: skip
        out.append((refused >= due, text))
    for r in rows:
        by_tag, replayed, whole, sent = r.copies_refused()
        text = (f"{r.name}: copies from another source opened nothing: the tag did not verify "
                f"for {by_tag}, refused as replayed {replayed} (of {whole} read whole, {sent} "
                f"sent)")  # fmt: skip
        out.append((by_tag + replayed >= whole and not r.relayed(), text))
    for r in rows:
        got, whole = r.failed("forged", FORGED_REASON), len(r.whole("forged"))
        out.append((got >= whole, f"{r.name}: forged knocks found to hold no knock (tag did not "
                                  f"verify) {got} (of {whole} read whole, "
                                  f"{len(r.stream.of_kind('forged'))} sent)"))  # fmt: skip
    most = [r.driver.get("most_checks", -1) for r in rows]
    out.append((all(0 <= m <= MAX_TAG_CHECKS for m in most),
                f"most tag checks one SYN cost in the daemon <= {MAX_TAG_CHECKS}: "
                + ", ".join(f"{r.name} {m}" for r, m in zip(rows, most, strict=True))))  # fmt: skip
    return out


# ======================================================================= main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="codec,recognizer,daemon",
                        help="codec, recognizer, daemon (comma-separated)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=5, help="codec: runs per figure")
    parser.add_argument("--seconds", type=float, default=0.2, help="codec: seconds per run")
    parser.add_argument("--packets", type=int, default=100_000,
                        help="daemon: flood SYNs into the span")  # fmt: skip
    parser.add_argument("--sources", type=int, default=10_000, help="daemon: flood sources")
    parser.add_argument("--genuine", type=int, default=10, help="daemon: genuine knocks woven in")
    parser.add_argument("--noisy", type=int, default=4,
                        help="daemon: genuine knocks with 1-2 stray SYNs")  # fmt: skip
    parser.add_argument("--forged", type=int, default=50, help="daemon: random 16-SYN knocks")
    parser.add_argument("--rates", default="0,20000",
                        help="daemon: random flood rates, SYN/s (0: at once)")  # fmt: skip
    parser.add_argument("--junk", default="20000:0.1,10000:0.5",
                        help="daemon: RATE:SHARE rows, flood with label-ordered junk")  # fmt: skip
    daemon_run_options(parser)
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    try:
        args.junk = [(float(rate), float(share)) for rate, _, share in
                     (x.partition(":") for x in args.junk.split(",") if x.strip())]  # fmt: skip
    except ValueError:
        parser.error("junk: RATE:SHARE,...")
    if not set(args.parts) <= {"codec", "recognizer", "daemon"}:
        parser.error("parts: codec, recognizer, daemon")
    if not (1 <= args.runs <= 20 and 0.05 <= args.seconds <= 5):
        parser.error("runs 1-20, seconds 0.05-5")
    if not 1 <= args.sources <= min(MAX_SOURCES, args.packets) <= args.packets <= MAX_PACKETS:
        parser.error(f"1 <= sources <= {MAX_SOURCES:,}, sources <= packets <= {MAX_PACKETS:,}")
    if not (1 <= args.genuine <= MAX_WOVEN and 0 <= args.noisy <= args.genuine
            and 0 <= args.forged <= MAX_WOVEN):  # fmt: skip
        parser.error(f"genuine 1-{MAX_WOVEN}, noisy 0-genuine, forged 0-{MAX_WOVEN}")
    for _, share in args.junk:
        if not 0 < share <= 0.5 or not 1 <= round(share * args.packets / JUNK_BURST) < args.sources:
            parser.error("junk share: more than 0, at most 0.5, 1 to sources - 1 junk sources")
    for rate in args.rates + [rate for rate, _ in args.junk]:
        if rate < 0 or (rate and args.packets / rate > RUN_LIMIT):
            parser.error(f"rates: 0, or fast enough to send the flood within {RUN_LIMIT:.0f} s")
    if "daemon" in args.parts:
        need_root(parser, ("ip", "nft", "sysctl"))
    return args


def main() -> int:
    args = parse_args()
    interrupt_on_signals()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"aioknock sealed knocks (format v1, HMAC-SHA256 tag, ChaCha20); {os.cpu_count()} CPUs, "
          f"kernel {os.uname().release}, Python {sys.version.split()[0]}; load average "
          f"{load}\n", flush=True)  # fmt: skip
    t0 = time.monotonic()
    checks: list[tuple[bool | None, str]] = []
    if "codec" in args.parts:
        print_codec(codec_part(args.runs, args.seconds), args.runs)
    if "recognizer" in args.parts:
        rows = recognizer_part(args.seed)
        print_recognizer(rows, verify_cost())
        most = max(r.most for r in rows)
        checks.append((most <= MAX_TAG_CHECKS, f"recognizer: most tag checks one SYN cost "
                                               f"{most} <= {MAX_TAG_CHECKS}"))  # fmt: skip
        genuine = [r for r in rows if r.what.startswith("genuine")]
        checks.append((all(r.grants == r.syns // (16 + 2 * ("stray" in r.what)) for r in genuine),
                       "recognizer: every genuine knock granted: " + ", ".join(
                           f"{r.grants}" for r in genuine)))  # fmt: skip
        junk = [r for r in rows if not r.what.startswith("genuine")]
        checks.append((all(r.grants == 0 for r in junk), "recognizer: no grant for any other "
                       "stream: " + ", ".join(f"{r.grants}" for r in junk)))  # fmt: skip
    if "daemon" in args.parts:
        with scratch("aksealed-", args.keep) as tmp:
            drows = daemon_part(tmp, args)
        print_daemon(drows, verify_cost())
        for r in drows:
            daemon_details(r)
        checks += daemon_checks(drows)
    print_checks(checks, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
