"""Send a knock: one TCP connection attempt per port, on an absolute schedule.

Each attempt is a non-blocking ``connect()`` issued by the scheduler itself, so
the SYN leaves inside that call and knock i+1 can never overtake knock i. The
attempt is then watched by the event loop (no task per knock) and closed at the
next slot, but at least ``HOLD_MIN`` (so even ``timeout = 0`` learns what became
of each knock) and at most ``HOLD_MAX`` seconds later: before Linux's first SYN
retransmission (1 s), so every knock is exactly one SYN. Closing a socket in
SYN-SENT sends nothing. ``send_knock`` returns once every knock is decided or
given up. ``mode="connect"`` instead runs ``asyncio.open_connection`` per knock
as a task bounded by the same deadline, for networks whose middleboxes want to
see the handshake attempted by a stream; each task sends its SYN in its first
step, and tasks start in creation order, so the order holds there too.
"""

from __future__ import annotations

import asyncio
import errno
import math
import socket
from collections.abc import Sequence

from ..codec.sequence import hits
from ..errors import SendError
from .attempts import (
    HOLD_MAX,
    HOLD_MIN,
    LOCAL_ERRORS,
    Attempt,
    Mode,
    Resolved,
    cannot,
    check_name,
    check_pacing,
    first_address,
    hold,
    numeric_target,
    outcome,
    schedule,
    syn,
    udp,
    unresolved,
)

__all__ = ["HOLD_MAX", "HOLD_MIN", "Attempt", "Mode", "Resolved", "resolve", "send_knock"]


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> Resolved:
    check_name(host)
    if (target := numeric_target(host, family)) is not None:
        return target
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, 0, family=family, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise unresolved(host, exc) from None
    except (UnicodeError, ValueError):  # IDNA: an empty or over-long label; a NUL
        raise SendError(f"cannot resolve {host!r}: not a valid host name") from None
    return first_address(host, infos)


class _Watch:
    """Follows one attempt until it resolves or its deadline closes it."""

    __slots__ = ("attempt", "done", "handle", "loop", "sock")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, attempt: Attempt,
        deadline: float,
    ) -> None:  # fmt: skip
        self.loop, self.sock, self.attempt = loop, sock, attempt
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_writer(sock.fileno(), self._ready)
        self.handle = loop.call_at(deadline, self.close, "no answer")

    def _ready(self) -> None:
        self.close(outcome(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))

    def close(self, outcome: str) -> None:
        if self.sock.fileno() < 0:
            return
        self.loop.remove_writer(self.sock.fileno())
        self.handle.cancel()
        self.sock.close()
        self.attempt.outcome = outcome
        if not self.done.done():
            self.done.set_result(None)


async def _open(target: Resolved, port: int, attempt: Attempt, deadline: float) -> None:
    # The deadline is armed inside the task, so the connection attempt (and its SYN)
    # always starts, however late the task gets to run.
    try:
        async with asyncio.timeout_at(deadline):
            _, writer = await asyncio.open_connection(target.address, port, family=target.family)
    except TimeoutError:
        attempt.outcome = "no answer"
    except ConnectionRefusedError:
        attempt.outcome = "refused"
    except OSError as exc:
        if exc.errno in LOCAL_ERRORS:
            raise cannot(target, port, exc.errno or errno.EINVAL) from None
        attempt.outcome = (exc.strerror or str(exc)).lower()
    else:
        attempt.outcome = "open"
        writer.close()


def _first_error(tasks: Sequence[asyncio.Task[None]]) -> BaseException | None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None


async def send_knock(
    target: Resolved,
    ports: Sequence[int | tuple[int, str]],
    timeout: float,
    *,
    mode: Mode = "syn",
    jitter: float = 0.0,
    watch: bool = True,
) -> list[Attempt]:
    """Knock ``ports`` (``port`` or ``(port, "udp")``) in order on an absolute schedule.

    With ``watch=False`` a TCP attempt is closed when the next knock leaves (at once
    at ``timeout = 0``, by a timer when the next slot is beyond ``HOLD_MAX``) without
    learning its outcome: the cheapest way to send one SYN, for fleets, and one
    socket per host however far behind the loop falls. Raises ``SendError`` when a
    knock cannot leave this host; every socket opened so far is closed first (also
    when cancelled).
    """
    knocks = hits(ports)
    check_pacing(timeout, jitter)
    if mode not in ("syn", "connect"):
        raise ValueError(f"mode must be 'syn' or 'connect', not {mode!r}")
    run = _Knocking(target, timeout, mode, watch)
    slots = schedule(run.loop.time(), len(knocks), timeout, jitter)
    try:
        for i, ((port, proto), slot) in enumerate(zip(knocks, slots, strict=True)):
            while (delay := slot - run.loop.time()) > 0:
                await asyncio.sleep(delay)
            run.release()  # the last attempt's slot is over (or the loop is catching up)
            run.raise_failed()
            run.send(port, proto, slots[i + 1] if i + 1 < len(slots) else math.inf)
        await run.finish()
    finally:
        await run.close()
    return run.results()


class _Knocking:
    """One host's knock in flight: its attempts, and what still holds a socket."""

    def __init__(self, target: Resolved, timeout: float, mode: Mode, watch: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.target, self.timeout, self.mode, self.watch = target, timeout, mode, watch
        self.hold = hold(timeout)
        self.attempts: list[Attempt] = []
        self.watches: list[_Watch] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.held: socket.socket | None = None  # watch=False: the last TCP attempt

    def send(self, port: int, proto: str, next_slot: float) -> None:
        attempt = Attempt(port, self.loop.time())
        self.attempts.append(attempt)
        if proto == "udp":
            attempt.outcome = udp(self.target, port)
        elif self.mode == "connect":
            coro = _open(self.target, port, attempt, attempt.sent + self.hold)
            self.tasks.append(asyncio.create_task(coro))
        else:
            self._syn(attempt, next_slot)

    def _syn(self, attempt: Attempt, next_slot: float) -> None:
        sock, err = syn(self.target, attempt.port)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            attempt.outcome = outcome(err)
        elif self.watch:
            self.watches.append(_Watch(self.loop, sock, attempt, attempt.sent + self.hold))
        elif self.timeout > 0:
            self.held = sock
            attempt.outcome = "sent"
            if next_slot - attempt.sent > HOLD_MAX:  # close before a retransmission
                self.loop.call_at(attempt.sent + HOLD_MAX, sock.close)
        else:
            sock.close()
            attempt.outcome = "sent"

    def release(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None

    def raise_failed(self) -> None:
        if (error := _first_error(self.tasks)) is not None:
            raise error

    async def finish(self) -> None:
        """Wait for the last knocks' outcomes (each bounded by its deadline)."""
        if self.held is not None:
            last = self.attempts[-1].sent + min(self.timeout, HOLD_MAX)
            await asyncio.sleep(max(0.0, last - self.loop.time()))
        pending = [w.done for w in self.watches if not w.done.done()] + self.tasks
        if pending:
            await asyncio.wait(pending)
        self.raise_failed()

    async def close(self) -> None:
        self.release()
        for w in self.watches:
            w.close("cancelled")
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def results(self) -> list[Attempt]:
        for attempt in self.attempts:
            if attempt.outcome == "pending":
                attempt.outcome = "no answer"
        return self.attempts
