"""``Follower``: ``tail -F`` semantics, driven poll by poll, plus the async iterator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioknock.asyncio import follow
from aioknock.asyncio.follow import Follower


def append(path: Path, data: bytes | str) -> None:
    with open(path, "ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "kern.log"


@pytest.fixture
def follower(log_path: Path) -> Iterator[Follower]:
    append(log_path, "old 1\nold 2\n")
    f = Follower(str(log_path))
    assert f.poll_once() == []  # opens the file: the end is where it stands now
    yield f
    f.close()


# ---------------------------------------------------------------- start position


def test_starts_at_the_end(log_path: Path, follower: Follower) -> None:
    assert follower.poll_once() == []
    append(log_path, "new 1\nnew 2\n")
    assert follower.poll_once() == ["new 1", "new 2"]
    assert follower.poll_once() == []


def test_from_start_reads_existing_content(log_path: Path) -> None:
    append(log_path, "old 1\nold 2\n")
    with Follower(str(log_path), from_start=True) as f:
        assert f.poll_once() == ["old 1", "old 2"]
        append(log_path, "new\n")
        assert f.poll_once() == ["new"]


def test_empty_file_at_start(log_path: Path) -> None:
    log_path.touch()
    with Follower(str(log_path)) as f:
        assert f.poll_once() == []
        append(log_path, "first\n")
        assert f.poll_once() == ["first"]


def test_fragment_at_the_end_on_start_is_skipped(log_path: Path) -> None:
    """Started in the middle of a line: its tail is not a line (it could misparse)."""
    append(log_path, "old\nSRC=198.18.0.1 DPT=4")
    with Follower(str(log_path)) as f:
        assert f.poll_once() == []
        append(log_path, "0001 SYN\n")
        assert f.poll_once() == []
        append(log_path, "next\n")
        assert f.poll_once() == ["next"]


def test_missing_at_start_then_read_from_its_start(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Follower(str(log_path)) as f, caplog.at_level(logging.WARNING, "aioknock.follow"):
        assert f.poll_once() == []
        assert f.poll_once() == []
        assert [r.message for r in caplog.records] == [
            f"{log_path} does not exist yet; waiting for it"
        ]
        append(log_path, "a\nb\n")
        assert f.poll_once() == ["a", "b"]
        append(log_path, "c\n")
        assert f.poll_once() == ["c"]


# ------------------------------------------------------------------ line framing


def test_partial_line_held_until_newline(log_path: Path, follower: Follower) -> None:
    append(log_path, "SRC=198.18.0.1 ")
    assert follower.poll_once() == []
    append(log_path, "DPT=40001")
    assert follower.poll_once() == []
    append(log_path, " SYN\nnext ")
    assert follower.poll_once() == ["SRC=198.18.0.1 DPT=40001 SYN"]
    append(log_path, "line\n")
    assert follower.poll_once() == ["next line"]


def test_byte_by_byte(log_path: Path, follower: Follower) -> None:
    got: list[str] = []
    for byte in b"one\ntwo\r\n\nthree\n":
        append(log_path, bytes([byte]))
        got += follower.poll_once()
    assert got == ["one", "two", "", "three"]


def test_crlf_and_empty_lines(log_path: Path, follower: Follower) -> None:
    append(log_path, "a\r\nb\r\n\r\n\nc\n")
    assert follower.poll_once() == ["a", "b", "", "", "c"]


def test_invalid_utf8_is_replaced(log_path: Path, follower: Follower) -> None:
    append(log_path, b"bad \xff\xfe here\nhalf \xe2\x82\n\xe2\x82\xac ok\n")
    assert follower.poll_once() == ["bad \ufffd\ufffd here", "half \ufffd", "\u20ac ok"]


def test_multibyte_character_split_across_polls(log_path: Path, follower: Follower) -> None:
    append(log_path, b"euro \xe2\x82")
    assert follower.poll_once() == []
    append(log_path, b"\xac\n")
    assert follower.poll_once() == ["euro \u20ac"]


def test_long_line_in_one_piece_dropped_with_warning(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_path.touch()
    with Follower(str(log_path), max_line=100) as f, caplog.at_level(logging.WARNING):
        assert f.poll_once() == []
        append(log_path, "before\n" + "x" * 101 + "\n" + "y" * 100 + "\nafter\n")
        assert f.poll_once() == ["before", "y" * 100, "after"]
    assert "dropping a line longer than 100 bytes" in caplog.text


def test_long_line_growing_over_polls_dropped_whole(
    log_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its tail, arriving after the limit was passed, must not come out as a line."""
    log_path.touch()
    with Follower(str(log_path), max_line=100) as f, caplog.at_level(logging.WARNING):
        assert f.poll_once() == []
        append(log_path, "z" * 60)
        assert f.poll_once() == []
        append(log_path, "z" * 60)
        assert f.poll_once() == []
        append(log_path, "SRC=198.18.0.1 DPT=40001 SYN")
        assert f.poll_once() == []
        append(log_path, "\nafter\n")
        assert f.poll_once() == ["after"]
    assert caplog.text.count("dropping a line longer") == 1


def test_default_limit_drops_a_huge_line(log_path: Path, follower: Follower) -> None:
    append(log_path, "a\n" + "x" * (follow.MAX_LINE + 1) + "\nb\n")
    assert follower.poll_once() == ["a", "b"]
    append(log_path, "x" * follow.MAX_LINE + "\n")
    assert follower.poll_once() == ["x" * follow.MAX_LINE]


def test_backlog_read_in_bounded_bites(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "READ_LIMIT", 64)
    expected = [f"line {i:04d}" for i in range(200)]
    append(log_path, "".join(line + "\n" for line in expected))
    with Follower(str(log_path), from_start=True) as f:
        got: list[str] = []
        for _ in range(100):
            batch = f.poll_once()
            assert len(batch) <= 64 // len("line 0000\n") + 1
            got += batch
        assert got == expected


# ---------------------------------------------------------- rotation, truncation


def test_rotation_reads_rest_of_old_file_then_new_from_start(
    log_path: Path, follower: Follower
) -> None:
    with open(log_path, "ab", buffering=0) as writer:
        writer.write(b"one\n")
        assert follower.poll_once() == ["one"]
        os.rename(log_path, str(log_path) + ".1")
        writer.write(b"two (old file, after the rename)\n")  # the writer has not reopened yet
        append(log_path, "three (new file)\n")
    assert follower.poll_once() == ["two (old file, after the rename)", "three (new file)"]
    append(log_path, "four\n")
    assert follower.poll_once() == ["four"]


def test_rotation_new_file_appears_later(log_path: Path, follower: Follower) -> None:
    rotated = Path(str(log_path) + ".1")
    os.rename(log_path, rotated)
    assert follower.poll_once() == []
    append(rotated, "late write to the old file\n")
    assert follower.poll_once() == ["late write to the old file"]
    append(log_path, "new\n")
    assert follower.poll_once() == ["new"]
    append(rotated, "ignored: the old file is no longer followed\n")
    append(log_path, "newer\n")
    assert follower.poll_once() == ["newer"]


def test_rotation_drops_unterminated_line_of_old_file(
    log_path: Path, follower: Follower, caplog: pytest.LogCaptureFixture
) -> None:
    append(log_path, "complete\nhalf a li")
    assert follower.poll_once() == ["complete"]
    os.rename(log_path, str(log_path) + ".1")
    append(log_path, "ne\nfresh\n")
    with caplog.at_level(logging.WARNING):
        assert follower.poll_once() == ["ne", "fresh"]
    assert "rotated in the middle of a line" in caplog.text


def test_delete_and_recreate(log_path: Path, follower: Follower) -> None:
    append(log_path, "a\n")
    assert follower.poll_once() == ["a"]
    log_path.unlink()
    assert follower.poll_once() == []
    append(log_path, "b\n")
    assert follower.poll_once() == ["b"]


def test_repeated_rotations(log_path: Path, follower: Follower) -> None:
    got: list[str] = []
    for n in range(5):
        append(log_path, f"gen {n}\n")
        got += follower.poll_once()
        os.replace(log_path, str(log_path) + ".1")
        append(log_path, f"gen {n} fresh\n")
    got += follower.poll_once()
    expected = [line for n in range(5) for line in (f"gen {n}", f"gen {n} fresh")]
    assert got == expected


def test_rotation_with_backlog_larger_than_one_bite(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follow, "READ_LIMIT", 32)
    log_path.touch()
    with Follower(str(log_path)) as f:
        assert f.poll_once() == []
        old = [f"old {i:03d}" for i in range(30)]
        append(log_path, "".join(x + "\n" for x in old))
        os.rename(log_path, str(log_path) + ".1")
        new = [f"new {i:03d}" for i in range(30)]
        append(log_path, "".join(x + "\n" for x in new))
        got: list[str] = []
        for _ in range(50):
            got += f.poll_once()
        assert got == old + new


def test_copytruncate(log_path: Path, follower: Follower) -> None:
    append(log_path, "before the copy\n")
    assert follower.poll_once() == ["before the copy"]
    with open(log_path, "r+b") as f:
        f.truncate(0)
    append(log_path, "after\n")
    assert follower.poll_once() == ["after"]
    append(log_path, "more\n")
    assert follower.poll_once() == ["more"]


def test_truncate_in_the_middle_of_a_line(log_path: Path, follower: Follower) -> None:
    append(log_path, "half a li")
    assert follower.poll_once() == []
    os.truncate(log_path, 0)
    append(log_path, "x\n")
    assert follower.poll_once() == ["x"]


def test_close_is_final_and_idempotent(log_path: Path) -> None:
    f = Follower(str(log_path), from_start=True)
    append(log_path, "a\n")
    assert f.poll_once() == ["a"]
    f.close()
    f.close()
    append(log_path, "b\n")
    assert f.poll_once() == []


# -------------------------------------------------------------------------- async


async def _opened(f: Follower) -> None:
    """Until the first poll has opened the file and taken its end as the start: lines
    appended before that would count as the file's old content and be skipped."""
    deadline = time.monotonic() + 10
    while f._file is None:
        assert time.monotonic() < deadline, "the first poll did not open the file"
        await asyncio.sleep(0.005)


async def _collect(it: object, count: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    assert hasattr(it, "__anext__")
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got += await asyncio.wait_for(it.__anext__(), max(0.01, deadline - time.monotonic()))
    return got


async def test_lines_delivers_batches_and_closes_on_aclose(log_path: Path) -> None:
    log_path.touch()
    f = Follower(str(log_path), poll=0.01)
    it = f.lines()
    first = asyncio.ensure_future(it.__anext__())
    await _opened(f)
    await asyncio.sleep(0.05)
    assert not first.done()
    append(log_path, "one\ntwo\n")
    assert await asyncio.wait_for(first, 10) == ["one", "two"]
    append(log_path, "thr")
    await asyncio.sleep(0.05)
    append(log_path, "ee\n")
    assert await _collect(it, 1) == ["three"]
    os.rename(log_path, str(log_path) + ".1")
    append(log_path, "four\n")
    assert await _collect(it, 1) == ["four"]
    await it.aclose()
    assert f._file is None


async def test_lines_closes_file_when_cancelled(log_path: Path) -> None:
    log_path.touch()
    f = Follower(str(log_path), poll=0.01)
    got: list[str] = []

    async def consume() -> None:
        async for batch in f.lines():
            got.extend(batch)

    task = asyncio.create_task(consume())
    await _opened(f)
    append(log_path, "seen\n")
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert got == ["seen"]
    assert f._file is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert f._file is None


async def test_cancel_during_a_slow_poll_leaks_no_file(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker thread may still be polling (and opening) when the task is cancelled."""
    original = Follower._poll
    polling = threading.Event()

    def slow_poll(self: Follower) -> list[bytes]:
        polling.set()
        time.sleep(0.1)
        return original(self)

    monkeypatch.setattr(Follower, "_poll", slow_poll)
    append(log_path, "x\n")
    f = Follower(str(log_path), poll=0.01)

    async def consume() -> None:
        async for _ in f.lines():
            pass

    task = asyncio.create_task(consume())
    # Cancelled once the first poll (which opens the file) is in progress: a loaded
    # machine may start it later than any fixed sleep.
    assert await asyncio.to_thread(polling.wait, 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # a stray poll would have opened the file by now
    assert f._file is None


@pytest.mark.parametrize("kind", ["directory", "loop"])
def test_an_unreadable_path_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "log"
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path)
    with follow.Follower(str(path)) as f, pytest.raises(follow.FollowError, match="cannot read"):
        f.poll_once()


# ------------------------------------------------------------- issue 12: faults


def test_copytruncate_that_grew_past_the_offset_between_polls(
    log_path: Path, follower: Follower, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: truncated and written past where reading stood, within one poll: the
    size alone did not tell, and the 8 knock lines in it were lost without a word."""
    append(log_path, "x" * 200 + "\n")
    assert follower.poll_once() == ["x" * 200]
    with open(log_path, "r+b") as f:
        f.truncate(0)
    knock = [f"SRC=198.18.0.1 DPT={40000 + i} SYN knock line {i:02d}" for i in range(8)]
    append(log_path, "".join(line + "\n" for line in knock))
    assert os.path.getsize(log_path) > 201
    with caplog.at_level(logging.WARNING):
        assert follower.poll_once() == knock
    assert "truncated and written again" in caplog.text
    append(log_path, "next\n")
    assert follower.poll_once() == ["next"]


def test_a_size_that_shrank_between_polls_is_a_truncation(
    log_path: Path, follower: Follower
) -> None:
    append(log_path, "a\nb\n")
    assert follower.poll_once() == ["a", "b"]
    with open(log_path, "r+b") as f:  # shorter than at the last poll, same first bytes
        f.truncate(len("old 1\nold 2\n") + 2)
    assert follower.poll_once() == ["old 1", "old 2", "a"]


async def test_a_long_line_is_drained_without_waiting(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: lines over the cap were dropped at 1.25 MiB/s, the follower sleeping
    between bites although more was waiting. It reads on until caught up."""
    append(log_path, "")
    f = Follower(str(log_path), from_start=True)
    append(log_path, "y" * (8 * follow.READ_LIMIT) + "\nafter the long line\n")
    slept = 0
    real_sleep = asyncio.sleep

    async def counting(delay: float) -> None:
        nonlocal slept
        slept += 1
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", counting)
    lines = f.lines()
    assert await asyncio.wait_for(anext(lines), 5) == ["after the long line"]
    await lines.aclose()
    assert slept == 0


def test_a_fifo_at_the_path_is_refused_at_once(tmp_path: Path) -> None:
    """Issue 12: a FIFO hung the reading thread (and SIGTERM) until a writer came."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with Follower(str(fifo)) as f, pytest.raises(follow.FollowError, match="not a regular file"):
        f.poll_once()
    assert time.monotonic() - started < 1


def test_a_file_turned_into_something_else_is_waited_for(
    log_path: Path, follower: Follower, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: a logfile replaced by a directory made the daemon exit."""
    append(log_path, "one\n")
    assert follower.poll_once() == ["one"]
    log_path.unlink()
    log_path.mkdir()
    with caplog.at_level(logging.WARNING):
        assert follower.poll_once() == []
        assert follower.poll_once() == []
    assert caplog.text.count("no longer a regular file") == 1
    log_path.rmdir()
    os.mkfifo(log_path)
    assert follower.poll_once() == []  # a FIFO now: still waiting, and not blocked
    log_path.unlink()
    append(log_path, "back\n")
    assert follower.poll_once() == ["back"]
