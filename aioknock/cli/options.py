"""Command-line flags generated from the settings table.

Every key gets the prototype's spelling (``-port 22``, ``-notest``) and the
usual one (``--port 22``, ``--no-test``). ``-flagN`` has no fixed N, so it is
taken out of argv before argparse sees the rest.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..codec.fields import flag_number
from ..config.kinds import BOOL_WORDS
from ..config.table import Key, Table
from ..errors import ConfigError

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any


def _spellings(name: str, *, negative: bool = False) -> list[str]:
    dashed = name.replace("_", "-")
    if negative:
        return list(dict.fromkeys([f"-no{name}", f"--no{name}", f"--no-{dashed}"]))
    return list(dict.fromkeys([f"-{name}", f"--{name}", f"--{dashed}"]))


def switch_values(argv: Sequence[str], cls: type[Table]) -> list[str]:
    """``-encrypt no``, ``--encrypt=no``, ``-debug 2``: a switch given an explicit value
    becomes the switch it means (``-noencrypt``); a value that is not one is an error
    that shows the spellings. Only yes/no words (and counts, for ``-debug``) are taken as
    values, so ``-encrypt gate.example`` still knocks gate.example."""
    switches = _switches(cls)
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        key = switches.get(name)
        if key is None or args[i] == "--":
            out.append(args[i])
            i += 1
            continue
        if not eq and i + 1 < len(args) and _is_value(args[i + 1], key):
            value, i = args[i + 1], i + 1
        elif not eq:
            out.append(args[i])
            i += 1
            continue
        out.append(_as_switch(name, key, value))
        i += 1
    return out


def _switches(cls: type[Table]) -> dict[str, Key]:
    return {s: k for k in cls.table() if k.kind.name in ("bool", "level")
            for s in _spellings(k.name)}  # fmt: skip


def _is_value(word: str, key: Key) -> bool:
    word = word.lower()
    return word in BOOL_WORDS or (key.kind.name == "level" and word.isascii() and word.isdigit())


def _as_switch(name: str, key: Key, value: str) -> str:
    word = value.lower()
    if key.kind.name == "level" and word.isascii() and word.isdigit():
        return f"--{key.name}-level={word}"
    if word not in BOOL_WORDS:
        raise ConfigError(f"{name} takes yes or no, got {value!r} (or write -{key.name} / "
                          f"-no{key.name})", source="command line")  # fmt: skip
    return f"-{key.name}" if BOOL_WORDS[word] else f"-no{key.name}"


FLAG_PLACEHOLDER = ("-flagN", "--flagN")


def setting_flags(cls: type[Table]) -> dict[str, str]:
    """Every flag of the table, and its key's name ("": ``-flagN`` itself)."""
    flags = dict.fromkeys(FLAG_PLACEHOLDER, "")
    for key in cls.table():
        flags.update(dict.fromkeys(_flags_of(key), key.name))
    return flags


def _flags_of(key: Key) -> list[str]:
    return [flag for flags, _ in _arguments(key) for flag in flags]


def _arguments(key: Key) -> list[tuple[list[str], dict[str, Any]]]:
    """``add_argument``'s flags and keywords for ``key`` (no help: the help and the manual
    are the table's, manual.py, never argparse's)."""
    positive, negative = _spellings(key.name), _spellings(key.name, negative=True)
    if key.kind.name == "level":  # -debug -debug: a count, as the prototype's
        return [(positive, {"action": "count"}),
                (negative, {"action": "store_const", "const": 0}),
                ([f"--{key.name}-level"], {"type": int})]  # fmt: skip
    if key.kind.name == "bool":
        return [(positive, {"action": "store_const", "const": True}),
                (negative, {"action": "store_const", "const": False})]  # fmt: skip
    return [(positive, {})]


def add_settings(parser: argparse.ArgumentParser, cls: type[Table], argv: Sequence[str]) -> None:
    """The flags of the keys that ``argv`` names, for argparse to parse ``argv``.

    All of them would parse it alike: argparse takes a word for a flag only if it is
    one (nothing is abbreviated, no flag looks like a number), and every flag in ``argv``
    is added. Adding all ~60 keys' ~300 flags would cost ~14 M instructions, 8% of a
    one-knock start."""
    flags = setting_flags(cls)
    named = {flags[word] for a in argv if (word := a.partition("=")[0]) in flags}
    for key in cls.table():
        if key.name in named:
            for spellings, kwargs in _arguments(key):
                parser.add_argument(*spellings, dest=key.name, **kwargs)
    if "" in named:
        parser.add_argument(*FLAG_PLACEHOLDER, dest="_flag_help", metavar="VALUE",
                            action=_FlagPlaceholder)  # fmt: skip


class _FlagPlaceholder(argparse.Action):
    """``-flagN`` itself is only a name in the help; real ones (``-flag0``) are split off first."""

    def __call__(self, parser: Any, ns: Any, values: Any, option: str | None = None) -> None:
        raise ConfigError(
            f"{option}: put the flag's number for N, e.g. -flag0 15", source="command line"
        )


def split_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Take ``-flagN VALUE`` / ``--flagN=VALUE`` out of argv."""
    rest: list[str] = []
    flags: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        flag = _flag_arg(args[i])
        if flag is None:
            rest.append(args[i])
            i += 1
            continue
        number, value = flag
        if value is not None:
            i += 1
        elif i + 1 < len(args) and not _is_option(args[i + 1]):
            value = args[i + 1]
            i += 2
        else:
            raise ConfigError(f"{args[i]} needs a value", source="command line")
        flags[f"flag{number}"] = value
    return rest, flags


def _bare(arg: str) -> str | None:
    """``arg`` without its one or two leading dashes (None if it has none)."""
    return arg[2:] if arg.startswith("--") else arg[1:] if arg.startswith("-") else None


def _flag_arg(arg: str) -> tuple[int, str | None] | None:
    """(N, its value if given as ``=VALUE``) of ``-flagN``/``--FLAGn=VALUE``, else None."""
    name, eq, value = arg.partition("=")
    bare = _bare(name.lower())
    number = None if bare is None else flag_number(bare, "flag")
    return None if number is None else (number, value if eq else None)


def _is_option(arg: str) -> bool:
    """Whether ``arg`` is the next option, not a value (``-flag0 -test``)."""
    bare = _bare(arg)
    return bare is not None and bare[:1].isascii() and bare[:1].isalpha()


def overrides(ns: argparse.Namespace, cls: type[Table], flags: dict[str, str]) -> dict[str, Any]:
    """The settings given on the command line, and only those."""
    given = {k.name: v for k in cls.table() if (v := getattr(ns, k.name, None)) is not None}
    return {**given, **flags}
