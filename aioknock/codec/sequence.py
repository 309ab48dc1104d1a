"""knockd's fixed sequences: ``7000,8000:udp,9000`` as (port, protocol) hits, both ways."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import InvalidValue

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Literal, TypeAlias

Proto: TypeAlias = "Literal['tcp', 'udp']"
# One knock of a sequence: a TCP SYN or a UDP datagram to a port.
Hit: TypeAlias = "tuple[int, Proto]"


def proto_of(text: str) -> Proto:
    """``tcp`` or ``udp`` (any case); InvalidValue for anything else."""
    name = text.strip().lower()
    if name == "tcp":
        return "tcp"
    if name == "udp":
        return "udp"
    raise InvalidValue(f"expected tcp or udp, got {text!r}")


def parse_sequence(text: str) -> tuple[Hit, ...]:
    """knockd's spelling: ports 1-65535, each with an optional ``:tcp`` or ``:udp``."""
    out: list[Hit] = []
    for item in text.replace(" ", "").split(","):
        port_text, _, proto = item.partition(":")
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise InvalidValue(f"expected ports 1-65535 with optional :tcp or :udp, got {item!r}")
        if proto.lower() not in ("", "tcp", "udp"):
            raise InvalidValue(f"expected :tcp or :udp after the port, got {item!r}")
        out.append((int(port_text), proto_of(proto or "tcp")))
    return tuple(out)


def hits(items: Iterable[int | Sequence[object]]) -> tuple[Hit, ...]:
    """Ports from a program (``7000`` or ``(8000, "udp")``), checked as the text form is."""
    out: list[Hit] = []
    for item in items:
        port, proto = (item, "tcp") if isinstance(item, int) else tuple(item)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InvalidValue(f"ports must be 1-65535, not {port!r}")
        if not isinstance(proto, str):
            raise InvalidValue(f"protocol must be tcp or udp, not {proto!r}")
        out.append((port, proto_of(proto)))
    return tuple(out)


def sequence_text(sequence: Iterable[Hit]) -> str:
    """The knockd spelling of a sequence (``:tcp`` left out, as knockd writes it)."""
    return ",".join(str(port) if proto == "tcp" else f"{port}:{proto}" for port, proto in sequence)
