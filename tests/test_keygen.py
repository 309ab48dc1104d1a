"""``aioknock keygen``: new keys, mode 600, never overwritten; usable as written."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

from aioknock.codec import sealed, spa
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


# ------------------------------------------------------------------ --derive (issue 10)


def _master(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "master.key"
    assert keygen("-o", str(path)).returncode == 0
    return path, base64.b64decode(path.read_text().strip())


def test_derive_writes_the_hosts_key_mode_600_never_overwriting(tmp_path: Path) -> None:
    master_file, master = _master(tmp_path)
    out = tmp_path / "a.key"
    res = keygen("--derive", "A.Example.", "--master", str(master_file), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    (line,) = out.read_text().splitlines()
    key = base64.b64decode(line, validate=True)
    assert key == sealed.host_key(master, "a.example") and len(key) == 32
    res = keygen("--derive", "b.example", "--master", str(master_file), "-o", str(out))
    assert res.returncode == 1 and "exists; not overwritten" in res.stderr
    assert out.read_text() == line + "\n"


def test_derive_to_standard_output_is_deterministic(tmp_path: Path) -> None:
    master_file, master = _master(tmp_path)
    first = keygen("--derive", "b.example", "--master", str(master_file), "-o", "-")
    second = keygen("-derive", "B.EXAMPLE", "-master", str(master_file))
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert base64.b64decode(first.stdout.strip()) == sealed.host_key(master, "b.example")
    other = keygen("--derive", "c.example", "--master", str(master_file))
    assert other.stdout != first.stdout and other.stdout.strip() != master_file.read_text()


def test_derive_needs_a_master_key_file_that_holds_one_key(tmp_path: Path) -> None:
    res = keygen("--derive", "a.example")
    assert res.returncode == 2 and res.stderr == (
        "aioknock: error: command line: --derive HOST needs --master FILE (the fleet's "
        "master key)\n"
    )
    master_file, _ = _master(tmp_path)
    assert keygen("--master", str(master_file)).returncode == 2
    assert keygen("--fwknop", "--derive", "a", "--master", str(master_file)).returncode == 2
    expected = "expected one line of base64 holding 32 bytes (a key made by aioknock keygen)"
    secret = "c2VjcmV0IHRoYXQgbXVzdCBub3Qgc2hvdw=="
    for name, text in [
        ("short", base64.b64encode(bytes(16)).decode() + "\n"),
        ("text", secret + "\n"),
        ("two", base64.b64encode(bytes(32)).decode() + "\nmore\n"),
        ("fwknop", "KEY_BASE64: " + base64.b64encode(bytes(32)).decode() + "\n"),
        ("empty", ""),
    ]:
        path = tmp_path / name
        path.write_text(text)
        res = keygen("--derive", "a.example", "--master", str(path))
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith(f"aioknock: error: {path}: {expected}"), res.stderr
        assert secret not in res.stderr and res.stdout == ""
    res = keygen("--derive", "a.example", "--master", str(tmp_path / "missing"))
    assert res.returncode == 2 and res.stderr == (
        f"aioknock: error: {tmp_path / 'missing'}: cannot read the master key: "
        "No such file or directory\n"
    )
    for host in ("a b", "", "h\u00e9te"):
        res = keygen("--derive", host, "--master", str(master_file))
        assert res.returncode == 2 and "--derive: " in res.stderr and res.stdout == ""
