"""fwknop single-packet authorization (SPA): the codec, a fleet against fwknop, the daemon.

    sudo .venv/bin/python benchmarks/bench_spa.py [--parts codec,fleet,daemon] [--hosts 10000]
        [--datagrams 100000] [--sources 10000] [--genuine 5] [--rates 0,5000,10000]
        [--runs 5] [--seconds 0.3] [--profile] [--keep]

Root and Linux only. Every packet stays on loopback or inside network namespaces the
script creates and deletes again on exit, Ctrl-C or error; every sending loop is bounded
in count and in time (RUN_LIMIT).

1. codec: SPA packets built per second by ``aioknock.codec.spa.build`` (fresh random
   value and salt each, one access message), with an HMAC-SHA256 and an HMAC-SHA512 key,
   the median of ``--runs`` runs of ``--seconds`` each; then what the daemon spends on one
   datagram: the shape check, the replay digest, a failing HMAC check (a junk datagram),
   a genuine packet's HMAC, decryption and decoding, the frame parser, the recognizer and
   the engine with the log line of a refusal (in-process); and the HMAC primitive alone
   (pycryptodome's, which the codec uses, and the standard library's) for reference.
2. fleet: ``--hosts`` distinct addresses 127.1.x.y in a namespace of its own (``lo``
   up; nothing listens, nftables drops the datagrams on input so no ICMP error comes
   back). ``aioknock run -protocol spa --hosts FILE -quiet`` (with ``-allow_ip`` an
   address, as fwknop's ``-a``, and with ``auto``) against the real fwknop client, one
   process per host in ``xargs -P 256``. An nftables rule on the output hook counts the
   datagrams that actually left (and their bytes) and adds each destination to a set:
   packets/s = datagrams counted / wall time of the whole command (start-up included;
   the start-up alone, one host, is shown too).
3. daemon: two namespaces joined by a veth pair (``bench_daemon.namespaces``: server
   198.18.0.1 on veth-s, client 198.18.0.2 on veth-c). The real ``aioknock daemon`` (CLI,
   uvloop) captures on veth-s with ``access_file`` (one ``SOURCE ANY`` stanza, so every
   SPA-shaped datagram costs one HMAC check), ``encoded = no``, ``backend = command`` with
   ``open = touch DIR/open_%IP%_%PORT%_%PROTO%``. A raw socket (IP_HDRINCL) in the client
   namespace sends ``--datagrams`` UDP datagrams to port 62201 from ``--sources`` spoofed
   addresses 198.19.x.y (each at least once): 85% random base64 text of the lengths
   real SPA packets have, 10% random bytes, 5% real SPA packets under other keys; woven
   in, ``--genuine`` packets built with the library under the server's keys for their
   spoofed sources 198.18.1.j (allow = source), each replayed later by the same source
   and by another (198.18.3.j); when half is out, ``aioknock run -protocol spa -allow_ip
   source`` and the real ``fwknop -a 198.18.0.3`` send one packet each from 198.18.0.2.
   Once per ``--rates`` rate (0: as fast as the sender goes). The daemon's driver (a
   ``_flood.Watch``, as bench_daemon's) times the batches it hands to its engine (bursts)
   and reports verdicts, the capture socket's drops, CPU time and VmRSS/VmHWM. False
   opens: any accept or door file but the genuine packets' (a replay counts); genuine:
   every one must be accepted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import random
import resource
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from _flood import BURST_GAP, NET, RUN_LIMIT, Run, Watch, env_for, in_ns, send_paced, watched_daemon
from _procs import (
    daemon_run_options,
    interrupt_on_signals,
    need_root,
    own_namespace,
    print_checks,
    print_head,
    run,
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
    _checksum,
    cross_source,
    flood_source,
    genuine_source,
    is_flood,
    link_stats,
    namespaces,
)
from Crypto.Hash import HMAC, SHA256

from aioknock.codec import spa
from aioknock.daemon.recognizer import Grant
from aioknock.errors import KnockError

if TYPE_CHECKING:
    from aioknock.daemon.packet import Packet
    from aioknock.daemon.recognizer import Verdict

SPA_PORT = 62201  # fwknop's default SPA_SERVER_PORT
DOOR = ("tcp", 22)
FWKNOP_ALLOW = "198.18.0.3"  # what the real fwknop client asks the daemon to open for
MAX_HOSTS = 60_000  # 127.1.0.1 - 127.1.239.250
MAX_DATAGRAMS = 1_000_000
MAX_SOURCES = 60_000  # 198.19.0.1 - 198.19.239.250
MAX_GENUINE = 100
XARGS_P = 256
SHARES = (("b64", 0.85), ("bytes", 0.10), ("forged", 0.05))  # of the random flood
FORGED_KEYS = 8  # other key pairs the forged packets are built with
MAX_DECISIONS = 2_000  # decisions of non-flood sources the driver keeps
KEYGEN = (32, 64)  # bytes of the key and the HMAC key, as fwknop --key-gen makes them


def b64key(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fresh_keys(hmac_digest: str = "sha256") -> spa.SpaKeys:
    return spa.SpaKeys(secrets.token_bytes(KEYGEN[0]), secrets.token_bytes(KEYGEN[1]),
                       hmac_digest)  # fmt: skip


# ======================================================================= 1. codec


def codec_part(runs: int, seconds: float) -> list[CodecRow]:
    now = int(time.time())
    msg = spa.SpaMessage(allow=CLIENT, access=(DOOR,), timestamp=now)
    rows: list[CodecRow] = []

    def measure(what: str, fn: Callable[[], object]) -> None:
        fn()  # warm
        rows.append(CodecRow(what, [rate_of(fn, seconds, 50) for _ in range(runs)]))

    for digest in ("sha256", "sha512"):
        keys = fresh_keys(digest)
        size = len(spa.build(msg, keys))
        measure(f"spa.build, HMAC-{digest.upper()} ({size} bytes)", partial(spa.build, msg, keys))
    keys, wrong = fresh_keys(), fresh_keys()
    packet = spa.build(msg, keys)
    text = spa.check_shape(packet)

    def junk() -> None:
        with contextlib.suppress(KnockError):
            spa.authenticate(text, wrong)  # raises: the HMAC does not verify

    measure("daemon, any datagram: check_shape", lambda: spa.check_shape(packet))
    measure("daemon, SPA-shaped: replay_digest", lambda: spa.replay_digest(packet))
    measure("daemon, wrong HMAC: check_shape + authenticate", lambda: junk())
    measure("daemon, genuine: unseal + decode_message",
            lambda: spa.decode_message(spa.unseal(packet, keys)))  # fmt: skip
    daemon_path(measure, keys, packet)
    body, key = text.encode(), keys.hmac_key
    measure(f"HMAC-SHA256 of {len(body)} bytes: pycryptodome HMAC.new",
            lambda: HMAC.new(key, body, digestmod=SHA256).digest())  # fmt: skip
    measure(f"HMAC-SHA256 of {len(body)} bytes: stdlib hmac.digest",
            lambda: hmac.digest(key, body, "sha256"))  # fmt: skip
    return rows


def daemon_path(measure: Callable[[str, Callable[[], object]], None], keys: spa.SpaKeys,
                packet: bytes) -> None:  # fmt: skip
    """One junk datagram through the daemon's layers, in-process: the frame parser, the
    recognizer, and the engine with the log line it writes for each refusal."""
    from aioknock.daemon.engine import Engine, Log, Policy
    from aioknock.daemon.frames import decode_frame
    from aioknock.daemon.fwknopd import ANY, SpaPackets, Stanza
    from aioknock.daemon.packet import Packet

    rng = random.Random(2)
    now = time.time()
    frame = udp_packet("198.19.0.1", SERVER, 40000, SPA_PORT, packet, 1)
    measure(f"daemon path: decode_frame, {len(frame)}-byte UDP (checksum verified)",
            lambda: decode_frame(frame, now, link="ip"))  # fmt: skip
    stanza = Stanza(sources=ANY, keys=keys, open_ports=(DOOR,), where="/etc/access.conf:1")
    junk = [Packet(now, flood_source(i), SPA_PORT, "udp", 40000, SERVER,
                   random_b64(rng, len(packet))) for i in range(1000)]  # fmt: skip
    recognizer = SpaPackets([stanza], port=SPA_PORT, max_age=120)
    it = iter(range(1 << 62))
    measure("daemon path: SpaPackets.receive, random base64",
            lambda: recognizer.receive(junk[next(it) % len(junk)]))  # fmt: skip
    engine = Engine(Policy(30.0, 0.0), [recognizer])
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    logger = logging.getLogger("akspa.bench")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("aioknock: %(levelname)s: %(message)s"))
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)

    def judged() -> None:
        engine.receive(junk[next(it) % len(junk)])
        for action in engine.actions():
            if isinstance(action, Log):
                logger.log(action.level, "%s", action.message)

    try:
        measure("daemon path: Engine.receive + its log line (to /dev/null)", judged)
    finally:
        logger.handlers.clear()
        sink.close()


def print_codec(rows: list[CodecRow], runs: int) -> None:
    width = max(len(r.what) for r in rows)
    head = f"{'operation':<{width}} {'per s':>10} {'us each':>8} {'range per s':>21}"
    print(f"1. Codec (median of {runs} runs; one core):")
    print_head(head)
    for r in rows:
        span = f"{min(r.rates):,.0f}-{max(r.rates):,.0f}"
        print(f"{r.what:<{width}} {r.median:>10,.0f} {1e6 / r.median:>8.1f} {span:>21}")


# ======================================================================= 2. fleet


def fleet_host(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


FLEET_RULES = """table inet akspa {{}}
delete table inet akspa
table inet akspa {{
  set dsts {{
    type ipv4_addr; size 65536; flags dynamic;
  }}
  chain out {{
    type filter hook output priority 0; policy accept;
    udp dport {port} add @dsts {{ ip daddr }} counter
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    udp dport {port} counter drop
  }}
}}
"""


def fleet_counts(ns: str) -> tuple[int, int, int, int]:
    """(datagrams out, their bytes, distinct destinations, datagrams in) since the reset."""
    data = json.loads(run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet",
                           "akspa"]))["nftables"]  # fmt: skip
    counters: dict[str, tuple[int, int]] = {}
    distinct = 0
    for item in data:
        if "set" in item:
            distinct = len(item["set"].get("elem", []))
        if "rule" in item:
            for expr in item["rule"]["expr"]:
                if "counter" in expr:
                    c = expr["counter"]
                    counters[item["rule"]["chain"]] = (c["packets"], c["bytes"])
    out, out_bytes = counters.get("out", (0, 0))
    return out, out_bytes, distinct, counters.get("in", (0, 0))[0]


@dataclass
class FleetRow:
    sender: str
    hosts: int
    wall: float
    cpu: float
    out: int
    out_bytes: int
    distinct: int
    arrived: int
    rc: int
    errors: str
    startup: float = 0.0  # wall time for one host

    @property
    def rate(self) -> float:
        return self.out / self.wall if self.wall else 0.0

    @property
    def payload(self) -> float:
        return self.out_bytes / self.out - 28 if self.out else 0.0  # IPv4 + UDP headers


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int, str]:
    """Wall and CPU seconds (children), exit code and stderr of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_LIMIT, env=env,
                         cwd=cwd)  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, res.returncode, res.stderr.strip()


def fleet_part(tmp: Path, hosts: int) -> list[FleetRow]:
    keys = fresh_keys()
    kb, hb = b64key(keys.key), b64key(keys.hmac_key)
    listing, one = tmp / "fleet-hosts.txt", tmp / "fleet-one.txt"
    listing.write_text("".join(f"{fleet_host(i)}\n" for i in range(hosts)))
    one.write_text(f"{fleet_host(0)}\n")
    rc_file = tmp / "fwknoprc"  # empty: fwknop reads no ~/.fwknoprc and writes none
    rc_file.touch(mode=0o600)
    env = env_for(tmp)

    def aioknock(allow: str, hosts_file: Path) -> list[str]:
        return [sys.executable, "-m", "aioknock", "run", "-protocol", "spa",
                "-key_base64", kb, "-hmac_key_base64", hb, "-access", "tcp/22",
                "-allow_ip", allow, "-spa_server_port", str(SPA_PORT),
                "--hosts", str(hosts_file), "-quiet"]  # fmt: skip

    fwknop = ["fwknop", "-A", "tcp/22", "-a", "127.0.0.1", "-p", str(SPA_PORT),
              "--key-base64-rijndael", kb, "--key-base64-hmac", hb, "--rc-file", str(rc_file),
              "--no-save-args", "-D"]  # fmt: skip
    senders: list[tuple[str, Callable[[Path], list[str]]]] = [
        ("aioknock -allow_ip 127.0.0.1", lambda f: aioknock("127.0.0.1", f)),
        ("aioknock -allow_ip auto", lambda f: aioknock("auto", f)),
        (f"fwknop, xargs -P {XARGS_P}",
         lambda f: ["xargs", "-P", str(XARGS_P), "-L", "1", "-a", str(f), *fwknop]),
    ]  # fmt: skip
    rows: list[FleetRow] = []
    with own_namespace(f"akspa-{os.getpid()}-f") as ns:  # lo up: 127.0.0.0/8 is the fleet
        rules = FLEET_RULES.format(port=SPA_PORT)
        for name, command in senders:
            inside = ["ip", "netns", "exec", ns]
            run([*inside, "nft", "-f", "-"], input=rules)
            startup = timed([*inside, *command(one)], env, tmp)[0]  # also warms the caches
            run([*inside, "nft", "-f", "-"], input=rules)  # counters and set from zero
            wall, cpu, rc, err = timed([*inside, *command(listing)], env, tmp)
            out, out_bytes, distinct, arrived = fleet_counts(ns)
            rows.append(FleetRow(name, hosts, wall, cpu, out, out_bytes, distinct, arrived, rc,
                                 err[:300], startup))  # fmt: skip
    return rows


def print_fleet(rows: list[FleetRow]) -> None:
    print(f"\n2. Fleet: one SPA datagram to each of {rows[0].hosts:,} hosts (127.1.x.y, in a "
          "namespace):")  # fmt: skip
    width = max(len(r.sender) for r in rows)
    head = (f"{'sender':<{width}} {'hosts':>6} {'wall s':>7} {'cpu s':>6} {'left':>6} "
            f"{'distinct':>8} {'arrived':>7} {'bytes':>5} {'packets/s':>9} {'1 host s':>8} "
            f"{'exit':>4}")  # fmt: skip
    print_head(head)
    for r in rows:
        print(f"{r.sender:<{width}} {r.hosts:>6,} {r.wall:>7.3f} {r.cpu:>6.2f} {r.out:>6,} "
              f"{r.distinct:>8,} {r.arrived:>7,} {r.payload:>5.0f} {r.rate:>9,.0f} "
              f"{r.startup:>8.3f} {r.rc:>4}")  # fmt: skip
        if r.errors:
            print(f"    stderr: {r.errors}")
    print("    left = datagrams counted on the output hook, distinct = their destinations, "
          "bytes = mean UDP payload; packets/s = left / wall")  # fmt: skip


def fleet_checks(rows: list[FleetRow]) -> list[tuple[bool | None, str]]:
    out: list[tuple[bool | None, str]] = []
    for r in rows:
        ok = r.rc == 0 and r.out == r.distinct == r.hosts
        out.append((ok, f"{r.sender}: {r.out:,} datagrams left, to {r.distinct:,} distinct "
                        f"hosts of {r.hosts:,}, exit {r.rc}"))  # fmt: skip
    ours = next((r for r in rows if r.sender.startswith("aioknock -allow_ip 1")), None)
    theirs = next((r for r in rows if r.sender.startswith("fwknop")), None)
    if ours and theirs and theirs.rate:
        out.append((None, f"packets/s ratio aioknock / fwknop: {ours.rate / theirs.rate:.1f}x "
                          f"({ours.rate:,.0f} vs {theirs.rate:,.0f}); CPU per datagram "
                          f"{1e6 * ours.cpu / max(ours.out, 1):.0f} vs "
                          f"{1e6 * theirs.cpu / max(theirs.out, 1):.0f} us"))  # fmt: skip
    return out


# ====================================================================== 3. daemon


@dataclass
class Datagram:
    src: str
    sport: int
    payload: bytes
    kind: str  # b64, bytes, forged, genuine, replay, cross


@dataclass
class Stream:
    items: list[Datagram]
    genuine: list[str]  # the woven genuine packets' sources
    marks: dict[int, str] = field(default_factory=dict)  # index -> genuine source

    def count(self, kind: str) -> int:
        return sum(1 for d in self.items if d.kind == kind)

    @property
    def cue(self) -> int:
        return len(self.items) // 2


def forged_packet(rng: random.Random, keys: list[spa.SpaKeys], now: int) -> bytes:
    """A real SPA packet under keys that are not the server's: realistic in every field."""
    access = tuple((rng.choice(("tcp", "udp")), rng.randrange(1, 65536))
                   for _ in range(rng.choice((1, 1, 1, 2, 3))))  # fmt: skip
    user = rng.choice(("root", "admin", "".join(rng.choices("abcdefghijklmnop", k=8))))
    allow = rng.choice(("0.0.0.0", f"198.{rng.randrange(256)}.{rng.randrange(256)}.1"))
    msg = spa.SpaMessage(allow=allow, access=access, timestamp=now, username=user,
                         client_timeout=rng.choice((0, 0, 60)),
                         digest_type=rng.choice(("sha256", "sha512")))  # fmt: skip
    return spa.build(msg, rng.choice(keys))


def random_b64(rng: random.Random, length: int) -> bytes:
    """Random base64 text (no ``=``) of ``length`` characters, not fwknop's prefix."""
    while True:
        text = base64.b64encode(rng.randbytes(3 * -(-length // 4)))[:length]
        if not text.startswith(spa.PREFIX.encode()):
            return text


def genuine_packet(src: str, keys: spa.SpaKeys, now: int) -> bytes:
    msg = spa.SpaMessage(allow=src, access=(DOOR,), timestamp=now, username="root")
    return spa.build(msg, keys)


def build_stream(count: int, sources: int, genuine: int, keys: spa.SpaKeys, seed: int) -> Stream:
    rng = random.Random(seed)
    now = int(time.time())
    other = [fresh_keys(rng.choice(("sha256", "sha512"))) for _ in range(FORGED_KEYS)]
    order = list(range(sources)) + [rng.randrange(sources) for _ in range(count - sources)]
    rng.shuffle(order)
    kinds = rng.choices([k for k, _ in SHARES], [w for _, w in SHARES], k=count)
    forged = [forged_packet(rng, other, now) for _ in range(kinds.count("forged"))]
    lengths = [len(p) for p in forged] or [204]  # the random text has real packets' sizes
    items: list[Datagram] = []
    for s, kind in zip(order, kinds, strict=True):
        length = rng.choice(lengths)
        if kind == "forged":
            payload = forged.pop()
        elif kind == "b64":
            payload = random_b64(rng, length)
        else:
            payload = rng.randbytes(length)
        items.append(Datagram(flood_source(s), rng.randrange(1024, 65536), payload, kind))
    # Woven in: genuine packets spread over the stream, each replayed later by the same
    # source and by another.
    woven: list[tuple[float, Datagram]] = []
    for j in range(genuine):
        src = genuine_source(j)
        packet = genuine_packet(src, keys, now)
        at = (j + 0.3) * count / genuine
        woven += [(at, Datagram(src, rng.randrange(1024, 65536), packet, "genuine")),
                  (at + count / (6 * genuine), Datagram(src, rng.randrange(1024, 65536),
                                                        packet, "replay")),
                  (at + count / (3 * genuine), Datagram(cross_source(j),
                                                        rng.randrange(1024, 65536), packet,
                                                        "cross"))]  # fmt: skip
    placed = sorted([(float(i), d) for i, d in enumerate(items)] + woven, key=lambda t: t[0])
    stream = Stream([d for _, d in placed], [genuine_source(j) for j in range(genuine)])
    stream.marks = {i: d.src for i, d in enumerate(stream.items) if d.kind == "genuine"}
    return stream


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int) -> bytes:
    """An IPv4 header and a UDP datagram with valid checksums (IP_HDRINCL)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    length = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, 0x4000, 64, 17, 0, s, d)
    ip = ip[:10] + struct.pack("H", _checksum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = _checksum(s + d + struct.pack("!BBH", 0, 17, length) + udp) or 0xFFFF
    return ip + udp[:6] + struct.pack("H", csum) + udp[8:]


def write_blob(path: Path, stream: Stream) -> None:
    """The stream as length-prefixed IPv4 packets to the server, for the sender."""
    with open(path, "wb") as f:
        for i, d in enumerate(stream.items):
            pkt = udp_packet(d.src, SERVER, d.sport, SPA_PORT, d.payload, i & 0xFFFF or 1)
            f.write(struct.pack("!H", len(pkt)) + pkt)


def read_blob(data: bytes) -> list[bytes]:
    """The packets of a blob, refused unless each is an IPv4 UDP datagram to SERVER."""
    dst = socket.inet_aton(SERVER)
    if ipaddress.ip_address(dst) not in NET:
        raise SystemExit("packets must go to 198.18.0.0/15")
    packets, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("!H", data, at)
        pkt = data[at + 2 : at + 2 + size]
        at += 2 + size
        if len(pkt) != size or size < 28 or pkt[9] != 17 or pkt[16:20] != dst:
            raise SystemExit("bad packet file")
        packets.append(pkt)
        if len(packets) > MAX_DATAGRAMS + 3 * MAX_GENUINE:
            raise SystemExit("too many packets")
    return packets


# ------------------------------------------------- run inside the client namespace


def sender_main(netns: str, blob: str, rate: float, limit: float, out: str, cue: int,
                marks: list[int]) -> None:  # fmt: skip
    """Send the blob's datagrams to SERVER, paced at ``rate`` (0: as fast as possible),
    for ``limit`` seconds at most; prints "cue" once datagram ``cue`` is due."""
    packets = read_blob(Path(blob).read_bytes())
    if send_paced(netns, packets, SERVER, rate, limit, cue, {i: str(i) for i in marks}, out):
        print("cue", flush=True)


# ------------------------------------------------- run inside the server namespace


class SpaWatch(Watch):
    """bench_spa's watch: every verdict tallied by kind, reason and whether from the flood;
    the others kept one by one, and their sources' datagrams counted."""

    def __init__(self) -> None:
        super().__init__(100, {"tallies": {}, "from": {}})

    def record(self, verdict: Verdict, now: float) -> None:
        tallies, decisions = self.state["tallies"], self.state["decisions"]
        flood = is_flood(verdict.source)
        reason = getattr(verdict, "reason", "")
        key = f"{verdict.verdict}|{'flood' if flood else 'watched'}|{reason}"
        tallies[key] = tallies.get(key, 0) + 1
        if not flood and len(decisions) < MAX_DECISIONS:
            address = verdict.address if isinstance(verdict, Grant) else ""
            decisions.append([verdict.verdict, verdict.source, address, now, reason])

    def counted(self, packets: list[Packet]) -> None:
        counted = self.state["from"]  # datagrams of watched sources
        for p in packets:
            if p.src.startswith("198.18."):
                counted[p.src] = counted.get(p.src, 0) + 1


def driver_main(conf: str, out: str, profile: str) -> int:
    """``aioknock daemon -conf CONF``, watched; writes what it saw to ``out`` on exit."""
    watch = SpaWatch()
    rc = watch.run(conf, profile)
    d = watch.daemon
    watch.report(out, rc, replays=len(d.engine.replays) if d else -1)
    return rc


# ------------------------------------------------------------- host side


SERVER_RULES = f"""table inet akspa {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {SPA_PORT} counter drop
  }}
}}
"""


@dataclass
class DaemonRow(Run):
    rate: float
    stream: Stream
    clients: dict[str, tuple[int, str]] = field(default_factory=dict)  # name: (rc, stderr)
    access: str = ""

    # The genuine packets: (source, address opened) and who sent them.
    def expected(self) -> dict[tuple[str, str], str]:
        out = {(src, src): "woven" for src in self.stream.genuine}
        out[(CLIENT, CLIENT)] = "aioknock run"
        out[(CLIENT, FWKNOP_ALLOW)] = "fwknop"
        return out

    def accepted(self) -> set[tuple[str, str]]:
        return {(d[1], d[2]) for d in self.accepts()}

    def reached(self, src: str) -> int:
        """Datagrams from ``src`` that the daemon read (the driver counts them)."""
        return int(self.driver.get("from", {}).get(src, 0))

    def relayed(self) -> set[tuple[str, str]]:
        """Accepts of a genuine packet from the other source that replayed it, where the
        packet never came from its own source (lost in the kernel): its first use, which
        fwknopd accepts as well (no REQUIRE_SOURCE_ADDRESS), so not a false open."""
        out = set()
        for j, src in enumerate(self.stream.genuine):
            if not self.reached(src) and (cross_source(j), src) in self.accepted():
                out.add((cross_source(j), src))
        return out

    def true_opens(self) -> tuple[int, int]:
        expected = self.expected()
        return len(self.accepted() & set(expected)), len(expected)

    def false_opens(self) -> int:
        expected, relayed = self.expected(), self.relayed()
        seen: set[tuple[str, str]] = set()
        false = 0
        for d in self.accepts():
            pair = (d[1], d[2])
            false += (pair not in expected and pair not in relayed) or pair in seen
            seen.add(pair)
        flood = sum(n for k, n in self.tallies().items() if k.startswith("accept|flood|"))
        addresses = {a for _, a in expected}
        by_file = sum(1 for name in self.opens if name.split("_")[1] not in addresses)
        by_file += sum(1 for name in self.opens if not name.endswith(f"_{DOOR[1]}_{DOOR[0]}"))
        return max(false + flood, by_file)

    def misjudged(self) -> list[str]:
        """Genuine packets that reached the daemon and were not accepted."""
        accepted, out = self.accepted(), []
        for src in self.stream.genuine:
            if self.reached(src) and (src, src) not in accepted:
                out.append(f"woven {src}: {self.reached(src)} datagram(s) read, not accepted")
        clients = sum((CLIENT, a) in accepted for a in (CLIENT, FWKNOP_ALLOW))
        if self.reached(CLIENT) > clients:
            out.append(f"{CLIENT}: {self.reached(CLIENT)} of the 2 clients' datagrams read, "
                       f"{clients} accepted")  # fmt: skip
        return out

    def replays_expected(self) -> int:
        """Refusals as "replayed" that the datagrams read call for: every read copy of a
        genuine packet (its replay, the other source's) but the one accepted."""
        accepted, n = self.accepted(), 0
        for j, src in enumerate(self.stream.genuine):
            copies = self.reached(src) + self.reached(cross_source(j))
            n += max(0, copies - ((src, src) in accepted or (cross_source(j), src) in accepted))
        return n

    def replays_refused(self) -> int:
        return sum(1 for d in self.driver.get("decisions", [])
                   if d[0] == "refuse" and d[4] == "replayed SPA packet")  # fmt: skip

    def tallies(self) -> dict[str, int]:
        raw: dict[str, int] = self.driver.get("tallies", {})
        out: dict[str, int] = {}
        for key, n in raw.items():
            key = key.replace(self.access, "ACCESS") if self.access else key
            out[key] = out.get(key, 0) + n
        return out

    def packets_read(self) -> int:
        """Datagrams the daemon read (its engine's packet count)."""
        return int(self.driver.get("counts", {}).get("packets", 0))

    def verdicts(self) -> int:
        c = self.driver.get("counts", {})
        return int(c.get("accept", 0) + c.get("refuse", 0) + c.get("ignore", 0))

    def losses(self) -> list[str]:
        """Why each genuine packet not accepted was not, as far as it shows."""
        accepted, out = self.accepted(), []
        for pair, who in self.expected().items():
            if pair in accepted:
                continue
            src = pair[0]
            if src == CLIENT:
                what = f"{self.reached(CLIENT)} of the 2 datagrams from {CLIENT} were read"
            else:
                what = f"{self.reached(src)} of its 2 copies from {src} were read"
            out.append(f"{who} ({pair[1]}): {what}")
        return out


def write_confs(tmp: Path, label: str, keys: spa.SpaKeys, opens: Path) -> tuple[Path, Path]:
    access = tmp / f"access-{label}.conf"
    access.write_text(f"SOURCE ANY\nKEY_BASE64 {b64key(keys.key)}\n"
                      f"HMAC_KEY_BASE64 {b64key(keys.hmac_key)}\n"
                      f"OPEN_PORTS {DOOR[0]}/{DOOR[1]}\nFW_ACCESS_TIMEOUT 30\n")  # fmt: skip
    access.chmod(0o600)
    conf = tmp / f"daemon-{label}.conf"
    values = {"runmode": "network", "interface": SERVER_IF, "encoded": "no",
              "access_file": str(access), "spa_server_port": str(SPA_PORT),
              "backend": "command", "open": f"{TOUCH} {opens}/open_%IP%_%PORT%_%PROTO%",
              "cooldown": "0", "duration": "30"}  # fmt: skip
    conf.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return conf, access


def client_commands(tmp: Path, keys: spa.SpaKeys) -> dict[str, list[str]]:
    kb, hb = b64key(keys.key), b64key(keys.hmac_key)
    rc_file = tmp / "fwknoprc"
    rc_file.touch(mode=0o600)
    return {
        "aioknock run": [sys.executable, "-m", "aioknock", "run", "-protocol", "spa",
                         "-key_base64", kb, "-hmac_key_base64", hb, "-access", "tcp/22",
                         "-allow_ip", "source", "-spa_server_port", str(SPA_PORT), "-quiet",
                         SERVER],
        "fwknop": ["fwknop", "-A", "tcp/22", "-a", FWKNOP_ALLOW, "-D", SERVER, "-p",
                   str(SPA_PORT), "--key-base64-rijndael", kb, "--key-base64-hmac", hb,
                   "--rc-file", str(rc_file), "--no-save-args"],
    }  # fmt: skip


def run_daemon(pair: Pair, tmp: Path, stream: Stream, rate: float, keys: spa.SpaKeys,
               profile: bool) -> DaemonRow:  # fmt: skip
    label = f"daemon-{int(rate)}"
    row = DaemonRow("max" if not rate else f"{rate:,.0f}/s", rate, stream)
    opens = tmp / f"opens-{label}"
    opens.mkdir()
    conf, access = write_confs(tmp, label, keys, opens)
    row.access = str(access)
    blob = tmp / f"{label}.pkts"
    write_blob(blob, stream)
    ready = rf"capturing on {SERVER_IF}"
    with watched_daemon(pair.server, "bench_spa", tmp, label, conf, profile, ready, row):
        link0 = link_stats(pair.server, SERVER_IF)
        send(pair, tmp, label, blob, stream, rate, keys, row)
    link1 = link_stats(pair.server, SERVER_IF)
    row.link = {k: link1[k] - link0[k] for k in link1}
    row.opens = sorted(p.name for p in opens.iterdir())
    return row


def send(pair: Pair, tmp: Path, label: str, blob: Path, stream: Stream, rate: float,
         keys: spa.SpaKeys, row: DaemonRow) -> None:  # fmt: skip
    """The stream from the client namespace; the real clients start at its cue."""
    sent_json = tmp / f"sender-{label}.json"
    call = (pair.client, str(blob), rate, RUN_LIMIT, str(sent_json), stream.cue,
            sorted(stream.marks))  # fmt: skip
    code = f"import bench_spa as b; b.sender_main(*{call!r})"
    sender = in_ns(pair.client, tmp, [sys.executable, "-c", code])
    clients: dict[str, subprocess.Popen[str]] = {}
    try:
        assert sender.stdout is not None
        sender.stdout.readline()  # "cue" (or EOF: it failed)
        for name, argv in client_commands(tmp, keys).items():
            clients[name] = in_ns(pair.client, tmp, argv)
        _, serr = sender.communicate(timeout=RUN_LIMIT + 10)
        for name, client in clients.items():
            _, cerr = client.communicate(timeout=RUN_LIMIT)
            row.clients[name] = (client.returncode, cerr.strip()[:300])
    finally:
        for client in clients.values():
            stop(client)
        stop(sender)
    marks = row.read_sender(sender, serr, sent_json)
    row.marks = {stream.marks[int(i)]: t for i, t in marks.items()}


def daemon_part(tmp: Path, args: argparse.Namespace) -> list[DaemonRow]:
    rows: list[DaemonRow] = []
    with namespaces() as pair:
        run(["ip", "netns", "exec", pair.server, "nft", "-f", "-"], input=SERVER_RULES)
        for rate in args.rates:
            keys = fresh_keys()
            stream = build_stream(args.datagrams, args.sources, args.genuine, keys, args.seed)
            rows.append(run_daemon(pair, tmp, stream, rate, keys, args.profile))
    return rows


def print_daemon(rows: list[DaemonRow]) -> None:
    s = rows[0].stream
    print(f"\n3. Daemon: {len(s.items):,} datagrams to udp/{SPA_PORT} from spoofed sources "
          f"(one SOURCE ANY stanza: one HMAC check per SPA-shaped datagram):")  # fmt: skip
    head = (f"{'run':<9} {'sent':>7} {'send s':>6} {'sent/s':>8} {'to daemon':>9} {'kdrop':>6} "
            f"{'judged':>7} {'HMAC-chk':>8} {'busy s':>6} {'judged/s':>8} {'per CPU-s':>9} "
            f"{'CPU s':>5} {'RSS0 MB':>7} {'peak MB':>7} {'genuine':>7} {'false':>5}")  # fmt: skip
    print_head(head)
    for r in rows:
        d, k = r.driver, r.driver.get("kernel") or {}
        packets, busy, cpu = r.busy()
        true, expected = r.true_opens()
        print(f"{r.label:<9} {r.sent:>7,} {r.send_wall:>6.2f} "
              f"{r.sent / r.send_wall if r.send_wall else 0:>8,.0f} {k.get('received', 0):>9,} "
              f"{k.get('dropped', 0):>6,} {d.get('counts', {}).get('packets', 0):>7,} "
              f"{r.verdicts():>8,} {busy:>6.2f} {packets / busy if busy else 0:>8,.0f} "
              f"{packets / cpu if cpu else 0:>9,.0f} {d.get('cpu_total', 0):>5.2f} "
              f"{d.get('rss_ready_kb', 0) / 1024:>7.1f} {d.get('hwm_kb', 0) / 1024:>7.1f} "
              f"{f'{true}/{expected}':>7} {r.false_opens():>5}")  # fmt: skip
    print("    to daemon = datagrams the capture filter passed, kdrop = of those dropped by "
          "the kernel (socket buffer full), judged = datagrams the daemon read (to daemon - "
          "kdrop), HMAC-chk = of those SPA-shaped (one HMAC check and a verdict each); "
          "judged/s and per CPU-s over the daemon's busy bursts")  # fmt: skip


def describe(s: Stream) -> str:
    kinds = {k: s.count(k) for k in ("b64", "bytes", "forged")}
    sizes = sorted(len(d.payload) for d in s.items if d.kind == "forged")
    size = f"{sizes[0]}-{sizes[-1]} bytes" if sizes else "-"
    sources = len({d.src for d in s.items if d.src.startswith("198.19.")})
    return (f"{kinds['b64']:,} random base64 texts and {kinds['bytes']:,} random byte strings "
            f"of real SPA packets' sizes ({size}), {kinds['forged']:,} SPA packets under other "
            f"keys, from {sources:,} sources 198.19.x.y; + {len(s.genuine)} genuine (198.18.1.j), "
            f"each replayed by its source and by 198.18.3.j; aioknock run and fwknop from "
            f"{CLIENT} at datagram {s.cue:,}")  # fmt: skip


def daemon_details(r: DaemonRow) -> None:
    r.print_title(describe(r.stream))
    d = r.driver
    print(f"  server veth: rx {r.link.get('rx', 0):,} packets, rx dropped "
          f"{r.link.get('rx_dropped', 0)}")  # fmt: skip
    print(f"  daemon: {r.stopped_line}; CPU {d.get('cpu_total', 0):.2f} s; memory: RSS "
          f"{d.get('rss_ready_kb', 0) / 1024:.1f} MB when ready, peak (VmHWM) "
          f"{d.get('hwm_kb', 0) / 1024:.1f} MB, {d.get('rss_end_kb', 0) / 1024:.1f} MB at exit; "
          f"replay memory {d.get('replays', -1)} digests")  # fmt: skip
    bursts = d.get("bursts", [])
    print(f"  busy bursts (batches < {BURST_GAP * 1000:.0f} ms apart): {d.get('burst_count', 0)}; "
          "of >= 1,000 datagrams: " + ("; ".join(
              f"{b['packets']:,} in {b['end'] - b['start']:.3f} s ({b['batches']:,} batches, "
              f"{b['cpu1'] - b['cpu0']:.2f} CPU-s) from +{b['epoch'] - r.send_start:.2f} s"
              for b in bursts[:6]) + ("; ..." if len(bursts) > 6 else "") or "none"))  # fmt: skip
    for key, n in sorted(r.tallies().items(), key=lambda kv: -kv[1]):
        v, who, reason = key.split("|", 2)
        print(f"    {n:>7,} x {v} {who}: {reason}")
    for name, (rc, cerr) in r.clients.items():
        print(f"  {name}: exit {rc}" + (f": {cerr}" if cerr else ""))
    expected = r.expected()
    for pair, who in expected.items():
        got = [x for x in d.get("decisions", []) if (x[1], x[2]) == pair and x[0] == "accept"]
        sent_at = r.marks.get(pair[0]) if who == "woven" else None
        when = f", {got[0][3] - sent_at:.3f} s after it was sent" if got and sent_at else ""
        print(f"    {who} {pair[0]} -> {pair[1]}: {'accepted' if got else 'NOT accepted'}{when}")
    watched = [x for x in d.get("decisions", []) if x[0] != "accept"]
    why: dict[str, int] = {}
    for x in watched:
        kind = "cross" if x[1].startswith("198.18.3.") else "same source"
        key = f"{x[0]} {kind}: {x[4]}"
        why[key] = why.get(key, 0) + 1
    for key, n in sorted(why.items()):
        print(f"    {n:>3} x {key}")
    print(f"  door files: {len(r.opens)} ({', '.join(r.opens[:10])})")
    for loss in r.losses():
        print(f"  not accepted: {loss}")
    for src, address in sorted(r.relayed()):
        print(f"  accepted from {src}, which replayed {address}'s packet (never read from "
              f"{address}): its first use")  # fmt: skip
    r.print_profile()


def daemon_checks(rows: list[DaemonRow]) -> list[tuple[bool | None, str]]:
    out: list[tuple[bool | None, str]] = []
    false = [r.false_opens() for r in rows]
    out.append((sum(false) == 0, "false opens == 0: " + ", ".join(
        f"{r.label} {f}" for r, f in zip(rows, false, strict=True))))  # fmt: skip
    wrong = [(r, r.misjudged()) for r in rows]
    out.append((not any(w for _, w in wrong), "every genuine packet the daemon read was "
                "accepted: " + ", ".join(f"{r.label} {'yes' if not w else '; '.join(w)}"
                                         for r, w in wrong)))  # fmt: skip
    for r in rows:
        true, expected = r.true_opens()
        dropped = (r.driver.get("kernel") or {}).get("dropped", 0)
        why = f" (lost in the kernel: {'; '.join(r.losses())})" if true < expected else ""
        note = f"; {dropped:,} datagrams dropped in the kernel" if dropped else ""
        out.append((true == expected, f"{r.label}: genuine packets accepted {true}/{expected}"
                                      f"{note}{why}"))  # fmt: skip
    per = [(r.label, r.driver.get("cpu_total", 0) / r.packets_read()) for r in rows
           if r.packets_read()]  # fmt: skip
    out.append((None, "daemon CPU per datagram read (whole process, all its CPU): " + ", ".join(
        f"{label} {1e6 * c:.0f} us" for label, c in per)))  # fmt: skip
    for r in rows:
        refused, due = r.replays_refused(), r.replays_expected()
        relayed = f"; {len(r.relayed())} accepted from the relaying source" if r.relayed() else ""
        sent = 2 * len(r.stream.genuine)
        out.append((refused == due, f"{r.label}: replays refused as replayed {refused}/{due} "
                                    f"read (of {sent} sent){relayed}"))  # fmt: skip
    return out


# ======================================================================= main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="codec,fleet,daemon", help="codec, fleet, daemon")
    parser.add_argument("--runs", type=int, default=5, help="codec: runs per figure")
    parser.add_argument("--seconds", type=float, default=0.3, help="codec: seconds per run")
    parser.add_argument("--hosts", type=int, default=10_000, help="fleet: hosts")
    parser.add_argument("--datagrams", type=int, default=100_000, help="daemon: flood size")
    parser.add_argument("--sources", type=int, default=10_000, help="daemon: flood sources")
    parser.add_argument("--genuine", type=int, default=5, help="daemon: genuine packets woven in")
    parser.add_argument("--rates", default="0,5000,10000",
                        help="daemon: datagrams/s, comma-separated (0: at once)")  # fmt: skip
    daemon_run_options(parser)
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not set(args.parts) <= {"codec", "fleet", "daemon"}:
        parser.error("parts: codec, fleet, daemon")
    if not (1 <= args.runs <= 20 and 0.05 <= args.seconds <= 5):
        parser.error("runs 1-20, seconds 0.05-5")
    if not 1 <= args.hosts <= MAX_HOSTS:
        parser.error(f"hosts 1-{MAX_HOSTS:,}")
    if not 1 <= args.sources <= min(MAX_SOURCES, args.datagrams) <= MAX_DATAGRAMS:
        parser.error(f"1 <= sources <= {MAX_SOURCES:,}, sources <= datagrams <= "
                     f"{MAX_DATAGRAMS:,}")  # fmt: skip
    if not 1 <= args.genuine <= MAX_GENUINE:
        parser.error(f"genuine 1-{MAX_GENUINE}")
    if not args.rates or not all(r == 0 or args.datagrams / r <= RUN_LIMIT for r in args.rates):
        parser.error(f"rates: 0, or fast enough to send the datagrams within {RUN_LIMIT:.0f} s")
    need = {"fleet": ["ip", "nft", "xargs", "fwknop"], "daemon": ["ip", "nft", "sysctl", "fwknop"]}
    need_root(parser, [c for p in args.parts for c in need.get(p, [])])
    return args


def main() -> int:
    args = parse_args()
    interrupt_on_signals()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"aioknock SPA (fwknop 2.6.10 format); {os.cpu_count()} CPUs, kernel "
          f"{os.uname().release}, Python {sys.version.split()[0]}; load average {load}\n",
          flush=True)  # fmt: skip
    checks: list[tuple[bool | None, str]] = []
    with scratch("akspa-", args.keep) as tmp:
        t0 = time.monotonic()
        if "codec" in args.parts:
            print_codec(codec_part(args.runs, args.seconds), args.runs)
        if "fleet" in args.parts:
            fleet = fleet_part(tmp, args.hosts)
            print_fleet(fleet)
            checks += fleet_checks(fleet)
        if "daemon" in args.parts:
            rows = daemon_part(tmp, args)
            print_daemon(rows)
            for r in rows:
                daemon_details(r)
            checks += daemon_checks(rows)
    print_checks(checks, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
