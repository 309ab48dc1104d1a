"""The event loop, for the commands that need one: the daemon and fleets.

asyncio is imported when a loop is run, not before: a one-host run needs none.
"""

from __future__ import annotations

from collections.abc import Coroutine

from ..logs import get_logger
from .exits import EXIT_FAILED

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    import asyncio
    from typing import Any

log = get_logger("aioknock")

MIN_FILES = 32  # the event loop's own (self-pipe, signals), a few sockets, the log


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (asyncio's own loop if uvloop is not installed)."""
    if (soft := _files_limit()) < MIN_FILES:
        # The loop itself needs a few (its self-pipe, signals): say so up front.
        log.error("the open-files limit is %d; aioknock needs at least %d (ulimit -n)",
                  soft, MIN_FILES)  # fmt: skip
        main.close()
        return EXIT_FAILED
    with _runner() as runner:
        return runner.run(main)


def _files_limit() -> int:
    """The soft open-files limit, first raised to ``MIN_FILES`` where the hard one allows."""
    import resource  # here: a one-host run has no loop to check for

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MIN_FILES
    if soft >= MIN_FILES or (hard != resource.RLIM_INFINITY and hard < MIN_FILES):
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (MIN_FILES, hard))
    except (ValueError, OSError):
        return soft
    return MIN_FILES


def _runner() -> asyncio.Runner:
    import asyncio

    try:
        import uvloop
    except ImportError:
        log.debug("event loop: asyncio (uvloop is not installed)")
        return asyncio.Runner()
    log.debug("event loop: uvloop")
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
