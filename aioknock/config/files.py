"""Config files as layers of values, each value with the file and line it came from.

Perl's Config::General format (``general.py`` reads it exactly) or, for ``*.toml``,
TOML. Keys are checked against the table as they are read, so an unknown key or a
key set twice is reported with its line; values are read by their kinds later, in
``values.py``, like every other layer's.
"""

from __future__ import annotations

import re

from ..errors import ConfigError, shown
from .entries import Block, Entry
from .regular import MAX_CONFIG, read_regular
from .table import Table
from .values import canonical, check_key, is_flag

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


class Layer:
    """One source of values with the place each value came from."""

    def __init__(self, label: str) -> None:
        self.blocks: list[Entry] = []
        self.label = label
        self.values: dict[str, Any] = {}
        self.where: dict[str, str] = {}

    def add(self, key: str, value: Any, where: str) -> None:
        self.values[key] = value
        self.where[key] = where


def _read_general(path: Path, cls: type[Table]) -> Layer:
    from .general import read_general  # the reader, when a file is read: not before

    layer = Layer(str(path))
    first: dict[str, Entry] = {}
    try:
        entries = read_general(path)
    except ConfigError as exc:
        if exc.key is None or _known(cls, canonical(exc.key)):
            raise
        # Not a setting's name: it may be a passphrase (a key file given as the
        # configuration, or included), so the line is not shown.
        raise ConfigError("a line that is not 'key = value' (not shown: it may be a secret)",
                          source=exc.source, line=exc.line) from None  # fmt: skip
    for entry in entries:
        key = canonical(entry.key)
        if isinstance(entry.value, Block) and entry.key.lower() in cls.BLOCKS:
            layer.blocks.append(entry)
            continue
        if isinstance(entry.value, Block):
            raise ConfigError(f"unexpected block <{shown(entry.key)}>; {_takes(cls)}",
                              source=entry.source, line=entry.line)  # fmt: skip
        if not key:
            raise ConfigError(
                "a value without a key; expected 'key = value'",
                source=entry.source,
                line=entry.line,
            )
        check_key(cls, key, f"{entry.source}:{entry.line}")
        if (before := first.get(key)) is not None:
            if before.source == entry.source:
                where = f"lines {before.line} and {entry.line}"
            else:  # one of them came through <<include>>
                where = f"{before.source}:{before.line} and {entry.source}:{entry.line}"
            raise ConfigError(
                f"set twice, at {where}; keep one",
                source=entry.source, line=entry.line, key=key,
            )  # fmt: skip
        first[key] = entry
        layer.add(key, entry.value, f"{entry.source}:{entry.line}")
    return layer


def _takes(cls: type[Table]) -> str:
    if not cls.BLOCKS:
        return "this file takes only key = value lines"
    blocks = " and ".join(f"<{name} ...>" for name in sorted(cls.BLOCKS))
    return f"this file takes key = value lines and {blocks} blocks"


def _toml_line(lines: list[str], raw_key: str) -> int:
    """The line (1-based) that sets top-level ``raw_key``; 0 when it cannot be told."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(raw_key)}["']?\s*=""")
    return next((i for i, t in enumerate(lines, 1) if pattern.match(t)), 0)


def _toml_duplicate(path: Path, lines: list[str]) -> None:
    """Name both lines of a top-level key set twice (tomllib names only the second)."""
    seen: dict[str, int] = {}
    key = re.compile(r"""^\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")
    for number, text in enumerate(lines, 1):
        if text.lstrip().startswith("["):
            return
        if (m := key.match(text)) is None:
            continue
        name = canonical(m.group(1))
        if name in seen:
            raise ConfigError(
                f"set twice, at lines {seen[name]} and {number}; keep one",
                source=str(path), line=number, key=name,
            )  # fmt: skip
        seen[name] = number


def _read_toml(path: Path, cls: type[Table]) -> Layer:
    layer = Layer(str(path))
    try:
        text = read_regular(path, MAX_CONFIG).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read file: not UTF-8 text", source=str(path)) from None
    import tomllib  # when a TOML file is read: not before

    lines = text.splitlines()
    _toml_duplicate(path, lines)
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else len(lines) or None
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigError(f"not valid TOML: {reason}", source=str(path), line=line) from None
    except ValueError:  # tomllib's int() of a number of over 4,300 digits
        raise ConfigError("not valid TOML: a number too long to read", source=str(path)) from None
    for raw_key, value in data.items():
        key = canonical(raw_key)
        line = _toml_line(lines, raw_key)
        where = f"{path}:{line}" if line else str(path)
        if raw_key.lower() in cls.BLOCKS and isinstance(value, dict):
            layer.blocks += _toml_blocks(path, lines, raw_key, value)
            continue
        check_key(cls, key, where)
        if isinstance(value, dict | list):
            raise ConfigError(
                "expected a single value", source=str(path), line=line or None, key=key
            )
        if key in layer.values:  # Port and port: two TOML keys, one setting
            raise ConfigError(
                f"set twice, at {layer.where[key]} and line {line}; keep one",
                source=str(path), line=line or None, key=key,
            )  # fmt: skip
        layer.add(key, value, where)
    return layer


def _toml_blocks(path: Path, lines: list[str], name: str, tables: dict[str, Any]) -> list[Entry]:
    """``[door.ssh]`` tables as the same blocks a Config::General ``<door ssh>`` gives."""
    out: list[Entry] = []
    for label, body in tables.items():
        header = _toml_header(name, label)
        line = next((i for i, t in enumerate(lines, 1) if header.match(t)), 0)
        if not isinstance(body, dict):
            raise ConfigError(f"expected a table [{name}.{label}]", source=str(path),
                              line=line or None)  # fmt: skip
        entries = tuple(_toml_entry(path, lines, line, k, v) for k, v in body.items())
        out.append(Entry(name, Block(name, label, entries), str(path), line))
    return out


def _toml_header(name: str, label: str) -> re.Pattern[str]:
    """``[door.ssh]``, ``[host."*.example"]`` or ``[host.'*.example']``."""
    basic = '"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'
    forms = "|".join(re.escape(form) for form in (label, basic, f"'{label}'"))
    return re.compile(rf"^\s*\[\s*{re.escape(name)}\s*\.\s*(?:{forms})\s*\]")


def _toml_entry(path: Path, lines: list[str], start: int, key: str, value: Any) -> Entry:
    """One value of a block's table, as text (what a Config::General block holds)."""
    line = _toml_line(lines[start:], key) + start if start else 0
    if isinstance(value, dict | list):
        raise ConfigError("expected a single value", source=str(path), line=line or None,
                          key=canonical(key))  # fmt: skip
    return Entry(key, str(value).lower() if isinstance(value, bool) else str(value), str(path),
                 line)  # fmt: skip


def read_file(path: Path, cls: type[Table]) -> Layer:
    """One config file as a layer: Config::General, or TOML for ``*.toml``."""
    if not path.exists():
        raise ConfigError("no such config file", source=str(path))
    if not path.is_file():
        raise ConfigError("not a config file: not a regular file (a directory, a FIFO?)",
                          source=str(path))  # fmt: skip
    if path.suffix.lower() == ".toml":
        return _read_toml(path, cls)
    return _read_general(path, cls)


def _known(cls: type[Table], key: str) -> bool:
    return cls.row(key) is not None or (cls.FLAGS and is_flag(key))
