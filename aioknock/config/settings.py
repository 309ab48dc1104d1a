"""The settings table: one definition per key drives parsing, validation, CLI flags,
per-host overrides and the manual.

Each key is a row (``opt``, see ``table``) that holds its kind (how to read a value
into the object the program uses: a ``PortSpan``, a ``Command``...), its help text and
where else it may appear (``host``: on a hosts-file line). Values are read
once, while loading; what several keys make together (the codec, the log reader) is
built when the settings object is made, so every object the program uses has been
checked before it starts. ``ClientSettings`` adds the sender's keys to the knock keys
that client and daemon share, and ``for_host`` the config file's ``<host>`` blocks;
``DoorSettings`` is the table of a ``<door>`` block.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ..codec import sealed
from ..codec.ciphers import CryptCBC, Plain, cipher_names
from ..codec.fields import FIELD_NAMES, KnockFormat
from ..codec.logtemplate import LogTemplate
from ..codec.pipeline import Codec
from ..codec.portspan import MAX_BITS, PortSpan
from ..codec.sequence import Hit
from ..codec.spa import SpaKeys
from ..errors import ConfigError, InvalidValue, shown
from ..logs import get_logger
from .hostblocks import NAME as HOST_BLOCK
from .hostblocks import HostBlocks, read_host_blocks
from .kinds import (
    ACCESS,
    ALLOW_IP,
    AUTO,
    BASE64,
    BOOL,
    CIPHER,
    CLIENT,
    DIGEST,
    FAMILY,
    FIELDS,
    HOST,
    SECRET,
    SEQUENCE,
    SPAN,
    TEMPLATE,
    TEXT,
    choice,
    integer,
    level,
    seconds,
)
from .table import Table, opt, slot
from .values import override, placed

log = get_logger("aioknock.config")

DEFAULT_FILEFORMAT = (
    "_DATE_ localhost kernel: IN=eth0 OUT= SRC=_CLIENT_ DST=_REMOTE_ LEN=60 TOS=0x00 "
    "PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=_CLIENTPORT_ DPT=_REMOTEPORT_ WINDOW=64240 "
    "RES=0x00 SYN URGP=0"
)


def _quiet() -> Any:
    return opt(False, BOOL, "print nothing but errors")


def _debug() -> Any:
    return opt(0, level(9), "diagnostics; 2 (-debug -debug) also prints the settings")


@functools.lru_cache(maxsize=64)
def _codec(
    knock: tuple[str, ...], portbytes: int, portspan: PortSpan, encrypt: bool, cipher: str,
    key: str, iv: bool, localtime: bool,
) -> Codec:  # fmt: skip
    """Built once per combination (the key schedule included), shared by every host."""
    try:
        crypto: Cipher = CryptCBC(cipher, key.encode(), iv=iv) if encrypt else Plain()
    except InvalidValue as exc:
        raise ConfigError(str(exc), key="cipher") from None
    return Codec(KnockFormat(knock, portbytes), crypto, portspan, localtime)


class KnockSettings(Table):
    """Keys that define a knock; client and daemon must agree on all of them."""

    knock: tuple[str, ...] = opt(
        "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM", FIELDS,
        f"knock format: comma-separated fields {FIELD_NAMES}", metavar="FIELDS", host=True,
    )  # fmt: skip
    portspan: PortSpan = opt(
        "745-1000", SPAN,
        f"ports that carry the knock: a-b,c,d-e,... with 2^N ports, 1 <= N <= {MAX_BITS} "
        "(sealed: 2^15 consecutive ports, by default 32768-65535)",
        metavar="SPAN", host=True,
    )  # fmt: skip
    portbytes: int = opt(
        2, integer(1, 2), "bytes for PORT: 2 (0-65535), or 1 as in the prototype before v0.24",
        host=True,
    )  # fmt: skip
    encrypt: bool = opt(False, BOOL, "encrypt the knock (strongly suggested)", host=True)
    cipher: str = opt(
        "Blowfish", CIPHER, f"{', '.join(cipher_names())} (Crypt::CBC compatible)",
        metavar="NAME", host=True,
    )  # fmt: skip
    key: str = opt("", SECRET, "passphrase for the cipher (prefer key_file or AIOKNOCK_KEY)",
                   secret=True, metavar="PASSPHRASE", host=True)  # fmt: skip
    key_file: str = opt(
        "", TEXT, "file whose first line is the passphrase (relative: to the config file)",
        metavar="PATH",
    )  # fmt: skip
    iv: bool = opt(True, BOOL, "random IV with Crypt::CBC's RandomIV header; no = fixed zero IV",
                   host=True)  # fmt: skip
    localtime: bool = opt(False, BOOL, "time fields in local time, as the prototype; default UTC",
                          host=True)  # fmt: skip
    protocol: str = opt(
        "knockclient", choice("knockclient", "sealed", "spa"),
        "the kind of knock: knockclient (the prototype's encoded knock; a client's sequence "
        "sends knockd's), sealed (aioknock's authenticated SYN knock) or spa (a client's "
        "fwknop single-packet authorization datagram; the daemon reads SPA by access_file)",
        host=True,
    )  # fmt: skip
    server_id: str = opt(
        "", TEXT, "sealed: the name the knock is bound to: the daemon's own (required), the "
        "client's for a host (empty: the host as it is knocked)", metavar="NAME", host=True,
    )  # fmt: skip
    tag_bits: int = opt(
        sealed.DEFAULT_TAG_BITS, integer(64, 128), "sealed: bits of the knock's tag, a "
        "multiple of 8 (each 8 more cost 8/11 of a SYN)", host=True,
    )  # fmt: skip
    spa_server_port: int = opt(62201, integer(1, 65535), "UDP port of single-packet "
                               "authorization (fwknop's SPA_SERVER_PORT)", host=True)  # fmt: skip
    flags: Mapping[int, int] = slot(factory=dict)
    origins: Mapping[str, str] = slot(factory=dict, compare=False)
    codec: Codec = slot(init=False, compare=False)

    FLAGS: ClassVar[bool] = True

    @classmethod
    def of(cls, **values: Any) -> Self:
        """Settings from keyword values, each read by its kind as a config file's are:
        ``ClientSettings.of(portspan="1024-2047", port=2222)``."""
        return override(cls(), values, f"{cls.__name__}.of() argument")

    def __post_init__(self) -> None:
        self.read_text()
        if self.protocol == "sealed":
            self._sealed_defaults()
        if self.encrypt and not self.key:
            raise ConfigError("encryption needs a passphrase: set key, key_file or AIOKNOCK_KEY",
                              key="encrypt")  # fmt: skip
        codec = _codec(self.knock, self.portbytes, self.portspan, self.encrypt, self.cipher,
                       self.key, self.iv, self.localtime)  # fmt: skip
        object.__setattr__(self, "codec", codec)

    def _sealed_defaults(self) -> None:
        """What a sealed knock changes: its own span (2^15 ports) unless one is given, and
        a key is needed (the prototype's knock keys are not used)."""
        if self._default("portspan"):
            object.__setattr__(self, "portspan", sealed_span())
        try:
            sealed.span_start_of(self.portspan)
        except InvalidValue as exc:
            raise ConfigError(str(exc), key="portspan") from None
        if self.tag_bits % 8:
            raise ConfigError(f"expected a multiple of 8 from 64 to 128, got {self.tag_bits}",
                              key="tag_bits")  # fmt: skip
        if self.server_id:
            try:
                sealed.canonical_host(self.server_id)
            except InvalidValue as exc:
                raise ConfigError(str(exc), key="server_id") from None
        if not self.key:
            raise ConfigError("protocol = sealed needs a key: key_file (aioknock keygen -o "
                              "FILE) or key", key="key_file")  # fmt: skip

    def _default(self, name: str) -> bool:
        """Whether ``name`` holds its default, not given anywhere (a sealed knock has its
        own defaults for a few keys)."""
        row = self.row(name)
        return (
            self.origin(name) == "default"
            and row is not None
            and getattr(self, name) == row.default
        )

    def sealed_codec(self, server_id: str, key: bytes | None = None) -> sealed.SealedCodec:
        """The sealed knock's codec for ``server_id`` (one per server and key, cached)."""
        try:
            return _sealed_codec(self.key if key is None else key, server_id, self.tag_bits,
                                 self.portspan.ports[0])  # fmt: skip
        except InvalidValue as exc:
            raise ConfigError(str(exc), key="server_id") from None


SEALED_TIMEOUT = 0.02


@functools.cache
def sealed_span() -> PortSpan:
    """A sealed knock's default span, 32768-65535 (made at first use: 2^15 ports)."""
    start = sealed.DEFAULT_SPAN_START
    return PortSpan.parse(f"{start}-{start + sealed.SPAN_SIZE - 1}")


@functools.lru_cache(maxsize=1024)
def _sealed_codec(
    key: str | bytes, server_id: str, tag_bits: int, start: int
) -> sealed.SealedCodec:
    """The key (``aioknock keygen``'s base64 line, else a passphrase: scrypt, once) and
    the codec, built once per server: a fleet's hosts each have theirs."""
    raw = key if isinstance(key, bytes) else _sealed_key(key)
    return sealed.SealedCodec(raw, server_id, tag_bits, start)


@functools.lru_cache(maxsize=16)
def _sealed_key(text: str) -> bytes:
    try:
        return sealed.key_from_text(text)
    except InvalidValue:
        return sealed.passphrase_key(text)


class ClientSettings(KnockSettings):
    """Keys of ``aioknock run``, the prototype's knockclient options first."""

    remote: str = opt("127.0.0.1", HOST, "host to knock: name or address", metavar="HOST")
    client: str = opt(
        AUTO, CLIENT, "IPv4 address put in CLIENT; empty or auto = the local address "
        "the kernel would use to reach remote", metavar="ADDRESS", host=True,
    )  # fmt: skip
    port: int = opt(22, integer(0, 65535), "port the daemon should open (the PORT field)",
                    host=True)  # fmt: skip
    timeout: float = opt(0.2, seconds(), "seconds between knocks (also between log lines; "
                         "sealed: 0.02 by default)", host=True)  # fmt: skip
    sequence: tuple[Hit, ...] = opt(
        "", SEQUENCE, "send this fixed knockd-style sequence instead of an encoded knock, "
        "e.g. 7000,8000:udp,9000", metavar="PORTS", host=True,
    )  # fmt: skip
    family: int = opt("any", FAMILY, "address family for names: any, 4 (-4) or 6 (-6)")
    access: tuple[tuple[str, int], ...] = opt(
        "", ACCESS, "spa, sealed: ports to open, e.g. tcp/22,udp/53 (empty: tcp/PORT; "
        "sealed: one protocol)",
        metavar="PORTS", host=True,
    )  # fmt: skip
    allow_ip: str = opt(
        AUTO, ALLOW_IP, "spa: address to open for: auto (the local address the kernel "
        "uses to reach the host), source (the packet's source, fwknop -s) or an address "
        "(IPv6 needs aioknock's daemon)", metavar="ADDRESS", host=True,
    )  # fmt: skip
    key_base64: bytes = opt("", BASE64, "spa: the encryption key in base64 (instead of key)",
                            secret=True, metavar="B64", host=True)  # fmt: skip
    hmac_key: str = opt("", SECRET, "spa: the HMAC key as a passphrase", secret=True,
                        metavar="PASSPHRASE", host=True)  # fmt: skip
    hmac_key_base64: bytes = opt("", BASE64, "spa: the HMAC key in base64 (instead of hmac_key)",
                                 secret=True, metavar="B64", host=True)  # fmt: skip
    hmac_digest_type: str = opt("sha256", DIGEST, "spa: the HMAC's hash", metavar="HASH",
                                host=True)  # fmt: skip
    digest_type: str = opt("sha256", DIGEST, "spa: the hash inside the packet", metavar="HASH")
    spa_server_proto: str = opt("udp", choice("udp"), "spa: how the packet travels (udp)")
    master: bool = opt(
        False, BOOL, "sealed: the key is a master key; each host is knocked with the key "
        "derived from it for its server_id (aioknock keygen --derive HOST)", host=True,
    )  # fmt: skip
    client_timeout: int = opt(0, integer(0, 65535), "spa: seconds the server should keep "
                              "the door open (0: the server's FW_ACCESS_TIMEOUT)",
                              host=True)  # fmt: skip
    spoof_user: str = opt("", TEXT, "spa: the user name the packet carries (empty: this "
                          "process's user)", metavar="NAME")  # fmt: skip
    connect: bool = opt(
        False, BOOL, "knock with asyncio.open_connection and wait for the handshake until "
        "the next knock (for middleboxes that drop bare SYNs)",
    )  # fmt: skip
    jitter: float = opt(0.0, seconds(), "random extra delay, up to this many seconds, per knock",
                        host=True)  # fmt: skip
    concurrency: int = opt(
        0, integer(0, 1_000_000), "hosts knocked at once; 0 = sized from open files and send rate"
    )
    verify: int = opt(
        0, integer(0, 65535), "after the knock, check that this port accepts connections; 0 = no"
    )
    verify_timeout: float = opt(3.0, seconds(0.1), "seconds to keep trying -verify")
    logtofile: bool = opt(False, BOOL, "write a faked firewall log instead of sending")
    logfile: str = opt("/tmp/portknock.log", TEXT, "log file for logtofile", metavar="PATH")
    fileformat: LogTemplate = opt(
        DEFAULT_FILEFORMAT, TEMPLATE,
        "log line template with _DATE_, _CLIENT_, _REMOTE_, _CLIENTPORT_, _REMOTEPORT_",
        metavar="TEMPLATE",
    )  # fmt: skip
    test: bool = opt(False, BOOL, "do everything but send the knock")
    quiet: bool = _quiet()
    debug: int = _debug()
    host_blocks: HostBlocks | None = slot(None)  # the config file's <host PATTERN> blocks
    spa_keys: SpaKeys | None = slot(init=False, compare=False)
    # for_host's settings per combination of matching blocks (or why they are wrong)
    host_cache: dict[tuple[int, ...], ClientSettings | ConfigError] = slot(
        init=False, compare=False
    )

    BLOCKS: ClassVar[frozenset[str]] = frozenset({HOST_BLOCK})

    def __post_init__(self) -> None:
        KnockSettings.__post_init__(self)
        if self.protocol == "sealed":
            self._sealed_client()
        object.__setattr__(self, "spa_keys", self._spa_keys() if self.protocol == "spa" else None)
        object.__setattr__(self, "host_cache", {})

    @classmethod
    def read_blocks(cls, blocks: list[Entry], loose: dict[str, str]) -> dict[str, Any]:
        return {"host_blocks": HostBlocks(read_host_blocks(cls, blocks), loose)}

    def for_host(self, host: str) -> ClientSettings:
        """These settings as they apply to ``host``, the name or address as written (an
        argument, a hosts-file line, ``connect %h``; not its resolved address): each key
        from the first matching ``<host>`` block that sets it, where the config file's top
        level or the default gave it (the command line, the environment, an argument win);
        checked whole. One object per combination of blocks, shared by the hosts it fits;
        a ConfigError names the value at fault and the host."""
        if self.host_blocks is None or not (combo := self.host_blocks.matching(host)):
            return self
        made = self.host_cache.get(combo)
        if made is None:
            made = self.host_cache[combo] = self._with_blocks(combo)
            log.debug("%s: settings of the host blocks at %s", host,
                      ", ".join(self.host_blocks.blocks[i].where for i in combo))  # fmt: skip
        if isinstance(made, ConfigError):
            raise ConfigError(f"{made.message} (for {shown(host, 100)})", source=made.source,
                              line=made.line, key=made.key)  # fmt: skip
        return made

    def _with_blocks(self, combo: tuple[int, ...]) -> ClientSettings | ConfigError:
        assert self.host_blocks is not None
        try:
            own = self.host_blocks.apply(self, combo)
        except ConfigError as exc:
            return exc
        try:
            own.check_sendable()
        except ConfigError as exc:
            return placed(exc, own.origins, self.host_blocks.blocks[combo[0]].where)
        return own

    def _sealed_client(self) -> None:
        """A sealed knock's pace: one host in well under a second (16 SYNs, 20 ms apart)
        unless a timeout is given; a master key must be a key, not a passphrase."""
        if self._default("timeout"):
            object.__setattr__(self, "timeout", SEALED_TIMEOUT)
        if self.master:
            try:
                sealed.key_from_text(self.key)
            except InvalidValue:
                raise ConfigError(
                    "master = yes needs a key made by aioknock keygen (one line of base64), "
                    "not a passphrase", key="key",
                ) from None  # fmt: skip

    def sealed_for(self, host: str) -> sealed.SealedCodec:
        """The sealed codec that knocks ``host``: bound to its server_id (``server_id``,
        or the host as knocked), with its derived key when ``master``."""
        server_id = self.server_id or host
        if not self.master:
            return self.sealed_codec(server_id)
        try:
            key = sealed.host_key(sealed.key_from_text(self.key), server_id)
        except InvalidValue as exc:
            raise ConfigError(str(exc), key="server_id") from None
        return self.sealed_codec(server_id, key)

    def _spa_keys(self) -> SpaKeys:
        key = self.key_base64 or self.key.encode()
        hmac_key = self.hmac_key_base64 or self.hmac_key.encode()
        if not key:
            raise ConfigError("protocol = spa needs a key: key_base64, key or key_file",
                              key="key_base64")  # fmt: skip
        if not hmac_key:
            raise ConfigError("protocol = spa needs an HMAC key: hmac_key_base64 or hmac_key",
                              key="hmac_key_base64")  # fmt: skip
        try:
            return SpaKeys(key, hmac_key, self.hmac_digest_type)
        except InvalidValue as exc:
            which = "key_base64" if "HMAC" not in str(exc) else "hmac_key_base64"
            raise ConfigError(str(exc), key=which) from None

    def _check_sealed(self) -> None:
        for key, what in (("sequence", "a knockd sequence"), ("logtofile", "log lines")):
            if getattr(self, key):
                raise ConfigError(f"protocol = sealed sends its own knock, not {what}; unset "
                                  f"{key}", key=key)  # fmt: skip
        if len({proto for proto, _ in self.spa_access}) != 1:
            raise ConfigError("a sealed knock opens ports of one protocol: one knock per "
                              "protocol", key="access")  # fmt: skip

    def _check_spa(self) -> None:
        for key, what in (("sequence", "a knockd sequence"), ("logtofile", "log lines")):
            if getattr(self, key):
                raise ConfigError(f"protocol = spa sends one datagram, not {what}; unset {key}",
                                  key=key)  # fmt: skip

    @property
    def spa_access(self) -> tuple[tuple[str, int], ...]:
        """What an SPA packet asks for: ``access``, or the knock's ``port``."""
        return self.access or (("tcp", self.port),)

    def check_sendable(self) -> None:
        """What building a knock needs beyond each value's own check: the FLAGm the
        format uses, a PORT that fits ``portbytes``, a host to knock."""
        if not self.remote:
            raise ConfigError("no host to knock; set remote", key="remote")
        if self.protocol == "spa":
            self._check_spa()
            return
        if self.protocol == "sealed":
            self._check_sealed()
            return
        if ":" in self.client and self.codec.needs_client and not self.sequence:
            raise ConfigError(f"expected an IPv4 address for the knock's CLIENT, got "
                              f"{self.client!r} (an IPv6 client needs protocol = sealed)",
                              key="client")  # fmt: skip
        missing = [n for n in self.codec.format.flag_numbers() if n not in self.flags]
        if missing:
            raise ConfigError(f"the knock uses FLAG{missing[0]} but flag{missing[0]} is not set",
                              key="knock")  # fmt: skip
        if self.port >= 1 << (8 * self.portbytes):
            high = (1 << (8 * self.portbytes)) - 1
            why = f"portbytes = {self.portbytes} ({self.origin('portbytes')})"
            raise ConfigError(
                f"expected a whole number 0-{high} with {why}, got {self.port}", key="port"
            )


Settings = ClientSettings


def table_of(program: str) -> type[Table]:
    """The settings table of ``knockclient``, ``knockdaemon`` or a ``door`` block; the
    daemon's are loaded at first use, so that a client never loads the daemon's modules
    (the log reader, door commands, nftables, fwknopd)."""
    if program == "knockclient":
        return ClientSettings
    from . import daemonsettings

    return {"knockdaemon": daemonsettings.DaemonSettings, "door": daemonsettings.DoorSettings}[
        program
    ]


def __getattr__(name: str) -> Any:
    """``DaemonSettings`` and ``DoorSettings``, importable from here as before."""
    if name in ("DaemonSettings", "DoorSettings"):
        return table_of("knockdaemon" if name == "DaemonSettings" else "door")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any, ClassVar, Self

    from ..codec.ciphers import Cipher
    from .daemonsettings import DaemonSettings as DaemonSettings
    from .daemonsettings import DoorSettings as DoorSettings
    from .entries import Entry
