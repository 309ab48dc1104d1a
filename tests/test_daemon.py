"""The daemon end to end in file mode, without root: the client writes a faked firewall
log (the manual's debugging set-up) and the daemon opens and closes a door through
argument-list commands that create and remove a marker file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.daemons import FIRST_POLL, wait_said

from aioknock.asyncio.daemon import KnockDaemon
from aioknock.config.loader import build_settings
from aioknock.config.settings import DaemonSettings
from aioknock.errors import ConfigError

KEY = "correct horse"


def client(log: Path, *extra: str, key: str = KEY) -> None:
    env = {**os.environ, "AIOKNOCK_KEY": key, "HOME": str(log.parent)}
    subprocess.run(
        [sys.executable, "-m", "aioknock", "run", "-logtofile", "-logfile", str(log),
         "-timeout", "0", "-client", "127.0.0.1", "-encrypt", "-quiet", *extra],
        check=True, env=env, timeout=20,
    )  # fmt: skip


def daemon_settings(tmp_path: Path, **extra: Any) -> DaemonSettings:
    marker = tmp_path / "open-%IP%-%PROTO%-%PORT%"
    overrides: dict[str, Any] = {
        "runmode": "file",
        "logfile": str(tmp_path / "fw.log"),
        "log_format": "client",
        "backend": "command",
        "open": f"touch {marker}",
        "close": f"rm -f {marker}",
        "duration": 1.5,
        "cooldown": 0,
        "encrypt": True,
        "key": KEY,
        **extra,
    }
    return build_settings(DaemonSettings, path=None, overrides=overrides, sending=False)


async def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


class _Said(logging.Handler):
    """Sets ``event`` once a record's message starts with ``text`` (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.text):
            self.event.set()


@contextlib.asynccontextmanager
async def running(
    settings: DaemonSettings, *, first_poll: bool = False
) -> AsyncIterator[KnockDaemon]:
    """A daemon running in this loop until the block ends (then stopped, bounded).

    ``first_poll``: the block starts once the daemon has looked for its (missing) log,
    so that what is written from then on is read, however late the poll came.
    """
    if first_poll:
        assert not os.path.exists(settings.logfile), "at an existing log's end nothing is said"
    said = _Said(f"{settings.logfile} {FIRST_POLL}")
    follow_log = logging.getLogger("aioknock.follow")
    follow_log.addHandler(said)
    daemon = KnockDaemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        if first_poll:
            polled = await wait_for(lambda: said.event.is_set() or task.done(), 30)
            if task.done():
                task.result()  # its error, if it ended with one
            assert polled and said.event.is_set(), "the daemon did not poll its log"
        yield daemon
    finally:
        follow_log.removeHandler(said)
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_open_then_close_through_log_file(home: Path) -> None:
    settings = daemon_settings(home)
    marker = home / "open-127.0.0.1-tcp-2222"
    async with running(settings, first_poll=True) as daemon:
        before = time.monotonic()  # the knock is read after this: its door closes 1.5 s on
        await asyncio.to_thread(client, home / "fw.log", "-port", "2222")
        assert await wait_for(marker.exists), "the door did not open"
        assert await wait_for(lambda: not marker.exists()), "the door did not close"
        assert time.monotonic() - before >= 1.4  # 0.1 s for the daemon's other clock
        assert daemon.counts["accept"] == 1


async def test_wrong_key_and_test_mode_open_nothing(home: Path) -> None:
    settings = daemon_settings(home)
    async with running(settings, first_poll=True) as daemon:
        await asyncio.to_thread(client, home / "fw.log", key="not the key")
        assert await wait_for(lambda: daemon.counts["refuse"] == 1)
        assert not list(home.glob("open-*"))

    async with running(daemon_settings(home, test=True, from_start=True)) as test_mode:
        await asyncio.to_thread(client, home / "fw.log")
        assert await wait_for(lambda: test_mode.counts["accept"] == 1)
        await asyncio.sleep(0.3)
        assert not list(home.glob("open-*")), "-test must run nothing"


async def test_repeated_knock_extends_instead_of_stacking(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioknock")
    settings = daemon_settings(home, duration=4)
    marker = home / "open-127.0.0.1-tcp-22"
    again = home / "again.log"
    # The second knock's lines, written now: appended in one go while the door is open,
    # no client's start-up between its open and the extension.
    await asyncio.to_thread(client, again)
    async with running(settings, first_poll=True) as daemon:
        await asyncio.to_thread(client, home / "fw.log")
        assert await wait_for(marker.exists)
        await asyncio.sleep(1.2)  # an extended door closes well after the first deadline
        before = time.monotonic()
        with open(home / "fw.log", "a") as out:
            out.write(again.read_text())
        assert await wait_for(lambda: daemon.counts["accept"] == 2)
        assert "extending tcp/22 for 127.0.0.1 for 4 s" in caplog.text, caplog.text
        assert await wait_for(lambda: not marker.exists())
        # Read after ``before``, the second knock put the deadline 4 s after it; the
        # first deadline was at most 4 - 1.2 s after it.
        assert time.monotonic() - before >= 3.9, "the second knock should have extended the door"
    assert caplog.text.count("opening tcp/22 for 127.0.0.1") == 1, caplog.text
    assert caplog.text.count("closing tcp/22 for 127.0.0.1") == 1, caplog.text


async def test_a_slow_open_command_does_not_hold_up_other_knocks(home: Path) -> None:
    """Commands run in a worker: while one door's (slow) open runs, knocks keep being
    read and judged, and each door's commands still run in order."""
    marker, gate = home / "opened", home / "gate"
    # The open waits for the test's gate (bounded: 6 s), not for a fixed sleep that a
    # loaded machine can outlast before the second knock is even sent.
    wait = f"for i in $(seq 300); do [ -e {gate} ] && break; sleep 0.02; done"
    slow = f"sh -c '{wait}; echo %IP% >> {marker}'"
    async with running(daemon_settings(home, open=slow, close="true"), first_poll=True) as daemon:
        await asyncio.to_thread(client, home / "fw.log")
        assert await wait_for(lambda: daemon.counts["accept"] == 1)
        await asyncio.to_thread(client, home / "fw.log", "-client", "127.0.0.2")
        # Judged while the first open still waits for the gate.
        assert await wait_for(lambda: daemon.counts["accept"] == 2)
        assert not marker.exists()
        gate.touch()
        assert await wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 2,
                              8)  # fmt: skip
    assert marker.read_text().split() == ["127.0.0.1", "127.0.0.2"]


def test_sequence_door_config_and_errors(tmp_path: Path) -> None:
    conf = tmp_path / "knockdaemon.conf"
    conf.write_text(
        "backend = command\nopen = true\nencoded = no\n"
        "<door ssh>\n  sequence = 7000,8000:udp,9000\n  port = 22\n</door>\n"
    )
    settings = build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    assert settings.doors[0].sequence == ((7000, "tcp"), (8000, "udp"), (9000, "tcp"))
    conf.write_text("<door ssh>\n  sequence = 7000,70000\n</door>\n")
    with pytest.raises(ConfigError, match=r"knockdaemon.conf:2: sequence: expected ports"):
        build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    conf.write_text("<door ssh>\n  sequence = 7000,7001\n  colour = red\n</door>\n")
    with pytest.raises(ConfigError, match=r"knockdaemon.conf:3: colour: unknown door setting"):
        build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    conf.write_text("encoded = no\n<door ssh>\n  sequence = 7000,7001\n</door>\n")
    with pytest.raises(ConfigError, match=r"knockdaemon.conf:2: door 'ssh' needs the port to open"):
        build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    conf.write_text("knock = CLIENT,RAND,CHECKSUM\nbackend = command\nopen = true\n")
    with pytest.raises(
        ConfigError, match=r"knockdaemon.conf:1: knock: the daemon's knock needs a PORT"
    ):
        build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    conf.write_text("backend = command\n")
    missing = r"knockdaemon.conf: open: backend = command needs an open command"  # no line
    with pytest.raises(ConfigError, match=missing):
        build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    toml = tmp_path / "knockdaemon.toml"
    toml.write_text('encoded = false\n[door.web]\nsequence = "1,2:udp"\nport = 443\n')
    settings = build_settings(DaemonSettings, path=toml, overrides={}, sending=False)
    assert settings.doors[0].name == "web" and settings.doors[0].port == 443


async def test_stopping_closes_doors_opened_by_commands(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An iptables rule left behind would never be removed: stopping closes it."""
    caplog.set_level(logging.INFO, logger="aioknock")
    marker = home / "open-127.0.0.1-tcp-22"
    async with running(daemon_settings(home, duration=60), first_poll=True):
        await asyncio.to_thread(client, home / "fw.log")
        assert await wait_for(marker.exists), "the door did not open"
    assert not marker.exists(), "the door outlived the daemon"
    assert "closing tcp/22 for 127.0.0.1: the daemon is stopping" in caplog.text


def test_cli_daemon_reload_and_stop(tmp_path: Path) -> None:
    """A real process: SIGHUP re-reads the file, SIGTERM stops with exit 0 and a summary."""
    conf = tmp_path / "knockdaemon.conf"
    marker = tmp_path / "open-%IP%-%PORT%"
    conf.write_text(
        f"runmode = file\nlogfile = {tmp_path / 'fw.log'}\nlog_format = client\n"
        f"backend = command\nopen = touch {marker}\nduration = 30\n"
        f"encrypt = yes\nkey = {KEY}\nportspan = 2000-2255\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    err = tmp_path / "daemon.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aioknock", "daemon", "-conf", str(conf)],
            stderr=out, env=env,
        )  # fmt: skip
    try:
        at = wait_said(err, FIRST_POLL, [proc])  # what is written from now on is read
        client(tmp_path / "fw.log", "-portspan", "3000-3255")  # daemon still on 2000-2255
        # A wrong key in the daemon's span, refused: the knock before it was read by then.
        client(tmp_path / "fw.log", "-portspan", "2000-2255", key="not the key")
        at = wait_said(err, "refused knock from 127.0.0.1", [proc], at)
        assert not list(tmp_path.glob("open-*"))
        conf.write_text(conf.read_text().replace("2000-2255", "3000-3255"))
        proc.send_signal(signal.SIGHUP)
        wait_said(err, "configuration reloaded", [proc], at)  # what is read from now on
        client(tmp_path / "fw.log", "-portspan", "3000-3255", "-port", "2200")
        deadline = time.monotonic() + 30
        while not (tmp_path / "open-127.0.0.1-2200").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "open-127.0.0.1-2200").exists(), err.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    text = err.read_text()
    assert proc.returncode == 0, text
    assert " packets, 1 accepted, 1 refused, 0 ignored" in text, text  # the first: never
    assert "Traceback" not in text


def test_local_addresses() -> None:
    from aioknock.asyncio.daemon import LocalAddresses

    local = LocalAddresses(ttl=10)
    assert local("127.0.0.1", 0.0) and local("127.9.9.9", 0.0)  # all of 127/8 is local
    assert not local("198.51.100.7", 0.0)  # documentation range: nobody's address
    assert not local("224.0.0.1", 0.0)
    assert local._known["198.51.100.7"] == (False, 0.0)
    local._known["198.51.100.7"] = (True, 0.0)  # cached within ttl ...
    assert local("198.51.100.7", 5.0)
    assert not local("198.51.100.7", 11.0)  # ... asked again after it


async def test_a_reload_switches_only_once_its_backend_is_set_up(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While a reloaded configuration's firewall set-up runs, the old one goes on: its
    knocks open with the old backend, and the new backend runs nothing before its
    set-up; one whose set-up fails is never used."""
    from aioknock.asyncio import daemon as daemon_mod
    from aioknock.asyncio.actions import ActionError, Backend, CommandBackend

    gate = asyncio.Event()
    made = daemon_mod.make_backend

    class Gated(CommandBackend):
        async def setup(self) -> None:
            if "refuse" in str(self.open_cmd):
                raise ActionError("set-up refused")
            await gate.wait()

    def make_backend(settings: DaemonSettings) -> Backend:
        backend = made(settings)
        if "new-" in str(settings.open) and isinstance(backend, CommandBackend):
            return Gated(backend.open_cmd, backend.close_cmd)
        return backend

    monkeypatch.setattr(daemon_mod, "make_backend", make_backend)
    caplog.set_level(logging.INFO, logger="aioknock")
    new = home / "new-%IP%-%PORT%"
    async with running(daemon_settings(home, duration=60), first_poll=True) as daemon:
        daemon.reload(daemon_settings(home, duration=60, open=f"touch {new}"))
        await asyncio.to_thread(client, home / "fw.log", "-port", "2222")
        assert await wait_for(lambda: (home / "open-127.0.0.1-tcp-2222").exists())
        assert not list(home.glob("new-*")) and "configuration reloaded" not in caplog.text
        gate.set()
        assert await wait_for(lambda: "configuration reloaded" in caplog.text)
        await asyncio.to_thread(client, home / "fw.log", "-port", "2223")
        assert await wait_for(lambda: (home / "new-127.0.0.1-2223").exists())
        daemon.reload(daemon_settings(home, duration=60, open=f"touch {new}-refuse"))
        assert await wait_for(lambda: "reload failed, keeping the old configuration: set-up "
                              "refused" in caplog.text)  # fmt: skip
        await asyncio.to_thread(client, home / "fw.log", "-port", "2224")
        assert await wait_for(lambda: (home / "new-127.0.0.1-2224").exists())
    assert not list(home.glob("*refuse*"))


async def test_a_backend_bug_fails_that_action_only(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception in a backend is one error line for that door; the worker
    goes on, and stopping still closes what is open (it does not hang)."""
    from aioknock.asyncio import daemon as daemon_mod
    from aioknock.asyncio.actions import Backend, CommandBackend
    from aioknock.daemon.doors import Door

    class Buggy(CommandBackend):
        async def open(self, door: Door, duration: float) -> None:
            if door.port == 2222:
                raise RuntimeError("simulated bug")
            await super().open(door, duration)

    made = daemon_mod.make_backend

    def make_backend(settings: DaemonSettings) -> Backend:
        backend = made(settings)
        assert isinstance(backend, CommandBackend)
        return Buggy(backend.open_cmd, backend.close_cmd)

    monkeypatch.setattr(daemon_mod, "make_backend", make_backend)
    caplog.set_level(logging.INFO, logger="aioknock")
    async with running(daemon_settings(home, duration=60), first_poll=True):
        await asyncio.to_thread(client, home / "fw.log", "-port", "2222")
        await asyncio.to_thread(client, home / "fw.log", "-port", "2223")
        assert await wait_for(lambda: (home / "open-127.0.0.1-tcp-2223").exists())
    assert (
        "could not open tcp/2222 for 127.0.0.1: internal error: RuntimeError: simulated "
        "bug" in caplog.text
    )
    assert not (home / "open-127.0.0.1-tcp-2223").exists(), "stopping closes the door"


def test_a_configuration_that_names_unusable_things_is_refused(home: Path) -> None:
    """Issue 12: a logfile that is a directory or a FIFO, a missing interface or open
    program were accepted (at start, or by SIGHUP) and then stopped or hung the daemon."""
    fifo = home / "fifo"
    os.mkfifo(fifo)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"logfile": str(home)}, "logfile: .* is not a regular file"),
        ({"logfile": str(fifo)}, "logfile: .* is not a regular file"),
        ({"runmode": "network", "interface": "no-such-if0"}, "interface: no such network"),
        ({"open": "/nonexistent/iptables -I INPUT"}, "open: no program '/nonexistent/iptables'"),
        ({"close": "no-such-program-here %IP%"}, "close: no program 'no-such-program-here' on"),
    ]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            KnockDaemon(daemon_settings(home, **extra))
    daemon = KnockDaemon(daemon_settings(home))
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            daemon.reload(daemon_settings(home, **extra))
        assert daemon.settings.logfile == str(home / "fw.log")  # the old one goes on


async def test_a_hung_close_command_cannot_hold_the_stop(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: a hanging firewall command made SIGTERM take 38 s. The stop waits
    STOP_WAIT at most, says what was left undone, and kills the command."""
    from aioknock.asyncio import daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "STOP_WAIT", 0.5)
    caplog.set_level(logging.INFO, logger="aioknock")
    pidfile = home / "close.pid"
    hang = f"sh -c 'echo $$ > {pidfile}; exec sleep 60'"
    started = 0.0
    async with running(daemon_settings(home, duration=60, close=hang), first_poll=True):
        await asyncio.to_thread(client, home / "fw.log")
        assert await wait_for(lambda: (home / "open-127.0.0.1-tcp-22").exists())
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert "still running after 0.5 s, not done: close tcp/22 for 127.0.0.1" in caplog.text
    assert await wait_for(pidfile.exists)
    pid = int(pidfile.read_text())
    assert await wait_for(lambda: not Path(f"/proc/{pid}").exists()), "the command was left"


async def test_an_incomplete_knock_is_said_on_an_idle_daemon(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A packet that gives a recognizer its first deadline wakes the daemon's timer:
    with nothing else going on (no door, no other packet), the knock that never
    completes is logged when it expires, and counted."""
    settings = daemon_settings(home, knock_timeout=0.3)
    log = home / "fw.log"
    lines = home / "knock.log"
    await asyncio.to_thread(client, lines)  # a whole knock's lines, written elsewhere
    async with running(settings, first_poll=True):
        with open(log, "a") as out:
            out.writelines(lines.read_text().splitlines(keepends=True)[:3])
        with caplog.at_level(logging.INFO, logger="aioknock"):
            assert await wait_for(lambda: "incomplete knock" in caplog.text), caplog.text
    assert "incomplete knock: 3 of " in caplog.text
