"""Which doors are open, until when, and what to run: pure bookkeeping, time passed in.

A repeated knock inside the open window extends it instead of stacking a
second rule; ``cooldown`` limits how often one address can trigger at all.
Actions are argument lists with placeholders filled only from validated
values, so nothing a knock carries can become a shell command or an option.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

Key = tuple[str, int, str]  # (address, port, proto)
PLACEHOLDERS = ("%IP%", "%PORT%", "%PROTO%", "%DURATION%")


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
        ip = ipaddress.ip_address(address)  # ValueError for anything else
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"protocol {proto!r}")
        clean = tuple(sorted((int(n), int(v) % 256) for n, v in (flags or {}).items()))
        return cls(str(ip), port, "udp" if proto == "udp" else "tcp", clean)

    @property
    def key(self) -> Key:
        return (self.address, self.port, self.proto)

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


Verdict = Literal["open", "extend", "cooldown"]


@dataclass(slots=True)
class _State:
    until: float
    last: float


class DoorKeeper:
    def __init__(self, duration: float, cooldown: float) -> None:
        self.duration = duration
        self.cooldown = cooldown
        self._open: dict[Key, _State] = {}

    def request(self, grant: Grant, now: float) -> Verdict:
        state = self._open.get(grant.key)
        if state is not None and now - state.last < self.cooldown:
            return "cooldown"
        if state is not None and state.until > now:
            state.until, state.last = now + self.duration, now
            return "extend"
        self._open[grant.key] = _State(now + self.duration, now)
        return "open"

    def due(self, now: float) -> list[Key]:
        """Doors whose time is up; they are forgotten once returned."""
        expired = [key for key, st in self._open.items() if st.until <= now]
        for key in expired:
            del self._open[key]
        return expired

    def next_deadline(self) -> float | None:
        return min((st.until for st in self._open.values()), default=None)

    def is_open(self, key: Key) -> bool:
        return key in self._open

    def forget_cooldowns(self, now: float) -> None:
        """Keep memory bounded: closed doors past their cooldown need no state."""
        for key in [k for k, st in self._open.items() if st.until <= now - self.cooldown]:
            del self._open[key]


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
        return cls(argv)

    def render(self, grant: Grant, duration: float) -> list[str]:
        values = {
            "%IP%": grant.address,
            "%PORT%": str(grant.port),
            "%PROTO%": grant.proto,
            "%DURATION%": str(int(duration)),
        }
        flags = dict(grant.flags)
        out: list[str] = []
        for arg in self.argv:
            for name, value in values.items():
                arg = arg.replace(name, value)
            for number, flag in flags.items():
                arg = arg.replace(f"%FLAG{number}%", str(flag))
            out.append(arg)
        return out
