"""The prototype's encoded knock: a span of ports carrying fields, maybe encrypted.

Per source, the span's ports are kept as they arrive, at most as many as a knock has
and none older than ``knock_timeout``: a sliding window. Once it is full it is
decoded; a knock that decodes is judged (time fields, CLIENT against the source,
replay) and the window starts again. One that does not loses its oldest port and
waits for the next: a stray SYN before a knock (noise, or one spoofed from the
client's address) costs one decode, not the knock. A stray SYN inside a knock breaks
it: the prototype's knock has nothing to find its ports by but their place.

What it cannot protect against (tests/test_forgery.py shows each): the knock has no
integrity check and names no host. With one key in a fleet, a knock recorded on its way
to host A opens host B, which never saw it; and with ``iv = yes`` its IV, sent in the
clear, rewrites the first CBC block without the key: another CLIENT (the attacker's),
another PORT, a fresh THISMINUTE, RAND changed to keep the CHECKSUM. The memory of used
knocks refuses it only on a host that accepted the original and still remembers it.
``exposure_warning`` is what the daemon says about it when it starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..codec.fields import Fields, time_values
from ..codec.pipeline import Codec
from ..codec.sequence import Hit
from ..errors import KnockError
from ..logs import Logger
from .packet import Packet, same_ip
from .recognizer import Grant, Ignored, PortWindow, Refusal, Reports, SourceTable, Verdict
from .replay import ReplayMemory, digest


@dataclass(slots=True)
class _Window(PortWindow):
    failed: int = 0  # windows in a row that did not decode


_FORGERY = (
    "prototype knocks ({cipher}, iv = {iv}) carry no integrity check: every host that shares "
    "this key is exposed to cross-host forgery ({how}); use protocol = sealed or SPA "
    "(access_file) wherever the clients can be upgraded"
)
_HOW = {
    True: "a knock recorded on its way to another host, its IV rewritten, opens this one "
    "for the attacker, for any port, at any time",
    False: "a knock recorded on its way to another host opens this one, for its client",
}


def exposure_warning(recognizers: Iterable[object]) -> str | None:
    """What the daemon warns of at start when it accepts encrypted prototype knocks
    (``encoded = yes``, ``encrypt = yes``); None when it does not. Without encryption
    anybody can make a knock, key or not: there is no key to share."""
    for recognizer in recognizers:
        if isinstance(recognizer, EncodedKnocks) and recognizer.codec.cipher.name != "none":
            iv = bool(getattr(recognizer.codec.cipher, "iv", False))
            cipher = recognizer.codec.cipher.name
            return _FORGERY.format(cipher=cipher, iv="yes" if iv else "no", how=_HOW[iv])
    return None


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
        self._reports = Reports()

    @staticmethod
    def warn_exposure(logger: Logger, recognizers: Iterable[object]) -> None:
        """Log ``exposure_warning``, if any: asyncio/daemon.py calls this once, at start."""
        if (message := exposure_warning(recognizers)) is not None:
            logger.warning("%s", message)

    @property
    def sources(self) -> int:
        return len(self._windows)

    def wanted(self) -> list[Hit]:
        return [(port, "tcp") for port in self.codec.span.ports]

    def get_timer(self) -> float | None:
        return self._windows.next_sweep()

    def handle_timer(self, now: float) -> list[Verdict]:
        """Knocks that timed out incomplete: said (rate-limited), since a client with
        another format, span or cipher sends too few or too many ports and nothing else
        would tell why nothing opens."""
        self._windows.expire(now)
        expired, self._windows.expired = self._windows.expired, []
        needed = self.codec.knock_length
        out: list[Verdict] = [
            Ignored(src, f"incomplete knock: {len(w.ports)} of {needed} ports within "
                         f"knock_timeout ({self.knock_timeout:g} s); does the client use "
                         "the same knock, portspan and cipher?")
            for src, w in expired
            if len(w.ports) >= 2 and not w.failed and self._reports.allow(src, now)
        ]  # fmt: skip
        if held := self._reports.take_held(now):
            out.append(Ignored("more sources", f"{held} more incomplete knocks not logged"))
        return out

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
        if fields.client is not None and not self.allow_nat and not same_ip(address, src):
            return Refusal(src, f"CLIENT {address} is not the source {src} (allow_nat = no)")
        used = digest(self.codec.cipher.replay_key(payload))
        if used in self.replays:
            return Refusal(src, "replayed knock")
        self.replays.add(used)
        return Grant(src, self.name, address, ((fields.port or 0, "tcp"),), fields.flags,
                     reason="knock verified", digest=used)  # fmt: skip

    def _stale_field(self, fields: Fields, now: float) -> str:
        """The first time field whose value no moment within ``time_tolerance`` of now
        has; "" when all are fresh."""
        for name, value in fields.times:
            if value not in self._allowed(name, now):
                return name
        return ""

    def _allowed(self, name: str, now: float) -> set[int]:
        """The values a time field takes within ``time_tolerance`` of ``now``, in bounded
        work whatever the tolerance: the field is sampled once per the shortest time it
        holds a value (a second for THISSECOND, a minute for THISMINUTE, ...), and a
        span that holds every value (256 seconds for THISSECOND) needs no sampling."""
        tol = float(int(self.time_tolerance))
        step, cycle = _SAMPLING[name]
        if 2 * tol + 1 >= cycle:
            return _ALL_VALUES
        first, last = now - tol, now + tol
        count = int((last - first) // step) + 1
        moments = [first + i * step for i in range(count)] + [last]
        localtime = self.codec.localtime
        return {time_values(t, localtime=localtime)[name] for t in moments}


_ALL_VALUES = set(range(256))
# Per time field: how long it holds one value at least (seconds), and a span in which it
# takes all 256 values (mod 256). THISHOUR and THISDAY change at local-time offsets too,
# so they are sampled every half hour, whatever the time zone.
_SAMPLING = {
    "THISSECOND": (1.0, 256.0),
    "THISMINUTE": (60.0, 86_400.0),
    "THISHOUR": (1800.0, math.inf),
    "THISDAY": (1800.0, math.inf),
    "THISYEAR": (1800.0, math.inf),
}
