"""The README's promises that code can check: every setting is documented, the library
examples run as printed (against loopback only), the hosts-file example parses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aioknock
from aioknock.asyncio.fleet import JSON_FIELDS, host_settings
from aioknock.cli.exits import RUN_STATUSES
from aioknock.cli.hosts import from_lines
from aioknock.config.settings import ClientSettings, DaemonSettings

REPO = Path(aioknock.__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    """The fenced blocks whose info string is ``lang``, fences paired in order."""
    fences = re.finditer(r"^```(\w*)\n(.*?)^```\n", README, re.M | re.S)
    return [m.group(2) for m in fences if m.group(1) == lang]


@pytest.mark.parametrize("cls", [ClientSettings, DaemonSettings])
def test_every_setting_is_documented(cls: type[ClientSettings | DaemonSettings]) -> None:
    missing = [k.name for k in cls.table() if f"`{k.name}`" not in README]
    assert not missing, f"README.md does not document {missing}"


@pytest.mark.parametrize("code", blocks("python"), ids=lambda c: c.splitlines()[0][:40])
def test_python_examples_run(code: str, tmp_path: Path) -> None:
    assert "127.0.0.1" in code or "knock(" not in code  # examples knock loopback only
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    env["HOME"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr


def test_hosts_file_example_parses() -> None:
    example = next(b for b in blocks("") if b.startswith("# fleet.txt"))
    targets = list(from_lines(example.splitlines(), "fleet.txt"))
    assert [t if isinstance(t, str) else t[0] for t in targets] == [
        "web1.example", "web2.example", "db1.example", "legacy.example",
    ]  # fmt: skip
    base = ClientSettings()
    db_line, legacy_line = targets[2], targets[3]
    assert isinstance(db_line, tuple) and isinstance(legacy_line, tuple)
    _, db = host_settings(db_line, base)
    assert db.port == 5432 and db.flags[0] == 3
    _, legacy = host_settings(legacy_line, base)
    assert ",".join(legacy.knock) == "CLIENT,PORT,CHECKSUM" and legacy.portbytes == 1


def test_quick_tour_decode(tmp_path: Path) -> None:
    line = next(ln for ln in README.splitlines() if ln.startswith("$ aioknock decode 872"))
    args = line.removeprefix("$ aioknock ").split("#")[0].split()
    expected = README.split(line + "\n", 1)[1].splitlines()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    env["HOME"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-m", "aioknock", *args], cwd=tmp_path, env=env,
                         text=True, capture_output=True, timeout=30)  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == expected, res.stderr


def test_json_fields_and_exit_statuses_match_the_code() -> None:
    """The README's tables are the code's: a field or status added there is documented."""
    for name, kind, meaning in JSON_FIELDS:
        assert f"| `{name}` | {kind} | {meaning} |" in README, name
    for code, meaning in RUN_STATUSES:
        assert f"| {code} | {meaning} |" in README, code
