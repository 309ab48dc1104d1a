"""Test harness for tests that need root and network namespaces.

Creates a client/server namespace pair joined by a veth pair, runs commands and
long-running processes inside them, loads an nftables drop ruleset and captures
packets with tcpdump.  Everything created is removed again, even on failure.

Safety: addresses are restricted to 198.18.0.0/15 and fd00:198:18::/48 (inside
fd00::/8) and only exist inside the namespaces created here; nothing touches the
host's interfaces.  Nothing here creates a namespace when it is imported or when
``requires_root`` is applied: the root check runs when a test is set up (conftest.py).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import pytest

ROOT_REASON = "needs root and network namespaces (runs in CI)"

#: Initial SYNs (SYN set, ACK clear), IPv4 and IPv6 (``tcp[]`` only matches IPv4 in
#: libpcap, so the IPv6 half reads the TCP flags at ip6[40+13]; no extension headers).
SYN_FILTER = (
    "(ip and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)"
    " or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 0x02)"
)

_V4_NET = ipaddress.ip_network("198.18.0.0/15")
_V6_NET = ipaddress.ip_network("fd00:198:18::/48")
_counter = itertools.count()

T = TypeVar("T")


# The protected service: answers "pong" to every connection, over IPv4 and IPv6 (one
# dual-stack socket); bounded by a deadline. argv: port, seconds.
LISTENER = textwrap.dedent(
    """
    import socket, sys, time
    deadline = time.monotonic() + float(sys.argv[2])
    with socket.socket(socket.AF_INET6) as srv:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("::", int(sys.argv[1])))
        srv.listen(16)
        srv.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"pong")
    """
)

#: Seconds to wait for what must come (a process's start, a log line, a port, a door's
#: rule): costs nothing when it comes; a loaded 2-core CI machine took 5 s to start one.
WAIT_LIMIT = 30.0

#: Seconds a connection that got through may take to say "pong": through a DROP only an
#: open door completes the handshake (the kernel's, at once); the listener is a process,
#: which a loaded machine may not run for a while, and a late answer is no closed door.
ANSWER_WAIT = 10.0

# One connection attempt (from the client namespace): prints ok or fail. argv: address
# (IPv4 or IPv6), port, seconds for the connect (a dropped SYN: no answer at all); the
# answer gets ANSWER_WAIT.
CONNECT = textwrap.dedent(
    f"""
    import socket, sys
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])),
                                      timeout=float(sys.argv[3])) as s:
            s.settimeout({ANSWER_WAIT})
            print("ok" if s.recv(16) == b"pong" else "fail")
    except OSError as exc:
        print("fail", type(exc).__name__)
    """
)


class CommandError(subprocess.CalledProcessError):
    """A command failed; unlike the base class, ``str()`` includes its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


def _run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 10.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and res.returncode != 0:
        raise CommandError(res.returncode, list(cmd), res.stdout, res.stderr)
    return res


# ---------------------------------------------------------------- root gating


def in_ci() -> bool:
    """True when ``CI`` is set to true (as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@functools.cache
def netns_available() -> bool:
    """True if we are root and can really create and delete a network namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"akp-{os.getpid()}"
    try:
        if _run(["ip", "netns", "add", probe], check=False).returncode != 0:
            return False
        return _run(["ip", "netns", "del", probe], check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_root() -> None:
    """Skip the running test without root/netns; fail it instead when ``CI=true``."""
    if netns_available():
        return
    if in_ci():
        pytest.fail(f"{ROOT_REASON}: unavailable although CI=true", pytrace=False)
    pytest.skip(ROOT_REASON)


def requires_root(obj: T) -> T:
    """Decorate a test function or class that needs root and network namespaces.

    Only adds the ``root`` mark; nothing is checked here, so importing a test module
    creates no namespace.  conftest.py calls ``check_root()`` when a marked test is set
    up: without root/netns it is skipped with ``ROOT_REASON``, under ``CI=true`` it fails.
    """
    return cast(T, pytest.mark.root(obj))


# ---------------------------------------------------------- running commands


def ns_run(
    ns: str,
    cmd: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 10.0,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside namespace ``ns``; capture text output; raise on failure if ``check``."""
    return _run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout, input=input)


def ns_popen(ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``cmd`` inside ``ns`` (``ip netns exec`` execs, so the pid is the command's).

    The caller owns the process; prefer ``NetnsPair.popen`` which also stops it.
    """
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kwargs)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reap it and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_port(ns: str, port: int, proto: str = "tcp", timeout: float = WAIT_LIMIT) -> None:
    """Wait until something in ``ns`` listens on (tcp) / is bound to (udp) ``port``."""
    flag = {"tcp": "-ltnH", "udp": "-lunH"}[proto]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns_run(ns, ["ss", flag, f"sport = :{port}"], check=False).stdout.strip():
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {proto}/{port} in {ns} after {timeout}s")


class Closing(NamedTuple):
    """What ``watch_closing`` saw, in ``time.monotonic()`` seconds."""

    last_open: float | None  # when the last attempt that found the door open began
    closed: float | None  # when the first answer that found it closed came (None: never)


def watch_closing(is_open: Callable[[], bool], within: float, interval: float = 0.05) -> Closing:
    """Poll ``is_open`` (one connection attempt) until it says closed, ``within`` s at most.

    Its two times bound the close however slowly this machine runs: an attempt that
    found the door open sent its SYN after it began, so the door was open then; an
    answer that found it closed came after its SYN, so the door was shut by then.
    """
    last_open = None
    deadline = time.monotonic() + within
    while True:
        began = time.monotonic()
        if not is_open():
            return Closing(last_open, time.monotonic())
        last_open = began
        if began > deadline:
            return Closing(last_open, None)
        time.sleep(interval)


def check_closing(
    seen: Closing, duration: float, *, added_after: float, added_by: float, slack: float = 0.05
) -> None:
    """A door of ``duration`` s, added after ``added_after`` and by ``added_by`` (both
    ``time.monotonic()``: before its knock began, once its rule was seen), closed, and
    neither before its duration nor more than ``slack`` s after it."""
    assert seen.closed is not None, "the door never closed"
    assert seen.closed - added_after > duration, f"closed early: {seen.closed - added_after:.2f} s"
    if seen.last_open is not None:
        late = seen.last_open - added_by
        assert late < duration + slack, f"still open after {late:.2f} s (of {duration} s)"


def _port_list(ports: int | Iterable[int]) -> list[int]:
    plist = sorted({ports} if isinstance(ports, int) else set(ports))
    if not plist or not all(0 < p < 65536 for p in plist):
        raise ValueError(f"bad port list: {ports!r}")
    return plist


def nft_drop(ns: str, ports: int | Iterable[int], proto: str = "tcp") -> None:
    """Drop incoming ``proto`` ("tcp"/"udp") packets to ``ports`` in ``ns``.

    Uses its own ``table inet aioknock_test`` (chain ``input``); may be called again
    to add more rules.  Dropped SYNs get no answer, as behind a real firewall.
    """
    if proto not in {"tcp", "udp"}:
        raise ValueError(f"proto must be tcp or udp, not {proto!r}")
    elems = ", ".join(map(str, _port_list(ports)))
    ruleset = (
        "table inet aioknock_test {\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        f"    {proto} dport {{ {elems} }} counter drop\n"
        "  }\n"
        "}\n"
    )
    ns_run(ns, ["nft", "-f", "-"], input=ruleset)


# -------------------------------------------------------------------- capture


class Packet(NamedTuple):
    """One captured packet (``timestamp`` is the kernel's, seconds since the epoch)."""

    timestamp: float
    src: str
    dst: str
    dport: int
    proto: str


_LINE = re.compile(r"^(\d+\.\d+) IP6? (\S+)\.(\d+) > (\S+)\.(\d+): (.*)$")


def parse_tcpdump(text: str) -> list[Packet]:
    """Parse ``tcpdump -nn -tt -q`` lines; lines without ports (ICMP, ARP…) are ignored."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        ts, src, _sport, dst, dport, rest = m.groups()
        # -q prints "tcp <len>" / "UDP, length <len>" whatever the port's protocol.
        proto = rest.split(None, 1)[0].rstrip(",:").lower() if rest else "?"
        out.append(Packet(float(ts), src, dst, int(dport), proto))
    return out


class Capture:
    """tcpdump on ``iface`` in ``ns`` writing a pcap (``-U --immediate-mode``).

    ``start()`` returns only once tcpdump reports "listening on"; ``stop()`` waits
    ``settle`` seconds, sends SIGINT, waits for tcpdump to flush and exit, and
    returns the parsed packets (also kept in ``packets``; ``text`` holds the full
    ``tcpdump -nn -tt`` decode for assertion messages, ``kernel_dropped`` tcpdump's
    drop count).  Usable as a context manager.
    """

    def __init__(self, ns: str, iface: str, bpf: str = SYN_FILTER, path: Path | None = None):
        self.ns, self.iface, self.bpf = ns, iface, bpf
        self._tmpdir = None if path else tempfile.mkdtemp(prefix="aktcpdump-")
        self.path = Path(path) if path else Path(self._tmpdir or "", "capture.pcap")
        self._errpath = self.path.with_suffix(".stderr")
        self._proc: subprocess.Popen[bytes] | None = None
        self.packets: list[Packet] = []
        self.text = ""
        self.kernel_dropped = 0

    def start(self, timeout: float = WAIT_LIMIT) -> Capture:
        """Start tcpdump and wait until it is really capturing."""
        cmd = ["tcpdump", "-i", self.iface, "-nn", "-U", "--immediate-mode", "-Z", "root"]
        with open(self._errpath, "wb") as err:
            self._proc = ns_popen(
                self.ns, [*cmd, "-w", str(self.path), self.bpf],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "listening on" not in (errtext := self._errpath.read_text(errors="replace")):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self._proc)
                raise RuntimeError(f"tcpdump did not start in {self.ns}: {errtext!r}")
            time.sleep(0.01)
        return self

    def stop(self, settle: float = 0.2, timeout: float = 5.0) -> list[Packet]:
        """Stop tcpdump (SIGINT, bounded wait) and return the captured packets."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.packets
        try:
            if proc.poll() is None:
                time.sleep(settle)
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    stop_process(proc)
                    raise RuntimeError("tcpdump did not stop on SIGINT") from None
            errtext = self._errpath.read_text(errors="replace")
            m = re.search(r"(\d+) packets? dropped by kernel", errtext)
            self.kernel_dropped = int(m.group(1)) if m else 0
            read = ["tcpdump", "-Z", "root", "-r", str(self.path), "-nn", "-tt"]
            self.text = _run(read).stdout
            self.packets = parse_tcpdump(_run([*read, "-q"]).stdout)
        finally:
            stop_process(proc)
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.packets

    def __enter__(self) -> Capture:
        return self if self._proc else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(settle=0.0)


# ------------------------------------------------------------ namespace pair


def _check_addr(addr: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if ipaddress.ip_address(addr) not in net:
        raise ValueError(f"{addr} is outside {net}; the harness only uses {net}")
    return addr


@dataclass
class NetnsPair:
    """A client and a server namespace joined by veth ``client_if`` <-> ``server_if``."""

    client: str
    server: str
    client_ip: str = "198.18.0.1"
    server_ip: str = "198.18.0.2"
    client_ip6: str = "fd00:198:18::1"
    server_ip6: str = "fd00:198:18::2"
    client_if: str = "veth-c"
    server_if: str = "veth-s"
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)

    def run(
        self, ns: str, cmd: Sequence[str], *, check: bool = True, timeout: float = 10.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``ns_run`` (``ns`` is ``self.client`` or ``self.server``)."""
        return ns_run(ns, cmd, check=check, timeout=timeout, input=input)

    def popen(self, ns: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """``ns_popen``; the process is terminated (then killed) when the pair exits."""
        proc = ns_popen(ns, cmd, **kwargs)
        self.procs.append(proc)
        return proc

    def nft_drop(self, ports: int | Iterable[int], proto: str = "tcp") -> None:
        """``nft_drop`` in the server namespace."""
        nft_drop(self.server, ports, proto)

    def capture(
        self, bpf: str = SYN_FILTER, *, ns: str | None = None, iface: str | None = None,
        path: Path | None = None,
    ) -> Capture:  # fmt: skip
        """Start (and register) a capture; default: server namespace, server veth."""
        ns = ns or self.server
        iface = iface or (self.client_if if ns == self.client else self.server_if)
        cap = Capture(ns, iface, bpf, path)
        self.captures.append(cap)
        return cap.start()

    def wait_port(self, port: int, proto: str = "tcp", timeout: float = WAIT_LIMIT) -> None:
        """``wait_port`` in the server namespace."""
        wait_port(self.server, port, proto, timeout)


def netns_exists(name: str) -> bool:
    """True if ``ip netns list`` shows ``name``."""
    out = _run(["ip", "netns", "list"]).stdout
    return any(line.split()[:1] == [name] for line in out.splitlines())


@contextlib.contextmanager
def netns_pair(
    client_ip: str = "198.18.0.1",
    server_ip: str = "198.18.0.2",
    prefix: int = 24,
    client_ip6: str = "fd00:198:18::1",
    server_ip6: str = "fd00:198:18::2",
    prefix6: int = 64,
) -> Iterator[NetnsPair]:
    """Create namespaces ``akc-<pid>-<n>`` / ``aks-<pid>-<n>`` joined by a veth pair.

    Addresses must lie in 198.18.0.0/15 and fd00:198:18::/48 (IPv6 added ``nodad``);
    ``lo`` and the veths are up.  On exit (also on error) registered captures are
    stopped, registered processes and anything else left in the namespaces are
    killed, and both namespaces are deleted.  Calls ``check_root()`` first.
    """
    check_root()
    for a in (client_ip, server_ip):
        _check_addr(a, _V4_NET)
    for a in (client_ip6, server_ip6):
        _check_addr(a, _V6_NET)
    n = next(_counter)
    pair = NetnsPair(
        f"akc-{os.getpid()}-{n}", f"aks-{os.getpid()}-{n}",
        client_ip, server_ip, client_ip6, server_ip6,
    )  # fmt: skip
    created: list[str] = []
    try:
        for ns in (pair.client, pair.server):
            _run(["ip", "netns", "add", ns])
            created.append(ns)
            # No DAD at all (link-local included): until the link-local address
            # left "tentative" (1-2 s) the kernel ignored neighbour solicitations.
            ns_run(ns, ["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
        # Distinct ifindexes: with equal ones (both 2) the kernel treats the carrier
        # change as non-urgent and the operstate stays DOWN for up to 1 s.
        _run(["ip", "-n", pair.client, "link", "add", pair.client_if, "index", "10",
              "type", "veth", "peer", "name", pair.server_if, "index", "11",
              "netns", pair.server])  # fmt: skip
        for ns, dev, ip4, ip6 in (
            (pair.client, pair.client_if, client_ip, client_ip6),
            (pair.server, pair.server_if, server_ip, server_ip6),
        ):
            _run(["ip", "-n", ns, "addr", "add", f"{ip4}/{prefix}", "dev", dev])
            _run(["ip", "-n", ns, "addr", "add", f"{ip6}/{prefix6}", "dev", dev, "nodad"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        for ns, dev in ((pair.client, pair.client_if), (pair.server, pair.server_if)):
            _wait_link_ready(ns, dev)
        yield pair
    finally:
        _teardown(pair, created)


def _wait_link_ready(ns: str, dev: str, timeout: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        link = _run(["ip", "-n", ns, "-br", "link", "show", "dev", dev]).stdout.split()
        tentative = _run(["ip", "-n", ns, "addr", "show", "dev", dev, "tentative"]).stdout
        if link[1:2] == ["UP"] and not tentative.strip():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dev} in {ns} not ready: {link} {tentative!r}")
        time.sleep(0.01)


def _teardown(pair: NetnsPair, created: list[str]) -> None:
    errors: list[BaseException] = []
    for cap in pair.captures:
        try:
            cap.stop(settle=0.0)
        except Exception as exc:
            errors.append(exc)
    for proc in pair.procs:
        try:
            stop_process(proc)
        except Exception as exc:
            errors.append(exc)
    for ns in created:
        # Stragglers (children of our processes) would keep the namespace alive.
        for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        res = _run(["ip", "netns", "del", ns], check=False)
        if res.returncode != 0:
            errors.append(CommandError(res.returncode, res.args, res.stdout, res.stderr))
    if errors:
        raise errors[0]
