"""What the in-process parts of the benchmarks share: a rate, and a row of rates."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


def rate_of(fn: Callable[[], object], seconds: float, batch: int = 20) -> float:
    """Calls of ``fn`` per second, over at least ``seconds`` (timed ``batch`` at a time)."""
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(batch):
            fn()
        n += batch
    return n / elapsed


@dataclass
class CodecRow:
    what: str
    rates: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)
