"""Targets for ``aioknock run``: arguments, ``--hosts FILE`` or ``--hosts -`` (stdin).

A hosts file has one host per line, ``#`` comments and blank lines, and a line
may override settings for its host: ``db1.example port=2222 flag0=3`` (the keys
the settings table marks per-host). A line's values beat the config file's ``<host>``
blocks, which beat its top level (``ClientSettings.for_host``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable, Iterator

from ..asyncio.hostknock import HostSpec, host_settings
from ..config.regular import MAX_HOSTS, read_regular
from ..config.settings import ClientSettings
from ..config.values import Given, canonical, read_values
from ..errors import ConfigError

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any


def parse_line(line: str, where: str, base: ClientSettings | None = None) -> HostSpec | None:
    """One hosts-file line; None for a blank or comment line. With ``base``, the host's
    settings are checked whole now, so that a bad line is named before anything is sent."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    host, rest = words[0], words[1:]
    if "=" in host:
        raise ConfigError(f"expected a host first, got {host!r}", source=where)
    if not host.isprintable():
        raise ConfigError(f"{host!r} is not a host name or address", source=where)
    overrides: dict[str, Any] = {}
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(f"expected key=value after the host, got {word!r}", source=where)
        overrides[canonical(key)] = value
    if base is None:  # each value checked, so that a bad one names its line
        if not overrides:
            return host
        read_values(ClientSettings, [Given(k, v, where) for k, v in overrides.items()], host=True)
        return host, overrides
    # The host's settings made whole now (its <host> blocks, then the line's own values):
    # a bad one is named before anything is sent, and nothing is read again at the knock.
    own = base.for_host(host)  # an error names the block's line and the host
    if not overrides:
        return host if own is base else (host, own)
    try:
        return host_settings((host, overrides), base, where)
    except ConfigError as exc:
        raise ConfigError(f"{exc.message} (for {host})", source=where, key=exc.key) from None


def from_lines(
    lines: Iterable[str], name: str, base: ClientSettings | None = None
) -> Iterator[HostSpec]:
    for number, line in enumerate(lines, 1):
        target = parse_line(line, f"{name}:{number}", base)
        if target is not None:
            yield target


def read_hosts_file(path: str, base: ClientSettings | None = None) -> list[HostSpec]:
    try:
        text = read_regular(path, MAX_HOSTS).decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read hosts file: {exc.strerror}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read hosts file: not UTF-8 text", source=path) from None
    except ValueError:
        raise ConfigError("cannot read hosts file: not a usable file name", source=path) from None
    targets = list(from_lines(text.split("\n"), path, base))
    if not targets:
        raise ConfigError("no hosts in the hosts file", source=path)
    return targets


async def stdin_hosts(base: ClientSettings | None = None) -> AsyncIterator[HostSpec]:
    """Hosts from stdin as they arrive, read in a worker thread so the loop never blocks."""
    import asyncio  # here: a one-host run has no event loop, and imports none

    number = 0
    while line := await asyncio.to_thread(sys.stdin.readline):
        number += 1
        target = parse_line(line, f"standard input:{number}", base)
        if target is not None:
            yield target
