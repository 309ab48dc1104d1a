"""The one path every value takes: a config file's line, an environment variable, a
command-line flag, a hosts-file line, a ``<door>`` block, a library argument.

A value arrives as ``Given`` (key, raw value, where it came from); its row in the
table says whether it may appear there and which kind reads it; the kind's error,
or the settings object's own (a ``ConfigError`` naming only its key), gets the
place attached here, and nowhere else.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Mapping

from ..codec.fields import flag_number
from ..errors import ConfigError, closest
from ..logs import get_logger
from ..records import Record
from .kinds import FLAG
from .regular import MAX_KEY, read_regular
from .table import Key, Table, per_host_keys

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, TypeVar

    T = TypeVar("T", bound=Table)

log = get_logger("aioknock.config")


class Given(Record):
    """One value as it was given, before its kind read it."""

    __slots__ = ("key", "raw", "where")

    def __init__(self, key: str, raw: object, where: str) -> None:
        self.key = key  # canonical (lower-case, flag007 as flag7)
        self.raw = raw
        self.where = where  # "file:line", "environment AIOKNOCK_PORT", "command line", ...


def canonical(key: str) -> str:
    """Keys are case-insensitive, and flag007 is flag7 (as -flag007 and FLAG007 are)."""
    key = key.lower()
    if (n := flag_number(key, "flag")) is not None:
        return f"flag{n}"
    return key


def is_flag(key: str) -> bool:
    """Whether ``key`` (canonical) is a flagN."""
    return flag_number(key, "flag") is not None


def place(where: str) -> dict[str, Any]:
    """``file:line`` as ConfigError's source and line; anything else as its source."""
    source, _, line = where.rpartition(":")
    if source and line.isdigit():
        return {"source": source, "line": int(line)}
    return {"source": where}


def placed(exc: ConfigError, where: Mapping[str, str], fallback: str | None = None) -> ConfigError:
    """``exc`` with the place of its key's value attached, if it has none; ``fallback``
    (the file, the block) when the key was not given there: a key that is missing."""
    if exc.source is not None:
        return exc
    at = where.get(exc.key or "")
    if at is None or at == "default":
        at = fallback
    if at is None:
        return exc
    return ConfigError(exc.message, key=exc.key, **place(at))


def check_key(cls: type[Table], key: str, where: str, *, host: bool = False) -> Key | None:
    """The row of ``key`` (None for a flagN), or a ConfigError saying why it cannot be here."""
    row = cls.row(key)
    flag = cls.FLAGS and is_flag(key)
    if host and not (flag or (row is not None and row.host)):
        keys = ", ".join(per_host_keys(cls))
        raise ConfigError(f"not a setting a host line can override (these can: {keys}, flagN)",
                          key=key, **place(where))  # fmt: skip
    if row is not None or flag:
        return row
    if not cls.BLOCK:
        close = closest(key, (k.name for k in cls.table()))
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(f"unknown setting{hint}", key=key, **place(where))
    expected = ", ".join(k.name for k in cls.table())
    raise ConfigError(f"unknown {cls.BLOCK} setting; expected {expected}", key=key,
                      **place(where))  # fmt: skip


def read_value(row: Key, raw: object, where: str | None = None) -> Any:
    """``raw`` read by the row's kind; the error names the key (and ``where``)."""
    try:
        return row.read(raw)
    except ConfigError as exc:
        raise placed(exc, {}, where) from None


class Values:
    """Values read from ``Given`` ones: settings, flags, and where each came from."""

    __slots__ = ("flags", "origins", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.flags: dict[int, int] = {}
        self.origins: dict[str, str] = {}


def read_values(cls: type[Table], given: Iterable[Given], *, host: bool = False) -> Values:
    out = Values()
    for item in given:
        row = check_key(cls, item.key, item.where, host=host)
        out.origins[item.key] = item.where
        if row is not None:
            out.values[item.key] = read_value(row, item.raw, item.where)
            continue
        value = read_value(_FLAG_ROW.named(item.key), item.raw, item.where)
        if value > 255:
            log.warning("%s: %s = %d is above 255; using %d (mod 256)",
                        item.where, item.key, value, value % 256)  # fmt: skip
        out.flags[int(item.key[4:])] = value % 256
    return out


_FLAG_ROW = Key("flagN", FLAG, None, "", False, "", True)


def make(cls: type[T], read: Values, fallback: str | None = None, **extra: Any) -> T:
    """The settings object; what it finds wrong names the place of the key at fault
    (``fallback``: the place of an error that belongs to no key, such as a block's)."""
    factory: Callable[..., T] = cls
    try:
        return factory(**read.values, **extra, flags=read.flags, origins=read.origins)
    except ConfigError as exc:
        raise placed(exc, read.origins, fallback) from None


def _warn_readable(path: Path, where: str) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s: key_file %s can be read by others (mode %o); chmod 600 it",
            where, path, stat.S_IMODE(mode),
        )  # fmt: skip


def config_relative(value: str, where: str) -> Path:
    """A file name as given; a relative one in a config file is relative to that file
    (a daemon's working folder is ``/``)."""
    from pathlib import Path  # a key file's path: not for a run without one

    path = Path(value).expanduser()
    source = place(where)
    if not path.is_absolute() and "line" in source:
        return Path(source["source"]).parent / path
    return path


def first_line(text: str) -> str:
    """A key file's passphrase: its first line without the line ending (LF or CR LF),
    every other character kept (spaces, a lone CR, a form feed), as the key's bytes."""
    line = text.split("\n", 1)[0]
    return line[:-1] if line.endswith("\r") and "\n" in text else line


def read_key_file(value: str, where: str) -> tuple[str, Path]:
    key_path = config_relative(value, where)
    at = {"key": "key_file", **place(where)}
    try:
        line = first_line(read_regular(key_path, MAX_KEY).decode("utf-8"))
    except UnicodeDecodeError:  # before ValueError, which it is too
        raise ConfigError(f"{key_path} is not UTF-8 text", **at) from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{value!r} is not a usable file name", **at) from None
    except FileNotFoundError:
        raise ConfigError(f"{key_path} does not exist; make a new key with: aioknock keygen "
                          f"-o {key_path} (and give the clients the same file)",
                          **at) from None  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"cannot read {key_path}: {exc.strerror or exc}", **at) from None
    if not line:
        raise ConfigError(f"{key_path} has an empty first line", **at)
    _warn_readable(key_path, where)
    return line, key_path


def override(settings: T, overrides: Mapping[str, Any], where: str, *, host: bool = False) -> T:
    """``settings`` with some keys replaced, each read by its kind (None: not given).

    An error names ``where`` (a hosts-file line, a library argument): what the
    override made of the settings is what is wrong, wherever the other values came from.
    """
    given = [Given(canonical(k), v, where) for k, v in overrides.items() if v is not None]
    read = read_values(type(settings), given, host=host)
    if not given:
        return settings
    if read.values.get("key_file"):
        if read.values.get("key"):
            raise ConfigError("both key and key_file are given; keep one", key="key_file",
                              **place(where))  # fmt: skip
        read.values["key"], _ = read_key_file(read.values["key_file"], where)
    try:
        changed = settings.replace(
            **read.values, flags={**settings.flags, **read.flags},
            origins={**settings.origins, **read.origins},
        )  # fmt: skip
    except ConfigError as exc:
        raise placed(exc, {}, where) from None
    return changed
