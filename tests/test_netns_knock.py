"""The real thing, in a network namespace pair (root; runs in CI).

``aioknock run`` knocks from the client namespace at the server namespace, where
nftables drops the whole knock span (as a knockdaemon's firewall would). tcpdump
on the server's veth shows exactly one SYN per knock, in the order of the
``--json`` ports, never before their slots. The capture runs on for more than
1.2 s after the last knock: Linux would retransmit an unanswered SYN after 1 s,
so an empty tail proves every knock was closed in time.

Addresses: 198.18.0.0/15 and fd00:198:18::/48, which exist only inside the
namespaces created here; 198.19.0.1 and fd00:198:18:ffff::1 have no route at all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.netns import NetnsPair, Packet, requires_root

import aioknock

SPAN = range(40000, 40256)
REPO = Path(aioknock.__file__).resolve().parent.parent
TAIL = 1.25  # capture this long after the last knock: past the 1 s retransmission
# The knock's schedule starts after its ``started`` (wall clock, as the capture's) and
# at or before SYN 0. No SYN leaves before started + i * gap, give or take EARLY (the
# rounding of the two clocks); how late is the loaded machine's: SYN 0 + i * gap + LATE
# at most, which on an absolute schedule bounds the last knock's drift too
# (test_sender.py shows with an injected overshoot that lateness does not add up).
EARLY = 0.002
LATE = 0.3

# ``send_knock(mode="connect")`` is not a CLI option (yet): drive it directly.
CONNECT_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from aioknock.asyncio.sender import resolve, send_knock

    host, timeout, loop_name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    ports = [int(p) for p in sys.argv[4:]]

    async def main():
        target = await resolve(host)
        started = time.time()
        attempts = await send_knock(target, ports, timeout, mode="connect")
        print(json.dumps({"ports": [a.port for a in attempts], "started": started,
                          "outcomes": [a.outcome for a in attempts]}))

    if loop_name == "uvloop":
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(main())
    """
)


@pytest.fixture
def python(tmp_path: Path) -> list[str]:
    """``env -i ... python``: a clean environment, no AIOKNOCK_* from outside."""
    return [
        "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}",
        f"HOME={tmp_path}", f"XDG_CONFIG_HOME={tmp_path / 'xdg'}", f"PYTHONPATH={REPO}",
        f"PYTHONPYCACHEPREFIX={os.environ['PYTHONPYCACHEPREFIX']}",  # conftest.py: not the tree
        sys.executable,
    ]  # fmt: skip


@pytest.fixture
def aioknock_run(python: list[str], tmp_path: Path) -> list[str]:
    """``python -m aioknock run`` with an empty config file (no built-in search)."""
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    return [*python, "-m", "aioknock", "run", "-conf", str(empty)]


def _knock(
    pair: NetnsPair, cmd: list[str], *, timeout: float = 15
) -> tuple[subprocess.CompletedProcess[str], list[Packet], float]:
    """Run ``cmd`` in the client namespace under a capture; return it, the SYNs, the tail."""
    pair.nft_drop(SPAN)
    cap = pair.capture()
    res = pair.run(pair.client, cmd, check=False, timeout=timeout)
    time.sleep(TAIL)
    end = time.time()
    pkts = cap.stop(settle=0.0)
    assert res.returncode == 0, f"exit {res.returncode}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    assert cap.kernel_dropped == 0
    assert pkts, cap.text
    return res, pkts, end - pkts[-1].timestamp


def _check(
    pair: NetnsPair, pkts: list[Packet], ports: list[int], tail: float, gap: float | None,
    started: float, *, v6: bool = False,
) -> list[float]:  # fmt: skip
    text = "\n".join(map(str, pkts))
    # Exactly one SYN per knock, in knock order: no retransmission, no duplicate.
    assert [p.dport for p in pkts] == ports, text
    client, server = (pair.client_ip6, pair.server_ip6) if v6 else (pair.client_ip, pair.server_ip)
    assert {(p.src, p.dst, p.proto) for p in pkts} == {(client, server, "tcp")}, text
    assert tail > 1.2, f"capture ended {tail:.3f} s after the last SYN"
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(pkts)]
    if gap is not None:
        # Against the slots, not the gaps: the gap after a late knock is short, as it
        # must be on an absolute schedule (and so is SYN 1's if SYN 0 left late).
        early = [p.timestamp - (started + i * gap) for i, p in enumerate(pkts)]
        late = [p.timestamp - (pkts[0].timestamp + i * gap) for i, p in enumerate(pkts)]
        print(f"at {gap} s, ms after started + slot:", [round(e * 1000, 2) for e in early])
        print(f"at {gap} s, ms after SYN 0 + slot:", [round(e * 1000, 2) for e in late])
        assert all(e >= -EARLY for e in early), early
        assert all(e <= LATE for e in late), late  # the last too: no drift beyond LATE
    return gaps


def _json_knock(res: subprocess.CompletedProcess[str]) -> tuple[list[int], float]:
    """The ``--json`` knock's ports and ``started``."""
    knocks = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert len(knocks) == 1, res.stdout
    ports: list[int] = knocks[0]["ports"]
    assert ports and all(p in SPAN for p in ports)
    return ports, float(knocks[0]["started"])


CASES = {
    "ipv4-0.1s": (["-timeout", "0.1"], 0.1, False),
    "ipv4-0s": (["-timeout", "0"], None, False),
    "blowfish-0.05s": (
        ["-timeout", "0.05", "-encrypt", "-key", "k", "-cipher", "Blowfish"],
        0.05,
        False,
    ),
    "ipv6-0.1s": (["-timeout", "0.1", "-knock", "PORT,RAND,CHECKSUM"], 0.1, True),
}


@requires_root
@pytest.mark.parametrize("case", list(CASES))
def test_cli_knock_one_syn_per_port(pair: NetnsPair, aioknock_run: list[str], case: str) -> None:
    args, gap, v6 = CASES[case]
    remote = pair.server_ip6 if v6 else pair.server_ip
    cmd = [*aioknock_run, "-remote", remote, "-portspan", "40000-40255", "--json", *args]
    res, pkts, tail = _knock(pair, cmd)
    ports, started = _json_knock(res)
    if case.startswith("blowfish"):
        assert len(ports) == 32  # "RandomIV" + 8 IV bytes + 16 bytes of ciphertext
    _check(pair, pkts, ports, tail, gap, started, v6=v6)


@requires_root
@pytest.mark.parametrize(("loop", "gap"), [("uvloop", 0.1), ("asyncio", 0.0)])
def test_connect_mode_one_syn_per_port(
    pair: NetnsPair, python: list[str], loop: str, gap: float
) -> None:
    ports = [40007, 40003, 40250, 40003, 40100, 40000, 40255, 40042]
    cmd = [*python, "-c", CONNECT_SCRIPT, pair.server_ip, str(gap), loop, *map(str, ports)]
    res, pkts, tail = _knock(pair, cmd)
    out = json.loads(res.stdout)
    assert out["ports"] == ports
    assert out["outcomes"] == ["no answer"] * len(ports)  # dropped by nftables
    _check(pair, pkts, ports, tail, gap or None, float(out["started"]))


@requires_root
@pytest.mark.parametrize(
    ("remote", "extra"),
    [
        ("198.19.0.1", []),  # the route lookup for CLIENT fails
        ("198.19.0.1", ["-client", "198.18.0.1"]),  # connect() itself fails
        ("fd00:198:18:ffff::1", ["-knock", "PORT,RAND,CHECKSUM"]),
    ],
)
def test_no_route_is_one_line_error(
    pair: NetnsPair, aioknock_run: list[str], remote: str, extra: list[str]
) -> None:
    route = pair.run(pair.client, ["ip", "route", "get", remote], check=False)
    assert route.returncode != 0, f"{remote} is routable in {pair.client}: {route.stdout}"
    cap = pair.capture(f"host {remote}", ns=pair.client)
    cmd = [*aioknock_run, "-remote", remote, "-portspan", "40000-40255", "-timeout", "0",
           "-quiet", *extra]  # fmt: skip
    res = pair.run(pair.client, cmd, check=False)
    assert cap.stop(settle=0.05) == [], cap.text
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aioknock: error: "), res.stderr
    assert remote in lines[0], lines[0]


@requires_root
def test_unresolvable_name_is_one_line_error(pair: NetnsPair, aioknock_run: list[str]) -> None:
    """A real DNS lookup of a ``.invalid`` name, kept inside the namespaces: the client
    namespace's resolv.conf (``ip netns exec`` mounts /etc/netns/NS/resolv.conf) names
    the server namespace, where nothing answers on port 53."""
    etc = Path("/etc/netns", pair.client)
    made_parent = not etc.parent.exists()
    try:
        etc.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot create {etc}: {exc}")
    try:
        (etc / "resolv.conf").write_text(
            f"nameserver {pair.server_ip}\noptions timeout:1 attempts:1\n"
        )
        dns = pair.capture("udp port 53")
        cmd = [*aioknock_run, "-remote", "knock.invalid", "-quiet"]
        res = pair.run(pair.client, cmd, check=False)
        queries = dns.stop(settle=0.0)
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        if made_parent:
            with contextlib.suppress(OSError):  # only if empty: others may use it
                etc.parent.rmdir()
    assert queries and {p.dst for p in queries} == {pair.server_ip}, dns.text
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aioknock: error: cannot resolve"), lines
    assert "knock.invalid" in lines[0]
