"""The whole pipeline through the public API: build then decode, lengths, rejections."""

from __future__ import annotations

import ipaddress
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioknock
from aioknock import KnockError, PortSpan, Settings
from aioknock.codec.ciphers import (
    ALGORITHMS,
    RANDOMIV_HEADER,
    CryptCBC,
    cbc_encrypt,
    stretch_key,
)
from aioknock.codec.fields import TIME_FIELDS, KnockFormat, KnockInputs
from aioknock.codec.pipeline import Codec
from aioknock.config.values import override

CIPHERS = ["Blowfish", "DES", "DES_EDE3", "CAST5", "IDEA"]
FIELD_NAMES = ["CLIENT", "IP", "PORT", "RAND", "CHECKSUM", *TIME_FIELDS, "FLAG0", "FLAG1", "FLAG9"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


BASE = Settings.of(
    knock="CLIENT,PORT,FLAG0,CHECKSUM", portspan="745-1000", client="10.1.1.1", port=22,
    flag0=15, encrypt=False, cipher="Blowfish", key="my_secret_phrase", iv=True,
)  # fmt: skip
PARSED = {"knock", "portspan", "cipher"}  # written as text, read by their kinds


def knock_settings(**changes: Any) -> Settings:
    """Settings made directly (no file, no environment): the codec's view of them. Values
    the library takes as they are (a key, a client address) skip the kinds' checks."""
    return changed(BASE, **changes)


def changed(s: Settings, **changes: Any) -> Settings:
    texts = {k: v for k, v in changes.items() if k in PARSED}
    rest = {k: v for k, v in changes.items() if k not in PARSED}
    return override(s, texts, "test").replace(**rest)


@st.composite
def random_settings(draw: st.DrawFn) -> Settings:
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=12, unique=True))
    if draw(st.integers(0, 3)) == 0:  # now and then a field twice (CHECKSUM, FLAGm, ...)
        names = draw(st.permutations(names + draw(st.lists(st.sampled_from(names), max_size=3))))
    portbytes = draw(st.sampled_from([1, 2]))
    bits = draw(st.integers(1, 15))
    start = draw(st.integers(1, 65536 - (1 << bits)))
    cut = draw(st.integers(0, (1 << bits) - 1))
    low, high = range(start, start + cut), range(start + cut, start + (1 << bits))
    items = [f"{r.start}-{r.stop - 1}" for r in (high, low) if len(r)]  # upper part listed first
    fmt = KnockFormat.parse(",".join(names), portbytes=portbytes)
    return knock_settings(
        knock=",".join(names), portbytes=portbytes, portspan=",".join(items),
        encrypt=draw(st.booleans()), cipher=draw(st.sampled_from(CIPHERS)),
        key=draw(st.text(min_size=1, max_size=20)), iv=draw(st.booleans()),
        client=str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))),
        port=draw(st.integers(0, (1 << (8 * portbytes)) - 1)),
        flags={m: draw(st.integers(0, 255)) for m in fmt.flag_numbers()},
        localtime=draw(st.booleans()),
    )  # fmt: skip


NOW = st.one_of(st.integers(0, 2**33), st.floats(0, 2**33))


# --- build then parse --------------------------------------------------------------------


@PROPERTY
@given(random_settings(), NOW)
def test_build_then_parse(s: Settings, now: float) -> None:
    plan = aioknock.build_knock(s, now=now)
    fmt = s.codec.format
    span = s.portspan
    assert isinstance(plan.values, list) and len(plan.values) == fmt.length
    assert plan.values == list(fmt.pack(codec_inputs(s, plan), now, localtime=s.localtime))
    if s.encrypt:  # the manual's formula, for every format and cipher
        assert len(plan.payload) == 16 * s.iv + 8 * (int(len(plan.values) / 8) + 1)
        assert plan.payload.startswith(RANDOMIV_HEADER) == s.iv
    else:
        assert plan.payload == bytes(plan.values)
    assert plan.ports == span.encode(plan.payload)
    assert len(plan.ports) == -(-8 * len(plan.payload) // span.bits)
    fields = aioknock.decode_knock(s, plan.ports)
    assert fields == fmt.unpack(bytes(plan.values)).shown
    if "CLIENT" in fmt.fields:
        assert fields["client"] == s.client
    if "PORT" in fmt.fields:
        assert fields["port"] == s.port
    for m in fmt.flag_numbers():
        assert fields[f"flag{m}"] == s.flags[m]


def codec_inputs(s: Settings, plan: aioknock.KnockPlan) -> KnockInputs:
    """The inputs the plan was built from (RAND read back from the plan's values)."""
    fmt = s.codec.format
    names = [name for name in fmt.fields for _ in range(fmt.width(name))]  # one per byte
    rand = next((v for v, n in zip(plan.values, names, strict=True) if n == "RAND"), 0)
    return KnockInputs(s.client, s.port, s.flags, rand)


def test_public_plan_shape() -> None:
    s = knock_settings(encrypt=True, cipher="Blowfish", iv=False)
    plan = aioknock.build_knock(s, now=0)
    assert plan.values == [10, 1, 1, 1, 0, 22, 15, 50]
    assert isinstance(plan.payload, bytes) and len(plan.payload) == 16
    assert all(745 <= p <= 1000 for p in plan.ports) and len(plan.ports) == 16
    assert plan.payload == CryptCBC("Blowfish", b"my_secret_phrase", iv=False).encrypt(
        bytes(plan.values), lambda n: b""
    )
    fields = aioknock.decode_knock(s, plan.ports)
    assert fields == {"client": "10.1.1.1", "port": 22, "flag0": 15, "checksum": 50}
    assert aioknock.decode_knock(s, tuple(plan.ports)) == fields


def test_now_defaults_to_the_clock() -> None:
    s = knock_settings(knock="THISSECOND")
    before = int(time.time())
    got = aioknock.build_knock(s).values[0]
    assert got in {t % 256 for t in range(before, int(time.time()) + 1)}


def test_client_auto_is_the_route_to_remote() -> None:
    s = knock_settings(knock="CLIENT", client="auto", remote="127.0.0.1")
    assert aioknock.decode_knock(s, aioknock.build_knock(s, now=0).ports)["client"] == "127.0.0.1"
    # no CLIENT field: no address needed at all
    s = knock_settings(knock="PORT", client="auto", remote="no.such.host.invalid")
    assert aioknock.build_knock(s, now=0).values == [0, 22]


@pytest.mark.parametrize("client", ["::1", "not an address", "10.1.1"])
def test_client_must_be_ipv4(client: str) -> None:
    with pytest.raises(KnockError, match="IPv4"):
        aioknock.build_knock(knock_settings(client=client), now=0)


def test_build_errors() -> None:
    with pytest.raises(KnockError, match="flag1 is not set"):
        aioknock.build_knock(knock_settings(knock="FLAG1"), now=0)
    with pytest.raises(KnockError, match="does not fit"):
        aioknock.build_knock(knock_settings(portbytes=1, port=300), now=0)


# --- rejection of corrupted knocks -------------------------------------------------------


def test_wrong_port_count() -> None:
    s = knock_settings()
    ports = aioknock.build_knock(s, now=0).ports
    for bad in (ports[:-1], [*ports, ports[0]], []):
        with pytest.raises(KnockError, match=f"expected {len(ports)} ports, got {len(bad)}"):
            aioknock.decode_knock(s, bad)


def test_port_outside_the_span() -> None:
    s = knock_settings()
    ports = aioknock.build_knock(s, now=0).ports
    with pytest.raises(KnockError, match="port 1001 is not in the span"):
        aioknock.decode_knock(s, [*ports[:-1], 1001])


def test_last_group_port_out_of_range() -> None:
    # 32 ports (N = 5), 8 bytes = 64 bits: 12 groups of 5 and a last group of 4 bits
    s = knock_settings(portspan="2000-2031", knock="CLIENT,PORT,FLAG0,CHECKSUM", portbytes=2)
    ports = aioknock.build_knock(s, now=0).ports
    assert len(ports) == 13
    with pytest.raises(KnockError, match="out of range for the last 4 bits"):
        aioknock.decode_knock(s, [*ports[:-1], 2000 + 16])


def test_flipped_bit_and_wrong_checksum() -> None:
    s = knock_settings()
    ports = aioknock.build_knock(s, now=0).ports  # 10 1 1 1 0 22 15 50, one byte per port
    assert ports == [745 + v for v in (10, 1, 1, 1, 0, 22, 15, 50)]
    with pytest.raises(KnockError, match="checksum 50 does not match 51"):
        aioknock.decode_knock(s, [745 + (10 ^ 1), *ports[1:]])  # bit 0 of the first byte
    with pytest.raises(KnockError, match="checksum 51 does not match 50"):
        aioknock.decode_knock(s, [*ports[:-1], 745 + 51])


@pytest.mark.parametrize("name", CIPHERS)
def test_flipped_bit_encrypted(name: str) -> None:
    s = knock_settings(encrypt=True, cipher=name, iv=False)
    ports = aioknock.build_knock(s, now=0).ports
    rejected = 0
    for i in range(len(ports)):
        for bit in range(8):
            try:
                aioknock.decode_knock(s, [*ports[:i], 745 + ((ports[i] - 745) ^ (1 << bit)),
                                         *ports[i + 1 :]])  # fmt: skip
            except KnockError:
                rejected += 1
    # every single-bit change breaks the padding or the checksum: CBC spreads a change
    # in the last block over its plaintext, and one in the first block flips one bit
    # of the second block's plaintext (data, so the checksum notices, or padding)
    assert rejected == 8 * len(ports)


@pytest.mark.parametrize("name", CIPHERS)
def test_bad_padding(name: str) -> None:
    s = knock_settings(encrypt=True, cipher=name, iv=False)
    raw = ALGORITHMS[name.lower()].factory()
    key = stretch_key(s.key.encode(), ALGORITHMS[name.lower()].key_size)
    bad = cbc_encrypt(raw(key), bytes(8), bytes([10, 1, 1, 1, 0, 22, 15, 50]) + bytes([9] * 8))
    with pytest.raises(KnockError, match="bad padding"):
        aioknock.decode_knock(s, s.portspan.encode(bad))


def test_missing_randomiv_header() -> None:
    s = knock_settings(encrypt=True, iv=True)
    payload = aioknock.build_knock(s, now=0).payload
    span = s.portspan
    with pytest.raises(KnockError, match="missing RandomIV header"):
        aioknock.decode_knock(s, span.encode(b"RandomIX" + payload[8:]))
    # a knock sent with iv = no is read by a daemon set to iv = yes: rejected
    longer = ",".join(s.knock) + ",FLAG0" * 16  # 24 bytes: 32 encrypted, as 8 + 16 with the IV
    other = aioknock.build_knock(changed(s, iv=False, knock=longer), now=0)
    assert len(other.payload) == len(payload)
    with pytest.raises(KnockError, match="missing RandomIV header"):
        aioknock.decode_knock(s, other.ports)


@pytest.mark.parametrize("name", CIPHERS)
@pytest.mark.parametrize("iv", [True, False])
def test_wrong_key(name: str, iv: bool) -> None:
    s = knock_settings(encrypt=True, cipher=name, iv=iv)
    ports = aioknock.build_knock(s, now=0).ports
    for key in ("my_secret_phrasE", "another", "x"):
        with pytest.raises(KnockError):
            aioknock.decode_knock(changed(s, key=key), ports)
    with pytest.raises(KnockError):  # or another cipher
        aioknock.decode_knock(changed(s, cipher="CAST5" if name != "CAST5" else "DES"), ports)


@st.composite
def mutations(draw: st.DrawFn, ports: list[int], span: PortSpan) -> list[int]:
    """The ports of a knock, changed in one of several ways."""
    ports = list(ports)
    kind = draw(st.sampled_from(["swap-in", "outside", "drop", "add", "swap", "flip", "random"]))
    i = draw(st.integers(0, len(ports) - 1))
    if kind == "swap-in":
        ports[i] = draw(st.sampled_from(span.ports))
    elif kind == "outside":
        ports[i] = draw(st.integers(-5, 70000).filter(lambda p: p not in span._index))
    elif kind == "drop":
        del ports[i]
    elif kind == "add":
        ports.insert(i, draw(st.sampled_from(span.ports)))
    elif kind == "swap":
        j = draw(st.integers(0, len(ports) - 1))
        ports[i], ports[j] = ports[j], ports[i]
    elif kind == "flip":
        ports[i] ^= 1 << draw(st.integers(0, 15))
    else:
        ports = [draw(st.sampled_from(span.ports)) for _ in ports]
    return ports


@PROPERTY
@given(random_settings(), NOW, st.data())
def test_mutated_knocks_raise_knock_error_or_decode_exactly(
    s: Settings, now: float, data: st.DataObject
) -> None:
    plan = aioknock.build_knock(s, now=now)
    codec = s.codec
    mutated = data.draw(mutations(plan.ports, codec.span))
    try:
        fields = aioknock.decode_knock(s, mutated)
    except KnockError as exc:
        assert exc.reason
        if not s.encrypt and "CHECKSUM" not in codec.format.fields:
            # Unencrypted, no checksum: only a malformed port list (or two copies of
            # a field that disagree) may be refused.
            assert _malformed(mutated, codec.span, codec.payload_length) or _repeats(codec)
        return
    # Accepted. Without encryption and checksum any well-formed knock is; with them a
    # corrupted knock can still pass by chance (CBC has no integrity check and the
    # checksum is one byte), but never by guessing: the ports must be exactly the
    # encoding of what was decoded.
    payload = codec.span.decode(mutated, codec.payload_length)
    assert codec.span.encode(payload) == mutated
    plain = codec.cipher.decrypt(payload)
    if s.encrypt:
        iv = payload[8:16] if s.iv else b""
        assert codec.cipher.encrypt(plain, lambda n: iv) == payload
    assert fields == codec.format.unpack(plain).shown


def _malformed(ports: list[int], span: PortSpan, length: int) -> bool:
    if len(ports) != span.symbols(length) or any(p not in span._index for p in ports):
        return True
    rest = (8 * length) % span.bits
    return bool(rest) and span._index[ports[-1]] >= 1 << rest


def _repeats(codec: Codec) -> bool:
    names = [n for n in codec.format.fields if n not in ("RAND", "CHECKSUM")]
    return len(names) != len(set(names))


@PROPERTY
@given(st.lists(st.integers(-10, 70000), max_size=40), random_settings())
def test_arbitrary_ports_never_crash(ports: list[int], s: Settings) -> None:
    try:
        aioknock.decode_knock(s, ports)
    except KnockError as exc:
        assert exc.reason


def test_many_random_knocks_encrypted_with_checksum_are_rejected() -> None:
    # A statistical check of strictness: random well-formed port lists for an
    # encrypted knock with a checksum pass padding, length and checksum only rarely.
    s = knock_settings(encrypt=True, iv=True)
    n = s.codec.knock_length
    rng = random.Random(7)
    accepted = 0
    for _ in range(2000):
        try:
            aioknock.decode_knock(s, [rng.randrange(745, 1001) for _ in range(n)])
            accepted += 1
        except KnockError:
            pass
    assert accepted <= 2
