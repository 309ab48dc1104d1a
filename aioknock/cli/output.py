"""Machine output on stdout, one line at a time, and what to do when its reader goes."""

from __future__ import annotations

import contextlib
import os
import sys


def emit(text: str) -> bool:
    """Print one line on stdout; False (and stdout silenced) once the reader has gone."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        silence_stdout()
        return False
    return True


def emit_json(value: object) -> bool:
    """``emit`` of one JSON line (json loads only for ``--json``: ~1 ms of a start)."""
    import json

    return emit(json.dumps(value))


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that the interpreter's last flush is quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
