"""Error types: every failure a user can cause ends as one of these, printed as one line."""

from __future__ import annotations

from collections.abc import Iterable


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option most like ``word``, for a "did you mean" (difflib loads only then)."""
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return close[0] if close else None


class AioknockError(Exception):
    """Base class; ``str(err)`` is the complete one-line message shown to the user."""


class ConfigError(AioknockError):
    """A setting is missing, malformed or out of range; says where it came from."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.key = key
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.source:
            source = shown(self.source, 200)
            where = source if self.line is None else f"{source}:{self.line}"
            where += ": "
        what = f"{shown(self.key)}: " if self.key else ""
        return f"{where}{what}{self.message}"


def shown(text: str, limit: int = 60) -> str:
    """Text from a file or the command line, fit for a one-line message: printable
    (a carriage return or an escape sequence must not rewrite the user's terminal)
    and short (a 16 kB line of ``<`` must not flood it)."""
    printable = text if text.isprintable() else repr(text)[1:-1]
    if len(printable) > limit:
        return f"{printable[:limit]}... ({len(text):,} characters)"
    return printable


class InvalidValue(AioknockError, ValueError):
    """A value the codec or the daemon cannot use, with the reason. It knows nothing of
    configuration keys: the config loader adds where the value came from."""


class KnockError(AioknockError):
    """A knock could not be built, or a received knock is invalid; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SendError(AioknockError):
    """A knock could not leave this host (name not resolved, no route, bad address)."""
