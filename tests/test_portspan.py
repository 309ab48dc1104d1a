"""Port span: the manual's two worked examples, round trips for every N, parse errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioknock
from aioknock import ConfigError, InvalidValue, KnockError, KnockSettings, PortSpan
from aioknock.config.values import read_value

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_encode(span: PortSpan, data: bytes) -> list[int]:
    """The manual's recipe, literally: bytes as 8-digit binary strings, concatenated,
    cut into groups of N digits (the last group as it falls), each read as a number
    and used as an index into the span."""
    bits = "".join(f"{b:08b}" for b in data)
    groups = [bits[i : i + span.bits] for i in range(0, len(bits), span.bits)]
    return [span.ports[int(g, 2)] for g in groups]


# --- the manual's worked examples --------------------------------------------------------


def test_manual_256_port_span() -> None:
    span = aioknock.PortSpan.parse("745-1000")
    assert (span.size, span.bits) == (256, 8)
    encrypted = bytes([221, 169, 50, 219, 86, 117, 62, 187])
    ports = [966, 914, 795, 964, 831, 862, 807, 932]
    assert span.encode(encrypted) == ports
    assert span.decode(ports, len(encrypted)) == encrypted


SPAN_32K = "1024-5000,6000-25000,26000-35789"
ENCRYPTED_16 = bytes([216, 58, 209, 32, 67, 110, 108, 193, 168, 89, 231, 114, 112, 202, 231, 129])
GROUPS_32K = [27677, 13384, 2157, 26316, 3394, 26525, 25825, 19175, 129]
PORTS_32K = [30699, 15407, 3181, 29338, 4418, 29547, 28847, 21198, 1153]


def test_manual_32768_port_span() -> None:
    span = PortSpan.parse(SPAN_32K)
    assert (span.size, span.bits) == (32768, 15)
    assert span.ports[27677] == 30699  # "the 27,677th number in the span is 30,699"
    assert span.encode(ENCRYPTED_16) == PORTS_32K
    assert span.decode(PORTS_32K, 16) == ENCRYPTED_16
    assert [span.ports.index(p) for p in PORTS_32K] == GROUPS_32K


def test_manual_32768_bit_groups() -> None:
    # The manual prints the bytes' binary forms without their leading zeros
    # ("111010" for 58) but its groups come from the padded 8-digit forms: 128 bits
    # make eight 15-bit groups and a last group of the 8 leftover bits (129).
    bits = "".join(f"{b:08b}" for b in ENCRYPTED_16)
    assert bits.startswith("110110000011101" + "011010001001000" + "000100001101101")
    groups = [int(bits[i : i + 15], 2) for i in range(0, 128, 15)]
    assert groups == GROUPS_32K
    span = PortSpan.parse(SPAN_32K)
    assert reference_encode(span, ENCRYPTED_16) == PORTS_32K


def test_public_names() -> None:
    span = aioknock.PortSpan.parse("1-4")
    assert span.bits == 2 and span.size == 4
    assert span.encode(b"\x1b") == [1, 2, 3, 4]
    assert span.decode([1, 2, 3, 4], 1) == b"\x1b"


# --- round trips ------------------------------------------------------------------------


@st.composite
def span_texts(draw: st.DrawFn, bits: int) -> tuple[str, list[int]]:
    """A span of 2**bits ports as text (split into ranges with gaps, listed in a shuffled
    order, single ports sometimes written alone) and the port list it stands for."""
    size = 1 << bits
    pieces = draw(st.integers(1, min(size, 8)))
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), min_size=pieces - 1,
                               max_size=pieces - 1))) if size > 1 else []  # fmt: skip
    lengths = [b - a for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
    gaps = draw(st.lists(st.integers(0, 300), min_size=pieces, max_size=pieces))
    start = draw(st.integers(1, 65536 - size - sum(gaps)))
    ranges = []
    pos = start
    for length, gap in zip(lengths, gaps, strict=True):
        pos += gap
        ranges.append((pos, pos + length - 1))
        pos += length
    ranges = draw(st.permutations(ranges))
    items = []
    for a, b in ranges:
        items.append(f"{a}" if a == b and draw(st.booleans()) else f"{a}-{b}")
    ports = [p for a, b in ranges for p in range(a, b + 1)]
    return ",".join(items), ports


@pytest.mark.parametrize("bits", range(1, 16))
@FAST
@given(data=st.data())
def test_round_trip_every_n(bits: int, data: st.DataObject) -> None:
    text, ports = data.draw(span_texts(bits))
    span = PortSpan.parse(text)
    assert (span.bits, span.size) == (bits, 1 << bits)
    assert list(span.ports) == ports
    for payload in data.draw(st.lists(st.binary(max_size=48), min_size=1, max_size=4)):
        encoded = span.encode(payload)
        assert encoded == reference_encode(span, payload)
        assert len(encoded) == span.symbols(len(payload)) == -(-8 * len(payload) // bits)
        assert span.decode(encoded, len(payload)) == payload


@FAST
@given(bits=st.integers(1, 15), payload=st.binary(min_size=1, max_size=40))
def test_decode_needs_the_length(bits: int, payload: bytes) -> None:
    span = PortSpan.parse(f"1-{1 << bits}")
    ports = span.encode(payload)
    with pytest.raises(KnockError, match="expected"):
        span.decode([*ports, 1], len(payload))
    with pytest.raises(KnockError, match="expected"):
        span.decode(ports[:-1], len(payload))


def test_decode_rejects_foreign_and_out_of_range_ports() -> None:
    span = PortSpan.parse("745-1000")
    with pytest.raises(KnockError, match="744 is not in the span"):
        span.decode([744] * 8, 8)
    # 5-bit span, 8 bytes: 12 groups of 5 bits and a last group of 4 bits (< 16)
    span5 = PortSpan.parse("100-131")
    ports = span5.encode(bytes(range(8)))
    assert len(ports) == 13 and ports[-1] < 116
    with pytest.raises(KnockError, match="last 4 bits"):
        span5.decode([*ports[:-1], 100 + 20], 8)


def test_empty_payload() -> None:
    span = PortSpan.parse("1-2")
    assert span.encode(b"") == []
    assert span.decode([], 0) == b""


# --- parse errors ------------------------------------------------------------------------


def read_span(text: str) -> PortSpan:
    """``portspan`` read as the loader reads it: errors name the key."""
    row = KnockSettings.row("portspan")
    assert row is not None
    span: PortSpan = read_value(row, text)
    return span


def parse_error(text: str) -> ConfigError:
    with pytest.raises(InvalidValue):
        PortSpan.parse(text)  # the codec's own error, which knows no setting
    with pytest.raises(ConfigError) as info:
        read_span(text)
    assert info.value.key == "portspan"
    assert str(info.value).startswith("portspan: ")
    return info.value


@pytest.mark.parametrize(
    ("text", "size", "nearest"),
    [
        ("1-3", 3, ["2", "4"]),
        ("1000-1099", 100, ["64", "128"]),
        ("1-300", 300, ["256", "512"]),
        ("7", 1, ["2"]),
        ("1-40000", 40000, ["32768"]),
        ("1-65535", 65535, ["32768"]),
    ],
)
def test_size_must_be_a_power_of_two(text: str, size: int, nearest: list[str]) -> None:
    message = str(parse_error(text))
    assert f"{size} ports" in message
    for power in nearest:
        assert power in message
    assert "2^N" in message


def test_split_span_of_power_of_two_size() -> None:
    assert PortSpan.parse("1-5,10-12").ports == (1, 2, 3, 4, 5, 10, 11, 12)


def test_size_message_names_nearest_powers_exactly() -> None:
    assert "(nearest: 2 or 4)" in str(parse_error("1-3"))
    assert "(nearest: 32768, the largest)" in str(parse_error("1-32769"))
    assert "(nearest: 2)" in str(parse_error("80"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("1-4,3", "port 3 appears twice"),
        ("10-20,15-16", "port 15 appears twice"),
        ("1-40000,1-40000", "port 1 appears twice"),
        ("0-3", "outside 1-65535"),
        ("0", "outside 1-65535"),
        ("65534-65537", "outside 1-65535"),
        ("70000", "outside 1-65535"),
        ("20-10", "runs backwards"),
        ("", "empty item"),
        ("1-2,,3-4", "empty item"),
        ("1-2,", "empty item"),
        ("abc", "not a port or a range"),
        ("1-2-3", "not a port or a range"),
        ("-5", "not a port or a range"),
        ("5--6", "not a port or a range"),
        ("+5", "not a port or a range"),
        ("1_000-1_003", "not a port or a range"),
        ("1.5", "not a port or a range"),
        ("\u0661-\u0664", "not a port or a range"),  # Arabic-Indic digits
        ("9" * 5000, "not a port or a range"),
        ("1-4;5-8", "not a port or a range"),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    assert needle in str(parse_error(text))


def test_parse_allows_spaces() -> None:
    assert PortSpan.parse(" 745 - 1000 ").ports == tuple(range(745, 1001))
    assert PortSpan.parse("1-2,\t3 ,4").ports == (1, 2, 3, 4)


def test_from_ports_errors() -> None:
    with pytest.raises(InvalidValue, match="appears twice"):
        PortSpan.from_ports([1, 1])
    with pytest.raises(InvalidValue, match="outside"):
        PortSpan.from_ports([0, 1])
    with pytest.raises(InvalidValue, match="2 or 4"):
        PortSpan.from_ports([1, 2, 3])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789-, x\t", max_size=30))
def test_parse_garbage_gives_config_error_only(text: str) -> None:
    try:
        span = read_span(text)
    except ConfigError as exc:
        assert exc.key == "portspan"
    else:
        assert span.size == 1 << span.bits
