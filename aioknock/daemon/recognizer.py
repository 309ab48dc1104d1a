"""What a recognizer is: one kind of knock, packets in, typed verdicts out.

The engine routes each packet to the recognizers that asked for its port and
protocol (``wanted``); a recognizer keeps its own bounded per-source state and
answers with verdicts: a ``Grant`` (open these ports for this address), a
``Refusal`` (a complete knock that failed a check, with the reason) or ``Ignored``
(noise worth a log line). It never opens anything itself, and it never reads a
clock: the time is the packet's. What must outlive a reload (the memory of used
knocks, shared by every kind) is handed to it; its knocks in progress start again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

from ..codec.sequence import Hit
from .packet import Packet


@dataclass(frozen=True, slots=True)
class Grant:
    """A knock that proved itself: open ``ports`` for ``address``."""

    verdict: ClassVar[str] = "accept"
    source: str  # the packets' source address
    via: str  # what recognized it: "knock", or a sequence door's name
    address: str  # whom to open for (the knock's CLIENT, or the source)
    ports: tuple[Hit, ...]
    flags: tuple[tuple[int, int], ...] = ()  # (n, value) of the knock's FLAGn fields
    duration: float | None = None  # None: the daemon's ``duration``
    reason: str = ""
    digest: bytes = b""  # a knock newly remembered as used (for the replay file)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A complete knock that failed a check."""

    verdict: ClassVar[str] = "refuse"
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not a knock, but worth a line in the log (a duplicated SYN)."""

    verdict: ClassVar[str] = "ignore"
    source: str
    reason: str


Verdict = Grant | Refusal | Ignored


class Recognizer(Protocol):
    """One kind of knock. ``name`` identifies it across reloads."""

    name: str

    def wanted(self) -> Iterable[Hit]:
        """The (port, protocol) pairs it reads: the router's and the capture filter's."""
        ...

    def receive(self, packet: Packet) -> list[Verdict]: ...

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called (None: not until a packet comes)."""
        ...

    def handle_timer(self, now: float) -> list[Verdict]:
        """Time has passed: what it decided (knocks that never completed)."""
        ...

    @property
    def sources(self) -> int:
        """Sources with a knock in progress (bounded)."""
        ...


@dataclass(slots=True)
class InProgress:
    """What every per-source state holds: when it began, the SYNs already counted, and
    where the source table ranks it (see ``SourceTable``)."""

    started: float
    seen: set[int] = field(default_factory=set)  # sport << 16 | dport: small ints
    bucket: int = 1

    def duplicate(self, packet: Packet, limit: int) -> bool:
        """A SYN seen before (same source port): a retransmission, not a new knock.

        At most ``limit`` are kept (a knock's length, say): a source that sends more,
        each from a new port, costs no more memory, only the memory of the oldest."""
        key = packet.sport << 16 | packet.dport
        if packet.sport and key in self.seen:
            return True
        if len(self.seen) >= limit:
            self.seen.clear()
        self.seen.add(key)
        return False


@dataclass(slots=True)
class PortWindow(InProgress):
    """A source's last ports, each with when it came: a knock read from its ports
    (the encoded knock, the sealed knock) keeps these."""

    # Lists, not deques: a knock is a few dozen ports, and a list costs a tenth of the
    # memory, which counts with tens of thousands of sources in a flood.
    ports: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each port came

    def prune(self, now: float, timeout: float) -> None:
        """Forget ports older than ``timeout``: a knock must come within it."""
        limit = now - timeout
        times = self.times
        if not times or times[0] >= limit:
            return
        old = next((i for i, t in enumerate(times) if t >= limit), len(times))
        del times[:old], self.ports[:old]
        self.started = times[0] if times else now


S = TypeVar("S", bound=InProgress)

PROBATION = 2  # sources with a single packet: up to this many times ``limit``
DEMOTED = 0  # the bucket of a source that sent what is not a knock: dropped first
_SWEEPS = 8  # expiry runs this many times per timeout, not on every packet
MAX_EXPIRED = 1024  # timed-out knocks kept for their report between two sweeps


class Reports:
    """Rate limits for lines about one source: at most one per ``per_source`` seconds
    for a source (the last ``remembered`` sources), and ``budget`` lines per ``window``
    seconds for all (a flood of spoofed sources makes a line each otherwise); what is
    held back is counted, and said in one line when the window ends."""

    def __init__(self, *, per_source: float = 60.0, budget: int = 20, window: float = 60.0,
                 remembered: int = 4096) -> None:  # fmt: skip
        self.per_source, self.budget, self.window = per_source, budget, window
        self.remembered = remembered
        self._last: OrderedDict[str, float] = OrderedDict()
        self._window_end = 0.0
        self._left = budget
        self.held = 0  # lines held back in the current window

    def allow(self, src: str, now: float) -> bool:
        last = self._last.get(src)
        if last is not None and now - last < self.per_source:
            return False
        if now >= self._window_end:
            self._window_end, self._left = now + self.window, self.budget
        if self._left <= 0:
            self.held += 1
            return False
        self._left -= 1
        self._last[src] = now
        self._last.move_to_end(src)
        if len(self._last) > self.remembered:
            self._last.popitem(last=False)
        return True

    def take_held(self, now: float) -> int:
        """Lines held back in a window that has ended (0 while it runs)."""
        if now < self._window_end or not self.held:
            return 0
        held, self.held = self.held, 0
        return held


class SourceTable(Generic[S]):
    """Per-source knocks in progress, bounded in memory; under a flood, what looks least
    like a knock is dropped first.

    A source with one packet is on probation: up to ``PROBATION * limit`` of them, the
    oldest dropped first, so a flood of spoofed addresses that send one SYN each churns
    only this tier. From its second packet a source is in the main tier (``limit``),
    ranked by how far its knock has come (``rank``): when full, the least advanced is
    dropped, the oldest of those first, and a source its recognizer demoted (it sent
    what is not a knock) before any other. A genuine knock climbs a rank with
    every packet; a flood that wants to push it out must send as many packets per
    spoofed address as the knock has come, within ``timeout``.
    """

    def __init__(self, make: Callable[[float], S], *, timeout: float, limit: int) -> None:
        self.make, self.timeout, self.limit = make, timeout, limit
        self.probation = PROBATION * limit
        self._states: dict[str, S] = {}
        self._buckets: dict[int, OrderedDict[str, None]] = {1: OrderedDict()}
        self._main = 0  # sources past probation
        self._sweep_at = 0.0
        self.evictions = 0  # sources dropped for room, not for age
        # Knocks past probation that timed out, for the recognizer to report (bounded).
        self.expired: list[tuple[str, S]] = []

    def __len__(self) -> int:
        return len(self._states)

    def get(self, packet: Packet) -> S:
        """The state of the packet's source, begun now (on probation) if it has none."""
        now = packet.now
        if now >= self._sweep_at:
            self.expire(now)
        state = self._states.get(packet.src)
        if state is None:
            state = self._states[packet.src] = self.make(now)
            waiting = self._buckets[1]
            waiting[packet.src] = None
            if len(waiting) > self.probation:
                self.evict(next(iter(waiting)))
        return state

    def rank(self, src: str, state: S, level: int) -> None:
        """The source's knock has come ``level`` packets far."""
        # One bucket per doubling (1, 2-3, 4-7, ...): a source moves a few times a knock,
        # and finding the least advanced takes a handful of steps.
        bucket = level.bit_length()
        if bucket != state.bucket:
            self._move(src, state, bucket)

    def demote(self, src: str, state: S) -> None:
        """The source sent what is not a knock: first to go when room is needed."""
        if state.bucket != DEMOTED:
            self._move(src, state, DEMOTED)

    def drop(self, src: str) -> None:
        if src in self._states:
            self._remove(src)

    def expire(self, now: float) -> None:
        """Drop knocks that began more than ``timeout`` ago (memory only: a recognizer
        checks each knock's age itself); those past probation are kept in ``expired``
        (at most ``MAX_EXPIRED``) for their recognizer to report."""
        self._sweep_at = now + self.timeout / _SWEEPS
        limit = now - self.timeout
        for bucket, members in list(self._buckets.items()):
            while members:
                src = next(iter(members))
                state = self._states[src]
                if state.started >= limit:
                    break
                self._remove(src)
                if bucket != 1 and len(self.expired) < MAX_EXPIRED:
                    self.expired.append((src, state))

    def next_sweep(self) -> float | None:
        """When knocks in progress next need expiring, or timed-out ones reporting
        (None: there are none)."""
        return self._sweep_at if self._states or self.expired else None

    def _move(self, src: str, state: S, bucket: int) -> None:
        was_main = state.bucket != 1
        del self._buckets[state.bucket][src]
        state.bucket = bucket
        self._buckets.setdefault(bucket, OrderedDict())[src] = None
        if not was_main:
            self._main += 1
            if self._main > self.limit:
                self.evict(self._least_advanced(src))

    def _least_advanced(self, keep: str) -> str:
        for bucket in sorted(b for b, members in self._buckets.items() if b != 1 and members):
            for src in self._buckets[bucket]:
                if src != keep:
                    return src
        raise AssertionError("the main tier is full of one source")

    def evict(self, src: str) -> None:
        """Drop a source to make room."""
        self.evictions += 1
        self._remove(src)

    def _remove(self, src: str) -> None:
        state = self._states.pop(src)
        del self._buckets[state.bucket][src]
        if state.bucket != 1:
            self._main -= 1
