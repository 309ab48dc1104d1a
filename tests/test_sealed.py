"""The sealed knock's codec (codec/sealed.py): exact both ways, strict, and its
cryptography checked against a second implementation written here from the RFCs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import struct
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioknock.codec import sealed
from aioknock.codec.portspan import PortSpan
from aioknock.codec.sealed import (
    KINDS,
    MAX_SYNS,
    TAG_BITS,
    SealedCodec,
    SealedMessage,
    TagMismatch,
    decode_plaintext,
    encode_plaintext,
    host_key,
    syn_count,
)
from aioknock.errors import InvalidValue, KnockError

KEY = bytes(range(32))
NONCE = bytes(range(1, 8))
NOW = 1_764_000_000
SERVER = "host.example"
SRC = "198.18.0.2"  # the address a knock for its source is sent from (and bound to)


@cache
def codec(tag_bits: int = 64, server_id: str = SERVER, key: bytes = KEY) -> SealedCodec:
    return SealedCodec(key, server_id, tag_bits)


# ------------------------------------------------------------------ strategies

PORTS = st.integers(1, 65535)
ADDRESSES = st.one_of(
    st.none(),
    st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(1, 2**32 - 1)),
    st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(2**33, 2**128 - 1)),
)


@st.composite
def messages(draw: st.DrawFn) -> SealedMessage:
    ports = draw(st.lists(PORTS, min_size=1, max_size=1 + sealed.MAX_EXTRA_PORTS, unique=True))
    flags = draw(st.dictionaries(st.integers(0, 255), st.integers(0, 255),
                                 max_size=sealed.MAX_FLAGS))  # fmt: skip
    return SealedMessage(
        timestamp=draw(st.integers(0, 2**32 - 1)), port=ports[0],
        proto=draw(st.sampled_from(["tcp", "udp"])), address=draw(ADDRESSES),
        extra_ports=tuple(ports[1:]), flags=tuple(flags.items()),
    )  # fmt: skip


NONCES = st.binary(min_size=7, max_size=7)


# ------------------------------------------------------------------ both ways


@settings(max_examples=300, deadline=None)
@given(messages(), st.sampled_from(TAG_BITS), NONCES)
def test_every_message_round_trips_through_ports(
    msg: SealedMessage, tag_bits: int, nonce: bytes
) -> None:
    c = codec(tag_bits)
    ports = c.build(msg, nonce, SRC)
    assert c.decode(ports, SRC) == msg
    assert c.open(c.seal(msg, nonce, SRC), SRC) == msg
    assert len(ports) == syn_count(msg.kind, msg.extras, tag_bits)
    assert all(c.label(port) == i % 16 for i, port in enumerate(ports))
    assert all(32768 <= port <= 65535 for port in ports)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_a_plaintext_has_one_spelling(msg: SealedMessage) -> None:
    data = encode_plaintext(msg)
    assert decode_plaintext(data) == msg
    assert len(data) == sealed.plaintext_size(msg.kind, msg.extras)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=100))
def test_any_plaintext_bytes_read_strictly_or_raise_knock_error(data: bytes) -> None:
    """Whatever reads, writes back byte for byte: nothing else is accepted."""
    try:
        msg = decode_plaintext(data)
    except KnockError:
        return
    assert encode_plaintext(msg) == data


@settings(max_examples=1000, deadline=None)
@given(messages(), st.integers(0, 200), st.integers(0, 255), st.sampled_from(["set", "cut", "add"]))
def test_altered_plaintexts_read_strictly_or_raise_knock_error(
    msg: SealedMessage, where: int, byte: int, how: str
) -> None:
    """Near misses of real plaintexts (random bytes rarely read at all)."""
    data = bytearray(encode_plaintext(msg))
    at = where % len(data)
    if how == "set":
        data[at] = byte
    elif how == "cut":
        del data[at:]
    else:
        data.insert(at, byte)
    try:
        read = decode_plaintext(bytes(data))
    except KnockError:
        return
    assert encode_plaintext(read) == data


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(-(2**20), 2**20), max_size=MAX_SYNS + 2))
def test_any_port_list_raises_only_knock_error(ports: list[int]) -> None:
    with pytest.raises(KnockError):
        codec().decode(ports, SRC)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 2047), min_size=1, max_size=40), st.sampled_from(TAG_BITS))
def test_well_labelled_junk_raises_only_knock_error(chunks: list[int], tag_bits: int) -> None:
    """Right labels, random data: sizes and padding are checked, the tag refuses."""
    ports = [32768 + ((i % 16) << 11 | chunk) for i, chunk in enumerate(chunks)]
    with pytest.raises(KnockError):
        codec(tag_bits).decode(ports, SRC)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_any_wire_bytes_raise_only_knock_error(wire: bytes) -> None:
    with pytest.raises(KnockError):
        codec().open(wire, SRC)


# ------------------------------------------------------------------ refusals


def _knocks() -> list[tuple[str, SealedMessage]]:
    return [
        ("source", SealedMessage(NOW, 22)),
        ("IPv4", SealedMessage(NOW, 22, address="198.18.0.2")),
        ("IPv6 + extras", SealedMessage(NOW, 22, "udp", "2001:db8::2", (53,), ((1, 9),))),
    ]


@pytest.mark.parametrize(("what", "msg"), _knocks(), ids=[w for w, _ in _knocks()])
def test_every_single_bit_flip_of_every_port_is_refused(what: str, msg: SealedMessage) -> None:
    c = codec()
    ports = c.build(msg, NONCE, SRC)
    flipped = [
        [*ports[:i], ports[i] ^ 1 << bit, *ports[i + 1 :]]
        for i in range(len(ports))
        for bit in range(15)  # every bit of the span offset: 4 label and 11 data bits
    ]
    accepted = 0
    for knock in flipped:
        try:
            c.decode(knock, SRC)
        except KnockError:
            continue
        accepted += 1
    assert len(flipped) == 15 * len(ports) and accepted == 0
    assert c.decode(ports, SRC) == msg


def test_another_server_id_or_host_key_is_refused() -> None:
    master = bytes(range(100, 132))
    a = SealedCodec(host_key(master, "a.example"), "a.example")
    ports = a.build(SealedMessage(NOW, 22), NONCE, SRC)
    assert a.decode(ports, SRC).port == 22
    # Host B shares the master: its own key and server_id open nothing made for A.
    b = SealedCodec(host_key(master, "b.example"), "b.example")
    with pytest.raises(TagMismatch):
        b.decode(ports, SRC)
    # A's key configured on a server that names itself otherwise: still refused.
    with pytest.raises(TagMismatch):
        SealedCodec(host_key(master, "a.example"), "b.example").decode(ports, SRC)
    with pytest.raises(TagMismatch):
        SealedCodec(master, "a.example").decode(ports, SRC)
    # server_id is the canonical name: case and a trailing dot do not matter.
    assert SealedCodec(host_key(master, "A.Example."), "A.EXAMPLE.").decode(ports, SRC).port == 22


def test_a_verified_knock_that_does_not_read_is_no_tag_mismatch() -> None:
    c = codec()
    base = bytes([0x20]) + NOW.to_bytes(4, "big") + (22).to_bytes(2, "big")
    assert c.open(c.seal_plaintext(base, NONCE, SRC), SRC) == SealedMessage(NOW, 22)
    bad = {
        "reserved bit": bytes([0x21]) + base[1:],
        "version 2": bytes([0x40]) + base[1:],
        "trailing bytes": base + bytes(4),
        "port 0": base[:5] + bytes(2),
        "empty extension": bytes([0x22]) + base[1:] + b"\0" + bytes(2),
        "flags out of order": bytes([0x22]) + base[1:] + b"\x02" + b"\x05\x01\x03\x01",
        "IPv4-mapped IPv6": bytes([0x30]) + base[1:]
        + ipaddress.IPv6Address("::ffff:198.18.0.1").packed,
        "a port twice": bytes([0x22]) + base[1:] + b"\x10" + (22).to_bytes(2, "big") + bytes(2),
    }  # fmt: skip
    for what, plaintext in bad.items():
        wire = c.seal_plaintext(plaintext, NONCE, SRC)
        with pytest.raises(KnockError) as caught:
            c.open(wire, SRC)
        assert not isinstance(caught.value, TagMismatch), what
    # Kind 3 is refused from the clear bits, before any tag.
    with pytest.raises(TagMismatch):
        c.open(c.seal_plaintext(bytes([0x38]) + base[1:] + bytes(16), NONCE), SRC)


def test_messages_are_checked_when_built() -> None:
    wrong: list[dict[str, object]] = [
        {"port": 0}, {"port": 65536}, {"timestamp": -1}, {"timestamp": 2**32},
        {"extra_ports": (22,)}, {"extra_ports": tuple(range(1, 17))},
        {"flags": ((1, 2), (1, 3))}, {"flags": ((256, 0),)},
        {"flags": tuple((n, 0) for n in range(16))}, {"address": "0.0.0.0"},
        {"address": "::"}, {"address": "fe80::1%eth0"}, {"address": "example.org"},
        {"proto": "icmp"},
    ]  # fmt: skip
    for kwargs in wrong:
        args: dict[str, object] = {"timestamp": NOW, "port": 22, **kwargs}
        with pytest.raises(KnockError):
            SealedMessage(**args)  # type: ignore[arg-type]
    msg = SealedMessage(NOW, 22, address="::ffff:198.18.0.1", flags=((9, 1), (2, 5)))
    assert msg.address == "198.18.0.1" and msg.kind == "ipv4"
    assert msg.flags == ((2, 5), (9, 1))
    assert sealed.message_for(NOW + 0.7, [(22, "tcp"), (80, "tcp")]).hits == (
        (22, "tcp"), (80, "tcp")
    )  # fmt: skip
    with pytest.raises(KnockError, match="one protocol"):
        sealed.message_for(NOW, [(22, "tcp"), (53, "udp")])


def test_codec_settings_are_checked() -> None:
    with pytest.raises(InvalidValue, match="32 bytes"):
        SealedCodec(bytes(16), SERVER)
    for bits in (56, 60, 136):
        with pytest.raises(InvalidValue, match="tag_bits"):
            SealedCodec(KEY, SERVER, bits)
    for start in (0, 32769):
        with pytest.raises(InvalidValue, match="span"):
            SealedCodec(KEY, SERVER, span_start=start)
    assert SealedCodec(KEY, SERVER, span_start=1).build(SealedMessage(NOW, 22), None, SRC)[0] < 2049
    assert sealed.span_start_of(PortSpan.parse("32768-65535")) == 32768
    assert sealed.span_start_of(PortSpan.parse("1000-33767")) == 1000
    for text in ("32768-49151", "49152-65535,32768-49151"):
        with pytest.raises(InvalidValue, match="32768 consecutive"):
            sealed.span_start_of(PortSpan.parse(text))
    assert "key" not in repr(codec()) and KEY.hex() not in repr(codec())


def test_host_names_are_canonical_ascii() -> None:
    assert sealed.canonical_host("Host.Example.") == "host.example"
    assert sealed.canonical_host("198.18.0.1") == "198.18.0.1"
    for bad in ("", ".", "a b", "a\tb", "a\0b", "h\u00e9te.example", "x" * 256):
        with pytest.raises(InvalidValue):
            sealed.canonical_host(bad)
    with pytest.raises(InvalidValue):
        host_key(bytes(31), "a.example")


def test_key_lines() -> None:
    line = base64.b64encode(KEY).decode()
    assert sealed.key_from_text(line + "\n") == KEY
    for bad in ("", "not base64!", base64.b64encode(bytes(31)).decode(), line + "AAAA"):
        with pytest.raises(InvalidValue):
            sealed.key_from_text(bad)


# ------------------------------------------------------------------ sizes


def test_the_default_knock_is_16_syns_and_the_lengths_are_stated() -> None:
    assert syn_count() == 16 == len(codec().build(SealedMessage(NOW, 22), source=SRC))
    assert codec().lengths() == (16, 19, 20, 22, 23, 28, 30, 32)
    assert SealedCodec(KEY, SERVER, extras=0).lengths() == (16, 19, 28)
    assert codec().wire_sizes(16) == (22,) and codec().wire_sizes(19) == (25, 26)


def test_the_docstring_table_is_syn_count() -> None:
    doc = sealed.__doc__ or ""
    rows = re.findall(r"^ {4}(source|IPv4|IPv6) +(\d) +(\d+) +(\d+) +(\d+)$", doc, re.M)
    assert len(rows) == 9
    for kind, extras, *counts in rows:
        expected = [syn_count(KINDS[("source", "IPv4", "IPv6").index(kind)], int(extras), bits)
                    for bits in (64, 96, 128)]  # fmt: skip
        assert [int(c) for c in counts] == expected


# ------------------------------------------------------------------ vectors

VECTOR_WIRE = "01020304050607772662b244a37e9867d997e51c32ea"  # from SRC, for its source
VECTOR_PORTS = [32776, 34944, 38408, 38992, 41731, 44508, 46284, 47794,
                49701, 51423, 54576, 56957, 58571, 61332, 62342, 64234]  # fmt: skip
VECTOR_128 = (  # names its address (kind 2, the nonce's first bits 10)
    "80000000000000e03921940557710b975f40737d4dd857d0d4c72535682754e350cbc74d1c27da919f"
    "a9cc0edd51438876da36"
)


def test_a_pinned_knock_so_the_format_cannot_drift() -> None:
    c = codec()
    wire = c.seal(SealedMessage(NOW, 22), NONCE, SRC)
    assert wire.hex() == VECTOR_WIRE
    assert c.ports(wire) == VECTOR_PORTS and c.decode(VECTOR_PORTS, SRC) == SealedMessage(NOW, 22)
    msg = SealedMessage(NOW, 443, "udp", "2001:db8::7", (8443,), ((3, 200),))
    assert codec(128).seal(msg, bytes(7)).hex() == VECTOR_128
    # The same knock from another source is no knock: the tag binds the source.
    with pytest.raises(TagMismatch):
        c.decode(VECTOR_PORTS, "198.18.0.3")
    with pytest.raises(TagMismatch):
        c.decode(VECTOR_PORTS)
    assert host_key(KEY, "Host.Example.").hex() == (
        "5ca5391a62b0634f6dda5a46f75a1521b1219498d09e78ac27e71674c9aba743"
    )


def _hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with the standard library's HMAC (empty salt = HashLen zeros)."""
    prk = hmac.digest(bytes(32), key, "sha256")
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([i]), "sha256")
        out += block
    return out[:length]


def _rotl(v: int, c: int) -> int:
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


_ROUNDS = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),  # columns
           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))  # fmt: skip


def _chacha_block(key: bytes, words_12_to_15: bytes) -> bytes:
    """The ChaCha20 block function (RFC 8439 2.3): state words 12-15 as given."""
    state = [*struct.unpack("<4I", b"expand 32-byte k"), *struct.unpack("<8I", key),
             *struct.unpack("<4I", words_12_to_15)]  # fmt: skip
    x = list(state)

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] = (x[a] + x[b]) & 0xFFFFFFFF
        x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] = (x[c] + x[d]) & 0xFFFFFFFF
        x[b] = _rotl(x[b] ^ x[c], 7)

    for _ in range(10):
        for a, b, c, d in _ROUNDS:
            quarter(a, b, c, d)
    return struct.pack("<16I", *((s + v) & 0xFFFFFFFF for s, v in zip(state, x, strict=True)))


def _chacha20(key: bytes, nonce8: bytes, data: bytes) -> bytes:
    """The original ChaCha20 (64-bit block counter from 0, 64-bit nonce)."""
    stream = b"".join(
        _chacha_block(key, struct.pack("<Q", i) + nonce8) for i in range(-(-len(data) // 64))
    )
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def test_the_second_implementation_passes_rfc_8439() -> None:
    block = _chacha_block(KEY, struct.pack("<I", 1) + bytes.fromhex("000000090000004a00000000"))
    assert block[:16].hex() == "10f1e7e4d13b5915500fdd1fa32071c4"
    # RFC 5869 test case 3 (SHA-256, empty salt and info).
    okm = _hkdf(bytes([0x0B] * 22), b"", 42)
    assert okm.hex().startswith("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d")


@settings(max_examples=100, deadline=None)
@given(messages(), st.sampled_from(TAG_BITS), NONCES, st.binary(min_size=32, max_size=32))
def test_the_composition_matches_a_second_implementation(
    msg: SealedMessage, tag_bits: int, nonce: bytes, key: bytes
) -> None:
    c = codec(tag_bits, SERVER, key)
    wire = c.seal(msg, nonce, SRC)
    kind = ("source", "ipv4", "ipv6").index(msg.kind)
    nonce = bytes([nonce[0] & 0x3F | kind << 6]) + nonce[1:]  # the kind, in the clear
    bound = b"" if kind else ipaddress.IPv6Address(f"::ffff:{SRC}").packed
    enc_key = _hkdf(key, b"aioknock sealed v1 encrypt")
    mac_key = _hkdf(key, b"aioknock sealed v1 mac")
    ciphertext = _chacha20(enc_key, nonce + b"\0", encode_plaintext(msg))
    sid = SERVER.encode()
    tag = hmac.digest(mac_key, b"aioknock sealed v1\0" + bytes([len(sid)]) + sid + bound
                      + nonce + ciphertext, "sha256")[: tag_bits // 8]  # fmt: skip
    assert wire == nonce + ciphertext + tag


def test_derived_keys_match_a_second_implementation() -> None:
    assert host_key(KEY, "Host.Example.") == _hkdf(KEY, b"aioknock host key v1\0host.example")
    expected = hashlib.scrypt(b"correct horse", salt=b"aioknock sealed v1", n=2**15, r=8, p=1,
                              maxmem=2**26, dklen=32)  # fmt: skip
    assert sealed.passphrase_key("correct horse") == expected
    assert sealed.passphrase_key(b"correct horse") == expected
    with pytest.raises(InvalidValue):
        sealed.passphrase_key("")
