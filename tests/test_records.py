"""``Record``: value equality, hash and repr over the slots; each slot set once."""

from __future__ import annotations

import pytest

from aioknock.records import Record


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
