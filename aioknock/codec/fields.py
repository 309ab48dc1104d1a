"""Knock format: which fields a knock carries, in which order, as bytes.

``KnockFormat.pack`` and ``KnockFormat.unpack`` are exact inverses; time and
randomness come in as arguments so the codec stays deterministic under test.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from types import MappingProxyType

from ..errors import InvalidValue, KnockError
from ..records import Record

TIME_FIELDS = ("THISYEAR", "THISDAY", "THISHOUR", "THISMINUTE", "THISSECOND")
SIMPLE_FIELDS = ("CLIENT", "PORT", "RAND", "CHECKSUM", *TIME_FIELDS)
ALIASES = {"IP": "CLIENT"}
#: The field names as people write them, for help texts and errors.
FIELD_NAMES = "CLIENT (or IP), PORT, FLAGm, RAND, " + ", ".join((*TIME_FIELDS, "CHECKSUM"))


def time_values(now: float, *, localtime: bool = False) -> dict[str, int]:
    """The time fields for ``now`` (epoch seconds), each mod 256.

    UTC by default so that client and daemon agree across time zones.
    THISDAY is the day of the year (1 = 1 January); THISHOUR is
    24 * day of month + hour; THISMINUTE is 60 * hour + minute.
    """
    try:
        t = time.localtime(now) if localtime else time.gmtime(now)
    except (OverflowError, OSError, ValueError):
        raise KnockError(f"time {now!r} is outside what the clock functions handle") from None
    return {
        "THISYEAR": t.tm_year % 256,
        "THISDAY": t.tm_yday % 256,
        "THISHOUR": (24 * t.tm_mday + t.tm_hour) % 256,
        "THISMINUTE": (60 * t.tm_hour + t.tm_min) % 256,
        "THISSECOND": int(now) % 256,
    }


class KnockInputs(Record):
    """The values a knock is built from; the codec adds time, checksum and RAND."""

    __slots__ = ("client", "flags", "port", "rand")

    def __init__(
        self, client: str = "0.0.0.0", port: int = 0,
        flags: Mapping[int, int] = MappingProxyType({}), rand: int = 0,
    ) -> None:  # fmt: skip
        self.client = client
        self.port = port
        self.flags = flags
        self.rand = rand


def flag_number(name: str, prefix: str = "FLAG") -> int | None:
    """N of the name ``FLAGn`` (one to nine ASCII digits after ``prefix``), else None: a
    string test, where a pattern would be compiled at every start (~0.6 M instructions)."""
    digits = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(digits) if 0 < len(digits) <= 9 and digits.isascii() and digits.isdigit() else None


def parse_fields(text: str) -> tuple[str, ...]:
    """``CLIENT,PORT,FLAG0`` as canonical field names (``IP`` is ``CLIENT``, ``FLAG01``
    is ``FLAG1``)."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().upper()
        name = ALIASES.get(name, name)
        if (flag := flag_number(name)) is not None:
            name = f"FLAG{flag}"
        elif not name:
            raise InvalidValue(f"empty field in {text!r}")
        elif name not in SIMPLE_FIELDS:
            raise InvalidValue(f"unknown field {raw.strip()!r}; expected {FIELD_NAMES}")
        names.append(name)
    return tuple(names)


class Fields(Record):
    """A decoded knock: each field once, typed, and the lower-case view people see."""

    __slots__ = ("client", "flags", "port", "shown", "times")

    def __init__(
        self, shown: dict[str, int | str], client: str | None = None, port: int | None = None,
        flags: tuple[tuple[int, int], ...] = (), times: tuple[tuple[str, int], ...] = (),
    ) -> None:  # fmt: skip
        self.shown = shown  # e.g. {"client": "10.1.1.1", "port": 22, "flag0": 15}
        self.client = client
        self.port = port
        self.flags = flags  # (n, value) of each FLAGn, by n
        self.times = times  # (TIME field, value)


class KnockFormat(Record):
    """An ordered list of field names (``CLIENT``, ``PORT``, ``FLAG3``, ...)."""

    __slots__ = ("fields", "portbytes")

    def __init__(self, fields: tuple[str, ...], portbytes: int = 2) -> None:
        if portbytes not in (1, 2):
            raise InvalidValue(f"portbytes must be 1 or 2, not {portbytes}")
        self.fields = fields
        self.portbytes = portbytes

    @classmethod
    def parse(cls, text: str, *, portbytes: int = 2) -> KnockFormat:
        return cls(parse_fields(text), portbytes)

    def width(self, name: str) -> int:
        if name == "CLIENT":
            return 4
        if name == "PORT":
            return self.portbytes
        return 1

    @property
    def length(self) -> int:
        """Bytes in the unencrypted knock."""
        return sum(self.width(name) for name in self.fields)

    def flag_numbers(self) -> list[int]:
        return [n for name in self.fields if (n := flag_number(name)) is not None]

    def pack(self, inputs: KnockInputs, now: float, *, localtime: bool = False) -> bytes:
        times = time_values(now, localtime=localtime) if self._uses_time() else {}
        out = bytearray()
        checksum_at: list[int] = []
        for name in self.fields:
            if name == "CLIENT":
                out += _client_bytes(inputs.client)
            elif name == "PORT":
                limit = 1 << (8 * self.portbytes)
                if not 0 <= inputs.port < limit:
                    raise KnockError(f"port {inputs.port} does not fit in {self.portbytes} byte(s)")
                out += inputs.port.to_bytes(self.portbytes, "big")
            elif name == "CHECKSUM":
                checksum_at.append(len(out))
                out.append(0)
            elif name == "RAND":
                out.append(inputs.rand % 256)
            elif name in times:
                out.append(times[name])
            else:
                number = int(name[4:])
                if number not in inputs.flags:
                    raise KnockError(f"the knock uses {name} but flag{number} is not set")
                out.append(inputs.flags[number] % 256)
        total = sum(out) % 256  # checksum bytes are still 0 here
        for i in checksum_at:
            out[i] = total
        return bytes(out)

    def unpack(self, data: bytes) -> Fields:
        """Split a knock into its fields and verify its checksums."""
        if len(data) != self.length:
            raise KnockError(f"knock has {len(data)} bytes, the format needs {self.length}")
        shown: dict[str, int | str] = {}
        checksums: list[int] = []
        pos = 0
        for name in self.fields:
            width = self.width(name)
            chunk = data[pos : pos + width]
            pos += width
            if name == "CHECKSUM":
                checksums.append(chunk[0])
                continue
            value: int | str = (
                str(ipaddress.IPv4Address(chunk))
                if name == "CLIENT"
                else int.from_bytes(chunk, "big")
            )
            key = name.lower()
            # A field named twice carries one value twice; differing copies are a
            # defect. RAND promises nothing to check (a peer may draw each anew).
            if key in shown and shown[key] != value and name != "RAND":
                raise KnockError(f"{name} appears twice with different values")
            shown[key] = value
        if checksums:
            expected = (sum(data) - sum(checksums)) % 256
            if any(c != expected for c in checksums):
                raise KnockError(f"checksum {checksums[0]} does not match {expected}")
            shown["checksum"] = expected
        return self._typed(shown)

    def _typed(self, shown: dict[str, int | str]) -> Fields:
        flags = sorted((n, int(shown[f"flag{n}"])) for n in set(self.flag_numbers()))
        times = tuple((n, int(shown[n.lower()])) for n in TIME_FIELDS if n.lower() in shown)
        client, port = shown.get("client"), shown.get("port")
        return Fields(
            shown,
            str(client) if client is not None else None,
            int(port) if port is not None else None,
            tuple(flags),
            times,
        )

    def _uses_time(self) -> bool:
        return any(name in TIME_FIELDS for name in self.fields)


def _client_bytes(client: str) -> bytes:
    try:
        return ipaddress.IPv4Address(client).packed
    except ValueError:
        raise KnockError(
            f"CLIENT needs an IPv4 address, not {client!r} (set client = x.x.x.x)"
        ) from None
