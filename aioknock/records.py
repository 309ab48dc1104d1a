"""Value records that cost next to nothing to define.

A one-knock start makes a few dozen kinds of record, and the standard ones are made at
run time by generated code: a dataclass compiles its methods with ``exec`` (~1-2 ms a
class here), a NamedTuple ``eval``s its ``__new__`` and checks each field's annotation
(~0.2 ms a class). A ``Record`` names its fields in ``__slots__`` and has a plain
``__init__``; equality, hash and repr read the slots. Records are values: each slot
is set once, by ``__init__``, and never changed. A ``MutableRecord`` is the same without
the hash and the guard, for what a run fills in as it goes.
"""

from __future__ import annotations


class _Slotted:
    """Equality (same type, same slot values) and repr over ``__slots__``."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Slotted)
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name, '<unset>')!r}" for name in self.__slots__)
        return f"{type(self).__name__}({shown})"


class Record(_Slotted):
    """A value: equal by its slots, hashable, and each slot, once set, read-only."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{type(self).__name__}.{name} is read-only")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} is read-only")

    def __hash__(self) -> int:
        return hash(self._values())


class MutableRecord(_Slotted):
    """State that changes as work goes on (a knock's result): equal by its slots, and
    unhashable, as a mutable value should be."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]
