"""aioknock's knockd-style sequences against the real ``knockd`` (root; runs in CI).

knockd (Debian package) runs in the server namespace of a netns pair, listening
with pcap on the server's veth, while nftables drops the knock ports (so knocks
get no answer, as behind a real firewall; pcap sees them before the filter).
``aioknock run -sequence ...`` knocks from the client namespace; knockd runs its
door's command, which leaves a file behind.

Many hosts at once: the server namespace holds 20 addresses, each guarded by
its own knockd (a door with ``Target = <address>``), as 20 servers would be.
One knockd cannot stand for them all: it tracks a sequence per source address
(and door target), and when a completed attempt at the head of its attempt list
is removed, knockd 0.8 empties the whole list (``if(lp == attempts) attempts =
NULL;``), losing the other sequences in progress.

Addresses: 198.18.0.0/15, which exists only inside the namespaces created here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.netns import WAIT_LIMIT, NetnsPair, requires_root

import aioknock

REPO = Path(aioknock.__file__).resolve().parent.parent
FLEET = [f"198.18.0.{n}" for n in range(2, 22)]  # 20 server addresses
DOORS = {
    # name: (knockd sequence, aioknock -sequence, knock client arguments)
    "mixed": ("7000:tcp,8000:udp,9000:tcp", "7000,8000:udp,9000",
              ["7000:tcp", "8000:udp", "9000:tcp"]),
    "tcponly": ("7100:tcp,7200:tcp,7300:tcp", "7100,7200,7300",
                ["7100:tcp", "7200:tcp", "7300:tcp"]),
    "udponly": ("7400:udp,7500:udp,7600:udp", "7400:udp,7500:udp,7600:udp",
                ["7400:udp", "7500:udp", "7600:udp"]),
}  # fmt: skip
TCP_PORTS = [7000, 9000, 7100, 7200, 7300]
UDP_PORTS = [8000, 7400, 7500, 7600]

pytestmark = pytest.mark.skipif(shutil.which("knockd") is None, reason="knockd not installed")


@pytest.fixture
def pair(pair: NetnsPair) -> NetnsPair:
    """conftest.py's namespace pair, with every knock port dropped in the server."""
    pair.nft_drop(TCP_PORTS)
    pair.nft_drop(UDP_PORTS, "udp")
    return pair


@pytest.fixture
def aioknock_run(tmp_path: Path) -> list[str]:
    """``python -m aioknock run`` in a clean environment with an empty config file."""
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    return [
        "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", f"HOME={tmp_path}",
        f"XDG_CONFIG_HOME={tmp_path / 'xdg'}", f"PYTHONPATH={REPO}",
        f"PYTHONPYCACHEPREFIX={os.environ['PYTHONPYCACHEPREFIX']}",  # conftest.py: not the tree
        sys.executable, "-m", "aioknock", "run", "-conf", str(empty),
    ]  # fmt: skip


def door(name: str, sequence: str, command: str, target: str | None = None) -> str:
    lines = [
        f"[{name}]",
        f"    sequence    = {sequence}",
        "    seq_timeout = 5",
        "    tcpflags    = syn",
        f"    command     = {command}",
    ]
    if target:
        lines.append(f"    target      = {target}")
    return "\n".join(lines) + "\n"


def start_knockd(pair: NetnsPair, workdir: Path, doors: str, tag: str = "knockd") -> Path:
    """Run knockd in the foreground in the server namespace; wait until it listens."""
    log = workdir / f"{tag}.log"
    conf = workdir / f"{tag}.conf"
    conf.write_text(f"[options]\n    LogFile = {log}\n    Interface = {pair.server_if}\n\n{doors}")
    out = (workdir / f"{tag}.out").open("wb")
    try:
        proc = pair.popen(
            pair.server,
            ["knockd", "-c", str(conf), "-i", pair.server_if, "-p", str(workdir / f"{tag}.pid")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    finally:
        out.close()
    deadline = time.monotonic() + WAIT_LIMIT
    while "listening on" not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            text = (workdir / f"{tag}.out").read_text(errors="replace")
            raise RuntimeError(f"knockd did not start (exit {proc.poll()}): {text}")
        time.sleep(0.01)
    return log


def wait_for(predicate: object, timeout: float = WAIT_LIMIT) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def check_run(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr


@pytest.fixture
def knockd(pair: NetnsPair, tmp_path: Path) -> Path:
    """One knockd with the three doors; each door touches opened-<door>-<client>."""
    doors = "".join(
        door(name, seq, f"touch {tmp_path}/opened-{name}-%IP%")
        for name, (seq, _, _) in DOORS.items()
    )
    return start_knockd(pair, tmp_path, doors)


@requires_root
@pytest.mark.parametrize("name", list(DOORS))
def test_knockd_accepts_aioknock_sequence(
    pair: NetnsPair, knockd: Path, aioknock_run: list[str], tmp_path: Path, name: str
) -> None:
    _, sequence, _ = DOORS[name]
    opened = tmp_path / f"opened-{name}-{pair.client_ip}"
    cmd = [*aioknock_run, "-remote", pair.server_ip, "-sequence", sequence, "-timeout", "0.05"]
    check_run(pair.run(pair.client, cmd))
    assert wait_for(opened.exists), knockd.read_text()
    log = knockd.read_text()
    assert f"{pair.client_ip}: {name}: OPEN SESAME" in log, log
    # Only the door knocked opened.
    assert sorted(p.name for p in tmp_path.glob("opened-*")) == [opened.name]


@requires_root
def test_knockd_rejects_wrong_order(
    pair: NetnsPair, knockd: Path, aioknock_run: list[str], tmp_path: Path
) -> None:
    """The door really checks the sequence: the same ports out of order open nothing."""
    cmd = [*aioknock_run, "-remote", pair.server_ip, "-sequence", "9000,8000:udp,7000",
           "-timeout", "0.05"]  # fmt: skip
    check_run(pair.run(pair.client, cmd))
    time.sleep(0.5)
    assert not list(tmp_path.glob("opened-*")), knockd.read_text()
    assert "OPEN SESAME" not in knockd.read_text()


@requires_root
def test_knockd_same_sequence_from_knock_client_and_aioknock(
    pair: NetnsPair, knockd: Path, aioknock_run: list[str], tmp_path: Path
) -> None:
    """knockd's own ``knock`` client and aioknock open the same door with the same sequence."""
    if shutil.which("knock") is None:
        pytest.skip("knock client not installed")
    _, sequence, knock_args = DOORS["mixed"]
    opened = tmp_path / f"opened-mixed-{pair.client_ip}"
    check_run(pair.run(pair.client, ["knock", "-d", "50", pair.server_ip, *knock_args]))
    assert wait_for(opened.exists), knockd.read_text()
    opened.unlink()
    cmd = [*aioknock_run, "-remote", pair.server_ip, "-sequence", sequence, "-timeout", "0.05"]
    check_run(pair.run(pair.client, cmd))
    assert wait_for(opened.exists), knockd.read_text()
    assert knockd.read_text().count(f"{pair.client_ip}: mixed: OPEN SESAME") == 2


@requires_root
def test_knockd_many_hosts_in_one_run(
    pair: NetnsPair, aioknock_run: list[str], tmp_path: Path
) -> None:
    """20 server addresses, one knockd each; one ``aioknock run --hosts`` knocks them all."""
    for addr in FLEET[1:]:
        pair.run(pair.server, ["ip", "addr", "add", f"{addr}/24", "dev", pair.server_if])
    hits = tmp_path / "hits"
    seq, sequence, _ = DOORS["mixed"]
    logs = [
        start_knockd(
            pair, tmp_path,
            door("mixed", seq, f"/bin/sh -c 'echo %IP% {addr} >> {hits}'", target=addr),
            tag=f"knockd-{addr}",
        )
        for addr in FLEET
    ]  # fmt: skip
    hosts = tmp_path / "fleet"
    hosts.write_text("# the fleet\n" + "".join(f"{a}\n" for a in FLEET))
    cmd = [*aioknock_run, "--hosts", str(hosts), "-sequence", sequence, "-timeout", "0.05",
           "--json"]  # fmt: skip
    res = pair.run(pair.client, cmd)
    check_run(res)
    assert len(res.stdout.splitlines()) == len(FLEET)

    def lines() -> list[str]:
        return hits.read_text().splitlines() if hits.exists() else []

    def everything() -> str:
        return "\n".join(log.read_text() for log in logs)

    assert wait_for(lambda: len(lines()) >= len(FLEET)), (lines(), everything())
    time.sleep(0.2)  # a duplicate would show up by now
    got = sorted(lines())
    assert got == sorted(f"{pair.client_ip} {a}" for a in FLEET), everything()
    assert everything().count("OPEN SESAME") == len(FLEET)
    # The hosts were knocked at once: every burst began before any ended. No stall can
    # break this on a right client: all 20 hosts start in one pass of its event loop,
    # before any timer (a burst's gaps) can fire.
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(r["ok"] for r in results)
    assert max(r["started"] for r in results) < min(r["finished"] for r in results)
