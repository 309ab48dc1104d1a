"""The memory of knocks already used, so that a recorded knock cannot open a door twice."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

DIGEST_SIZE = 16  # bytes that stand for one used knock (also a replay file's record)
REPLAY_MEMORY = 100_000  # knocks remembered; the oldest is forgotten first


def digest(data: bytes) -> bytes:
    """What the memory keeps of a knock: a short hash of what identifies it."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


class ReplayMemory:
    """Digests of used knocks, bounded by count (not by time: a time field repeats)."""

    def __init__(self, limit: int = REPLAY_MEMORY) -> None:
        self.limit = limit
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, item: bytes) -> bool:
        return item in self._seen

    def add(self, item: bytes) -> None:
        self._seen[item] = None
        self._seen.move_to_end(item)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def load(self, items: Iterable[bytes]) -> None:
        """Add knocks used before (a replay file), oldest first."""
        for item in items:
            self.add(item)

    def items(self) -> list[bytes]:
        """The remembered digests, oldest first."""
        return list(self._seen)
