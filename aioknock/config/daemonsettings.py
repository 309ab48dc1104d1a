"""The daemon's settings table: ``aioknock daemon``'s keys and its ``<door>`` blocks.

Apart from the client's (``settings.py``) so that a client never loads the daemon's
modules: the log reader, door commands, nftables, fwknopd's access file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..codec.logtemplate import LogTemplate
from ..codec.sequence import Hit, Proto
from ..daemon import nftables
from ..daemon.doors import Command
from ..daemon.fwknopd import Stanza
from ..daemon.logreader import KMSG, LineReader, LogFormat
from ..errors import ConfigError, InvalidValue, shown
from .entries import Block, Entry
from .fwknopconf import read_access_file
from .kinds import (
    BOOL,
    DAY,
    EXACT_TEXT,
    PATH,
    PROTO,
    SEQUENCE,
    TEMPLATE,
    TEXT,
    Kind,
    choice,
    integer,
    mark_number,
    plain_text,
    seconds,
)
from .settings import DEFAULT_FILEFORMAT, KnockSettings, _debug, _quiet
from .table import Table, opt, slot
from .values import Given, canonical, make, place, read_values


def _command(raw: object) -> Command | None:
    words = plain_text(raw)
    return Command.parse(words) if words else None


# The daemon's own kinds: their parsers are the daemon's.
MARK = Kind("mark", "a 32-bit number such as 0x4b4e4f43",
            lambda raw: nftables.check_mark(mark_number(raw)), "{:#x}".format)  # fmt: skip
COMMAND = Kind("command", "an argument list", _command, lambda c: "" if c is None else str(c))
LOG_FORMAT = Kind("format", "kernel, client or a pattern",
                  lambda raw: LogFormat.parse(plain_text(raw)))  # fmt: skip
NFT_NAME = Kind("name", "an nftables name", lambda raw: nftables.check_table(plain_text(raw)))


class DoorSettings(Table):
    """A ``<door NAME>`` block: a knockd-style fixed sequence that opens ``port``."""

    name: str = slot("")
    sequence: tuple[Hit, ...] = opt("", SEQUENCE, "the hits that open the door, in order, "
                                    "e.g. 7000,8000:udp,9000 (2 or more)")  # fmt: skip
    port: int = opt(0, integer(1, 65535), "the port to open", required=True)
    proto: Proto = opt("tcp", PROTO, "the protocol of the port to open: tcp or udp")
    flags: Mapping[int, int] = slot(factory=dict)
    origins: Mapping[str, str] = slot(factory=dict, compare=False)
    source: str = slot("", compare=False)  # the file that defined it

    BLOCK: ClassVar[str] = "door"

    def __post_init__(self) -> None:
        self.read_text()
        if len(self.sequence) < 2:
            raise ConfigError(f"door {self.name!r} needs a sequence of 2 or more ports")
        if len(set(self.sequence)) != len(self.sequence):
            raise ConfigError("a port appears twice", key="sequence")
        if not self.port:
            raise ConfigError(f"door {self.name!r} needs the port to open: port = 22")


class DaemonSettings(KnockSettings):
    """Keys of ``aioknock daemon``; the knock keys above must match the clients'."""

    runmode: str = opt("file", choice("file", "network"),
                       "file: follow a firewall log; network: capture packets")  # fmt: skip
    logfile: str = opt(
        "/var/log/kern.log", TEXT,
        f"firewall log to follow (runmode = file); {KMSG} reads the kernel log directly",
        metavar="PATH",
    )  # fmt: skip
    log_format: LogFormat = opt(
        "kernel", LOG_FORMAT,
        "kernel (iptables LOG / nftables log lines), client (our fileformat), or a regular "
        "expression with named groups src and dport (proto, sport optional)", metavar="FORMAT",
    )  # fmt: skip
    log_prefix: str = opt(
        "", EXACT_TEXT,
        "log_format = kernel: the firewall rule's log prefix; only lines with it right "
        f"before IN= count (with {KMSG}: lines that begin with it)", metavar="TEXT",
    )  # fmt: skip
    fileformat: LogTemplate = opt(DEFAULT_FILEFORMAT, TEMPLATE,
                                  "the client's template (log_format = client)",
                                  metavar="TEMPLATE")  # fmt: skip
    from_start: bool = opt(False, BOOL, "read the log from its start instead of its end")
    interface: str = opt("", TEXT, "interface to capture on (runmode = network); empty = all",
                         metavar="NAME")  # fmt: skip
    encoded: bool = opt(True, BOOL, "accept encoded knocks (no = sequence doors only)")
    knock_timeout: float = opt(10.0, seconds(0.001), "seconds within which a knock must complete")
    max_sources: int = opt(10_000, integer(1, 10_000_000), "knocks in progress at most, per "
                           "kind of knock; the oldest is dropped first")  # fmt: skip
    time_tolerance: float = opt(120.0, seconds(1),
                                "how far time fields may be from the daemon's clock")  # fmt: skip
    allow_nat: bool = opt(False, BOOL,
                          "open for CLIENT even when it is not the packet's source")  # fmt: skip
    replay_file: str = opt(
        "", PATH,
        "file that keeps the knocks already used across restarts (empty: memory only, so a "
        "knock used before a restart could be replayed within time_tolerance)", metavar="PATH",
    )  # fmt: skip
    replay_failure: str = opt(
        "refuse", choice("refuse", "accept"),
        "a knock whose use cannot be written to replay_file (disk full, read-only): refuse "
        "it (fail closed), or accept it anyway (weaker: after a restart it could be "
        "replayed)",
    )  # fmt: skip
    backend: str = opt("nftables", choice("nftables", "command"),
                       "nftables (built-in set with timeouts) or command (open/close)")  # fmt: skip
    nft_table: str = opt("aioknock", NFT_NAME, "the daemon's own nftables table", metavar="NAME")
    nft_mark: int = opt(nftables.DEFAULT_MARK, MARK,
                        "packet mark the daemon's chain sets for open doors")  # fmt: skip
    open: Command | None = opt("", COMMAND, "backend = command: argument list run to open, "
                               "with %IP% %PORT% %PROTO% %FLAGn% %DURATION%",
                               metavar="COMMAND")  # fmt: skip
    close: Command | None = opt("", COMMAND, "backend = command: argument list run to close",
                                metavar="COMMAND")  # fmt: skip
    duration: float = opt(30.0, seconds(1, 7 * DAY), "seconds a door stays open")
    cooldown: float = opt(2.0, seconds(), "seconds before the same source may trigger again")
    access_file: str = opt(
        "", PATH, "fwknopd's access.conf: accept fwknop single-packet authorization (SPA) "
        "on spa_server_port with its stanzas' keys and ports (empty: no SPA)",
        metavar="PATH",
    )  # fmt: skip
    spa_listen: str = opt(
        "", TEXT, "also receive SPA on a UDP socket bound to this address (fwknopd -U; "
        "works without capture privileges, and in runmode = file); empty: capture only",
        metavar="ADDRESS",
    )  # fmt: skip
    max_spa_packet_age: float = opt(120.0, seconds(1, 3600), "seconds an SPA packet's "
                                    "timestamp may be from the daemon's clock")  # fmt: skip
    test: bool = opt(False, BOOL, "decode and log, run nothing")
    quiet: bool = _quiet()
    debug: int = _debug()
    doors: tuple[DoorSettings, ...] = slot(())
    reader: LineReader | None = slot(init=False, compare=False)
    stanzas: tuple[Stanza, ...] = slot(init=False, compare=False)

    BLOCKS: ClassVar[frozenset[str]] = frozenset({"door"})

    def __post_init__(self) -> None:
        KnockSettings.__post_init__(self)
        if self.backend == "command" and self.open is None:
            raise ConfigError("backend = command needs an open command", key="open")
        if not self.encoded and not self.doors and not self.access_file:
            raise ConfigError("nothing to listen for: encoded = no, no <door> blocks and no "
                              "access_file", key="encoded")  # fmt: skip
        if self.protocol == "spa":
            raise ConfigError(
                "the daemon reads SPA through access_file; protocol is the kind of encoded "
                "knock: knockclient or sealed", key="protocol",
            )  # fmt: skip
        if self.protocol == "sealed" and self.encoded and not self.server_id:
            raise ConfigError("protocol = sealed needs server_id: the name clients knock this "
                              "host by (its key is bound to it)", key="server_id")  # fmt: skip
        if self.protocol == "knockclient" and self.encoded and "PORT" not in self.knock:
            # The knock names the port to open; without it no knock could open anything.
            raise ConfigError("the daemon's knock needs a PORT field (or encoded = no)",
                              key="knock")  # fmt: skip
        object.__setattr__(self, "reader", self._reader())
        object.__setattr__(self, "stanzas", self._stanzas())

    @classmethod
    def read_blocks(cls, blocks: list[Entry], loose: dict[str, str]) -> dict[str, Any]:
        return {"doors": parse_doors(blocks)}

    def _stanzas(self) -> tuple[Stanza, ...]:
        if not self.access_file:
            return ()
        if self.runmode == "file" and not self.spa_listen:
            raise ConfigError("SPA needs runmode = network or spa_listen: a firewall log "
                              "does not hold the datagram", key="access_file")  # fmt: skip
        if self.spa_listen:
            _check_listen(self.spa_listen)
        return read_access_file(Path(self.access_file))  # read once, here

    def _reader(self) -> LineReader | None:
        if self.runmode != "file":
            return None
        try:
            return LineReader.build(self.log_format, self.fileformat, prefix=self.log_prefix,
                                    anchored=self.logfile == KMSG)  # fmt: skip
        except InvalidValue as exc:
            raise ConfigError(str(exc), key="fileformat") from None


def _check_listen(address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"expected an IP address to bind, got {address!r}",
                          key="spa_listen") from None  # fmt: skip


def parse_doors(blocks: list[Entry]) -> tuple[DoorSettings, ...]:
    """``<door NAME>`` blocks, each read through the door table."""
    doors: list[DoorSettings] = []
    for block_entry in blocks:
        block = block_entry.value
        assert isinstance(block, Block)
        where = f"{block_entry.source}:{block_entry.line}"
        if not block.label:
            raise ConfigError("a door needs a name: <door ssh>", **place(where))
        if any(d.name == block.label for d in doors):
            raise ConfigError(f"door {block.label!r} is defined twice", **place(where))
        given: list[Given] = []
        for entry in block.entries:
            if isinstance(entry.value, Block):
                raise ConfigError(f"unexpected block <{shown(entry.key)}> inside a door",
                                  **place(where))  # fmt: skip
            given.append(Given(canonical(entry.key), entry.value, f"{entry.source}:{entry.line}"))
        read = read_values(DoorSettings, given)
        doors.append(make(DoorSettings, read, where, name=block.label, source=block_entry.source))
    return tuple(doors)
