"""The command's log handler: each record one line on stderr, ``aioknock: [level: ]text``.

It is set up when the first record passes the command's level (``logs.route``): a run
that shows no record never imports logging.
"""

from __future__ import annotations

import logging
import sys

from ..logs import INFO, ROOT
from .output import PREFIX


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == INFO else f"{record.levelname.lower()}: "
        return f"{PREFIX}{level}{record.getMessage()}"


def install(level: int) -> None:
    """The ``aioknock`` logger shows ``level`` and above on stderr, and only there."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(level)
