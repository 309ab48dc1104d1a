"""The event loop, for the commands that need one: the daemon and fleets.

asyncio is imported when a loop is run, not before: a one-host run needs none.
"""

from __future__ import annotations

from collections.abc import Coroutine

from ..logs import get_logger

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    import asyncio
    from typing import Any

log = get_logger("aioknock")


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop (asyncio's own loop if uvloop is not installed)."""
    with _runner() as runner:
        return runner.run(main)


def _runner() -> asyncio.Runner:
    import asyncio

    try:
        import uvloop
    except ImportError:
        log.debug("event loop: asyncio (uvloop is not installed)")
        return asyncio.Runner()
    log.debug("event loop: uvloop")
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
