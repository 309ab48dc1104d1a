"""Doors: which are open, until when, opened by which backend; and the command templates.

A door is one (address, protocol, port) opening in the firewall. The table below is
the only record of open doors: a repeated knock inside the open window extends the
door instead of stacking a second rule, ``cooldown`` limits how often one address
can trigger at all, and a door remembers the backend that opened it, so that after a
reload that backend (its commands) extends and closes it. Command arguments take
placeholders filled only from validated values, so nothing a knock carries can
become a shell command or an option.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..codec.sequence import Proto
from ..errors import InvalidValue

Key = tuple[str, int, str]  # (address, port, proto)
_PLACEHOLDER = re.compile(r"%(IP|PORT|PROTO|DURATION|FLAG([0-9]{1,9}))%")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Door:
    """A validated opening: ``port``/``proto`` for ``address``, with the knock's flags."""

    address: str
    port: int
    proto: Proto
    flags: tuple[tuple[int, int], ...] = ()

    @classmethod
    def make(
        cls, address: str, port: int, proto: str, flags: Mapping[int, int] | None = None
    ) -> Door:
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

    def __str__(self) -> str:
        return f"{self.proto}/{self.port} for {self.address}"


@dataclass(slots=True, eq=False)
class OpenDoor:
    """A door the firewall was told to open, and what closing it needs."""

    door: Door
    deadline: float
    duration: float  # what it was opened for (``%DURATION%`` of the close command)
    backend: int  # the configuration whose backend opened it
    closes_itself: bool  # its backend's rules expire by themselves (nftables timeouts)
    serial: int = 0  # tells this opening from a later one of the same door


Outcome = Literal["open", "extend", "cooldown"]  # what a request for a door came to


class DoorTable:
    """Open doors and their deadlines; recent triggers for ``cooldown``.

    A door stays open (``request`` extends it) until ``due`` has returned it, even
    past its deadline: only then has the backend been told to close it.
    """

    def __init__(self, duration: float, cooldown: float) -> None:
        self.duration = duration
        self.cooldown = cooldown
        self._open: dict[Key, OpenDoor] = {}
        self._last: dict[Key, float] = {}  # key -> last trigger, kept for cooldown
        self._deadlines: list[tuple[float, int, Key]] = []  # a heap; stale entries skipped
        self._order = itertools.count()

    def get(self, key: Key) -> OpenDoor | None:
        return self._open.get(key)

    def open_doors(self) -> list[OpenDoor]:
        return list(self._open.values())

    def request(
        self, door: Door, now: float, *, duration: float | None = None, backend: int = 0,
        closes_itself: bool = False,
    ) -> Outcome:  # fmt: skip
        """Open ``door`` (or extend it, when open) for ``duration`` (default: the table's).

        An extended door keeps the backend that opened it.
        """
        key = door.key
        last = self._last.get(key)
        if last is not None and now - last < self.cooldown:
            return "cooldown"
        if len(self._last) > 1024 + 2 * len(self._open):
            self.forget_cooldowns(now)
        self._last[key] = now
        seconds = self.duration if duration is None else duration
        held = self._open.get(key)
        if held is None:
            self._open[key] = OpenDoor(door, now + seconds, seconds, backend, closes_itself,
                                       next(self._order))  # fmt: skip
        else:
            held.deadline = max(held.deadline, now + seconds)
        self._push(self._open[key].deadline, key)
        return "open" if held is None else "extend"

    def keep(self, held: OpenDoor) -> None:
        """Put back a door ``due`` returned: it cannot close yet (its open is still being
        run), and a knock meanwhile must extend it, not open it a second time."""
        self._open.setdefault(held.door.key, held)

    def forget(self, held: OpenDoor) -> None:
        """Drop a door without closing it (its open failed: there is nothing to close)."""
        if self._open.get(held.door.key) is held:
            del self._open[held.door.key]

    def due(self, now: float) -> list[OpenDoor]:
        """Doors whose time is up; they count as closed once returned."""
        expired: list[OpenDoor] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, key = heapq.heappop(self._deadlines)
            held = self._open.get(key)
            if held is not None and held.deadline == deadline:
                expired.append(self._open.pop(key))
        self.forget_cooldowns(now)
        return expired

    def next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, _, key = self._deadlines[0]
            held = self._open.get(key)
            if held is not None and held.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # extended or gone since
        return None

    def take_all(self) -> list[OpenDoor]:
        """Every open door, removed from the table (the daemon is stopping)."""
        doors = list(self._open.values())
        self._open.clear()
        self._deadlines.clear()
        return doors

    def forget_cooldowns(self, now: float) -> None:
        """Keep memory bounded: a trigger older than ``cooldown`` needs no state."""
        for key in [k for k, last in self._last.items() if now - last >= self.cooldown]:
            del self._last[key]

    def _push(self, deadline: float, key: Key) -> None:
        heapq.heappush(self._deadlines, (deadline, next(self._order), key))
        if len(self._deadlines) > 64 + 2 * len(self._open):  # many extensions: drop stale
            live = [(d.deadline, next(self._order), k) for k, d in self._open.items()]
            heapq.heapify(live)
            self._deadlines = live


@dataclass(frozen=True, slots=True)
class Command:
    """An argument-list template such as ``iptables -I INPUT -s %IP% ...``."""

    argv: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Command:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as exc:
            raise InvalidValue(f"cannot split into arguments: {exc}") from None
        if not argv:
            raise InvalidValue("empty command")
        if any("\0" in arg for arg in argv):
            raise InvalidValue("a NUL character in the command")
        return cls(argv)

    def __str__(self) -> str:
        return shlex.join(self.argv)

    def render(self, door: Door, duration: float) -> list[str]:
        """One argument per template argument, placeholders replaced in a single pass.

        %DURATION% is whole seconds, rounded up; a %FLAGn% the knock does not carry
        stays as it is.
        """
        values = {
            "IP": door.address,
            "PORT": str(door.port),
            "PROTO": door.proto,
            "DURATION": str(math.ceil(min(max(0.0, duration), 1e9))),
        }
        flags = dict(door.flags)

        def value(m: re.Match[str]) -> str:
            if m.group(2) is not None:
                flag = flags.get(int(m.group(2)))
                return m.group(0) if flag is None else str(flag)
            return values[m.group(1)]

        return [_PLACEHOLDER.sub(value, arg) for arg in self.argv]
