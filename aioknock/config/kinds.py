"""Kinds of setting values: how text (or a program's value) becomes what the program uses.

A kind reads one value into its object (a ``PortSpan``, a ``Command``, a
``LogFormat``...) with the codec's and the daemon's own parsers, so a value is
checked once, while loading; and shows it again as people write it (the manual,
``-debug -debug``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import socket
from collections.abc import Callable

from ..codec.ciphers import cipher_name, cipher_names
from ..codec.fields import parse_fields
from ..codec.logtemplate import LogTemplate
from ..codec.portspan import PortSpan
from ..codec.sequence import Hit, hits, parse_sequence, proto_of, sequence_text
from ..codec.spa import HASHES, parse_proto_port
from ..errors import InvalidValue, KnockError
from ..records import Record

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any


BOOL_WORDS = {
    "yes": True, "on": True, "true": True, "1": True,
    "no": False, "off": False, "false": False, "0": False,
}  # fmt: skip
AUTO = "auto"  # client = auto: the address the kernel uses to reach the host
SOURCE = "source"  # allow_ip = source: "open for the packet's source" (fwknop -s)


class Kind(Record):
    """How a key's value is read into what the program uses, and shown again.

    ``convert`` raises InvalidValue with its own reason, or ValueError/TypeError, in
    which case the error says ``expected <expected>``.
    """

    __slots__ = ("convert", "expected", "name", "show")

    def __init__(
        self, name: str, expected: str, convert: Callable[[object], Any],
        show: Callable[[Any], str] = str,
    ) -> None:  # fmt: skip
        self.name = name
        self.expected = expected
        self.convert = convert
        self.show = show

    def __call__(self, raw: object) -> Any:
        return self.convert(raw)


def plain_text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError
    return str(raw).strip()


def _exact_text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError
    return str(raw)


def _secret(raw: object) -> str:
    """A passphrase as given, every character of it: Crypt::CBC hashes the key's bytes,
    spaces at its ends included, so a key stripped here would not be the prototype's.
    Text only: a TOML number (``key = 1_000``, ``0x10``) is not the characters written."""
    if not isinstance(raw, str):
        raise ValueError
    return raw


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[raw.strip().lower()]
    raise ValueError


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


_DIGITS = r"[0-9]{1,20}"  # ASCII only: int() also takes full-width digits, "2_2"
_DECIMAL = r"(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?"
_MARK = r"0[xX][0-9a-fA-F]{1,8}|[0-9]{1,10}"


def _number(raw: object, pattern: str, base: int = 10) -> int:
    """A whole number written as ASCII digits (a program may pass an int)."""
    if isinstance(raw, bool):
        raise ValueError
    if isinstance(raw, int):
        return raw
    text = plain_text(raw)
    if not re.fullmatch(pattern, text):
        raise ValueError
    return int(text, base)


def integer(low: int, high: int | None = None) -> Kind:
    def convert(raw: object) -> int:
        value = _number(raw, _DIGITS)
        if value < low or (high is not None and value > high):
            raise ValueError
        return value

    span = f"{low}-{high}" if high is not None else f">= {low}"
    return Kind("int", f"a whole number {span}", convert)


DAY = 86_400.0


def seconds(low: float = 0.0, high: float = DAY) -> Kind:
    """A duration; at most a day by default: larger ones are typing mistakes, and
    overflow the arithmetic that uses them."""

    def convert(raw: object) -> float:
        if isinstance(raw, bool):
            raise ValueError
        if isinstance(raw, int | float):
            value = float(raw)
        elif re.fullmatch(_DECIMAL, text := plain_text(raw)):
            value = float(text)
        else:
            raise ValueError
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError
        return value

    return Kind("seconds", f"a number of seconds from {low:g} to {high:g}", convert, "{:g}".format)


def level(high: int) -> Kind:
    """A count such as ``debug``: the prototype's ``debug = yes``, or how many ``-debug``."""

    def convert(raw: object) -> int:
        if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
            return int(BOOL_WORDS[raw.strip().lower()])
        if isinstance(raw, bool):
            return int(raw)
        value = _number(raw, _DIGITS)
        if not 0 <= value <= high:
            raise ValueError
        return value

    return Kind("level", f"yes/no or a count 0-{high}", convert)


def choice(*names: str) -> Kind:
    def convert(raw: object) -> str:
        value = plain_text(raw).lower()
        if value not in names:
            raise ValueError
        return value

    return Kind("choice", " or ".join(names), convert)


def _path(raw: object) -> str:
    value = plain_text(raw)
    if "\0" in value:
        raise ValueError
    return value


def mark_number(raw: object) -> int:
    """A 32-bit number other than 0, decimal or 0x hexadecimal (a packet mark)."""
    value = _number(raw, _MARK, 0)
    if not 0 < value < 1 << 32:
        raise ValueError
    return value


def _sequence(raw: object) -> tuple[Hit, ...]:
    """knockd's text, or a program's list of ``port`` / ``(port, "udp")``."""
    if isinstance(raw, list | tuple):
        return hits(raw)
    text = plain_text(raw)
    return parse_sequence(text) if text else ()


def _client(raw: object) -> str:
    """``auto`` (or empty), or the address the knock carries: IPv4 (the prototype's
    CLIENT), or IPv6 too for a sealed knock (the codec says so for the prototype's)."""
    value = plain_text(raw)
    if value.lower() in ("", AUTO):
        return AUTO
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidValue(f"expected an IP address, empty or auto, got {value!r}") from None


def _host(raw: object) -> str:
    """A host name or address: printable, no spaces (a NUL would cut the name short in
    the resolver, knocking another host than the one named)."""
    value = plain_text(raw)
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError
    return value


FAMILIES = {"any": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}


def _family(raw: object) -> int:
    """``any``, ``4`` or ``6``; a program may pass ``socket.AF_INET`` and the like."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in FAMILIES.values():
        return raw
    return FAMILIES[choice(*FAMILIES)(raw)]


def _family_name(family: int) -> str:
    return next(name for name, value in FAMILIES.items() if value == family)


def _access(raw: object) -> tuple[tuple[str, int], ...]:
    """fwknop's ACCESS: ``tcp/22,udp/53`` (empty: the port the knock asks for)."""
    text = plain_text(raw)
    if not text:
        return ()
    try:
        return tuple(parse_proto_port(spec.strip()) for spec in text.split(","))
    except KnockError as exc:
        raise InvalidValue(f"expected proto/port[,proto/port...] such as tcp/22: "
                           f"{exc.reason}") from None  # fmt: skip


def _access_text(access: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"{proto}/{port}" for proto, port in access)


def _allow_ip(raw: object) -> str:
    """``auto``, ``source`` or an address, IPv4 or IPv6."""
    value = plain_text(raw)
    if value.lower() in ("", AUTO, SOURCE):
        return value.lower() or AUTO
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidValue(f"expected auto, source or an IP address, got {value!r}") from None


def _base64(raw: object) -> bytes:
    """A key as fwknop's --key-gen writes it: standard base64 (empty: not set)."""
    text = plain_text(raw).rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue("expected base64 (as fwknop --key-gen writes it)") from None


BOOL = Kind("bool", "yes/no, on/off, true/false or 1/0", _bool, _yes_no)
TEXT = Kind("text", "text", plain_text)
# Spaces kept (quote the value in a config file): a log prefix ends in one, as a rule.
EXACT_TEXT = Kind("text", "text (quote it to keep spaces)", _exact_text)
# A passphrase: used byte for byte from the command line, the environment, a TOML
# string or a quoted Config::General value (which keeps the spaces inside its quotes).
SECRET = Kind("secret", "text, kept byte for byte", _secret)
FLAG = integer(0)  # taken mod 256 with a warning, as the prototype did
PATH = Kind("path", "a file name (relative: to the config file)", _path)
FIELDS = Kind("fields", "a list of fields", lambda raw: parse_fields(plain_text(raw)), ",".join)
SPAN = Kind("span", "ports a-b,c,d-e", lambda raw: PortSpan.parse(plain_text(raw)))
CIPHER = Kind("name", f"one of {', '.join(cipher_names())}",
              lambda raw: cipher_name(plain_text(raw)))  # fmt: skip
SEQUENCE = Kind("sequence", "ports such as 7000,8000:udp,9000", _sequence, sequence_text)
TEMPLATE = Kind("template", "a log line template", lambda raw: LogTemplate(plain_text(raw)))
CLIENT = Kind("address", "an IP address, empty or auto", _client)
HOST = Kind("host", "a host name or address (printable, no spaces)", _host)
FAMILY = Kind("choice", "any, 4 or 6", _family, _family_name)
PROTO = Kind("proto", "tcp or udp", lambda raw: proto_of(plain_text(raw)))
ACCESS = Kind("access", "proto/port[,proto/port...] such as tcp/22", _access, _access_text)
ALLOW_IP = Kind("address", "auto, source or an IP address", _allow_ip)
BASE64 = Kind("base64", "base64", _base64, lambda b: base64.b64encode(b).decode())
DIGEST = choice(*HASHES)
