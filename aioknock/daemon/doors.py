"""Which doors are open, until when, and what to run: pure bookkeeping, time passed in.

A repeated knock inside the open window extends it instead of stacking a
second rule; ``cooldown`` limits how often one address can trigger at all.
Actions are argument lists with placeholders filled only from validated
values, so nothing a knock carries can become a shell command or an option.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

Key = tuple[str, int, str]  # (address, port, proto)
PLACEHOLDERS = ("%IP%", "%PORT%", "%PROTO%", "%DURATION%", "%FLAGn%")
_PLACEHOLDER = re.compile(r"%(IP|PORT|PROTO|DURATION|FLAG([0-9]{1,9}))%")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Grant:
    """A validated request to open ``port``/``proto`` for ``address``."""

    address: str
    port: int
    proto: Literal["tcp", "udp"]
    flags: tuple[tuple[int, int], ...] = ()

    @classmethod
    def make(
        cls, address: str, port: int, proto: str, flags: dict[int, int] | None = None
    ) -> Grant:
        """Raises ValueError for anything but an IP address, a port 1-65535, tcp or udp."""
        if not isinstance(address, str):
            raise ValueError(f"not an IP address: {address!r}")
        ip = ipaddress.ip_address(address)  # ValueError for anything else
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:  # free text after %: never let it reach a command
                raise ValueError(f"an IPv6 address with a scope id: {address!r}")
            if ip.ipv4_mapped:
                ip = ip.ipv4_mapped
        if not _is_int(port) or not 0 < port < 65536:
            raise ValueError(f"port {port!r} out of range")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"protocol {proto!r}")
        clean: list[tuple[int, int]] = []
        for number, value in (flags or {}).items():
            if not (_is_int(number) and _is_int(value) and number >= 0 and 0 <= value < 256):
                raise ValueError(f"flag{number!r} = {value!r}: not a byte")
            clean.append((number, value))
        return cls(str(ip), port, "udp" if proto == "udp" else "tcp", tuple(sorted(clean)))

    @property
    def key(self) -> Key:
        return (self.address, self.port, self.proto)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


Verdict = Literal["open", "extend", "cooldown"]


class DoorKeeper:
    """Open doors and their deadlines; recent triggers for ``cooldown``.

    A door stays open (``request`` extends it) until ``due`` has returned it,
    even past its deadline: only then has the backend been told to close it.
    """

    def __init__(self, duration: float, cooldown: float) -> None:
        self.duration = duration
        self.cooldown = cooldown
        self._open: dict[Key, float] = {}  # key -> deadline
        self._last: dict[Key, float] = {}  # key -> last trigger, kept for cooldown

    def request(self, grant: Grant, now: float) -> Verdict:
        key = grant.key
        last = self._last.get(key)
        if last is not None and now - last < self.cooldown:
            return "cooldown"
        if len(self._last) > 1024 + 2 * len(self._open):
            self.forget_cooldowns(now)
        self._last[key] = now
        verdict: Verdict = "extend" if key in self._open else "open"
        self._open[key] = now + self.duration
        return verdict

    def due(self, now: float) -> list[Key]:
        """Doors whose time is up; they count as closed once returned."""
        expired = [key for key, until in self._open.items() if until <= now]
        for key in expired:
            del self._open[key]
        self.forget_cooldowns(now)
        return expired

    def next_deadline(self) -> float | None:
        return min(self._open.values(), default=None)

    def is_open(self, key: Key) -> bool:
        return key in self._open

    def forget_cooldowns(self, now: float) -> None:
        """Keep memory bounded: a trigger older than ``cooldown`` needs no state."""
        for key in [k for k, last in self._last.items() if now - last >= self.cooldown]:
            del self._last[key]


@dataclass(frozen=True, slots=True)
class Command:
    """An argument-list template such as ``iptables -I INPUT -s %IP% ...``."""

    argv: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, key: str) -> Command:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise ConfigError(f"cannot split into arguments: {exc}", key=key) from None
        if not argv:
            raise ConfigError("empty command", key=key)
        if any("\0" in arg for arg in argv):
            raise ConfigError("a NUL character in the command", key=key)
        return cls(argv)

    def render(self, grant: Grant, duration: float) -> list[str]:
        """One argument per template argument, placeholders replaced in a single pass.

        %DURATION% is whole seconds, rounded up; a %FLAGn% the knock does not carry
        stays as it is.
        """
        values = {
            "IP": grant.address,
            "PORT": str(grant.port),
            "PROTO": grant.proto,
            "DURATION": str(math.ceil(min(max(0.0, duration), 1e9))),
        }
        flags = dict(grant.flags)

        def value(m: re.Match[str]) -> str:
            if m.group(2) is not None:
                flag = flags.get(int(m.group(2)))
                return m.group(0) if flag is None else str(flag)
            return values[m.group(1)]

        return [_PLACEHOLDER.sub(value, arg) for arg in self.argv]
