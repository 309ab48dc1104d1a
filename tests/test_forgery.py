"""The cross-host forgery of the prototype's knock (issue 10), as an attacker on the path
would do it; pure: two daemons' engines and recognizers, a fake clock, no sockets (one
test runs a daemon on a log file, for the warning it logs at start).

A fleet shares one key. A knock ``protocol = knockclient`` sends to host A
(``encrypt = yes``, ``iv = yes``, Blowfish, the default fields CLIENT, PORT, RAND,
THISMINUTE, CHECKSUM) is ``RandomIV`` + an 8-byte IV + CBC blocks, and travels as the
destination ports of SYNs, in the clear. In CBC the first plaintext block is
``D(c0) xor IV``: flipping bits of the IV flips the same bits of that block, which holds
CLIENT (bytes 0-3), PORT (4-5), RAND (6) and THISMINUTE (7). CHECKSUM, in the second
block, is the sum of the others mod 256; the attacker keeps it by changing RAND by the
opposite amount. It knows CLIENT (the SYNs' source), PORT (22, or it tries a few) and
THISMINUTE (the time it saw the knock), not RAND: a change by ``d`` of an unknown byte
is one of at most 34 xor masks, so it sends the candidates, likeliest first, until
one opens. Nothing in the daemon can tell: the padding, the checksum and the ciphertext
after the IV (what the replay memory remembers) are all the genuine knock's.

These tests assert that the forgery SUCCEEDS against the prototype's knock: they
document its weakness, and must fail if someone changes it without saying so. What
the project offers instead is the sealed knock (``protocol = sealed``), authenticated
and bound to one server, and fwknop's SPA; the last tests make the same attack on a
sealed knock and assert that it FAILS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_daemon import daemon_settings, running

from aioknock.asyncio.daemon import make_recognizers
from aioknock.codec.ciphers import BLOCK, RANDOMIV_HEADER
from aioknock.codec.fields import time_values
from aioknock.codec.pipeline import Codec
from aioknock.codec.sealed import NONCE_BYTES, SealedCodec, SealedMessage
from aioknock.codec.sequence import Hit
from aioknock.config.loader import build_settings
from aioknock.config.settings import ClientSettings, DaemonSettings
from aioknock.daemon.encoded import EncodedKnocks, exposure_warning
from aioknock.daemon.engine import Engine, Open, Policy, Record
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Recognizer, Refusal, Verdict
from aioknock.daemon.replay import ReplayMemory
from aioknock.daemon.sealedknocks import SealedKnocks

FLEET_KEY = "one key for the whole fleet"
KNOCK = {"encrypt": True, "key": FLEET_KEY, "iv": True, "cipher": "Blowfish"}
CLIENT = "198.18.0.10"  # the admin's machine, which knocks host A
ATTACKER = "198.19.66.6"  # on the path between them; it also reaches host B
NOW = 1_764_000_030.0  # 30 s into a minute (UTC), so a second later is the same minute
STEP = 0.001  # seconds between two SYNs


def client_codec() -> Codec:
    settings = ClientSettings.of(protocol="knockclient", client=CLIENT, port=22, **KNOCK)
    assert settings.knock == ("CLIENT", "PORT", "RAND", "THISMINUTE", "CHECKSUM")
    return settings.codec


class Watched:
    """A recognizer whose verdicts the test keeps: the engine's view of a knock."""

    def __init__(self, inner: Recognizer) -> None:
        self.inner, self.name = inner, inner.name
        self.verdicts: list[Verdict] = []

    @property
    def sources(self) -> int:
        return self.inner.sources

    def wanted(self) -> list[Hit]:
        return list(self.inner.wanted())

    def receive(self, packet: Packet) -> list[Verdict]:
        verdicts = self.inner.receive(packet)
        self.verdicts += verdicts
        return verdicts

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def handle_timer(self, now: float) -> list[Verdict]:
        return self.inner.handle_timer(now)


def prototype(replays: ReplayMemory) -> Recognizer:
    """A daemon's encoded-knock recognizer, as aioknock daemon makes it (make_recognizers),
    with the fleet's key and the daemon's defaults."""
    s = DaemonSettings.of(**KNOCK)
    return EncodedKnocks(
        s.codec, knock_timeout=s.knock_timeout, max_sources=s.max_sources,
        time_tolerance=s.time_tolerance, allow_nat=s.allow_nat, replays=replays,
    )  # fmt: skip


@dataclass
class Host:
    """One daemon of the fleet: its engine and its recognizer (``make``: the prototype's
    knock unless told). Records of used knocks and firewall actions are taken as done
    at once."""

    make: Callable[[ReplayMemory], Recognizer] = prototype
    replays: ReplayMemory = field(default_factory=ReplayMemory)
    opened: list[tuple[str, int]] = field(default_factory=list)  # (address, port) of doors
    sport: Iterator[int] = field(default_factory=lambda: iter(range(40_000, 65_536)))
    engine: Engine = field(init=False)
    watched: Watched = field(init=False)

    def __post_init__(self) -> None:
        self.watched = Watched(self.make(self.replays))
        defaults = DaemonSettings()
        policy = Policy(defaults.duration, defaults.cooldown)
        self.engine = Engine(policy, [self.watched], self.replays)

    def restarted(self) -> Host:
        """The same host after a restart without ``replay_file``: its memory is gone."""
        return Host(self.make)

    def syns(self, src: str, ports: list[int], now: float) -> tuple[list[Grant], list[str]]:
        """The SYNs from ``src``, one every STEP seconds: the knocks granted, and the
        reasons of those refused."""
        self.watched.verdicts.clear()
        for i, port in enumerate(ports):
            self.engine.receive(Packet(now + i * STEP, src, port, "tcp", next(self.sport)))
            for action in self.engine.actions():
                if isinstance(action, Record):
                    self.engine.recorded(action)  # opens the door: the next actions
            for action in self.engine.actions():
                if isinstance(action, Open):
                    self.engine.action_done(action)
                    self.opened.append((action.door.address, action.door.port))
        verdicts = self.watched.verdicts
        grants = [v for v in verdicts if isinstance(v, Grant)]
        return grants, [v.reason for v in verdicts if isinstance(v, Refusal)]


def genuine_knock(now: float = NOW, port: int = 22, seed: int = 1) -> list[int]:
    """The ports of the knock the admin's client sends to A."""
    codec = client_codec()
    rng = random.Random(seed)
    inputs = codec.inputs(CLIENT, port, {}, rng.randrange(256))
    return codec.build(inputs, now, rng.randbytes).ports


# ------------------------------------------------------------------ the attacker


@dataclass(frozen=True)
class Guess:
    """What the attacker believes the first block holds, and what it wants there."""

    client: str = CLIENT
    port: int = 22
    minute: int = time_values(NOW)["THISMINUTE"]


def first_block(guess: Guess) -> bytes:
    """CLIENT, PORT, RAND, THISMINUTE: bytes 0-7 of the plaintext, RAND (unknown) as 0."""
    address = bytes(int(part) for part in guess.client.split("."))
    return address + guess.port.to_bytes(2, "big") + bytes([0, guess.minute])


def rand_masks(change: int) -> list[int]:
    """The xor masks that add ``change`` (mod 256) to an unknown byte, likeliest first:
    the attacker's candidates for RAND (34 at most, for any change)."""
    counts = Counter(r ^ ((r + change) % 256) for r in range(256))
    return [mask for mask, _ in counts.most_common()]


def forgeries(recorded: list[int], was: Guess, wanted: Guess) -> list[list[int]]:
    """The recorded knock rewritten through its IV, once per RAND candidate: the first
    block becomes ``wanted``'s while its byte sum (so CHECKSUM) stays the same."""
    codec = client_codec()
    payload = codec.span.decode(recorded, codec.payload_length)
    assert payload[:BLOCK] == RANDOMIV_HEADER  # the IV follows, in the clear
    old, new = first_block(was), first_block(wanted)
    change = (sum(old) - sum(new)) % 256  # what RAND must gain to keep the sum
    out: list[list[int]] = []
    for rand_mask in rand_masks(change):
        mask = bytearray(a ^ b for a, b in zip(old, new, strict=True))
        mask[6] = rand_mask
        iv = bytes(a ^ b for a, b in zip(payload[BLOCK : 2 * BLOCK], mask, strict=True))
        out.append(codec.span.encode(payload[:BLOCK] + iv + payload[2 * BLOCK :]))
    return out


def send_until_open(host: Host, candidates: list[list[int]], now: float) -> list[Grant]:
    """The candidates one after the other from the attacker's address; what opened."""
    grants: list[Grant] = []
    for i, ports in enumerate(candidates):
        got, _ = host.syns(ATTACKER, ports, now + i * len(ports) * STEP)
        grants += got
        if got:
            break
    return grants


# --------------------------------------------------------------------- the tests


def test_the_genuine_knock_opens_a_for_the_client_and_only_once() -> None:
    a = Host()
    knock = genuine_knock()
    grants, _ = a.syns(CLIENT, knock, NOW)
    assert [(g.address, g.ports) for g in grants] == [(CLIENT, ((22, "tcp"),))]
    assert a.opened == [(CLIENT, 22)]
    assert a.syns(CLIENT, knock, NOW + 1) == ([], ["replayed knock"])


def test_host_b_opens_for_the_attacker() -> None:
    """B never saw the genuine knock: its replay memory has nothing to say."""
    a, b = Host(), Host()
    knock = genuine_knock()
    a.syns(CLIENT, knock, NOW)
    candidates = forgeries(knock, Guess(), Guess(client=ATTACKER))
    assert 1 <= len(candidates) <= 34
    grants = send_until_open(b, candidates, NOW + 1)
    assert [(g.source, g.address, g.ports) for g in grants] == [
        (ATTACKER, ATTACKER, ((22, "tcp"),))
    ]
    assert b.opened == [(ATTACKER, 22)]
    # Sent as recorded from the attacker's address, it is refused (CLIENT is not the
    # source): the IV is what makes it the attacker's.
    c = Host()
    assert c.syns(ATTACKER, knock, NOW + 1)[1] == [
        f"CLIENT {CLIENT} is not the source {ATTACKER} (allow_nat = no)"
    ]


def test_the_forgery_asks_for_another_port() -> None:
    b = Host()
    knock = genuine_knock()
    grants = send_until_open(b, forgeries(knock, Guess(), Guess(ATTACKER, 3306)), NOW + 1)
    assert [(g.address, g.ports) for g in grants] == [(ATTACKER, ((3306, "tcp"),))]
    assert b.opened == [(ATTACKER, 3306)]


def test_the_forgery_revives_a_stale_knock() -> None:
    """A knock seen an hour ago is stale as it is, and fresh once THISMINUTE is
    rewritten to the minute the attacker sends it in."""
    b = Host()
    knock = genuine_knock()
    later = NOW + 3600
    assert b.syns(CLIENT, knock, later)[1] == ["THISMINUTE is outside time_tolerance"]
    fresh = Guess(ATTACKER, minute=time_values(later)["THISMINUTE"])
    grants = send_until_open(b, forgeries(knock, Guess(), fresh), later)
    assert [(g.address, g.ports) for g in grants] == [(ATTACKER, ((22, "tcp"),))]


def test_a_remembers_but_a_restart_without_replay_file_forgets() -> None:
    """A's own memory refuses the forgery (it remembers the ciphertext after the IV,
    which the forgery keeps); restarted without ``replay_file``, A opens for it too."""
    a = Host()
    knock = genuine_knock()
    assert a.syns(CLIENT, knock, NOW)[0]
    candidates = forgeries(knock, Guess(), Guess(client=ATTACKER))
    refused = [a.syns(ATTACKER, ports, NOW + 1 + i)[1] for i, ports in enumerate(candidates)]
    assert ["replayed knock"] in refused and a.opened == [(CLIENT, 22)]
    restarted = a.restarted()
    grants = send_until_open(restarted, candidates, NOW + 60)
    assert [(g.address, g.ports) for g in grants] == [(ATTACKER, ((22, "tcp"),))]


def test_the_genuine_knock_replayed_to_b_opens_b_for_the_client() -> None:
    """Unchanged, from the client's address (a SYN knock needs no answer, so the source
    can be spoofed): a knock made for A opens B, for the client."""
    a, b = Host(), Host()
    knock = genuine_knock()
    a.syns(CLIENT, knock, NOW)
    grants, _ = b.syns(CLIENT, knock, NOW + 1)
    assert [(g.address, g.ports) for g in grants] == [(CLIENT, ((22, "tcp"),))]


def test_at_most_34_candidates_whatever_the_change() -> None:
    assert max(len(rand_masks(change)) for change in range(256)) == 34
    assert rand_masks(0) == [0]


@pytest.mark.parametrize("seed", range(12))
def test_the_attacker_never_needs_more_than_34_knocks(seed: int) -> None:
    """Whatever RAND the client drew, one of the candidates carries it."""
    knock = genuine_knock(seed=seed)
    candidates = forgeries(knock, Guess(), Guess(ATTACKER, 3306))
    grants = send_until_open(Host(), candidates, NOW + 1)
    assert len(grants) == 1 and len(candidates) <= 34


# ------------------------------------------------------- what the daemon says at start


def warning_for(**settings: Any) -> str | None:
    daemon = DaemonSettings.of(**settings)
    return exposure_warning(make_recognizers(daemon, ReplayMemory()))


def test_the_daemon_warns_of_the_forgery_when_it_accepts_encrypted_prototype_knocks() -> None:
    message = warning_for(**KNOCK)
    assert message is not None and "\n" not in message
    assert message.startswith("prototype knocks (Blowfish, iv = yes) carry no integrity check")
    assert "accepted" not in message  # the word the log's readers look for
    assert "exposed to cross-host forgery" in message and "its IV rewritten" in message
    assert message.endswith("use protocol = sealed or SPA (access_file) wherever the clients "
                            "can be upgraded")  # fmt: skip
    zero_iv = warning_for(**{**KNOCK, "iv": False, "cipher": "CAST5"})
    assert zero_iv is not None and zero_iv.startswith(
        "prototype knocks (CAST5, iv = no) carry no integrity check"
    )
    assert "opens this one, for its client" in zero_iv


def test_no_warning_without_encrypted_prototype_knocks(tmp_path: Path) -> None:
    assert warning_for() is None  # unencrypted: there is no key to share
    sealed_daemon = sealed_settings("a.example", encrypt=True)
    assert exposure_warning(make_recognizers(sealed_daemon, ReplayMemory())) is None
    door = tmp_path / "doors.conf"
    door.write_text("encoded = no\nencrypt = yes\nkey = k\n<door ssh>\nsequence = 7000,8000\n"
                    "port = 22\n</door>\n")  # fmt: skip
    settings = build_settings(DaemonSettings, path=door, overrides={}, sending=False)
    assert exposure_warning(make_recognizers(settings, ReplayMemory())) is None
    assert exposure_warning([]) is None


async def test_the_daemon_logs_it_once_at_start(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioknock")
    async with running(daemon_settings(home)) as daemon:
        await asyncio.sleep(0.2)
        daemon.reload(daemon_settings(home, duration=5))
        await asyncio.sleep(0.2)
    said = [r for r in caplog.records if "cross-host forgery" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING]
    caplog.clear()
    async with running(daemon_settings(home, encrypt=False)):
        await asyncio.sleep(0.2)
    assert "cross-host forgery" not in caplog.text


# ------------------------------------------------- and against the sealed knock
#
# The same fleet, the same one key (the worst case: a fleet should derive a key per host,
# aioknock keygen --derive), A and B told apart only by their server_id. The sealed
# knock's ciphertext is a stream cipher's, as malleable as the IV above: the attacker can
# flip the very bits that hold the address, the port and the time. The tag is what
# refuses them, and it covers the server_id, so B refuses A's knock even unchanged.

SEALED_KEY = bytes(range(32))
NONCE = bytes.fromhex("0a0b0c0d0e0f10")
# Where the fields lie in a sealed knock for an IPv4 address: the nonce, then the
# ciphertext of byte 0, the timestamp (4 bytes), the port (2), the address (4), then
# the tag (codec/sealed.py).
AT_STAMP, AT_PORT, AT_ADDRESS = NONCE_BYTES + 1, NONCE_BYTES + 5, NONCE_BYTES + 7


def sealed_settings(server_id: str, **more: Any) -> DaemonSettings:
    """A daemon's ``protocol = sealed``, the fleet's one key as ``aioknock keygen`` writes it."""
    key = base64.b64encode(SEALED_KEY).decode()
    return DaemonSettings.of(protocol="sealed", key=key, server_id=server_id, **more)


def sealed(server_id: str, *, allow_nat: bool = False) -> Callable[[ReplayMemory], Recognizer]:
    """The sealed-knock recognizer aioknock daemon makes for ``server_id``."""
    settings = sealed_settings(server_id, allow_nat=allow_nat)

    def make(replays: ReplayMemory) -> Recognizer:
        (recognizer,) = make_recognizers(settings, replays)
        assert isinstance(recognizer, SealedKnocks)
        return recognizer

    return make


def sealed_wire(stamp: float = NOW, port: int = 22) -> bytes:
    """The wire bytes of the knock the admin's client sends to A: for CLIENT, port 22."""
    message = SealedMessage(int(stamp), port, address=CLIENT)
    return SealedCodec(SEALED_KEY, "a.example").seal(message, NONCE)


def sealed_ports(wire: bytes) -> list[int]:
    return SealedCodec(SEALED_KEY, "a.example").ports(wire)


def rewritten(wire: bytes, at: int, old: bytes, new: bytes) -> bytes:
    """``wire`` with the ciphertext of ``old`` at ``at`` turned into that of ``new``."""
    out = bytearray(wire)
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        out[at + i] ^= a ^ b
    return bytes(out)


def address_bytes(address: str) -> bytes:
    return bytes(int(part) for part in address.split("."))


def test_forgery_fails_against_sealed() -> None:
    """Issue 10, proof 4: every rewriting that opened B for the attacker above, and the
    knock itself sent to B, open nothing with sealed knocks."""
    wire = sealed_wire()
    a = Host(sealed("a.example"))
    grants, _ = a.syns(CLIENT, sealed_ports(wire), NOW)
    assert [(g.address, g.ports) for g in grants] == [(CLIENT, ((22, "tcp"),))]

    # Sent to B, unchanged, from the client's address: another server_id, no tag.
    b = Host(sealed("b.example"))
    assert b.syns(CLIENT, sealed_ports(wire), NOW + 1)[0] == []
    to_attacker = rewritten(wire, AT_ADDRESS, address_bytes(CLIENT), address_bytes(ATTACKER))
    other_port = rewritten(to_attacker, AT_PORT, bytes([0, 22]), (3306).to_bytes(2, "big"))
    forged = [to_attacker, other_port]
    # A stale knock, its timestamp rewritten to now: refused as it is, and rewritten.
    stale = sealed_wire(NOW - 3600)
    later = int(NOW).to_bytes(4, "big")
    forged.append(rewritten(stale, AT_STAMP, int(NOW - 3600).to_bytes(4, "big"), later))
    forged.append(rewritten(forged[-1], AT_ADDRESS, address_bytes(CLIENT),
                            address_bytes(ATTACKER)))  # fmt: skip
    for i, knock in enumerate(forged):
        for host in (Host(sealed("b.example")), a.restarted(), a):
            grants, refused = host.syns(ATTACKER, sealed_ports(knock), NOW + 2 + i)
            assert grants == [], (i, refused)
    assert a.opened == [(CLIENT, 22)] and b.opened == []
    _, refused = Host(sealed("a.example")).syns(CLIENT, sealed_ports(stale), NOW)
    assert refused == ["sealed knock made +3600 s ago: outside time_tolerance (120 s)"]


def test_no_single_bit_flip_of_a_sealed_knock_opens_anything() -> None:
    """Every bit of the knock, nonce and tag included, sent to A after a restart without
    replay_file (nothing remembered) and to B, each from its own address, with
    allow_nat = yes so that only the tag can refuse it: all 208 flips open nothing."""
    wire = sealed_wire()
    assert len(wire) == NONCE_BYTES + 11 + 8  # kind IPv4, no extras, a 64-bit tag
    hosts = [Host(sealed("a.example", allow_nat=True)), Host(sealed("b.example", allow_nat=True))]
    flips = [(byte, bit) for byte in range(len(wire)) for bit in range(8)]
    for n, (byte, bit) in enumerate(flips):
        knock = rewritten(wire, byte, b"\0", bytes([1 << bit]))
        src = f"198.18.{1 + n // 250}.{1 + n % 250}"
        for host in hosts:
            assert host.syns(src, sealed_ports(knock), NOW + n * 0.02)[0] == [], (byte, bit)
    recognizers = [host.watched.inner for host in hosts]
    assert all(isinstance(r, SealedKnocks) and r.tag_checks >= len(flips) for r in recognizers)
    grants, _ = hosts[0].syns(CLIENT, sealed_ports(wire), NOW + 5)  # the harness works
    assert len(grants) == 1 and all(not host.opened[1:] for host in hosts)


def test_what_a_restart_without_replay_file_still_lets_through_with_sealed_knocks() -> None:
    """The limit that stays (said, not hidden): after a restart that forgot it, the
    knock itself, unchanged, opens A again within time_tolerance, for the address it
    names only: the client's, not the attacker's. replay_file closes it."""
    wire = sealed_wire()
    a = Host(sealed("a.example"))
    assert a.syns(CLIENT, sealed_ports(wire), NOW)[0]
    assert a.syns(CLIENT, sealed_ports(wire), NOW + 5)[1] == ["replayed sealed knock"]
    refused = a.restarted().syns(ATTACKER, sealed_ports(wire), NOW + 5)[1]
    assert refused == [f"sealed knock for {CLIENT}, not the source {ATTACKER} (allow_nat = no)"]
    grants, _ = a.restarted().syns(CLIENT, sealed_ports(wire), NOW + 5)
    assert [(g.address, g.ports) for g in grants] == [(CLIENT, ((22, "tcp"),))]
