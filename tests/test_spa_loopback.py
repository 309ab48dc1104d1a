"""SPA end to end on loopback, without root: ``aioknock daemon`` reading an fwknopd
access.conf on a bound UDP socket (``spa_listen``), opening doors with commands that
leave marker files; knocked by ``aioknock run -protocol spa`` and by the real
``fwknop`` client. (The namespace tests, as root, do the same with capture, nftables
and fwknopd: test_netns_spa.py.)"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemons import daemon_env
from helpers.netns import in_ci

from aioknock.codec import spa

KEY, HMAC_KEY = bytes(range(32)), bytes(range(100, 164))
KEY_B64, HMAC_B64 = base64.b64encode(KEY).decode(), base64.b64encode(HMAC_KEY).decode()
PY = sys.executable


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpaDaemon:
    def __init__(self, tmp: Path, port: int, stanza: str, *, listen: str = "127.0.0.1",
                 extra: str = "") -> None:  # fmt: skip
        self.tmp, self.port = tmp, port
        (tmp / "access.conf").write_text(stanza)
        (tmp / "fw.log").write_text("")
        marker = tmp / "open-%IP%-%PROTO%-%PORT%"
        self.conf = tmp / "knockdaemon.conf"
        self.conf.write_text(
            f"runmode = file\nlogfile = {tmp / 'fw.log'}\nencoded = no\n"
            f"access_file = access.conf\nspa_listen = {listen}\nspa_server_port = {port}\n"
            f"backend = command\nopen = touch {marker}\nclose = rm -f {marker}\n"
            f"duration = 30\ncooldown = 0\n{extra}"
        )
        self.err = tmp / "daemon.stderr"
        self.proc = self._start()
        self.wait_log(f"receiving SPA on udp {listen}")

    def _start(self) -> subprocess.Popen[bytes]:
        with open(self.err, "ab") as err:
            return subprocess.Popen(
                [PY, "-m", "aioknock", "daemon", "-conf", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=daemon_env(self.tmp),
            )  # fmt: skip

    def restart(self) -> None:
        self.stop()
        self.proc = self._start()
        self.wait_log("receiving SPA on udp", count=2)

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {log}")
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} (x{count}) within {timeout} s: {self.log()}")

    def opened(self, ip: str, proto: str, port: int, within: float = 5.0) -> bool:
        """Whether the door's open command has run (waiting ``within`` seconds for it)."""
        marker = self.tmp / f"open-{ip}-{proto}-{port}"
        deadline = time.monotonic() + within
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return marker.exists()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


STANZA = f"""\
SOURCE              127.0.0.0/8, ::1
OPEN_PORTS          tcp/22, tcp/2222, udp/53
KEY_BASE64          {KEY_B64}
HMAC_KEY_BASE64     {HMAC_B64}
HMAC_DIGEST_TYPE    SHA512
FW_ACCESS_TIMEOUT   30
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[SpaDaemon]:
    d = SpaDaemon(tmp_path, free_udp_port(), STANZA)
    try:
        yield d
    finally:
        d.stop()


def aioknock_spa(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    env.update(AIOKNOCK_KEY_BASE64=KEY_B64, AIOKNOCK_HMAC_KEY_BASE64=HMAC_B64)
    return subprocess.run(
        [PY, "-m", "aioknock", "run", "-protocol", "spa", "-spa_server_port", str(port),
         "-hmac_digest_type", "sha512", *args], capture_output=True, text=True, env=env,
        timeout=20,
    )  # fmt: skip


def fwknop(tmp: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("fwknop") is None:
        if in_ci():
            pytest.fail("fwknop is not installed (scripts/test installs it)")
        pytest.skip("fwknop is not installed")
    rc = tmp / "fwknoprc"
    rc.write_text("")
    rc.chmod(0o600)
    return subprocess.run(
        ["fwknop", "--rc-file", str(rc), "-D", "127.0.0.1", "--server-port", str(port),
         "--key-base64-rijndael", KEY_B64, "--key-base64-hmac", HMAC_B64,
         "--hmac-digest-type", "sha512", *args],
        capture_output=True, text=True, timeout=20, env={"HOME": str(tmp), "PATH": "/usr/bin"},
    )  # fmt: skip


def test_aioknock_client_opens_two_ports(daemon: SpaDaemon) -> None:
    res = aioknock_spa(daemon.port, "-access", "tcp/22,udp/53", "-allow_ip", "source",
                       "127.0.0.1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    daemon.wait_log("accepted knock from 127.0.0.1 (spa)", count=2)
    assert daemon.opened("127.0.0.1", "tcp", 22) and daemon.opened("127.0.0.1", "udp", 53)


def test_real_fwknop_client_opens_and_its_replay_is_refused(
    daemon: SpaDaemon, tmp_path: Path
) -> None:
    saved = tmp_path / "packet"
    res = fwknop(tmp_path, daemon.port, "-A", "tcp/2222", "-a", "127.0.0.1", "-B", str(saved))
    assert res.returncode == 0, res.stdout + res.stderr
    daemon.wait_log("accepted knock from 127.0.0.1 (spa): opening tcp/2222 for 127.0.0.1")
    assert daemon.opened("127.0.0.1", "tcp", 2222)
    packet = saved.read_text().strip().encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", daemon.port))
    daemon.wait_log("replayed SPA packet")


def test_refusals_are_logged_with_their_reason(daemon: SpaDaemon, tmp_path: Path) -> None:
    cases = [
        (["-A", "tcp/23", "-a", "127.0.0.1"], "tcp/23 is not in OPEN_PORTS"),
        (["-A", "tcp/22", "-a", "127.0.0.1", "--time-offset-minus", "5m"], "packet age"),
    ]
    for args, reason in cases:
        assert fwknop(tmp_path, daemon.port, *args).returncode == 0
        daemon.wait_log(reason)
    wrong = spa.SpaKeys(KEY, b"not the HMAC key", "sha512")
    packet = spa.build(spa.SpaMessage("127.0.0.1", (("tcp", 22),), int(time.time())), wrong)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, ("127.0.0.1", daemon.port))
    daemon.wait_log("HMAC does not verify")
    assert not daemon.opened("127.0.0.1", "tcp", 22, within=0.5)
    assert not daemon.opened("127.0.0.1", "tcp", 23, within=0)
    assert "accepted" not in daemon.log()


def test_ipv6_both_ways(tmp_path: Path) -> None:
    """Over ::1 the packet carries an IPv6 allow address (auto: the route's, ::1),
    which aioknock's daemon opens for (fwknop 2.6.10 carries IPv4 only)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    d = SpaDaemon(tmp_path, free_udp_port(), STANZA, listen="::1")
    try:
        res = aioknock_spa(d.port, "-access", "tcp/22", "-allow_ip", "auto", "::1")
        assert res.returncode == 0, res.stderr
        d.wait_log("accepted knock from ::1 (spa): opening tcp/22 for ::1")
        assert d.opened("::1", "tcp", 22)
    finally:
        d.stop()


def test_a_packet_used_before_a_restart_is_refused_with_replay_file(tmp_path: Path) -> None:
    d = SpaDaemon(tmp_path, free_udp_port(), STANZA, extra="replay_file = replay.db\n")
    try:
        packet = spa.build(spa.SpaMessage("127.0.0.1", (("tcp", 22),), int(time.time())),
                           spa.SpaKeys(KEY, HMAC_KEY, "sha512"))  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(packet, ("127.0.0.1", d.port))
        d.wait_log("accepted knock from 127.0.0.1 (spa)")
        d.restart()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(packet, ("127.0.0.1", d.port))
        d.wait_log("replayed SPA packet")
        assert d.log().count("accepted knock") == 1
    finally:
        d.stop()


def test_hosts_file_lines_carry_their_own_spa_keys(daemon: SpaDaemon, tmp_path: Path) -> None:
    """A fleet whose hosts have keys of their own: the line's keys win, the global
    ones (wrong here) do not."""
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"127.0.0.1 key_base64={KEY_B64} hmac_key_base64={HMAC_B64} "
                     "access=tcp/2222 allow_ip=source\n")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOKNOCK_")}
    res = subprocess.run(
        [PY, "-m", "aioknock", "run", "-protocol", "spa", "-spa_server_port",
         str(daemon.port), "-hmac_digest_type", "sha512", "-key_base64",
         base64.b64encode(b"w" * 32).decode(), "-hmac_key_base64",
         base64.b64encode(b"w" * 64).decode(), "--hosts", str(hosts), "--json"],
        capture_output=True, text=True, env=env, timeout=20,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert '"ok": true' in res.stdout
    daemon.wait_log("accepted knock from 127.0.0.1 (spa): opening tcp/2222 for 127.0.0.1")
