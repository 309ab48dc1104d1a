"""The shipped examples in ``conf/`` load as they are and name every setting."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

import pytest

import aioknock
from aioknock.config.loader import build_settings
from aioknock.config.settings import ClientSettings, DaemonSettings, KnockSettings

CONF = Path(aioknock.__file__).resolve().parent.parent / "conf"


def named_keys(text: str) -> set[str]:
    """Keys set or shown commented out (``#key = ...``) in a Config::General file."""
    return {m.group(1).lower() for m in re.finditer(r"^\s*#?\s*(\w+)\s*=", text, re.M)}


@pytest.mark.parametrize(
    ("name", "cls"),
    [("knockclient.conf", ClientSettings), ("knockdaemon.conf", DaemonSettings)],
)
def test_example_names_every_key(name: str, cls: type[KnockSettings]) -> None:
    text = (CONF / name).read_text()
    missing = {k.name for k in cls.table()} - named_keys(text) - {"flagn"}
    assert not missing, f"conf/{name} does not mention {sorted(missing)}"


def test_client_example_loads() -> None:
    s = aioknock.load_config(CONF / "knockclient.conf")
    assert isinstance(s, ClientSettings)


def test_daemon_example_loads(tmp_path: Path) -> None:
    key = tmp_path / "knock.key"
    key.write_text("example passphrase\n")
    key.chmod(0o600)
    s = build_settings(DaemonSettings, path=CONF / "knockdaemon.conf",
                       overrides={"key_file": str(key)}, sending=False)  # fmt: skip
    assert s.runmode == "file" and s.backend == "nftables" and s.key == "example passphrase"


def test_systemd_unit_starts_after_the_network() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(CONF / "aioknock-daemon.service")
    assert "network-online.target" in unit["Unit"]["After"].split()
    assert "network-online.target" in unit["Unit"]["Wants"].split()
    start = unit["Service"]["ExecStart"].split()
    assert start[1:3] == ["daemon", "-conf"]
    assert unit["Service"]["ExecReload"].endswith("-HUP $MAINPID")


def test_systemd_unit_provides_the_example_replay_folder(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.read(CONF / "aioknock-daemon.service")
    key = tmp_path / "key"
    key.write_text("example passphrase\n")
    key.chmod(0o600)
    s = build_settings(DaemonSettings, path=CONF / "knockdaemon.conf",
                       overrides={"key_file": str(key)}, sending=False)  # fmt: skip
    state = "/var/lib/" + unit["Service"]["StateDirectory"]
    assert os.path.dirname(s.replay_file) == state
    assert "PrivateTmp" in unit["Service"] and unit["Service"]["ProtectSystem"] == "strict"
