"""The sealed knock's recognizer (daemon/sealedknocks.py), on a fake clock: what opens,
what is refused and why, the noise search and its bound of K tag checks per SYN."""

from __future__ import annotations

import random
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioknock.codec.sealed import DATA_BITS, SealedCodec, SealedMessage, host_key
from aioknock.daemon import sealedknocks
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import PROBATION, Grant, Ignored, Recognizer, Refusal, Verdict
from aioknock.daemon.replay import ReplayMemory
from aioknock.daemon.sealedknocks import MAX_TAG_CHECKS, SealedKnocks

KEY = bytes(range(32))
SERVER = "host.example"
NOW = 1_764_000_000.0
SRC, SRC6, OTHER = "198.18.0.1", "2001:db8::1", "198.18.0.9"
TIMEOUT, TOLERANCE = 2.0, 30.0
K = MAX_TAG_CHECKS


@cache
def codec(key: bytes = KEY, server_id: str = SERVER) -> SealedCodec:
    return SealedCodec(key, server_id)


def recognizer(c: SealedCodec | None = None, **options: Any) -> SealedKnocks:
    config: dict[str, Any] = {"knock_timeout": TIMEOUT, "max_sources": 1000,
                              "time_tolerance": TOLERANCE, "allow_nat": False}  # fmt: skip
    config.update(options)
    return SealedKnocks(c or codec(), **config)


def knock(
    *, address: str | None = None, stamp: float = NOW, c: SealedCodec | None = None,
    nonce: bytes | None = None, source: str = SRC, **fields: Any,
) -> list[int]:  # fmt: skip
    """A knock's ports; one for the packet's source (no ``address``) is bound to ``source``."""
    msg = SealedMessage(int(stamp), 22, address=address, **fields)
    return (c or codec()).build(msg, nonce, source)


_SPORT = iter(range(10**9))


def feed(rec: Recognizer, ports: list[int], *, src: str = SRC, now: float = NOW,
         step: float = 0.005) -> list[Verdict]:  # fmt: skip
    """Each port as a SYN from its own source port (no two look like retransmissions)."""
    out: list[Verdict] = []
    for i, port in enumerate(ports):
        out += rec.receive(Packet(now + i * step, src, port, "tcp", 1024 + next(_SPORT) % 60000))
    return out


def grants(verdicts: list[Verdict]) -> list[Grant]:
    return [v for v in verdicts if isinstance(v, Grant)]


def refusals(verdicts: list[Verdict]) -> list[str]:
    return [v.reason for v in verdicts if isinstance(v, Refusal)]


def stray(label: int, rng: random.Random) -> int:
    return 32768 + (label << 11 | rng.randrange(2048))


# ------------------------------------------------------------------ what opens


def test_a_knock_opens_for_its_source() -> None:
    rec = recognizer()
    assert rec.wanted() == [(port, "tcp") for port in range(32768, 65536)]
    assert rec.get_timer() is None
    (grant,) = feed(rec, knock())
    assert isinstance(grant, Grant)
    assert (grant.source, grant.via, grant.address, grant.ports) == (SRC, "sealed", SRC,
                                                                    ((22, "tcp"),))  # fmt: skip
    assert len(grant.digest) == 16 and grant.digest in rec.replays
    assert rec.sources == 0 and rec.tag_checks == 1


def test_addresses_extra_ports_and_flags() -> None:
    rec = recognizer()
    (grant,) = grants(feed(rec, knock(address=SRC, extra_ports=(80,), flags=((3, 7),))))
    assert grant.address == SRC and grant.ports == ((22, "tcp"), (80, "tcp"))
    assert grant.flags == ((3, 7),)
    (grant,) = grants(feed(rec, knock(address=SRC6, proto="udp"), src=SRC6))
    assert grant.address == SRC6 and grant.ports == ((22, "udp"),)
    # A dual-stack capture names an IPv4 client as ::ffff:a.b.c.d: the same address.
    assert grants(feed(rec, knock(address=SRC), src=f"::ffff:{SRC}"))


def test_an_address_other_than_the_source_needs_allow_nat() -> None:
    verdicts = feed(recognizer(), knock(address="203.0.113.5"))
    assert refusals(verdicts) == [
        f"sealed knock for 203.0.113.5, not the source {SRC} (allow_nat = no)"
    ]
    (grant,) = grants(feed(recognizer(allow_nat=True), knock(address="203.0.113.5")))
    assert grant.address == "203.0.113.5" and grant.source == SRC


def test_a_longer_knock_passes_shorter_lengths_without_a_word() -> None:
    """An IPv6 knock (28 SYNs) is tried as shorter knocks on its way: no refusal."""
    rec = recognizer()
    verdicts = feed(rec, knock(address=SRC6), src=SRC6)
    assert [type(v) for v in verdicts] == [Grant] and rec.tag_checks > 1
    assert rec.handle_timer(NOW + 10 * TIMEOUT) == []


# ------------------------------------------------------------------ what is refused


def test_every_single_bit_flip_opens_nothing() -> None:
    opened = tried = 0
    for address in (None, SRC):
        ports = knock(address=address)
        for i in range(len(ports)):
            for bit in range(15):
                rec = recognizer()
                tried += 1
                altered = [*ports[:i], ports[i] ^ 1 << bit, *ports[i + 1 :]]
                opened += len(grants(feed(rec, altered)))
                assert rec.most_checks <= K
    assert tried == 15 * (16 + 19) and opened == 0


def test_a_knock_for_another_host_opens_nothing_and_is_said() -> None:
    master = bytes(range(50, 82))
    a = SealedCodec(host_key(master, "a.example"), "a.example")
    b = SealedCodec(host_key(master, "b.example"), "b.example")
    for_a = knock(c=a)
    assert grants(feed(recognizer(a), for_a))
    rec_b = recognizer(b)
    assert feed(rec_b, for_a) == []
    later = rec_b.handle_timer(NOW + 10 * TIMEOUT)
    assert refusals(later) == ["no sealed knock among the last 16 SYNs (tag did not verify)"]
    # The same key configured with another server_id: the same.
    assert not grants(feed(recognizer(SealedCodec(a.key, "b.example")), for_a))


@pytest.mark.parametrize("offset", [-TOLERANCE - 1, TOLERANCE + 1, -3600.0])
def test_a_stale_knock_is_refused(offset: float) -> None:
    rec = recognizer()
    (reason,) = refusals(feed(rec, knock(stamp=NOW + offset)))
    assert "outside time_tolerance (30 s)" in reason
    assert len(rec.replays) == 0
    assert grants(feed(rec, knock(stamp=NOW + TOLERANCE - 1)))


def test_a_replay_is_refused_from_any_source_and_after_a_reload() -> None:
    ports = knock()
    rec = recognizer()
    assert grants(feed(rec, ports))
    assert refusals(feed(rec, ports, now=NOW + 1)) == ["replayed sealed knock"]
    # A reload makes new recognizers with the same memory.
    again = recognizer(replays=rec.replays)
    assert refusals(feed(again, ports, now=NOW + 2)) == ["replayed sealed knock"]
    # A fresh knock from the same client still opens.
    assert grants(feed(again, knock(), now=NOW + 4))
    # One that names its address is not bound to a source: from another, a replay.
    named = knock(address=SRC)
    assert grants(feed(again, named, now=NOW + 5))
    assert refusals(feed(again, named, src=OTHER, now=NOW + 6)) == ["replayed sealed knock"]


def test_a_knock_for_its_source_is_no_knock_from_another() -> None:
    """Taken from the path before the daemon saw it whole (its last SYN held back) and
    sent from another address, a knock for "the packet's source" opens nothing: its tag
    binds the address it was made to come from."""
    ports = knock()
    rec = recognizer()
    assert not grants(feed(rec, ports[:-1]))  # the original, its last SYN lost
    stolen = feed(rec, ports, src=OTHER, now=NOW + 1)
    assert not grants(stolen)
    assert not grants(feed(rec, ports, src=SRC6, now=NOW + 2))
    assert rec.tag_checks >= 2 and len(rec.replays) == 0
    # The client's own retry (the same knock, from its source) still opens.
    assert grants(feed(rec, ports, now=NOW + 3))


def test_a_knock_forgotten_by_the_memory_is_stale_by_then() -> None:
    ports = knock()
    rec = recognizer()
    assert grants(feed(rec, ports))
    later = NOW + TOLERANCE + 1
    rec.replays.expire(later)
    assert len(rec.replays) == 0
    (reason,) = refusals(feed(rec, ports, now=later))
    assert "outside time_tolerance" in reason


def test_a_full_replay_memory_fails_closed() -> None:
    rec = recognizer(replays=ReplayMemory(limit=1))
    assert grants(feed(rec, knock()))
    assert refusals(feed(rec, knock(), now=NOW + 1)) == [
        "the replay memory is full of knocks within the age window"
    ]
    # Once the first knock is stale its digest may go: room again.
    assert grants(feed(rec, knock(stamp=NOW + 40), now=NOW + 40))


def test_a_knock_that_verifies_but_does_not_read_is_refused() -> None:
    c = codec()
    plaintext = bytes([0x40]) + int(NOW).to_bytes(4, "big") + (22).to_bytes(2, "big")
    ports = c.ports(c.seal_plaintext(plaintext, source=SRC))
    (reason,) = refusals(feed(recognizer(), ports))
    assert reason == "a sealed knock that verified: sealed knock version 2; this is version 1"


# ------------------------------------------------------------------ noise


@st.composite
def noisy(draw: st.DrawFn, strays: int) -> tuple[list[int], str, int]:
    """A knock (source, IPv4 or IPv6) with ``strays`` SYNs injected at random places
    (before it or among its SYNs, never after its last), each of a random label or of
    a label that fits next to its neighbours."""
    address = draw(st.sampled_from([None, SRC, SRC6]))
    src = SRC6 if address == SRC6 else SRC
    ports = knock(address=address, nonce=draw(st.binary(min_size=7, max_size=7)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(strays):
        at = draw(st.integers(0, len(ports) - 1))
        label = draw(st.one_of(st.integers(0, 15), st.sampled_from([at % 16, (at - 1) % 16])))
        ports.insert(at, stray(label, rng))
    return ports, src, len(ports)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 2).flatmap(noisy))
def test_one_or_two_stray_syns_still_open(case: tuple[list[int], str, int]) -> None:
    ports, src, _ = case
    rec = recognizer()
    assert grants(feed(rec, ports, src=src))
    assert rec.most_checks <= K


def test_two_strays_at_every_place_with_fitting_labels_still_open() -> None:
    """Every pair of places in the 16-SYN knock; the labels that make most branches
    (a stray's label equal to a neighbour's), and a random one."""
    rng = random.Random(7)
    ports = knock()
    checks: list[int] = []
    for a in range(16):
        for b in range(a, 16):
            fitting = {a % 16, (a - 1) % 16, b % 16, (b - 1) % 16}
            for la in fitting | {rng.randrange(16)}:
                for lb in fitting:
                    seq = list(ports)
                    seq.insert(b, stray(lb, rng))
                    seq.insert(a, stray(la, rng))
                    rec = recognizer()
                    assert grants(feed(rec, seq)), (a, b, la, lb)
                    checks.append(rec.most_checks)
    assert len(checks) > 1000 and max(checks) <= 4  # the figure the module's docstring gives


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_three_strays_inside_a_knock_are_refused_with_a_reason(data: st.DataObject) -> None:
    ports = knock(nonce=data.draw(st.binary(min_size=7, max_size=7)))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    places = sorted(data.draw(st.lists(st.integers(1, 15), min_size=3, max_size=3)))
    for at in reversed(places):
        ports.insert(at, stray(data.draw(st.integers(0, 15)), rng))
    rec = recognizer()
    assert not grants(feed(rec, ports))
    assert rec.most_checks <= K
    (reason,) = refusals(rec.handle_timer(NOW + 10 * TIMEOUT))
    assert reason in (
        "a sealed knock of 16 SYNs would need 3 stray SYNs among its own (at most 2 are searched)",
        "no sealed knock among the last 19 SYNs (tag did not verify)",
    )


def _crafted() -> list[int]:
    """A stream whose last SYN ends 4 arrangements of 16 SYNs and 4 of 32, the last
    one's padding bits zero: 8 candidates, K."""
    rng = random.Random(3)
    labels = [*range(16), 0, 0, 1, 1, *range(2, 16)]
    ports = [stray(label, rng) for label in labels]
    ports[-1] &= ~0xFF
    return ports


def test_the_tag_checks_per_syn_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = recognizer()
    feed(rec, _crafted())
    assert rec.most_checks == K == 8
    monkeypatch.setattr(sealedknocks, "MAX_TAG_CHECKS", 3)
    rec = recognizer()
    feed(rec, _crafted())
    assert rec.most_checks == 3
    assert refusals(rec.handle_timer(NOW + 10 * TIMEOUT)) == [
        "no sealed knock of 32 SYNs found within 3 tag checks (the bound per SYN)"
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 2047)), max_size=120),
       st.booleans())  # fmt: skip
def test_any_stream_of_span_syns_costs_at_most_k_checks_each(
    syns: list[tuple[int, int]], in_order: bool
) -> None:
    """Labels in knock order (the costly case) or at random: never a grant, K at most."""
    rec = recognizer()
    ports = [32768 + (((i % 16) if in_order else label) << 11 | bits)
             for i, (label, bits) in enumerate(syns)]  # fmt: skip
    assert not grants(feed(rec, ports))
    assert rec.most_checks <= K


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([SRC, OTHER, SRC6, "junk"]), st.integers(0, 70000),
                          st.sampled_from(["tcp", "udp"]), st.integers(0, 65535),
                          st.floats(0, 10)), max_size=60))  # fmt: skip
def test_arbitrary_packets_only_make_verdicts(
    packets: list[tuple[str, int, str, int, float]],
) -> None:
    rec = recognizer()
    t = NOW
    for src, port, proto, sport, dt in packets:
        t += dt
        out = rec.receive(Packet(t, src, port, proto, sport))  # type: ignore[arg-type]
        assert not grants(out)
    assert not grants(rec.handle_timer(t + 10 * TIMEOUT))


# ------------------------------------------------------------------ state and timers


def test_an_incomplete_knock_is_said_when_it_expires() -> None:
    rec = recognizer()
    assert feed(rec, knock()[:10]) == []
    assert rec.sources == 1 and rec.get_timer() is not None
    (said,) = rec.handle_timer(NOW + 10 * TIMEOUT)
    assert isinstance(said, Ignored) and said.reason.startswith(
        "incomplete sealed knock: 10 SYNs within knock_timeout (2 s), the shortest is 16"
    )
    assert rec.sources == 0 and rec.get_timer() is None


def test_syns_older_than_knock_timeout_are_not_a_knock() -> None:
    rec = recognizer()
    assert not grants(feed(rec, knock(), step=TIMEOUT / 10))  # 16 SYNs over 3 s
    assert grants(feed(rec, knock(), now=NOW + 5))


def test_retransmissions_and_other_packets() -> None:
    rec = recognizer()
    ports = knock()
    out: list[Verdict] = []
    for i, port in enumerate(ports):
        out += rec.receive(Packet(NOW + i * 0.01, SRC, port, "tcp", 40000 + i))
        if i == 5:  # the kernel sends the same SYN again
            out += rec.receive(Packet(NOW + i * 0.01 + 0.001, SRC, port, "tcp", 40000 + i))
        assert rec.receive(Packet(NOW, SRC, port, "udp", 1)) == []
        assert rec.receive(Packet(NOW, SRC, 22, "tcp", 2)) == []
    assert [type(v) for v in out] == [Ignored, Grant]


def test_refusals_are_rate_limited_per_source() -> None:
    rec = recognizer()
    rng = random.Random(1)
    junk = [stray(i % 16, rng) for i in range(16 * 40)]
    said = refusals(feed(rec, junk, step=0.001))
    assert len(said) == 1  # one in the first minute for this source


def test_memory_stays_bounded_under_a_flood_and_a_knock_gets_through() -> None:
    rec = recognizer(max_sources=100)
    rng = random.Random(2)
    t = NOW
    for i in range(20_000):
        src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        rec.receive(Packet(t, src, stray(rng.randrange(16), rng), "tcp", 1 + i % 60000))
        t += 1e-5
        assert rec.sources <= (1 + PROBATION) * 100
    assert grants(feed(rec, knock(), now=t))
    one = recognizer()
    feed(one, [stray(rng.randrange(16), rng) for _ in range(1000)], step=0.0001)
    assert one.sources == 1 and len(one._windows._states[SRC].ports) == 32 + 2


def test_a_stray_with_the_last_label_does_not_make_a_knock_the_first_evicted() -> None:
    """Someone spoofing the client's address sends a SYN with the knock's last label
    before the real last SYN: that window fails, but the source keeps its rank, so a
    flood of other sources that fills the table evicts them, not the knock."""
    c = codec()
    ports = knock()
    rec = recognizer(max_sources=10)
    stray = c.span_start + (15 << DATA_BITS | 7)  # label 15: ends a 16-SYN knock
    out = feed(rec, [*ports[:15], stray])
    assert not grants(out) and rec.tag_checks >= 1
    for n in range(40):  # each past probation (2 SYNs), into the main tier
        feed(rec, [c.span_start + 1, c.span_start + 2], src=f"198.19.0.{n}", now=NOW + 0.2)
    assert rec._windows.evictions > 0
    assert grants(feed(rec, ports[15:], now=NOW + 0.3))
