"""Port span: the mapping between knock bytes and the ports that carry them.

The span is an ordered list of 2**N distinct ports. The payload is read as one
bit string (8 bits per byte, most significant first) and cut into groups of N
bits; each group is an index into the span. The last group keeps only the
leftover bits, read as an unpadded number, exactly as the prototype does, so
decoding needs to know how many bytes were sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..errors import InvalidValue, KnockError
from ..records import Record

MAX_BITS = 15
_ITEM = r"(?a)\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?"


def _powers_near(size: int) -> str:
    """The allowed sizes (2, 4, ..., 2**MAX_BITS) next to ``size``."""
    if size <= 2:
        return "nearest: 2"
    lower = 1 << (size.bit_length() - 1)
    if lower >= 1 << MAX_BITS:
        return f"nearest: {1 << MAX_BITS}, the largest"
    return f"nearest: {lower} or {lower << 1}"


class PortSpan(Record):
    """An ordered span of 2**bits ports; encode() and decode() are exact inverses."""

    __slots__ = ("_index", "bits", "ports")

    def __init__(self, ports: tuple[int, ...], bits: int, index: dict[int, int]) -> None:
        """Use ``from_ports`` or ``parse``, which check the ports and make the index."""
        self.ports = ports
        self.bits = bits
        self._index = index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PortSpan):
            return NotImplemented
        return self.ports == other.ports

    def __hash__(self) -> int:
        return hash(self.ports)

    def __repr__(self) -> str:
        return f"PortSpan.parse({str(self)!r})"

    @classmethod
    def from_ports(cls, ports: Iterable[int]) -> PortSpan:
        ports = tuple(ports)
        seen: dict[int, int] = {}
        for i, port in enumerate(ports):
            if not 1 <= port <= 65535:
                raise InvalidValue(f"port {port} is outside 1-65535")
            if port in seen:
                raise InvalidValue(f"port {port} appears twice")
            seen[port] = i
        size = len(ports)
        bits = size.bit_length() - 1
        if size < 2 or size != 1 << bits or bits > MAX_BITS:
            raise InvalidValue(
                f"span has {size} ports; it must have 2^N ports with 1 <= N <= {MAX_BITS} "
                f"({_powers_near(size)})"
            )
        return cls(ports, bits, seen)

    @classmethod
    def parse(cls, text: str) -> PortSpan:
        """Parse ``a-b,c,d-e,...``; ranges keep their listed order."""
        ports: list[int] = []
        seen: set[int] = set()
        for part in text.split(","):
            if not part.strip():
                raise InvalidValue(f"empty item in {text!r}")
            m = re.fullmatch(_ITEM, part)
            try:
                if m is None:
                    raise ValueError
                first = int(m[1])
                last = int(m[2]) if m[2] is not None else first
            except ValueError:  # not digits, or absurdly many of them
                raise InvalidValue(f"{part.strip()!r} is not a port or a range a-b") from None
            if not (1 <= first <= 65535 and 1 <= last <= 65535):
                raise InvalidValue(f"{part.strip()!r} is outside 1-65535")
            if last < first:
                raise InvalidValue(f"range {part.strip()!r} runs backwards")
            item = range(first, last + 1)
            if not seen.isdisjoint(item):  # checked here to bound the work on huge inputs
                twice = next(p for p in item if p in seen)
                raise InvalidValue(f"port {twice} appears twice")
            seen.update(item)
            ports.extend(item)
        return cls.from_ports(ports)

    @property
    def size(self) -> int:
        return len(self.ports)

    def __str__(self) -> str:
        """The span as it is written (``745-1000``), ranges in their listed order."""
        parts: list[str] = []
        first = last = self.ports[0]
        for port in (*self.ports[1:], -1):
            if port == last + 1:
                last = port
                continue
            parts.append(str(first) if first == last else f"{first}-{last}")
            first = last = port
        return ",".join(parts)

    def symbols(self, length: int) -> int:
        """How many ports carry ``length`` bytes."""
        return -(-8 * length // self.bits)

    def encode(self, data: bytes) -> list[int]:
        nbits = 8 * len(data)
        if nbits == 0:
            return []
        value = int.from_bytes(data, "big")
        bits = self.bits
        mask = (1 << bits) - 1
        full, rest = divmod(nbits, bits)
        out = [self.ports[(value >> (nbits - (i + 1) * bits)) & mask] for i in range(full)]
        if rest:
            out.append(self.ports[value & ((1 << rest) - 1)])
        return out

    def decode(self, ports: Sequence[int], length: int) -> bytes:
        """Invert encode() for a payload of ``length`` bytes."""
        expected = self.symbols(length)
        if len(ports) != expected:
            raise KnockError(f"expected {expected} ports for {length} bytes, got {len(ports)}")
        nbits = 8 * length
        bits = self.bits
        rest = nbits % bits
        value = 0
        for i, port in enumerate(ports):
            index = self._index.get(port)
            if index is None:
                raise KnockError(f"port {port} is not in the span")
            width = rest if rest and i == expected - 1 else bits
            if index >> width:
                raise KnockError(f"port {port} is out of range for the last {width} bits")
            value = (value << width) | index
        return value.to_bytes(length, "big")
