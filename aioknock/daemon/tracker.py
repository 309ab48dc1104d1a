"""The knock tracker: packets in, decisions out. No sockets, no clock, no firewall.

The asyncio layers feed it ``Packet`` objects (from a log line or a captured
frame) with the time they were seen, and act on the ``Decision`` objects it
returns. Everything a knock is judged by lives here, so it is tested without
any I/O and the daemon cannot disagree with its own tests.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..codec.fields import TIME_FIELDS, time_values
from ..codec.knock import Codec
from ..errors import KnockError

Proto = Literal["tcp", "udp"]
DIGEST_SIZE = 16  # bytes that stand for one used knock in the replay memory


@dataclass(frozen=True, slots=True)
class Packet:
    """One knock as seen on the wire or in a log: who, to which port, when."""

    now: float
    src: str
    dport: int
    proto: Proto = "tcp"
    sport: int = 0  # 0 = unknown; with it, a retransmitted SYN is told from a new knock
    dst: str = ""  # the address knocked, where known ("" in logs read by pattern)


@dataclass(frozen=True, slots=True)
class SequenceDoor:
    """A knockd-style fixed sequence of (port, proto) that opens ``port``."""

    name: str
    sequence: tuple[tuple[int, Proto], ...]
    port: int = 0
    proto: Proto = "tcp"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the tracker concluded about one source.

    ``verdict`` is ``accept`` (open ``port`` for ``address``), ``refuse`` (a
    complete knock that failed a check) or ``ignore`` (noise worth logging).
    """

    verdict: Literal["accept", "refuse", "ignore"]
    source: str
    reason: str
    door: str = "knock"
    address: str = ""
    port: int = 0
    proto: Proto = "tcp"
    fields: dict[str, int | str] = field(default_factory=dict)
    digest: bytes = b""  # an encoded knock newly remembered as used (for a replay file)


@dataclass(slots=True)
class _Queue:
    started: float
    ports: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # sport << 16 | dport: small ints, not tuples
    progress: dict[str, int] = field(default_factory=dict)  # door name -> next index


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    knock_timeout: float = 10.0
    max_sources: int = 10_000
    time_tolerance: float = 120.0
    allow_nat: bool = False
    replay_memory: int = 100_000  # accepted knocks remembered (16-byte digests)


class Tracker:
    """Per-source knock queues, bounded in number; oldest source evicted first."""

    def __init__(
        self,
        codec: Codec | None,
        config: TrackerConfig,
        doors: Sequence[SequenceDoor] = (),
    ) -> None:
        self.codec = codec
        self.config = config
        self.doors = tuple(doors)
        self._queues: OrderedDict[str, _Queue] = OrderedDict()
        # Knocks accepted, by their cipher's replay key; bounded by count, not by time: a
        # time field repeats (mod 256), and an altered IV refreshes it (ciphers.py).
        self._replay: OrderedDict[bytes, None] = OrderedDict()
        self._span = set(codec.span.ports) if codec else set()
        self._door_ports = {p for d in doors for p in d.sequence}

    @property
    def sources(self) -> int:
        return len(self._queues)

    def remember(self, older: Tracker) -> None:
        """Take over ``older``'s memory of accepted knocks (a reload must not forget)."""
        self._replay = older._replay

    def load_replays(self, digests: Iterable[bytes]) -> None:
        """Add knocks used before (a replay file), oldest first."""
        for digest in digests:
            self._replay[digest] = None
            self._replay.move_to_end(digest)
        while len(self._replay) > self.config.replay_memory:
            self._replay.popitem(last=False)

    def replays(self) -> list[bytes]:
        """The remembered knocks' digests, oldest first."""
        return list(self._replay)

    def wanted(self, dport: int, proto: Proto) -> bool:
        """Whether a packet could be part of any knock (the capture filter's question)."""
        return (proto == "tcp" and dport in self._span) or (dport, proto) in self._door_ports

    def expire(self, now: float) -> None:
        """Drop knocks that did not complete within ``knock_timeout``."""
        limit = now - self.config.knock_timeout
        while self._queues:
            src, queue = next(iter(self._queues.items()))
            if queue.started >= limit:
                break
            del self._queues[src]

    def receive(self, packet: Packet) -> list[Decision]:
        if not self.wanted(packet.dport, packet.proto):
            return []
        self.expire(packet.now)
        queue = self._queues.get(packet.src)
        if queue is None:
            queue = self._queues[packet.src] = _Queue(packet.now)
            if len(self._queues) > self.config.max_sources:
                self._queues.popitem(last=False)
        key = packet.sport << 16 | packet.dport
        if packet.sport and key in queue.seen:
            return [Decision("ignore", packet.src, f"duplicate SYN to port {packet.dport}")]
        queue.seen.add(key)
        decisions = self._sequence_doors(queue, packet)
        if packet.proto == "tcp" and packet.dport in self._span:
            queue.ports.append(packet.dport)
            decision = self._encoded(queue, packet)
            if decision is not None:
                decisions.append(decision)
        if not queue.ports and not any(queue.progress.values()):
            self._queues.pop(packet.src, None)
        return decisions

    def _sequence_doors(self, queue: _Queue, packet: Packet) -> list[Decision]:
        out: list[Decision] = []
        hit = (packet.dport, packet.proto)
        for door in self.doors:
            if hit not in door.sequence:
                continue
            index = queue.progress.get(door.name, 0)
            if door.sequence[index] != hit:
                # Out of order: start again, counting this hit if it begins the sequence.
                index = 0
                if door.sequence[0] != hit:
                    queue.progress[door.name] = 0
                    continue
            index += 1
            if index == len(door.sequence):
                queue.progress[door.name] = 0
                out.append(
                    Decision("accept", packet.src, "sequence complete", door.name,
                             packet.src, door.port, door.proto)
                )  # fmt: skip
            else:
                queue.progress[door.name] = index
        return out

    def _encoded(self, queue: _Queue, packet: Packet) -> Decision | None:
        assert self.codec is not None
        if len(queue.ports) < self.codec.knock_length:
            return None
        ports, queue.ports = queue.ports, []
        queue.seen.clear()
        try:
            fields = self.codec.parse(ports)
        except KnockError as exc:
            return Decision("refuse", packet.src, exc.reason)
        payload = self.codec.span.decode(ports, self.codec.payload_length)
        return self._judge(packet, fields, payload)

    def _judge(self, packet: Packet, fields: dict[str, int | str], payload: bytes) -> Decision:
        src = packet.src
        stale = self._stale_field(fields, packet.now)
        if stale:
            return Decision("refuse", src, f"{stale} is outside time_tolerance", fields=fields)
        address = str(fields.get("client", src))
        if "client" in fields and not self.config.allow_nat and not _same_ip(address, src):
            return Decision(
                "refuse", src, f"CLIENT {address} is not the source {src} (allow_nat = no)",
                fields=fields,
            )  # fmt: skip
        assert self.codec is not None
        key = self.codec.cipher.replay_key(payload)
        digest = hashlib.blake2b(key, digest_size=DIGEST_SIZE).digest()
        if digest in self._replay:
            return Decision("refuse", src, "replayed knock", fields=fields)
        self._replay[digest] = None
        if len(self._replay) > self.config.replay_memory:
            self._replay.popitem(last=False)
        port = int(fields.get("port", 0))
        return Decision("accept", src, "knock verified", "knock", address, port, fields=fields,
                        digest=digest)  # fmt: skip

    def _stale_field(self, fields: dict[str, int | str], now: float) -> str:
        present = [name for name in TIME_FIELDS if name.lower() in fields]
        if not present:
            return ""
        tol = int(self.config.time_tolerance)
        allowed: dict[str, set[int]] = {name: set() for name in present}
        localtime = self.codec.localtime if self.codec else False
        for offset in range(-tol, tol + 1):
            values = time_values(now + offset, localtime=localtime)
            for name in present:
                allowed[name].add(values[name])
        for name in present:
            if fields[name.lower()] not in allowed[name]:
                return name
        return ""


def _same_ip(a: str, b: str) -> bool:
    try:
        ip_b = ipaddress.ip_address(b)
        if isinstance(ip_b, ipaddress.IPv6Address) and ip_b.ipv4_mapped:
            ip_b = ip_b.ipv4_mapped
        return ipaddress.ip_address(a) == ip_b
    except ValueError:
        return False
