"""What a config file is made of, whatever its format: entries and blocks.

Apart from the readers (``general.py`` for Config::General, ``files.py`` for TOML),
which are loaded only when a file is read.
"""

from __future__ import annotations

from ..records import Record


class Entry(Record):
    __slots__ = ("key", "line", "source", "value")

    def __init__(self, key: str, value: str | Block, source: str, line: int) -> None:
        self.key = key  # as written (the loader lower-cases later)
        self.value = value  # str for options; Block for <name label> ... </name>
        self.source = source  # path of the file the entry came from (an included file names itself)
        self.line = line  # 1-based line where the entry starts


class Block(Record):
    __slots__ = ("entries", "label", "name")

    def __init__(self, name: str, label: str, entries: tuple[Entry, ...]) -> None:
        self.name = name  # e.g. "door"
        self.label = label  # e.g. "ssh" ("" when the block has none)
        self.entries = entries
