"""What every recognizer reads: one packet as seen on the wire or in a firewall log."""

from __future__ import annotations

from dataclasses import dataclass

from ..codec.sequence import Proto


@dataclass(frozen=True, slots=True)
class Packet:
    """Who knocked, on which port, when (``now``: epoch seconds when it was seen)."""

    now: float
    src: str
    dport: int
    proto: Proto = "tcp"
    sport: int = 0  # 0 = unknown; with it, a retransmitted SYN is told from a new knock
    dst: str = ""  # the address knocked, where known ("" in logs read by pattern)
    payload: bytes = b""  # a UDP datagram's data (captured or received), for SPA
