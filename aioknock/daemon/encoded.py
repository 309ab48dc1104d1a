"""The prototype's encoded knock: a span of ports carrying fields, maybe encrypted.

Per source, the span's ports are kept as they arrive, at most as many as a knock has
and none older than ``knock_timeout``: a sliding window. Once it is full it is
decoded; a knock that decodes is judged (time fields, CLIENT against the source,
replay) and the window starts again. One that does not loses its oldest port and
waits for the next: a stray SYN before a knock (noise, or one spoofed from the
client's address) costs one decode, not the knock. A stray SYN inside a knock breaks
it: the prototype's knock has nothing to find its ports by but their place.
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
class _Window(InProgress):
    # Lists, not deques: a knock is a few dozen ports, and a list costs a tenth of the
    # memory, which counts with tens of thousands of sources in a flood.
    ports: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each port came
    failed: int = 0  # windows in a row that did not decode

    def prune(self, now: float, timeout: float) -> None:
        """Forget ports older than ``timeout``: a knock must come within it."""
        limit = now - timeout
        times = self.times
        if not times or times[0] >= limit:
            return
        old = next((i for i, t in enumerate(times) if t >= limit), len(times))
        del times[:old], self.ports[:old]
        self.started = times[0] if times else now


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
        self.knock_timeout = knock_timeout
        self._windows = SourceTable(_Window, timeout=knock_timeout, limit=max_sources)
        self._span = frozenset(codec.span.ports)

    @property
    def sources(self) -> int:
        return len(self._windows)

    def wanted(self) -> list[Hit]:
        return [(port, "tcp") for port in self.codec.span.ports]

    def receive(self, packet: Packet) -> list[Verdict]:
        if packet.proto != "tcp" or packet.dport not in self._span:
            return []
        window = self._windows.get(packet)
        if window.duplicate(packet, self.codec.knock_length):
            return [Ignored(packet.src, f"duplicate SYN to port {packet.dport}")]
        window.prune(packet.now, self.knock_timeout)
        window.ports.append(packet.dport)
        window.times.append(packet.now)
        if len(window.ports) < self.codec.knock_length:
            if not window.failed:
                self._windows.rank(packet.src, window, len(window.ports))
            return []
        try:
            knock = self.codec.decode(list(window.ports))
        except KnockError as exc:
            return self._slide(packet.src, window, exc.reason)
        self._windows.drop(packet.src)
        return [self._judge(packet, knock.fields, knock.payload)]

    def _slide(self, src: str, window: _Window, reason: str) -> list[Verdict]:
        """The window is not a knock: drop its oldest port and wait for the next. One
        refusal is logged per knock's length of ports that were not a knock."""
        del window.ports[0], window.times[0]
        window.failed += 1
        self._windows.demote(src, window)
        if window.failed % self.codec.knock_length == 1 or self.codec.knock_length == 1:
            return [Refusal(src, reason)]
        return []

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
