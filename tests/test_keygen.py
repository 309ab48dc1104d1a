"""``aioknock keygen``: new keys, mode 600, never overwritten; usable as written."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

from aioknock.codec import spa
from aioknock.config.fwknopconf import read_access_file

PY = sys.executable


def keygen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    return subprocess.run([PY, "-m", "aioknock", "keygen", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=20)  # fmt: skip


def test_a_knock_key_file_is_one_line_of_32_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "knock.key"
    assert keygen("-o", str(path)).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (line,) = path.read_text().splitlines()
    assert len(base64.b64decode(line, validate=True)) == 32
    other = tmp_path / "other.key"
    keygen("-o", str(other))
    assert other.read_text() != path.read_text()
    # The key opens the prototype's knock: the client reads it as its passphrase.
    res = subprocess.run(
        [PY, "-m", "aioknock", "run", "-encrypt", "-key_file", str(path), "-test", "--json",
         "-quiet"], capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert res.returncode == 0 and '"ok": true' in res.stdout, res.stderr


def test_an_fwknop_pair_in_key_gen_format_opens_an_access_stanza(tmp_path: Path) -> None:
    path = tmp_path / "spa.keys"
    assert keygen("--fwknop", "-o", str(path)).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["KEY_BASE64", "HMAC_KEY_BASE64"]
    key, hmac_key = (base64.b64decode(line.split(": ", 1)[1]) for line in lines)
    assert (len(key), len(hmac_key)) == (32, 64)
    access = tmp_path / "access.conf"
    access.write_text("SOURCE ANY\n" + "".join(line.replace(":", "", 1) + "\n" for line in lines))
    (stanza,) = read_access_file(access)
    assert stanza.keys == spa.SpaKeys(key, hmac_key)


def test_standard_output_and_never_overwriting(tmp_path: Path) -> None:
    res = keygen("-o", "-")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1
    assert len(keygen("--fwknop").stdout.splitlines()) == 2
    path = tmp_path / "k"
    path.write_text("the old key\n")
    res = keygen("-o", str(path))
    assert res.returncode == 1
    assert (
        res.stderr.strip() == f"aioknock: error: {path} exists; not overwritten (remove it first)"
    )
    assert path.read_text() == "the old key\n"


def test_errors_are_one_line(tmp_path: Path) -> None:
    res = keygen("-o", str(tmp_path / "no" / "such" / "dir" / "k"))
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "cannot create" in res.stderr and "No such file or directory" in res.stderr
    res = keygen("--frobnicate")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_a_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    conf = tmp_path / "knockdaemon.conf"
    conf.write_text("key_file = /nonexistent/knock.key\nencrypt = yes\nbackend = command\n"
                    "open = true\n")  # fmt: skip
    res = subprocess.run([PY, "-m", "aioknock", "daemon", "-conf", str(conf), "-test"],
                         capture_output=True, text=True, timeout=20)  # fmt: skip
    assert res.returncode == 2
    assert "make a new key with: aioknock keygen -o /nonexistent/knock.key" in res.stderr
