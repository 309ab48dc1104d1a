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

    @property
    def sources(self) -> int:
        """Sources with a knock in progress (bounded)."""
        ...


@dataclass(slots=True)
class InProgress:
    """What every per-source state holds: when it began, and the SYNs already counted."""

    started: float
    seen: set[int] = field(default_factory=set)  # sport << 16 | dport: small ints

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


S = TypeVar("S", bound=InProgress)


class SourceTable(Generic[S]):
    """Per-source knocks in progress: at most ``limit``, each for ``timeout`` seconds;
    when full, the oldest is dropped first."""

    def __init__(self, make: Callable[[float], S], *, timeout: float, limit: int) -> None:
        self.make, self.timeout, self.limit = make, timeout, limit
        self._states: OrderedDict[str, S] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, packet: Packet) -> S:
        """The state of the packet's source, begun now if it has none."""
        self.expire(packet.now)
        state = self._states.get(packet.src)
        if state is None:
            state = self._states[packet.src] = self.make(packet.now)
            if len(self._states) > self.limit:
                self._states.popitem(last=False)
        return state

    def drop(self, src: str) -> None:
        self._states.pop(src, None)

    def expire(self, now: float) -> None:
        """Drop knocks that did not complete within ``timeout``."""
        limit = now - self.timeout
        states = self._states
        while states:
            src, state = next(iter(states.items()))
            if state.started >= limit:
                break
            del states[src]
