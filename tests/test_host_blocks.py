"""Per-host settings: ``<host PATTERN>`` blocks (and TOML ``[host."PATTERN"]`` tables) in
the client's config file, as ssh_config's ``Host`` (issue 11).

First match wins per key; the command line, the environment and a program's arguments
beat the blocks, a hosts-file line beats them for its host, and they beat the file's top
level. Every error names file:line and key, on one line. Only loopback is knocked.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import select
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioknock
from aioknock import ClientSettings, decode_knock, knock_many
from aioknock.asyncio.fleet import host_settings
from aioknock.cli.hosts import parse_line, read_hosts_file
from aioknock.config.hostblocks import HostBlocks
from aioknock.config.loader import CLI, build_settings
from aioknock.errors import ConfigError

REPO = Path(aioknock.__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("clean_env")

GENERAL = """\
port      = 22
timeout   = 0.2
knock     = PORT,RAND,CHECKSUM
<host legacy.example>
  knock     = PORT,CHECKSUM
  portbytes = 1
  port      = 22
</host>
<host db*.example 192.0.2.*>
  port      = 5432
  key_file  = db.key
  encrypt   = yes
</host>
<host *.EXAMPLE !bastion.example>
  port      = 2222
  timeout   = 0.5
  flag0     = 3
</host>
"""

TOML = """\
port = 22
timeout = 0.2
knock = "PORT,RAND,CHECKSUM"

[host."legacy.example"]
knock = "PORT,CHECKSUM"
portbytes = 1
port = 22

[host.'db*.example 192.0.2.*']
port = 5432
key_file = "db.key"
encrypt = true

[host."*.EXAMPLE !bastion.example"]
port = 2222
timeout = 0.5
flag0 = 3
"""


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load(path: Path, **overrides: Any) -> ClientSettings:
    return build_settings(ClientSettings, path=path, overrides=overrides)


@pytest.fixture(params=["k.conf", "k.toml"])
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    write(tmp_path / "db.key", "db passphrase\n")
    text = GENERAL if request.param.endswith(".conf") else TOML
    return write(tmp_path / request.param, text)


def error(path: Path, **overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, **overrides)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------ both formats


def test_blocks_in_both_formats(example: Path) -> None:
    s = load(example)
    db = s.for_host("db1.example")
    # first match wins per key: port from the db block; timeout and flag0 from the later one
    assert (db.port, db.timeout, db.flags[0], db.encrypt) == (5432, 0.5, 3, True)
    assert db.key == "db passphrase" and db.key_file == "db.key"
    assert db.origin("key").startswith(f"{example}:") and "db.key" in db.origin("key")
    web = s.for_host("web.example")
    assert (web.port, web.timeout, web.flags.get(0), web.encrypt) == (2222, 0.5, 3, False)
    assert s.for_host("192.0.2.7").port == 5432 and s.for_host("192.0.2.7").timeout == 0.2
    legacy = s.for_host("legacy.example")
    assert (legacy.knock, legacy.portbytes, legacy.port) == (("PORT", "CHECKSUM"), 1, 22)
    # unmatched, and excluded with !: the top level itself, not a copy
    assert s.for_host("bastion.example") is s and s.for_host("elsewhere") is s


def test_the_two_formats_give_the_same_settings(tmp_path: Path) -> None:
    write(tmp_path / "db.key", "db passphrase\n")
    general = load(write(tmp_path / "k.conf", GENERAL))
    toml = load(write(tmp_path / "k.toml", TOML))
    for host in ("db1.example", "web.example", "legacy.example", "192.0.2.1", "x", "bastion"):
        assert dict(general.for_host(host).items()) == dict(toml.for_host(host).items()), host


def test_patterns_are_case_insensitive_and_match_the_host_as_written(example: Path) -> None:
    s = load(example)
    assert s.for_host("DB7.Example").port == 5432
    assert s.for_host("WEB.example").port == 2222
    # an address is matched as written: 127.0.0.1 is not "localhost", nor the reverse
    path = write(example.parent / "lo.conf", "<host localhost>\nport = 1\n</host>\n")
    assert load(path).for_host("127.0.0.1").port == 22
    assert load(path).for_host("LOCALHOST").port == 1


def test_character_classes_and_question_marks(tmp_path: Path) -> None:
    path = write(tmp_path / "k.conf", "<host web[12].example ?.lab>\nport = 1\n</host>\n")
    s = load(path)
    assert [s.for_host(h).port for h in ("web1.example", "web3.example", "a.lab", "ab.lab")] == [
        1, 22, 1, 22,
    ]  # fmt: skip


def test_block_values_are_read_once_and_each_combination_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    literal = "".join(f"<host h{i}.example>\nport = {1000 + i}\n</host>\n" for i in range(300))
    path = write(tmp_path / "k.conf", literal + "<host *.example>\ntimeout = 0.5\n</host>\n")
    s = load(path)
    made: list[tuple[int, ...]] = []
    real = HostBlocks.apply

    def counting(self: Any, settings: ClientSettings, combo: tuple[int, ...]) -> Any:
        made.append(combo)
        return real(self, settings, combo)

    monkeypatch.setattr(HostBlocks, "apply", counting)
    hosts = [f"h{i % 300}.example" for i in range(10_000)] + ["x.example"] * 100 + ["y"] * 100
    own = [s.for_host(h) for h in hosts]
    assert len(made) == 301  # 300 one-block combinations and the wildcard alone
    assert len({id(o) for o in own}) == 302  # and the top level for "y"
    assert own[299].port == 1299 and own[299].timeout == 0.5 and own[-1] is s


# ------------------------------------------------------------------- precedence


def test_command_line_and_environment_beat_the_blocks(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = load(example, port=1, flag0=9)  # the command line's layer
    db = s.for_host("db1.example")
    assert (db.port, db.flags[0], db.timeout, db.encrypt) == (1, 9, 0.5, True)
    assert db.origin("port") == CLI
    monkeypatch.setenv("AIOKNOCK_TIMEOUT", "0.05")
    s = load(example)
    assert s.for_host("db1.example").timeout == 0.05 and s.for_host("db1.example").port == 5432
    # load_config()'s own arguments are a command line too
    assert aioknock.load_config(example, port=7).for_host("web.example").port == 7


def test_a_command_line_key_beats_a_block_key_file(example: Path) -> None:
    s = load(example, key="from the command line")
    db = s.for_host("db1.example")
    assert db.key == "from the command line" and db.encrypt is True
    s = load(example, key_file=str(example.parent / "db.key"))
    assert s.for_host("db1.example").origin("key").startswith(CLI)


def test_a_block_key_replaces_a_top_level_key_file(tmp_path: Path) -> None:
    write(tmp_path / "top.key", "top passphrase\n")
    text = "encrypt = yes\nkey_file = top.key\n<host a>\nkey = block passphrase\n</host>\n"
    s = load(write(tmp_path / "k.conf", text))
    a = s.for_host("a")
    assert (a.key, a.key_file, a.origin("key")) == ("block passphrase", "", f"{tmp_path}/k.conf:4")
    assert s.key == "top passphrase"


def test_a_hosts_file_line_beats_the_blocks(example: Path) -> None:
    s = load(example)
    target = parse_line("db1.example port=6543 timeout=0.1", "fleet.txt:1", s)
    assert isinstance(target, tuple) and isinstance(target[1], ClientSettings)
    own = target[1]
    assert (own.port, own.timeout, own.flags[0], own.key) == (6543, 0.1, 3, "db passphrase")
    assert own.origin("port") == "fleet.txt:1" and own.origin("flag0").startswith(str(example))
    # a line without values still gets its blocks, checked now; an unmatched one stays a name
    web = s.for_host("web.example")
    assert parse_line("web.example", "fleet.txt:2", s) == ("web.example", web)
    assert parse_line("elsewhere", "fleet.txt:3", s) == "elsewhere"


def test_program_arguments_beat_the_blocks(example: Path) -> None:
    s = load(example)
    _, own = host_settings(("web.example", {"port": 4444}), s)
    assert (own.port, own.timeout) == (4444, 0.5)
    _, own = host_settings("web.example", s)
    assert own.port == 2222


async def test_knock_many_arguments_beat_the_blocks(tmp_path: Path) -> None:
    text = "knock = PORT,RAND,CHECKSUM\ntest = yes\n<host 127.0.0.2>\nport = 2222\n</host>\n"
    s = load(write(tmp_path / "k.conf", text))
    plain = ClientSettings.of(knock="PORT,RAND,CHECKSUM")
    cases: list[tuple[dict[str, Any], int]] = [({}, 2222), ({"port": 3}, 3)]
    for extra, expected in cases:
        results = [r async for r in knock_many(["127.0.0.2"], s, **extra)]
        assert decode_knock(plain, results[0].ports)["port"] == expected


def test_fwknoprc_values_count_as_the_command_line(tmp_path: Path) -> None:
    from aioknock.config.files import Layer

    rc = Layer("rc")
    rc.add("port", "9", "rc:3")
    path = write(tmp_path / "k.conf", "<host a>\nport = 5\ntimeout = 1\n</host>\n")
    s = build_settings(ClientSettings, path=path, overrides={}, extra_layers=[rc])
    assert (s.for_host("a").port, s.for_host("a").timeout) == (9, 1.0)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "line", "key", "needle"),
    [
        ("port = twenty", 2, "port", "expected a whole number 0-65535, got 'twenty'"),
        ("portspan = 745-1001", 2, "portspan", "span has 257 ports"),
        ("prot = 22", 2, "prot", "unknown setting; did you mean 'port'?"),
        ("remote = 127.0.0.2", 2, "remote", "not a per-host setting; a host block can set"),
        ("verify = 22", 2, "verify", "not a per-host setting"),
        ("logtofile = yes", 2, "logtofile", "not a per-host setting"),
        ("port = 1\nPORT = 2", 3, "port", "set twice in the host block at"),
        ("key_file = missing.key", 2, "key_file", "missing.key"),
        ("key = k\nkey_file = db.key", 3, "key_file", "both key"),
        ("sequence = 7000,70000", 2, "sequence", "70000"),
    ],
)
@pytest.mark.parametrize("fmt", ["conf", "toml"])
def test_a_bad_block_value_is_an_error_at_load(
    tmp_path: Path, body: str, line: int, key: str, needle: str, fmt: str
) -> None:
    write(tmp_path / "db.key", "db passphrase\n")
    if fmt == "conf":
        text = "<host db*>\n" + body + "\n</host>\n"
    else:
        pairs = (ln.split("=") for ln in body.split("\n"))
        text = '[host."db*"]\n' + "".join(f'{k.strip()} = "{v.strip()}"\n' for k, v in pairs)
    path = write(tmp_path / f"k.{fmt}", text)
    message = error(path)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert needle in message, message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("<host>\nport = 1\n</host>\n", 1, "a host block needs a pattern"),
        ("<host !bastion>\nport = 1\n</host>\n", 1, "only excludes, so it matches no host"),
        ("<host a !>\nport = 1\n</host>\n", 1, "'!' needs a pattern"),
        ("<host a>\n<inner x>\nport = 1\n</inner>\n</host>\n", 2, "unexpected block <inner>"),
        ("<door ssh>\nport = 1\n</door>\n", 1, "unexpected block <door>; this file takes"),
    ],
)
def test_block_shape_errors(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path / "k.conf", text)
    message = error(path)
    assert message.startswith(f"{path}:{line}: ") and needle in message, message


@pytest.mark.parametrize(
    ("text", "line", "key", "needle"),
    [
        ('[host."a"]\nsequence = [7000, 8000]\n', 2, "sequence", "expected a single value"),
        ('[host."a"]\n[host."a".inner]\nport = 1\n', 1, "inner", "expected a single value"),
        ("[host.a]\nport = 1\nremote = 'x'\n", 3, "remote", "not a per-host setting"),
        ("host = 3\n", 1, "host", "unknown setting"),
    ],
)
def test_toml_block_errors(tmp_path: Path, text: str, line: int, key: str, needle: str) -> None:
    path = write(tmp_path / "k.toml", text)
    message = error(path)
    assert message.startswith(f"{path}:{line}: {key}: ") and needle in message, message


def test_a_combination_that_is_wrong_names_the_value_and_the_host(tmp_path: Path) -> None:
    text = "<host *.example>\nport = 2222\n</host>\n<host legacy.example>\nportbytes = 1\n</host>\n"
    path = write(tmp_path / "k.conf", text)
    s = load(path)  # each block is fine; together they are not
    assert s.for_host("web.example").port == 2222
    for _ in range(2):  # the error is kept, and said for each host
        with pytest.raises(ConfigError) as info:
            s.for_host("legacy.example")
        assert str(info.value) == (
            f"{path}:2: port: expected a whole number 0-255 with portbytes = 1 "
            f"({path}:5), got 2222 (for legacy.example)"
        )


def test_a_wrong_combination_on_a_hosts_line_is_named_before_sending(tmp_path: Path) -> None:
    text = "<host db*>\nencrypt = yes\n</host>\n"
    s = load(write(tmp_path / "k.conf", text))
    hosts = write(tmp_path / "fleet.txt", "web\ndb1 port=5\n")
    with pytest.raises(ConfigError) as info:
        read_hosts_file(str(hosts), s)
    assert str(info.value).startswith(f"{tmp_path}/k.conf:2: encrypt: encryption needs a "
                                      "passphrase")  # fmt: skip
    assert str(info.value).endswith("(for db1)")


def test_a_key_file_in_a_block_is_checked_as_the_top_levels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "open.key", "readable\n", 0o644)
    path = write(tmp_path / "k.conf", "<host a>\nkey_file = open.key\n</host>\n")
    assert load(path).for_host("a").key == "readable"
    assert "can be read by others" in caplog.text and f"{path}:2" in caplog.text
    write(tmp_path / "empty.key", "\n")
    path = write(tmp_path / "k.conf", "<host a>\n\nkey_file = empty.key\n</host>\n")
    assert error(path).startswith(f"{path}:3: key_file: ") and "empty first line" in error(path)


def test_the_daemon_takes_no_host_blocks(tmp_path: Path) -> None:
    from aioknock.config.settings import DaemonSettings

    path = write(tmp_path / "d.conf", "<host a>\nport = 1\n</host>\n")
    with pytest.raises(ConfigError) as info:
        build_settings(DaemonSettings, path=path, overrides={}, sending=False)
    assert str(info.value).startswith(f"{path}:1: unexpected block <host>")


# ------------------------------------------------------------------------- fleets


async def test_a_fleet_mixes_matched_and_unmatched_hosts(tmp_path: Path) -> None:
    text = (
        "knock = PORT,RAND,CHECKSUM\ntest = yes\n"
        "<host 127.0.0.2>\nsequence = 41001,41002:udp\n</host>\n"
        "<host 127.0.0.3 127.0.0.4>\nport = 2222\n</host>\n"
        "<host 127.0.0.4>\nport = 1\ntimeout = 0\n</host>\n"
        "<host 127.0.0.5>\nprotocol = spa\nspa_server_port = 62202\n"
        f"key_base64 = {base64.b64encode(bytes(32)).decode()}\n"
        f"hmac_key_base64 = {base64.b64encode(bytes(range(64))).decode()}\n</host>\n"
    )
    s = load(write(tmp_path / "k.conf", text))
    targets: list[Any] = ["127.0.0.1", "127.0.0.2", "127.0.0.3", ("127.0.0.4", {"port": 3}),
                          "127.0.0.5"]  # fmt: skip
    results = {r.host: r async for r in knock_many(targets, s)}
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    plain = ClientSettings.of(knock="PORT,RAND,CHECKSUM")
    assert decode_knock(plain, results["127.0.0.1"].ports)["port"] == 22
    assert results["127.0.0.2"].ports == [41001, 41002]
    assert decode_knock(plain, results["127.0.0.3"].ports)["port"] == 2222
    assert decode_knock(plain, results["127.0.0.4"].ports)["port"] == 3  # the target's own
    assert results["127.0.0.5"].ports == [62202] and len(results["127.0.0.5"].payload) > 100


async def test_a_bad_combination_fails_its_host_alone(tmp_path: Path) -> None:
    text = "test = yes\n<host 127.0.0.2>\nencrypt = yes\n</host>\n"
    s = load(write(tmp_path / "k.conf", text))
    results = {r.host: r async for r in knock_many(["127.0.0.1", "127.0.0.2"], s)}
    assert results["127.0.0.1"].ok and not results["127.0.0.2"].ok
    assert results["127.0.0.2"].error.startswith(f"{tmp_path}/k.conf:3: encrypt: ")


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The same port listening on 127.0.0.5 and 127.0.0.6."""
    first = socket.create_server(("127.0.0.5", 0))
    port = first.getsockname()[1]
    second = socket.create_server(("127.0.0.6", port))
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def accepted(server: socket.socket) -> bool:
    return bool(select.select([server], [], [], 0.5)[0])


# --------------------------------------------------------------- aioknock run (CLI)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aioknock", "run", *args], env=env, text=True,
                          capture_output=True, timeout=30, check=False)  # fmt: skip


def ports_by_host(res: subprocess.CompletedProcess[str]) -> dict[str, list[int]]:
    assert res.returncode == 0, res.stderr
    return {o["host"]: o["ports"] for o in map(json.loads, res.stdout.splitlines())}


CLI_CONF = """\
knock = PORT,RAND,CHECKSUM
timeout = 0
remote = 127.0.0.3
<host 127.0.0.2 127.0.0.3>
  port = 2222
</host>
"""


def test_run_applies_blocks_to_arguments_hosts_lines_and_remote(
    tmp_path: Path, env: dict[str, str]
) -> None:
    conf = write(tmp_path / "k.conf", CLI_CONF)
    hosts = write(tmp_path / "fleet.txt", "127.0.0.2 port=5\n127.0.0.4\n")
    plain = ClientSettings.of(knock="PORT,RAND,CHECKSUM")
    res = run(["-conf", str(conf), "-test", "--json", "127.0.0.1", "127.0.0.3", "--hosts",
               str(hosts)], env)  # fmt: skip
    got = {h: decode_knock(plain, p)["port"] for h, p in ports_by_host(res).items()}
    assert got == {"127.0.0.1": 22, "127.0.0.3": 2222, "127.0.0.2": 5, "127.0.0.4": 22}
    # the command line beats the blocks, for every host
    res = run(["-conf", str(conf), "-test", "--json", "-port", "7", "127.0.0.3"], env)
    assert decode_knock(plain, ports_by_host(res)["127.0.0.3"])["port"] == 7
    # no host given: remote, with its blocks
    res = run(["-conf", str(conf), "-test", "--json"], env)
    assert decode_knock(plain, ports_by_host(res)["127.0.0.3"])["port"] == 2222


def test_run_sends_each_hosts_own_knock_on_loopback(
    tmp_path: Path, env: dict[str, str], listener: tuple[socket.socket, socket.socket]
) -> None:
    first, second = listener
    port = first.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.6", 0))  # a port bound, not listening: nothing answers there
    text = f"sequence = {closed.getsockname()[1]}\n<host 127.0.0.5>\nsequence = {port}\n</host>\n"
    conf = write(tmp_path / "k.conf", text)
    with closed:
        res = run(["-conf", str(conf), "--json", "-timeout", "0", "127.0.0.5", "127.0.0.6"], env)
    assert ports_by_host(res)["127.0.0.5"] == [port]
    assert accepted(first) and not accepted(second)


def test_run_a_bad_block_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    conf = write(tmp_path / "k.conf", "<host 127.0.0.*>\n  port = 2222\n  verify = 22\n</host>\n")
    res = run(["-conf", str(conf), "-test", "127.0.0.1"], env)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aioknock: error: {conf}:3: verify: "), lines
    bad = write(tmp_path / "bad.conf", "<host *>\n  encrypt = yes\n</host>\n")
    res = run(["-conf", str(bad), "-test", "127.0.0.1"], env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{bad}:2: encrypt: " in res.stderr and "(for 127.0.0.1)" in res.stderr


# ---------------------------------------------------------------------- properties

FRAGMENTS = [
    "<host ", "<HOST", "</host>", "<door x>", "</door>", ">", "*", "!", "?", "[", "]", "\n",
    " ", "=", "port", "PORT", "timeout", "key", "key_file", "x.key", "flag0", "sequence",
    "remote", "7000,8000", "1", "0.5", "yes", "#", '"', "'", "[host.", "[host.\"*\"]", ".",
    "<<include x>>", "\\", "/*", "*/", "<<EOF", "EOF", "\t", "\r", "é", "\x00",
]  # fmt: skip
TEXT = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join)
HOSTS = st.text(alphabet="abAB.*?[]!0 é", max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, suffix=st.sampled_from([".conf", ".toml"]), hosts=st.lists(HOSTS, max_size=3))
def test_any_text_gives_settings_or_a_config_error(
    text: str, suffix: str, hosts: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"k{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            s = load(path)
            for host in hosts:
                s.for_host(host)
        except ConfigError as exc:
            assert "\n" not in str(exc)


# A small world: few keys, patterns over a tiny alphabet, so that blocks overlap often.
KEYS = {
    "port": st.integers(1, 65535).map(str),
    "jitter": st.sampled_from(["0", "0.25", "1"]),
    "client_timeout": st.integers(0, 65535).map(str),
    "flag0": st.integers(0, 255).map(str),
    "spa_server_port": st.integers(1, 65535).map(str),
}
DEFAULTS = {"port": "22", "jitter": "0", "client_timeout": "0", "flag0": None,
            "spa_server_port": "62201"}  # fmt: skip
WORD = st.text(alphabet="abAB*?.", min_size=1, max_size=3)
PATTERNS = st.tuples(
    st.lists(WORD, min_size=1, max_size=2), st.lists(WORD.map("!".__add__), max_size=1)
).map(lambda t: t[0] + t[1])
VALUES = st.dictionaries(st.sampled_from(sorted(KEYS)), st.just(""), max_size=3).flatmap(
    lambda d: st.fixed_dictionaries({k: KEYS[k] for k in d})
)
BLOCKS = st.lists(st.tuples(PATTERNS, VALUES), max_size=5)


def model(
    host: str, top: dict[str, str], blocks: list[tuple[list[str], dict[str, str]]],
    cli: dict[str, str],
) -> dict[str, str | None]:  # fmt: skip
    """ssh_config's rule, spelled out: the first matching block that sets a key wins."""

    def matches(patterns: list[str]) -> bool:
        name = host.lower()
        hit = [fnmatch.fnmatchcase(name, p.lower()) for p in patterns if p[0] != "!"]
        miss = [fnmatch.fnmatchcase(name, p[1:].lower()) for p in patterns if p[0] == "!"]
        return any(hit) and not any(miss)

    out: dict[str, str | None] = {**DEFAULTS, **top}
    taken: set[str] = set()
    for patterns, values in blocks:
        if matches(patterns):
            out |= {k: v for k, v in values.items() if k not in taken}
            taken |= set(values)
    return out | cli


def render(fmt: str, top: dict[str, str], blocks: list[tuple[list[str], dict[str, str]]]) -> str:
    if fmt == "conf":
        body = "".join(f"{k} = {v}\n" for k, v in top.items())
        for patterns, values in blocks:
            inner = "".join(f"  {k} = {v}\n" for k, v in values.items())
            body += f"<host {' '.join(patterns)}>\n{inner}</host>\n"
        return body
    body = "".join(f'{k} = "{v}"\n' for k, v in top.items())
    seen: set[str] = set()
    for patterns, values in blocks:
        label = " ".join(patterns)
        while label in seen:  # TOML takes a table once; the same patterns again, spaced
            label += " "
        seen.add(label)
        body += f'[host."{label}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in values.items())
    return body


def observed(s: ClientSettings) -> dict[str, str | None]:
    flag = s.flags.get(0)
    return {"port": str(s.port), "jitter": f"{s.jitter:g}", "client_timeout":
            str(s.client_timeout), "flag0": None if flag is None else str(flag),
            "spa_server_port": str(s.spa_server_port)}  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    top=VALUES, blocks=BLOCKS, cli=VALUES, hosts=st.lists(WORD, min_size=1, max_size=4),
    fmt=st.sampled_from(["conf", "toml"]),
)  # fmt: skip
def test_first_match_wins_per_key_as_the_reference_model(
    top: dict[str, str], blocks: list[tuple[list[str], dict[str, str]]], cli: dict[str, str],
    hosts: list[str], fmt: str,
) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"k.{fmt}"
        path.write_text(render(fmt, top, blocks))
        s = load(path, **cli)
        for host in hosts:
            expected = model(host, top, blocks, cli)
            assert observed(s.for_host(host)) == expected, (host, path.read_text())


async def test_knock_of_one_host_applies_its_blocks(tmp_path: Path) -> None:
    """``aioknock.knock`` (what ``connect`` uses) goes through the blocks like a fleet."""
    conf = tmp_path / "k.conf"
    conf.write_text("knock = PORT,CHECKSUM\n<host 127.0.0.9>\n    port = 2222\n</host>\n")
    base = aioknock.load_config(conf)
    matched = await aioknock.knock("127.0.0.9", base, timeout=0.0)
    other = await aioknock.knock("127.0.0.10", base, timeout=0.0)
    assert matched.ok and other.ok, (matched.error, other.error)
    assert decode_knock(base, matched.ports)["port"] == 2222
    assert decode_knock(base, other.ports)["port"] == 22
