"""fwknop-compatible single-packet authorization against the real fwknop 2.6.10 (root).

A client and a server namespace (``netns_pair``); in the server, a service on tcp/22 and
udp/53 behind the namespace's own firewall, which drops both unless a door opens them,
so "connects" is a real check (``helpers/fwknop.py``).

* The harness itself: the real ``fwknop`` opens the real ``fwknopd`` (base64 keys and
  passphrases, from the command line and from an rc file, HMAC SHA-256 and SHA-512, one
  and two ports); fwknopd closes again after FW_ACCESS_TIMEOUT; it refuses what it
  should; 20 fwknopd, one per address, each open only for its own packets.
* ``aioknock run -protocol spa`` opens fwknopd the same ways, also through
  ``--fwknoprc -n`` (and refuses an rc line that fwknop would cut at a blank), and a
  fleet of 20 fwknopd with ``--hosts --json``.
* The real ``fwknop`` opens ``aioknock daemon`` reading the same access.conf (nftables),
  which closes after FW_ACCESS_TIMEOUT and refuses, each with its log line, a replay,
  flipped characters, a wrong HMAC key, a stale packet, an allow address that is not the
  source (REQUIRE_SOURCE_ADDRESS) and a port outside OPEN_PORTS.

Safety: packets go only to 198.18.0.0/15 inside the namespaces made here; iptables, nft
and fwknopd run only inside them (``ip netns exec``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fwknop
from helpers.daemons import Daemon, daemon_conf, daemon_env
from helpers.fwknop import Fwknopd, Keys, Rule, Service, Stanza
from helpers.netns import (
    CONNECT,
    LISTENER,
    WAIT_LIMIT,
    NetnsPair,
    check_closing,
    in_ci,
    requires_root,
    watch_closing,
)

PY = sys.executable
GUARDED = ("tcp/22", "udp/53")  # the service's ports, dropped until a door opens them
FLEET = [f"198.18.0.{n}" for n in range(2, 22)]  # 20 server addresses
PASSPHRASES = {"key": "rijndael-passphrase", "hmac_key": "hmac-passphrase"}
Fleet = tuple[Keys, dict[str, Fwknopd]]  # the keys, and the fwknopd of each address
CLOSED_PROBE = 0.3  # seconds to wait for an answer that must not come (veth RTT: µs)

MISSING = "fwknop and fwknopd not installed (Debian: fwknop-client fwknop-server)"


@pytest.fixture(autouse=True)
def fwknop_installed() -> None:
    """Skipped without fwknop; failed instead under ``CI=true``, where it must be there."""
    if not fwknop.installed():
        if in_ci():
            pytest.fail(f"{MISSING} although CI=true", pytrace=False)
        pytest.skip(MISSING)


def keys_of(kind: str, digest: str) -> Keys:
    """Fresh base64 keys, or the fixed passphrases (rc-file safe: no blanks)."""
    if kind == "base64":
        return Keys.generate(digest)
    return Keys(**PASSPHRASES, hmac_digest_type=digest)


# (how the keys are given, HMAC digest, ports requested); the stanza allows both ports.
CASES = [
    pytest.param("base64", "sha256", ("tcp/22",), id="base64-sha256-one-port"),
    pytest.param("base64", "sha512", GUARDED, id="base64-sha512-two-ports"),
    pytest.param("passphrase", "sha256", GUARDED, id="passphrase-sha256-two-ports"),
    pytest.param("passphrase", "sha512", ("tcp/22",), id="passphrase-sha512-one-port"),
]


@pytest.fixture
def service(pair: NetnsPair) -> Service:
    """The guarded service, behind iptables (fwknopd's firewall)."""
    return Service(pair, GUARDED).start()


def closed(pair: NetnsPair) -> bool:
    return not any(fwknop.reaches(pair, GUARDED, CLOSED_PROBE))


def assert_open_for(pair: NetnsPair, requested: tuple[str, ...]) -> None:
    """The requested ports answer (soon); the other guarded ones still do not."""
    want = [a in requested for a in GUARDED]
    got: list[bool] = []

    def check() -> bool:
        nonlocal got
        got = fwknop.reaches(pair, GUARDED, CLOSED_PROBE)
        return got == want

    assert fwknop.wait_until(check, 10.0, 0.05), f"{dict(zip(GUARDED, got, strict=True))}"


def rules_for(
    client: str, requested: tuple[str, ...], dst: str = "0.0.0.0"
) -> set[tuple[str, ...]]:
    return {(client, dst, *a.split("/")) for a in requested}


def rule_set(rules: list[Rule]) -> set[tuple[str, ...]]:
    return {(r.source, r.destination, r.proto, str(r.port)) for r in rules}


def wait_rules(server: Fwknopd, want: set[tuple[str, ...]]) -> list[Rule]:
    return server.wait_rules(lambda rules: rule_set(rules) == want, WAIT_LIMIT)


# ------------------------------------------------------ stage 1: fwknop -> fwknopd


@requires_root
@pytest.mark.parametrize(("kind", "digest", "requested"), CASES)
def test_fwknop_opens_fwknopd(
    pair: NetnsPair, service: Service, tmp_path: Path, kind: str, digest: str,
    requested: tuple[str, ...],
) -> None:  # fmt: skip
    """The harness's base: closed before; the real client's packet makes fwknopd add one
    rule per requested port for the client, and exactly those ports answer. Passphrases
    go through an rc file (the usual way), base64 keys on the command line."""
    keys = keys_of(kind, digest)
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [Stanza(keys, open_ports=GUARDED)])
    assert closed(pair), "the service answered before any SPA packet"
    assert server.rules() == []
    if kind == "passphrase":
        rc = fwknop.write_rc(tmp_path / "fwknoprc", "srv", pair.server_ip, requested, keys,
                             allow_ip=pair.client_ip)  # fmt: skip
        fwknop.run_fwknop(pair, tmp_path, ["--rc-file", str(rc), "-n", "srv"])
    else:
        args = fwknop.fwknop_cmd(pair.server_ip, requested, keys, pair.client_ip)
        fwknop.run_fwknop(pair, tmp_path, args)
    server.wait_log(r"Added access rule to FWKNOP_INPUT for 198\.18\.0\.1 -> 0\.0\.0\.0/0 "
                    + re.escape(",".join(requested)))  # fmt: skip
    wait_rules(server, rules_for(pair.client_ip, requested))
    assert_open_for(pair, requested)
    listing = server.fw_list()
    assert "198.18.0.1" in listing and "dpt:22" in listing, listing
    assert server.stop() == 0, server.log
    left = pair.run(pair.server, ["iptables", "-S"]).stdout
    assert "FWKNOP" not in left, f"fwknopd left its chain or jump behind: {left}"


@requires_root
def test_fwknop_passphrase_with_blanks_on_the_command_line(
    pair: NetnsPair, service: Service, tmp_path: Path
) -> None:
    """fwknopd's access.conf keeps a passphrase's blanks; so does ``--key-rijndael``
    (an rc file could not: its reader stops at the first blank)."""
    keys = Keys(key="correct horse battery staple", hmac_key="hmac with blanks")
    with pytest.raises(ValueError, match="cuts"):
        keys.rc_lines()
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [Stanza(keys)])
    fwknop.run_fwknop(pair, tmp_path, fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys,
                                                        pair.client_ip))  # fmt: skip
    wait_rules(server, rules_for(pair.client_ip, ("tcp/22",)))
    assert_open_for(pair, ("tcp/22",))


@requires_root
def test_fwknopd_closes_after_fw_access_timeout(
    pair: NetnsPair, service: Service, tmp_path: Path
) -> None:
    """The rule goes and the port closes again once FW_ACCESS_TIMEOUT (4 s) passed."""
    keys = Keys.generate()
    timeout = 4  # fwknopd's whole-second expiry leaves 3 to 4 s to see the door open
    stanza = Stanza(keys, open_ports=GUARDED, fw_access_timeout=timeout)
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [stanza])
    sent = time.time()
    fwknop.run_fwknop(pair, tmp_path, fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys,
                                                        pair.client_ip))  # fmt: skip
    (rule,) = wait_rules(server, rules_for(pair.client_ip, ("tcp/22",)))
    # Stamped with fwknopd's whole-second clock when the packet came, plus the timeout.
    assert int(sent) + timeout <= rule.expires <= time.time() + timeout, (sent, rule)
    assert_open_for(pair, ("tcp/22",))
    closing = watch_closing(lambda: not closed(pair), timeout + 10.0)
    expires = rule.expires - (time.time() - time.monotonic())  # on the monotonic clock
    assert closing.closed is not None, server.log
    # Removed once its second came (fwknopd's clock reads it), at most 2 s later (its
    # 10 ms loop, then an iptables run).
    assert closing.closed > expires, f"closed {expires - closing.closed:.2f} s early"
    assert closing.last_open is None or closing.last_open < expires + 2.0, server.log
    server.wait_log(r"Removed rule 1 from FWKNOP_INPUT with expire time of \d+")
    assert server.rules() == []


@requires_root
def test_fwknopd_refuses(pair: NetnsPair, service: Service, tmp_path: Path) -> None:
    """fwknopd refuses, each with its log line, a wrong HMAC key, a stale packet, a port
    outside OPEN_PORTS, ``-s`` under REQUIRE_SOURCE_ADDRESS and a replay; the door stays
    shut until a good packet comes. Also shows what REQUIRE_SOURCE_ADDRESS does not
    refuse: an allow address that is not the packet's source."""
    keys = Keys.generate()
    stanza = Stanza(keys, require_source_address=True)
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [stanza])
    good = fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys, pair.client_ip)
    wrong = Keys(keys.key_base64, Keys.generate().hmac_key_base64)
    refusals = [
        (fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), wrong, pair.client_ip),
         r"FKO_ERROR_INVALID_DATA_HMAC_COMPAREFAIL"),
        ([*good, "--time-offset-minus", "5m"], r"SPA data time difference is too great"),
        (fwknop.fwknop_cmd(pair.server_ip, ("tcp/23",), keys, pair.client_ip),
         r"One or more requested protocol/ports was denied per access\.conf"),
        (fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys, "source"),
         r"Got 0\.0\.0\.0 when valid source IP was required"),
    ]  # fmt: skip
    for args, line in refusals:
        mark = len(server.log)
        fwknop.run_fwknop(pair, tmp_path, args)
        server.wait_log(r"\[198\.18\.0\.1\] \(stanza #1\) [^\n]*" + line, after=mark)
    assert server.rules() == [] and closed(pair), server.log
    packet = fwknop.build_packet(pair, tmp_path, good)
    fwknop.send_datagrams(pair, [packet])
    wait_rules(server, rules_for(pair.client_ip, ("tcp/22",)))
    mark = len(server.log)
    fwknop.send_datagrams(pair, [packet])
    server.wait_log(r"Replay detected from source IP: 198\.18\.0\.1", after=mark)
    elsewhere = fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys, "198.18.0.9")
    fwknop.run_fwknop(pair, tmp_path, elsewhere)
    wait_rules(
        server, rules_for(pair.client_ip, ("tcp/22",)) | rules_for("198.18.0.9", ("tcp/22",))
    )


@pytest.fixture
def fleet(pair: NetnsPair, service: Service, tmp_path: Path) -> Iterator[Fleet]:
    """20 server addresses, each guarded by its own fwknopd: a capture filter on its
    address, a chain of its own, rules naming the address (ENABLE_DESTINATION_RULE), so
    a port opens on an address only when that address's fwknopd accepted a packet.
    All are told to stop at once at the end (each flushes its chain: 0.1 s)."""
    keys = Keys.generate()
    for addr in FLEET[1:]:
        pair.run(pair.server, ["ip", "addr", "add", f"{addr}/24", "dev", pair.server_if])
    servers = {}
    for n, addr in enumerate(FLEET):
        files = fwknop.write_server_files(
            tmp_path / f"srv-{addr}", pair.server_if, [Stanza(keys)], chain=f"FWKNOP_IN_{n}",
            pcap_filter=f"udp dst port {fwknop.SPA_PORT} and dst host {addr}",
            destination_rule=True,
        )  # fmt: skip
        # One after the other: fwknopd probes iptables' comment match as it starts,
        # and two probing at once make one of them exit ("Could not use the 'comment'
        # match").
        servers[addr] = Fwknopd(pair, files).wait_ready()
    try:
        yield keys, servers
    finally:
        for server in servers.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.stop()


def fleet_answers(pair: NetnsPair) -> dict[str, bool]:
    answers = fwknop.probe(pair, [(a, 22, "tcp") for a in FLEET], CLOSED_PROBE)
    return dict(zip(FLEET, answers, strict=True))


def assert_fleet_open(pair: NetnsPair, servers: dict[str, Fwknopd], opened: set[str]) -> None:
    """Rules for the client on exactly the ``opened`` addresses, and only those answer."""
    for addr, server in servers.items():
        want = rules_for(pair.client_ip, ("tcp/22",), addr) if addr in opened else set()
        if want:
            wait_rules(server, want)
        else:
            assert server.rules() == [], (addr, server.log)
    assert fwknop.wait_until(
        lambda: fleet_answers(pair) == {a: a in opened for a in FLEET}, 3.0, 0.05
    ), fleet_answers(pair)


@requires_root
def test_fwknop_fleet_each_fwknopd_guards_its_address(
    pair: NetnsPair, fleet: Fleet, tmp_path: Path
) -> None:
    """The fleet harness is sound: packets to every other address open exactly those."""
    keys, servers = fleet
    assert not any(fleet_answers(pair).values())
    chosen = set(FLEET[::2])
    for addr in sorted(chosen):
        args = fwknop.fwknop_cmd(addr, ("tcp/22",), keys, pair.client_ip)
        fwknop.run_fwknop(pair, tmp_path, args)
    assert_fleet_open(pair, servers, chosen)


# --------------------------------------------------- stage 2: aioknock -> fwknopd


def aioknock_run(
    pair: NetnsPair, tmp_path: Path, *args: str, status: int = 0
) -> subprocess.CompletedProcess[str]:
    """``python -m aioknock run -protocol spa ARGS`` in the client namespace, with an
    empty configuration file and none of the caller's AIOKNOCK_* settings; it must exit
    with ``status``."""
    empty = tmp_path / "empty.conf"
    empty.touch()
    cmd = [PY, "-m", "aioknock", "run", "-conf", str(empty), "-protocol", "spa", *args]
    res = subprocess.run(
        ["ip", "netns", "exec", pair.client, *cmd], capture_output=True, text=True,
        timeout=30, env=daemon_env(tmp_path), stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert res.returncode == status, f"{cmd}\nexit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    return res


def aioknock_opens(
    pair: NetnsPair, tmp_path: Path, keys: Keys, requested: tuple[str, ...], allow_ip: str
) -> None:
    """Closed before; after ``aioknock run`` fwknopd holds the same rules, and the same
    ports answer, as after the real client's packet (test_fwknop_opens_fwknopd)."""
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [Stanza(keys, open_ports=GUARDED)])
    assert closed(pair)
    aioknock_run(pair, tmp_path, "-access", ",".join(requested), "-allow_ip", allow_ip,
                 *keys.aioknock_args(), pair.server_ip)  # fmt: skip
    wait_rules(server, rules_for(pair.client_ip, requested))
    assert_open_for(pair, requested)


@requires_root
@pytest.mark.parametrize(("kind", "digest", "requested"), CASES)
def test_aioknock_opens_fwknopd(
    pair: NetnsPair, service: Service, tmp_path: Path, kind: str, digest: str,
    requested: tuple[str, ...],
) -> None:  # fmt: skip
    """aioknock's packet, keys and ports on its command line, passes fwknopd's checks."""
    aioknock_opens(pair, tmp_path, keys_of(kind, digest), requested, "auto")


@requires_root
@pytest.mark.parametrize("allow_ip", ["198.18.0.1", "source"])
def test_aioknock_allow_ip_opens_fwknopd(
    pair: NetnsPair, service: Service, tmp_path: Path, allow_ip: str
) -> None:
    """An explicit allow address; and ``source`` (0.0.0.0, fwknop -s), which fwknopd
    opens for the packet's source address."""
    aioknock_opens(pair, tmp_path, Keys.generate(), ("tcp/22",), allow_ip)


@requires_root
@pytest.mark.parametrize("kind", ["base64", "passphrase"])
def test_aioknock_fwknoprc_stanza_opens_fwknopd(
    pair: NetnsPair, service: Service, tmp_path: Path, kind: str
) -> None:
    """``--fwknoprc FILE -n STANZA`` reads the server, ports, allow address and keys from
    the same rc file that the real client reads (test_fwknop_opens_fwknopd)."""
    keys = keys_of(kind, "sha512")
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [Stanza(keys, open_ports=GUARDED)])
    rc = fwknop.write_rc(tmp_path / "fwknoprc", "srv", pair.server_ip, GUARDED, keys,
                         allow_ip=pair.client_ip)  # fmt: skip
    assert closed(pair)
    aioknock_run(pair, tmp_path, "--fwknoprc", str(rc), "-n", "srv")
    wait_rules(server, rules_for(pair.client_ip, GUARDED))
    assert_open_for(pair, GUARDED)


@requires_root
def test_rc_passphrase_with_a_blank(pair: NetnsPair, service: Service, tmp_path: Path) -> None:
    """``KEY rijndael xyzzy`` in a fwknoprc: the real client uses "rijndael" (and so
    opens a fwknopd whose key is that word); aioknock refuses the line instead of reading it
    otherwise than it looks, and sends nothing."""
    keys = Keys(key="rijndael", hmac_key="hmac")
    server = fwknop.start_fwknopd(pair, tmp_path / "srv", [Stanza(keys)])
    rc = tmp_path / "fwknoprc"
    rc.write_text(f"[srv]\nSPA_SERVER {pair.server_ip}\nACCESS tcp/22\nALLOW_IP {pair.client_ip}\n"
                  "KEY rijndael xyzzy\nHMAC_KEY hmac\nUSE_HMAC Y\n")  # fmt: skip
    rc.chmod(0o600)
    res = aioknock_run(pair, tmp_path, "--fwknoprc", str(rc), "-n", "srv", status=2)
    assert re.search(rf"{re.escape(str(rc))}:5: KEY: text after the value", res.stderr), res.stderr
    assert "xyzzy" not in res.stderr, "the error shows the key"
    fwknop.run_fwknop(pair, tmp_path, ["--rc-file", str(rc), "-n", "srv"])
    wait_rules(server, rules_for(pair.client_ip, ("tcp/22",)))
    assert server.log.count("SPA Packet from IP") == 1, server.log


@requires_root
def test_aioknock_fleet_opens_20_fwknopd(pair: NetnsPair, fleet: Fleet, tmp_path: Path) -> None:
    """One ``aioknock run --hosts FILE --json`` opens 20 addresses, each its own fwknopd."""
    keys, servers = fleet
    assert not any(fleet_answers(pair).values())
    hosts = tmp_path / "fleet"
    hosts.write_text("# the fleet\n" + "".join(f"{a}\n" for a in FLEET))
    res = aioknock_run(pair, tmp_path, "--hosts", str(hosts), "--json", "-access", "tcp/22",
                       "-allow_ip", "auto", *keys.aioknock_args())  # fmt: skip
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(results) == len(FLEET), res.stdout
    assert all(r["ok"] for r in results), res.stdout
    assert_fleet_open(pair, servers, set(FLEET))


# ---------------------------------------------- stage 2: fwknop -> aioknock daemon


def start_daemon(
    pair: NetnsPair, tmp_path: Path, stanzas: list[Stanza], guarded: tuple[str, ...] = GUARDED
) -> Daemon:
    """``aioknock daemon`` reading an fwknopd access.conf, nftables backend, behind the
    guarded service's nftables drops (``table inet filter`` with the two user rules)."""
    Service(pair, guarded, firewall="nftables").start()
    access = fwknop.write_access(tmp_path / "access.conf", stanzas)
    conf = daemon_conf(
        tmp_path, interface=pair.server_if, encoded="no", access_file=str(access),
        spa_server_port=str(fwknop.SPA_PORT), max_spa_packet_age="120",
        knock=None, portspan=None, encrypt=None, cipher=None, iv=None, key_file=None,
        duration=None,
    )  # fmt: skip
    daemon = Daemon(pair, tmp_path, conf)
    daemon.wait_log(r"capturing on veth-s")
    return daemon


def allow4(pair: NetnsPair) -> str:
    """The daemon's set of open IPv4 doors."""
    return pair.run(pair.server, ["nft", "list", "set", "inet", "aioknock", "allow4"]).stdout


def accepted(daemon: Daemon, after: int = 0) -> re.Match[str]:
    return daemon.wait_log(
        r"accepted knock from 198\.18\.0\.1 \(spa\): opening [^\n]*", after=after
    )


@requires_root
def test_fwknop_opens_aioknock_daemon_then_closes(pair: NetnsPair, tmp_path: Path) -> None:
    """The real client's packet opens both ports for FW_ACCESS_TIMEOUT (4 s), then not."""
    keys = Keys.generate("sha512")
    timeout = 4
    stanza = Stanza(keys, open_ports=GUARDED, fw_access_timeout=timeout)
    daemon = start_daemon(pair, tmp_path, [stanza])
    assert closed(pair)
    sent = time.monotonic()
    fwknop.run_fwknop(pair, tmp_path, fwknop.fwknop_cmd(pair.server_ip, GUARDED, keys,
                                                        pair.client_ip))  # fmt: skip
    for door in GUARDED:  # one line per door
        daemon.wait_log(rf"accepted knock from 198\.18\.0\.1 \(spa\): opening {door} for "
                        rf"198\.18\.0\.1 for {timeout} s")  # fmt: skip
    wanted = ["198.18.0.1 . tcp . 22", "198.18.0.1 . udp . 53"]
    assert fwknop.wait_until(lambda: all(e in allow4(pair) for e in wanted), WAIT_LIMIT)
    seen = time.monotonic()
    assert_open_for(pair, GUARDED)
    closing = watch_closing(lambda: not closed(pair), timeout + 10.0)
    check_closing(closing, timeout, added_after=sent, added_by=seen)
    assert daemon.terminate() == 0, daemon.stderr
    assert re.search(r"stopped: \d+ packets, 2 accepted, 0 refused", daemon.stderr), daemon.stderr


@requires_root
def test_fwknop_rc_passphrases_open_aioknock_daemon(pair: NetnsPair, tmp_path: Path) -> None:
    """Passphrase keys (KEY, HMAC_KEY) and HMAC SHA-256 too: the client's rc stanza and
    the daemon's access.conf written from the same keys, as for fwknopd."""
    keys = keys_of("passphrase", "sha256")
    daemon = start_daemon(pair, tmp_path, [Stanza(keys, open_ports=GUARDED)])
    assert closed(pair)
    rc = fwknop.write_rc(tmp_path / "fwknoprc", "srv", pair.server_ip, ("udp/53",), keys,
                         allow_ip=pair.client_ip)  # fmt: skip
    fwknop.run_fwknop(pair, tmp_path, ["--rc-file", str(rc), "-n", "srv"])
    daemon.wait_log(r"accepted knock from 198\.18\.0\.1 \(spa\): opening udp/53 for 198\.18\.0\.1")
    assert_open_for(pair, ("udp/53",))


def swap(packet: bytes, pos: int) -> bytes:
    """``packet`` with the base64 character at ``pos`` replaced by its neighbour (index
    xor 1): still base64, so the packet is judged, not ignored. In the last character
    only padding bits may change, which a comparison of decoded bytes would miss."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = bytearray(packet)
    out[pos] = alphabet[alphabet.index(out[pos]) ^ 1]
    return bytes(out)


def refused_lines(daemon: Daemon, after: int = 0) -> list[str]:
    return re.findall(r"refused knock from 198\.18\.0\.1: [^\n]*", daemon.stderr[after:])


@requires_root
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("replay", r"replayed SPA packet", id="replay"),
        pytest.param("flipped", r"HMAC does not verify", id="flipped"),
        pytest.param("wrong-hmac-key", r"HMAC does not verify", id="wrong-hmac-key"),
        pytest.param("stale", r"packet age \d+ s is over max_spa_packet_age", id="stale"),
        pytest.param("allow-not-source", r"allow address 198\.18\.0\.9 is not the source",
                     id="allow-not-source"),
        pytest.param("port", r"tcp/23 is not in OPEN_PORTS", id="port"),
    ],
)  # fmt: skip
def test_aioknock_daemon_refuses(pair: NetnsPair, tmp_path: Path, case: str, reason: str) -> None:
    """Each bad packet is refused, with its reason, and opens nothing; the good packet
    is accepted (before its replay, after the others), so the refusal was the packet's.
    Flipped: a character at the start, in the middle, and the last one (where only
    padding bits change) of the real client's datagram."""
    keys = Keys.generate()
    daemon = start_daemon(pair, tmp_path, [Stanza(keys, require_source_address=True)])
    good = fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys, pair.client_ip)
    packet = fwknop.build_packet(pair, tmp_path, good)
    if case == "replay":
        fwknop.send_datagrams(pair, [packet])
        mark = accepted(daemon).end()
        assert_open_for(pair, ("tcp/22",))
        fwknop.send_datagrams(pair, [packet])
    elif case == "flipped":
        mark = 0
        flipped = [swap(packet, pos) for pos in (0, len(packet) // 2, len(packet) - 1)]
        fwknop.send_datagrams(pair, flipped)
    else:
        mark = 0
        other = Keys(keys.key_base64, Keys.generate().hmac_key_base64)
        args = {
            "wrong-hmac-key": fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), other,
                                                pair.client_ip),
            "stale": [*good, "--time-offset-minus", "5m"],
            "allow-not-source": fwknop.fwknop_cmd(pair.server_ip, ("tcp/22",), keys,
                                                  "198.18.0.9"),
            "port": fwknop.fwknop_cmd(pair.server_ip, ("tcp/23",), keys, pair.client_ip),
        }[case]  # fmt: skip
        fwknop.run_fwknop(pair, tmp_path, args)
    count = 3 if case == "flipped" else 1
    assert fwknop.wait_until(lambda: len(refused_lines(daemon, mark)) >= count, WAIT_LIMIT), (
        daemon.stderr
    )
    lines = refused_lines(daemon, mark)
    assert len(lines) == count and all(re.search(reason, ln) for ln in lines), daemon.stderr
    if case == "replay":
        assert daemon.stderr.count("accepted knock") == 1, daemon.stderr
        return
    assert "accepted knock" not in daemon.stderr, daemon.stderr
    assert closed(pair), daemon.stderr
    fwknop.send_datagrams(pair, [packet])
    accepted(daemon)
    assert_open_for(pair, ("tcp/22",))


# ------------------------------------------------------ SPA over IPv6, both sides ours


def connects6(pair: NetnsPair, port: int, timeout: float = 0.5) -> bool:
    cmd = [PY, "-c", CONNECT, pair.server_ip6, str(port), str(timeout)]
    return pair.run(pair.client, cmd, timeout=timeout + 30).stdout.startswith("ok")


@requires_root
def test_spa_over_ipv6_opens_the_nftables_set(pair: NetnsPair, tmp_path: Path) -> None:
    """aioknock's client carries its IPv6 address (allow_ip auto) over IPv6; the daemon
    captures it and opens tcp/22 for that address in the nftables set for IPv6. (A
    stock fwknopd refuses an IPv6 allow address: fwknop 2.6.10 is IPv4 only.)"""
    keys = Keys.generate("sha256")
    daemon = start_daemon(pair, tmp_path, [Stanza(keys, open_ports=("tcp/2222",))], guarded=())
    pair.run(
        pair.server,
        ["nft", "add", "rule", "inet", "filter", "input", "tcp", "dport", "2222", "drop"],
    )  # after the user rules: the doors' mark passes
    pair.popen(pair.server, [PY, "-c", LISTENER, "2222", "30"], stdin=subprocess.DEVNULL)
    pair.wait_port(2222)
    assert not connects6(pair, 2222, CLOSED_PROBE)
    aioknock_run(pair, tmp_path, "-access", "tcp/2222", "-allow_ip", "auto",
                 *keys.aioknock_args(), pair.server_ip6)  # fmt: skip
    client6 = re.escape(pair.client_ip6)
    daemon.wait_log(rf"accepted knock from {client6} \(spa\): opening tcp/2222 for {client6}")
    assert fwknop.wait_until(lambda: connects6(pair, 2222), 10.0, 0.05), daemon.stderr
    ipv4 = pair.run(pair.client, [PY, "-c", CONNECT, pair.server_ip, "2222", str(CLOSED_PROBE)],
                    timeout=30)  # fmt: skip
    assert ipv4.stdout.startswith("fail"), "the door is for the IPv6 address only"
    elements = pair.run(pair.server, ["nft", "list", "set", "inet", "aioknock", "allow6"]).stdout
    assert pair.client_ip6 in elements and "tcp . 2222" in elements, elements
