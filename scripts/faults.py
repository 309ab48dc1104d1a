#!/usr/bin/env python3
"""Faults the daemon must survive (issue 12), each against the real daemon process.

    sudo .venv/bin/python scripts/faults.py [--only NAME[,NAME...]] [--list]

Every fault runs ``python -m aioknock daemon`` in a server network namespace and
knocks from a client namespace joined to it by a veth pair (198.18.0.0/15 only;
both are created here and removed afterwards, also on failure):

  kill9     kill -9 right after a knock was accepted: the door closes by itself
            (nftables timeout) and the restarted daemon refuses the same knock;
            with backend = command the door stays open (documented)
  enospc    the replay file on a full disk (a 64 KiB tmpfs in the daemon's own
            mount namespace): knocks are refused until there is room again, or
            accepted anyway with replay_failure = accept
  sighup    SIGHUP with each bad configuration of issue 12: one line, old kept
  hung      an open command that never ends: killed after ACTION_TIMEOUT, and a
            SIGTERM meanwhile stops the daemon within STOP_WAIT (and its teardown)

Prints one row per check (fault, expected, seen, ok) and exits 1 if any failed.
The test suite runs it (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from helpers.daemons import KEY, PY, SPAN, Daemon, daemon_conf, daemon_env, send_syns  # noqa: E402
from helpers.netns import WAIT_LIMIT, NetnsPair, netns_pair  # noqa: E402

from aioknock.asyncio.actions import ACTION_TIMEOUT  # noqa: E402
from aioknock.asyncio.daemon import STOP_WAIT  # noqa: E402
from aioknock.asyncio.replayfile import MAGIC, record  # noqa: E402

DURATION = 3  # a door's seconds here (the namespace tests use 2)
CLIENT = "198.18.0.1"
# A stop within STOP_WAIT, plus 3 s for the daemon's teardown on a loaded machine: still
# well short of ACTION_TIMEOUT, which a stop that waited for the hung command would take.
STOPPED_WITHIN = STOP_WAIT + 3


@dataclass
class Row:
    fault: str
    expected: str
    seen: str
    ok: bool


Check = Callable[[NetnsPair, Path], list[Row]]


# ------------------------------------------------------------------ building blocks


def conf(tmp: Path, **extra: str | None) -> str:
    """The daemon in network mode on the server's veth, opening by commands that leave a
    file for each open door; a key set to None is left out."""
    commands: dict[str, str | None] = {
        "interface": "veth-s",
        "backend": "command",
        "nft_table": None,
        "open": f"touch {tmp}/opened.%IP%.%PORT%",
        "close": f"rm -f {tmp}/opened.%IP%.%PORT%",
        "duration": str(DURATION),
    }
    return daemon_conf(tmp, **{**commands, **extra})


def plan(tmp: Path, port: int = 22) -> list[int]:
    """The ports of one fresh knock from CLIENT, as ``aioknock run -test --json`` says."""
    keyfile = tmp / "client.key"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    cmd = [PY, "-m", "aioknock", "run", "-test", "--json", "-quiet", "-remote", "198.18.0.2",
           "-client", CLIENT, "-port", str(port), "-encrypt", "-cipher", "Blowfish", "-iv",
           "-key_file", str(keyfile), "-portspan", SPAN]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=daemon_env(tmp), timeout=15)
    if res.returncode != 0:
        raise RuntimeError(f"aioknock run -test failed: {res.stderr.strip()}")
    ports: list[int] = json.loads(res.stdout.splitlines()[0])["ports"]
    return ports


_sports = iter(range(20000, 60000, 64))


def knock(pair: NetnsPair, ports: list[int]) -> None:
    send_syns(pair, pair.server_ip, ports, next(_sports))


def started(daemon: Daemon) -> Daemon:
    daemon.wait_log(r"capturing on veth-s")
    return daemon


def wait_for(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` held (polled every 50 ms), None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def line_after(daemon: Daemon, pattern: str, mark: int, timeout: float = WAIT_LIMIT) -> str:
    """The log line matching ``pattern`` written after ``mark``, or "" if none came."""
    try:
        found = daemon.wait_log(rf"[^\n]*{pattern}[^\n]*", timeout, after=mark)
    except AssertionError:
        return ""
    return found[0].split("aioknock: ", 1)[-1]


def elements(pair: NetnsPair) -> str:
    res = pair.run(pair.server, ["nft", "list", "set", "inet", "aioknock", "allow4"], check=False)
    return res.stdout


def clean(text: str) -> bool:
    return "Traceback" not in text and "internal error" not in text


# ----------------------------------------------------------------------- kill -9


def kill9_nftables(pair: NetnsPair, tmp: Path) -> list[Row]:
    settings = conf(tmp, backend="nftables", nft_table="aioknock", open=None, close=None,
                    replay_file=str(tmp / "replay"))  # fmt: skip
    daemon = started(Daemon(pair, tmp, settings))
    ports = plan(tmp)
    knock(pair, ports)
    daemon.wait_log(rf"accepted knock from {re.escape(CLIENT)}")
    # The kill once the door is open: its nft runs after the verdict's line.
    door = f"{CLIENT} . tcp . 22"
    open_at_kill = wait_for(lambda: door in elements(pair), WAIT_LIMIT) is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(5)
    gone = wait_for(lambda: door not in elements(pair), DURATION + 3)
    seen = (f"open at the kill, gone {gone:.1f} s later" if open_at_kill and gone is not None
            else f"open at the kill: {open_at_kill}, gone: {gone is not None}")  # fmt: skip
    rows = [Row("kill -9 after accepting (nftables)",
                f"door closes itself within duration ({DURATION} s)", seen,
                open_at_kill and gone is not None)]  # fmt: skip
    again = started(Daemon(pair, tmp, settings, name="again.conf"))
    mark = len(again.stderr)
    knock(pair, ports)
    refused = line_after(again, "refused knock", mark)
    rows.append(Row("  ... restart, same knock again", "refused as replayed",
                    refused or "not refused", "replayed" in refused))  # fmt: skip
    rows.append(Row("  ... the restarted daemon", "starts clean", _start_notes(again),
                    clean(again.stderr) and "damaged" not in again.stderr))  # fmt: skip
    again.terminate()
    return rows


def _start_notes(daemon: Daemon) -> str:
    notes = [line for line in daemon.stderr.splitlines() if "replay_file" in line]
    return notes[0].split("aioknock: ", 1)[-1] if notes else "no complaint"


def kill9_command(pair: NetnsPair, tmp: Path) -> list[Row]:
    daemon = started(Daemon(pair, tmp, conf(tmp)))
    knock(pair, plan(tmp))
    opened = tmp / f"opened.{CLIENT}.22"
    if wait_for(opened.exists, WAIT_LIMIT) is None:  # the kill once the door is open
        return [Row("kill -9 after accepting (command)", "door stays open", "never opened", False)]
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(5)
    time.sleep(DURATION + 1)
    still = opened.exists()
    return [Row("kill -9 after accepting (command)",
                "door stays open: no close runs (documented; use nftables)",
                "still open after duration" if still else "closed", still)]  # fmt: skip


# ------------------------------------------------------------------------ ENOSPC


def enospc(pair: NetnsPair, tmp: Path) -> list[Row]:
    mnt = tmp / "small"
    mnt.mkdir()
    # A valid replay file of exactly one page: the next record needs a new one, and
    # there is none once the tmpfs is filled (within a page, a tmpfs write succeeds).
    prepared = tmp / "replay.prepared"
    prepared.write_bytes(MAGIC + b"".join(record(secrets.token_bytes(16)) for _ in range(204)))
    assert prepared.stat().st_size == 4096
    replay = mnt / "replay"
    shell = 'mount -t tmpfs -o size=64k aioknock-faults "$1" && cp "$2" "$1/replay" && ' \
            'shift 2 && exec "$@"'  # fmt: skip
    wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh", str(mnt),
            str(prepared)]  # fmt: skip
    daemon = started(Daemon(pair, tmp, conf(tmp, replay_file=str(replay)), wrap=wrap))
    in_ns = ["nsenter", "-t", str(daemon.proc.pid), "-m", "--"]
    subprocess.run([*in_ns, "dd", "if=/dev/zero", f"of={mnt}/fill", "bs=4096"],
                   capture_output=True, timeout=10, check=False)  # fmt: skip
    rows = []
    mark = len(daemon.stderr)
    knock(pair, plan(tmp))
    refused = line_after(daemon, "refused knock", mark)
    opened = wait_for(lambda: (tmp / f"opened.{CLIENT}.22").exists(), 1.0) is not None
    rows.append(Row("replay_file on a full disk", "knock refused (fail closed), no door",
                    refused or ("opened" if opened else "nothing logged"),
                    "No space left" in refused and not opened))  # fmt: skip
    daemon.conf.write_text(conf(tmp, replay_file=str(replay), replay_failure="accept"))
    reloaded = daemon.reload()
    mark = len(daemon.stderr)
    knock(pair, plan(tmp))
    warned = line_after(daemon, "not recorded", mark)
    opened = wait_for(lambda: (tmp / f"opened.{CLIENT}.22").exists(), WAIT_LIMIT) is not None
    rows.append(Row("  ... with replay_failure = accept", "accepted, logged as not recorded",
                    warned or reloaded, bool(warned) and opened))  # fmt: skip
    subprocess.run([*in_ns, "rm", f"{mnt}/fill"], capture_output=True, timeout=10, check=False)
    daemon.conf.write_text(conf(tmp, replay_file=str(replay)))
    daemon.reload()
    mark = len(daemon.stderr)
    knock(pair, plan(tmp))
    accepted = line_after(daemon, "accepted knock", mark)
    rows.append(Row("  ... room again, replay_failure = refuse", "accepted and recorded",
                    accepted or "not accepted", bool(accepted)))  # fmt: skip
    daemon.terminate()
    return rows


# ------------------------------------------------------------------------ SIGHUP


def bad_configurations(tmp: Path) -> Iterator[tuple[str, bytes]]:
    """Issue 12's plausible but bad configurations, each as the file's new contents."""
    (tmp / "dir").mkdir()
    os.mkfifo(tmp / "fifo")
    os.mkfifo(tmp / "fifo.key")
    (tmp / "binary.key").write_bytes(bytes(range(128, 256)))
    for i in range(40):
        (tmp / f"inc{i}.conf").write_text(f"<<include inc{i + 1}.conf>>\n")
    (tmp / "inc40.conf").write_text("cooldown = 0\n")

    def with_(**extra: str | None) -> bytes:
        return conf(tmp, **extra).encode()

    yield "logfile is a directory", with_(runmode="file", logfile=str(tmp / "dir"))
    yield "logfile is a FIFO", with_(runmode="file", logfile=str(tmp / "fifo"))
    yield "interface does not exist", with_(interface="aknope0")
    yield "open command dropped", with_(open=None)
    yield "open command not installed", with_(open="/nonexistent/fw %IP%")
    yield "key_file is /dev/zero", with_(key_file="/dev/zero")
    yield "key_file is a FIFO", with_(key_file=str(tmp / "fifo.key"))
    yield "key_file is binary", with_(key_file=str(tmp / "binary.key"))
    yield "include name with a NUL", with_() + b"<<include x\0>>\n"
    yield "includes 40 deep", with_() + f"<<include {tmp}/inc0.conf>>\n".encode()
    yield "full-width digits (duration = \uff12)", with_(duration="\uff12")
    yield "a line of 20,000 '<'", with_() + b"<" * 20000 + b"\n"
    yield "a line of 20,000 spaces, then x", with_() + b" " * 20000 + b"x\n"
    yield "nft_table nft would refuse", with_(backend="nftables", nft_table="a;b")
    yield "a block never closed", with_() + b"<door ssh>\nsequence = 7000,8000\n"
    yield "no configuration file", b""


def sighup(pair: NetnsPair, tmp: Path) -> list[Row]:
    daemon = started(Daemon(pair, tmp, conf(tmp)))
    rows = []
    for name, contents in bad_configurations(tmp):
        if contents:
            daemon.conf.write_bytes(contents)
        else:
            daemon.conf.unlink()
        start = time.monotonic()
        try:
            line = daemon.reload(timeout=5)
        except AssertionError:
            line = "no answer within 5 s" if daemon.proc.poll() is None else "daemon exited"
        took = time.monotonic() - start
        alive = daemon.proc.poll() is None
        said = line.split(": ", 1)[-1] if line.startswith("reload failed") else line
        ok = line.startswith("reload failed") and alive and took < 2 and clean(daemon.stderr)
        rows.append(Row(f"SIGHUP: {name}", "one line, old configuration kept",
                        f"{took * 1000:.0f} ms: {said}", ok))  # fmt: skip
    knock(pair, plan(tmp))
    opened = wait_for(lambda: (tmp / f"opened.{CLIENT}.22").exists(), WAIT_LIMIT)
    rows.append(
        Row(
            "  ... then a knock",
            "opens by the old configuration",
            "opened" if opened is not None else "nothing opened",
            opened is not None,
        )
    )
    daemon.terminate()
    return rows


# -------------------------------------------------------------------------- hung


def hung(pair: NetnsPair, tmp: Path) -> list[Row]:
    daemon = started(Daemon(pair, tmp, conf(tmp, open="sleep 600")))
    mark = len(daemon.stderr)
    knock(pair, plan(tmp))
    daemon.wait_log(r"accepted knock", after=mark)
    timed_out = line_after(daemon, "did not finish", mark, timeout=ACTION_TIMEOUT + WAIT_LIMIT)
    rows = [Row("open command hangs", f"killed after {ACTION_TIMEOUT:g} s, logged",
                timed_out or "no timeout logged", "within" in timed_out)]  # fmt: skip
    mark = len(daemon.stderr)
    knock(pair, plan(tmp))
    daemon.wait_log(r"accepted knock", after=mark)
    time.sleep(0.3)  # the second open command is running, and hangs
    start = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = daemon.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - start
    left = pair.run(pair.server, ["pgrep", "-f", "sleep 600"], check=False).stdout.split()
    said = line_after(daemon, "still running", mark, timeout=0.1)
    rows.append(Row("  ... SIGTERM while it hangs",
                    f"exit 0 within {STOPPED_WITHIN:g} s, command killed",
                    f"exit {code} after {took:.2f} s; {len(left)} left; {said or 'not logged'}",
                    code == 0 and took <= STOPPED_WITHIN and not left and bool(said)))  # fmt: skip
    return rows


# ---------------------------------------------------------------------- running

FAULTS: dict[str, list[Check]] = {
    "kill9": [kill9_nftables, kill9_command],
    "enospc": [enospc],
    "sighup": [sighup],
    "hung": [hung],
}


def run(names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        for check in FAULTS[name]:
            with netns_pair() as pair, tempfile.TemporaryDirectory(prefix="aioknock-faults-") as t:
                tmp = Path(t)
                try:
                    found = check(pair, tmp)
                except Exception as exc:  # a broken check is a failed row, and the rest runs
                    found = [Row(f"{name}: {check.__name__}", "runs", f"{exc!r}"[:300], False)]
                rows += [Row(r.fault, r.expected, r.seen.replace(str(tmp), "$TMP"), r.ok)
                         for r in found]  # fmt: skip
    return rows


def table(rows: list[Row]) -> str:
    width = [max(len(getattr(r, f)) for r in rows) for f in ("fault", "expected")]
    head = f"{'fault':<{width[0]}}  {'expected':<{width[1]}}  ok    seen"
    lines = [head, "-" * len(head)]
    for r in rows:
        seen = r.seen if len(r.seen) <= 110 else r.seen[:107] + "..."
        lines.append(f"{r.fault:<{width[0]}}  {r.expected:<{width[1]}}  "
                     f"{'ok' if r.ok else 'FAIL':<4}  {seen}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FAULTS), help="comma-separated faults")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(FAULTS))
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(unknown)} (known: {', '.join(FAULTS)})")
    if os.geteuid() != 0:
        print("faults: needs root (network and mount namespaces)", file=sys.stderr)
        return 2
    rows = run(names)
    print(table(rows))
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} as expected", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
