"""Knock format: which fields a knock carries, in which order, as bytes.

``KnockFormat.pack`` and ``KnockFormat.unpack`` are exact inverses; time and
randomness come in as arguments so the codec stays deterministic under test.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError, KnockError

TIME_FIELDS = ("THISYEAR", "THISDAY", "THISHOUR", "THISMINUTE", "THISSECOND")
SIMPLE_FIELDS = ("CLIENT", "PORT", "RAND", "CHECKSUM", *TIME_FIELDS)
ALIASES = {"IP": "CLIENT"}
_FLAG = re.compile(r"FLAG([0-9]{1,9})")


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


@dataclass(frozen=True, slots=True)
class KnockInputs:
    """The values a knock is built from; the codec adds time, checksum and RAND."""

    client: str = "0.0.0.0"
    port: int = 0
    flags: Mapping[int, int] = field(default_factory=dict)
    rand: int = 0


@dataclass(frozen=True, slots=True)
class KnockFormat:
    """An ordered list of field names (``CLIENT``, ``PORT``, ``FLAG3``, ...)."""

    fields: tuple[str, ...]
    portbytes: int = 2

    @classmethod
    def parse(cls, text: str, *, portbytes: int = 2) -> KnockFormat:
        names: list[str] = []
        for raw in text.split(","):
            name = raw.strip().upper()
            name = ALIASES.get(name, name)
            if flag := _FLAG.fullmatch(name):
                name = f"FLAG{int(flag[1])}"  # FLAG01 is flag1
            elif name not in SIMPLE_FIELDS:
                if not name:
                    raise ConfigError(f"empty field in {text!r}", key="knock")
                raise ConfigError(
                    f"unknown field {raw.strip()!r}; expected CLIENT (or IP), PORT, FLAGm, "
                    "RAND, THISYEAR, THISDAY, THISHOUR, THISMINUTE, THISSECOND, CHECKSUM",
                    key="knock",
                )
            names.append(name)
        if portbytes not in (1, 2):
            raise ConfigError(f"portbytes must be 1 or 2, not {portbytes}", key="portbytes")
        return cls(tuple(names), portbytes)

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
        return [int(m.group(1)) for name in self.fields if (m := _FLAG.fullmatch(name))]

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

    def unpack(self, data: bytes) -> dict[str, int | str]:
        """Split a knock into lower-case named fields and verify its checksums."""
        if len(data) != self.length:
            raise KnockError(f"knock has {len(data)} bytes, the format needs {self.length}")
        result: dict[str, int | str] = {}
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
            if key in result and result[key] != value and name != "RAND":
                raise KnockError(f"{name} appears twice with different values")
            result[key] = value
        if checksums:
            expected = (sum(data) - sum(checksums)) % 256
            if any(c != expected for c in checksums):
                raise KnockError(f"checksum {checksums[0]} does not match {expected}")
            result["checksum"] = expected
        return result

    def _uses_time(self) -> bool:
        return any(name in TIME_FIELDS for name in self.fields)


def _client_bytes(client: str) -> bytes:
    try:
        return ipaddress.IPv4Address(client).packed
    except ValueError:
        raise KnockError(
            f"CLIENT needs an IPv4 address, not {client!r} (set client = x.x.x.x)"
        ) from None
