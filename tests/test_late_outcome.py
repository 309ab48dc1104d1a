"""An attempt whose answer came in before a late look is not "no answer".

A loaded machine can run the sender past an attempt's deadline before it looks at the
socket. The kernel has the answer by then: the outcome says what the host answered, and
a port that really was silent is still "no answer". Each test makes the sender late on
purpose, by blocking past every deadline, on loopback. The event loop's sender already
sees I/O before the timers that come due with it; its test keeps it so.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from aioknock.asyncio import oneshot, sender
from aioknock.asyncio.attempts import Attempt, Resolved, numeric_target, syn

HOLD = 0.05
LATE_BY = 0.3


@pytest.fixture
def ports() -> Iterator[tuple[int, int, int]]:
    """A listening port (its answer is a SYN-ACK), a bound, closed one (an RST), and a
    silent one: a listener whose accept queue is full drops SYNs, as a firewall would."""
    with socket.socket() as listening, socket.socket() as closed, socket.socket() as silent:
        for sock in (listening, closed, silent):
            sock.bind(("127.0.0.1", 0))
        listening.listen(4)
        silent.listen(0)
        with socket.create_connection(silent.getsockname(), timeout=2):
            yield listening.getsockname()[1], closed.getsockname()[1], silent.getsockname()[1]


def _target() -> Resolved:
    target = numeric_target("127.0.0.1")
    assert target is not None
    return target


def test_the_blocking_sender_keeps_an_answer_that_came_before_its_look(
    ports: tuple[int, int, int],
) -> None:
    watches = oneshot._Watches(HOLD)
    attempts = [Attempt(port, time.monotonic()) for port in ports]
    for attempt in attempts:
        watches.add(attempt, *syn(_target(), attempt.port))
    time.sleep(LATE_BY)  # past every deadline, with both answers in the kernel
    watches.until(None)
    assert [a.outcome for a in attempts] == ["open", "refused", "no answer"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_event_loop_sender_also_keeps_an_answer_that_came_before_its_look(
    ports: tuple[int, int, int], loop: str
) -> None:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop

    async def late() -> list[str]:
        running = asyncio.get_running_loop()
        attempts = [Attempt(port, running.time()) for port in ports]
        watches = []
        for attempt in attempts:
            sock, _ = syn(_target(), attempt.port)
            watches.append(sender._Watch(running, sock, attempt, attempt.sent + HOLD))
        time.sleep(LATE_BY)  # the loop is held past every deadline
        await asyncio.gather(*(w.done for w in watches))
        return [a.outcome for a in attempts]

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(late()) == ["open", "refused", "no answer"]
