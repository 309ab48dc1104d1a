"""Sealed knocks in network namespaces (tests/test_netns_sealed.py): SYNs from chosen
source addresses, a second server namespace joined to the client, the daemon's
configuration, its nftables doors and its verdict lines.

Safety: as ``netns.py``: addresses in 198.18.0.0/15 and fd00:198:18::/48 only, inside
namespaces made here and deleted again; nft runs only inside them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from aioknock.daemon import nftables

from .daemons import Daemon
from .netns import WAIT_LIMIT, CommandError, NetnsPair, check_root, ns_run, stop_process

PY = sys.executable
SPAN = "32768-65535"  # the sealed knock's default span
MAX_SYNS = 8192  # one ``send`` at most
_V4_NET = ipaddress.ip_network("198.18.0.0/15")
_V6_NET = ipaddress.ip_network("fd00:198:18::/48")
_serial = itertools.count()

# Reads one JSON list of [source, destination, [ports]] knocks a line, and sends them in
# that order: one SYN per port from a non-blocking connect bound to the source, the
# socket closed at once (closed in SYN-SENT it sends nothing more: no retransmission, no
# RST). Answers each line with how many SYNs left, or "error: ..." (then exits).
# Bounded: at most argv[1] SYNs a line, each line within 20 s; exits at end of input.
SENDER = textwrap.dedent(
    """
    import errno, json, socket, sys, time
    limit = int(sys.argv[1])
    for line in sys.stdin:
        knocks = json.loads(line)
        if sum(len(ports) for _, _, ports in knocks) > limit:
            sys.exit(print(f"error: more than {limit} SYNs", flush=True))
        deadline = time.monotonic() + 20
        sent = 0
        for src, dst, ports in knocks:
            family = socket.AF_INET6 if ":" in dst else socket.AF_INET
            for port in ports:
                if time.monotonic() > deadline:
                    sys.exit(print(f"error: only {sent} SYNs within 20 s", flush=True))
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.bind((src, 0))
                    s.setblocking(False)
                    err = s.connect_ex((dst, port))
                if err != errno.EINPROGRESS:
                    name = errno.errorcode.get(err, err)
                    sys.exit(print(f"error: {src} to {dst} port {port}: {name}", flush=True))
                sent += 1
        print(sent, flush=True)
    """
)


class Knock(NamedTuple):
    """SYNs to ``ports`` of ``dst``, in order, from ``src``."""

    src: str
    dst: str
    ports: Sequence[int]


class Sender:
    """A process in ``pair.client`` that sends knocks on request (``send``), so that a
    test pays ``ip netns exec`` and a Python start once; stopped with the pair."""

    def __init__(self, pair: NetnsPair) -> None:
        self.proc = pair.popen(pair.client, [PY, "-c", SENDER, str(MAX_SYNS)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip

    def send(self, knocks: Sequence[Knock], timeout: float = 25.0) -> None:
        """Every knock's SYNs, one knock after the other, no pause; returns once sent."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        total = sum(len(k.ports) for k in knocks)
        self.proc.stdin.write(json.dumps([[k.src, k.dst, list(k.ports)] for k in knocks]) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        answer = self.proc.stdout.readline().strip() if ready else "no answer"
        if answer != str(total):
            raise AssertionError(f"sending {total} SYNs failed: {answer}")


# ------------------------------------------------------------ a second server


def _checked(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip not in (_V4_NET if ip.version == 4 else _V6_NET):
        raise ValueError(f"{addr} is outside 198.18.0.0/15 and fd00:198:18::/48")
    return addr


def _wait_ready(ns: str, dev: str, timeout: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        link = ns_run(ns, ["ip", "-br", "link", "show", "dev", dev]).stdout.split()
        tentative = ns_run(ns, ["ip", "addr", "show", "dev", dev, "tentative"]).stdout
        if link[1:2] == ["UP"] and not tentative.strip():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dev} in {ns} not ready: {link} {tentative!r}")
        time.sleep(0.01)


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    if res.returncode != 0:
        raise CommandError(res.returncode, list(cmd), res.stdout, res.stderr)
    return res


@contextlib.contextmanager
def second_server(
    pair: NetnsPair, client_ip: str = "198.18.1.1", server_ip: str = "198.18.1.2",
    client_ip6: str = "fd00:198:18:1::1", server_ip6: str = "fd00:198:18:1::2",
) -> Iterator[NetnsPair]:  # fmt: skip
    """Another server namespace ``akb-<pid>-<n>``, joined to ``pair.client`` by a second
    veth pair (``veth-c2`` <-> ``veth-s2``, /24 and /64): a NetnsPair whose client is
    ``pair``'s. On exit its processes (and anything else in it) are killed and the
    namespace deleted, which removes ``veth-c2`` too."""
    check_root()
    for addr in (client_ip, server_ip, client_ip6, server_ip6):
        _checked(addr)
    name = f"akb-{os.getpid()}-{next(_serial)}"
    other = NetnsPair(pair.client, name, client_ip, server_ip, client_ip6, server_ip6,
                      client_if="veth-c2", server_if="veth-s2")  # fmt: skip
    created = False
    try:
        _run(["ip", "netns", "add", name])
        created = True
        ns_run(name, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        _run(["ip", "-n", pair.client, "link", "add", other.client_if, "index", "12",
              "type", "veth", "peer", "name", other.server_if, "index", "13",
              "netns", name])  # fmt: skip
        ends = ((pair.client, other.client_if, client_ip, client_ip6),
                (name, other.server_if, server_ip, server_ip6))  # fmt: skip
        for ns, dev, ip4, ip6 in ends:
            _run(["ip", "-n", ns, "addr", "add", f"{ip4}/24", "dev", dev])
            _run(["ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", dev, "nodad"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        for ns, dev in ((pair.client, other.client_if), (name, other.server_if)):
            _wait_ready(ns, dev)
        yield other
    finally:
        for proc in other.procs:
            stop_process(proc)
        if created:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, check=False).stdout.split()  # fmt: skip
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", name])


# ------------------------------------------------------------------ the server side


def user_ruleset(protected: Sequence[int]) -> str:
    """The server's own table: the two documented rules, then the protected ports and
    the span dropped (a knock's SYNs get no answer, as behind a real firewall)."""
    ports = ", ".join(map(str, protected))
    rules = [*nftables.user_rules(), f"tcp dport {{ {ports} }} counter drop",
             f"tcp dport {SPAN} drop"]  # fmt: skip
    body = "".join(f"    {rule}\n" for rule in rules)
    head = "    type filter hook input priority filter; policy accept;\n"
    return f"table inet filter {{\n  chain input {{\n{head}{body}  }}\n}}\n"


def sealed_conf(key_file: Path, server_id: str, interface: str, **extra: str | None) -> str:
    """A sealed-knock daemon: network mode on ``interface``, nftables, doors of 2 s, no
    cooldown; ``extra`` adds or replaces keys (None: left out)."""
    settings: dict[str, str | None] = {
        "protocol": "sealed",
        "server_id": server_id,
        "key_file": str(key_file),
        "runmode": "network",
        "interface": interface,
        "backend": "nftables",
        "nft_table": "aioknock",
        "duration": "2",
        "cooldown": "0",
        "knock_timeout": "1",
        **extra,
    }
    return "".join(f"{k} = {v}\n" for k, v in settings.items() if v is not None)


def start(pair: NetnsPair, tmp: Path, conf: str, name: str) -> Daemon:
    """``aioknock daemon`` with ``conf`` in ``pair.server``, once it captures: it logs
    "capturing on" as it starts the task that opens its capture socket, so this also
    waits until the process holds an AF_PACKET socket (and a moment for its filter)."""
    daemon = Daemon(pair, tmp, conf, name=name)
    daemon.wait_log(rf"capturing on {re.escape(pair.server_if)}")
    deadline = time.monotonic() + WAIT_LIMIT
    while not _capturing(daemon.proc.pid):
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no capture socket: {daemon.stderr}")
        time.sleep(0.01)
    time.sleep(0.05)
    return daemon


def _capturing(pid: int) -> bool:
    """Whether process ``pid`` holds a packet socket (``/proc/PID/net/packet``)."""
    try:
        rows = Path(f"/proc/{pid}/net/packet").read_text().splitlines()[1:]
        packet = {f"socket:[{row.split()[-1]}]" for row in rows if row.split()}
        return any(os.readlink(fd) in packet for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def doors(ns: str, table: str = "aioknock") -> set[tuple[str, str, int]]:
    """The open doors in the daemon's nftables sets: (address, protocol, port)."""
    out: set[tuple[str, str, int]] = set()
    for name in ("allow4", "allow6"):
        text = ns_run(ns, ["nft", "-j", "list", "set", "inet", table, name]).stdout
        for item in json.loads(text)["nftables"]:
            for elem in item.get("set", {}).get("elem", []):
                value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
                addr, proto, port = value["concat"]
                out.add((str(addr), str(proto), int(port)))
    return out


def wait_doors(
    ns: str, wanted: set[tuple[str, str, int]], timeout: float = WAIT_LIMIT
) -> set[tuple[str, str, int]]:
    """``doors`` once it holds all of ``wanted`` (the daemon logs a door's verdict, then
    runs its nft): compare the result with what may be open. The daemon runs its nft
    commands one at a time, in the order of its verdicts, so a door wrongly opened for
    an earlier knock is in by then too. AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not wanted <= (found := doors(ns)):
        if time.monotonic() > deadline:
            raise AssertionError(f"doors {sorted(wanted - found)} not open within {timeout} s")
        time.sleep(0.02)
    return found


class Verdict(NamedTuple):
    kind: str  # accepted, refused, ignored
    source: str
    reason: str


_VERDICT = re.compile(r"(accepted|refused|ignored) knock from (\S+?)(?: \(\w+\))?: ([^\n]*)")
_SUMMARY = re.compile(r"stopped: (\d+) packets, (\d+) accepted, (\d+) refused, (\d+) ignored")


def verdicts(text: str) -> list[Verdict]:
    """The daemon's verdict lines in ``text``, in order."""
    return [Verdict(*m.groups()) for m in _VERDICT.finditer(text)]


@dataclass(frozen=True)
class Summary:
    """The daemon's counts, from its line at SIGTERM."""

    packets: int
    accepted: int
    refused: int
    ignored: int


def stop(daemon: Daemon) -> Summary:
    """SIGTERM; the daemon must exit 0 and say its counts, which must be its verdict
    lines' (every verdict a line: none was held back by the rate limits)."""
    status = daemon.terminate()
    text = daemon.stderr
    assert status == 0 and "Traceback" not in text, text
    m = _SUMMARY.search(text)
    assert m is not None, text
    summary = Summary(*map(int, m.groups()))
    lines = verdicts(text)
    counted = {kind: sum(v.kind == kind for v in lines) for kind in ("accepted", "refused",
                                                                     "ignored")}  # fmt: skip
    assert (summary.accepted, summary.refused, summary.ignored) == (
        counted["accepted"], counted["refused"], counted["ignored"]), (summary, text)  # fmt: skip
    return summary
