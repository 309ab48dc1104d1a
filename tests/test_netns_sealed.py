"""The proof of issue 10's sealed knocks (points 1-3): the real ``aioknock run -protocol
sealed`` in a client namespace against the real ``aioknock daemon`` (nftables backend)
in server namespaces, every outcome counted.

Two servers share the client namespace: A (``a.example``, 198.18.0.2, fd00:198:18::2)
and B (``b.example``, 198.18.1.2), each with its own key derived from the admin's
master key by ``aioknock keygen --derive``. Each server's own table drops the protected
ports (22, 2222) and the span behind the two documented rules; a listener answers on
the protected ports, so "connects" is a real check of the daemon's nftables set. The
client namespace holds more addresses to send from (198.18.0.99-119, 198.18.1.99-101).

* End to end: IPv4 (``client = auto``), IPv6 with the client carried (``-client``) and
  IPv6 with ``client = auto``: each opens exactly its door (set element, connection),
  which closes after ``duration``.
* Fleet keys: ``-master`` opens each server with its derived key; A's knock replayed to
  B, a knock bound to another ``server_id`` and one made with A's key open nothing on B.
* Refused: all 285 single-bit flips of a knock (one that carries its address: 19 SYNs;
  a knock for its source is bound to it, and only another address could send the
  flips fast enough to be counted, see below), the knock replayed from its source,
  from another address and over IPv6, a knock taken off the path sent from another
  address, stale and future knocks, a knock used before a restart with ``replay_file``.
* Noise: 1 and 2 stray SYNs from the client's address inside a knock: accepted; 3 or 4:
  refused, said in a line.

Counting: the daemon's summary at SIGTERM counts the verdicts it logged, and its lines
about knocks that are no knock are rate-limited (one a minute per source, 20 a minute
in all, per recognizer; held lines are counted nowhere until the minute ends, then as
one "N more ... not logged" line, and not at all if the daemon stops first). So a
source sends at most one such knock per recognizer, a batch holds at most 20, and a
reload (SIGHUP: new recognizers, the counts and the replay memory kept) starts each
batch: then every verdict is a line, and ``sealed.stop`` checks that the summary's
counts are the lines'.

Waking the daemon: a knock that is no knock (tag failed, incomplete, too much noise)
is said when its source's SYNs expire, from the daemon's timer; but the timer task
(asyncio/daemon.py ``_timer``) is woken only by a firewall action, not by a packet
that gives a recognizer a deadline, so an idle daemon never says it (and its summary
never counts it). And a window that expires on the packet path (``SourceTable.get``)
while its table then empties is never reported either (``next_sweep`` is None with
``expired`` not empty). Both reported as bugs; until they are fixed, every such knock
here is followed at once, in the same send, by a genuine knock from a waker address
(198.18.0.99 for A, 198.18.1.99 for B): its door's open wakes the timer while the bad
knock's window is still in the table. The waker's door is the only one allowed.
(Also: the daemon says "capturing on" before its capture socket is open;
``sealed.start`` waits for the socket.)

Safety: packets only go to 198.18.0.0/15 and fd00:198:18::/48 inside the namespaces made
here (deleted afterwards); nft only runs inside them.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import sealed
from helpers.daemons import Daemon, daemon_env
from helpers.fwknop import probe, wait_until
from helpers.netns import (
    LISTENER,
    WAIT_LIMIT,
    Closing,
    NetnsPair,
    check_closing,
    netns_pair,
    requires_root,
    stop_process,
)
from helpers.sealed import Knock, Sender, Summary, Verdict

from aioknock.asyncio.client import plan_sealed
from aioknock.codec.sealed import DATA_BITS, LABELS, SealedCodec, key_from_text
from aioknock.config.settings import ClientSettings

PY = sys.executable
PROTECTED, OTHER = 22, 2222
DURATION = 2  # sealed.sealed_conf's
FLEET_DOOR = "6"  # the fleet test's doors: open until both servers' are seen, however slow
CLOSED_PROBE = 0.3  # seconds to wait for an answer that must not come (veth RTT: µs)
A_ID, B_ID = "a.example", "b.example"
EXTRA = [f"198.18.0.{n}" for n in range(100, 120)]  # the client's other addresses
B_EXTRA = ["198.18.1.100", "198.18.1.101"]  # and on B's side
WAKE_A, WAKE_B = "198.18.0.99", "198.18.1.99"  # genuine knocks that wake the daemon
SPAN_START, SPAN_SIZE = 32768, 1 << 15
TAG_FAILED = "no sealed knock among the last {} SYNs (tag did not verify)"
REPLAYED = "replayed sealed knock"
# The bit-flip test's knock_timeout: short, as every batch waits for its incomplete
# knocks to expire, yet long enough for a descheduled sender or daemon mid-knock.
FLIP_TIMEOUT = "0.5"
INCOMPLETE = f"incomplete sealed knock: {{}} SYNs within knock_timeout ({FLIP_TIMEOUT} s)"
WAKER_SYNS = 19  # a knock that carries an IPv4 address


@dataclass
class Net:
    """The namespaces (``a``: client and server A; ``b``: the same client and server
    B), the keys, and a scratch directory."""

    a: NetnsPair
    b: NetnsPair
    tmp: Path
    master: Path
    a_key: Path
    b_key: Path
    sender: Sender
    empty: Path = field(init=False)

    def __post_init__(self) -> None:
        self.empty = self.tmp / "empty.conf"
        self.empty.touch()

    def send(self, *knocks: Knock) -> None:
        """The knocks' SYNs from the client namespace, in order, no pause."""
        self.sender.send(knocks)


def keygen(tmp: Path, *runs: tuple[str, ...]) -> list[Path]:
    """``aioknock keygen ARGS -o FILE`` for each ARGS of ``runs``, at once: the new files
    (mode 600, one line of base64)."""
    outs = [tmp / f"{len(list(tmp.iterdir())) + i}.key" for i in range(len(runs))]
    procs = [subprocess.Popen([PY, "-m", "aioknock", "keygen", *args, "-o", str(out)],
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=daemon_env(tmp))
             for args, out in zip(runs, outs, strict=True)]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    for out in outs:
        assert out.stat().st_mode & 0o777 == 0o600
        key_from_text(out.read_text())
    return outs


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """The namespaces, each server's ruleset and listeners, the client's addresses, the
    keys (``aioknock keygen``: the master, then A's and B's derived from it)."""
    tmp = tmp_path_factory.mktemp("sealed")
    (master,) = keygen(tmp, ())
    a_key, b_key = keygen(tmp, ("--derive", A_ID, "--master", str(master)),
                          ("--derive", B_ID, "--master", str(master)))  # fmt: skip
    texts = {p.read_text() for p in (master, a_key, b_key)}
    assert len(texts) == 3, "a derived key equals the master or the other host's"
    with netns_pair() as a, sealed.second_server(a) as b:
        batch = [f"addr add {addr}/24 dev {a.client_if}\n" for addr in [*EXTRA, WAKE_A]]
        batch += [f"addr add {addr}/24 dev {b.client_if}\n" for addr in [*B_EXTRA, WAKE_B]]
        a.run(a.client, ["ip", "-batch", "-"], input="".join(batch))
        for server in (a, b):
            server.run(server.server, ["nft", "-f", "-"],
                       input=sealed.user_ruleset([PROTECTED, OTHER]))  # fmt: skip
            for port in (PROTECTED, OTHER):
                server.popen(server.server, [PY, "-c", LISTENER, str(port), "120"],
                             stdin=subprocess.DEVNULL)  # fmt: skip
            for port in (PROTECTED, OTHER):
                server.wait_port(port)
        yield Net(a, b, tmp, master, a_key, b_key, Sender(a))


Start = Callable[..., Daemon]


@pytest.fixture
def gate(net: Net, tmp_path: Path) -> Iterator[Start]:
    """Starts server A's daemon (``a_key``, ``server_id = a.example``; keyword arguments
    add configuration keys); ``fresh`` (default) deletes its nftables table first, so
    no door of an earlier test is left. Every daemon started is stopped at the end."""
    started: list[Daemon] = []

    def start(*, fresh: bool = True, **extra: str | None) -> Daemon:
        if fresh:
            net.a.run(net.a.server, ["nft", "delete", "table", "inet", "aioknock"],
                      check=False)  # fmt: skip
        conf = sealed.sealed_conf(net.a_key, A_ID, net.a.server_if, **extra)
        daemon = sealed.start(net.a, tmp_path, conf, f"a{len(started)}.conf")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        stop_process(daemon.proc)


def knock(net: Net, *args: str) -> list[dict[str, object]]:
    """``aioknock run -protocol sealed ARGS --json`` in the client namespace, with an empty
    configuration file and none of the caller's AIOKNOCK_* settings: it must succeed;
    its JSON objects, one per host."""
    (results,) = knocks(net, list(args))
    return results


def knocks(net: Net, *runs: list[str]) -> list[list[dict[str, object]]]:
    """``knock`` for each ARGS of ``runs``, all at once."""
    cmds = [[PY, "-m", "aioknock", "run", "-conf", str(net.empty), "-protocol", "sealed",
             "--json", *args] for args in runs]  # fmt: skip
    procs = [subprocess.Popen(["ip", "netns", "exec", net.a.client, *cmd], text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=daemon_env(net.tmp))
             for cmd in cmds]  # fmt: skip
    out = []
    for cmd, proc in zip(cmds, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"{cmd}\nexit {proc.returncode}\n{stdout}\n{stderr}"
        assert "Traceback" not in stderr, stderr
        results = [json.loads(line) for line in stdout.splitlines()]
        assert results and all(r["ok"] and r["protocol"] == "sealed" for r in results), stdout
        out.append(results)
    return out


def a_args(net: Net, *more: str) -> list[str]:
    """Knocking A with its own key, as README's first example."""
    return ["-key_file", str(net.a_key), "-server_id", A_ID, "-port", str(PROTECTED), *more]


def ports_of(result: dict[str, object]) -> list[int]:
    ports = result["ports"]
    assert isinstance(ports, list)
    return [int(p) for p in ports]


def codec(key_file: Path, server_id: str) -> SealedCodec:
    """The daemon's codec: what a knock decodes to on the server."""
    return SealedCodec(key_from_text(key_file.read_text()), server_id)


def client_settings(key_file: Path, server_id: str, client: str) -> ClientSettings:
    """What ``aioknock run -protocol sealed -key_file K -server_id ID -port 22 -client C``
    uses: knocks made here carry their address (a knock for its source is bound to it;
    the client's own, made in its namespace, come from ``aioknock run -test``)."""
    return ClientSettings.of(protocol="sealed", key_file=str(key_file), server_id=server_id,
                             port=PROTECTED, client=client)  # fmt: skip


def fresh_knock(settings: ClientSettings, src: str, dst: str, now: float | None = None) -> Knock:
    """A new knock by the client library (``plan_sealed``), from ``src``."""
    wire = plan_sealed(settings, dst, now=now)
    return Knock(src, dst, settings.sealed_for(dst).ports(wire))


def waker(net: Net, server: str = "a") -> Knock:
    """A genuine knock from the waker address of server A or B (module docstring),
    carrying that address."""
    if server == "a":
        settings = client_settings(net.a_key, A_ID, client=WAKE_A)
        return fresh_knock(settings, WAKE_A, net.a.server_ip)
    return fresh_knock(client_settings(net.b_key, B_ID, client=WAKE_B), WAKE_B, net.b.server_ip)


def woke(lines: list[Verdict], src: str) -> list[Verdict]:
    """``lines`` without the waker's, which must be accepted knocks."""
    assert all(v.kind == "accepted" for v in lines if v.source == src), lines
    return [v for v in lines if v.source != src]


def lines_after(
    daemon: Daemon, mark: int, count: int, timeout: float = WAIT_LIMIT
) -> list[Verdict]:
    """Exactly ``count`` verdict lines after character ``mark`` (waits for them, then a
    moment for any more)."""
    assert wait_until(lambda: len(sealed.verdicts(daemon.stderr[mark:])) >= count, timeout), (
        daemon.stderr[mark:])  # fmt: skip
    time.sleep(0.05)
    found = sealed.verdicts(daemon.stderr[mark:])
    assert len(found) == count, daemon.stderr[mark:]
    return found


def reload(daemon: Daemon) -> None:
    """SIGHUP, and wait until the new recognizer reads packets."""
    mark = len(daemon.stderr)
    assert daemon.reload() == "configuration reloaded", daemon.stderr
    daemon.wait_log(r"capturing on ", after=mark)


def answers(net: Net, targets: list[tuple[str, int]]) -> list[bool]:
    """For each (server address, port): does a connection from the client get through?"""
    return probe(net.a, [(addr, port, "tcp") for addr, port in targets], CLOSED_PROBE)


def flipped(ports: list[int], pos: int, bit: int) -> list[int]:
    """``ports`` with bit ``bit`` of SYN ``pos``'s span offset inverted (bits 0-10 carry
    the knock, 11-14 the position label)."""
    out = list(ports)
    out[pos] = SPAN_START + ((out[pos] - SPAN_START) ^ (1 << bit))
    return out


# ---------------------------------------------------------------------- 1. end to end


def watch_closing(
    net: Net, opened: dict[tuple[str, int], tuple[float, float]], duration: float, within: float
) -> None:
    """Each service of ``opened`` (address, port: its door was added after the first time
    and by the second) stops answering within ``within`` seconds, neither before its
    door's ``duration`` nor after it (``check_closing``)."""
    pending, deadline = dict(opened), time.monotonic() + within
    last_open: dict[tuple[str, int], float] = {}
    while pending and time.monotonic() < deadline:
        began = time.monotonic()
        still = answers(net, list(pending))
        now = time.monotonic()
        for service, up in zip(list(pending), still, strict=True):
            if up:
                last_open[service] = began
                continue
            after, by = pending.pop(service)
            seen = Closing(last_open.get(service), now)
            try:
                check_closing(seen, duration, added_after=after, added_by=by)
            except AssertionError as exc:
                raise AssertionError(f"{service}: {exc}") from None
        time.sleep(0.05)
    assert not pending, f"never closed: {pending}"


class Case(NamedTuple):
    name: str
    dst: str  # the server's address knocked
    args: list[str]  # more arguments of aioknock run
    port: int
    syns: int
    carried: str | None  # the address the knock carries
    source: str  # the client's address, which the door opens for


def exactly(
    net: Net, services: list[tuple[str, int]], up: set[tuple[str, int]]
) -> Callable[[], bool]:
    """A poll: of ``services``, those in ``up`` answer and no other."""
    return lambda: answers(net, services) == [s in up for s in services]


@requires_root
def test_end_to_end_ipv4_and_ipv6_open_then_close(net: Net, gate: Start) -> None:
    """Three knocks by ``aioknock run`` (doors of 6 s): IPv4 with ``client = auto`` (no
    address in the knock: 16 SYNs) and, at the same time, IPv6 with ``-client`` the
    source (the address carried: 28 SYNs); then IPv6 with ``client = auto`` (16 SYNs; to
    port 2222). Each opens exactly its door in the nftables set; of the four services
    (22 and 2222, over IPv4 and IPv6) exactly those three then answer through the DROP;
    each door closes after ``duration``."""
    a = net.a
    duration = 6  # the first doors still open after the second knock and the probe, however slow
    daemon = gate(duration=str(duration))
    services = [(a.server_ip, PROTECTED), (a.server_ip6, PROTECTED), (a.server_ip6, OTHER),
                (a.server_ip, OTHER)]  # fmt: skip
    phases = [  # the second one from the same IPv6 address as the first's -client knock
        [Case("IPv4 auto", a.server_ip, [], PROTECTED, 16, None, a.client_ip),
         Case("IPv6 -client", a.server_ip6, ["-client", a.client_ip6], PROTECTED, 28,
              a.client_ip6, a.client_ip6)],
        [Case("IPv6 auto", a.server_ip6, [], OTHER, 16, None, a.client_ip6)],
    ]  # fmt: skip
    server = codec(net.a_key, A_ID)
    assert sealed.doors(a.server) == set()
    assert answers(net, services) == [False] * 4
    opened: dict[tuple[str, int], tuple[float, float]] = {}
    for cases in phases:
        knocked = time.monotonic()
        runs = [[*a_args(net, "-port", str(c.port), *c.args), c.dst] for c in cases]
        for c, (result,) in zip(cases, knocks(net, *runs), strict=True):
            ports = ports_of(result)
            assert len(ports) == c.syns, (c.name, result)
            if c.carried is not None:  # (a knock for its source is bound to it: the daemon's)
                msg = server.decode(ports)
                assert (msg.address, msg.port, msg.proto) == (c.carried, c.port, "tcp"), msg
            source = re.escape(c.source)
            daemon.wait_log(rf"accepted knock from {source} \(sealed\): opening tcp/{c.port} "
                            rf"for {source} for {duration} s")  # fmt: skip
            sealed.wait_doors(a.server, {(c.source, "tcp", c.port)})
            opened[c.dst, c.port] = (knocked, time.monotonic())
    want = {(c.source, "tcp", c.port) for p in phases for c in p}
    assert sealed.wait_doors(a.server, want) == want
    assert wait_until(exactly(net, services, set(opened)), 3.0), answers(net, services)
    watch_closing(net, opened, duration, duration + 10.0)
    assert sealed.doors(a.server) == set()
    assert sealed.stop(daemon) == Summary(packets=16 + 28 + 16, accepted=3, refused=0, ignored=0)


# ------------------------------------------------------------------- 2. fleet keys


@requires_root
def test_fleet_master_key_opens_each_server_and_a_knock_moves_nowhere(
    net: Net, gate: Start, tmp_path: Path
) -> None:
    """The admin knocks with the master key (``-master``): A with A's derived key, then
    A and B from a hosts file, each opened. Between the two, on B, each refused by the
    tag, with its line, and nothing opened for them: A's knock (as ``--json`` recorded
    it) replayed to B from its own source, and knocks ``aioknock run -test`` made with
    B's own key bound to another ``server_id`` and with A's key (what a compromised A
    holds) bound to ``b.example`` (each carrying the address it is sent from)."""
    a, b = net.a, net.b
    daemon_a = gate(duration=FLEET_DOOR)
    b.run(b.server, ["nft", "delete", "table", "inet", "aioknock"], check=False)
    conf = sealed.sealed_conf(
        net.b_key, B_ID, b.server_if, knock_timeout="0.5", duration=FLEET_DOOR
    )
    daemon_b = sealed.start(b, tmp_path, conf, "b.conf")
    both = [(a.server_ip, PROTECTED), (b.server_ip, PROTECTED)]
    assert answers(net, both) == [False, False]

    b_test = ["-port", str(PROTECTED), "-test", b.server_ip]
    (recorded,), (other_id,), (a_held,) = knocks(
        net,
        ["-master", "-key_file", str(net.master), "-server_id", A_ID, "-port", str(PROTECTED),
         a.server_ip],
        ["-key_file", str(net.b_key), "-server_id", "c.example", "-client", B_EXTRA[0], *b_test],
        ["-key_file", str(net.a_key), "-server_id", B_ID, "-client", B_EXTRA[1], *b_test],
    )  # fmt: skip
    daemon_a.wait_log(r"accepted knock from 198\.18\.0\.1 \(sealed\): opening tcp/22")
    door = {(a.client_ip, "tcp", PROTECTED)}
    assert sealed.wait_doors(a.server, door) == door
    assert wait_until(lambda: answers(net, both) == [True, False], 5.0)

    refused_on_b = {  # the source: what it sends
        a.client_ip: ("A's knock replayed to B", ports_of(recorded)),
        B_EXTRA[0]: ("B's key, server_id c.example", ports_of(other_id)),
        B_EXTRA[1]: ("A's key, server_id b.example", ports_of(a_held)),
    }
    mark = len(daemon_b.stderr)
    net.send(*(Knock(src, b.server_ip, p) for src, (_, p) in refused_on_b.items()),
             waker(net, "b"))  # fmt: skip
    lines = woke(lines_after(daemon_b, mark, len(refused_on_b) + 1), WAKE_B)
    assert {v.source: v for v in lines} == {
        src: Verdict("refused", src, TAG_FAILED.format(len(p)))
        for src, (_, p) in refused_on_b.items()
    }, (refused_on_b, lines)
    door = {(WAKE_B, "tcp", PROTECTED)}
    assert sealed.wait_doors(b.server, door) == door
    assert answers(net, both[1:]) == [False]

    hosts = tmp_path / "fleet.txt"
    hosts.write_text(f"# the fleet\n{a.server_ip} server_id={A_ID}\n"
                     f"{b.server_ip} server_id={B_ID}\n")  # fmt: skip
    results = knock(net, "-master", "-key_file", str(net.master), "-port", str(PROTECTED),
                    "--hosts", str(hosts))  # fmt: skip
    # Each host's result as it finishes (knock_many's order): both knocked, either first.
    assert sorted(str(r["address"]) for r in results) == sorted([a.server_ip, b.server_ip]), results
    assert all(r["ok"] for r in results), results
    daemon_a.wait_log(r"accepted knock from 198\.18\.0\.1 \(sealed\): (opening|extending) "
                      r"tcp/22[^\n]*\n(.|\n)*accepted knock from 198\.18\.0\.1")  # fmt: skip
    daemon_b.wait_log(r"accepted knock from 198\.18\.1\.1 \(sealed\): opening tcp/22 for "
                      r"198\.18\.1\.1")  # fmt: skip
    sealed.wait_doors(b.server, {(b.client_ip, "tcp", PROTECTED)})
    assert wait_until(lambda: answers(net, both) == [True, True], 5.0)
    assert sealed.stop(daemon_a) == Summary(packets=32, accepted=2, refused=0, ignored=0)
    assert sealed.stop(daemon_b) == Summary(packets=16 + 19 + 19 + WAKER_SYNS + 16,
                                            accepted=2, refused=3, ignored=0)  # fmt: skip


# ---------------------------------------------------------------------- 3. refused


@requires_root
def test_every_single_bit_flip_opens_nothing(net: Net, gate: Start) -> None:
    """A knock made by ``aioknock run -client 198.18.0.1 -test`` (not sent; the address
    carried: 19 SYNs) and each of its 285 single-bit variants (15 bits of each port)
    sent from the client's other addresses to a daemon with ``allow_nat = yes``, so
    that only the tag stands in the way. A flipped data bit (11 per SYN) is refused by
    the tag; a flipped label bit (4 per SYN) puts a SYN out of place: in the first 16,
    the knock is incomplete (ignored), in the last 3 the first 16 SYNs fail the tag as
    a 16-SYN knock. Each variant from its own source in a batch of 19, each batch judged
    by a new recognizer (reload), so that each verdict is a line, checked against its
    variant. No door opens for the knock's address; then the knock itself opens it."""
    a = net.a
    daemon = gate(knock_timeout=FLIP_TIMEOUT, allow_nat="yes")
    (result,) = knock(net, *a_args(net, "-client", a.client_ip, "-test"), a.server_ip)
    ports = ports_of(result)
    assert len(ports) == 19
    assert codec(net.a_key, A_ID).decode(ports).address == a.client_ip
    variants = [(pos, bit) for pos in range(len(ports)) for bit in range(DATA_BITS + 4)]
    assert len(variants) == 19 * 15 and DATA_BITS + 4 == 15 and LABELS == 16
    per_batch = 19
    sources = EXTRA[:per_batch]
    wrong: list[tuple[int, int, Verdict]] = []
    for first in range(0, len(variants), per_batch):
        batch = variants[first : first + per_batch]
        if first:
            reload(daemon)
        mark = len(daemon.stderr)
        pairs = zip(sources, batch, strict=True)
        sent = [Knock(src, a.server_ip, flipped(ports, *v)) for src, v in pairs]
        net.send(*sent, waker(net))
        lines = {v.source: v for v in woke(lines_after(daemon, mark, per_batch + 1), WAKE_A)}
        assert sorted(lines) == sorted(sources), daemon.stderr[mark:]
        for src, (pos, bit) in zip(sources, batch, strict=True):
            line = lines[src]
            if bit < DATA_BITS:
                want = ("refused", re.escape(TAG_FAILED.format(19)))
            elif pos < 16:
                want = ("ignored", re.escape(INCOMPLETE.format(19)) + ", .*")
            else:
                want = ("refused", re.escape(TAG_FAILED.format(16)))
            if line.kind != want[0] or not re.fullmatch(want[1], line.reason):
                wrong.append((pos, bit, line))
        waked = {(WAKE_A, "tcp", PROTECTED)}
        assert sealed.wait_doors(a.server, waked) == waked, daemon.stderr[mark:]
    assert wrong == []
    mark = len(daemon.stderr)
    net.send(Knock(EXTRA[0], a.server_ip, ports))
    (line,) = lines_after(daemon, mark, 1)
    assert line == Verdict(
        "accepted", EXTRA[0], f"opening tcp/22 for {a.client_ip} for {DURATION} s"
    ), line
    sealed.wait_doors(a.server, {(a.client_ip, "tcp", PROTECTED)})
    batches = len(variants) // per_batch
    labels_late = 3 * 4
    assert sealed.stop(daemon) == Summary(
        packets=(len(variants) + 1) * 19 + batches * WAKER_SYNS, accepted=1 + batches,
        refused=19 * 11 + labels_late, ignored=16 * 4,
    )  # fmt: skip


@requires_root
def test_replays_are_refused(net: Net, gate: Start) -> None:
    """Two knocks ``aioknock run`` sent and the daemon accepted, replayed from the client
    namespace: the default knock (for its source, and bound to it) from its source is
    refused as a replay; from another address, and over IPv6, it is no knock at all (the
    tag binds the source). The knock that carries its address (bound to no source) is
    refused as a replay from another address. And a knock taken off the path before
    the daemon saw it (made by ``-test``, never sent) opens nothing from another
    address, then opens from its own. No door for any other address."""
    a = net.a
    daemon = gate()
    (auto,), (taken,) = knocks(net, a_args(net, a.server_ip), a_args(net, "-test", a.server_ip))
    (carried,) = knock(net, *a_args(net, "-client", a.client_ip, "-port", str(OTHER)),
                       a.server_ip)  # fmt: skip
    assert [len(ports_of(k)) for k in (auto, taken, carried)] == [16, 16, 19]
    lines = lines_after(daemon, 0, 2)
    assert [v.reason for v in lines] == [
        f"opening tcp/{p} for {a.client_ip} for {DURATION} s" for p in (PROTECTED, OTHER)
    ], lines
    mark = len(daemon.stderr)
    judged = [Knock(a.client_ip, a.server_ip, ports_of(auto)),
              Knock(EXTRA[1], a.server_ip, ports_of(carried))]  # fmt: skip
    unbound = [Knock(EXTRA[0], a.server_ip, ports_of(auto)),
               Knock(a.client_ip6, a.server_ip6, ports_of(auto)),
               Knock(EXTRA[2], a.server_ip, ports_of(taken))]  # fmt: skip
    net.send(*judged, *unbound, waker(net))
    lines = woke(lines_after(daemon, mark, len(judged) + len(unbound) + 1), WAKE_A)
    assert lines[:2] == [Verdict("refused", k.src, REPLAYED) for k in judged], lines
    assert sorted(lines[2:]) == sorted(
        Verdict("refused", k.src, TAG_FAILED.format(16)) for k in unbound
    ), lines
    opened = {(a.client_ip, "tcp", PROTECTED), (a.client_ip, "tcp", OTHER)}
    waked = {(WAKE_A, "tcp", PROTECTED)}
    assert sealed.wait_doors(a.server, waked) - opened == waked
    mark = len(daemon.stderr)
    net.send(Knock(a.client_ip, a.server_ip, ports_of(taken)))
    assert lines_after(daemon, mark, 1)[0].kind == "accepted", daemon.stderr[mark:]
    assert sealed.stop(daemon) == Summary(packets=16 + 19 + (16 + 19) + 3 * 16 + WAKER_SYNS + 16,
                                          accepted=4, refused=5, ignored=0)  # fmt: skip


@requires_root
def test_stale_and_future_knocks_are_refused(net: Net, gate: Start) -> None:
    """Knocks made by the client's ``plan_sealed`` 600 s in the past and in the future
    (time_tolerance is 120 s): refused by their age; one made now opens."""
    a = net.a
    daemon = gate()
    settings = client_settings(net.a_key, A_ID, a.client_ip)
    made = codec(net.a_key, A_ID)

    def ports_at(offset: float) -> list[int]:
        wire = plan_sealed(settings, a.server_ip, now=time.time() + offset)
        assert made.open(wire).port == PROTECTED
        return settings.sealed_for(a.server_ip).ports(wire)

    mark = len(daemon.stderr)
    net.send(
        Knock(a.client_ip, a.server_ip, ports_at(-600)),
        Knock(a.client_ip, a.server_ip, ports_at(600)),
    )
    stale, future = lines_after(daemon, mark, 2)
    tolerance = r" s ago: outside time_tolerance \(120 s\)"
    assert stale.kind == "refused" and re.fullmatch(r"sealed knock made \+60[01]" + tolerance,
                                                    stale.reason), stale  # fmt: skip
    assert future.kind == "refused" and re.fullmatch(r"sealed knock made -(599|600)" + tolerance,
                                                     future.reason), future  # fmt: skip
    assert sealed.doors(a.server) == set()
    net.send(Knock(a.client_ip, a.server_ip, ports_at(0)))
    assert lines_after(daemon, mark, 3)[2].kind == "accepted", daemon.stderr
    assert sealed.stop(daemon) == Summary(packets=3 * 19, accepted=1, refused=2, ignored=0)


@requires_root
def test_replay_file_refuses_a_knock_used_before_a_restart(
    net: Net, gate: Start, tmp_path: Path
) -> None:
    """A knock accepted, the daemon restarted with the same ``replay_file``: the same
    SYNs are refused as a replay. The control: a daemon without the file takes them."""
    a = net.a
    replay = tmp_path / "replay"
    first = gate(replay_file=str(replay))
    (result,) = knock(net, *a_args(net), a.server_ip)
    first.wait_log(r"accepted knock from 198\.18\.0\.1 \(sealed\)")
    assert sealed.stop(first) == Summary(packets=16, accepted=1, refused=0, ignored=0)
    assert replay.stat().st_size > 0
    again = Knock(a.client_ip, a.server_ip, ports_of(result))

    second = gate(replay_file=str(replay), fresh=False)
    net.send(again)
    assert lines_after(second, 0, 1) == [Verdict("refused", a.client_ip, REPLAYED)]
    assert sealed.stop(second) == Summary(packets=16, accepted=0, refused=1, ignored=0)

    forgetful = gate()  # memory only: what replay_file is for
    net.send(again)
    (line,) = lines_after(forgetful, 0, 1)
    assert line.kind == "accepted", line
    assert sealed.stop(forgetful) == Summary(packets=16, accepted=1, refused=0, ignored=0)


# ------------------------------------------------------------------------ 4. noise


def with_strays(ports: list[int], count: int, rng: random.Random, *, far: bool = False
                ) -> list[int]:  # fmt: skip
    """``ports`` with ``count`` SYNs to other span ports inserted at random places inside
    the knock (after its first SYN, before its last). ``far``: each stray carries the
    label of the position 8 away from where it sits, so that no arrangement can use it."""
    out = list(ports)
    for place in sorted(rng.choices(range(1, len(ports)), k=count), reverse=True):
        while True:
            port = rng.randrange(SPAN_START, SPAN_START + SPAN_SIZE)
            if far:
                label = (place + 8) % LABELS
                port = SPAN_START + (label << DATA_BITS | (port - SPAN_START) % (1 << DATA_BITS))
            if port not in out:
                break
        out.insert(place, port)
    return out


@requires_root
def test_noise_two_strays_are_found_three_are_refused(net: Net, gate: Start) -> None:
    """Default knocks (16 SYNs) made by ``aioknock run -test`` in the client namespace,
    with stray SYNs to random span ports from the client's own address at random places
    inside each: 1 and 2 strays (three knocks each) are found and open; 3 and 4 are
    refused, each with its line (3 strays that no arrangement can use: the exact
    reason)."""
    a = net.a
    daemon = gate(knock_timeout="0.5")
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    made = iter(ports_of(r) for r in knock(net, *a_args(net, "-test"), *[a.server_ip] * 9))

    def fresh() -> list[int]:
        ports = next(made)
        assert len(ports) == 16
        return ports

    found = [with_strays(fresh(), n, rng) for n in (1, 1, 1, 2, 2, 2)]
    mark = len(daemon.stderr)
    net.send(*(Knock(a.client_ip, a.server_ip, p) for p in found))
    lines = lines_after(daemon, mark, len(found))
    assert [v.kind for v in lines] == ["accepted"] * len(found), (seed, found, lines)
    door = {(a.client_ip, "tcp", PROTECTED)}
    assert sealed.wait_doors(a.server, door) == door

    need = r"a sealed knock of 16 SYNs would need {} stray SYNs among its own \(at most 2 are " \
           r"searched\)"  # fmt: skip
    refused = [
        (with_strays(fresh(), 3, rng, far=True), need.format(3)),
        (with_strays(fresh(), 3, rng), need.format(r"\d") + r"|no sealed knock among the last "
         r"\d+ SYNs \(tag did not verify\)"),
        (with_strays(fresh(), 4, rng), need.format(r"\d") + r"|no sealed knock among the last "
         r"\d+ SYNs \(tag did not verify\)"),
    ]  # fmt: skip
    for i, (noisy, reason) in enumerate(refused):
        if i:
            reload(daemon)
        mark = len(daemon.stderr)
        net.send(Knock(a.client_ip, a.server_ip, noisy), waker(net))
        (line,) = woke(lines_after(daemon, mark, 2), WAKE_A)
        assert line.kind == "refused" and re.fullmatch(reason, line.reason), (seed, noisy, line)
    assert sealed.stop(daemon) == Summary(packets=6 * 16 + 9 + 3 * 16 + 10 + 3 * WAKER_SYNS,
                                          accepted=6 + 3, refused=3, ignored=0)  # fmt: skip
