"""The prototype's encoded knock: a span of ports carrying fields, maybe encrypted.

Per source, the span's ports are queued as they arrive; once the queue holds as
many ports as a knock has, it is decoded and judged (time fields, CLIENT against
the source, replay), then the queue starts again.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..codec.fields import Fields, time_values
from ..codec.pipeline import Codec
from ..codec.sequence import Hit
from ..errors import KnockError
from .packet import Packet
from .recognizer import Grant, Ignored, InProgress, Refusal, SourceTable, Verdict
from .replay import ReplayMemory, digest


@dataclass(slots=True)
class _Queue(InProgress):
    ports: list[int] = field(default_factory=list)


class EncodedKnocks:
    """Recognizes the knocks ``codec`` encodes; every defect is a refusal with its reason."""

    name = "knock"

    def __init__(
        self, codec: Codec, *, knock_timeout: float, max_sources: int, time_tolerance: float,
        allow_nat: bool, replays: ReplayMemory | None = None,
    ) -> None:  # fmt: skip
        self.codec = codec
        self.time_tolerance, self.allow_nat = time_tolerance, allow_nat
        # Knocks accepted, by their cipher's replay key; bounded by count, not by time: a
        # time field repeats (mod 256), and an altered IV refreshes it (ciphers.py).
        self.replays = ReplayMemory() if replays is None else replays
        self._queues = SourceTable(_Queue, timeout=knock_timeout, limit=max_sources)
        self._span = frozenset(codec.span.ports)

    @property
    def sources(self) -> int:
        return len(self._queues)

    def wanted(self) -> list[Hit]:
        return [(port, "tcp") for port in self.codec.span.ports]

    def receive(self, packet: Packet) -> list[Verdict]:
        if packet.proto != "tcp" or packet.dport not in self._span:
            return []
        queue = self._queues.get(packet)
        if queue.duplicate(packet, self.codec.knock_length):
            return [Ignored(packet.src, f"duplicate SYN to port {packet.dport}")]
        queue.ports.append(packet.dport)
        if len(queue.ports) < self.codec.knock_length:
            return []
        ports = queue.ports
        self._queues.drop(packet.src)
        try:
            knock = self.codec.decode(ports)
        except KnockError as exc:
            return [Refusal(packet.src, exc.reason)]
        return [self._judge(packet, knock.fields, knock.payload)]

    def _judge(self, packet: Packet, fields: Fields, payload: bytes) -> Verdict:
        src = packet.src
        stale = self._stale_field(fields, packet.now)
        if stale:
            return Refusal(src, f"{stale} is outside time_tolerance")
        address = fields.client or src
        if fields.client is not None and not self.allow_nat and not _same_ip(address, src):
            return Refusal(src, f"CLIENT {address} is not the source {src} (allow_nat = no)")
        used = digest(self.codec.cipher.replay_key(payload))
        if used in self.replays:
            return Refusal(src, "replayed knock")
        self.replays.add(used)
        return Grant(src, self.name, address, ((fields.port or 0, "tcp"),), fields.flags,
                     reason="knock verified", digest=used)  # fmt: skip

    def _stale_field(self, fields: Fields, now: float) -> str:
        if not fields.times:
            return ""
        tol = int(self.time_tolerance)
        allowed: dict[str, set[int]] = {name: set() for name, _ in fields.times}
        for offset in range(-tol, tol + 1):
            values = time_values(now + offset, localtime=self.codec.localtime)
            for name, seen in allowed.items():
                seen.add(values[name])
        return next((name for name, value in fields.times if value not in allowed[name]), "")


def _same_ip(a: str, b: str) -> bool:
    try:
        ip_b = ipaddress.ip_address(b)
        if isinstance(ip_b, ipaddress.IPv6Address) and ip_b.ipv4_mapped:
            ip_b = ip_b.ipv4_mapped
        return ipaddress.ip_address(a) == ip_b
    except ValueError:
        return False
