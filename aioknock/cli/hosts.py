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
# What a host line may set: what its knock carries and how it is sent. The rest (key_file,
# logtofile, sequence, concurrency, output...) belongs to the whole run.
PER_HOST = (
    "port", "client", "knock", "portspan", "portbytes", "encrypt", "cipher", "key", "iv",
    "localtime", "timeout", "jitter",
)  # fmt: skip


def parse_line(line: str, where: str, base: ClientSettings | None = None) -> Target | None:
    """One hosts-file line; None for a blank or comment line. With ``base``, the host's
    settings are checked whole now, so that a bad line is named before anything is sent."""
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
        kind = FLAG if _FLAG.fullmatch(key) else table[key].kind if key in PER_HOST else None
        if kind is None:
            raise ConfigError("not a setting a host line can override (these can: "
                              f"{', '.join(PER_HOST)}, flagN)", source=where, key=key)  # fmt: skip
        try:  # checked here, so that a bad value names its line instead of ending the run
            kind(value)
        except (ValueError, TypeError):
            raise ConfigError(f"expected {kind.expected}, got {value!r}", source=where,
                              key=key) from None  # fmt: skip
        overrides[key] = value
    if base is not None and overrides:
        _check(host, base, overrides, where)
    return (host, overrides) if overrides else host


def _check(host: str, base: ClientSettings, overrides: dict[str, Any], where: str) -> None:
    from ..asyncio.fleet import with_overrides
    from ..config.loader import check_sendable

    try:
        check_sendable(with_overrides(base, overrides) if not base.sequence else base)
    except ConfigError as exc:
        raise ConfigError(f"{exc.message} (for {host})", source=where, key=exc.key) from None
    if base.sequence:
        raise ConfigError("a fixed -sequence has no per-host settings", source=where)


def from_lines(
    lines: Iterable[str], name: str, base: ClientSettings | None = None
) -> Iterator[Target]:
    for number, line in enumerate(lines, 1):
        target = parse_line(line, f"{name}:{number}", base)
        if target is not None:
            yield target


def read_hosts_file(path: str, base: ClientSettings | None = None) -> list[Target]:
    try:
        with open(path, encoding="utf-8") as f:
            targets = list(from_lines(f, path, base))
    except OSError as exc:
        raise ConfigError(f"cannot read hosts file: {exc.strerror}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read hosts file: not UTF-8 text", source=path) from None
    if not targets:
        raise ConfigError("no hosts in the hosts file", source=path)
    return targets


async def stdin_hosts(base: ClientSettings | None = None) -> AsyncIterator[Target]:
    """Hosts from stdin as they arrive, read in a worker thread so the loop never blocks."""
    number = 0
    while line := await asyncio.to_thread(sys.stdin.readline):
        number += 1
        target = parse_line(line, f"standard input:{number}", base)
        if target is not None:
            yield target
