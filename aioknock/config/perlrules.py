"""Config::General 2.65's line rules, each one pass over the line.

Config::General decides what a line is with backtracking regexes; run by Python's
``re`` as written, several take cubic time on lines such as 2,000 ``<`` or 4,000
spaces (seconds to minutes per line, during a reload). Each function here gives
exactly what the Perl regex named in its docstring gives -- the same match, the same
groups, found by the same leftmost, greedy-or-lazy rule -- but by scanning, in time
linear in the line. ``tests/test_general.py`` holds every one to its regex on random
lines, and the reader as a whole to Perl itself.

Perl reads bytes, so its ``\\s`` is ASCII whitespace (``WS``), and its ``/i`` folds
ASCII letters only.
"""

from __future__ import annotations

import re

WS = " \t\n\r\f\v"
# One character from a class: no backtracking, so these searches stay linear (and in C).
_SPACE = re.compile(r"\s", re.ASCII)
_SEPARATOR = re.compile(r"[=\s]", re.ASCII)


def _ws_run(text: str, at: int) -> int:
    """The end of the run of whitespace starting at ``at``."""
    return len(text) - len(text[at:].lstrip(WS))


def _blank(text: str) -> bool:
    return not text.strip(WS)


def strip_one_line_comment(line: str) -> str | None:
    """``s/\\s*\\/\\*.*\\*\\/\\s*//`` when it matches, else ``None``: from the whitespace
    before the first ``/*`` to the whitespace after the last ``*/`` behind it."""
    start = line.find("/*")
    end = line.rfind("*/")
    if start < 0 or end < start + 2:
        return None
    before = line[:start].rstrip(WS)
    return before + line[end + 2 :].lstrip(WS)


def starts_comment(line: str) -> bool:
    """``/^\\s*\\/\\*/``."""
    return line.lstrip(WS).startswith("/*")


def ends_with_comment_end(line: str) -> bool:
    """``/\\*\\/\\s*$/``."""
    return line.rstrip(WS).endswith("*/")


def after_comment_end(line: str) -> str:
    """``s/^.*\\*\\///``: what follows the last ``*/``."""
    end = line.rfind("*/")
    return line if end < 0 else line[end + 2 :]


def strip_hash_comment(line: str) -> str:
    """``s/(?<!\\\\)#.*$//``: from the first ``#`` not after a backslash."""
    at = line.find("#")
    while at > 0 and line[at - 1] == "\\":
        at = line.find("#", at + 1)
    return line if at < 0 else line[:at]


def empty_block(line: str) -> str | None:
    """Group 1 of ``/\\s*<([^\\/]+?.*?)\\/>\\s*$/`` (``<name/>``), or ``None``."""
    close = len(line.rstrip(WS)) - 2
    if close < 0 or line[close : close + 2] != "/>":
        return None
    at = line.find("<")
    while at >= 0 and at + 2 <= close:  # the first '<' with a non-'/' name behind it
        if line[at + 1] != "/":
            return line[at + 1 : close]
        at = line.find("<", at + 1)
    return None


def first_word(text: str) -> str:
    """``s/\\s\\s*.*$//``: up to the first whitespace."""
    space = _SPACE.search(text)
    return text if space is None else text[: space.start()]


def _heredoc_end(rest: str) -> str | None:
    """Group 2 of ``\\s*(.+?)\\s*$`` after ``<<``: the terminator."""
    if not rest:
        return None
    return rest.strip(WS) or rest[-1]  # only whitespace: the lazy group takes one char


def heredoc_with_equals(line: str) -> tuple[str, str] | None:
    """Groups of ``/^\\s*([^=]+?)\\s*=\\s*<<\\s*(.+?)\\s*$/`` (``key = <<EOF``)."""
    equals = line.find("=")
    lead = _ws_run(line, 0)
    if equals <= 0:
        return None
    key = line[lead:equals].rstrip(WS) if lead < equals else line[equals - 1]
    after = _ws_run(line, equals + 1)
    if not line.startswith("<<", after):
        return None
    end = _heredoc_end(line[after + 2 :])
    return None if end is None else (key, end)


def heredoc_with_space(line: str) -> tuple[str, str] | None:
    """Groups of ``/^\\s*(\\S+?)\\s+<<\\s*(.+?)\\s*$/`` (``key <<EOF``)."""
    lead = _ws_run(line, 0)
    word = lead + len(first_word(line[lead:]))
    after = _ws_run(line, word)
    if word == lead or after == word or not line.startswith("<<", after):
        return None
    end = _heredoc_end(line[after + 2 :])
    return None if end is None else (line[lead:word], end)


def heredoc_terminator(line: str, end: str) -> str | None:
    """Group 1 of ``/^(\\s*)END\\s*$/``: the indentation before the terminator."""
    lead = _ws_run(line, 0)
    if end[0] in WS:  # a one-character terminator that is whitespace itself
        if lead < len(line) or end not in line:
            return None
        return line[: line.rfind(end)]
    if line.startswith(end, lead) and _blank(line[lead + len(end) :]):
        return line[:lead]
    return None


def _ascii_ci_at(text: str, at: int, word: str) -> bool:
    """Whether ``word`` (lower case) is at ``at``, ASCII letters in either case."""
    part = text[at : at + len(word)]
    return part.isascii() and part.lower() == word


def include_quoted(line: str) -> str | None:
    """Group 2 of ``/^\\s*<<include\\s+(["'])(.+?)>>\\\\s*$/i``. Perl's own pattern, with
    its bug: ``>>\\\\s*`` wants a backslash and any number of ``s`` letters."""
    head = _ws_run(line, 0)
    if not _ascii_ci_at(line, head, "<<include"):
        return None
    quote = _ws_run(line, head + 9)
    if quote == head + 9 or quote >= len(line) or line[quote] not in "\"'":
        return None
    tail = len(line) - len(line.rstrip("sS")) + 3
    close = len(line) - tail
    if close < quote + 2 or line[close : close + 3] != ">>\\":
        return None
    return line[quote + 1 : close]


def include(line: str) -> str | None:
    """Group 1 of ``/^\\s*<<include\\s+(.+?)>>\\s*$/i``."""
    head = _ws_run(line, 0)
    if not _ascii_ci_at(line, head, "<<include"):
        return None
    name = _ws_run(line, head + 9)
    close = len(line.rstrip(WS)) - 2
    if name == head + 9 or close < name or line[close : close + 2] != ">>":
        return None
    if close > name:
        return line[name:close]
    return line[name - 1] if name - 1 > head + 9 else None  # "\s+" gives one back


def split_option(text: str) -> list[str]:
    """``split /\\s*=\\s*|\\s+/, $text, 2``: key and value at the first separator."""
    found = _SEPARATOR.search(text)
    if found is None:
        return [text]
    at = found.start()
    gap = _ws_run(text, at)
    if gap < len(text) and text[gap] == "=":
        gap = _ws_run(text, gap + 1)
    return [text[:at], text[gap:]]


def block_start(text: str) -> str | None:
    """Group 1 of ``/^<([^\\/]+?.*?)>$/``: what is inside ``<...>``."""
    if len(text) >= 3 and text[0] == "<" and text[-1] == ">" and text[1] != "/":
        return text[1:-1]
    return None


def block_end(text: str) -> bool:
    """``/^<\\/(.+?)>$/``."""
    return len(text) >= 4 and text.startswith("</") and text[-1] == ">"


def only_quoted(inner: str) -> bool:
    """``/^"([^"]+)"$/``."""
    return len(inner) >= 3 and inner[0] == inner[-1] == '"' and '"' not in inner[1:-1]


def block_name(inner: str) -> tuple[str | None, ...] | None:
    """The four groups of ``/^(?:"([^"]+)"|(\\S+))(?:\\s+(?:"([^"]+)"|(.*)))?$/``: a
    quoted or bare name, then a quoted or bare label."""
    if inner[:1] == '"':
        close = inner.find('"', 1)
        after = close + 1
        if close >= 2 and (after == len(inner) or inner[after] in WS):
            return (inner[1:close], None, *_label(inner, after))
    bare = len(first_word(inner))
    if bare == 0:
        return None
    return (None, inner[:bare], *_label(inner, bare))


def _label(inner: str, at: int) -> tuple[str | None, str | None]:
    if at == len(inner):
        return None, None
    rest = inner[_ws_run(inner, at) :]
    return (rest[1:-1], None) if only_quoted(rest) else (None, rest)
