"""``aioknock.logs``: loggers that import logging only for a record that is made, and the
command's own lines for people (``cli.output.say``)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aioknock import logs
from aioknock.cli import output

log = logs.get_logger("aioknock.test")


@pytest.fixture
def routed() -> Iterator[list[int]]:
    """A command's routing, put back afterwards; yields the levels ``setup`` was called with."""
    calls: list[int] = []
    with logs.scoped():
        logs.route(logs.INFO, calls.append)
        yield calls


def test_without_a_floor_every_call_is_logging_s(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="aioknock"):
        log.debug("seen %d", 1)
        log.log(logs.WARNING, "warned %s", "x")
    assert [(r.levelno, r.getMessage(), r.name) for r in caplog.records] == [
        (logging.DEBUG, "seen 1", "aioknock.test"), (logging.WARNING, "warned x", "aioknock.test")
    ]  # fmt: skip


def test_a_record_names_its_caller(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aioknock"):
        log.info("where")
        log.log(logs.INFO, "where")
    assert {(r.funcName, r.filename) for r in caplog.records} == {
        ("test_a_record_names_its_caller", "test_logs.py")
    }


def test_under_the_floor_nothing_is_made_or_set_up(
    routed: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="aioknock"):
        log.debug("dropped")
    assert caplog.records == [] and routed == []
    assert not log.is_enabled_for(logs.DEBUG) and routed == []
    log.error("shown")  # the first record that passes sets the command's logging up, once
    log.warning("shown too")
    assert routed == [logs.INFO]


def test_held_records_wait_for_the_level_and_keep_their_order(
    routed: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    logs.hold()
    log.debug("one %d", 1)
    log.info("two")
    log.error("three")
    assert routed == []  # nothing made yet
    with caplog.at_level(logging.DEBUG, logger="aioknock"):
        logs.release(logs.INFO)
        log.debug("after, under the floor")
    assert [r.getMessage() for r in caplog.records] == ["two", "three"]
    assert {(r.filename, r.funcName) for r in caplog.records} == {
        ("test_logs.py", "test_held_records_wait_for_the_level_and_keep_their_order")
    }  # made at release, they still name the line that logged them
    assert caplog.records[0].lineno == caplog.records[1].lineno - 1
    assert routed == [logs.INFO]
    logs.route(logs.DEBUG, routed.append)  # a later level reaches the set-up logging
    assert routed == [logs.INFO, logs.DEBUG]


def test_scoped_puts_routing_and_the_logger_back() -> None:
    root = logging.getLogger("aioknock")
    before = (root.handlers[:], root.propagate, root.level)
    with logs.scoped():
        logs.route(logs.ERROR, lambda level: root.setLevel(level))
        log.error("made")
        assert root.level == logs.ERROR
        logs.hold()
    assert (root.handlers, root.propagate, root.level) == before
    assert logs.passes(logs.DEBUG)  # no floor, nothing held
    log.debug("not held")


def test_say_is_stderr_and_quiet_silences_it(
    routed: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    output.say("knock for h: 1 2")
    logs.route(logs.ERROR, routed.append)  # -quiet
    output.say("not shown")
    assert capsys.readouterr() == ("", "aioknock: knock for h: 1 2\n")
    assert routed == []  # no record: logging was never needed


def test_say_with_stderr_closed_or_broken_loses_the_line_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stderr", None)
    output.say("nowhere")  # print(file=None) would write it on stdout
    broken = io.StringIO()
    broken.close()
    monkeypatch.setattr(sys, "stderr", broken)
    output.say("nowhere")
    assert capsys.readouterr().out == ""


def test_a_command_with_stderr_closed_still_succeeds() -> None:
    script = 'exec "$0" -m aioknock run -test 127.0.0.1 2>&-'
    proc = subprocess.run(["sh", "-c", script, sys.executable], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60, check=False)  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
