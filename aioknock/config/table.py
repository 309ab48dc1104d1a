"""The settings table's machinery: a row per key, declared in the settings class.

``opt()`` declares a key (default, kind, help, where else it may appear), ``slot()`` a
value that is not a key (flags, where values came from, what the keys build); ``Table``
gives every settings class its rows, an ``__init__`` that takes them (by keyword, or by
position in table order), equality over them, frozen instances, ``replace`` and where
each value came from.

Not dataclasses: a dataclass generates and compiles its methods with ``exec`` at every
start (~1-2 ms per class here, ~10 ms for the settings), while these methods are written
once and read the table, which every other use of the settings reads anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from ..errors import ConfigError, InvalidValue
from ..records import Record
from .kinds import Kind

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self, dataclass_transform

    from .entries import Entry
else:

    def dataclass_transform(**_: object) -> Callable[[type], type]:
        """What typing's does at run time that matters here: nothing."""
        return lambda cls: cls


class Key(Record):
    """One row of the settings table (its ``name`` is the attribute that declares it)."""

    __slots__ = ("default", "help", "host", "kind", "metavar", "name", "required", "secret")
    # What a key has in common with a slot: given to __init__, compared, made by default.
    init = True
    compare = True
    factory: Callable[[], Any] | None = None

    def __init__(
        self, name: str, kind: Kind, default: Any, help: str, secret: bool, metavar: str,
        host: bool, required: bool = False,
    ) -> None:  # fmt: skip
        self.name = name
        self.kind = kind
        self.default = default
        self.help = help
        self.secret = secret
        self.metavar = metavar
        self.host = host  # a hosts-file line (one host's knock) may set it
        self.required = required  # no default: the value must be given

    def named(self, name: str) -> Key:
        return Key(name, self.kind, self.default, self.help, self.secret, self.metavar,
                   self.host, self.required)  # fmt: skip

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


class Slot(Record):
    """A value of a settings object that is not a key: ``init=False`` for what the keys
    build (set in ``__post_init__``); ``compare=False`` for what equality ignores."""

    __slots__ = ("compare", "default", "factory", "init", "name")

    def __init__(
        self, name: str, default: Any, factory: Callable[[], Any] | None, init: bool,
        compare: bool,
    ) -> None:  # fmt: skip
        self.name = name
        self.default = default
        self.factory = factory
        self.init = init
        self.compare = compare


_NONE: Any = object()  # no default: the value must be given, or is made in __post_init__


def opt(
    default: Any, kind: Kind, help: str, *, secret: bool = False, metavar: str = "",
    host: bool = False, required: bool = False,
) -> Any:  # fmt: skip
    """Declare one settings key: its default (as written), kind and help, and whether a
    hosts-file line may set it (``host``). A ``required`` key's default stands for "not
    given" and is kept as it is."""
    value = default if required else kind(default)
    return _Declared(Key, (kind, value, help, secret, metavar, host, required))


def slot(
    default: Any = _NONE, *, factory: Callable[[], Any] | None = None, init: bool = True,
    compare: bool = True,
) -> Any:  # fmt: skip
    """Declare a value that is not a key (a default, or a ``factory`` that makes one)."""
    return _Declared(Slot, (default, factory, init, compare))


class _Declared:
    """What ``opt()`` and ``slot()`` return: a row's values, until its class names it and
    the row is made once, named (each of a Record's fields is a checked assignment)."""

    __slots__ = ("args", "row")

    def __init__(self, row: type[Key] | type[Slot], args: tuple[Any, ...]) -> None:
        self.row = row
        self.args = args


def _fields_of(cls: type[Table]) -> tuple[Key | Slot, ...]:
    """The base's fields, then this class's own (one declared again keeps its place)."""
    fields = {f.name: f for f in cls.FIELDS}
    for name, value in list(vars(cls).items()):
        if isinstance(value, _Declared):
            fields[name] = value.row(name, *value.args)
            delattr(cls, name)  # the instance holds the value; the table holds the row
    for name, note in vars(cls).get("__annotations__", {}).items():
        if name not in fields and not str(note).startswith(("ClassVar", "Final")):
            raise TypeError(f"{cls.__name__}.{name}: declare it with opt() or slot()")
    return tuple(fields.values())


@dataclass_transform(frozen_default=True)  # the type checker sees each key's __init__ argument
class Table:
    """What every settings object offers: its rows, its values, where each came from."""

    FIELDS: ClassVar[tuple[Key | Slot, ...]] = ()  # in table order
    BLOCKS: ClassVar[frozenset[str]] = frozenset()  # block names a config file may hold
    BLOCK: ClassVar[str] = ""  # the block this table reads ("" for a file's top level)
    FLAGS: ClassVar[bool] = False  # takes flagN keys
    _ROWS: ClassVar[dict[str, Key]] = {}
    _COMPARED: ClassVar[tuple[str, ...]] = ()
    if TYPE_CHECKING:
        origins: Mapping[str, str]
        flags: Mapping[int, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.FIELDS = _fields_of(cls)
        cls._ROWS = {f.name: f for f in cls.FIELDS if isinstance(f, Key)}
        cls._COMPARED = tuple(f.name for f in cls.FIELDS if f.compare)

    def __init__(self, *args: Any, **values: Any) -> None:
        if args:
            values = self._positional(args, values)
        put = object.__setattr__
        for f in self.FIELDS:
            if f.init and f.name in values:
                put(self, f.name, values.pop(f.name))
            elif f.factory is not None:
                put(self, f.name, f.factory())
            elif f.default is not _NONE:
                put(self, f.name, f.default)
            elif f.init:
                raise TypeError(f"{type(self).__name__}() needs {f.name}")
        if values:
            raise TypeError(f"{type(self).__name__}() takes no argument {next(iter(values))!r}")
        self.__post_init__()

    def _positional(self, args: tuple[Any, ...], values: dict[str, Any]) -> dict[str, Any]:
        names = [f.name for f in self.FIELDS if f.init]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments")
        for name, value in zip(names, args, strict=False):
            if name in values:
                raise TypeError(f"{type(self).__name__}() got {name!r} twice")
            values[name] = value
        return values

    def __post_init__(self) -> None:
        """Check and build what the values make together (each table has its own)."""

    def replace(self, **changes: Any) -> Self:
        """A new object with ``changes``, checked as the first was."""
        given = {f.name: getattr(self, f.name) for f in self.FIELDS if f.init}
        return type(self)(**{**given, **changes})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._COMPARED)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self._COMPARED))

    @classmethod
    def table(cls) -> list[Key]:
        return list(cls._ROWS.values())

    @classmethod
    def read_blocks(cls, blocks: list[Entry], loose: dict[str, str]) -> dict[str, Any]:
        """A config file's blocks (of ``BLOCKS``) as constructor arguments; ``loose``: where
        the file's top-level values came from, which a block may replace."""
        return {}

    @classmethod
    def row(cls, name: str) -> Key | None:
        return cls._ROWS.get(name)

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


def per_host_keys(cls: type[Table]) -> list[str]:
    """The keys a hosts-file line may set, in table order."""
    return [k.name for k in cls.table() if k.host]
