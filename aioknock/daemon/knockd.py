"""knockd-style sequence doors: a fixed list of (port, protocol) hits opens one port.

As knockd does, a hit out of order starts the sequence again (counting the hit if
it begins the sequence), and a duplicated SYN or datagram (same source port) is
ignored instead of breaking it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..codec.sequence import Hit, Proto
from .packet import Packet
from .recognizer import Grant, Ignored, InProgress, SourceTable, Verdict


class SequenceDoor(Protocol):
    """What a door needs to say (the settings' ``<door NAME>`` block)."""

    @property
    def name(self) -> str: ...
    @property
    def sequence(self) -> tuple[Hit, ...]: ...
    @property
    def port(self) -> int: ...
    @property
    def proto(self) -> Proto: ...


@dataclass(slots=True)
class _Progress(InProgress):
    next: dict[str, int] = field(default_factory=dict)  # door name -> index of the next hit


class SequenceDoors:
    name = "doors"

    def __init__(
        self, doors: Sequence[SequenceDoor], *, knock_timeout: float, max_sources: int
    ) -> None:
        self.doors = tuple(doors)
        self.knock_timeout = knock_timeout
        self._progress = SourceTable(_Progress, timeout=knock_timeout, limit=max_sources)
        self._hits = frozenset(hit for door in self.doors for hit in door.sequence)
        self._remembered = 2 * max((len(door.sequence) for door in self.doors), default=1)

    @property
    def sources(self) -> int:
        return len(self._progress)

    def wanted(self) -> list[Hit]:
        return sorted(self._hits)

    def get_timer(self) -> float | None:
        return None  # a sequence started and dropped is not reported: its SYNs are few

    def handle_timer(self, now: float) -> list[Verdict]:
        return []

    def receive(self, packet: Packet) -> list[Verdict]:
        hit = (packet.dport, packet.proto)
        if hit not in self._hits:
            return []
        progress = self._progress.get(packet)
        if packet.now - progress.started > self.knock_timeout:  # too slow: start again
            progress.next.clear()
            progress.seen.clear()
            progress.started = packet.now
        if progress.duplicate(packet, self._remembered):
            return [Ignored(packet.src, f"duplicate SYN to port {packet.dport}")]
        out: list[Verdict] = [
            grant for door in self.doors if (grant := self._step(door, progress, packet, hit))
        ]
        furthest = max(progress.next.values(), default=0)
        if furthest:
            self._progress.rank(packet.src, progress, furthest)
        else:
            self._progress.drop(packet.src)
        return out

    def _step(
        self, door: SequenceDoor, progress: _Progress, packet: Packet, hit: Hit
    ) -> Grant | None:
        if hit not in door.sequence:
            return None
        index = progress.next.get(door.name, 0)
        if door.sequence[index] != hit:
            # Out of order: start again, counting this hit if it begins the sequence.
            index = 0
            if door.sequence[0] != hit:
                progress.next[door.name] = 0
                return None
        index += 1
        if index < len(door.sequence):
            progress.next[door.name] = index
            return None
        progress.next[door.name] = 0
        return Grant(packet.src, door.name, packet.src, ((door.port, door.proto),),
                     reason="sequence complete")  # fmt: skip
