"""The memory of knocks already used, so that a recorded knock cannot open a door twice."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable

DIGEST_SIZE = 16  # bytes that stand for one used knock (also a replay file's record)
REPLAY_MEMORY = 100_000  # knocks remembered; the oldest is forgotten first


def digest(data: bytes) -> bytes:
    """What the memory keeps of a knock: a short hash of what identifies it."""
    import hashlib  # at first use: hashlib loads OpenSSL (~3 ms), a client needs none

    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


class ReplayMemory:
    """Digests of used knocks, bounded by count (a prototype knock's time field repeats,
    so it is kept until the count pushes it out). A digest added with ``until`` (an SPA
    packet, whose timestamp cannot repeat) is also forgotten once that time has passed,
    when it is too old to be accepted anyway."""

    def __init__(self, limit: int = REPLAY_MEMORY) -> None:
        self.limit = limit
        self._seen: OrderedDict[bytes, float | None] = OrderedDict()
        self._expiry: list[tuple[float, bytes]] = []  # a heap of (until, digest)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, item: bytes) -> bool:
        return item in self._seen

    def add(self, item: bytes, until: float | None = None) -> None:
        self._seen[item] = until
        self._seen.move_to_end(item)
        if until is not None:
            heapq.heappush(self._expiry, (until, item))
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def expire(self, now: float) -> None:
        """Forget the digests whose ``until`` has passed."""
        expiry, seen = self._expiry, self._seen
        while expiry and expiry[0][0] <= now:
            until, item = heapq.heappop(expiry)
            if seen.get(item, -1.0) == until:
                del seen[item]
        if len(expiry) > 2 * len(seen) + 64:  # entries pushed out by count
            self._expiry = [(u, i) for u, i in expiry if seen.get(i, -1.0) == u]
            heapq.heapify(self._expiry)

    def room(self, now: float) -> bool:
        """Whether one more digest fits without forgetting one that is still needed
        (a timed digest before its time): if not, fail closed and refuse the packet."""
        if len(self._seen) < self.limit:
            return True
        until = next(iter(self._seen.values()))
        return until is None or until <= now

    def load(self, items: Iterable[bytes]) -> None:
        """Add knocks used before (a replay file), oldest first."""
        for item in items:
            self.add(item)

    def items(self) -> list[bytes]:
        """The remembered digests, oldest first."""
        return list(self._seen)
