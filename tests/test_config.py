"""Configuration: Config::General and TOML files, layering, the search path, every error path.

Issue 2, section 3. Every error is one line that names the file and line (or the
environment variable, or the command line), the key, and what was expected.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from test_ciphers import need_perl
from test_ciphers import run_perl as run_crypt_cbc
from test_general import needs_perl as needs_config_general
from test_general import run_perl as run_config_general

import aioknock
from aioknock.cli.main import main
from aioknock.codec.ciphers import CryptCBC
from aioknock.codec.fields import KnockFormat, KnockInputs
from aioknock.codec.portspan import PortSpan
from aioknock.config.loader import build_settings, find_config, search_path
from aioknock.config.settings import ClientSettings, KnockSettings
from aioknock.errors import ConfigError, KnockError

NAME = "knockclient.conf"


# No real ~/.knockclient.conf, XDG or /etc file, and no AIOKNOCK_* from the caller: the
# layout under tmp_path that locations() below spells out is conftest.py's ``isolated``.
pytestmark = pytest.mark.usefixtures("isolated")


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mode is not None:
        path.chmod(mode)
    return path


def conf(tmp_path: Path, text: str, name: str = "k.conf") -> Path:
    return write(tmp_path / name, text)


def error(path: Path | None = None, **overrides: Any) -> str:
    """The message of the ConfigError that loading raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        aioknock.load_config(path, **overrides)
    message = str(info.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


# --- Config::General files -------------------------------------------------------------

ALL_KEYS_GENERAL = """\
# every knockclient key, in the forms the prototype's files use
remote    = 127.0.0.1
client    =
port        2222
knock     = CLIENT,PORT,FLAG0,FLAG7,RAND,THISYEAR,THISDAY,THISHOUR,THISMINUTE,THISSECOND,CHECKSUM#c
flag0     = 15
FLAG7     = 7
portspan  = "1024-5000,6000-25000,26000-35789"
portbytes = 2
encrypt   = yes
key       = "my secret \\# phrase"
cipher      DES
iv        = no
localtime = on
timeout   = 0.5
logtofile = No
logfile   = /tmp/portknock.log
fileformat = _DATE_ SRC=_CLIENT_ DST=_REMOTE_ SPT=_CLIENTPORT_ DPT=_REMOTEPORT_
test      = TRUE
quiet     = off
debug     = no
key_file  =
sequence  =
family    = 4
connect   = no
jitter    = 0.01
concurrency = 100
verify    = 22
verify_timeout = 2
protocol  = knockclient
access    = tcp/22, udp/53
allow_ip  = source
key_base64 =
hmac_key  = "an HMAC passphrase"
hmac_key_base64 =
hmac_digest_type = SHA512
digest_type = sha256
spa_server_port = 62202
spa_server_proto = udp
client_timeout = 45
spoof_user = alice
server_id = Knock.Example.
tag_bits = 72
master = no
"""


def test_general_file_with_every_key(tmp_path: Path) -> None:
    path = conf(tmp_path, ALL_KEYS_GENERAL)
    s = aioknock.load_config(path)
    assert s.remote == "127.0.0.1"
    assert s.client == "auto"  # empty: auto, as the kind reads it
    assert s.port == 2222
    knock = ",".join(s.knock)
    assert knock.startswith("CLIENT,PORT,FLAG0,FLAG7,RAND") and knock.endswith("CHECKSUM")
    assert dict(s.flags) == {0: 15, 7: 7}
    assert str(s.portspan) == "1024-5000,6000-25000,26000-35789"
    assert s.portbytes == 2
    assert s.encrypt is True
    assert s.key == "my secret # phrase"
    assert s.cipher == "DES"
    assert s.iv is False
    assert s.localtime is True
    assert s.timeout == 0.5
    assert s.logtofile is False
    assert s.logfile == "/tmp/portknock.log"
    assert str(s.fileformat) == "_DATE_ SRC=_CLIENT_ DST=_REMOTE_ SPT=_CLIENTPORT_ DPT=_REMOTEPORT_"
    assert s.test is True
    assert s.quiet is False
    assert s.debug == 0
    assert s.key_file == ""
    assert s.access == (("tcp", 22), ("udp", 53)) and s.allow_ip == "source"
    assert s.hmac_key == "an HMAC passphrase" and s.hmac_digest_type == "sha512"
    assert (s.spa_server_port, s.client_timeout, s.spoof_user) == (62202, 45, "alice")
    assert (s.server_id, s.tag_bits, s.master) == ("Knock.Example.", 72, False)
    # Each value remembers its line.
    assert s.origin("remote") == f"{path}:2"
    assert s.origin("port") == f"{path}:4"
    assert s.origin("flag7") == f"{path}:7"
    assert s.origin("debug") == f"{path}:21"
    assert s.origin("portbytes") == f"{path}:9"
    # Every key of the table is covered by this file.
    table = {k.name for k in ClientSettings.table()}
    assert table <= {line.split()[0].lower() for line in ALL_KEYS_GENERAL.splitlines()[1:]}


@pytest.mark.parametrize(
    "line", ["client =", "client=", "client = ", 'client = ""', "client  auto"]
)
def test_client_empty_or_auto(tmp_path: Path, line: str) -> None:
    s = aioknock.load_config(conf(tmp_path, f"{line}\nremote 127.0.0.1\n"))
    assert s.client in ("", "auto")


def test_comments_and_quotes(tmp_path: Path) -> None:
    text = (
        "# a comment line\n"
        "   # an indented one\n"
        "remote = 127.0.0.1   # trailing\n"
        'fileformat = "SRC=_CLIENT_ DPT=_REMOTEPORT_"\n'
        "\n"
        "knock = CLIENT,PORT\\\n"
        "        ,CHECKSUM\n"
    )
    s = aioknock.load_config(conf(tmp_path, text))
    assert s.remote == "127.0.0.1"
    assert str(s.fileformat) == "SRC=_CLIENT_ DPT=_REMOTEPORT_"
    assert ",".join(s.knock) == "CLIENT,PORT,CHECKSUM"
    assert s.origin("knock").endswith(":6")


def test_unchanged_keys_keep_defaults(tmp_path: Path) -> None:
    s = aioknock.load_config(conf(tmp_path, "port = 23\n"))
    defaults = ClientSettings()
    for name, value in s.items():
        if name != "port":
            assert value == getattr(defaults, name), name
            assert s.origin(name) == "default"


# --- TOML -------------------------------------------------------------------------------

ALL_KEYS_TOML = """\
# the same in TOML: native types or strings
remote = "127.0.0.1"
client = ""
port = 2222
knock = "CLIENT,PORT,FLAG0,CHECKSUM"
flag0 = 15
portspan = "745-1000"
portbytes = 2
encrypt = true
key = "secret"
cipher = "Blowfish"
iv = "no"
localtime = false
timeout = 0.25
logtofile = false
logfile = "/tmp/portknock.log"
fileformat = "_DATE_ DPT=_REMOTEPORT_"
test = "yes"
quiet = false
debug = 1
key_file = ""
sequence = "7000,8000:udp"
family = "any"
connect = true
jitter = 0
concurrency = 0
verify = 0
verify_timeout = 3.5
server_id = "h1"
tag_bits = 128
master = false
"""


def test_toml_file_with_every_key(tmp_path: Path) -> None:
    path = conf(tmp_path, ALL_KEYS_TOML, "k.toml")
    s = aioknock.load_config(path)
    assert (s.remote, s.client, s.port, ",".join(s.knock)) == (
        "127.0.0.1", "auto", 2222, "CLIENT,PORT,FLAG0,CHECKSUM",
    )  # fmt: skip
    assert dict(s.flags) == {0: 15}
    assert (s.encrypt, s.key, s.cipher, s.iv, s.localtime) == (
        True, "secret", "Blowfish", False, False,
    )  # fmt: skip
    assert (s.timeout, s.logtofile, s.test, s.quiet, s.debug) == (0.25, False, True, False, 1)
    assert (s.server_id, s.tag_bits, s.master) == ("h1", 128, False)
    assert s.origin("port") == f"{path}:4"
    assert s.origin("debug") == f"{path}:20"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 1\nport = 2\n", "k.toml:2: port: set twice, at lines 1 and 2"),
        ("Port = 1\nport = 2\n", "k.toml:2: port: set twice"),
        ("port = [1, 2]\n", "k.toml:1: port: expected a single value"),
        ("[section]\nport = 1\n", "section: unknown setting"),
        ("port = 1\nremote = \n", "k.toml:2: not valid TOML"),
        ("port = 70000\n", "k.toml:1: port: expected a whole number 0-65535, got 70000"),
        ("test = 3\n", "k.toml:1: test: expected yes/no"),
        ("prot = 1\n", "k.toml:1: prot: unknown setting; did you mean 'port'?"),
    ],
)
def test_toml_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(conf(tmp_path, text, "k.toml"))


# --- layering ---------------------------------------------------------------------------


def test_precedence_file_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = conf(tmp_path, "port = 1\ntimeout = 1\nremote = 127.0.0.2\nflag0 = 1\n")
    monkeypatch.setenv("AIOKNOCK_PORT", "2")
    monkeypatch.setenv("AIOKNOCK_TIMEOUT", "2")
    monkeypatch.setenv("AIOKNOCK_FLAG0", "2")
    s = aioknock.load_config(path, port=3)
    assert s.port == 3
    assert s.origin("port") == "load_config() argument"
    assert s.timeout == 2.0
    assert s.origin("timeout") == "environment AIOKNOCK_TIMEOUT"
    assert s.flags[0] == 2
    assert s.origin("flag0") == "environment AIOKNOCK_FLAG0"
    assert s.remote == "127.0.0.2"
    assert s.origin("remote") == f"{path}:3"
    assert s.origin("quiet") == "default"


def test_command_line_layer_is_labelled(tmp_path: Path) -> None:
    s = build_settings(ClientSettings, path=None, overrides={"port": "7", "quiet": None})
    assert s.port == 7
    assert s.origin("port") == "command line"
    assert s.origin("quiet") == "default"  # None means "not given"


def test_env_key_with_underscore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "k.key", "from-file\n", 0o600)
    monkeypatch.setenv("AIOKNOCK_KEY_FILE", str(key))
    s = aioknock.load_config(encrypt=True)
    assert s.key == "from-file"
    assert s.origin("key_file") == "environment AIOKNOCK_KEY_FILE"


def test_unknown_env_variable_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIOKNOCK_PROT", "1")
    with caplog.at_level(logging.WARNING):
        s = aioknock.load_config()
    assert s.port == 22
    assert "AIOKNOCK_PROT" in caplog.text


def test_overrides_are_validated() -> None:
    assert "load_config() argument: bogus: unknown setting" in error(bogus=1)
    assert "load_config() argument: port: expected a whole number 0-65535" in error(port="x")
    s = aioknock.load_config(Port=23, flag1=5)
    assert (s.port, s.flags[1]) == (23, 5)


# --- search path ------------------------------------------------------------------------


def locations(tmp_path: Path) -> list[Path]:
    bin_dir = tmp_path / "prefix" / "bin"
    return [
        tmp_path / "home" / ".knockclient.conf",
        bin_dir / NAME,
        bin_dir / "etc" / NAME,
        tmp_path / "prefix" / "etc" / NAME,
        tmp_path / "xdg" / "aioknock" / NAME,
        tmp_path / "etc" / "aioknock" / NAME,
    ]


def test_search_path_order(isolated: Path) -> None:
    assert search_path(NAME) == locations(isolated)


def test_search_path_xdg_default(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert search_path(NAME)[4] == isolated / "home" / ".config" / "aioknock" / NAME
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec: ignore it
    assert search_path(NAME)[4] == isolated / "home" / ".config" / "aioknock" / NAME


@pytest.mark.parametrize("first", range(6))
def test_only_the_first_file_found_is_read(isolated: Path, first: int) -> None:
    places = locations(isolated)
    for i, place in enumerate(places[first:], first):
        write(place, f"port = {100 + i}\nflag{i} = {i}\n")
    assert find_config(NAME) == places[first]
    s = aioknock.load_config()
    assert s.port == 100 + first
    assert dict(s.flags) == {first: first}  # nothing from the later files
    assert s.origin("port") == f"{places[first]}:1"


def test_no_file_anywhere_gives_defaults() -> None:
    assert find_config(NAME) is None
    s = aioknock.load_config()
    assert s == ClientSettings()
    assert s.remote == "127.0.0.1"


def test_explicit_path_skips_the_search(isolated: Path, tmp_path: Path) -> None:
    write(locations(isolated)[0], "port = 1\n")
    assert aioknock.load_config(conf(tmp_path, "port = 2\n")).port == 2


def test_missing_or_directory_path(tmp_path: Path) -> None:
    assert error(tmp_path / "nope.conf") == f"{tmp_path / 'nope.conf'}: no such config file"
    assert "not a config file" in error(tmp_path)


# --- booleans ---------------------------------------------------------------------------

TRUE_WORDS = ["yes", "on", "true", "1"]
FALSE_WORDS = ["no", "off", "false", "0"]


@pytest.mark.parametrize(
    ("word", "value"),
    [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS],
)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_booleans_in_any_case(tmp_path: Path, word: str, value: bool, case: Any) -> None:
    text = "".join(f"{k} = {case(word)}\n" for k in ("test", "quiet", "logtofile", "localtime"))
    s = aioknock.load_config(conf(tmp_path, text + f"iv = {case(word)}\n"))
    assert (s.test, s.quiet, s.logtofile, s.localtime, s.iv) == (value,) * 5


@pytest.mark.parametrize(("word", "level"), [("yes", 1), ("No", 0), ("2", 2), ("on", 1)])
def test_debug_takes_yes_no_or_a_count(tmp_path: Path, word: str, level: int) -> None:
    # The manual: "use -debug or debug = yes"; -debug -debug is 2.
    assert aioknock.load_config(conf(tmp_path, f"debug = {word}\n")).debug == level


def test_boolean_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOKNOCK_TEST", "On")
    assert aioknock.load_config().test is True


# --- error paths: one line with file, line, key and what was expected -------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "expected"),
    [
        ("test = maybe\n", 1, "test", "expected yes/no, on/off, true/false or 1/0, got 'maybe'"),
        ("\nport = twenty\n", 2, "port", "expected a whole number 0-65535, got 'twenty'"),
        ("port = 65536\n", 1, "port", "expected a whole number 0-65535, got '65536'"),
        ("port = -1\n", 1, "port", "expected a whole number 0-65535"),
        ("timeout = soon\n", 1, "timeout", "expected a number of seconds from 0 to 86400"),
        ("timeout = 1e308\n", 1, "timeout", "expected a number of seconds from 0 to 86400"),
        ("portbytes = 3\n", 1, "portbytes", "expected a whole number 1-2"),
        ("flag0 = -3\n", 1, "flag0", "expected a whole number >= 0"),
        (
            "portbytes = 1\nport = 300\n",
            2,
            "port",
            "expected a whole number 0-255 with portbytes = 1",
        ),
        ("prot = 22\n", 1, "prot", "unknown setting; did you mean 'port'?"),
        ("zzz = 22\n", 1, "zzz", "unknown setting"),
        ("port = 22\n# x\nport 23\n", 3, "port", "set twice, at lines 1 and 3"),
        ("port = 22\nPORT = 23\n", 2, "port", "set twice, at lines 1 and 2"),
        ("flag7 = 1\nFLAG007 = 2\n", 2, "flag7", "set twice, at lines 1 and 2"),
        ("knock = CLIENT,PROT\n", 1, "knock", "unknown field 'PROT'; expected CLIENT (or IP)"),
        ("knock = CLIENT,,PORT\n", 1, "knock", "empty field"),
        ("knock = CLIENT,FLAG3\n", 1, "knock", "the knock uses FLAG3 but flag3 is not set"),
        ("portspan = 745-1001\n", 1, "portspan", "span has 257 ports"),
        ("portspan = 100-50\n", 1, "portspan", "runs backwards"),
        ("portspan = 1-2,2-3\n", 1, "portspan", "port 2 appears twice"),
        ("portspan = a-b\n", 1, "portspan", "'a-b'"),
        ("encrypt = yes\nkey = k\ncipher = AES\n", 3, "cipher", "unknown cipher 'AES'; expected"),
        ("encrypt = yes\n", 1, "encrypt", "needs a passphrase: set key, key_file or AIOKNOCK_KEY"),
        ("client = 10.0.0.300\n", 1, "client", "expected an IP address, empty or auto"),
        ("client = ::1\n", 1, "client", "expected an IPv4 address for the knock's CLIENT"),
        ("remote = ''\nremote2 = x\n", 2, "remote2", "did you mean 'remote'?"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, line: int, key: str, expected: str) -> None:
    path = conf(tmp_path, text)
    message = error(path)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert expected in message


def test_duplicate_through_an_include_names_both_files(tmp_path: Path) -> None:
    inc = conf(tmp_path, "remote = 127.0.0.1\nport = 23\n", "inc.conf")
    path = conf(tmp_path, "port = 22\n<<include inc.conf>>\n")
    assert error(path) == f"{inc}:2: port: set twice, at {path}:1 and {inc}:2; keep one"


def test_included_values_name_the_included_file(tmp_path: Path) -> None:
    inc = conf(tmp_path, "# shared\nport = 23\n", "inc.conf")
    path = conf(tmp_path, "remote = 127.0.0.1\n<<include inc.conf>>\n")
    s = aioknock.load_config(path)
    assert (s.port, s.origin("port"), s.origin("remote")) == (23, f"{inc}:2", f"{path}:1")


def test_general_reader_errors_name_file_and_line(tmp_path: Path) -> None:
    path = conf(tmp_path, "port = 1\nremote\n")
    assert error(path).startswith(f"{path}:2: remote: has no value")
    path = conf(tmp_path, "<door ssh>\nport = 1\n</door>\n")
    assert error(path).startswith(f"{path}:1: unexpected block <door>")
    path = conf(tmp_path, "port = 1\n= 5\n")
    assert error(path) == f"{path}:2: a value without a key; expected 'key = value'"


def test_empty_remote_is_an_error(tmp_path: Path) -> None:
    path = conf(tmp_path, 'remote = ""\n')
    assert error(path) == f"{path}:1: remote: no host to knock; set remote"


def test_error_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOKNOCK_PORT", "ssh")
    assert error() == "environment AIOKNOCK_PORT: port: expected a whole number 0-65535, got 'ssh'"
    monkeypatch.setenv("AIOKNOCK_PORT", "22")
    monkeypatch.setenv("AIOKNOCK_KNOCK", "CLIENT,FLAG9")
    assert error().startswith("environment AIOKNOCK_KNOCK: knock: the knock uses FLAG9")


def test_error_in_a_later_layer_names_that_layer(tmp_path: Path) -> None:
    path = conf(tmp_path, "portbytes = 1\n")
    message = error(path, port=256)
    assert message.startswith("load_config() argument: port: expected a whole number 0-255")
    assert f"portbytes = 1 ({path}:1)" in message


def test_flags_above_255_are_taken_mod_256(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = conf(tmp_path, "flag0 = 300\nflag1 = 255\nknock = FLAG0,FLAG1\n")
    with caplog.at_level(logging.WARNING, logger="aioknock"):
        s = aioknock.load_config(path)
    assert dict(s.flags) == {0: 44, 1: 255}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path}:1: flag0 = 300 is above 255; using 44 (mod 256)"]


# --- secrets ----------------------------------------------------------------------------


def test_key_file_first_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = write(tmp_path / "knock.key", "first line secret\nsecond\n", 0o600)
    path = conf(tmp_path, f"encrypt = yes\nkey_file = {key}\n")
    with caplog.at_level(logging.WARNING, logger="aioknock"):
        s = aioknock.load_config(path)
    assert s.key == "first line secret"
    assert s.origin("key") == f"{path}:2 ({key})"
    assert caplog.records == []


def test_relative_key_file_is_next_to_the_config(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "knock.key", "rel\n", 0o600)
    path = conf(tmp_path, "encrypt = yes\nkey_file = knock.key\n", "sub/k.conf")
    assert aioknock.load_config(path).key == "rel"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    key = write(tmp_path / "knock.key", "k\n", mode)
    path = conf(tmp_path, f"key_file = {key}\n")
    with caplog.at_level(logging.WARNING, logger="aioknock"):
        aioknock.load_config(path)
    assert f"{path}:1: key_file {key} can be read by others (mode {mode:o})" in caplog.text


def test_key_file_errors(tmp_path: Path) -> None:
    path = conf(tmp_path, f"encrypt = yes\n\nkey_file = {tmp_path / 'missing.key'}\n")
    message = error(path)
    missing = tmp_path / "missing.key"
    assert message == (
        f"{path}:3: key_file: {missing} does not exist; make a new key with: "
        f"aioknock keygen -o {missing} (and give the clients the same file)"
    )
    write(tmp_path / "empty.key", "", 0o600)
    path = conf(tmp_path, f"key_file = {tmp_path / 'empty.key'}\n")
    assert "has an empty first line" in error(path)


def test_key_and_key_file_in_one_layer_is_an_error(tmp_path: Path) -> None:
    key = write(tmp_path / "knock.key", "k\n", 0o600)
    path = conf(tmp_path, f"key = a\nkey_file = {key}\n")
    assert error(path).startswith(f"{path}:2: key_file: both key ({path}:1) and key_file")


def test_the_later_layer_picks_key_or_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = write(tmp_path / "knock.key", "from-file\n", 0o600)
    path = conf(tmp_path, f"encrypt = yes\nkey_file = {key}\n")
    monkeypatch.setenv("AIOKNOCK_KEY", "from-env")
    s = aioknock.load_config(path)
    assert s.key == "from-env"
    assert s.origin("key") == "environment AIOKNOCK_KEY"
    assert aioknock.load_config(path, key_file=str(key)).key == "from-file"


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOKNOCK_KEY", "env-secret")
    s = aioknock.load_config(encrypt=True)
    assert s.key == "env-secret"
    assert "env-secret" not in repr(s)


def test_key_on_the_command_line_warns_about_ps(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aioknock"):
        s = build_settings(ClientSettings, path=None, overrides={"key": "cli", "encrypt": True})
    assert s.key == "cli"
    assert "visible to other users in ps" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aioknock"):
        aioknock.load_config(key="api", encrypt=True)  # an API caller's argv is not in ps
    assert caplog.records == []


def test_repr_and_items_never_show_the_key(tmp_path: Path) -> None:
    s = aioknock.load_config(conf(tmp_path, "encrypt = yes\nkey = hunter2-secret\n"))
    assert s.key == "hunter2-secret"
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in str(s)
    assert dict(s.items(masked=True))["key"] == "********"
    assert "hunter2" not in repr(KnockSettings(key="hunter2"))


def test_a_bad_key_value_is_not_echoed(tmp_path: Path) -> None:
    message = error(conf(tmp_path, "key = [1, 2]\n", "k.toml"))
    assert "key" in message
    message = error(conf(tmp_path, "key = true\n", "k.toml"))
    assert "True" not in message and "expected text" in message


# --- secrets byte for byte (issue 10) ------------------------------------------------
#
# Crypt::CBC hashes every byte of the passphrase: a key stripped of its spaces is another
# key, and the prototype's clients and daemons would not understand ours.

SPACED = " se cret\t "  # blanks at both ends, a tab, a space inside


def _quote_toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'


def spaced_key_from(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ClientSettings:
    """Settings whose key is SPACED, given the way ``source`` names; encrypted, iv = yes."""
    base = "encrypt = yes\ncipher = Blowfish\niv = yes\n"
    if source == "config file, quoted":
        return aioknock.load_config(conf(tmp_path, f'{base}key = "{SPACED}"\n'))
    if source == "config file, key and value split by blanks":
        return aioknock.load_config(conf(tmp_path, f'{base}key   "{SPACED}"   # c\r\n'))
    if source == "config file, <host> block":
        block = "".join(f"  {line}\n" for line in [*base.splitlines(), f'key = "{SPACED}"'])
        text = f"<host gate.example>\n{block}</host>\n"
        return aioknock.load_config(conf(tmp_path, text)).for_host("gate.example")
    if source == "toml":
        text = f"encrypt = true\ncipher = 'Blowfish'\nkey = {_quote_toml(SPACED)}\n"
        return aioknock.load_config(conf(tmp_path, text, "k.toml"))
    if source == "environment":
        monkeypatch.setenv("AIOKNOCK_KEY", SPACED)
        return aioknock.load_config(encrypt=True)
    if source == "command line":  # as the CLI hands it on; the CLI itself: below
        return build_settings(ClientSettings, path=None, overrides={"key": SPACED, "encrypt": True},
                              sending=False)  # fmt: skip
    if source == "key file, LF":
        key = write(tmp_path / "lf.key", f"{SPACED}\nsecond line\n", 0o600)
        return aioknock.load_config(conf(tmp_path, f"{base}key_file = {key}\n"))
    assert source == "key file, CR LF"
    key = tmp_path / "crlf.key"
    key.write_bytes(f"{SPACED}\r\n".encode())
    key.chmod(0o600)
    return aioknock.load_config(encrypt=True, key_file=str(key))


SPACED_SOURCES = [
    "config file, quoted",
    "config file, key and value split by blanks",
    "config file, <host> block",
    "toml",
    "environment",
    "command line",
    "key file, LF",
    "key file, CR LF",
]


@pytest.mark.parametrize("source", SPACED_SOURCES)
def test_a_key_keeps_its_blanks_from_every_source(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert spaced_key_from(source, tmp_path, monkeypatch).key == SPACED


def test_an_unquoted_key_loses_its_outer_blanks_as_config_general_does(tmp_path: Path) -> None:
    """Config::General strips the line before it splits it (tests/test_general.py holds
    the reader to Perl's): an unquoted value has no blanks at its ends to keep."""
    path = conf(tmp_path, "encrypt = yes\nkey =   in side  \t \r\n")
    assert aioknock.load_config(path).key == "in side"


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (b"  two  \n", "  two  "),
        (b"\tcr lf\t\r\nnext\r\n", "\tcr lf\t"),
        (b"no line ending ", "no line ending "),
        (b"form\x0cfeed\x0b\n", "form\x0cfeed\x0b"),  # not line endings: the key's bytes
        (b"lone\rcr\n", "lone\rcr"),
        (b"cr at the end\r", "cr at the end\r"),  # a CR alone ends no line (LF or CR LF do)
        (b"\xc3\xa9t\xc3\xa9 \n", "\u00e9t\u00e9 "),
    ],
)
def test_a_key_file_line_loses_only_its_line_ending(
    tmp_path: Path, content: bytes, key: str
) -> None:
    path = tmp_path / "knock.key"
    path.write_bytes(content)
    path.chmod(0o600)
    assert aioknock.load_config(encrypt=True, key_file=str(path)).key == key


@pytest.mark.parametrize("content", [b"\n", b"\r\n", b"\nsecond\n"])
def test_a_key_file_with_an_empty_first_line_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "knock.key"
    path.write_bytes(content)
    path.chmod(0o600)
    assert "has an empty first line" in error(encrypt=True, key_file=str(path))


def test_a_key_of_blanks_only_is_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two spaces are two bytes of passphrase, as they are to Crypt::CBC; empty is unset."""
    monkeypatch.setenv("AIOKNOCK_KEY", "  ")
    assert aioknock.load_config(encrypt=True).key == "  "
    monkeypatch.setenv("AIOKNOCK_KEY", "")
    assert "needs a passphrase" in error(encrypt=True)


def test_the_spa_hmac_key_keeps_its_blanks_too(tmp_path: Path) -> None:
    text = f'protocol = spa\nkey = " k "\nhmac_key = "{SPACED}"\n'
    s = aioknock.load_config(conf(tmp_path, text))
    assert (s.key, s.hmac_key) == (" k ", SPACED)
    assert s.spa_keys is not None


def test_a_toml_key_must_be_a_string(tmp_path: Path) -> None:
    """``key = 1_000`` is the number 1000, not the characters written: refused, not shown."""
    message = error(conf(tmp_path, "encrypt = true\nkey = 1_000\n", "k.toml"))
    assert message.endswith("key: expected text, kept byte for byte, got a value that is not text")
    assert "1000" not in message


def test_other_text_settings_are_still_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOKNOCK_REMOTE", " gate.example ")
    assert aioknock.load_config().remote == "gate.example"


@pytest.mark.parametrize("source", SPACED_SOURCES)
def test_a_spaced_key_understands_perls_crypt_cbc(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prototype's client (Crypt::CBC, -header randomiv) encrypts with the key's
    bytes; we decrypt what it sent, and it decrypts ours. The stripped key does not."""
    need_perl("Blowfish")
    settings = spaced_key_from(source, tmp_path, monkeypatch)
    plains = [bytes([10, 1, 1, 1, 0, 22, r, 100, (145 + r) % 256]) for r in (0, 7, 255)]
    sent = run_crypt_cbc([("enc_randomiv", "Blowfish", SPACED.encode(), b"", p) for p in plains])
    cipher = settings.codec.cipher
    assert [cipher.decrypt(out) for out in sent] == plains
    ours = [cipher.encrypt(p, os.urandom) for p in plains]
    back = [("dec_none", "Blowfish", SPACED.encode(), out[8:16], out[16:]) for out in ours]
    assert run_crypt_cbc(back) == plains
    stripped = CryptCBC("Blowfish", SPACED.strip().encode(), iv=True)
    assert all(_decrypted(stripped, out) != p for out, p in zip(sent, plains, strict=True))


def _decrypted(cipher: CryptCBC, data: bytes) -> bytes | None:
    try:
        return cipher.decrypt(data)
    except KnockError:  # bad padding, as a rule; by chance a wrong plaintext
        return None


@pytest.mark.parametrize("argv", [["-key", SPACED], [f"--key={SPACED}"]])
def test_aioknock_decode_reads_perls_knock_with_a_spaced_key_argument(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``aioknock decode -key ' se cret\t '``: the argument's bytes, as Getopt::Long gave
    them to the prototype; the knock is one Perl's Crypt::CBC encrypted with them."""
    need_perl("Blowfish")
    knock = "CLIENT,PORT,CHECKSUM"
    plain = KnockFormat.parse(knock).pack(KnockInputs("10.1.1.1", 22), 0.0)
    (payload,) = run_crypt_cbc([("enc_randomiv", "Blowfish", SPACED.encode(), b"", plain)])
    ports = PortSpan.parse("745-1000").encode(payload)
    args = ["decode", "-encrypt", "-knock", knock, *argv, *map(str, ports)]
    code = main(args)
    out, err = capsys.readouterr()
    assert (code, out) == (0, f"client=10.1.1.1 port=22 checksum={sum(plain[:6]) % 256}\n"), err
    code = main(["decode", "-encrypt", "-knock", knock, "-key", SPACED.strip(), *map(str, ports)])
    assert code != 0 and "invalid knock" in capsys.readouterr().err


@needs_config_general
def test_perls_config_general_reads_the_key_we_read(tmp_path: Path) -> None:
    """The same file read by Perl's Config::General gives Crypt::CBC the key we use: the
    quoted one with its blanks, the unquoted one without them."""
    need_perl("Blowfish")
    text = f'encrypt = yes\nkey = "{SPACED}"\n'
    quoted, bare = conf(tmp_path, text, "q.conf"), conf(tmp_path, "key =  in side \t\n", "b.conf")
    jobs = [{"file": str(p), "cwd": str(tmp_path), "opts": {}} for p in (quoted, bare)]
    perl = [result["config"]["key"] for result in run_config_general(jobs)]
    ours = [aioknock.load_config(p).key for p in (quoted, bare)]
    assert perl == ours == [SPACED, "in side"]
    plain = bytes(range(9))
    (sent,) = run_crypt_cbc([("enc_randomiv", "Blowfish", perl[0].encode(), b"", plain)])
    assert aioknock.load_config(quoted).codec.cipher.decrypt(sent) == plain


def test_decoding_needs_no_sender_values(tmp_path: Path) -> None:
    """decode and the daemon read FLAGm, PORT and CLIENT out of a knock: none need a value."""
    path = conf(tmp_path, "knock = CLIENT,FLAG3\nremote = ''\nportbytes = 1\nport = 300\n")
    s = build_settings(ClientSettings, path=path, overrides={}, sending=False)
    assert s.flags == {} and s.port == 300
    assert "FLAG3" in error(path)  # but sending does


def test_key_file_name_with_a_nul_is_a_config_error(tmp_path: Path) -> None:
    path = conf(tmp_path, 'encrypt = yes\nkey_file = "a\\0b"\n'.replace("\\0", "\0"))
    assert "key_file: " in error(path) and "not a usable file name" in error(path)


def test_settings_made_in_a_program_read_their_values_alike(tmp_path: Path) -> None:
    """ClientSettings.of() and the constructor read text as a config file's is read;
    key_file reads the key there too."""
    key = write(tmp_path / "k.key", "from-file\n", 0o600)
    s = ClientSettings.of(encrypt=True, key_file=str(key), portspan="2000-2255")
    assert s.key == "from-file" and s.portspan.size == 256
    direct = ClientSettings(portspan="2000-2255", knock="CLIENT,PORT", timeout="0.5")  # type: ignore[arg-type]
    assert direct.portspan == s.portspan and direct.knock == ("CLIENT", "PORT")
    assert direct.timeout == 0.5
    with pytest.raises(ConfigError, match=r"^portspan: span has 3 ports"):
        ClientSettings(portspan="1-3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="both key and key_file are given"):
        ClientSettings.of(key="k", key_file=str(key))
    with pytest.raises(
        ConfigError, match=r"^ClientSettings.of\(\) argument: key_file: .* does not exist"
    ):
        ClientSettings.of(key_file=str(tmp_path / "missing"))
