"""Exact reader for Perl Config::General files, recording the file and line of every entry.

The 2004 prototype's ``knockclient.conf`` / ``knockdaemon.conf`` were read by Config::General
2.65 with default options; this module reproduces that parse rule by rule (each of the
module's regexes is a linear scan in ``perlrules``), so an old config means the same thing
here.  Unlike Perl it keeps every entry in order with its position, and it turns the cases
where Perl silently drops text or only warns (unterminated here-doc, ``/*`` or continuation;
``*/`` without ``/*``; a file included twice or in a cycle) into a ``ConfigError``, as it
does a value-less option.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from aioknock.errors import ConfigError, shown

from . import perlrules as rules
from .entries import Block, Entry
from .perlrules import WS as _WS
from .regular import MAX_CONFIG, read_regular

__all__ = ["Block", "Entry", "parse_general", "read_general"]


MAX_INCLUDE_DEPTH = 32  # includes within includes: deeper is a mistake (or a trap)

_UNESCAPE = re.compile(r'\\([$\\"#])')  # linear: no backtracking


def _perl_true(text: str | None) -> TypeGuard[str]:
    """Perl truthiness, which Config::General uses on names (so "0" counts as absent)."""
    return text is not None and text not in ("", "0")


@dataclass(slots=True)
class _Chunk:
    """One logical line after comments, continuations and includes, as Perl's ``content``."""

    text: str
    source: str
    line: int
    heredoc: tuple[str, str] | None = None  # (key, body) for ``key <<EOF``


@dataclass(slots=True)
class _Pending:
    """What reading one file carries from one line to the next."""

    comment_at: int = 0  # line of an open /* ... */, else 0
    longline: str | None = None  # a line continued with a backslash, so far
    long_at: int = 0
    heredoc: tuple[str, str, int, list[str]] | None = None  # key, terminator, line, body


@dataclass(slots=True)
class _Open:
    """A block whose end tag has not been seen yet."""

    name: str
    label: str
    source: str
    line: int
    entries: list[Entry] = field(default_factory=list)


def _value(raw: str) -> str:
    """Strip one pair of enclosing double quotes, then unescape \\# \\" \\\\ \\$ (as Perl)."""
    if raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:]
        if raw.endswith('"'):
            raw = raw[:-1]
    return _UNESCAPE.sub(r"\1", raw)


def _block_name(inner: str) -> tuple[str, str]:
    """Split ``<door "my label">`` into name and label; either may be double-quoted."""
    if rules.only_quoted(inner):
        return inner.replace('"', ""), ""
    m = rules.block_name(inner)
    if m is None:
        return inner, ""
    name = m[0] if _perl_true(m[0]) else m[1]
    label = m[2] if _perl_true(m[2]) else m[3]
    return name or "", label or ""


def _load(path: str, *, source: str | None = None, line: int | None = None) -> str:
    """Read a file as UTF-8, keeping CR (Perl does) and dropping a BOM (Perl does).

    Errors name ``source:line`` (the include statement) when given, else the file itself.
    """
    what = f"cannot read {shown(path, 200)}" if source else "cannot read file"
    try:
        data = read_regular(path, MAX_CONFIG)
    except OSError as exc:
        msg = f"{what}: {exc.strerror or exc}"
        raise ConfigError(msg, source=source or path, line=line) from exc
    except ValueError:  # a NUL in the name
        msg = f"'{shown(path)}' is not a usable file name"
        raise ConfigError(msg, source=source or path, line=line) from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        bad = data[: exc.start].count(b"\n") + 1
        msg = f"{what}: line {bad} is not valid UTF-8"
        raise ConfigError(msg, source=source or path, line=line) from exc


class _Reader:
    """Turns files into chunks (Perl's ``_read``), then chunks into entries (``_parse``)."""

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = []
        self.active: list[tuple[str, str]] = []  # (realpath, name) of files being read
        self.done: set[str] = set()  # realpath of every file read

    def read(self, text: str, source: str, base_dir: Path) -> None:
        lines = text.split("\n")  # Perl splits on LF only; "\r" stays on the line
        if lines[-1] == "":
            lines.pop()
        state = _Pending()
        for lineno, line in enumerate(lines, 1):
            if state.heredoc is not None:
                self._heredoc_line(state, line, source)
                continue
            uncommented = self._uncomment(state, line, source, lineno)
            if uncommented is not None:
                self._logical_line(state, uncommented, source, lineno, base_dir)
        self._unterminated(state, source)

    def _heredoc_line(self, state: _Pending, line: str, source: str) -> None:
        assert state.heredoc is not None
        key, end, start, body = state.heredoc
        indent = rules.heredoc_terminator(line, end)
        if indent is None:
            body.append(line)
            return
        # "  EOF" removes that indentation from every body line
        unindented = (b.removeprefix(indent) + "\n" for b in body)
        value = "".join(unindented) if indent else "\n".join(body)
        self.chunks.append(_Chunk("", source, start, (key, value.strip(_WS))))
        state.heredoc = None

    @staticmethod
    def _uncomment(state: _Pending, line: str, source: str, lineno: int) -> str | None:
        """The line without its comments; None inside a ``/* ... */`` comment."""
        if (without := rules.strip_one_line_comment(line)) is not None:
            line = without
        elif rules.starts_comment(line):
            closed = rules.ends_with_comment_end(line)
            state.comment_at = 0 if closed else state.comment_at or lineno
        elif "*/" in line:
            if not state.comment_at:
                raise ConfigError("'*/' without an opening '/*'", source=source, line=lineno)
            state.comment_at = 0
            line = rules.after_comment_end(line)
        if state.comment_at:
            return None
        return rules.strip_hash_comment(line)

    def _logical_line(
        self, state: _Pending, line: str, source: str, lineno: int, base_dir: Path
    ) -> None:
        """Continuations, ``<name/>``, here-doc starts, includes; the rest is a chunk."""
        if line.endswith("\\") and not line.endswith("\\\\"):
            if not state.longline:
                state.long_at = lineno
            state.longline = (state.longline or "") + line[:-1].lstrip(_WS)
            return
        if (inner := rules.empty_block(line)) is not None:  # <name/> is <name></name>
            opening = line[:-2] + ">" if line.endswith("/>") else line
            self.chunks.append(_Chunk(opening, source, lineno))
            self.chunks.append(_Chunk(f"</{rules.first_word(inner)}>", source, lineno))
            return
        if heredoc := rules.heredoc_with_equals(line) or rules.heredoc_with_space(line):
            if _perl_true(heredoc[0]):
                state.heredoc = (*heredoc, lineno, [])
            return
        if _perl_true(state.longline):
            self.chunks.append(_Chunk(f"{state.longline}{line.lstrip(_WS)}", source, state.long_at))
            state.longline = None
            return
        if not line.strip(_WS):
            return
        incl = rules.include_quoted(line)
        if incl is None:
            incl = rules.include(line)
        if _perl_true(incl):
            self.include(incl, source, lineno, base_dir)
        else:
            self.chunks.append(_Chunk(line, source, lineno))

    @staticmethod
    def _unterminated(state: _Pending, source: str) -> None:
        """What Perl drops or only warns about at the end of a file is an error here."""
        if state.heredoc is not None:
            key, end, start, _ = state.heredoc
            key, end = shown(key), shown(end)
            msg = f"here-doc '{key} <<{end}' has no closing '{end}' line"
            raise ConfigError(msg, source=source, line=start)
        if state.comment_at:
            raise ConfigError("'/*' comment is never closed", source=source, line=state.comment_at)
        if state.longline:
            msg = "line ends with '\\' but the file ends"
            raise ConfigError(msg, source=source, line=state.long_at)

    def include(self, name: str, source: str, line: int, base_dir: Path) -> None:
        # Deliberate deviation: Perl's default resolves against the cwd (wrong under systemd).
        path = name if os.path.isabs(name) else str(base_dir / name)
        try:
            real = os.path.realpath(path)
        except ValueError:  # a NUL in the name
            raise ConfigError(f"'{shown(name)}' is not a usable file name", source=source,
                              line=line) from None  # fmt: skip
        if len(self.active) >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", source=source,
                              line=line)  # fmt: skip
        if real in (r for r, _ in self.active):
            chain = " -> ".join(shown(n, 100) for n in [*(n for _, n in self.active), path])
            raise ConfigError(f"include cycle: {chain}", source=source, line=line)
        if real in self.done:
            msg = f"{shown(path, 200)} is already included (Config::General would skip it)"
            raise ConfigError(msg, source=source, line=line)
        text = _load(path, source=source, line=line)
        self.active.append((real, path))
        self.done.add(real)
        self.read(text, path, Path(path).parent)
        self.active.pop()

    def entries(self) -> list[Entry]:
        top: list[Entry] = []
        stack: list[_Open] = []
        for ch in self.chunks:
            into = stack[-1].entries if stack else top
            if ch.heredoc is not None:
                into.append(Entry(ch.heredoc[0], _value(ch.heredoc[1]), ch.source, ch.line))
                continue
            text = ch.text.strip(_WS)
            if (inner := rules.block_start(text)) is not None:
                name, label = _block_name(inner)
                stack.append(_Open(name, label, ch.source, ch.line))
            elif rules.block_end(text):  # Perl matches by depth; the name is not checked
                if not stack:
                    raise ConfigError(
                        f"'{shown(text)}' closes no open block", source=ch.source, line=ch.line
                    )
                done = stack.pop()
                block = Block(done.name, done.label, tuple(done.entries))
                (stack[-1].entries if stack else top).append(
                    Entry(done.name, block, done.source, done.line)
                )
            else:
                parts = rules.split_option(text)
                if len(parts) < 2:  # Perl stores undef here
                    msg = "has no value (expected 'key value' or 'key = value')"
                    raise ConfigError(msg, source=ch.source, line=ch.line, key=text)
                into.append(Entry(parts[0], _value(parts[1]), ch.source, ch.line))
        if stack:
            b = stack[-1]
            tag = shown(f"<{b.name} {b.label}>" if b.label else f"<{b.name}>")
            raise ConfigError(f"block {tag} is never closed", source=b.source, line=b.line)
        return top


def parse_general(
    text: str, source: str = "<string>", *, base_dir: Path | None = None
) -> list[Entry]:
    """Parse Config::General text; relative includes resolve against ``base_dir``.

    ``base_dir`` defaults to the directory of ``source`` (the cwd for ``"<string>"``).
    """
    reader = _Reader()
    reader.read(text, source, Path(source).parent if base_dir is None else base_dir)
    return reader.entries()


def read_general(path: str | os.PathLike[str]) -> list[Entry]:
    """Read and parse a Config::General file (UTF-8); an unreadable file is a ``ConfigError``."""
    name = os.fspath(path)
    reader = _Reader()
    text = _load(name)
    real = os.path.realpath(name)
    reader.active.append((real, name))
    reader.done.add(real)
    reader.read(text, name, Path(name).parent)
    return reader.entries()
