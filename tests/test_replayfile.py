"""The replay file: what the daemon writes, it reads back; what is not ours, it leaves alone."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_daemon import client, daemon_settings, running, wait_for

from aioknock.asyncio.daemon import KnockDaemon
from aioknock.asyncio.replayfile import LEGACY_MAGIC, MAGIC, RECORD_SIZE, ReplayFile, record
from aioknock.config.loader import build_settings
from aioknock.config.settings import DaemonSettings
from aioknock.daemon.replay import DIGEST_SIZE
from aioknock.errors import ConfigError

digests = st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)


def d(i: int) -> bytes:
    return i.to_bytes(DIGEST_SIZE, "big")


def r(i: int) -> bytes:
    """d(i) as the file holds it: with its checksum."""
    return record(d(i))


@settings(max_examples=60, deadline=None)
@given(st.lists(digests, max_size=40), st.integers(1, 12))
def test_what_is_added_is_read_back_newest_kept(
    tmp_path_factory: pytest.TempPathFactory, added: list[bytes], limit: int
) -> None:
    path = str(tmp_path_factory.mktemp("r") / "replay")
    store = ReplayFile.load(path, limit)
    for digest in added:
        store.add(digest)
    again = ReplayFile.load(path, limit)
    assert list(again.digests) == added[-limit:]
    # The file never holds more than twice the memory (plus the header).
    assert os.path.getsize(path) <= len(MAGIC) + 2 * limit * RECORD_SIZE


def test_a_new_file_is_created_at_start_private(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    store = ReplayFile.load(str(path), 10)
    assert path.read_bytes() == MAGIC and not store.digests
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (tmp_path / "replay.tmp").exists()


def test_a_partial_record_from_a_crash_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replay"
    path.write_bytes(MAGIC + r(1) + r(2) + r(3)[:5])
    with caplog.at_level(logging.WARNING):
        store = ReplayFile.load(str(path), 10)
    assert list(store.digests) == [d(1), d(2)]
    assert "partial record" in caplog.text
    assert path.read_bytes() == MAGIC + r(1) + r(2)
    store.add(d(4))
    assert list(ReplayFile.load(str(path), 10).digests) == [d(1), d(2), d(4)]


def test_only_the_newest_records_are_read_from_a_long_file(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    path.write_bytes(MAGIC + b"".join(r(i) for i in range(50)))
    store = ReplayFile.load(str(path), 8)
    assert list(store.digests) == [d(i) for i in range(42, 50)]
    assert path.read_bytes() == MAGIC + b"".join(r(i) for i in range(42, 50))


@pytest.mark.parametrize(
    "content", [b"root:x:0:0:root:/root:/bin/bash\n", b"aioknock", MAGIC[:-1] + b"?" + d(1)]
)
def test_a_file_that_is_not_ours_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"^replay_file: .*passwd is not an aioknock replay file"):
        ReplayFile.load(str(path), 10)
    assert path.read_bytes() == content


def test_an_empty_file_is_taken_as_new(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    path.touch()
    assert not ReplayFile.load(str(path), 10).digests
    assert path.read_bytes() == MAGIC


def test_unusable_paths_fail_at_start_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^replay_file: cannot read .*/file/replay: Not a dir"):
        ReplayFile.load(str(tmp_path / "file" / "replay"), 10)
    with pytest.raises(ConfigError, match=r"^replay_file: cannot write .*/no/replay: No such file"):
        ReplayFile.load(str(tmp_path / "no" / "replay"), 10)
    with pytest.raises(ConfigError, match=r"^replay_file: cannot read .*: not a regular file$"):
        ReplayFile.load(str(tmp_path), 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):  # and does not block
        ReplayFile.load(str(fifo), 10)
    target = tmp_path / "target"
    target.write_bytes(MAGIC)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ConfigError, match=r"/link: a symbolic link, which is not followed$"):
        ReplayFile.load(str(tmp_path / "link"), 10)


def test_read_only_mode_neither_creates_nor_writes(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    store = ReplayFile.load(str(path), 10, write=False)
    store.add(d(1))
    assert not path.exists()
    path.write_bytes(MAGIC + r(1))
    store = ReplayFile.load(str(path), 10, write=False)
    store.add(d(2))
    store.replace([d(3)])
    assert path.read_bytes() == MAGIC + r(1)


def test_a_failed_append_is_logged_and_the_memory_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    store = ReplayFile.load(str(folder / "replay"), 10)
    (folder / "replay").unlink()
    folder.rmdir()
    (tmp_path / "state").write_text("now a file")
    with caplog.at_level(logging.ERROR):
        error = store.add(d(7))  # the daemon refuses the knock with this (fail closed)
    assert error is not None and "cannot record a used knock" in error
    assert "\n" not in error and "Traceback" not in caplog.text
    assert list(store.digests) == [d(7)]


def test_no_other_file_is_ever_written_through_it(tmp_path: Path) -> None:
    """The daemon runs as root: links and a planted temporary name must not steer it."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "replay"
    os.link(victim, path)  # a hard link at the replay path: refused at start
    with pytest.raises(ConfigError, match=r"replay: it has other hard links$"):
        ReplayFile.load(str(path), 10)
    path.unlink()
    os.link(victim, tmp_path / "replay.tmp")  # an old fixed temporary name: not reused
    store = ReplayFile.load(str(path), 2)
    for i in range(8):  # appends and two rewrites
        store.add(d(i))
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay", "replay.tmp", "victim"]


def test_a_file_changed_behind_its_back_is_written_anew(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    store = ReplayFile.load(str(path), 10)
    store.add(d(1))
    path.unlink()  # deleted while the daemon runs: recreated whole, with its header
    store.add(d(2))
    assert path.read_bytes() == MAGIC + r(1) + r(2)
    with path.open("ab") as f:  # cut short or grown (a full disk, another writer)
        f.write(b"xyz")
    store.add(d(3))
    assert path.read_bytes() == MAGIC + r(1) + r(2) + r(3)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path.unlink()
    os.link(victim, path)  # swapped for a link to another file: ours put back beside it
    store.add(d(4))
    assert victim.read_bytes() == b"precious"
    assert list(ReplayFile.load(str(path), 10).digests) == [d(1), d(2), d(3), d(4)]


# --------------------------------------------------------------- in the daemon


def replays_in(path: Path) -> int:
    return (path.stat().st_size - len(MAGIC)) // RECORD_SIZE


async def test_a_used_knock_stays_used_across_a_restart(home: Path) -> None:
    replay = home / "replay"
    await asyncio.to_thread(client, home / "fw.log")
    async with running(daemon_settings(home, from_start=True, replay_file=str(replay))) as first:
        assert await wait_for(lambda: first.counts["accept"] == 1)
    assert replays_in(replay) == 1
    for marker in home.glob("open-*"):
        marker.unlink()

    # The same log read again after a restart: the knock in it is a replay now.
    async with running(daemon_settings(home, from_start=True, replay_file=str(replay))) as again:
        assert await wait_for(lambda: again.counts["refuse"] == 1)
        assert again.counts["accept"] == 0
    assert not list(home.glob("open-*"))

    # -test judges with the file but leaves it as it is.
    before = replay.read_bytes()
    test = daemon_settings(home, from_start=True, replay_file=str(replay), test=True)
    async with running(test) as dry:
        assert await wait_for(lambda: dry.counts["refuse"] == 1)
    assert replay.read_bytes() == before

    # Without the file, a restart forgets: the gap the file closes.
    async with running(daemon_settings(home, from_start=True)) as forgetful:
        assert await wait_for(lambda: forgetful.counts["accept"] == 1)


@pytest.mark.parametrize("harm", ["flip a byte in every record", "truncate to zero"])
async def test_a_harmed_file_is_said_before_the_knocks_it_held_are_judged(
    home: Path, caplog: pytest.LogCaptureFixture, harm: str
) -> None:
    """Issue 10: a replay_file made to forget is an error at the next start, before any
    knock is read; what it forgot the daemon cannot refuse (it no longer knows it), but
    it is not accepted silently."""
    caplog.set_level(logging.INFO, logger="aioknock")
    replay = home / "replay"
    await asyncio.to_thread(client, home / "fw.log")
    async with running(daemon_settings(home, from_start=True, replay_file=str(replay))) as first:
        assert await wait_for(lambda: first.counts["accept"] == 1)
    for marker in home.glob("open-*"):
        marker.unlink()
    data = bytearray(replay.read_bytes())
    if harm == "truncate to zero":
        data.clear()
    for at in range(len(MAGIC), len(data), RECORD_SIZE):
        data[at + 5] ^= 0x10
    replay.write_bytes(bytes(data))
    caplog.clear()
    async with running(daemon_settings(home, from_start=True, replay_file=str(replay))) as again:
        assert await wait_for(lambda: again.counts["accept"] == 1)
        assert again.replay is not None
        assert again.replay.incomplete == ("empty" if data == b"" else "damaged")
        assert again.replay.damaged == (0 if data == b"" else 1)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    why = "is empty" if data == b"" else "1 records failed their checksum"
    assert len(said) == 1 and why in said[0] and "could be replayed" in said[0]
    messages = caplog.messages
    accepted = next(i for i, m in enumerate(messages) if m.startswith("accepted knock"))
    assert messages.index(said[0]) < accepted
    assert replays_in(replay) == 1  # used again, and remembered again


def test_a_reload_to_a_full_file_keeps_what_this_daemon_accepted(home: Path) -> None:
    full = home / "full"
    full.write_bytes(MAGIC + b"".join(r(i) for i in range(100_000)))
    daemon = KnockDaemon(daemon_settings(home, replay_file=str(home / "first")))
    mine = b"m" * DIGEST_SIZE
    daemon.engine.replays.load([mine])  # as if accepted here
    daemon.reload(daemon_settings(home, replay_file=str(full)))
    kept = daemon.engine.replays.items()
    assert len(kept) == 100_000 and kept[-1] == mine and d(0) not in kept
    assert full.read_bytes()[-RECORD_SIZE:] == record(mine)


def test_replay_file_setting_is_checked_and_resolved(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^command line: replay_file: expected a file name"):
        daemon_settings(tmp_path, replay_file="a\0b")
    conf = tmp_path / "etc" / "knockdaemon.conf"
    conf.parent.mkdir()
    conf.write_text("replay_file = state/replay\nkey = k\n")
    s = build_settings(DaemonSettings, path=conf, overrides={}, sending=False)
    assert s.replay_file == str(tmp_path / "etc" / "state" / "replay")


async def test_a_reload_to_another_file_carries_the_memory(home: Path) -> None:
    first, second = home / "first", home / "second"
    await asyncio.to_thread(client, home / "fw.log")
    async with running(daemon_settings(home, from_start=True, replay_file=str(first))) as daemon:
        assert await wait_for(lambda: daemon.counts["accept"] == 1)
        # A running daemon switches once the new backend is set up: wait for it.
        daemon.reload(daemon_settings(home, replay_file=str(second)))
        assert await wait_for(
            lambda: daemon.replay is not None and daemon.replay.path != str(first)
        )
        assert second.read_bytes() == first.read_bytes()
        daemon.reload(daemon_settings(home))
        assert await wait_for(lambda: daemon.settings.replay_file == "")
        assert daemon.replay is None
    assert replays_in(second) == 1


def test_a_bad_replay_file_stops_the_start_and_a_reload_keeps_the_old(home: Path) -> None:
    bad = daemon_settings(home, replay_file=str(home / "missing" / "replay"))
    with pytest.raises(ConfigError, match="replay_file: cannot write"):
        KnockDaemon(bad)
    good = daemon_settings(home, replay_file=str(home / "replay"))
    daemon = KnockDaemon(good)
    with pytest.raises(ConfigError, match="replay_file: cannot write"):
        daemon.reload(bad)
    assert daemon.settings is good and daemon.replay is not None
    assert daemon.replay.path == str(home / "replay")


# ------------------------------------------------------- damage is found, and said


def test_damaged_records_are_dropped_counted_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: flipped bytes in every record loaded silently and let replays in."""
    path = tmp_path / "replay"
    good = MAGIC + r(1) + r(2) + r(3)
    damaged = bytearray(good)
    damaged[len(MAGIC) + RECORD_SIZE + 3] ^= 0x40  # in the second record's digest
    path.write_bytes(bytes(damaged))
    with caplog.at_level(logging.ERROR):
        store = ReplayFile.load(str(path), 10)
    assert list(store.digests) == [d(1), d(3)] and store.damaged == 1
    assert "1 records failed their checksum" in caplog.text
    assert path.read_bytes() == MAGIC + r(1) + r(3)  # written anew without it


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3 * RECORD_SIZE - 1), st.integers(1, 255))
def test_any_flipped_byte_of_a_record_is_found(
    tmp_path_factory: pytest.TempPathFactory, where: int, flip: int
) -> None:
    path = tmp_path_factory.mktemp("f") / "replay"
    data = bytearray(MAGIC + r(1) + r(2) + r(3))
    data[len(MAGIC) + where] ^= flip
    path.write_bytes(bytes(data))
    store = ReplayFile.load(str(path), 10, write=False)
    assert store.damaged == 1 and len(store.digests) == 2


def test_an_empty_file_is_reported_as_cut_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon writes the header first: no bytes at all means the file was cut."""
    path = tmp_path / "replay"
    path.touch()
    with caplog.at_level(logging.ERROR):
        store = ReplayFile.load(str(path), 10)
    assert "is empty, though the daemon writes a header first" in caplog.text
    assert store.incomplete == "empty"
    assert path.read_bytes() == MAGIC


def test_flipped_bytes_in_every_record_drop_them_all_and_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: one flipped byte per record, digest or checksum, forgets nothing silently."""
    path = tmp_path / "replay"
    data = bytearray(MAGIC + b"".join(r(i) for i in range(5)))
    for i in range(5):
        data[len(MAGIC) + i * RECORD_SIZE + (i * 7) % RECORD_SIZE] ^= 1 << i
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        store = ReplayFile.load(str(path), 10)
    assert not store.digests and (store.damaged, store.incomplete) == (5, "damaged")
    assert [r.getMessage() for r in caplog.records] == [
        f"replay_file {path}: 5 records failed their checksum and were dropped; the knocks "
        "they held could be replayed"
    ]
    assert path.read_bytes() == MAGIC


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.sets(st.integers(0, n - 1), min_size=1),
    st.lists(st.tuples(st.integers(0, RECORD_SIZE - 1), st.integers(1, 255)), min_size=n,
             max_size=n),
)))  # fmt: skip
def test_every_damaged_record_is_counted(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[int, set[int], list[tuple[int, int]]]
) -> None:
    count, hit, flips = case
    data = bytearray(MAGIC + b"".join(r(i) for i in range(count)))
    for i in hit:
        at, flip = flips[i]
        data[len(MAGIC) + i * RECORD_SIZE + at] ^= flip
    path = tmp_path_factory.mktemp("e") / "replay"
    path.write_bytes(bytes(data))
    store = ReplayFile.load(str(path), 20, write=False)
    assert store.damaged == len(hit)
    assert list(store.digests) == [d(i) for i in range(count) if i not in hit]


def test_a_missing_file_is_said_each_time_it_must_be_created(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A first start and a removed file look alike: both are said, as what they may be."""
    path = tmp_path / "replay"
    with caplog.at_level(logging.WARNING):
        store = ReplayFile.load(str(path), 10)
    assert store.incomplete == "missing"
    assert caplog.messages == [
        f"replay_file {path} does not exist, so the daemon starts with no memory of used "
        "knocks: if the file existed (removed, a new disk, an emptied /run), the knocks it "
        "held could be replayed"
    ]
    store.add(d(1))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = ReplayFile.load(str(path), 10)
    assert (again.incomplete, caplog.messages) == ("", [])
    path.unlink()
    with caplog.at_level(logging.WARNING):
        ReplayFile.load(str(path), 10, write=False)  # -test: said, and not created
    assert "does not exist" in caplog.text and not path.exists()


def test_a_file_removed_while_the_daemon_runs_is_said_and_written_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replay"
    store = ReplayFile.load(str(path), 10)
    store.add(d(1))
    path.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert store.add(d(2)) is None
    assert caplog.messages == [
        f"replay_file {path} was removed or changed while the daemon ran; written anew from "
        "the memory"
    ]
    assert path.read_bytes() == MAGIC + r(1) + r(2)


def test_a_file_of_the_first_format_is_read_and_written_anew(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    path.write_bytes(LEGACY_MAGIC + d(1) + d(2) + d(3)[:4])
    store = ReplayFile.load(str(path), 10)
    assert list(store.digests) == [d(1), d(2)]
    assert path.read_bytes() == MAGIC + r(1) + r(2)


async def test_a_knock_that_cannot_be_recorded_is_refused(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: a full or read-only disk let knocks in that a restart then forgot."""
    caplog.set_level(logging.INFO, logger="aioknock")
    state = home / "state"
    state.mkdir()
    replay = state / "replay"

    def doors() -> bool:
        return bool(list(home.glob("open-*")))

    for policy, verdict in (("refuse", "refuse"), ("accept", "accept")):
        if not state.is_dir():
            state.unlink()
            state.mkdir()
        log = home / f"fw-{policy}.log"  # missing at each start: its first poll is said
        settings = daemon_settings(home, replay_file=str(replay), replay_failure=policy,
                                   duration=60, logfile=str(log))  # fmt: skip
        async with running(settings, first_poll=True) as daemon:
            replay.unlink()
            state.rmdir()
            state.write_text("the folder is gone: nothing can be written there")
            await asyncio.to_thread(client, log)
            assert await wait_for(lambda: daemon.counts[verdict] == 1), daemon.counts  # noqa: B023
            if policy == "accept":
                assert await wait_for(doors), "the accepted knock opened nothing"
            else:
                assert not await wait_for(doors, 1), "the refused knock opened a door"
        assert daemon.counts["accept" if verdict == "refuse" else "refuse"] == 0
    assert (
        "it could not be recorded as used: replay_file: cannot record a used knock" in caplog.text
    )
    assert "not recorded as used, accepted anyway (replay_failure = accept)" in caplog.text
