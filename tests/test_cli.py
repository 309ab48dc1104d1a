"""The command line (issue 2, section 4): the prototype's spellings, -test/-quiet/-debug,
-h/-man, --json, ``aioknock decode``, and one-line errors with exit status 2.

Most tests call ``main(argv)`` in-process; a few run ``python -m aioknock`` for real to see
exit codes and that no traceback ever reaches the user. Anything actually sent goes to
127.0.0.1 only; most runs use -test, and the in-process ones replace the sender.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aioknock import version
from aioknock.asyncio import fleet, hostknock, oneshot
from aioknock.asyncio.sender import Attempt, Resolved
from aioknock.cli import fleetrun
from aioknock.cli import main as cli
from aioknock.cli.options import setting_flags, split_flags
from aioknock.codec.logtemplate import LogTemplate
from aioknock.config.settings import ClientSettings
from aioknock.errors import ConfigError

PLAIN = ["-client", "10.1.1.1", "-knock", "CLIENT,PORT,FLAG0,CHECKSUM", "-flag0", "15"]
# PLAIN on the default span 745-1000 (unencrypted, so the same every time).
KNOCK = ["755", "746", "746", "746", "745", "767", "760", "795"]


# No real config file is found, and no AIOKNOCK_* variable leaks in (conftest.py).
pytestmark = pytest.mark.usefixtures("isolated")


class Sent:
    """Stands in for the network and the log file; records what would have gone out."""

    def __init__(self) -> None:
        self.knocks: list[tuple[str, list[int]]] = []
        self.lines: list[tuple[str, list[int]]] = []

    async def send_knock(
        self, target: Resolved, ports: Sequence[int], timeout: float, **_: Any
    ) -> list[Attempt]:
        return self.send_now(target, ports, timeout)

    def send_now(self, target: Resolved, ports: Sequence[int], timeout: float, *_: Any
                 ) -> list[Attempt]:  # fmt: skip
        self.knocks.append((target.address, list(ports)))
        return [Attempt(p, 0.0, "refused") for p in ports]

    async def write_knock(self, path: str, template: LogTemplate, **kw: Any) -> list[str]:
        self.lines.append((path, list(kw["ports"])))
        return []


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    record = Sent()
    monkeypatch.setattr(fleet, "send_knock", record.send_knock)  # several hosts
    monkeypatch.setattr(oneshot, "send_now", record.send_now)  # one host: no event loop
    monkeypatch.setattr(fleetrun, "write_knock", record.write_knock)
    return record


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("aioknock: error: ")
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the prototype's spellings, and the usual ones -------------------------------------


def test_prototype_spellings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sent: Sent
) -> None:
    conf = write(tmp_path / "k.conf", "test = yes\nlogtofile = yes\nport = 80\n")
    code, out, err = run(
        capsys, "run", "-conf", str(conf), "-remote", "127.0.0.1", "-port", "22",
        "-notest", "-nologtofile", "-debug", "-debug", *PLAIN,
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert "setting port = 22  (command line)" in err
    assert "setting test = False  (command line)" in err
    assert "setting logtofile = False  (command line)" in err
    assert f"config file: {conf}" in err
    assert [address for address, _ in sent.knocks] == ["127.0.0.1"]
    assert sent.lines == []


def test_without_the_run_word_options_mean_run(
    capsys: pytest.CaptureFixture[str], sent: Sent
) -> None:
    code, out, _ = run(capsys, "-test", "-quiet", "--json", *PLAIN)
    assert code == 0
    assert json.loads(out)["values"] == [10, 1, 1, 1, 0, 22, 15, 50]
    assert sent.knocks == []


@pytest.mark.parametrize(
    "argv",
    [
        ["-port", "2222"],
        ["--port", "2222"],
        ["--port=2222"],
        ["-port=2222"],
        ["-remote", "127.0.0.1", "-port", "2222"],
        ["--remote", "127.0.0.1", "--port=2222"],
        ["--remote=localhost", "--port=2222"],
    ],
)
def test_value_options(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, "run", "-test", "--json", *PLAIN, *argv)
    assert code == 0, err
    assert json.loads(out)["values"][4:6] == [2222 >> 8, 2222 & 255]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-test"], True),
        (["--test"], True),
        (["-notest"], False),
        (["--no-test"], False),
        (["--notest"], False),
        (["-test", "-notest"], False),
        (["-notest", "-test"], True),
    ],
)
def test_boolean_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sent: Sent, argv: list[str], expected: bool
) -> None:
    conf = write(tmp_path / "k.conf", "test = yes\n")
    code, _, err = run(capsys, "run", "-conf", str(conf), "-quiet", *PLAIN, *argv)
    assert code == 0, err
    assert (sent.knocks == []) is expected


@pytest.mark.parametrize(
    ("argv", "sends"),
    [(["-test", "yes"], False), (["-test", "on"], False), (["-test", "1"], False),
     (["--test=yes"], False), (["-test", "False"], True), (["--test=no"], True),
     (["--no-test"], True)],
)  # fmt: skip
def test_a_switch_takes_an_explicit_yes_or_no(
    capsys: pytest.CaptureFixture[str], sent: Sent, argv: list[str], sends: bool
) -> None:
    """ "-test yes" and "--test=no" mean what they say; never a host named "yes"."""
    code, _, err = run(capsys, "run", *PLAIN, "-quiet", *argv)
    assert code == 0, err
    assert bool(sent.knocks) is sends
    assert all(host == "127.0.0.1" for host, *_ in sent.knocks)


def test_a_switch_value_that_is_not_yes_or_no_is_refused(
    capsys: pytest.CaptureFixture[str], sent: Sent
) -> None:
    code, _, err = run(capsys, "run", *PLAIN, "--encrypt=maybe")
    assert code == 2 and sent.knocks == []
    assert "--encrypt takes yes or no, got 'maybe' (or write -encrypt / -noencrypt)" in (
        one_error_line(err)
    )
    code, _, err = run(capsys, "run", *PLAIN, "-test", "2")  # not a yes/no: a host "2"?
    assert code == 2 and sent.knocks == []
    assert "'2' is not a host: switches take no value" in one_error_line(err)


def test_key_file_spellings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "knock.key"
    write(key, "sesame\n").chmod(0o600)
    for spelling in (["--key-file", str(key)], ["-key_file", str(key)], [f"--key_file={key}"]):
        code, out, err = run(
            capsys, "run", "-test", "--json", "-encrypt", "-iv", "-cipher", "DES", *PLAIN, *spelling
        )
        assert code == 0, err
        assert len(json.loads(out)["payload"]) == 16 + 8 * (8 // 8 + 1)  # the manual's formula
        assert "warning" not in err


def test_flag_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "run", "-test", "--json", "-client", "10.1.1.1",
        "-knock", "FLAG0,FLAG3,FLAG12", "-flag0", "15", "--flag3=7", "--FLAG12", "300",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["values"] == [15, 7, 300 % 256]
    assert "flag12 = 300 is above 255; using 44 (mod 256)" in err


def test_the_literal_flagn_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "run", "-test", "-flagN", "5")
    assert code == 2
    assert "-flagN: put the flag's number for N" in one_error_line(err)


def test_c_is_short_for_conf_but_no_prefix_of_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write(tmp_path / "k.conf", "port = 2222\n")
    code, out, _ = run(capsys, "run", "-c", str(conf), "-test", "--json", *PLAIN)
    assert code == 0
    assert json.loads(out)["values"][4:6] == [8, 174]
    code, _, err = run(capsys, "run", "-cipherr", "DES", "-test")
    assert code == 2
    assert one_error_line(err).endswith("unknown option -cipherr; did you mean -cipher?")


ALL_FLAGS = sorted(setting_flags(ClientSettings))
_ARGV_WORDS = st.one_of(
    st.sampled_from(ALL_FLAGS),
    st.sampled_from(["22", "yes", "-", "--", "127.0.0.1", "-nosuch", "--port=22", "-debug=1",
                     "--cipher=", "-1", "-h0st"]),
    st.text(max_size=4),
)  # fmt: skip


def _parsed(parser: Any, argv: list[str]) -> dict[str, Any] | str:
    try:
        ns = parser.parse_args(argv)
    except ConfigError as exc:
        return str(exc)
    return {k: v for k, v in vars(ns).items() if v is not None}


@settings(max_examples=300, deadline=None)
@given(st.lists(_ARGV_WORDS, max_size=8))
def test_a_parser_of_the_flags_given_parses_as_one_of_all(argv: list[str]) -> None:
    """Only the keys argv names are added to argparse (cli/options.add_settings): what it
    makes of argv, values or error, is what a parser of every flag makes of it."""
    every = cli._parser("run", ALL_FLAGS)
    assert _parsed(cli._parser("run", argv), argv) == _parsed(every, argv)


# --- -test, -quiet, -debug ------------------------------------------------------------


def test_test_mode_sends_nothing(capsys: pytest.CaptureFixture[str], sent: Sent) -> None:
    code, _, err = run(capsys, "run", "-test", *PLAIN)
    assert code == 0
    assert sent.knocks == [] and sent.lines == []
    assert "test mode: nothing sent" in err
    code, _, err = run(capsys, "run", "-test", "-logtofile", *PLAIN)
    assert sent.knocks == [] and sent.lines == []


def test_quiet_prints_nothing_but_errors(capsys: pytest.CaptureFixture[str], sent: Sent) -> None:
    assert run(capsys, "run", "-quiet", *PLAIN) == (0, "", "")
    assert run(capsys, "run", "-quiet", "-test", *PLAIN) == (0, "", "")
    code, out, err = run(capsys, "run", "-quiet", "-test", "-port", "x")
    assert (code, out) == (2, "")
    one_error_line(err)


def test_quiet_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sent: Sent
) -> None:
    conf = write(tmp_path / "k.conf", "quiet = yes\nflag1 = 300\n")  # a warning, held back
    assert run(capsys, "run", "-conf", str(conf), "-test", *PLAIN) == (0, "", "")
    code, _, err = run(capsys, "run", "-conf", str(conf), "-noquiet", "-test", *PLAIN)
    assert code == 0
    assert f"{conf}:2: flag1 = 300 is above 255; using 44 (mod 256)" in err
    bad = write(tmp_path / "bad.conf", "quiet = yes\nflag1 = 300\nport = x\n")
    code, _, err = run(capsys, "run", "-conf", str(bad), "-test")
    assert code == 2
    assert f"{bad}:3: port: expected" in one_error_line(err)


def test_debug_says_which_config_file(isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "run", "-debug", "-test", *PLAIN)
    assert code == 0
    assert "config file: none found (searched " in err
    assert str(isolated / "home" / ".knockclient.conf") in err
    found = write(isolated / "home" / ".knockclient.conf", "debug = yes\n")
    code, _, err = run(capsys, "run", "-test", *PLAIN)
    assert err.startswith(f"aioknock: debug: config file: {found} (first found on the search path)")
    assert "setting port" not in err  # only -debug -debug dumps the settings


def test_debug_twice_dumps_settings_without_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = write(tmp_path / "k.conf", "encrypt = yes\nkey = file-secret-1\n")
    code, out, err = run(capsys, "run", "-conf", str(conf), "-debug", "-debug", "-test", *PLAIN)
    assert code == 0
    assert "setting key = '********'" in err
    assert f"setting encrypt = True  ({conf}:1)" in err
    assert "file-secret-1" not in out + err
    monkeypatch.setenv("AIOKNOCK_KEY", "env-secret-2")
    code, out, err = run(capsys, "run", "-debug", "-debug", "-test", "-encrypt", *PLAIN)
    assert code == 0
    assert "env-secret-2" not in out + err
    code, out, err = run(
        capsys, "run", "-debug", "-debug", "-test", "-encrypt", "-key", "cli-secret-3", *PLAIN
    )
    assert code == 0
    assert "cli-secret-3" not in out + err
    assert "visible to other users in ps" in err


def test_main_puts_the_logger_back(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("aioknock")
    before = (logger.handlers[:], logger.propagate, logger.level)
    run(capsys, "run", "-test", "-debug", *PLAIN)
    assert (logger.handlers, logger.propagate, logger.level) == before


# --- -h and -man ----------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["run", "-h"], ["run", "-help"], ["run", "--help"], ["-h"]])
def test_brief_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith("usage:")
    assert len(out.splitlines()) < 40


def test_bare_aioknock_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert (code, out) == (2, "")
    assert err.startswith("usage:")


@pytest.mark.parametrize("argv", [["run", "-man"], ["run", "--man"], ["-man"]])
def test_manual_names_every_key(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert "{{OPTIONS}}" not in out
    for key in ClientSettings.table():
        assert f"\n    {key.name} (" in out, key.name
        assert key.help.split(";")[0][:30] in " ".join(out.split()), key.name
    assert "flagN" in out
    assert "EXIT STATUS" in out


# --- --json -------------------------------------------------------------------------------


def test_json_is_one_object_and_nothing_else(
    capsys: pytest.CaptureFixture[str], sent: Sent
) -> None:
    code, out, err = run(capsys, "run", "--json", "-debug", *PLAIN, "-timeout", "0")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    # The client's object (issue 2), extended per host for fleets (issue 3).
    assert {"remote", "values", "payload", "ports"} <= set(obj)
    assert {"host", "address", "started", "finished", "ok", "error", "verified"} <= set(obj)
    assert obj["ok"] is True and obj["error"] is None and obj["verified"] is None
    assert obj["remote"] == "127.0.0.1"
    assert obj["values"] == [10, 1, 1, 1, 0, 22, 15, 50]
    assert obj["payload"] == obj["values"]  # not encrypted
    assert all(type(v) is int for k in ("values", "payload", "ports") for v in obj[k])
    assert sent.knocks == [("127.0.0.1", obj["ports"])]
    assert "knock for 127.0.0.1" in err  # the human text goes to stderr


def test_json_encrypted_payload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "run", "--json", "-test", "-encrypt", "-key", "k", "-noiv", *PLAIN)
    obj = json.loads(out)
    assert code == 0
    assert obj["values"] == [10, 1, 1, 1, 0, 22, 15, 50]
    assert len(obj["payload"]) == 16 and obj["payload"][:8] != obj["values"]
    assert all(0 <= b <= 255 for b in obj["payload"])


# --- decode ---------------------------------------------------------------------------

SETTINGS = {
    "plain": [],
    "Blowfish, iv": ["-encrypt", "-key", "sesame", "-iv"],
    "DES, no iv": ["-encrypt", "-key", "sesame", "-noiv", "-cipher", "DES"],
    "3DES, 15-bit span": [
        "-encrypt", "-key", "sesame", "-cipher", "DES_EDE3",
        "-portspan", "1024-5000,6000-25000,26000-35789",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", list(SETTINGS))
def test_decode_round_trips_run_json(capsys: pytest.CaptureFixture[str], name: str) -> None:
    argv = [*PLAIN, "-quiet", *SETTINGS[name]]
    knocks = []
    for _ in range(3):
        code, out, _ = run(capsys, "run", "--json", "-test", *argv)
        assert code == 0
        knocks.append(json.loads(out))
    fields = "client=10.1.1.1 port=22 flag0=15 checksum=50"
    # Ports as arguments.
    code, out, err = run(capsys, "decode", *argv, *map(str, knocks[0]["ports"]))
    assert (code, out, err) == (0, fields + "\n", "")
    # One knock per line on stdin: bare ports, commas, and run --json's own lines.
    stdin = "\n".join(
        [
            " ".join(map(str, knocks[0]["ports"])),
            ",".join(map(str, knocks[1]["ports"])),
            "",
            json.dumps(knocks[2]),
        ]
    )
    code, out, err = run(capsys, "decode", *argv, stdin=stdin + "\n")
    assert (code, out, err) == (0, (fields + "\n") * 3, "")
    code, out, _ = run(capsys, "decode", "--json", *argv, stdin=json.dumps(knocks[0]))
    assert json.loads(out) == {
        "ok": True, "fields": {"client": "10.1.1.1", "port": 22, "flag0": 15, "checksum": 50},
    }  # fmt: skip


def test_decode_a_known_knock(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", *PLAIN, *KNOCK)
    assert (code, out) == (0, "client=10.1.1.1 port=22 flag0=15 checksum=50\n")


def test_decode_the_manuals_256_port_example(capsys: pytest.CaptureFixture[str]) -> None:
    # Unencrypted "client = 10.1.1.1, port = 22 (one byte), flag0 = 15" on 745-1000.
    argv = [*PLAIN, "-portbytes", "1", "-portspan", "745-1000"]
    code, out, _ = run(capsys, "decode", *argv, "755", "746", "746", "746", "767", "760", "795")
    assert (code, out) == (0, "client=10.1.1.1 port=22 flag0=15 checksum=50\n")


def test_decode_reports_invalid_knocks(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "run", "--json", "-test", "-quiet", *PLAIN)
    good = json.loads(out)["ports"]
    bad_sum = [*good[:-1], good[-1] + 1]
    stdin = f"{' '.join(map(str, good))}\n1 2 3\n{' '.join(map(str, bad_sum))}\nx y\n"
    code, out, err = run(capsys, "decode", *PLAIN, stdin=stdin)
    assert code == 1
    assert out == "client=10.1.1.1 port=22 flag0=15 checksum=50\n"
    lines = err.splitlines()
    assert lines[0] == "aioknock: error: line 2: invalid knock: expected 8 ports, got 3"
    assert lines[1].startswith("aioknock: error: line 3: invalid knock: checksum")
    assert lines[2].startswith("aioknock: error: line 4: invalid knock: not a list of port")
    code, out, err = run(capsys, "decode", *PLAIN, "1", "2")
    assert (code, out) == (1, "")
    assert "invalid knock: expected 8 ports, got 2" in one_error_line(err)
    code, out, err = run(capsys, "decode", "--json", *PLAIN, "1", "2")
    assert json.loads(out) == {"ok": False, "error": "expected 8 ports, got 2"}


def test_decode_with_a_wrong_key_is_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    enc = ["-encrypt", "-iv", "-quiet"]
    code, out, _ = run(capsys, "run", "--json", "-test", *PLAIN, *enc, "-key", "right")
    ports = json.loads(out)["ports"]
    code, out, err = run(capsys, "decode", *PLAIN, *enc, "-key", "wrong", *map(str, ports))
    assert (code, out) == (1, "")
    assert "invalid knock" in one_error_line(err)


def test_decode_needs_some_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "decode", *PLAIN, stdin="\n\n")
    assert code == 2
    assert "no knock on stdin" in one_error_line(err)


# --- bad input: exit 2, one line, no traceback ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--bogus"], "command line: unknown option --bogus"),
        (["run", "--prot", "22"], "unknown option --prot; did you mean --port?"),
        (["decode", "-test", "1", "stray"], "command line: decode: 'stray' is not a port number"),
        (["run", "-port"], "command line: -port needs a value"),
        (["run", "-remote"], "command line: -remote needs a value"),
        (["run", "-flag0"], "command line: -flag0 needs a value"),
        (["run", "-port", "ssh"], "command line: port: expected a whole number 0-65535, got 'ssh'"),
        (["run", "-port", "70000"], "command line: port: expected a whole number 0-65535"),
        (["run", "-timeout", "x"], "command line: timeout: expected a number of seconds"),
        (["run", "-flag0", "x"], "command line: flag0: expected a whole number >= 0"),
        (["run", "-conf", "/nonexistent/k.conf"], "/nonexistent/k.conf: no such config file"),
        (["run", "-client", "300.1.1.1"], "command line: client: expected an IP address"),
        (["run", "-encrypt"], "command line: encrypt: encryption needs a passphrase"),
        (["run", "-portspan", "1-3"], "command line: portspan: span has 3 ports"),
        (["run", "-knock", "CLIENT,FLAG1"], "command line: knock: the knock uses FLAG1"),
        (["decode", "1", "x"], "command line: decode: 'x' is not a port number"),
        (["rnu"], "unknown command 'rnu'; did you mean run?"),
        (["deamon"], "unknown command 'deamon'; did you mean daemon?"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], sent: Sent, argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, *argv, "-test") if argv[0] == "run" else run(capsys, *argv)
    assert (code, out) == (2, "")
    assert expected in one_error_line(err)
    assert sent.knocks == []


def test_bad_config_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write(tmp_path / "k.conf", "remote = 127.0.0.1\nport = twenty-two\n")
    code, out, err = run(capsys, "run", "-conf", str(conf), "-test")
    assert (code, out) == (2, "")
    line = one_error_line(err)
    assert (
        line
        == f"aioknock: error: {conf}:2: port: expected a whole number 0-65535, got 'twenty-two'"
    )
    conf = write(tmp_path / "k.conf", "remote = 127.0.0.1\nremote\n")
    code, out, err = run(capsys, "run", "-conf", str(conf), "-test")
    assert code == 2
    assert f"{conf}:2: remote: has no value" in one_error_line(err)


def test_a_key_file_given_as_the_config_does_not_print_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyfile = write(tmp_path / "knock.key", "mysecretpassphrase\n")
    code, out, err = run(capsys, "run", "-conf", str(keyfile), "-test")
    assert code == 2 and f"{keyfile}:1: " in one_error_line(err)
    assert "mysecretpassphrase" not in out + err


def test_an_unexpected_exception_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(hostknock, "plan_knock", boom)
    code, out, err = run(capsys, "run", "-test", *PLAIN)
    assert (code, out) == (1, "")
    assert "internal error: RuntimeError: simulated bug" in one_error_line(err)
    assert cli.main(["run", "-test", "-debug", *PLAIN]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err  # -debug shows where the bug is
    assert "RuntimeError: simulated bug" in err.splitlines()[-1]


def test_a_bug_while_loading_shows_its_traceback_with_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("simulated loading bug")

    monkeypatch.setattr(cli, "build_settings", boom)
    code, out, err = run(capsys, "run", "-test", *PLAIN)
    assert (code, out) == (1, "") and "Traceback" not in err
    assert "internal error: RuntimeError: simulated loading bug" in one_error_line(err)
    assert cli.main(["run", "-test", "-debug", *PLAIN]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "config file: " in err  # what loading said, then where


# --- real processes -------------------------------------------------------------------


def aioknock(
    *argv: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "aioknock", *argv],
        input=stdin, capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture
def env(isolated: Path) -> dict[str, str]:
    """A clean environment whose HOME and XDG dirs are empty."""
    keep = {k: v for k, v in os.environ.items() if not k.upper().startswith("AIOKNOCK_")}
    return {**keep, "HOME": str(isolated / "home"), "XDG_CONFIG_HOME": str(isolated / "xdg")}


def test_process_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    assert aioknock("-h", env=env).returncode == 0
    assert aioknock(env=env).returncode == 2
    done = aioknock("frobnicate", env=env)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    for argv in (["run", "--nope"], ["run", "-port"], ["run", "-port", "x"], ["-conf", "/nope"]):
        done = aioknock(*argv, "-test", env=env)
        assert (done.returncode, done.stdout) == (2, ""), argv
        assert len(done.stderr.splitlines()) == 1, done.stderr
    bad = write(tmp_path / "bad.conf", "knock = CLIENT,\n")
    done = aioknock("run", "-conf", str(bad), "-test", env=env)
    assert done.returncode == 2
    assert f"{bad}:1: knock: empty field" in done.stderr


def test_process_json_and_decode(env: dict[str, str]) -> None:
    enc = [*PLAIN, "-encrypt", "-cipher", "CAST5"]
    penv = {**env, "AIOKNOCK_KEY": "sesame"}
    done = aioknock("run", "--json", "-test", *enc, env=penv)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    assert "knock for 127.0.0.1" in done.stderr
    back = aioknock("decode", *enc, env=penv, stdin=done.stdout)
    assert (back.returncode, back.stdout) == (0, "client=10.1.1.1 port=22 flag0=15 checksum=50\n")


def test_process_closed_pipe_is_quiet(env: dict[str, str]) -> None:
    """``aioknock run --json | head -c 10``: the reader goes away; no traceback, no noise."""
    for argv in (["run", "--json", "-test"], ["run", "-man"], ["decode", *PLAIN, *KNOCK]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "aioknock", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the child writes: its first write gets EPIPE
        err = proc.stderr.read().decode()
        proc.stderr.close()
        code = proc.wait(timeout=30)
        assert "Traceback" not in err and "Exception ignored" not in err, err
        if argv[0] == "run":  # the report's reader left; the knock itself still goes ahead
            assert code == 0, err
        else:
            assert code == 1, err
        if "--json" in argv:
            assert "test mode: nothing sent" in err


def test_process_shell_pipeline_into_head(env: dict[str, str]) -> None:
    done = subprocess.run(
        f"'{sys.executable}' -m aioknock run --json -test | head -c 10",
        shell=True, capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert len(done.stdout) == 10
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    socks = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        s.setblocking(False)
        socks.append(s)
    yield socks
    for s in socks:
        s.close()


def arrived(socks: list[socket.socket]) -> int:
    count = 0
    while True:
        ready, _, _ = select.select(socks, [], [], 0.2)
        if not ready:
            return count
        for s in ready:
            conn, _ = s.accept()
            conn.close()
            count += 1


def test_process_test_mode_sends_nothing_on_loopback(
    env: dict[str, str], listeners: list[socket.socket]
) -> None:
    span = ",".join(str(s.getsockname()[1]) for s in listeners)  # a 2-port span: 1 bit a knock
    argv = ["run", "-remote", "127.0.0.1", "-portspan", span, "-knock", "PORT", "-timeout", "0.01"]
    done = aioknock(*argv, "-test", env=env)
    assert done.returncode == 0
    assert arrived(listeners) == 0
    done = aioknock(*argv, env=env)
    assert done.returncode == 0, done.stderr
    assert arrived(listeners) > 0  # the control: without -test the knocks do arrive


def test_process_first_run_with_no_config(env: dict[str, str], isolated: Path) -> None:
    """A newcomer's first command: no config anywhere, knocks 127.0.0.1 and says so."""
    assert list((isolated / "home").iterdir()) == []
    done = aioknock("run", env=env)
    assert done.returncode == 0, done.stderr
    assert "knock for 127.0.0.1:" in done.stderr
    assert "sent 9 knocks to 127.0.0.1" in done.stderr


# --- the README's worked examples (the manual's, with our commands) -------------------

MANUAL_JSON = [
    (["-portbytes", "1", "-knock", "CLIENT,PORT,FLAG0,CHECKSUM", "-flag0", "15"],
     [10, 1, 1, 1, 22, 15, 50]),
    (["-portbytes", "1", "-knock", "CHECKSUM,FLAG1,FLAG0,CLIENT", "-flag0", "15", "-flag1", "100"],
     [128, 100, 15, 10, 1, 1, 1]),
    (["-knock", "CLIENT,PORT"], [10, 1, 1, 1, 0, 22]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "values"), MANUAL_JSON)
def test_readme_knock_format_examples(
    capsys: pytest.CaptureFixture[str], argv: list[str], values: list[int]
) -> None:
    code, out, err = run(capsys, "run", "-test", "--json", "-quiet", "-client", "10.1.1.1", *argv)
    assert (code, err) == (0, "")
    assert json.loads(out)["values"] == values


def test_readme_256_port_span_example(capsys: pytest.CaptureFixture[str]) -> None:
    knock = ",".join(f"FLAG{i}" for i in range(8))
    ports = ["966", "914", "795", "964", "831", "862", "807", "932"]
    code, out, _ = run(capsys, "decode", "-portspan", "745-1000", "-knock", knock, *ports)
    expected = "flag0=221 flag1=169 flag2=50 flag3=219 flag4=86 flag5=117 flag6=62 flag7=187\n"
    assert (code, out) == (0, expected)


def test_readme_32768_port_span_example(capsys: pytest.CaptureFixture[str]) -> None:
    data = [216, 58, 209, 32, 67, 110, 108, 193, 168, 89, 231, 114, 112, 202, 231, 129]
    flags = [arg for i, v in enumerate(data) for arg in (f"-flag{i}", str(v))]
    knock = ",".join(f"FLAG{i}" for i in range(16))
    span = "1024-5000,6000-25000,26000-35789"
    code, out, _ = run(
        capsys, "run", "-test", "--json", "-quiet", "-portspan", span, "-knock", knock, *flags
    )
    assert code == 0
    ports = json.loads(out)["ports"]
    assert ports == [30699, 15407, 3181, 29338, 4418, 29547, 28847, 21198, 1153]
    code, out, _ = run(capsys, "decode", "-portspan", span, "-knock", knock, *map(str, ports))
    assert out == " ".join(f"flag{i}={v}" for i, v in enumerate(data)) + "\n"


# ------------------------------------------- issue 12: one line, never "internal error"


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    if not (tmp / "fifo").exists():
        os.mkfifo(tmp / "fifo")
    include = write(tmp / "nul.conf", "port = 22\n<<include x\0y>>\n")
    deep = write(tmp / "deep.toml", "a = " + "[" * 3000 + "]" * 3000 + "\n")
    for i in range(60):
        write(tmp / f"c{i}.conf", f"<<include c{i + 1}.conf>>\n")
    write(tmp / "c60.conf", "port = 22\n")
    (tmp / "binary.key").write_bytes(bytes(range(256)))
    nul_remote = write(tmp / "remote.conf", "remote = 127.0.0.1\0evil\n")
    return [
        (["run", "-test", ""], "an empty host name"),
        (["run", "-test", "-conf", str(include)], "'x\\x00y' is not a usable file name"),
        (["run", "-test", "-conf", str(tmp / "c0.conf")], "includes nested deeper than 32"),
        (["run", "-test", "-flag" + "1" * 5000, "3"], "unknown option -flag111"),
        (["run", "-test", "-conf", str(deep)], "not valid TOML: nested too deeply"),
        (["run", "-test", "-encrypt", "-key_file", "/dev/zero"], "not a regular file"),
        (["run", "-test", "--hosts", "/dev/zero"], "not a regular file"),
        (["run", "-test", "-encrypt", "-key_file", str(tmp / "fifo")], "not a regular file"),
        (["run", "-test", "-conf", str(tmp / "fifo")], "not a regular file"),
        (["run", "-test", "-encrypt", "-key_file", str(tmp / "binary.key")], "is not UTF-8 text"),
        (["run", "-test", "-conf", str(nul_remote)], "remote: expected a host name"),
        (["run", "-test", "-port", "２２"], "port: expected a whole number 0-65535, got '２２'"),  # noqa: RUF001
        (["run", "-test", "-timeout", "0_5"], "timeout: expected a number of seconds"),
    ]


def test_bad_input_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 12, point 13: each of these was an internal error, a hang or a wrong host."""
    for argv, needle in _bad_inputs(tmp_path):
        code, out, err = run(capsys, *argv)
        line = one_error_line(err)
        assert (code, out) == (2, ""), (argv, err)
        assert needle in line and "internal error" not in line, (argv, line)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"aioknock {version.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.__version__)
    assert (
        subprocess.run(
            [sys.executable, "-c", "import aioknock; print(aioknock.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        == version.__version__
    )


def test_the_usage_examples_of_decode_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``aioknock decode`` line of ``run -h`` decodes as shown (from the repository)."""
    code, usage, _ = run(capsys, "run", "-h")
    examples = [line.split("aioknock ", 1)[1].split() for line in usage.splitlines()
                if line.strip().startswith("aioknock decode")]  # fmt: skip
    assert examples
    cwd = os.getcwd()
    os.chdir(Path(version.__file__).resolve().parent.parent)
    try:
        for argv in examples:
            code, out, err = run(capsys, *argv)
            assert code == 0 and "port=22" in out, err
    finally:
        os.chdir(cwd)


_ARGISH = st.text(st.sampled_from("-=FLAGflag019\u0663x tT\u00e9"), max_size=12)
_FLAGISH = st.builds("{}{}{}".format, st.sampled_from(["-flag", "--FLAG", "-Flag", "flag"]),
                     st.text(st.sampled_from("0129\u0663"), min_size=1, max_size=10),
                     st.sampled_from(["", "=", "=x", "==\n"]))  # fmt: skip
_NEXTISH = st.builds("{}{}{}".format, st.sampled_from(["-", "--", ""]),
                     st.sampled_from("aZ\u00e9\u0663 1-="), _ARGISH)  # fmt: skip


@given(st.lists(st.one_of(_ARGISH, _FLAGISH, _NEXTISH), max_size=5))
@example(["-flag1", "-\u00e9t\u00e9"])  # values, not options
@example(["--flag2", "-\u0663"])
def test_split_flags_takes_what_the_patterns_took(argv: list[str]) -> None:
    """-flagN/--FLAGn=VALUE as the patterns read them (one to nine ASCII digits; the next
    argument is a value unless it looks like an option)."""
    rest: list[str] = []
    flags: dict[str, str] = {}
    i, error = 0, False
    while i < len(argv):
        m = re.fullmatch(r"(?i)--?flag([0-9]{1,9})(?:=(.*))?", argv[i], re.ASCII | re.DOTALL)
        if m is None:
            rest.append(argv[i])
            i += 1
        elif m[2] is not None:
            flags[f"flag{int(m[1])}"], i = m[2], i + 1
        elif i + 1 < len(argv) and not re.match(r"--?[A-Za-z]", argv[i + 1]):
            flags[f"flag{int(m[1])}"], i = argv[i + 1], i + 2
        else:
            error = True
            break
    if error:
        with pytest.raises(ConfigError, match="needs a value"):
            split_flags(argv)
    else:
        assert split_flags(argv) == (rest, flags)
