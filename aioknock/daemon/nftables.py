"""nftables scripts for the built-in backend (text only; the asyncio layer runs ``nft -f -``).

The daemon owns one table. Two sets hold (address . protocol . port) with a
per-element timeout, so an opened door closes itself in the kernel even if the
daemon dies. Sets cannot be referenced across tables, so the daemon's chain,
at mangle priority (before the usual filter chains), marks matching packets,
and the user's own ruleset accepts the mark:

    ct state established,related accept
    meta mark & MARK == MARK accept

The daemon never touches a table it did not create.
"""

from __future__ import annotations

import math
import re

from ..errors import InvalidValue
from .doors import Door

DEFAULT_MARK = 0x4B4E4F43  # "KNOC"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


def check_table(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidValue(f"{name!r} is not a valid nftables table name (letters, digits, _)")
    return name


def check_mark(mark: int) -> int:
    """A mark of 0 would make the user's ``meta mark & 0 == 0`` rule accept everything."""
    if isinstance(mark, bool) or not isinstance(mark, int) or not 0 < mark < 1 << 32:
        raise InvalidValue(f"{mark!r} is not a nonzero 32-bit mark")
    return mark


def user_rules(mark: int = DEFAULT_MARK) -> list[str]:
    """The two rules a user adds to their input chain, before its drop rules."""
    m = f"{check_mark(mark):#x}"
    return ["ct state established,related accept", f"meta mark & {m} == {m} accept"]


def setup_script(table: str, mark: int = DEFAULT_MARK) -> str:
    """Idempotent: re-running keeps the sets' elements (open doors keep their timeouts)."""
    t = f"inet {check_table(table)}"
    mark = check_mark(mark)
    return "\n".join(
        [
            f"add table {t}",
            f"add set {t} allow4 {{ type ipv4_addr . inet_proto . inet_service; flags timeout; }}",
            f"add set {t} allow6 {{ type ipv6_addr . inet_proto . inet_service; flags timeout; }}",
            f"add chain {t} doors {{ type filter hook input priority -150; policy accept; }}",
            f"flush chain {t} doors",
            f"add rule {t} doors ip saddr . meta l4proto . th dport @allow4 "
            f"meta mark set meta mark or {mark:#x}",
            f"add rule {t} doors ip6 saddr . meta l4proto . th dport @allow6 "
            f"meta mark set meta mark or {mark:#x}",
            "",
        ]
    )


def _element(door: Door) -> tuple[str, str]:
    return f"allow{door.family}", f"{door.address} . {door.proto} . {door.port}"


def open_script(table: str, door: Door, duration: float) -> str:
    """Add, or refresh the timeout of, one element in a single transaction.

    ``add`` leaves an existing element's timeout alone, so add-delete-add makes
    the result the same whether the door was open or not.
    """
    t = f"inet {check_table(table)}"
    name, elem = _element(door)
    seconds = max(1, math.ceil(min(duration, 1e9)))  # never shorter than asked for
    return (
        f"add element {t} {name} {{ {elem} timeout {seconds}s }}\n"
        f"delete element {t} {name} {{ {elem} }}\n"
        f"add element {t} {name} {{ {elem} timeout {seconds}s }}\n"
    )


def close_script(table: str, door: Door) -> str:
    """Remove one element; preceded by an add so it succeeds if the kernel already expired it."""
    t = f"inet {check_table(table)}"
    name, elem = _element(door)
    return (
        f"add element {t} {name} {{ {elem} timeout 1s }}\ndelete element {t} {name} {{ {elem} }}\n"
    )
