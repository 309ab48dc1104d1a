"""The settings table's machinery: a row per key, declared as a dataclass field.

``opt()`` declares a key (default, kind, help, where else it may appear);
``Table`` gives every settings class its rows, its values and where each came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, InvalidValue
from .kinds import Kind

if TYPE_CHECKING:
    from .entries import Entry


def opt(
    default: Any, kind: Kind, help: str, *, secret: bool = False, metavar: str = "",
    host: bool = False, required: bool = False,
) -> Any:  # fmt: skip
    """Declare one settings key: its default (as written), kind and help, and whether a
    hosts-file line may set it (``host``). A ``required`` key's default stands for "not
    given" and is kept as it is."""
    meta = {"kind": kind, "help": help, "secret": secret, "metavar": metavar, "host": host,
            "required": required}  # fmt: skip
    return field(default=default if required else kind(default), metadata=meta)


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the settings table."""

    name: str
    kind: Kind
    default: Any
    help: str
    secret: bool
    metavar: str
    host: bool  # a hosts-file line (one host's knock) may set it
    required: bool = False  # no default: the value must be given

    @property
    def default_text(self) -> str:
        """The default as people write it; "" for none."""
        return "" if self.required else self.kind.show(self.default)

    def read(self, raw: object) -> Any:
        """``raw`` read by the kind; a ConfigError naming this key if it cannot be."""
        try:
            return self.kind(raw)
        except InvalidValue as exc:
            raise ConfigError(str(exc), key=self.name) from None
        except (ValueError, TypeError, KeyError):
            shown = "a value that is not text" if self.secret else repr(raw)
            raise ConfigError(f"expected {self.kind.expected}, got {shown}",
                              key=self.name) from None  # fmt: skip


class Table:
    """What every settings object offers: its rows, its values, where each came from."""

    __slots__ = ()
    origins: Mapping[str, str]
    flags: Mapping[int, int]
    BLOCKS: ClassVar[frozenset[str]] = frozenset()  # block names a config file may hold
    BLOCK: ClassVar[str] = ""  # the block this table reads ("" for a file's top level)
    FLAGS: ClassVar[bool] = False  # takes flagN keys

    @classmethod
    def table(cls) -> list[Key]:
        return [
            Key(f.name, f.metadata["kind"], f.default, f.metadata["help"], f.metadata["secret"],
                f.metadata["metavar"], f.metadata["host"], f.metadata["required"])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if "kind" in f.metadata
        ]  # fmt: skip

    @classmethod
    def read_blocks(cls, blocks: list[Entry], loose: dict[str, str]) -> dict[str, Any]:
        """A config file's blocks (of ``BLOCKS``) as constructor arguments; ``loose``: where
        the file's top-level values came from, which a block may replace."""
        return {}

    @classmethod
    def row(cls, name: str) -> Key | None:
        return _rows(cls).get(name)

    def items(self, *, masked: bool = False) -> Iterator[tuple[str, Any]]:
        """Effective settings in table order, flags last; secrets masked on request."""
        for key in self.table():
            value = getattr(self, key.name)
            if masked and key.secret and value:
                value = "********"
            yield key.name, value
        for number in sorted(self.flags):
            yield f"flag{number}", self.flags[number]

    def shown(self) -> Iterator[tuple[str, object]]:
        """``items(masked=True)``, with what a kind made of its text shown as that text."""
        for name, value in self.items(masked=True):
            key = self.row(name)
            if key is None or isinstance(value, str | int | float):
                yield name, value
            else:
                yield name, key.kind.show(value)

    def read_text(self) -> None:
        """Text given straight to the constructor (``ClientSettings(portspan="745-1000")``)
        is read by its kind, as the loader reads it: every way of making settings checks
        them alike."""
        for key in self.table():
            value = getattr(self, key.name)
            if isinstance(value, str) and not isinstance(key.default, str):
                object.__setattr__(self, key.name, key.read(value))

    def origin(self, name: str) -> str:
        """Where a value came from, e.g. ``/etc/x.conf:12`` or ``default``."""
        return self.origins.get(name, "default")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items(masked=True))
        return f"{type(self).__name__}({shown})"


_ROWS: dict[type[Table], dict[str, Key]] = {}


def _rows(cls: type[Table]) -> dict[str, Key]:
    rows = _ROWS.get(cls)
    if rows is None:
        rows = _ROWS[cls] = {k.name: k for k in cls.table()}
    return rows


def per_host_keys(cls: type[Table]) -> list[str]:
    """The keys a hosts-file line may set, in table order."""
    return [k.name for k in cls.table() if k.host]
