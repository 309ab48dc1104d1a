"""Targets for ``aioknock run``: arguments, ``--hosts FILE`` or ``--hosts -`` (stdin).

A hosts file has one host per line, ``#`` comments and blank lines, and a line
may override settings for its host: ``db1.example port=2222 flag0=3``.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from ..config.settings import FLAG, ClientSettings
from ..errors import ConfigError

Target = str | tuple[str, dict[str, Any]]
_FLAG = re.compile(r"flag\d+")


def parse_line(line: str, where: str) -> Target | None:
    """One hosts-file line; None for a blank or comment line."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    host, rest = words[0], words[1:]
    if "=" in host:
        raise ConfigError(f"expected a host first, got {host!r}", source=where)
    table = {k.name: k for k in ClientSettings.table()}
    overrides: dict[str, Any] = {}
    for word in rest:
        key, eq, value = word.partition("=")
        key = key.lower()
        if not eq:
            raise ConfigError(f"expected key=value after the host, got {word!r}", source=where)
        kind = FLAG if _FLAG.fullmatch(key) else table[key].kind if key in table else None
        if kind is None:
            raise ConfigError("not a setting a host line can override", source=where, key=key)
        try:  # checked here, so that a bad value names its line instead of ending the run
            kind(value)
        except (ValueError, TypeError):
            raise ConfigError(f"expected {kind.expected}, got {value!r}", source=where,
                              key=key) from None  # fmt: skip
        overrides[key] = value
    return (host, overrides) if overrides else host


def from_lines(lines: Iterable[str], name: str) -> Iterator[Target]:
    for number, line in enumerate(lines, 1):
        target = parse_line(line, f"{name}:{number}")
        if target is not None:
            yield target


def read_hosts_file(path: str) -> list[Target]:
    try:
        with open(path, encoding="utf-8") as f:
            return list(from_lines(f, path))
    except OSError as exc:
        raise ConfigError(f"cannot read hosts file: {exc.strerror}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read hosts file: not UTF-8 text", source=path) from None


async def stdin_hosts() -> AsyncIterator[Target]:
    """Hosts from stdin as they arrive, read in a worker thread so the loop never blocks."""
    number = 0
    while line := await asyncio.to_thread(sys.stdin.readline):
        number += 1
        target = parse_line(line, f"standard input:{number}")
        if target is not None:
            yield target
