"""Loggers that import :mod:`logging` when a record is first to be made, not before.

``logging`` and what it imports (traceback, linecache, tokenize, textwrap, string,
threading, and eleven regular expressions compiled at import) are ~32 M instructions,
a sixth of a one-host knock's start, and such a knock, gone well, makes no record that
is shown. So every module logs through a ``Logger`` of this module, whose records are
logging's own once they are made:

- Without a floor (a program that imports aioknock), each call goes to
  ``logging.getLogger(name)``, and logging's configuration decides, as always.
- The command line sets a floor, its ``-quiet``/``-debug`` level (``route``). A record
  under it is dropped unmade. The first one that passes calls the command's ``setup``
  (its handler on stderr) and imports logging.
- While the level is not known yet (the configuration, which may say ``quiet``, is
  loading), records are held (``hold``) and made or dropped when it is (``release``).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # logging's numbers
ROOT = "aioknock"


class _Routing:
    """Where records go: the floor, the command's handler setup, what is held."""

    __slots__ = ("floor", "held", "set_up", "setup")

    def __init__(self) -> None:
        self.floor = 0
        self.setup: Callable[[int], None] | None = None
        self.set_up = False
        self.held: list[_Held] | None = None


class _Held:
    """A record not made yet, with its caller: made at ``release``, it still names the
    line that logged it (its time is the release's)."""

    __slots__ = ("args", "func", "level", "line", "msg", "name", "path")

    def __init__(self, name: str, level: int, msg: str, args: tuple[object, ...]) -> None:
        caller = sys._getframe(3)  # _Held <- Logger._log <- Logger.info <- the caller
        self.name, self.level, self.msg, self.args = name, level, msg, args
        self.path, self.line = caller.f_code.co_filename, caller.f_lineno
        self.func = caller.f_code.co_name

    def make(self, logger: logging.Logger) -> None:
        if logger.isEnabledFor(self.level):
            logger.handle(logger.makeRecord(self.name, self.level, self.path, self.line,
                                            self.msg, self.args, None, self.func))  # fmt: skip


_routing = _Routing()


class Logger:
    """The part of ``logging.Logger`` aioknock uses; records are made by logging's logger
    of the same name (``stacklevel`` points them at the caller)."""

    __slots__ = ("_real", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._real: logging.Logger | None = None

    def debug(self, msg: str, *args: object) -> None:
        self._log(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._log(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self._log(WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        self._log(ERROR, msg, args)

    def log(self, level: int, msg: str, *args: object) -> None:
        self._log(level, msg, args)

    def is_enabled_for(self, level: int) -> bool:
        """Whether a record at ``level`` would be made (to skip costly arguments)."""
        return level >= _routing.floor and self._logger().isEnabledFor(level)

    def _log(self, level: int, msg: str, args: tuple[object, ...]) -> None:
        if level < _routing.floor:
            return
        if _routing.held is not None:
            _routing.held.append(_Held(self.name, level, msg, args))
            return
        self._logger().log(level, msg, *args, stacklevel=3)

    def _logger(self) -> logging.Logger:
        if self._real is None:
            import logging

            self._real = logging.getLogger(self.name)
        if not _routing.set_up and _routing.setup is not None:
            _routing.set_up = True
            _routing.setup(_routing.floor)
        return self._real


def get_logger(name: str) -> Logger:
    return Logger(name)


def passes(level: int) -> bool:
    """Whether the floor lets ``level`` through (the command's own lines: ``-quiet``)."""
    return level >= _routing.floor


def route(floor: int, setup: Callable[[int], None]) -> None:
    """The command line's level, and how to set up logging for it (called with the level
    once a record passes it, and again when the level changes after that)."""
    _routing.floor, _routing.setup = floor, setup
    if _routing.set_up:
        setup(floor)


def hold() -> None:
    """Keep records of every level, unmade, until ``release`` gives the floor."""
    _routing.held, _routing.floor = [], 0


def release(floor: int) -> None:
    """Set the floor, then make the held records it lets through, in their order."""
    held, _routing.held = _routing.held or [], None
    if _routing.setup is not None:
        route(floor, _routing.setup)
    else:
        _routing.floor = floor
    for record in held:
        if record.level >= _routing.floor:
            record.make(get_logger(record.name)._logger())


def scoped() -> _Scope:
    """Routing, and the ``aioknock`` logger's handlers, level and propagation, as they were
    before: for the command run in-process (tests, a program calling ``main``)."""
    return _Scope()


class _Scope:
    """``scoped``'s context manager: a class, where ``contextlib`` costs ~3 M instructions
    of every start."""

    def __enter__(self) -> None:
        self.saved = (_routing.floor, _routing.setup, _routing.set_up, _routing.held)
        self.before = _root_state() if "logging" in sys.modules else None

    def __exit__(self, *_: object) -> None:
        _routing.floor, _routing.setup, _routing.set_up, _routing.held = self.saved
        if "logging" in sys.modules:
            _restore_root(self.before)


def _root_state() -> tuple[list[logging.Handler], bool, int]:
    import logging

    root = logging.getLogger(ROOT)
    return root.handlers[:], root.propagate, root.level


def _restore_root(state: tuple[list[logging.Handler], bool, int] | None) -> None:
    import logging

    root = logging.getLogger(ROOT)
    root.handlers[:], root.propagate, root.level = state or ([], True, logging.NOTSET)
