"""Exit statuses of ``aioknock run``: the code and the manual read this one table."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 130

RUN_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "every host was knocked (with -verify: and its port then accepted a connection)"),
    (EXIT_FAILED, "some host failed: not resolved, not sent, or its -verify port stayed "
                  "closed (decode: an invalid knock); the others were still knocked"),
    (EXIT_CONFIG, "a configuration or command-line error: nothing was sent"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C): the summary says which hosts were done"),
)  # fmt: skip
