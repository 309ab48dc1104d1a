"""The fleet sender on loopback (no root): ``knock_many``, ``knock``, hosts files, the CLI.

Every packet goes to 127.0.0.0/8: each 127.x.y.z is a host of the fleet, and a
few of them run listeners that record the order in which knocks arrive. Names
that must fail to resolve are longer than DNS allows (a label over 63 characters),
so they are rejected locally and no DNS query leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.loopback import needs_ipv6

import aioknock
from aioknock import ClientSettings, KnockResult, decode_knock, knock, knock_many
from aioknock.asyncio import fleet, hostknock
from aioknock.cli.hosts import from_lines, parse_line, read_hosts_file, stdin_hosts
from aioknock.errors import ConfigError

REPO = Path(aioknock.__file__).resolve().parent.parent
SPAN = (40000, 40255)
BAD_NAME = "x" * 70 + ".invalid"  # a label over 63 characters: rejected before any DNS query
HOSTS = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(200)]


def settings(**kw: Any) -> ClientSettings:
    base: dict[str, Any] = {
        "portspan": f"{SPAN[0]}-{SPAN[1]}",
        "knock": "PORT,RAND,CHECKSUM",
        "encrypt": True,
        "key": "fleet-key",
        "iv": True,
        "timeout": 0.01,
    }
    return ClientSettings.of(**(base | kw))


# struct tcp_info: 8 one-byte fields, then u32s; tcpi_last_ack_recv is the 13th u32.
TCP_INFO_SIZE = 104
LAST_ACK_RECV = 8 + 4 * 12
SAME_TICK = 0.01  # handshakes closer than this may be one burst: their order is unknown


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Listeners:
    """TCP listeners on ``hosts`` x ``ports``; records when the kernel completed each
    handshake (TCP_INFO's last_ack_recv), not when the loop got to it: after a stall,
    sockets ready in one pass come in any order."""

    def __init__(self, hosts: list[str], ports: range | list[int]) -> None:
        self.hosts, self.ports = hosts, list(ports)
        self.socks: list[socket.socket] = []
        self.seen: dict[str, list[tuple[float, int]]] = {h: [] for h in hosts}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Listeners:
        self.loop = asyncio.get_running_loop()
        for host in self.hosts:
            for port in self.ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(64)
                s.setblocking(False)
                self.loop.add_reader(s.fileno(), self._accept, s, host, port)
        return self

    def _accept(self, s: socket.socket, host: str, port: int) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                return
            with conn:
                info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
            since_ms = struct.unpack_from("I", info, LAST_ACK_RECV)[0]
            self.seen[host].append((time.monotonic() - since_ms / 1000, port))

    def in_order(self, host: str, expected: list[int]) -> bool:
        """The ports came in ``expected`` order wherever the kernel's clock (ms, in
        jiffies of up to 4 ms) tells them apart. Knocks that a stall sent back to back
        form one group, whose order it cannot see: only its ports are compared."""
        groups: list[list[int]] = []
        last = -math.inf
        for at, port in sorted(self.seen[host]):
            if at - last > SAME_TICK:
                groups.append([])
            groups[-1].append(port)
            last = at
        cuts = itertools.accumulate(len(g) for g in groups)
        parts = [expected[a:b] for a, b in itertools.pairwise([0, *cuts])]
        return sum(map(len, groups)) == len(expected) and all(
            sorted(g) == sorted(part) for g, part in zip(groups, parts, strict=True)
        )

    def close(self) -> None:
        for s in self.socks:
            if self.loop is not None and s.fileno() >= 0:
                self.loop.remove_reader(s.fileno())
            s.close()
        self.socks.clear()


@contextlib.contextmanager
def listening(hosts: list[str], ports: range | list[int]) -> Iterator[Listeners]:
    listeners = Listeners(hosts, ports)
    try:
        yield listeners.start()
    finally:
        listeners.close()


async def collect(it: AsyncIterator[KnockResult]) -> list[KnockResult]:
    return [r async for r in it]


# --------------------------------------------------------------------- knock_many


async def test_many_hosts_one_result_each_own_knock_in_order() -> None:
    s = settings()
    watched = [HOSTS[3], HOSTS[100], HOSTS[199]]
    # Watched hosts knock 50 ms apart, well above the kernel's handshake clock (1-4 ms)
    # by which Listeners orders them (the namespace tests check SYN order on the wire).
    targets: list[Any] = []
    for i, h in enumerate(HOSTS):
        extra: dict[str, Any] = {"port": 2222} if i % 10 == 0 else {}
        extra |= {"timeout": 0.05} if h in watched else {}
        targets.append((h, extra) if extra else h)
    with listening(watched, range(SPAN[0], SPAN[1] + 1)) as listeners:
        results = await collect(knock_many(targets, s))
        await asyncio.sleep(0.05)  # let the last accepts in
    by_host = {r.host: r for r in results}
    assert len(results) == len(HOSTS) and set(by_host) == set(HOSTS)
    assert all(r.ok and not r.error for r in results), [r.error for r in results if not r.ok]
    assert all(r.address == r.host for r in results)
    assert all(r.started <= r.finished for r in results)
    # Each host its own knock: fresh RAND and IV, so no two payloads alike.
    assert len({r.payload for r in results}) == len(results)
    assert len({tuple(r.ports) for r in results}) == len(results)
    for i, host in enumerate(HOSTS):
        r = by_host[host]
        assert len(r.ports) == len(r.attempts) == 24
        assert [a.port for a in r.attempts] == r.ports
        assert decode_knock(s, r.ports)["port"] == (2222 if i % 10 == 0 else 22)
    for host in watched:
        assert listeners.in_order(host, by_host[host].ports), (host, listeners.seen[host])
        assert {a.outcome for a in by_host[host].attempts} == {"open"}
    assert {a.outcome for a in by_host[HOSTS[5]].attempts} == {"refused"}


async def test_single_knock_api_settings_and_ports() -> None:
    with listening(["127.0.0.1"], [41001, 41002, 41003]) as listeners:
        r = await knock("127.0.0.1", [41003, 41001, 41002, 41001], timeout=0.02)
        await asyncio.sleep(0.05)
    assert r.ok and r.ports == [41003, 41001, 41002, 41001]
    assert listeners.in_order("127.0.0.1", [41003, 41001, 41002, 41001]), listeners.seen
    r2 = await knock("127.0.0.1", settings(port=8022))
    assert r2.ok and decode_knock(settings(), r2.ports)["port"] == 8022


async def test_failing_hosts_fail_alone() -> None:
    targets: list[Any] = [
        *HOSTS[:20], BAD_NAME, "224.0.0.1", ("127.0.0.9", {"port": "nope"}), *HOSTS[20:40]
    ]  # fmt: skip
    results = await collect(knock_many(targets, settings()))
    by_host = {r.host: r for r in results}
    assert len(results) == len(targets) == len(by_host)
    assert all(by_host[h].ok for h in HOSTS[:40])
    bad = by_host[BAD_NAME]
    assert not bad.ok and "cannot resolve" in bad.error and bad.address == ""
    mcast = by_host["224.0.0.1"]
    assert not mcast.ok and "unreachable" in mcast.error.lower(), mcast.error
    override = by_host["127.0.0.9"]
    assert not override.ok and "port" in override.error and "nope" in override.error
    # A per-host override needs knock settings, not a fixed sequence: that host alone fails.
    seq = await collect(knock_many(["127.0.0.1", ("127.0.0.2", {"port": 1})], [41010]))
    assert {r.host: r.ok for r in seq} == {"127.0.0.1": True, "127.0.0.2": False}


async def test_concurrency_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    inflight = peak = 0
    real = fleet._knock

    async def counting(*args: Any) -> KnockResult:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await real(*args)
        finally:
            inflight -= 1

    monkeypatch.setattr(fleet, "_knock", counting)
    base = open_fds()
    fds: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            fds.append(open_fds())
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    s = settings(timeout=0.02, encrypt=False)  # 4 knocks a host
    results = await collect(knock_many(HOSTS[:60], s, concurrency=8))
    stop.set()
    await sampler
    assert len(results) == 60 and all(r.ok for r in results)
    assert peak == 8
    # 8 hosts, each holding at most a few sockets (HOLD_MIN 0.05 s at 0.02 s gaps).
    assert max(fds) - base <= 8 * 4, (base, max(fds))
    assert max(fds) > base  # the sampler did see the knocks
    assert open_fds() == base
    with pytest.raises(ValueError):
        await collect(knock_many(HOSTS[:2], s, concurrency=0))


async def test_udp_knocks_arrive() -> None:
    loop = asyncio.get_running_loop()
    got: list[int] = []
    socks = []

    def receive(u: socket.socket, port: int) -> None:
        u.recv(64)
        got.append(port)

    try:
        for port in (41021, 41023):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(u)
            u.bind(("127.0.0.3", port))
            u.setblocking(False)
            loop.add_reader(u.fileno(), receive, u, port)
        with listening(["127.0.0.3"], [41022]) as tcp:
            seq = [(41021, "udp"), (41022, "tcp"), (41023, "udp")]
            results = await collect(knock_many(["127.0.0.3", "127.0.0.4"], seq, timeout=0.02))
            await asyncio.sleep(0.05)
    finally:
        for u in socks:
            loop.remove_reader(u.fileno())
            u.close()
    assert all(r.ok for r in results)
    assert got == [41021, 41023] and [p for _, p in tcp.seen["127.0.0.3"]] == [41022]
    r = next(r for r in results if r.host == "127.0.0.3")
    assert r.ports == [41021, 41022, 41023]
    assert [a.outcome for a in r.attempts] == ["sent", "open", "sent"]


async def test_verify_open_and_closed() -> None:
    with listening(["127.0.0.5"], [41031]):
        t0 = time.monotonic()
        results = await collect(
            knock_many(["127.0.0.5", "127.0.0.6"], [41030], timeout=0.0, verify=41031,
                       verify_timeout=1.0)
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    verified = {r.host: r.verified for r in results}
    assert verified == {"127.0.0.5": True, "127.0.0.6": False}
    ok = {r.host: (r.ok, r.error) for r in results}  # one meaning of ok: the port opened too
    assert ok == {
        "127.0.0.5": (True, ""),
        "127.0.0.6": (False, "127.0.0.6: port 41031 still closed 1 s after the knock"),
    }
    assert elapsed < 4  # the closed host's wait ends at verify_timeout (a loaded machine: + 3 s)
    plain = await knock("127.0.0.5", [41030], timeout=0.0)
    assert plain.verified is None


# ------------------------------------------------------------ cancellation, loops


async def _until_in_flight(task: asyncio.Task[None], fds: int, seen: list[KnockResult]) -> None:
    """Wait, not a fixed time, for results in hand and many attempts open: a loaded
    machine may start the fleet slowly (CI once saw 32 sockets open after 0.25 s)."""
    deadline = time.monotonic() + 10
    while not (seen and open_fds() > fds):
        assert not task.done(), "the fleet ended before many attempts were in flight"
        assert time.monotonic() < deadline, f"{open_fds()} fds open, {len(seen)} results"
        await asyncio.sleep(0.005)


async def _cancel_midway(breaking: bool) -> None:
    base = open_fds()
    targets = [f"127.2.{i // 250}.{i % 250 + 1}" for i in range(400)]
    # Sockets are held: 0.05 s gaps, so every host in flight has knocks open.
    seen: list[KnockResult] = []

    async def consume() -> None:
        async for r in knock_many(targets, [42000, 42001, 42002, 42003], timeout=0.05,
                                  concurrency=150, watch=False):  # fmt: skip
            seen.append(r)
            if breaking and len(seen) == 10:
                break

    task = asyncio.create_task(consume())
    if breaking:
        await asyncio.wait_for(task, 10)
    else:
        await _until_in_flight(task, base + 50, seen)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0)
    assert 0 < len(seen) < len(targets)
    assert open_fds() == base


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("breaking", [False, True], ids=["cancel", "break"])
def test_cancel_midway_closes_every_socket(loop: str, breaking: bool) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_cancel_midway(breaking))
        gc.collect()
    assert asyncio.get_event_loop_policy() is policy


def test_library_never_sets_the_loop_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the library changed the event loop policy")

    monkeypatch.setattr(asyncio, "set_event_loop_policy", refuse)
    uvloop = pytest.importorskip("uvloop")
    for factory in (None, uvloop.new_event_loop):
        with asyncio.Runner(loop_factory=factory) as runner:
            results = runner.run(collect(knock_many(HOSTS[:5], settings())))
            one = runner.run(knock("127.0.0.1", [41040], timeout=0))
        assert len(results) == 5 and all(r.ok for r in results) and one.ok


async def test_async_iterable_targets() -> None:
    async def gen() -> AsyncIterator[Any]:
        for h in HOSTS[:5]:
            await asyncio.sleep(0)
            yield h

    results = await collect(knock_many(gen(), [41050], timeout=0))
    assert sorted(r.host for r in results) == sorted(HOSTS[:5])


# -------------------------------------------------------------------- hosts files


def test_hosts_file_parsing(tmp_path: Path) -> None:
    text = (
        "# the fleet\n"
        "\n"
        "web1   # a comment after the host\n"
        "   db1.example port=2222 FLAG0=3\n"
        "127.0.0.1 timeout=0.5\n"
        "\t\n"
    )
    path = tmp_path / "hosts"
    path.write_text(text)
    assert read_hosts_file(str(path)) == [
        "web1",
        ("db1.example", {"port": "2222", "flag0": "3"}),
        ("127.0.0.1", {"timeout": "0.5"}),
    ]
    assert list(from_lines(["a", "# b", "c"], "x")) == ["a", "c"]
    assert parse_line("   ", "x:1") is None


@pytest.mark.parametrize(
    ("line", "key", "needle"),
    [
        ("host nosuch=1", "nosuch", "not a setting"),
        ("host port=abc", "port", "'abc'"),
        ("host port=70000", "port", "70000"),
        ("host flag0=x", "flag0", "'x'"),
        ("host port", None, "key=value"),
        ("port=22 host", None, "host first"),
    ],
)
def test_hosts_file_errors_name_file_line_and_key(
    tmp_path: Path, line: str, key: str | None, needle: str
) -> None:
    path = tmp_path / "fleet.txt"
    path.write_text(f"# header\n127.0.0.1\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_hosts_file(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}:3: "), msg
    assert needle in msg
    if key:
        assert f": {key}: " in msg


@pytest.mark.parametrize(
    ("line", "key", "needle"),
    [
        ("127.0.0.1 client=garbage", "client", "expected an IP address"),
        ("127.0.0.1 portbytes=1 port=300", "port", "expected a whole number 0-255"),
        ("127.0.0.1 knock=CLIENT,FLAG5", "knock", "flag5 is not set"),
        ("127.0.0.1 key_file=k.key", "key_file", "not a setting a host line can override"),
        ("127.0.0.1 remote=127.0.0.2", "remote", "not a setting a host line can override"),
    ],
)
def test_hosts_lines_checked_whole_before_anything_is_sent(
    tmp_path: Path, line: str, key: str, needle: str
) -> None:
    path = tmp_path / "fleet.txt"
    path.write_text(f"127.0.0.2\n{line}\n")
    with pytest.raises(ConfigError) as info:
        read_hosts_file(str(path), settings())
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: {key}: ") and needle in msg, msg


def test_an_empty_hosts_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fleet.txt"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ConfigError, match="no hosts in the hosts file"):
        read_hosts_file(str(path))


def test_log_to_file_honours_per_host_settings(
    cli: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    hosts = tmp_path / "fleet.txt"
    hosts.write_text("127.0.0.1 port=2222\n127.0.0.2\n")
    res = run_cli([*cli, "--hosts", str(hosts), "-logtofile", "-logfile",
                   str(tmp_path / "fw.log"), "-timeout", "0", "--json"], env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    ports = {o["host"]: o["values"][4:6] for o in json_lines(res)}
    assert ports == {"127.0.0.1": [8, 174], "127.0.0.2": [0, 22]}  # 2222 = 8 * 256 + 174


def test_hosts_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read hosts file"):
        read_hosts_file(str(tmp_path / "missing"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00host\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_hosts_file(str(tmp_path / "bin"))


async def test_stdin_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("# c\nh1\n\nh2 port=5\n"))
    assert [t async for t in stdin_hosts()] == ["h1", ("h2", {"port": "5"})]


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path) -> list[str]:
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    return [sys.executable, "-m", "aioknock", "run", "-conf", str(empty)]


def run_cli(
    cmd: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, input=stdin, env=env, timeout=30, check=False
    )


def json_lines(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


KEYS = {"host", "address", "started", "finished", "ok", "error", "verified", "ports"}


def test_cli_json_one_line_per_host(cli: list[str], env: dict[str, str]) -> None:
    res = run_cli([*cli, "127.0.0.1", "127.0.0.2", "--json", "-timeout", "0.01"], env)
    assert res.returncode == 0, res.stderr
    lines = json_lines(res)
    assert sorted(o["host"] for o in lines) == ["127.0.0.1", "127.0.0.2"]
    for o in lines:
        assert set(o) >= KEYS, o
        assert o["ok"] is True and o["error"] is None and o["verified"] is None
        assert o["address"] == o["host"]
        assert 0 < o["started"] <= o["finished"]
    assert "Traceback" not in res.stderr


def test_cli_hosts_file_and_stdin(cli: list[str], env: dict[str, str], tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# fleet\n127.0.0.1\n\n127.0.0.2 port=2222\n127.0.0.3\n")
    args = ["--json", "-timeout", "0.01", "-knock", "PORT,RAND,CHECKSUM"]
    res = run_cli([*cli, "--hosts", str(hosts), *args], env)
    assert res.returncode == 0, res.stderr
    by_host = {o["host"]: o for o in json_lines(res)}
    assert set(by_host) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    plain = ClientSettings.of(knock="PORT,RAND,CHECKSUM")
    assert decode_knock(plain, by_host["127.0.0.2"]["ports"])["port"] == 2222
    assert decode_knock(plain, by_host["127.0.0.1"]["ports"])["port"] == 22

    res = run_cli([*cli, "--hosts", "-", *args], env, stdin=hosts.read_text())
    assert res.returncode == 0, res.stderr
    assert {o["host"] for o in json_lines(res)} == set(by_host)

    bad = tmp_path / "bad"
    bad.write_text("127.0.0.1\n127.0.0.2 port=abc\n")
    res = run_cli([*cli, "--hosts", str(bad), *args], env)
    assert res.returncode == 2
    assert f"{bad}:2: port:" in res.stderr and "Traceback" not in res.stderr


def test_cli_exit_1_when_one_host_fails(cli: list[str], env: dict[str, str]) -> None:
    res = run_cli([*cli, "127.0.0.1", BAD_NAME, "127.0.0.2", "--json", "-timeout", "0"], env)
    assert res.returncode == 1, res.stderr
    by_host = {o["host"]: o for o in json_lines(res)}
    assert by_host["127.0.0.1"]["ok"] and by_host["127.0.0.2"]["ok"]
    assert not by_host[BAD_NAME]["ok"] and "cannot resolve" in by_host[BAD_NAME]["error"]
    assert "1 failed" in res.stderr and "Traceback" not in res.stderr


def test_cli_verify(cli: list[str], env: dict[str, str]) -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.7", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        res = run_cli(
            [*cli, "127.0.0.7", "127.0.0.8", "--json", "-sequence", "41060", "-timeout", "0",
             "-verify", str(port), "-verify_timeout", "1"], env,
        )  # fmt: skip
    verified = {o["host"]: o["verified"] for o in json_lines(res)}
    assert verified == {"127.0.0.7": True, "127.0.0.8": False}
    assert res.returncode == 1  # a host still closed is a failure
    assert "still closed" in res.stderr


def _until_sockets_open(proc: subprocess.Popen[str], count: int) -> None:
    """Wait, not a fixed time: a loaded machine may take seconds to start the fleet."""
    deadline = time.monotonic() + 30
    while sum(1 for fd in Path(f"/proc/{proc.pid}/fd").iterdir() if _is_socket(fd)) < count:
        assert proc.poll() is None, "the fleet ended before its hosts were in flight"
        assert time.monotonic() < deadline, f"fewer than {count} sockets open after 30 s"
        time.sleep(0.02)


def _is_socket(fd: Path) -> bool:
    try:
        return os.readlink(fd).startswith("socket:")
    except FileNotFoundError:  # closed while we looked
        return False


def test_cli_sigint_exits_130_with_summary(
    cli: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"127.3.{i // 250}.{i % 250 + 1}\n" for i in range(1000)))
    proc = subprocess.Popen(
        [*cli, "--hosts", str(hosts), "-timeout", "0.5", "-concurrency", "200",
         "-portspan", "42000-42255"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _until_sockets_open(proc, 100)  # hosts in flight (each takes 4 s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # the summary is the whole report
    assert "interrupted: 0 of 1000 hosts done" in lines[0], err
    assert "every socket is closed" in lines[0]


def test_default_concurrency_bounded_by_fds_and_send_rate() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # timeout 0: only file descriptors bound it (one socket per host at a time)
    assert fleet.default_concurrency(8, 0) == (soft - fleet.FD_HEADROOM) // 2
    # 100 ms: each host sends 10 SYN/s, so SYN_RATE / 10 hosts at most
    assert fleet.default_concurrency(8, 0.1) == min(
        fleet.SYN_RATE // 10, (soft - fleet.FD_HEADROOM) // 3
    )
    assert fleet.default_concurrency(8, 0.1, "connect") == min(
        fleet.CONNECT_RATE // 10, (soft - fleet.FD_HEADROOM) // 3
    )
    assert fleet.default_concurrency(8, 0.001) >= 1


# ------------------------------------------------------------- families, IPv6, display


@needs_ipv6
async def test_ipv6_targets_and_family_choice() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as srv:
        srv.bind(("::1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        results = await collect(
            knock_many(["::1", "127.0.0.1"], [port, port], timeout=0.01, family=socket.AF_INET6)
        )
        by_host = {r.host: r for r in results}
        assert by_host["::1"].ok and by_host["::1"].address == "::1"
        assert [a.outcome for a in by_host["::1"].attempts] == ["open", "open"]
        assert not by_host["127.0.0.1"].ok
        assert "127.0.0.1 is not an IPv6 address" in by_host["127.0.0.1"].error
        v4_only = await knock("::1", [port], family=socket.AF_INET)
        assert not v4_only.ok and "::1 is not an IPv4 address" in v4_only.error


@needs_ipv6
def test_cli_4_and_6(cli: list[str], env: dict[str, str]) -> None:
    res = run_cli([*cli, "-6", "::1", "127.0.0.1", "-sequence", "41071", "-timeout", "0",
                   "--json"], env)  # fmt: skip
    ok = {o["host"]: o["ok"] for o in json_lines(res)}
    assert ok == {"::1": True, "127.0.0.1": False}
    assert res.returncode == 1
    res = run_cli([*cli, "-4", "::1", "-sequence", "41071"], env)
    assert res.returncode == 1 and "::1 is not an IPv4 address" in res.stderr


def test_cli_runs_fleets_on_uvloop(cli: list[str], env: dict[str, str]) -> None:
    pytest.importorskip("uvloop")
    res = run_cli([*cli, "127.0.0.1", "127.0.0.2", "-sequence", "41072", "-timeout", "0",
                   "-debug"], env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "event loop: uvloop" in res.stderr


def test_one_host_needs_no_event_loop(env: dict[str, str]) -> None:
    """The one-host path (asyncio/oneshot.py) neither imports asyncio nor uvloop."""
    code = ("import sys; from aioknock.cli.main import main; "
            "status = main(['run', '127.0.0.1', '-sequence', '41072,41073:udp', '-timeout', '0',"
            " '-debug']); print(sorted(m for m in ('asyncio', 'uvloop', 'ssl') if m in "
            "sys.modules), status)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert res.stdout.strip() == "[] 0", res.stderr
    assert "127.0.0.1 port 41072: refused" in res.stderr
    assert "127.0.0.1 port 41073: sent" in res.stderr


def test_progress_only_on_a_terminal(cli: list[str], env: dict[str, str]) -> None:
    import fcntl
    import pty
    import struct
    import termios

    hosts = [f"127.4.0.{i}" for i in range(1, 41)]
    args = [*cli, *hosts, "-sequence", "41073,41074", "-timeout", "0.05"]
    # stderr a pipe: the summary line only.
    res = run_cli(args, env)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "knocked 40 hosts" in lines[0], res.stderr
    # stderr a terminal: a progress display (done/total, rate) before the summary.
    leader, follower = pty.openpty()
    # A new pty is 0 x 0; tqdm draws nothing that narrow. 24 rows, 100 columns:
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=follower, env=env)  # fmt: skip
        os.close(follower)
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(leader)
    text = out.decode(errors="replace")
    assert "/40" in text and "host/s" in text, text
    assert "knocked 40 hosts" in text


def _limited(limit: int, hard: int | None = None) -> Callable[[], None]:
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard or limit))

    return set_limit


@pytest.mark.parametrize("concurrency", [None, 500])
def test_a_low_open_files_limit_slows_a_fleet_but_fails_no_host(
    cli: list[str], env: dict[str, str], tmp_path: Path, concurrency: int | None
) -> None:
    """Issue 12: with a limit of 64 the default concurrency silently dropped to 1, and
    -concurrency 500 failed most hosts with "Too many open files", naming none."""
    hosts = tmp_path / "fleet.txt"
    hosts.write_text("".join(f"127.3.{i // 250}.{i % 250 + 1}\n" for i in range(300)))
    extra = ["-concurrency", str(concurrency)] if concurrency else []
    cmd = [*cli, "--hosts", str(hosts), "-timeout", "0", "-portspan", "42000-42255",
           "-knock", "PORT,RAND", "--json", *extra]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60,
                         preexec_fn=_limited(64), check=False)  # fmt: skip
    results = json_lines(res)
    assert res.returncode == 0, res.stderr
    assert len(results) == 300 and all(r["ok"] for r in results)
    warnings = [line for line in res.stderr.splitlines() if "open-files limit (64)" in line]
    assert len(warnings) == 1, res.stderr
    assert "ulimit -n" in warnings[0] and (concurrency is None or "not 500" in warnings[0])


def test_too_few_files_for_an_event_loop_is_one_line_and_one_host_still_knocks(
    cli: list[str], env: dict[str, str]
) -> None:
    """Under 32 open files that cannot be raised the loop (a fleet, the daemon) is refused
    up front, in one line; a one-host knock runs no loop and needs only its socket."""
    cmd = [*cli, "-timeout", "0", "-portspan", "42000-42255", "-knock", "PORT,RAND"]
    fleet = subprocess.run([*cmd, "127.0.0.1", "127.0.0.2"], capture_output=True, text=True,
                           env=env, timeout=30, preexec_fn=_limited(16), check=False)  # fmt: skip
    assert fleet.returncode == 1
    assert fleet.stderr == (
        "aioknock: error: the open-files limit is 16; aioknock needs at least 32 (ulimit -n)\n"
    )
    one = subprocess.run([*cmd, "127.0.0.1"], capture_output=True, text=True, env=env,
                         timeout=30, preexec_fn=_limited(16), check=False)  # fmt: skip
    assert one.returncode == 0 and "sent 3 knocks to 127.0.0.1" in one.stderr, one.stderr
    raised = subprocess.run([*cmd, "127.0.0.1", "127.0.0.2"], capture_output=True,
                            text=True, env=env, timeout=30, preexec_fn=_limited(16, 64),
                            check=False)  # fmt: skip
    assert raised.returncode == 0, raised.stderr  # the soft limit raised: the hard one allows
    probe = ("import resource\nfrom aioknock.cli.loop import _files_limit\n"
             "print(_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")  # fmt: skip
    limits = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                            text=True, env=env, timeout=30, preexec_fn=_limited(16, 64),
                            check=True)  # fmt: skip
    assert limits.stdout.split() == ["32", "32", "64"]


async def test_every_error_line_names_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_files(*_: Any) -> str:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(hostknock, "client_for", out_of_files)
    result = await knock("127.0.0.1", settings(knock="CLIENT,PORT"))
    assert not result.ok and result.error == "127.0.0.1: Too many open files"
