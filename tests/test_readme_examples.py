"""Every command of the README's console blocks runs as written and ends as it should.

Each ``$ ...`` line (with its ``\\`` continuations) is run by the shell in a scratch
folder that holds what the README's text around it says exists (``conf/``, the
``fleet.txt`` of *Knocking a fleet*, a key in ``~/.knockkey``, ``bad.conf``, an
``~/.fwknoprc`` with a ``[gate]`` stanza, ``$K``/``$H``). Only the names of hosts that
do not exist here are replaced, by loopback addresses (``HOSTS``: the documented
mapping), and ``/etc/aioknock`` by a scratch folder; packets go only to 127.0.0.0/8 and
::1. Commands whose outcome here differs from exit status 0 say why (``EXPECTED``); a
command proven elsewhere names the test that proves it (``ELSEWHERE``). The daemon runs
in a network namespace of its own (root), so that its nftables table is never the
host's; once it says what it reads (its signal handlers are set by then) it must still
be running ``DAEMON_RUN`` seconds later, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.daemons import FIRST_POLL, wait_said
from helpers.netns import check_root

import aioknock

REPO = Path(aioknock.__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
DAEMON_RUN = 1.0
# Seconds before a command is taken for hung: scripts/fuzz is CPU-bound (a batch of inputs
# per reader, whatever --seconds) and took over 60 s on a loaded 2-core machine.
COMMAND_LIMIT = 300
DAEMON_READY = ("capturing on ", "following ", "reading the kernel log ")

# Hosts the README names, and the loopback addresses that stand for them here.
HOSTS = {
    "web1.example": "127.0.0.2",
    "web2.example": "127.0.0.3",
    "db1.example": "127.0.0.4",
    "gate.example": "127.0.0.5",
    "legacy.example": "127.0.0.6",
    "198.18.0.2": "127.0.0.7",
    "2001:db8::7": "::1",
}
# Commands that stand for something not here.
TEXT = {
    "terraform output -raw ips": "printf '127.0.0.2\\n127.0.0.3\\n'",
    "/etc/aioknock": "{tmp}/etc/aioknock",
    "/var/lib/aioknock": "{tmp}/var/lib/aioknock",
    "/tmp/portknock.log": "{tmp}/portknock.log",
    "sudo ": "",
    "scripts/fuzz": str(REPO / "scripts" / "fuzz"),  # the checkout's
}
# Commands whose outcome here is not exit status 0, and why.
EXPECTED = {
    "aioknock run -conf bad.conf": (2, "the example shows the error for a bad file"),
    "aioknock run --hosts fleet.txt --verify 22 --json": (1, "nothing listens on port 22 here"),
    "aioknock run --hosts fleet.txt -4 --verify 22": (1, "nothing listens on port 22 here"),
    "aioknock run --fwknoprc -n gate --hosts fleet.txt --json --verify 22": (
        1, "nothing listens on port 22 here"),
}  # fmt: skip
# Commands proven by other tests, which run the peers they need.
ELSEWHERE: dict[str, str] = {}
KEY = "N0t4l1v3k3y+R3ad1nTh3README/w1thS0m3B64Txt="
SEALED_KEY = "YSBSRUFETUUgZXhhbXBsZSBrZXksIDMyIGJ5dGVzISE="  # 32 bytes, as keygen writes


def blocks() -> list[list[str]]:
    """The commands of each console block, continuations joined, comments dropped."""
    found: list[list[str]] = []
    for block in re.findall(r"^```console\n(.*?)^```\n", README, re.M | re.S):
        lines, commands = block.splitlines(), []
        i = 0
        while i < len(lines):
            if lines[i].startswith("$ "):
                command = lines[i][2:]
                while command.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    command = command[:-1].rstrip() + " " + lines[i].strip()
                commands.append(command.split("  #", 1)[0].split(" # ", 1)[0].strip())
            i += 1
        found.append(commands)
    return found


def commands() -> list[str]:
    """Commands that stand alone (a block with a background ``&`` is one scenario)."""
    return [c for b in blocks() if not any(c.endswith("&") for c in b) for c in b]


def scenarios() -> list[list[str]]:
    return [b for b in blocks() if any(c.endswith("&") for c in b)]


def fleet_txt() -> str:
    block = next(b for b in re.findall(r"^```\n(.*?)^```\n", README, re.M | re.S)
                 if b.startswith("# fleet.txt"))  # fmt: skip
    return str(block)


def scratch(tmp: Path, command: str = "") -> dict[str, str]:
    """The folder the commands run in, with what the README says is there: the
    daemon's key in /etc/aioknock too, unless the command makes it."""
    (tmp / "conf").symlink_to(REPO / "conf")
    etc, var = tmp / "etc" / "aioknock", tmp / "var" / "lib" / "aioknock"
    if "mkdir" not in command:  # made by the README's step before, as it says
        var.mkdir(parents=True)
    if "mkdir" not in command:
        etc.mkdir(parents=True)
    etc.mkdir(parents=True, exist_ok=True)
    # The keys the README's steps make, unless this command is the step that makes one.
    made = {
        "/etc/aioknock/knock.key": etc / "knock.key",
        "/etc/aioknock/sealed.key": etc / "sealed.key",
        "master.key": tmp / "master.key",
    }
    for name, key in made.items():
        if f"keygen -o {name}" in command:
            continue
        key.write_text((KEY if key.name == "knock.key" else SEALED_KEY) + "\n")
        key.chmod(0o600)
    (tmp / "fleet.txt").write_text(localized(fleet_txt(), tmp))
    home = tmp / "home"
    home.mkdir()
    for key in (home / ".knockkey", tmp / "knock.key"):
        key.write_text(KEY + "\n")
        key.chmod(0o600)
    (tmp / "bad.conf").write_text("remote = 127.0.0.1\nport = 22\nencrypt = no\n"
                                  "portspan = 1000-1099\n")  # fmt: skip
    k, h = "a" * 43 + "=", "b" * 86 + "=="
    rc = home / ".fwknoprc"
    rc.write_text(
        f"[default]\nHMAC_DIGEST_TYPE sha256\n\n[gate]\nSPA_SERVER 127.0.0.5\n"
        f"ACCESS tcp/22\nALLOW_IP source\nKEY_BASE64 {k}\nHMAC_KEY_BASE64 {h}\n"
    )
    rc.chmod(0o600)
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("AIOKNOCK_")}
    venv_bin = str(Path(sys.executable).parent)
    return {
        **env,
        "HOME": str(home),
        "K": k,
        "H": h,
        "PATH": f"{venv_bin}:{env['PATH']}",
        # conf/knockdaemon.conf's files, moved to the scratch folder:
        "AIOKNOCK_KEY_FILE": str(etc / "knock.key"),
        "AIOKNOCK_REPLAY_FILE": str(var / "replay"),
    }


def localized(text: str, tmp: Path) -> str:
    for name, address in HOSTS.items():
        text = re.sub(rf"(?<![\w.:-]){re.escape(name)}(?![\w.:-])", address, text)
    for old, new in TEXT.items():
        text = text.replace(old, new.format(tmp=tmp))
    return text


def test_the_readme_has_commands_to_run() -> None:
    assert len(commands()) > 20
    assert set(EXPECTED) <= set(commands()), "an EXPECTED entry no longer in the README"


@pytest.mark.parametrize("command", commands())
def test_readme_command(command: str, tmp_path: Path) -> None:
    if command in ELSEWHERE:
        assert (REPO / "tests" / ELSEWHERE[command].split("::")[0]).exists()
        return
    env = scratch(tmp_path, command)
    if "-key_file" in command or "keygen" in command or "-conf conf/knockclient" in command:
        del env["AIOKNOCK_KEY_FILE"]  # the command names its own key
    line = localized(command, tmp_path)
    assert "aioknock" in line or "scripts/fuzz" in line
    if " daemon " in f" {line} ":
        _run_daemon(line, env, tmp_path)
        return
    status, why = EXPECTED.get(command, (0, ""))
    if "--verify 22" in command and _listening(22):
        status, why = 0, "something listens on port 22 here (an sshd?)"
    res = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=COMMAND_LIMIT, stdin=subprocess.DEVNULL)  # fmt: skip
    assert res.returncode == status, f"{line}\n{why}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.2", port)) == 0


def _run_daemon(line: str, env: dict[str, str], tmp: Path) -> None:
    """In a namespace of its own: the host's firewall is never the daemon's."""
    check_root()
    ns = f"akreadme-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        prep, _, daemon = line.rpartition("&& ")
        if prep:
            subprocess.run(["bash", "-c", prep.rstrip().removesuffix("&&")], cwd=tmp, env=env,
                           check=True, timeout=30)  # fmt: skip
        err = tmp / "daemon.err"
        with open(err, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *shlex.split(daemon)], cwd=tmp,
                                    env=env, stdout=subprocess.DEVNULL, stderr=out)  # fmt: skip
        try:
            # A loaded machine may take over a second to start it: SIGTERM before its
            # handlers are set would end it as the signal's default does (-15).
            deadline = time.monotonic() + 30
            while not any(w in err.read_text() for w in DAEMON_READY) and proc.poll() is None:
                assert time.monotonic() < deadline, f"{daemon}: not ready: {err.read_text()}"
                time.sleep(0.05)
            time.sleep(DAEMON_RUN)
            assert proc.poll() is None, f"{daemon}: exited {proc.returncode}: {err.read_text()}"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in err.read_text()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp / "etc", ignore_errors=True)
        shutil.rmtree(tmp / "var", ignore_errors=True)


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda b: b[0][:40])
def test_readme_scenario(scenario: list[str], tmp_path: Path) -> None:
    """A block with a command in the background: the daemon, then what it should see
    (with the same AIOKNOCK_KEY in the environment, as the README says)."""
    env = scratch(tmp_path)
    del env["AIOKNOCK_KEY_FILE"]
    env["AIOKNOCK_KEY"] = KEY
    background = [localized(c.removesuffix("&").strip(), tmp_path) for c in scenario
                  if c.endswith("&")]  # fmt: skip
    err = tmp_path / "background.err"
    with open(err, "wb") as out:
        procs = [
            subprocess.Popen(
                ["bash", "-c", f"exec {c}"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
            for c in background
        ]
    try:
        # The daemon follows a log that does not exist yet; once its first poll has said
        # so, it reads the file from its start when it appears. A knock written before
        # that poll would be taken for the file's old content, and skipped.
        wait_said(err, FIRST_POLL, procs)
        for command in scenario:
            if command.endswith("&"):
                continue
            res = subprocess.run(
                ["bash", "-c", localized(command, tmp_path)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_LIMIT,
            )
            assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 10
        while "accepted knock" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "accepted knock from 127.0.0.1" in err.read_text(), err.read_text()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
