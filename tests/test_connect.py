"""``aioknock connect HOST PORT`` on loopback, without root: the knock, the connection to
the address knocked, and the relay between stdin/stdout and the connection (half-closes
both ways, 50 MB intact, no busy loop, pipes, files and terminals), and the one error
line and exit status of each step that can fail. (As root, test_netns_ssh.py has the
real ssh log in through it to a real sshd behind a door that aioknock's daemon opens.)

Safety: every packet goes to 127.0.0.1 or ::1.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from helpers.daemons import daemon_env
from helpers.loopback import TIMEOUT, needs_ipv6, serving

from aioknock.asyncio import connect as connect_module
from aioknock.asyncio.connect import (
    FIRST_GAP,
    MAX_GAP,
    Relayed,
    RelayError,
    knock_settings,
    open_connection,
    relay,
)
from aioknock.config.loader import build_settings
from aioknock.config.settings import ClientSettings
from aioknock.config.values import override
from aioknock.errors import ConfigError

PY = sys.executable
BIG = 50 * 1024 * 1024
BAD_NAME = "x" * 70 + ".invalid"  # a label over 63 characters: refused before any DNS query


def connect_argv(host: str, port: int | str, **settings: str) -> list[str]:
    """``aioknock connect [-key=value ...] HOST PORT`` (``debug``, ``json``: bare switches)."""
    options = [
        f"-{key}" if key in SWITCHES else f"-{key}={value}" for key, value in settings.items()
    ]
    return [PY, "-m", "aioknock", "connect", *options, host, str(port)]


SWITCHES = {"debug", "json"}


# A fast knock (loopback answers each SYN with a RST at once) and a short verify_timeout.
FAST = {"timeout": "0", "verify_timeout": "1"}


def start(
    tmp: Path, host: str, port: int | str, *, stdin: Any = subprocess.PIPE,
    stdout: Any = subprocess.PIPE, **settings: str,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """``aioknock connect`` as a process, no config file found, stderr kept."""
    return subprocess.Popen(
        connect_argv(host, port, **{**FAST, **settings}), stdin=stdin, stdout=stdout,
        stderr=subprocess.PIPE, env=daemon_env(tmp), cwd=tmp,
    )  # fmt: skip


def finish(proc: subprocess.Popen[bytes], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """Exit status, stdout and stderr, bounded in time."""
    try:
        out, err = proc.communicate(stdin, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"connect did not finish: {err.decode(errors='replace')}") from None
    return proc.returncode, out or b"", err.decode(errors="replace")


def error_line(err: str) -> str:
    """The one line a failure prints (and nothing else on stderr)."""
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("aioknock: error: "), lines
    return lines[0].removeprefix("aioknock: error: ")


# ------------------------------------------------------------- loopback servers


def echo(conn: socket.socket) -> int:
    """Echo until EOF, then half-close: the relay's EOF goes in, and comes back out."""
    total = 0
    while data := conn.recv(1 << 20):
        conn.sendall(data)
        total += len(data)
    conn.shutdown(socket.SHUT_WR)
    return total


def read_all(conn: socket.socket) -> bytes:
    chunks = []
    while data := conn.recv(1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------ through the process


def test_relays_50_mb_both_ways_intact_and_fast(tmp_path: Path) -> None:
    """An echo server: 50 MB up while the same 50 MB come down, then EOF each way."""
    data = random.Random(11).randbytes(BIG)
    with serving(echo) as server:
        proc = start(tmp_path, "127.0.0.1", server.port)
        began = time.monotonic()
        status, out, err = finish(proc, data)
        took = time.monotonic() - began
    assert status == 0, err
    assert err == "", err
    assert len(out) == BIG and hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    assert server.results == [BIG]
    assert took < 10, f"{took:.2f} s for 50 MB each way"  # ~1 s here


def test_eof_on_stdin_is_passed_on_and_the_answer_still_comes_back(tmp_path: Path) -> None:
    def answer_after_eof(conn: socket.socket) -> bytes:
        got = read_all(conn)
        time.sleep(0.2)  # the relay must not have ended with stdin
        conn.sendall(b"got %d bytes" % len(got))
        return got

    with serving(answer_after_eof) as server:
        status, out, err = finish(start(tmp_path, "127.0.0.1", server.port), b"hello")
    assert (status, out, err) == (0, b"got 5 bytes", "")
    assert server.results == [b"hello"]


def test_eof_from_the_connection_ends_stdout_while_stdin_goes_on(tmp_path: Path) -> None:
    def banner_then_listen(conn: socket.socket) -> bytes:
        conn.sendall(b"banner")
        conn.shutdown(socket.SHUT_WR)
        return read_all(conn)

    with serving(banner_then_listen) as server:
        proc = start(tmp_path, "127.0.0.1", server.port)
        assert proc.stdout is not None and proc.stdin is not None
        assert read_until_eof(proc.stdout) == b"banner"  # while stdin is still open
        time.sleep(0.1)
        assert proc.poll() is None, "connect ended with the connection's EOF"
        status, _, err = finish(proc, b"late words")
    assert (status, err) == (0, "")
    assert server.results == [b"late words"]


def read_until_eof(stream: IO[bytes], within: float = TIMEOUT) -> bytes:
    """Everything up to EOF, or an AssertionError after ``within`` seconds."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(stream.read()), daemon=True)
    reader.start()
    reader.join(within)
    assert box, f"no EOF on stdout within {within} s"
    return box[0]


def test_no_busy_loop_while_idle(tmp_path: Path) -> None:
    """An open, silent connection costs no CPU: the loop waits, it does not poll."""
    with serving(read_all) as server:
        proc = start(tmp_path, "127.0.0.1", server.port)
        assert proc.stdin is not None
        proc.stdin.write(b"x")
        proc.stdin.flush()
        deadline = time.monotonic() + 5
        while server.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # past start-up
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        idle = cpu_seconds(proc.pid) - before
        status, _, err = finish(proc)
    assert (status, err) == (0, "")
    assert server.results == [b"x"]
    assert idle < 0.05, f"{idle:.3f} CPU-seconds in one idle second"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_stdin_and_stdout_may_be_regular_files(tmp_path: Path) -> None:
    """Files cannot be waited for (epoll refuses them): they are read and written at once."""
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    (tmp_path / "in").write_bytes(data)
    with (
        serving(echo) as server,
        open(tmp_path / "in", "rb") as src,
        open(tmp_path / "out", "wb") as dst,
    ):
        status, _, err = finish(start(tmp_path, "127.0.0.1", server.port, stdin=src, stdout=dst))
    assert (status, err) == (0, "")
    assert (tmp_path / "out").read_bytes() == data


def test_stdin_from_dev_null(tmp_path: Path) -> None:
    with serving(echo) as server:
        proc = start(tmp_path, "127.0.0.1", server.port, stdin=subprocess.DEVNULL)
        assert finish(proc) == (0, b"", "")
    assert server.results == [0]


def hello(conn: socket.socket) -> bytes:
    """Say hello, then read what comes until EOF."""
    conn.sendall(b"hello")
    conn.shutdown(socket.SHUT_WR)
    return read_all(conn)


def test_a_closed_stdin_reads_as_empty(tmp_path: Path) -> None:
    """``connect ... <&-``: the first socket must not take fd 0 and read itself."""
    with serving(hello) as server:
        proc = subprocess.Popen(
            connect_argv("127.0.0.1", server.port, **FAST), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env(tmp_path),
            cwd=tmp_path, preexec_fn=lambda: os.close(0),
        )  # fmt: skip
        assert finish(proc) == (0, b"hello", "")
    assert server.results == [b""]


def test_a_terminal_on_stdin_and_stdout(tmp_path: Path) -> None:
    """One pty for both (as in a shell): a line goes out, the echo comes back, ^D ends
    it; the terminal is blocking again afterwards (O_NONBLOCK is on the shared file)."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # oflag: no \n -> \r\n
        attrs[3] &= ~termios.ECHO  # lflag: the terminal does not echo; the server does
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        with serving(echo) as server:
            proc = start(tmp_path, "127.0.0.1", server.port, stdin=slave, stdout=slave)
            os.write(master, b"ping\n")
            assert read_exactly(master, 5) == b"ping\n"
            os.write(master, b"\x04")  # VEOF: read() returns b"" - EOF on stdin
            status, _, err = finish(proc)
        assert (status, err) == (0, "")
        assert server.results == [5]
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)


def read_exactly(fd: int, n: int, within: float = 5.0) -> bytes:
    deadline = time.monotonic() + within
    got = b""
    os.set_blocking(fd, False)
    while len(got) < n and time.monotonic() < deadline:
        try:
            got += os.read(fd, n - len(got))
        except BlockingIOError:
            time.sleep(0.01)
    return got


@needs_ipv6
def test_ipv6_with_a_fixed_sequence(tmp_path: Path) -> None:
    with serving(echo, "::1") as server:
        proc = start(tmp_path, "::1", server.port, sequence="7000,8000:udp,9000", debug="1")
        status, out, err = finish(proc, b"over ipv6")
    assert (status, out) == (0, b"over ipv6"), err
    assert "knock for ::1 (::1): 7000 8000 9000" in err, err
    assert re.search(r"::1: port \d+ open after 1 connection attempts", err), err


def test_spa_asks_for_tcp_port(tmp_path: Path) -> None:
    """``protocol = spa`` (the datagram goes to a loopback port nobody reads): the packet
    asks for tcp/PORT, the connection follows."""
    spa = {"protocol": "spa", "key": "spa key", "hmac_key": "hmac key", "debug": "1"}
    with serving(echo) as server:
        status, out, err = finish(start(tmp_path, "127.0.0.1", server.port, **spa), b"spa")
    assert (status, out) == (0, b"spa"), err
    assert f"SPA packet for 127.0.0.1 (tcp/{server.port}) to 127.0.0.1:" in err, err


def test_a_sealed_knock_then_the_connection(tmp_path: Path) -> None:
    """``protocol = sealed`` (SYNs into the sealed span, where loopback answers RST): the
    knock is its 16 SYNs, bound to the host as knocked; the connection follows."""
    sealed = {"protocol": "sealed", "key": "sealed passphrase", "debug": "1"}
    with serving(echo) as server:
        status, out, err = finish(start(tmp_path, "127.0.0.1", server.port, **sealed), b"x")
    assert (status, out) == (0, b"x"), err
    found = re.search(r"knock for 127\.0\.0\.1 \(127\.0\.0\.1\): ([0-9 ]+)\n", err)
    assert found, err
    ports = [int(p) for p in found.group(1).split()]
    assert len(ports) == 16 and all(32768 <= p <= 65535 for p in ports), ports


# --------------------------------------------------------------- each failing step


def test_a_name_that_does_not_resolve(tmp_path: Path) -> None:
    status, out, err = finish(start(tmp_path, BAD_NAME, 22))
    assert (status, out) == (1, b"")
    assert error_line(err).startswith(f"cannot resolve '{BAD_NAME}': "), err


@needs_ipv6
def test_a_knock_that_cannot_be_made(tmp_path: Path) -> None:
    """The default knock carries the client's IPv4 address; over IPv6 there is none."""
    status, out, err = finish(start(tmp_path, "::1", 22))
    assert (status, out) == (1, b"")
    assert error_line(err).startswith(
        "knock failed: CLIENT holds an IPv4 address, but the route to ::1"
    ), err


def test_a_port_that_stays_closed(tmp_path: Path) -> None:
    port = closed_port()
    began = time.monotonic()
    status, out, err = finish(start(tmp_path, "127.0.0.1", port, verify_timeout="0.6"))
    took = time.monotonic() - began
    assert (status, out) == (1, b"")
    assert error_line(err) == (
        f"127.0.0.1: port {port} still closed 0.6 s after the knock (Connection refused)"
    ), err
    assert 0.6 < took < 5, took


def test_a_connection_reset(tmp_path: Path) -> None:
    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")

    with serving(reset) as server:
        proc = start(tmp_path, "127.0.0.1", server.port)
        status, out, err = finish(proc)  # stdin stays open until the reset ends it
    assert (status, out) == (1, b"")
    line = error_line(err)
    assert line == (f"127.0.0.1 port {server.port}: connection lost: Connection reset by peer"), err


@pytest.mark.parametrize(
    ("port", "settings", "message"),
    [
        ("0", {}, "connect's PORT: expected a port 1-65535, got 0"),
        ("70000", {}, "connect's PORT: expected a port 1-65535, got 70000"),
        ("2222", {"portbytes": "1"}, "connect's PORT: port: expected a whole number 0-255"),
        ("22", {"logtofile": "yes"}, "logtofile: connect sends its knock; unset logtofile"),
        ("ssh", {}, "command line: PORT: expected a port number, got 'ssh'"),
        ("22", {"json": "yes"}, "command line: connect's stdout carries the connection"),
    ],
)
def test_configuration_errors_exit_2(
    tmp_path: Path, port: str, settings: dict[str, str], message: str
) -> None:
    status, out, err = finish(start(tmp_path, "127.0.0.1", port, **settings))
    assert (status, out) == (2, b"")
    assert error_line(err).startswith(message), err


def test_a_mistyped_command_suggests_connect(tmp_path: Path) -> None:
    argv = [PY, "-m", "aioknock", "conect", "h", "22"]
    res = subprocess.run(argv, capture_output=True, text=True, env=daemon_env(tmp_path),
                         timeout=TIMEOUT, check=False)  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    assert error_line(res.stderr).startswith("unknown command 'conect'; did you mean connect?")


# ------------------------------------------------------------------ the pieces


def test_the_knock_asks_for_port_unless_the_command_line_names_one() -> None:
    settings = ClientSettings.of(port=22, verify=0)
    assert knock_settings(settings, "h", 2222).port == 2222
    assert knock_settings(settings, "h", 2222).origin("port") == "connect's PORT"
    given = override(ClientSettings(), {"port": 22}, "command line")
    assert knock_settings(given, "h", 2222).port == 22
    spa = ClientSettings.of(protocol="spa", key="k", hmac_key="h")
    assert knock_settings(spa, "h", 2222).spa_access == (("tcp", 2222),)
    own = ClientSettings.of(protocol="spa", key="k", hmac_key="h", access="udp/53")
    assert knock_settings(own, "h", 2222).spa_access == (("udp", 53),)


def test_a_host_block_names_the_port_to_open(tmp_path: Path, clean_env: None) -> None:
    conf = tmp_path / "knockclient.conf"
    conf.write_text("port = 22\n<host bastion.example>\n  port = 2222\n</host>\n"
                    "<host *.example>\n  timeout = 0.5\n</host>\n")  # fmt: skip
    settings = build_settings(ClientSettings, path=conf, overrides={})
    bastion = knock_settings(settings, "bastion.example", 22022)
    assert (bastion.port, bastion.origin("port")) == (2222, f"{conf}:3")
    other = knock_settings(settings, "web.example", 22022)
    assert (other.port, other.timeout) == (22022, 0.5)


def test_knock_settings_refuse_a_port_out_of_range() -> None:
    with pytest.raises(ConfigError, match="expected a port 1-65535, got 65536"):
        knock_settings(ClientSettings(), "h", 65536)


def test_attempts_overlap_until_the_port_opens() -> None:
    """The port opens 0.4 s in: a new attempt every 0.05, 0.1, 0.2... s finds it."""
    port = closed_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    opened: list[float] = []

    def open_later() -> None:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        opened.append(time.monotonic())

    opener = threading.Timer(0.4, open_later)
    with listener:
        began = time.monotonic()
        opener.start()
        try:
            sock, attempts = open_connection("127.0.0.1", port, 5.0)
        finally:
            opener.join()
        took = time.monotonic() - began
        sock.close()
    # Found by the next attempt after the open, at most one gap later (gaps double, so
    # one is never longer than the time so far, nor MAX_GAP); the open is measured, not
    # assumed at 0.4 s: a loaded machine runs the timer late.
    at = opened[0] - began
    assert 0 <= took - at < min(at + FIRST_GAP, MAX_GAP) + 0.4, (took, at)
    assert attempts >= 4, attempts


def test_refused_attempts_end_on_time() -> None:
    began = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        open_connection("127.0.0.1", closed_port(), 1.2)
    assert 1.2 <= time.monotonic() - began < 1.6


def test_unanswered_attempts_are_bounded_and_all_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A firewall that drops every SYN: attempts at 0, 0.05, 0.15, 0.35, 0.75, 1.55 s; at
    most IN_FLIGHT at once (the oldest given up first); none left when it gives up. A
    listening socket stands for an unanswered connect: it never becomes writable."""
    started: list[socket.socket] = []
    most = 0

    def unanswered(family: int, address: str, port: int) -> socket.socket:
        nonlocal most
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        started.append(sock)
        most = max(most, sum(s.fileno() != -1 for s in started))
        return sock

    monkeypatch.setattr(connect_module, "_attempt", unanswered)
    monkeypatch.setattr(connect_module, "IN_FLIGHT", 3)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer"):
        open_connection("127.0.0.1", 22, 2.0)
    assert 2.0 <= time.monotonic() - began < 2.4
    running = [s for s in started if s.fileno() != -1]
    assert len(started) == 6 and most == 3 and not running, (started, most, running)


def _relaying(
    ours: socket.socket, stdin_fd: int, stdout_fd: int, counts: Relayed | None = None
) -> tuple[threading.Thread, list[BaseException]]:
    """The relay in a thread (it blocks in poll()), and where its exception lands."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            relay(ours, stdin_fd, stdout_fd, counts)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_relay_half_closes_each_way() -> None:
    """The relay alone: a socket pair stands for the connection, pipes for stdin/stdout."""
    ours, peer = socket.socketpair()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    counts = Relayed()
    thread, errors = _relaying(ours, stdin_r, stdout_w, counts)
    try:
        os.write(stdin_w, b"up")
        os.close(stdin_w)
        stdin_w = -1
        peer.settimeout(5)
        assert read_all(peer) == b"up"  # then EOF: SHUT_WR
        peer.sendall(b"down")
        assert thread.is_alive()
        peer.shutdown(socket.SHUT_WR)
        thread.join(5)
        assert not thread.is_alive() and not errors, errors
        # stdout's end: /dev/null took the fd, so the pipe's reader sees EOF.
        assert os.read(stdout_r, 100) == b"down" and os.read(stdout_r, 100) == b""
        assert (counts.up, counts.down) == (2, 4)
    finally:
        ours.close()
        peer.close()
        for fd in (stdin_r, stdin_w, stdout_r, stdout_w):
            if fd >= 0:
                os.close(fd)


def test_relay_stops_when_stdout_is_gone() -> None:
    ours, peer = socket.socketpair()
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    os.close(stdout_r)
    try:
        peer.sendall(b"nobody reads this")
        thread, errors = _relaying(ours, stdin_r, stdout_w)
        thread.join(5)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], RelayError), errors
        assert "cannot write stdout: Broken pipe" in str(errors[0])
    finally:
        for fd in (stdin_r, stdin_w, stdout_w):
            os.close(fd)
        ours.close()
        peer.close()


def test_relay_with_one_socket_for_stdin_and_stdout() -> None:
    """inetd style: fd 0 and 1 one socket. The connection ends first: the socket's
    sending side is shut down, and its reading side goes on into the connection."""
    ours, peer = socket.socketpair()
    stdio, user = socket.socketpair()
    counts = Relayed()
    thread, errors = _relaying(ours, stdio.fileno(), stdio.fileno(), counts)
    try:
        peer.sendall(b"down")
        peer.shutdown(socket.SHUT_WR)
        user.settimeout(5)
        assert read_all(user) == b"down"  # and EOF: stdout has ended
        user.sendall(b"up")
        user.shutdown(socket.SHUT_WR)
        peer.settimeout(5)
        assert read_all(peer) == b"up"
        thread.join(5)
        assert not thread.is_alive() and not errors, errors
        assert (counts.up, counts.down) == (2, 4)
    finally:
        for s in (ours, peer, stdio, user):
            s.close()
