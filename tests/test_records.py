"""``Record``: value equality, hash and repr over the slots; each slot set once.
``MutableRecord``: the same, changeable and unhashable."""

from __future__ import annotations

import pytest

from aioknock.asyncio.attempts import Attempt
from aioknock.asyncio.hostknock import KnockResult
from aioknock.codec.portspan import PortSpan
from aioknock.codec.sealed import SealedCodec
from aioknock.config.hostblocks import HostBlocks
from aioknock.config.settings import ClientSettings
from aioknock.records import MutableRecord, Record


class Pair(Record):
    __slots__ = ("left", "right")

    def __init__(self, left: int, right: object = None) -> None:
        self.left = left
        self.right = right


class Other(Record):
    __slots__ = ("left", "right")

    def __init__(self, left: int, right: object = None) -> None:
        self.left = left
        self.right = right


def test_equal_by_type_and_values() -> None:
    assert Pair(1, "a") == Pair(1, "a")
    assert Pair(1, "a") != Pair(1, "b")
    assert Pair(1) != Other(1)  # same slots, another type
    assert Pair(1) != (None, 1)
    assert hash(Pair(1, "a")) == hash(Pair(1, "a"))
    assert len({Pair(1, "a"), Pair(1, "a"), Pair(2)}) == 2


def test_repr_names_every_slot() -> None:
    assert repr(Pair(1, "a")) == "Pair(left=1, right='a')"


def test_a_slot_is_set_once() -> None:
    pair = Pair(1)
    with pytest.raises(AttributeError, match=r"Pair\.left is read-only"):
        pair.left = 2
    with pytest.raises(AttributeError, match="read-only"):
        del pair.right
    with pytest.raises(AttributeError):
        pair.other = 3
    assert pair.left == 1 and not hasattr(pair, "__dict__")


def test_unhashable_values_make_an_unhashable_record() -> None:
    with pytest.raises(TypeError):
        hash(Pair(1, {"a": 1}))


class Counter(MutableRecord):
    __slots__ = ("n",)

    def __init__(self, n: int = 0) -> None:
        self.n = n


def test_a_mutable_record_changes_compares_and_is_unhashable() -> None:
    c = Counter()
    c.n += 1
    assert c == Counter(1) and c != Counter(2) and repr(c) == "Counter(n=1)"
    with pytest.raises(TypeError):
        hash(c)


def test_the_knocks_values_are_read_only() -> None:
    """What settings build once and every host shares (through caches) cannot change."""
    settings = ClientSettings()
    sealed_codec = SealedCodec(b"k" * 32, "host.example")
    blocks = HostBlocks((), {})
    cases: list[tuple[object, str, object]] = [
        (settings.portspan, "bits", 3),
        (settings.codec, "span", None),
        (settings.codec.format, "portbytes", 1),
        (settings.fileformat, "template", "x"),
        (sealed_codec, "key", b"x" * 32),
        (blocks, "loose", {}),
    ]
    for obj, name, value in cases:
        with pytest.raises(AttributeError, match="read-only"):
            setattr(obj, name, value)
    assert settings.fileformat.pattern is settings.fileformat.pattern  # compiled once
    assert sealed_codec == SealedCodec(b"k" * 32, "HOST.example.")
    assert hash(settings.portspan) == hash(PortSpan.parse("745-1000"))


def test_a_knock_result_takes_every_field_and_compares_by_value() -> None:
    one = KnockResult("h", "knockclient", "127.0.0.1", ports=[1, 2], ok=True,
                      attempts=[Attempt(1, 0.5, "refused")])  # fmt: skip
    two = KnockResult("h", address="127.0.0.1", ports=[1, 2], ok=True,
                      attempts=[Attempt(1, 0.5, "refused")])  # fmt: skip
    assert one == two and one != KnockResult("h")
    assert "ports=[1, 2]" in repr(one) and one.verified is None
    assert KnockResult("a").ports is not KnockResult("b").ports  # no list shared
