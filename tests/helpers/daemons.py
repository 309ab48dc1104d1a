"""The real daemon as a process in a namespace, and raw knocks sent at it.

Shared by the namespace tests (test_netns_daemon.py) and the fault script
(scripts/faults), which both drive ``python -m aioknock daemon`` from outside.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from .netns import WAIT_LIMIT, NetnsPair

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable
KEY = "correct horse battery staple"
SPAN = "745-1000"
DURATION = 2

# argv[1]: destination, argv[2]: JSON list of [dport, sport]. One SYN per port from a
# non-blocking connect, 2 ms apart, each socket closed 0.5 s later (before the kernel
# retransmits): exactly one SYN per port, in order. Bounded: at most 256 ports.
SEND_SYNS = textwrap.dedent(
    """
    import json, socket, sys, time
    dst, ports = sys.argv[1], json.loads(sys.argv[2])[:256]
    held = []
    for dport, sport in ports:
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
        s.setblocking(False)
        s.connect_ex((dst, dport))
        held.append(s)
        time.sleep(0.002)
    time.sleep(0.5)
    for s in held:
        s.close()
    """
)


# Said by the follower's first poll of a log that is not there yet: from then on the file
# is read from its start when it appears. Before it, a knock already written would be
# taken for the file's old content and skipped (the follower starts at the end).
FIRST_POLL = "does not exist yet; waiting for it"


def wait_said(
    err: Path, text: str, procs: Sequence[subprocess.Popen[bytes]], after: int = 0
) -> int:
    """Until the processes' stderr (a file) says ``text`` at or after character ``after``
    (bounded: WAIT_LIMIT, or an exit); where the text ends."""
    deadline = time.monotonic() + WAIT_LIMIT
    while (at := err.read_text().find(text, after)) < 0:
        gone = [p.returncode for p in procs if p.poll() is not None]
        assert not gone, f"exited {gone}: {err.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} within {WAIT_LIMIT} s: {err.read_text()}"
        time.sleep(0.05)
    return at + len(text)


def daemon_env(home: Path) -> dict[str, str]:
    """The environment without the caller's AIOKNOCK_* settings, importing this tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT)}


def daemon_conf(tmp: Path, **extra: str | None) -> str:
    """A daemon configuration (network mode, nftables, Blowfish knocks, the key in a file
    beside it): ``extra`` adds or replaces keys, and a key set to None is left out."""
    keyfile = tmp / "knock.key"
    if not keyfile.exists():
        keyfile.write_text(KEY + "\n")
        keyfile.chmod(0o600)
    settings: dict[str, str | None] = {
        "knock": "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM",
        "portspan": SPAN,
        "encrypt": "yes",
        "cipher": "Blowfish",
        "iv": "yes",
        "key_file": "knock.key",  # relative: to the configuration file
        "runmode": "network",
        "interface": "",
        "backend": "nftables",
        "nft_table": "aioknock",
        "duration": str(DURATION),
        "cooldown": "0",
        **extra,
    }
    return "".join(f"{k} = {v}\n" for k, v in settings.items() if v is not None)


class Daemon:
    """``python -m aioknock daemon -conf FILE`` in the server namespace, stderr to a file.

    ``wrap`` goes before the command (e.g. ``unshare -m ...``); the process is then
    that wrapper until it execs the daemon.
    """

    def __init__(
        self, pair: NetnsPair, tmp: Path, conf: str | bytes, *, wrap: Sequence[str] = (),
        name: str = "knockdaemon.conf",
    ) -> None:  # fmt: skip
        self.pair = pair
        self.conf = tmp / name
        if isinstance(conf, bytes):
            self.conf.write_bytes(conf)
        else:
            self.conf.write_text(conf)
        self.errpath = tmp / f"{name}.stderr"
        cmd = [*wrap, PY, "-m", "aioknock", "daemon", "-conf", str(self.conf)]
        with open(self.errpath, "wb") as err:
            self.proc = pair.popen(
                pair.server, cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=daemon_env(tmp),
            )  # fmt: skip

    @property
    def stderr(self) -> str:
        return self.errpath.read_text(errors="replace")

    def wait_log(
        self, pattern: str, timeout: float = WAIT_LIMIT, *, after: int = 0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in stderr at or after character ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.stderr, after)
            if m is not None:
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s: {self.stderr}")
            time.sleep(0.02)

    def reload(self, timeout: float = WAIT_LIMIT) -> str:
        """SIGHUP; the one log line that says how the reload went."""
        mark = len(self.stderr)
        self.proc.send_signal(signal.SIGHUP)
        m = self.wait_log(r"(configuration reloaded|reload failed[^\n]*)\n", timeout, after=mark)
        return m[1]

    def terminate(self, timeout: float = WAIT_LIMIT) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def send_syns(pair: NetnsPair, dst: str, ports: Sequence[int], first_sport: int) -> None:
    """One SYN to each of ``ports``, in order, from the client namespace."""
    pairs = [[port, first_sport + i] for i, port in enumerate(ports)]
    res = pair.run(pair.client, [PY, "-c", SEND_SYNS, dst, json.dumps(pairs)], check=False)
    if res.returncode != 0:
        raise AssertionError(f"sending SYNs failed: {res.stderr}")
