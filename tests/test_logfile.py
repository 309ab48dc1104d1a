"""Log-file delivery: ``write_knock`` appends one whole line per knock.

Lines are read back with the same ``LogTemplate`` the daemon will use. No packet
is sent by anything here (the CLI run has ``logtofile`` and an explicit client).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from aioknock.asyncio.logfile import append_line, write_knock
from aioknock.codec.logtemplate import LogRecord, LogTemplate
from aioknock.config.settings import DEFAULT_FILEFORMAT
from aioknock.errors import SendError

CLIENT, REMOTE = "10.1.1.1", "192.0.2.7"
PORTS = [40000, 40017, 40255, 40001, 40128]
SHORT = "_DATE_ knock SRC=_CLIENT_ DST=_REMOTE_ SPT=_CLIENTPORT_ DPT=_REMOTEPORT_"


def _read(path: Path, template: str = DEFAULT_FILEFORMAT) -> list[LogRecord]:
    fmt = LogTemplate(template)
    text = path.read_text()
    assert text.endswith("\n")
    records = []
    for line in text.splitlines():
        record = fmt.match(line)
        assert record is not None, f"line does not match the template: {line!r}"
        records.append(record)
    return records


async def _write(path: Path, ports: list[int] = PORTS, timeout: float = 0, **kw: str) -> list[str]:
    template = LogTemplate(kw.get("template", DEFAULT_FILEFORMAT))
    return await write_knock(
        str(path), template, client=kw.get("client", CLIENT), remote=kw.get("remote", REMOTE),
        ports=ports, timeout=timeout,
    )  # fmt: skip


async def test_one_line_per_port_parsed_back(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    assert not path.exists()
    lines = await _write(path)
    assert path.read_text() == "".join(line + "\n" for line in lines)
    records = _read(path)
    assert [r.remoteport for r in records] == PORTS
    assert {(r.client, r.remote) for r in records} == {(CLIENT, REMOTE)}
    assert all(1024 <= r.clientport <= 65535 for r in records)
    assert all(r.date for r in records)
    assert all(" PROTO=TCP " in line and " SYN " in line for line in lines)
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0


async def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    path.write_text("an earlier line\n")
    await _write(path, [40000, 40001])
    await _write(path, [40002], template=SHORT)
    lines = path.read_text().splitlines()
    assert lines[0] == "an earlier line"
    assert [LogTemplate(DEFAULT_FILEFORMAT).match(x).remoteport for x in lines[1:3]] == [  # type: ignore[union-attr]
        40000, 40001,
    ]  # fmt: skip
    assert LogTemplate(SHORT).match(lines[3]) is not None
    assert len(lines) == 4


async def test_ipv6_addresses_and_custom_template(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    await _write(path, template=SHORT, client="2001:2::1", remote="2001:2::2")
    records = _read(path, SHORT)
    assert [(r.client, r.remote, r.remoteport) for r in records] == [
        ("2001:2::1", "2001:2::2", p) for p in PORTS
    ]


async def test_newline_in_template_keeps_one_line_per_knock(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    await _write(path, template="DPT=_REMOTEPORT_\nSRC=_CLIENT_\n")
    assert len(path.read_text().splitlines()) == len(PORTS)


async def _line_times(
    path: Path, timeout: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> tuple[list[float], float]:
    """When each line was first seen in the file (watched from another task, which
    sleeps with ``sleep``) and when ``write_knock`` returned, from before it was called."""
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def watch() -> None:
        while len(seen) < len(PORTS):
            count = len(path.read_text().splitlines()) if path.exists() else 0
            seen.extend([loop.time()] * (count - len(seen)))
            await sleep(0.002)

    watcher = asyncio.create_task(watch())
    t0 = loop.time()
    await _write(path, timeout=timeout)
    elapsed = loop.time() - t0
    async with asyncio.timeout(10):
        await watcher
    offsets = [t - t0 for t in seen]
    print("line offsets (ms):", [round(o * 1000, 1) for o in offsets])
    return offsets, elapsed


# What a loaded machine may add to a line's time (scheduling, the executor's first
# thread); a line is never early, so the lower bounds below are exact.
SLACK = 0.25


async def test_timeout_between_lines(tmp_path: Path) -> None:
    """Line i appears at start + i * timeout."""
    offsets, elapsed = await _line_times(tmp_path / "knock.log", 0.05)
    for i, off in enumerate(offsets):
        assert i * 0.05 <= off <= i * 0.05 + SLACK, offsets
    assert 4 * 0.05 <= elapsed < 4 * 0.05 + SLACK


async def test_a_late_wake_up_does_not_delay_the_lines_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every sleep of the writer overshoots by 0.3 s: each line is then at most that
    late (an absolute schedule catches up), not late by 0.3 s more per line."""
    real_sleep = asyncio.sleep

    async def late(delay: float) -> None:
        await real_sleep(delay + 0.3)

    monkeypatch.setattr(asyncio, "sleep", late)
    offsets, elapsed = await _line_times(tmp_path / "knock.log", 0.05, real_sleep)
    for i, off in enumerate(offsets):
        assert i * 0.05 <= off <= i * 0.05 + 0.3 + SLACK, offsets  # accumulated: i * 0.35
    assert elapsed < 4 * 0.05 + 0.3 + SLACK


async def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    writers, per = 8, 40
    jobs = [
        _write(path, list(range(40000 + 100 * w, 40000 + 100 * w + per)), client=f"10.0.0.{w}")
        for w in range(writers)
    ]
    results = await asyncio.gather(*jobs)
    records = _read(path)
    assert len(records) == writers * per
    assert sorted(path.read_text().splitlines()) == sorted(x for r in results for x in r)
    for w in range(writers):
        mine = [r.remoteport for r in records if r.client == f"10.0.0.{w}"]
        assert mine == list(range(40000 + 100 * w, 40000 + 100 * w + per))  # each in order


async def test_zero_ports_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "knock.log"
    assert await _write(path, []) == []
    assert not path.exists()


# ------------------------------------------------------------------------- failures


async def test_missing_directory_is_a_send_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "knock.log"
    with pytest.raises(SendError, match=rf"{path}.*No such file or directory"):
        await _write(path)


async def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SendError, match=rf"{tmp_path}.*Is a directory"):
        await _write(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
async def test_directory_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    path = locked / "knock.log"
    try:
        with pytest.raises(SendError, match=rf"{path}.*Permission denied"):
            await _write(path)
    finally:
        locked.chmod(0o700)


async def test_file_not_writable_under_a_file(tmp_path: Path) -> None:
    """A path through a regular file fails for root too (ENOTDIR)."""
    blocker = tmp_path / "plain"
    blocker.write_text("")
    path = blocker / "knock.log"
    with pytest.raises(SendError, match=rf"{path}.*Not a directory"):
        await _write(path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
async def test_write_failure_is_a_send_error() -> None:
    with pytest.raises(SendError, match=r"cannot write log file /dev/full.*No space"):
        await _write(Path("/dev/full"))


async def test_fifo_without_reader_fails_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    async with asyncio.timeout(5):
        with pytest.raises(SendError, match=rf"{path}"):
            await _write(path)


def test_append_line_adds_exactly_one_newline(tmp_path: Path) -> None:
    path = tmp_path / "f"
    append_line(str(path), "a")
    append_line(str(path), "b\n")
    assert path.read_text() == "a\nb\n"


# ------------------------------------------------------------------------ the CLI


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return subprocess.run(
        [sys.executable, "-m", "aioknock", "run", "-conf", str(empty), *args],
        capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path,
    )  # fmt: skip


def test_cli_logtofile_lines_match_json(tmp_path: Path) -> None:
    path = tmp_path / "portknock.log"
    res = _cli(
        tmp_path, "-logtofile", "-logfile", str(path), "-timeout", "0",
        "-client", "10.1.1.1", "-remote", "127.0.0.1", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    knock = json.loads(res.stdout.splitlines()[0])
    records = _read(path)
    assert [r.remoteport for r in records] == knock["ports"]
    assert {(r.client, r.remote) for r in records} == {("10.1.1.1", "127.0.0.1")}
    assert "Traceback" not in res.stderr


def test_cli_logfile_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "portknock.log"
    res = _cli(
        tmp_path, "-logtofile", "-logfile", str(path), "-timeout", "0",
        "-client", "10.1.1.1", "-remote", "127.0.0.1",
    )  # fmt: skip
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and str(path) in errors[0], res.stderr
    assert "Traceback" not in res.stderr
