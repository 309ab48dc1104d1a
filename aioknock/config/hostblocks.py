"""``<host PATTERN>`` blocks: per-host settings in the client's config file, as ssh_config's
``Host``.

A block names shell-style patterns (``fnmatch``; case-insensitive; several separated by
blanks; ``!pattern`` excludes) and holds what a hosts-file line may set, and ``key_file``.
For each key, the first block that matches the host and sets it wins. A block's values
(and its key file) are read when the file loads; ``ClientSettings.for_host`` applies them,
once per combination of matching blocks, over the file's own values only: what the command
line, the environment or a program's argument set stays as it is.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from ..errors import ConfigError, shown
from ..records import Record
from .entries import Block, Entry
from .table import Table
from .values import (
    Given,
    canonical,
    check_key,
    is_flag,
    place,
    placed,
    read_key_file,
    read_values,
)

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T", bound=Table)

NAME = "host"
PASSPHRASE = ("key", "key_file")  # one unit: a block that sets either sets both
_WILD = r"[*?\[]"


def block_keys(cls: type[Table]) -> list[str]:
    """What a block may set, in table order: a hosts-file line's keys, and ``key_file``
    (read relative to the config file, which is trusted as the top level is; a hosts file
    may come from another program's output, so a line may not name files to read)."""
    return [k.name for k in cls.table() if k.host or k.name == "key_file"]


class HostBlock(Record):
    """One block as read: its patterns, and its values as objects with their file:line."""

    __slots__ = ("label", "names", "negative", "origins", "positive", "values", "where")

    def __init__(
        self, label: str, where: str, values: Mapping[str, Any], origins: Mapping[str, str],
        positive: re.Pattern[str], negative: re.Pattern[str] | None, names: frozenset[str] | None,
    ) -> None:  # fmt: skip
        self.label = label  # the patterns as written
        self.where = where  # file:line of the block's start
        self.values = values  # settings, and flags as "flagN"
        self.origins = origins
        self.positive = positive
        self.negative = negative
        self.names = names  # all patterns literal: those names

    def matches(self, host: str) -> bool:
        """ssh_config's rule: a pattern matches and no ``!pattern`` does."""
        name = host.lower()
        if self.negative is not None and self.negative.match(name):
            return False
        return self.positive.match(name) is not None


class HostBlocks(Record):
    """A file's blocks, and which of the settings' values they may replace."""

    __slots__ = ("_named", "_wild", "blocks", "loose")

    def __init__(self, blocks: tuple[HostBlock, ...], loose: Mapping[str, str]) -> None:
        self.blocks = blocks
        # Origin of each value the file itself set (a key absent here: only its default
        # may be replaced); a value whose origin has changed since (an argument) stays.
        self.loose = loose
        named: dict[str, list[int]] = {}
        for i, block in enumerate(blocks):
            for name in block.names or ():
                named.setdefault(name, []).append(i)
        self._named = {k: tuple(v) for k, v in named.items()}
        self._wild = tuple(i for i, b in enumerate(blocks) if b.names is None)

    def matching(self, host: str) -> tuple[int, ...]:
        """The blocks that match ``host``, in file order; literal names by look-up, so a
        file with a block per host does not scan them all for each host."""
        wild = (i for i in self._wild if self.blocks[i].matches(host))
        found = {*self._named.get(host.lower(), ()), *wild}
        return tuple(sorted(found))

    def apply(self, settings: T, combo: Sequence[int]) -> T:
        """``settings`` with the values of blocks ``combo``, the first winning per key,
        where the key's value is the file's own or the default."""
        kept: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for i in combo:
            block = self.blocks[i]
            for key, value in block.values.items():
                if key not in origins and self._free(settings, key):
                    kept[key], origins[key] = value, block.origins[key]
                else:
                    origins.setdefault(key, "")  # taken by an earlier block, or pinned
        if not kept:
            return settings
        flags = {int(k[4:]): kept.pop(k) for k in list(kept) if is_flag(k)}
        merged = {**settings.origins, **{k: v for k, v in origins.items() if v}}
        try:
            changed = settings.replace(**kept, flags={**settings.flags, **flags}, origins=merged)
        except ConfigError as exc:
            raise placed(exc, merged, self.blocks[combo[0]].where) from None
        return changed

    def _free(self, settings: Table, key: str) -> bool:
        keys = PASSPHRASE if key in PASSPHRASE else (key,)
        return all(settings.origin(k) == self.loose.get(k, "default") for k in keys)


def read_host_blocks(cls: type[Table], entries: Iterable[Entry]) -> tuple[HostBlock, ...]:
    """``<host PATTERN>`` blocks (or TOML ``[host."PATTERN"]`` tables), each value read now."""
    return tuple(_read_block(cls, entry) for entry in entries)


def _read_block(cls: type[Table], entry: Entry) -> HostBlock:
    block = entry.value
    assert not isinstance(block, str)
    where = f"{entry.source}:{entry.line}" if entry.line else entry.source
    positive, negative, names = _patterns(block.label, where)
    read = read_values(cls, _given(cls, block, where))
    values: dict[str, Any] = {**read.values, **{f"flag{n}": v for n, v in read.flags.items()}}
    origins = dict(read.origins)
    _passphrase(values, origins)
    return HostBlock(block.label, where, values, origins, positive, negative, names)


def _patterns(
    label: str, where: str
) -> tuple[re.Pattern[str], re.Pattern[str] | None, frozenset[str] | None]:
    words = label.split()
    if not words:
        raise ConfigError("a host block needs a pattern, e.g. <host *.example>", **place(where))
    positive = [w.lower() for w in words if not w.startswith("!")]
    negative = [w[1:].lower() for w in words if w.startswith("!")]
    if "" in negative:
        raise ConfigError("'!' needs a pattern after it, e.g. !bastion.example", **place(where))
    if not positive:
        raise ConfigError(f"host block {shown(label)!r} only excludes, so it matches no host; "
                          f"add what it is for, e.g. '* {shown(words[0])}'",
                          **place(where))  # fmt: skip
    literal = not negative and not any(re.search(_WILD, p) for p in positive)
    names = frozenset(positive) if literal else None
    return _regex(positive), _regex(negative) if negative else None, names


def _regex(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


def _given(cls: type[Table], block: Block, where: str) -> list[Given]:
    given: dict[str, Given] = {}
    for entry in block.entries:
        at = f"{entry.source}:{entry.line}" if entry.line else entry.source
        if not isinstance(entry.value, str):
            raise ConfigError(f"unexpected block <{shown(entry.key)}> inside a host block",
                              **place(at))  # fmt: skip
        key = canonical(entry.key)
        if not key:
            raise ConfigError("a value without a key; expected 'key = value'", **place(at))
        _check_key(cls, key, at)
        if (before := given.get(key)) is not None:
            raise ConfigError(f"set twice in the host block at {where}, at {before.where} and "
                              f"{at}; keep one", key=key, **place(at))  # fmt: skip
        given[key] = Given(key, entry.value, at)
    return list(given.values())


def _check_key(cls: type[Table], key: str, at: str) -> None:
    """An unknown key, or one that is not per-host, is an error naming its line."""
    row = check_key(cls, key, at)  # unknown: the error, with a did-you-mean
    if row is not None and not (row.host or row.name == "key_file"):
        raise ConfigError(f"not a per-host setting; a host block can set "
                          f"{', '.join(block_keys(cls))}, flagN", key=key,
                          **place(at))  # fmt: skip


def _passphrase(values: dict[str, Any], origins: dict[str, str]) -> None:
    """``key`` and ``key_file`` as one unit; a key file is read now, as the top level's is
    (relative to the config file, the same checks)."""
    key, key_file = values.get("key"), values.get("key_file")
    if key is None and key_file is None:
        return
    if key and key_file:
        raise ConfigError(f"both key ({origins['key']}) and key_file are set; keep one",
                          key="key_file", **place(origins["key_file"]))  # fmt: skip
    at = origins["key_file"] if key_file else origins.get("key") or origins["key_file"]
    if key_file:
        values["key"], path = read_key_file(key_file, at)
        origins["key"] = f"{at} ({path})"
    else:
        values["key"], values["key_file"] = key or "", ""
        origins["key"] = origins["key_file"] = at
