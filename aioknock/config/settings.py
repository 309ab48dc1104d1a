"""The settings table: one definition per key drives validation, CLI flags and the manual.

Each key is a dataclass field whose metadata holds its kind (how to read and
check a value) and its help text. ``ClientSettings`` adds the sender's keys to
the knock keys that client and daemon share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

BOOL_WORDS = {
    "yes": True, "on": True, "true": True, "1": True,
    "no": False, "off": False, "false": False, "0": False,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Kind:
    """How a key's value is read and checked; ``expected`` ends up in error messages."""

    name: str
    expected: str
    convert: Callable[[object], Any]

    def __call__(self, raw: object) -> Any:
        return self.convert(raw)


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[raw.strip().lower()]
    raise ValueError


def _text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError
    return str(raw).strip()


def _exact_text(raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError
    return str(raw)


def integer(low: int, high: int | None = None) -> Kind:
    def convert(raw: object) -> int:
        if isinstance(raw, bool):
            raise ValueError
        value = raw if isinstance(raw, int) else int(_text(raw), 10)
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
        value = float(raw) if isinstance(raw, int | float) else float(_text(raw))
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError
        return value

    return Kind("seconds", f"a number of seconds from {low:g} to {high:g}", convert)


def level(high: int) -> Kind:
    """A count such as ``debug``: the prototype's ``debug = yes``, or how many ``-debug``."""

    def convert(raw: object) -> int:
        if isinstance(raw, str) and raw.strip().lower() in BOOL_WORDS:
            return int(BOOL_WORDS[raw.strip().lower()])
        if isinstance(raw, bool):
            return int(raw)
        value = raw if isinstance(raw, int) else int(_text(raw), 10)
        if not 0 <= value <= high:
            raise ValueError
        return value

    return Kind("level", f"yes/no or a count 0-{high}", convert)


def choice(*names: str) -> Kind:
    def convert(raw: object) -> str:
        value = _text(raw).lower()
        if value not in names:
            raise ValueError
        return value

    return Kind("choice", " or ".join(names), convert)


BOOL = Kind("bool", "yes/no, on/off, true/false or 1/0", _bool)
TEXT = Kind("text", "text", _text)
# Spaces kept (quote the value in a config file): a log prefix ends in one, as a rule.
EXACT_TEXT = Kind("text", "text (quote it to keep spaces)", _exact_text)
FLAG = integer(0)  # taken mod 256 with a warning, as the prototype did


def _path(raw: object) -> str:
    value = _text(raw)
    if "\0" in value:
        raise ValueError
    return value


PATH = Kind("path", "a file name (relative: to the config file)", _path)


def parse_sequence(text: str) -> tuple[tuple[int, str], ...]:
    """knockd's spelling ``7000,8000:udp,9000`` as (port, proto) pairs; ValueError if bad."""
    out: list[tuple[int, str]] = []
    for item in text.replace(" ", "").split(","):
        port_text, _, proto = item.partition(":")
        proto = (proto or "tcp").lower()
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"expected ports 1-65535 with optional :tcp or :udp, got {item!r}")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"expected :tcp or :udp after the port, got {item!r}")
        out.append((int(port_text), proto))
    return tuple(out)


def _sequence_text(raw: object) -> str:
    text = _text(raw)
    if text:
        parse_sequence(text)
    return text


SEQUENCE = Kind("sequence", "ports such as 7000,8000:udp,9000", _sequence_text)


def opt(default: Any, kind: Kind, help: str, *, secret: bool = False, metavar: str = "") -> Any:
    """Declare one settings key (its default, kind and help) in a settings dataclass."""
    meta = {"kind": kind, "help": help, "secret": secret, "metavar": metavar}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Key:
    """One row of the settings table."""

    name: str
    kind: Kind
    default: Any
    help: str
    secret: bool
    metavar: str


DEFAULT_FILEFORMAT = (
    "_DATE_ localhost kernel: IN=eth0 OUT= SRC=_CLIENT_ DST=_REMOTE_ LEN=60 TOS=0x00 "
    "PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=_CLIENTPORT_ DPT=_REMOTEPORT_ WINDOW=64240 "
    "RES=0x00 SYN URGP=0"
)


@dataclass(frozen=True, slots=True, repr=False)
class KnockSettings:
    """Keys that define a knock; client and daemon must agree on all of them."""

    knock: str = opt(
        "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM", TEXT,
        "knock format: comma-separated fields CLIENT (or IP), PORT, FLAGm, RAND, THISYEAR, "
        "THISDAY, THISHOUR, THISMINUTE, THISSECOND, CHECKSUM", metavar="FIELDS",
    )  # fmt: skip
    portspan: str = opt(
        "745-1000",
        TEXT,
        "ports that carry the knock: a-b,c,d-e,... with 2^N ports, 1 <= N <= 15",
        metavar="SPAN",
    )
    portbytes: int = opt(
        2, integer(1, 2), "bytes for PORT: 2 (0-65535), or 1 as in the prototype before v0.24"
    )
    encrypt: bool = opt(False, BOOL, "encrypt the knock (strongly suggested)")
    cipher: str = opt(
        "Blowfish",
        TEXT,
        "Blowfish, CAST5, DES, DES_EDE3 or IDEA (Crypt::CBC compatible)",
        metavar="NAME",
    )
    key: str = opt("", TEXT, "passphrase for the cipher (prefer key_file or AIOKNOCK_KEY)",
                   secret=True, metavar="PASSPHRASE")  # fmt: skip
    key_file: str = opt(
        "",
        TEXT,
        "file whose first line is the passphrase (relative: to the config file)",
        metavar="PATH",
    )
    iv: bool = opt(True, BOOL, "random IV with Crypt::CBC's RandomIV header; no = fixed zero IV")
    localtime: bool = opt(False, BOOL, "time fields in local time, as the prototype; default UTC")
    flags: Mapping[int, int] = field(default_factory=dict, metadata={"flags": True})
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    BLOCKS: ClassVar[frozenset[str]] = frozenset()  # block names a config file may hold

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items(masked=True))
        return f"{type(self).__name__}({shown})"

    @classmethod
    def table(cls) -> list[Key]:
        return [
            Key(f.name, f.metadata["kind"], f.default, f.metadata["help"],
                f.metadata["secret"], f.metadata["metavar"])
            for f in dataclasses.fields(cls)
            if "kind" in f.metadata
        ]  # fmt: skip

    def items(self, *, masked: bool = False) -> Iterator[tuple[str, Any]]:
        """Effective settings in table order, flags last; secrets masked on request."""
        for key in self.table():
            value = getattr(self, key.name)
            if masked and key.secret and value:
                value = "********"
            yield key.name, value
        for number in sorted(self.flags):
            yield f"flag{number}", self.flags[number]

    def origin(self, name: str) -> str:
        """Where a value came from, e.g. ``/etc/x.conf:12`` or ``default``."""
        return self.origins.get(name, "default")


@dataclass(frozen=True, slots=True, repr=False)
class ClientSettings(KnockSettings):
    """Keys of ``aioknock run``, the prototype's knockclient options first."""

    remote: str = opt("127.0.0.1", TEXT, "host to knock: name or address", metavar="HOST")
    client: str = opt(
        "auto", TEXT, "IPv4 address put in CLIENT; empty or auto = the local address "
        "the kernel would use to reach remote", metavar="ADDRESS",
    )  # fmt: skip
    port: int = opt(22, integer(0, 65535), "port the daemon should open (the PORT field)")
    timeout: float = opt(0.2, seconds(), "seconds between knocks (also between log lines)")
    sequence: str = opt(
        "", SEQUENCE, "send this fixed knockd-style sequence instead of an encoded knock, "
        "e.g. 7000,8000:udp,9000", metavar="PORTS",
    )  # fmt: skip
    family: str = opt("any", choice("any", "4", "6"),
                      "address family for names: any, 4 (-4) or 6 (-6)")  # fmt: skip
    connect: bool = opt(
        False, BOOL, "knock with asyncio.open_connection and wait for the handshake until "
        "the next knock (for middleboxes that drop bare SYNs)",
    )  # fmt: skip
    jitter: float = opt(0.0, seconds(), "random extra delay, up to this many seconds, per knock")
    concurrency: int = opt(
        0, integer(0, 1_000_000), "hosts knocked at once; 0 = sized from open files and send rate"
    )
    verify: int = opt(
        0, integer(0, 65535), "after the knock, check that this port accepts connections; 0 = no"
    )
    verify_timeout: float = opt(3.0, seconds(0.1), "seconds to keep trying -verify")
    logtofile: bool = opt(False, BOOL, "write a faked firewall log instead of sending")
    logfile: str = opt("/tmp/portknock.log", TEXT, "log file for logtofile", metavar="PATH")
    fileformat: str = opt(
        DEFAULT_FILEFORMAT, TEXT,
        "log line template with _DATE_, _CLIENT_, _REMOTE_, _CLIENTPORT_, _REMOTEPORT_",
        metavar="TEMPLATE",
    )  # fmt: skip
    test: bool = opt(False, BOOL, "do everything but send the knock")
    quiet: bool = opt(False, BOOL, "print nothing but errors")
    debug: int = opt(0, level(9), "diagnostics; 2 (-debug -debug) also prints the settings")


Settings = ClientSettings


def _number(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError
    value = raw if isinstance(raw, int) else int(_text(raw), 0)
    if not 0 < value < 1 << 32:
        raise ValueError
    return value


MARK = Kind("mark", "a 32-bit number such as 0x4b4e4f43", _number)


@dataclass(frozen=True, slots=True)
class DoorSpec:
    """A ``<door NAME>`` block: a knockd-style fixed sequence that opens ``port``."""

    name: str
    sequence: tuple[tuple[int, str], ...]
    port: int
    proto: str
    source: str


@dataclass(frozen=True, slots=True, repr=False)
class DaemonSettings(KnockSettings):
    """Keys of ``aioknock daemon``; the knock keys above must match the clients'."""

    runmode: str = opt("file", choice("file", "network"),
                       "file: follow a firewall log; network: capture packets")  # fmt: skip
    logfile: str = opt(
        "/var/log/kern.log", TEXT,
        "firewall log to follow (runmode = file); /dev/kmsg reads the kernel log directly",
        metavar="PATH",
    )  # fmt: skip
    log_format: str = opt(
        "kernel", TEXT,
        "kernel (iptables LOG / nftables log lines), client (our fileformat), or a regular "
        "expression with named groups src and dport (proto, sport optional)", metavar="FORMAT",
    )  # fmt: skip
    log_prefix: str = opt(
        "", EXACT_TEXT,
        "log_format = kernel: the firewall rule's log prefix; only lines with it right "
        "before IN= count (with /dev/kmsg: lines that begin with it)", metavar="TEXT",
    )  # fmt: skip
    fileformat: str = opt(DEFAULT_FILEFORMAT, TEXT, "the client's template (log_format = client)",
                          metavar="TEMPLATE")  # fmt: skip
    from_start: bool = opt(False, BOOL, "read the log from its start instead of its end")
    interface: str = opt("", TEXT, "interface to capture on (runmode = network); empty = all",
                         metavar="NAME")  # fmt: skip
    encoded: bool = opt(True, BOOL, "accept encoded knocks (no = sequence doors only)")
    knock_timeout: float = opt(10.0, seconds(0.001), "seconds within which a knock must complete")
    max_sources: int = opt(10_000, integer(1, 10_000_000),
                           "knocks in progress at most; the oldest is dropped first")  # fmt: skip
    time_tolerance: float = opt(120.0, seconds(1),
                                "how far time fields may be from the daemon's clock")  # fmt: skip
    allow_nat: bool = opt(False, BOOL,
                          "open for CLIENT even when it is not the packet's source")  # fmt: skip
    replay_file: str = opt(
        "", PATH,
        "file that keeps the knocks already used across restarts (empty: memory only, so a "
        "knock used before a restart could be replayed within time_tolerance)", metavar="PATH",
    )  # fmt: skip
    backend: str = opt("nftables", choice("nftables", "command"),
                       "nftables (built-in set with timeouts) or command (open/close)")  # fmt: skip
    nft_table: str = opt("aioknock", TEXT, "the daemon's own nftables table", metavar="NAME")
    nft_mark: int = opt(0x4B4E4F43, MARK, "packet mark the daemon's chain sets for open doors")
    open: str = opt("", TEXT, "backend = command: argument list run to open, with %IP% %PORT% "
                    "%PROTO% %FLAGn% %DURATION%", metavar="COMMAND")  # fmt: skip
    close: str = opt("", TEXT, "backend = command: argument list run to close", metavar="COMMAND")
    duration: float = opt(30.0, seconds(1, 7 * DAY), "seconds a door stays open")
    cooldown: float = opt(2.0, seconds(), "seconds before the same source may trigger again")
    test: bool = opt(False, BOOL, "decode and log, run nothing")
    quiet: bool = opt(False, BOOL, "print nothing but errors")
    debug: int = opt(0, level(9), "diagnostics; 2 (-debug -debug) also prints the settings")
    doors: tuple[DoorSpec, ...] = ()

    BLOCKS: ClassVar[frozenset[str]] = frozenset({"door"})
