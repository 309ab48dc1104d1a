"""What a config file is made of, whatever its format: entries and blocks.

Apart from the readers (``general.py`` for Config::General, ``files.py`` for TOML),
which are loaded only when a file is read.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    key: str  # as written (the loader lower-cases later)
    value: str | Block  # str for options; Block for <name label> ... </name>
    source: str  # path of the file the entry came from (an included file names itself)
    line: int  # 1-based line where the entry starts


class Block(NamedTuple):
    name: str  # e.g. "door"
    label: str  # e.g. "ssh" ("" when the block has none)
    entries: tuple[Entry, ...]
