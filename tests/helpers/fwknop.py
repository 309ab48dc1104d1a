"""The real fwknop 2.6.10 (client ``fwknop``, server ``fwknopd``) in a namespace pair.

fwknopd runs in the foreground in the server namespace with every file of its own in a
temporary directory (configuration, access.conf, digest cache, pid file, run directory),
sniffing the server's veth and managing iptables chains of its own, in that namespace
only. A protected service (TCP accepts that answer ``pong``, UDP echoes) sits behind the
namespace's firewall, which drops its ports unless fwknopd's (or aioknock's) rule lets a
client through, so ``connects()`` is a real check of whether a door is open.

Facts of 2.6.10 that shaped this module:

* fwknopd logs to stderr in the foreground; "Starting fwknopd main event loop." comes
  after the capture is open, so it is the readiness line.
* Its rules: ``-A FWKNOP_INPUT -s 198.18.0.1/32 [-d DST/32] -p tcp -m tcp --dport 22
  -m comment --comment _exp_<epoch> -j ACCEPT`` (``-d`` only with
  ENABLE_DESTINATION_RULE); the jump from INPUT is inserted at position 1, ahead of
  any drop. SIGTERM flushes the chain and deletes the jump.
* Expired rules are looked for on every loop (PCAP_LOOP_SLEEP, default 0.1 s), but
  only once a rule's expiry is due; RULES_CHECK_THRESHOLD (default every 20 loops)
  additionally lists every chain, which costs an iptables run per chain: 0 turns it off.
* The client reads an rc file value up to the first blank, ``;`` or ``#`` (fwknopd's
  access.conf keeps blanks), so an rc file cannot carry a passphrase with a blank.
  Passphrases on the command line: ``--key-rijndael`` and ``--key-hmac`` (not in -h).
* REQUIRE_SOURCE_ADDRESS Y only refuses ``-s`` (allow address 0.0.0.0); fwknopd opens
  for any other allow address, whatever the packet's source.
* Several fwknopd in one namespace must start one after the other: each probes the
  iptables comment match as it starts, and two at once make one exit ("Could not use
  the 'comment' match"). ``iptables -S CHAIN`` of a chain that is gone says
  "incompatible, use 'nft' tool" (iptables-nft), not "no chain".

Safety: addresses are the namespace pair's (198.18.0.0/15); every iptables and fwknopd
command runs inside ``ip netns exec``; each client run sends one datagram.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from aioknock.daemon import nftables

from .netns import ANSWER_WAIT, WAIT_LIMIT, NetnsPair, stop_process

PY = sys.executable
SPA_PORT = 62201
READY = "Starting fwknopd main event loop."
CHAIN = "FWKNOP_INPUT"
LOOP_SLEEP_US = 10_000  # fwknopd's PCAP_LOOP_SLEEP: a packet waits at most 10 ms
SERVICE_LIFETIME = 120.0  # seconds; the listener exits by itself after this


def installed() -> bool:
    """True if both fwknop and fwknopd are on PATH."""
    return shutil.which("fwknop") is not None and shutil.which("fwknopd") is not None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# ------------------------------------------------------------------------------ keys


@dataclass(frozen=True)
class Keys:
    """An encryption key and an HMAC key, either both base64 or both passphrases."""

    key_base64: str = ""
    hmac_key_base64: str = ""
    key: str = ""
    hmac_key: str = ""
    hmac_digest_type: str = "sha256"

    def __post_init__(self) -> None:
        base64_keys, passphrases = (
            bool(self.key_base64 and self.hmac_key_base64),
            bool(self.key and self.hmac_key),
        )
        if base64_keys == passphrases:
            raise ValueError("give both base64 keys or both passphrases")

    @classmethod
    def generate(cls, hmac_digest_type: str = "sha256") -> Keys:
        """Random keys of ``fwknop --key-gen``'s sizes (32 and 64 bytes)."""
        return cls(
            key_base64=base64.b64encode(secrets.token_bytes(32)).decode(),
            hmac_key_base64=base64.b64encode(secrets.token_bytes(64)).decode(),
            hmac_digest_type=hmac_digest_type,
        )

    @property
    def is_base64(self) -> bool:
        return bool(self.key_base64)

    def access_lines(self) -> list[str]:
        """The stanza's key lines in fwknopd's access.conf."""
        if self.is_base64:
            keys = [f"KEY_BASE64 {self.key_base64}", f"HMAC_KEY_BASE64 {self.hmac_key_base64}"]
        else:
            keys = [f"KEY {self.key}", f"HMAC_KEY {self.hmac_key}"]
        return [*keys, f"HMAC_DIGEST_TYPE {self.hmac_digest_type}"]

    def rc_lines(self) -> list[str]:
        """The same keys in a fwknoprc stanza (refused if the client would cut them)."""
        for value in (self.key, self.hmac_key):
            if re.search(r"[\s;#]", value):
                raise ValueError(f"fwknop's rc file reader cuts {value!r} at the blank")
        return [*self.access_lines(), "USE_HMAC Y"]

    def fwknop_args(self) -> list[str]:
        """The same keys on fwknop's command line (no prompt)."""
        if self.is_base64:
            keys = ["--key-base64-rijndael", self.key_base64,
                    "--key-base64-hmac", self.hmac_key_base64]  # fmt: skip
        else:
            keys = ["--key-rijndael", self.key, "--key-hmac", self.hmac_key]
        return [*keys, "--use-hmac", "--hmac-digest-type", self.hmac_digest_type]

    def aioknock_args(self) -> list[str]:
        """The same keys as ``aioknock run -protocol spa`` options."""
        if self.is_base64:
            keys = ["-key_base64", self.key_base64, "-hmac_key_base64", self.hmac_key_base64]
        else:
            keys = ["-key", self.key, "-hmac_key", self.hmac_key]
        return [*keys, "-hmac_digest_type", self.hmac_digest_type]


# ---------------------------------------------------------------- fwknopd's files


@dataclass(frozen=True)
class Stanza:
    """One access.conf stanza."""

    keys: Keys
    source: str = "ANY"
    open_ports: tuple[str, ...] = ("tcp/22",)
    fw_access_timeout: int = 30
    require_source_address: bool = False

    def text(self) -> str:
        lines = [f"SOURCE {self.source}", *self.keys.access_lines()]
        if self.open_ports:
            lines.append(f"OPEN_PORTS {', '.join(self.open_ports)}")
        lines.append(f"FW_ACCESS_TIMEOUT {self.fw_access_timeout}")
        if self.require_source_address:
            lines.append("REQUIRE_SOURCE_ADDRESS Y")
        return "".join(f"{line}\n" for line in lines)


def write_access(path: Path, stanzas: Iterable[Stanza]) -> Path:
    """access.conf with ``stanzas``, mode 0600 (fwknopd warns about looser modes)."""
    path.write_text("\n".join(s.text() for s in stanzas))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class ServerFiles:
    """Everything one fwknopd reads or writes, under ``dir``."""

    dir: Path
    conf: Path
    access: Path
    digest: Path
    pid: Path
    log: Path
    chain: str

    def args(self) -> list[str]:
        """fwknopd's options naming these files (2.6.10's spellings)."""
        return ["-c", str(self.conf), "-a", str(self.access), "-d", str(self.digest),
                "-p", str(self.pid)]  # fmt: skip


def write_server_files(
    directory: Path, iface: str, stanzas: Iterable[Stanza], *, chain: str = CHAIN,
    pcap_filter: str = f"udp port {SPA_PORT}", destination_rule: bool = False,
    max_spa_packet_age: int = 120,
) -> ServerFiles:  # fmt: skip
    """fwknopd.conf and access.conf in ``directory`` (made if missing).

    The iptables backend with ``chain`` (jumped to from INPUT, position 1) of its own;
    pid file, digest cache and run directory in ``directory``, so nothing of the host's
    /etc/fwknop or /var/run/fwknop is read or written.  ``destination_rule``: rules name
    the SPA packet's destination too (ENABLE_DESTINATION_RULE), for several fwknopd on
    one interface, one per address.
    """
    run = directory / "run"
    run.mkdir(parents=True, exist_ok=True)
    files = ServerFiles(
        dir=directory, conf=directory / "fwknopd.conf", access=directory / "access.conf",
        digest=run / "digest.cache", pid=run / "fwknopd.pid", log=directory / "fwknopd.log",
        chain=chain,
    )  # fmt: skip
    settings = {
        "PCAP_INTF": iface,
        "ENABLE_PCAP_PROMISC": "N",
        "PCAP_FILTER": pcap_filter,
        "PCAP_LOOP_SLEEP": str(LOOP_SLEEP_US),
        "RULES_CHECK_THRESHOLD": "0",
        "MAX_SPA_PACKET_AGE": str(max_spa_packet_age),
        "ENABLE_SPA_PACKET_AGING": "Y",
        "ENABLE_DIGEST_PERSISTENCE": "Y",
        "ENABLE_DESTINATION_RULE": "Y" if destination_rule else "N",
        "FLUSH_IPT_AT_INIT": "Y",
        "FLUSH_IPT_AT_EXIT": "Y",
        "IPT_INPUT_ACCESS": f"ACCEPT, filter, INPUT, 1, {chain}, 1",
        "FWKNOP_RUN_DIR": str(run),
        "FWKNOP_PID_FILE": str(files.pid),
        "DIGEST_FILE": str(files.digest),
    }
    files.conf.write_text("".join(f"{k:<28} {v};\n" for k, v in settings.items()))
    files.conf.chmod(0o600)
    write_access(files.access, stanzas)
    return files


# ------------------------------------------------------------------- the server


class Rule(NamedTuple):
    """One ACCEPT rule in fwknopd's chain (``iptables -S``)."""

    source: str
    destination: str
    proto: str
    port: int
    expires: int


_RULE = re.compile(
    r"^-A (?P<chain>\S+) -s (?P<src>[\d.]+)/32(?: -d (?P<dst>[\d.]+)/32)? -p (?P<proto>\w+)"
    r" -m \w+ --dport (?P<port>\d+) -m comment --comment \"?_exp_(?P<exp>\d+)\"? -j ACCEPT$"
)


def parse_rules(text: str, chain: str) -> list[Rule]:
    """fwknopd's rules in ``iptables -S`` output; other lines of ``chain`` are an error."""
    rules = []
    for line in text.splitlines():
        if not line.startswith(f"-A {chain} "):
            continue
        m = _RULE.match(line)
        if m is None:
            raise AssertionError(f"unexpected rule in {chain}: {line!r}")
        rules.append(
            Rule(m["src"], m["dst"] or "0.0.0.0", m["proto"], int(m["port"]), int(m["exp"]))
        )
    return rules


class Fwknopd:
    """``fwknopd -f`` in the server namespace, its stderr and stdout in ``files.log``."""

    def __init__(self, pair: NetnsPair, files: ServerFiles) -> None:
        self.pair, self.files = pair, files
        with open(files.log, "wb") as log:
            self.proc = pair.popen(
                pair.server, ["fwknopd", "-f", *files.args()],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def log(self) -> str:
        return self.files.log.read_text(errors="replace")

    def wait_log(
        self, pattern: str, timeout: float = WAIT_LIMIT, *, after: int = 0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the log at or after character ``after``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (m := regex.search(self.log, after)) is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"fwknopd exited {self.proc.returncode}: {self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} from fwknopd within {timeout} s: {self.log}")
            time.sleep(0.01)
        return m

    def wait_ready(self, timeout: float = WAIT_LIMIT) -> Fwknopd:
        self.wait_log(re.escape(READY), timeout)
        return self

    def iptables(self) -> str:
        """``iptables -S`` of fwknopd's chain."""
        return self.pair.run(self.pair.server, ["iptables", "-S", self.files.chain]).stdout

    def rules(self) -> list[Rule]:
        return parse_rules(self.iptables(), self.files.chain)

    def wait_rules(self, want: Callable[[list[Rule]], bool], timeout: float) -> list[Rule]:
        """The rules once ``want(rules)`` holds; AssertionError after ``timeout``."""
        seen: list[Rule] = []

        def check() -> bool:
            nonlocal seen
            seen = self.rules()
            return want(seen)

        if not wait_until(check, timeout, 0.05):
            raise AssertionError(f"rules never as wanted: {seen}\n{self.log}")
        return seen

    def fw_list(self) -> str:
        """``fwknopd --fw-list``: what fwknopd itself says its chains hold."""
        cmd = ["fwknopd", *self.files.args(), "--fw-list"]
        return self.pair.run(self.pair.server, cmd).stdout

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (fwknopd flushes its chain and removes its jump); its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
                raise AssertionError(f"fwknopd ignored SIGTERM: {self.log}") from None
        return self.proc.returncode


def start_fwknopd(
    pair: NetnsPair, directory: Path, stanzas: Sequence[Stanza], *, chain: str = CHAIN,
    pcap_filter: str = f"udp port {SPA_PORT}", destination_rule: bool = False,
    max_spa_packet_age: int = 120,
) -> Fwknopd:  # fmt: skip
    """Write the files (``write_server_files``), start fwknopd, wait until it is ready."""
    files = write_server_files(
        directory, pair.server_if, stanzas, chain=chain, pcap_filter=pcap_filter,
        destination_rule=destination_rule, max_spa_packet_age=max_spa_packet_age,
    )  # fmt: skip
    return Fwknopd(pair, files).wait_ready()


# ------------------------------------------------------------- protected service

# Serves argv[2] (JSON list of TCP ports: accept, send "pong", close) and argv[3] (UDP
# ports: answer each datagram with "pong") on every address; exits after argv[1] s.
SERVICE = textwrap.dedent(
    """
    import json, selectors, socket, sys, time
    deadline = time.monotonic() + float(sys.argv[1])
    sel = selectors.DefaultSelector()
    for kind, ports in ((socket.SOCK_STREAM, sys.argv[2]), (socket.SOCK_DGRAM, sys.argv[3])):
        for port in json.loads(ports):
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            sel.register(s, selectors.EVENT_READ)
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(min(left, 0.5)):
            s = key.fileobj
            if s.type == socket.SOCK_STREAM:
                conn, _ = s.accept()
                with conn:
                    conn.sendall(b"pong")
            else:
                _, peer = s.recvfrom(2048)
                s.sendto(b"pong", peer)
    """
)

# argv[1]: JSON list of [host, port, proto]; argv[2]: timeout per attempt (a connect, a
# datagram's answer; a connection that got through waits ANSWER_WAIT for its "pong", see
# netns.py). Prints a JSON list of booleans: did a "pong" come back. One connection or one
# datagram each, all at once (a thread each).
PROBE = textwrap.dedent(
    f"""
    import json, socket, sys
    timeout = float(sys.argv[2])
    def probe(host, port, proto):
        try:
            if proto == "tcp":
                with socket.create_connection((host, port), timeout=timeout) as s:
                    s.settimeout({ANSWER_WAIT})
                    return s.recv(16) == b"pong"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"ping", (host, port))
                return s.recvfrom(16)[0] == b"pong"
        except OSError:
            return False
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(32) as pool:  # at once: a closed port costs one timeout
        answers = list(pool.map(lambda t: probe(*t), json.loads(sys.argv[1])[:256]))
    print(json.dumps(answers))
    """
)


def _ports(access: Iterable[str], proto: str) -> list[int]:
    return sorted({int(a.split("/")[1]) for a in access if a.split("/")[0] == proto})


@dataclass
class Service:
    """The protected ports (``tcp/22``, ``udp/53``...), their firewall drops and listener."""

    pair: NetnsPair
    access: tuple[str, ...]
    firewall: str = "iptables"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Service:
        """Drop the ports in the server namespace's firewall, then serve them.

        ``iptables``: DROP rules appended to INPUT (fwknopd's jump goes before them).
        ``nftables``: ``table inet filter`` with aioknock's two documented user rules
        (established, the daemon's mark) before the drops.
        """
        tcp, udp = _ports(self.access, "tcp"), _ports(self.access, "udp")
        server = self.pair.server
        if self.firewall == "iptables":
            for proto, ports in (("tcp", tcp), ("udp", udp)):
                for port in ports:
                    self.pair.run(server, ["iptables", "-A", "INPUT", "-p", proto,
                                           "--dport", str(port), "-j", "DROP"])  # fmt: skip
        elif self.firewall == "nftables":
            pairs = [("tcp", port) for port in tcp] + [("udp", port) for port in udp]
            drops = [f"{proto} dport {port} counter drop" for proto, port in pairs]
            body = "".join(f"    {rule}\n" for rule in [*nftables.user_rules(), *drops])
            ruleset = (
                "table inet filter {\n  chain input {\n"
                "    type filter hook input priority filter; policy accept;\n"
                f"{body}  }}\n}}\n"
            )
            self.pair.run(server, ["nft", "-f", "-"], input=ruleset)
        else:
            raise ValueError(f"firewall must be iptables or nftables, not {self.firewall!r}")
        self.proc = self.pair.popen(
            server, [PY, "-c", SERVICE, str(SERVICE_LIFETIME), json.dumps(tcp), json.dumps(udp)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for port in tcp:
            self.pair.wait_port(port)
        for port in udp:
            self.pair.wait_port(port, "udp")
        return self


def probe(
    pair: NetnsPair, targets: Sequence[tuple[str, int, str]], timeout: float = 0.5
) -> list[bool]:
    """For each (host, port, proto), from the client namespace: did the service answer?"""
    cmd = [PY, "-c", PROBE, json.dumps([list(t) for t in targets]), str(timeout)]
    res = pair.run(pair.client, cmd, timeout=10 + timeout + ANSWER_WAIT)
    answers = json.loads(res.stdout)
    assert isinstance(answers, list) and len(answers) == len(targets), res.stdout
    return [bool(a) for a in answers]


def connects(
    pair: NetnsPair, port: int, timeout: float = 0.5, *, host: str | None = None,
    proto: str = "tcp",
) -> bool:  # fmt: skip
    """One connection (tcp) or datagram (udp) to the server: did the service answer?"""
    return probe(pair, [(host or pair.server_ip, port, proto)], timeout)[0]


def reaches(pair: NetnsPair, access: Iterable[str], timeout: float = 0.5) -> list[bool]:
    """``connects`` for each ``proto/port`` of ``access`` on the server's address."""
    targets = [(pair.server_ip, int(p), proto) for proto, p in (a.split("/") for a in access)]
    return probe(pair, targets, timeout)


# -------------------------------------------------------------------- the client


def write_rc(
    path: Path, stanza: str, server: str, access: Sequence[str], keys: Keys, *,
    allow_ip: str | None = None,
) -> Path:  # fmt: skip
    """A fwknoprc with one stanza (mode 0600: fwknop warns about looser modes)."""
    lines = [f"[{stanza}]", f"SPA_SERVER {server}", f"ACCESS {','.join(access)}"]
    if allow_ip is not None:
        lines.append(f"ALLOW_IP {allow_ip}")
    lines += keys.rc_lines()
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    return path


def fwknop_cmd(server: str, access: Sequence[str], keys: Keys, allow_ip: str) -> list[str]:
    """fwknop's arguments for one SPA packet (``-a ALLOW_IP``, or ``-s`` for "source")."""
    allow = ["-s"] if allow_ip == "source" else ["-a", allow_ip]
    return ["-A", ",".join(access), *allow, "-D", server, *keys.fwknop_args()]


def run_fwknop(
    pair: NetnsPair, home: Path, args: Sequence[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real client in the client namespace: never a prompt (stdin is empty), no
    ~/.fwknop.run written, no ~/.fwknoprc read unless ``--rc-file`` is among ``args``."""
    extra = ["--no-save-args"] + ([] if "--rc-file" in args else ["--no-rc-file"])
    env = {**os.environ, "HOME": str(home)}
    res = subprocess.run(
        ["ip", "netns", "exec", pair.client, "fwknop", *args, *extra],
        capture_output=True, text=True, timeout=15, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"fwknop {list(args)} exited {res.returncode}: {res.stderr}")
    return res


def build_packet(pair: NetnsPair, home: Path, args: Sequence[str]) -> bytes:
    """fwknop's datagram for ``args``, built (``-T``) and saved (``-B``) but not sent."""
    saved = home / f"spa-{secrets.token_hex(4)}.pkt"
    run_fwknop(pair, home, [*args, "-T", "-B", str(saved)])
    data = saved.read_bytes().strip()
    assert data, f"fwknop saved no packet in {saved}"
    return data


# argv[1]: host, argv[2]: port, argv[3:]: hex payloads, each sent once, 20 ms apart.
SEND = textwrap.dedent(
    """
    import socket, sys, time
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for payload in sys.argv[3:35]:
            s.sendto(bytes.fromhex(payload), (sys.argv[1], int(sys.argv[2])))
            time.sleep(0.02)
    """
)


def send_datagrams(
    pair: NetnsPair, payloads: Sequence[bytes], *, host: str | None = None, port: int = SPA_PORT
) -> None:
    """Each payload once, as a UDP datagram from the client namespace (at most 32)."""
    if not 0 < len(payloads) <= 32:
        raise ValueError("send 1 to 32 datagrams")
    cmd = [PY, "-c", SEND, host or pair.server_ip, str(port), *(p.hex() for p in payloads)]
    pair.run(pair.client, cmd)
