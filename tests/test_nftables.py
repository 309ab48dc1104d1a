"""nftables scripts, ``run_argv`` and the backends; as root, the real thing in a namespace.

The end-to-end test is the proof that matters: behind a user table that drops
tcp/22 unless the daemon's mark is set, a listener is unreachable, reachable
after ``open`` for the client's address only, and unreachable again for new
connections once the element's timeout has passed in the kernel (connections
made while it was open live on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.engine import Stub, feed, grant, perform
from helpers.netns import (
    ANSWER_WAIT,
    WAIT_LIMIT,
    NetnsPair,
    check_closing,
    requires_root,
    watch_closing,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from aioknock.asyncio import actions
from aioknock.asyncio.actions import ActionError, CommandBackend, NftBackend, run_argv
from aioknock.config.settings import DaemonSettings
from aioknock.daemon import nftables
from aioknock.daemon.doors import Command, Door
from aioknock.daemon.engine import Engine, Policy
from aioknock.errors import ConfigError, InvalidValue

ROOT = Path(__file__).resolve().parent.parent
MARK = nftables.DEFAULT_MARK
V4 = Door.make("198.18.0.1", 22, "tcp")
V6 = Door.make("fd00:198:18::1", 22, "udp")

# ------------------------------------------------------------------ script text


def test_setup_script_text() -> None:
    script = nftables.setup_script("aioknock")
    assert script.endswith("\n")
    lines = script.splitlines()
    assert lines == [
        "add table inet aioknock",
        "add set inet aioknock allow4 { type ipv4_addr . inet_proto . inet_service; "
        "flags timeout; }",
        "add set inet aioknock allow6 { type ipv6_addr . inet_proto . inet_service; "
        "flags timeout; }",
        "add chain inet aioknock doors { type filter hook input priority -150; policy accept; }",
        "flush chain inet aioknock doors",
        "add rule inet aioknock doors ip saddr . meta l4proto . th dport @allow4 "
        "meta mark set meta mark or 0x4b4e4f43",
        "add rule inet aioknock doors ip6 saddr . meta l4proto . th dport @allow6 "
        "meta mark set meta mark or 0x4b4e4f43",
    ]
    # Nothing that could touch another table: every statement names ours.
    assert all(" inet aioknock " in line + " " for line in lines)
    assert "meta mark or 0x1\n" in nftables.setup_script("t", 1)
    assert "0xffffffff" in nftables.setup_script("t", 0xFFFFFFFF)


def test_open_and_close_script_text() -> None:
    assert nftables.open_script("aioknock", V4, 30) == (
        "add element inet aioknock allow4 { 198.18.0.1 . tcp . 22 timeout 30s }\n"
        "delete element inet aioknock allow4 { 198.18.0.1 . tcp . 22 }\n"
        "add element inet aioknock allow4 { 198.18.0.1 . tcp . 22 timeout 30s }\n"
    )
    assert nftables.close_script("kd", V6) == (
        "add element inet kd allow6 { fd00:198:18::1 . udp . 22 timeout 1s }\n"
        "delete element inet kd allow6 { fd00:198:18::1 . udp . 22 }\n"
    )


@pytest.mark.parametrize(("duration", "text"), [(0.2, "1s"), (1, "1s"), (2.1, "3s"), (30.0, "30s")])
def test_open_timeout_never_shorter_than_asked(duration: float, text: str) -> None:
    assert f" timeout {text} }}" in nftables.open_script("t", V4, duration)


@pytest.mark.parametrize(
    "name", ["", "1abc", "a b", "a;b", "a-b", "x" * 33, "ta\nble", "é", "a}", "inet aioknock"]
)
def test_bad_table_names(name: str) -> None:
    for call in (
        lambda: nftables.check_table(name),
        lambda: nftables.setup_script(name),
        lambda: nftables.open_script(name, V4, 30),
        lambda: nftables.close_script(name, V4),
        lambda: NftBackend(name),
    ):
        with pytest.raises(InvalidValue):
            call()
    with pytest.raises(ConfigError) as err:  # the setting says which key
        DaemonSettings.of(nft_table=name)
    assert err.value.key == "nft_table"


@pytest.mark.parametrize("mark", [0, -1, 1 << 32, True])
def test_bad_marks(mark: int) -> None:
    """Mark 0 would make the user's ``meta mark & 0x0 == 0x0 accept`` accept everything."""
    for call in (
        lambda: nftables.user_rules(mark),
        lambda: nftables.setup_script("t", mark),
        lambda: NftBackend("t", mark),
    ):
        with pytest.raises(InvalidValue):
            call()
    with pytest.raises(ConfigError) as err:
        DaemonSettings.of(nft_mark=mark)
    assert err.value.key == "nft_mark"


def test_user_rules_text() -> None:
    assert nftables.user_rules() == [
        "ct state established,related accept",
        "meta mark & 0x4b4e4f43 == 0x4b4e4f43 accept",
    ]
    assert nftables.user_rules(0x10)[1] == "meta mark & 0x10 == 0x10 accept"


_ELEMENT = re.compile(r"\{ ([0-9a-f.:]+) \. (tcp|udp) \. ([0-9]{1,5})(?: timeout [0-9]+s)? \}")


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    st.integers(1, 65535),
    st.sampled_from(["tcp", "udp"]),
    st.floats(0, 1e6),
)
def test_scripts_hold_only_the_grant(address: str, port: int, proto: str, duration: float) -> None:
    door = Door.make(address, port, proto)
    for script in (
        nftables.open_script("aioknock", door, duration),
        nftables.close_script("aioknock", door),
    ):
        for line in script.splitlines():
            m = _ELEMENT.search(line)
            assert m is not None, line
            assert m.groups() == (door.address, door.proto, str(door.port))
            assert line.startswith(("add element inet aioknock allow", "delete element inet "))
            assert f" allow{door.family} " in line


# ---------------------------------------------------------------------- run_argv

PY = sys.executable


async def test_run_argv_success_and_stdin() -> None:
    await run_argv([PY, "-c", "import sys; sys.exit(sys.stdin.read() != 'abc\\n')"], "abc\n")
    await run_argv([PY, "-c", "print('lots of output ' * 10000)"])


async def test_run_argv_missing_program() -> None:
    with pytest.raises(ActionError) as err:
        await run_argv(["/nonexistent/aioknock-fw", "x"])
    assert str(err.value) == "cannot run /nonexistent/aioknock-fw: No such file or directory"


async def test_run_argv_not_executable(tmp_path: Path) -> None:
    prog = tmp_path / "fw"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o644)
    if os.geteuid() == 0 and os.access(prog, os.X_OK):
        pytest.skip("root may execute anything here")
    with pytest.raises(ActionError, match=r"^cannot run .*/fw: Permission denied$"):
        await run_argv([str(prog)])


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("import sys; sys.stderr.write('\\n  first  problem \\nsecond\\n'); sys.exit(3)",
         "(exit 3): first problem"),
        ("print('only on stdout'); raise SystemExit(1)", "(exit 1): only on stdout"),
        ("raise SystemExit(2)", "(exit 2): no message"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
         "(killed by signal 9): no message"),
    ],
)  # fmt: skip
async def test_run_argv_failures_are_one_line(code: str, needle: str) -> None:
    with pytest.raises(ActionError) as err:
        await run_argv([PY, "-c", code, "arg with space"])
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith(needle), message
    assert "'arg with space'" in message  # the command, quoted as a shell would need
    assert "second" not in message.rsplit(" failed (", 1)[1]


def _spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the processes ``run_argv`` starts, as it starts them (a loaded machine
    may not run a child's Python within a short timeout: it could not say its own)."""
    pids: list[int] = []
    spawn = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    return pids


async def test_run_argv_timeout_kills(monkeypatch: pytest.MonkeyPatch) -> None:
    pids = _spawned(monkeypatch)
    start = time.monotonic()
    with pytest.raises(ActionError) as err:
        await run_argv([PY, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert str(err.value) == f"{PY} did not finish within 0.5 s"
    (pid,) = pids
    _assert_gone(pid)


async def test_run_argv_default_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "ACTION_TIMEOUT", 0.3)
    with pytest.raises(ActionError, match=r"did not finish within 0\.3 s"):
        await run_argv([PY, "-c", "import time; time.sleep(30)"])


async def test_run_argv_cancelled_leaves_no_process(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    task = asyncio.create_task(run_argv([PY, "-c", code]))
    deadline = time.monotonic() + WAIT_LIMIT
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _assert_gone(int(pidfile.read_text()))


def _assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(("argv", "needle"), [([], "empty command"), (["a\0b"], "cannot run a")])
async def test_run_argv_unrunnable(argv: list[str], needle: str) -> None:
    with pytest.raises(ActionError, match=needle) as err:
        await run_argv(argv)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------- backends

RECORD = "import sys, json; open(sys.argv[1], 'a').write(json.dumps(sys.argv[2:]) + '\\n')"


def _recorder(tmp_path: Path, what: str) -> Command:
    return Command((PY, "-c", RECORD, str(tmp_path / "calls"), what, "%IP%", "%PORT%",
                    "%PROTO%", "%DURATION%"))  # fmt: skip


def _calls(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "calls"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_command_backend_opens_once_and_closes(tmp_path: Path) -> None:
    """The engine (on a fake clock) decides, the backend runs what it is handed."""
    backend = CommandBackend(_recorder(tmp_path, "open"), _recorder(tmp_path, "close"))
    assert not backend.closes_itself
    await backend.setup()
    stub = Stub()
    engine = Engine(Policy(30, 0), [stub])

    async def knock(door: Door, now: float, duration: float | None = None) -> None:
        verdict = grant(door.address, door.port, proto=door.proto, duration=duration)
        await perform(engine, backend, feed(engine, stub, verdict, now=now))

    async def timer(now: float) -> None:
        engine.handle_timer(now)
        await perform(engine, backend, engine.actions())

    await knock(V4, 0)
    await knock(V4, 1)  # an extension: a second rule would outlive the close
    await knock(V6, 28, 5.5)
    await timer(31)
    await knock(V4, 32)
    await timer(33.5)
    assert _calls(tmp_path) == [
        ["open", "198.18.0.1", "22", "tcp", "30"],
        ["open", "fd00:198:18::1", "22", "udp", "6"],
        ["close", "198.18.0.1", "22", "tcp", "30"],
        ["open", "198.18.0.1", "22", "tcp", "30"],
        ["close", "fd00:198:18::1", "22", "udp", "6"],
    ]


async def test_command_backend_failed_open_is_retried(tmp_path: Path) -> None:
    fail = Command((PY, "-c", "raise SystemExit('iptables: Resource temporarily unavailable')"))
    backend = CommandBackend(fail, None)
    for _ in range(2):
        with pytest.raises(ActionError, match="Resource temporarily unavailable"):
            await backend.open(V4, 30)
    await backend.close(V4, 30)  # no close command: nothing to run


async def test_test_mode_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("test mode ran a command")

    monkeypatch.setattr(actions, "run_argv", forbidden)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", forbidden)
    cmd = CommandBackend(_recorder(tmp_path, "open"), _recorder(tmp_path, "close"), test=True)
    nft = NftBackend("aioknock", test=True)
    with caplog.at_level(logging.INFO, "aioknock.daemon"):
        for backend in (cmd, nft):
            await backend.setup()
            await backend.open(V4, 30)
            await backend.close(V4, 30)
    assert _calls(tmp_path) == []
    assert caplog.text.count("test mode, not running") == 5  # nft: setup, open, close
    assert "198.18.0.1 . tcp . 22 timeout 30s" in caplog.text
    assert f"{PY} -c" in caplog.text


async def test_nft_backend_runs_nft_with_the_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str | None]] = []

    async def fake(argv: list[str], stdin: str | None = None, timeout: float | None = None) -> None:
        calls.append((argv, stdin))

    monkeypatch.setattr(actions, "run_argv", fake)
    backend = NftBackend("kd", 0x10)
    assert backend.closes_itself
    await backend.setup()
    await backend.open(V6, 7)
    await backend.close(V6, 7)
    assert calls == [
        (["nft", "-f", "-"], nftables.setup_script("kd", 0x10)),
        (["nft", "-f", "-"], nftables.open_script("kd", V6, 7)),
        (["nft", "-f", "-"], nftables.close_script("kd", V6)),
    ]


# ------------------------------------------------------------------ root: netns

NFT_DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    from aioknock.asyncio.actions import ActionError, NftBackend
    from aioknock.daemon.doors import Door
    from aioknock.errors import ConfigError
    backend = NftBackend(sys.argv[1])
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "setup":
                asyncio.run(backend.setup())
            else:
                grant = Door.make(args[0], int(args[1]), args[2])
                if cmd == "open":
                    asyncio.run(backend.open(grant, float(args[3])))
                else:
                    asyncio.run(backend.close(grant, 0))
            print("ok", flush=True)
        except (ActionError, ConfigError) as exc:
            print("error", exc, flush=True)
    """
)

# A connect that got through the DROP is an open door; its echo (a process's) gets
# ANSWER_WAIT, so that a slow echo server is no closed door (see netns.py).
CLIENT_DRIVER = textwrap.dedent(
    f"""
    import socket, sys
    held = None
    def connect(host, timeout):
        s = socket.create_connection((host, 22), timeout=timeout)
        s.settimeout({ANSWER_WAIT})
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise OSError("no echo")
        return s
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "connect":
                connect(args[0], float(args[1])).close()
            elif cmd == "hold":
                held = connect(args[0], float(args[1]))
            elif cmd == "ping":
                held.sendall(b"y")
                if held.recv(1) != b"y":
                    raise OSError("no echo")
            print("ok", flush=True)
        except OSError as exc:
            print("fail", exc, flush=True)
    """
)

ECHO_SERVER = textwrap.dedent(
    """
    import socket, threading, time
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", 22))
    srv.listen(16)
    srv.settimeout(0.5)
    def echo(conn):
        with conn:
            conn.settimeout(15)
            while data := conn.recv(64):
                conn.sendall(data)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
    """
)


class Driver:
    """A line-in, line-out helper process; every answer is awaited with a deadline."""

    def __init__(self, pair: NetnsPair, ns: str, code: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = pair.popen(
            ns, [PY, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
        )  # fmt: skip

    def ask(self, line: str, timeout: float = WAIT_LIMIT) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no answer to {line!r} within {timeout} s")
        answer = str(self.proc.stdout.readline()).strip()
        if not answer:
            assert self.proc.stderr is not None
            self.proc.kill()
            raise RuntimeError(f"driver died on {line!r}: {self.proc.stderr.read()}")
        return answer


def _nft(pair: NetnsPair, *args: str) -> str:
    return str(pair.run(pair.server, ["nft", *args]).stdout)


def _elements(pair: NetnsPair, name: str, table: str = "aioknock") -> dict[tuple[Any, ...], float]:
    """{(addr, proto, port): seconds until it expires} from the kernel."""
    text = _nft(pair, "list", "set", "inet", table, name)
    found = {}
    for m in re.finditer(
        r"([0-9a-f.:]+) \. (tcp|udp) \. (\d+) timeout \S+ expires (\S+?)[,\s]", text
    ):
        found[(m[1], m[2], int(m[3]))] = _seconds(m[4])
    assert len(found) == text.count(" expires "), text
    return found


def _left(value: float, timeout: float, since: float) -> bool:
    """Whether ``value`` is what an element of ``timeout`` s, set after ``since``
    (``time.monotonic()``), may have left now: however long its setting and listing took."""
    return timeout - (time.monotonic() - since) - 0.05 < value <= timeout


def _seconds(text: str) -> float:
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|d|h|m|s)", text))


def _user_table(mark: int = MARK) -> str:
    rules = "\n".join(f"    {rule}" for rule in nftables.user_rules(mark))
    return (
        textwrap.dedent(
            """
        table inet user {
          chain input {
            type filter hook input priority filter; policy accept;
        %s
            tcp dport 22 counter drop
          }
        }
        """
        )
        % rules
    )


@requires_root
def test_setup_idempotent_keeps_elements_and_other_tables(pair: NetnsPair) -> None:
    pair.run(pair.server, ["nft", "-f", "-"], input=_user_table())
    user_before = _nft(pair, "list", "table", "inet", "user")
    nft = Driver(pair, pair.server, NFT_DRIVER, "aioknock")
    assert nft.ask("setup") == "ok"
    assert nft.ask("open 198.18.0.1 22 tcp 30") == "ok"
    assert nft.ask("open fd00:198:18::1 22 udp 30") == "ok"
    ruleset = _nft(pair, "list", "ruleset")
    assert nft.ask("setup") == "ok"
    assert nft.ask("setup") == "ok"

    def steady(text: str) -> str:
        return re.sub(r" expires \S+?(?=[,\s])", "", text)

    assert steady(_nft(pair, "list", "ruleset")) == steady(ruleset)
    assert set(_elements(pair, "allow4")) == {("198.18.0.1", "tcp", 22)}
    assert set(_elements(pair, "allow6")) == {("fd00:198:18::1", "udp", 22)}
    chain = _nft(pair, "list", "chain", "inet", "aioknock", "doors")
    assert chain.count("meta mark set") == 2, chain  # flushed, not stacked
    assert "priority mangle" in chain
    assert _nft(pair, "list", "table", "inet", "user") == user_before
    tables = _nft(pair, "list", "tables").split("\n")
    assert sorted(t for t in tables if t) == ["table inet aioknock", "table inet user"]


@requires_root
def test_open_refresh_close_and_expiry(pair: NetnsPair) -> None:
    nft = Driver(pair, pair.server, NFT_DRIVER, "aioknock")
    assert nft.ask("setup") == "ok"
    opened = time.monotonic()
    assert nft.ask("open 198.18.0.1 22 tcp 10") == "ok"
    assert nft.ask("open ::ffff:198.18.0.1 23 udp 100") == "ok"
    assert nft.ask("open fd00:0198:0018::0001 22 tcp 10") == "ok"
    four, six = _elements(pair, "allow4"), _elements(pair, "allow6")
    assert set(four) == {("198.18.0.1", "tcp", 22), ("198.18.0.1", "udp", 23)}
    assert _left(four[("198.18.0.1", "tcp", 22)], 10, opened), four
    assert _left(four[("198.18.0.1", "udp", 23)], 100, opened), four
    assert set(six) == {("fd00:198:18::1", "tcp", 22)}

    time.sleep(1.5)
    before = _elements(pair, "allow4")[("198.18.0.1", "tcp", 22)]
    assert before < 10 - 1.5 + 0.05
    refreshed = time.monotonic()
    assert nft.ask("open 198.18.0.1 22 tcp 10") == "ok"  # a repeated knock: refreshed
    # Not refreshed, it would have 1.5 s less than this allows.
    after = _elements(pair, "allow4")[("198.18.0.1", "tcp", 22)]
    assert _left(after, 10, refreshed), (before, after)
    shortened = time.monotonic()
    assert nft.ask("open 198.18.0.1 23 udp 5") == "ok"  # the new timeout, not the old
    assert _left(_elements(pair, "allow4")[("198.18.0.1", "udp", 23)], 5, shortened)

    assert nft.ask("close 198.18.0.1 22 tcp") == "ok"
    assert set(_elements(pair, "allow4")) == {("198.18.0.1", "udp", 23)}
    assert nft.ask("close 198.18.0.1 22 tcp") == "ok"  # already closed
    assert nft.ask("close fd00:198:18::1 22 tcp") == "ok"
    assert _elements(pair, "allow6") == {}

    assert nft.ask("open 198.18.0.7 22 tcp 2") == "ok"
    assert ("198.18.0.7", "tcp", 22) in _elements(pair, "allow4")
    deadline = time.monotonic() + 2 + 10
    while ("198.18.0.7", "tcp", 22) in _elements(pair, "allow4"):
        assert time.monotonic() < deadline, "the kernel did not expire the element"
        time.sleep(0.1)
    assert nft.ask("close 198.18.0.7 22 tcp") == "ok"  # expired in the kernel: still fine
    assert nft.ask("open 198.18.0.7 22 tcp 1") == "ok"  # and it can be opened again


@requires_root
def test_errors_from_nft_are_one_line(pair: NetnsPair) -> None:
    nft = Driver(pair, pair.server, NFT_DRIVER, "aioknock")
    answer = nft.ask("open 198.18.0.1 22 tcp 10")  # no setup: no such table
    assert answer.startswith("error nft -f - failed (exit 1): "), answer
    assert "No such file or directory" in answer


@requires_root
def test_a_keyword_table_name_is_a_config_error(pair: NetnsPair) -> None:
    """nft cannot quote names, so "accept" fails in nft's parser: say which key to fix."""
    nft = Driver(pair, pair.server, NFT_DRIVER, "accept")
    answer = nft.ask("setup")
    assert answer == "error nft_table: 'accept' is an nftables keyword; choose another table name"


@requires_root
def test_door_opens_for_the_client_and_closes_in_the_kernel(pair: NetnsPair) -> None:
    """The proof: unreachable, reachable after open, unreachable again after the timeout."""
    pair.run(pair.server, ["nft", "-f", "-"], input=_user_table())
    pair.popen(pair.server, [PY, "-c", ECHO_SERVER])
    pair.wait_port(22)
    nft = Driver(pair, pair.server, NFT_DRIVER, "aioknock")
    client = Driver(pair, pair.client, CLIENT_DRIVER)
    server = pair.server_ip
    assert nft.ask("setup") == "ok"
    assert client.ask(f"connect {server} 0.4").startswith("fail")

    assert nft.ask(f"open {pair.client_ip} 22 udp 10") == "ok"  # another protocol
    assert nft.ask("open 198.18.0.99 22 tcp 10") == "ok"  # another address
    assert client.ask(f"connect {server} 0.4").startswith("fail")

    asked = time.monotonic()
    assert nft.ask(f"open {pair.client_ip} 22 tcp 2") == "ok"
    answered = time.monotonic()
    assert client.ask(f"connect {server} 2") == "ok"
    assert client.ask(f"hold {server} 2") == "ok"  # made while open: lives on
    assert client.ask(f"connect {pair.server_ip6} 0.4").startswith("fail")  # v6 not opened

    closing = watch_closing(lambda: client.ask(f"connect {server} 0.4") == "ok", 2 + 10.0, 0.1)
    check_closing(closing, 2, added_after=asked, added_by=answered)
    assert client.ask("ping") == "ok"
    counters = _nft(pair, "list", "chain", "inet", "user", "input")
    assert re.search(r"counter packets [1-9]", counters), counters


@requires_root
def test_ipv6_door_and_explicit_close(pair: NetnsPair) -> None:
    pair.run(pair.server, ["nft", "-f", "-"], input=_user_table())
    pair.popen(pair.server, [PY, "-c", ECHO_SERVER])
    pair.wait_port(22)
    nft = Driver(pair, pair.server, NFT_DRIVER, "aioknock")
    client = Driver(pair, pair.client, CLIENT_DRIVER)
    server6 = pair.server_ip6
    assert nft.ask("setup") == "ok"
    assert client.ask(f"connect {server6} 0.4").startswith("fail")
    assert nft.ask(f"open {pair.client_ip6} 22 tcp 30") == "ok"
    assert client.ask(f"connect {server6} 2") == "ok"
    assert client.ask(f"connect {pair.server_ip} 0.4").startswith("fail")  # v4 still shut
    assert nft.ask(f"close {pair.client_ip6} 22 tcp") == "ok"
    assert client.ask(f"connect {server6} 0.4").startswith("fail")
