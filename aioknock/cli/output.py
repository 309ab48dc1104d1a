"""Machine output on stdout, one line at a time, and what to do when its reader goes;
the command's own lines for people on stderr."""

from __future__ import annotations

import os
import sys

from ..logs import INFO, passes

PREFIX = "aioknock: "  # every line for people, records too (stderrlog.py)


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


def say(text: str) -> None:
    """One line of the command's output for people (``-quiet``: none): a knock's ports, a
    fleet's summary. The manual calls it output, as against ``-debug``'s diagnostics, and
    it is no log record: a one-host run shows these lines and no record, so it need not
    import logging (~32 M instructions, a sixth of its start). A closed or broken stderr
    loses the line, as it would lose a record, and fails nothing."""
    if passes(INFO) and sys.stderr is not None:
        try:
            print(f"{PREFIX}{text}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            return  # lost, as a record would be


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that the interpreter's last flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        return  # stdout already closed: nothing to quiet
