"""Sealed knocks (format v1): SYN knocks that are encrypted, authenticated and bound to
one server, so that none can be altered, replayed, or moved to another host (issue 10).

**Keys.** A key is 32 bytes: a key file's line (base64, what ``aioknock keygen``
writes) or a passphrase stretched by scrypt (N = 2^15, r = 8, p = 1, salt
``aioknock sealed v1``). From it HKDF-SHA256 (empty salt) derives, once per codec, an
encryption key (context ``aioknock sealed v1 encrypt``) and a MAC key (``... mac``). A
fleet derives each host's key from a master key: HKDF-SHA256 with context
``aioknock host key v1\\0`` + the canonical host name (``host_key``), and that name is
the host's ``server_id``; a server keeps only its own key, which opens nothing else.

**Wire bytes** = nonce (7 bytes) || ciphertext || tag, encrypt-then-MAC. The nonce's
first 2 bits are the address kind (below), in the clear; its other 54 bits are random.
The ciphertext is ChaCha20 of the plaintext (8-byte nonce: the 7 bytes and a zero
byte); the tag is the first ``tag_bits``/8 bytes of HMAC-SHA256 over ``aioknock sealed
v1\\0``, len(server_id) (1 byte), server_id, for a knock of kind 0 the address it is
sent from (16 bytes, IPv4 as IPv4-mapped IPv6), nonce and ciphertext. So a knock made
for another ``server_id`` does not verify, and a knock that opens for "the packet's
source" verifies only from the source it was made for: taken from the path (its last
SYN held back) and sent from another address, it is no knock. A knock that names its
address (kinds 1, 2) opens for that address only, from its source or with ``allow_nat``.
The tag is checked first, in constant time; only a knock that verifies is decrypted and
parsed (and its plaintext's kind must be the clear one).

**Plaintext.** Byte 0: version (3 high bits, = 1), address kind (2 bits: 0 the
packet's source, 1 IPv4, 2 IPv6), protocol (1 bit: 0 tcp, 1 udp), extension (1 bit),
reserved (1 bit, 0). Then the timestamp (4 bytes big-endian, unix seconds) and the port
(2 bytes). With the extension: one byte (extra ports << 4 | flags), the extra ports (2
bytes each, same protocol), the flags as (n, value) byte pairs in ascending n (the
prototype's FLAGn). Last, the address (0, 4 or 16 bytes). Reading is strict: version,
reserved bit, kind, lengths, order, duplicates and trailing bytes are all checked, and
every defect is a ``KnockError``: a knock has one spelling.

**Ports.** The span is 2^15 consecutive ports (default 32768-65535). The wire bytes,
read as one big-endian bit string, are cut into 11-bit chunks (the last padded with
zero bits, which must be zero when read); SYN i goes to span offset (i mod 16) << 11 |
chunk i. The 4-bit label is what lets the daemon find a knock among stray SYNs
(daemon/sealedknocks.py); a knock longer than 16 SYNs reuses labels, positions p and
p + 16 being told apart by arrival order. The default knock (the packet's source, one
port, no flags, 64-bit tag) is 7 + 7 + 8 = 22 bytes = 176 bits: exactly 16 SYNs.

SYNs per knock (``syn_count``; extras: extra ports and flags together)::

    address         extras  tag 64  tag 96  tag 128
    source          0       16      19      22
    source          1       19      22      24
    source          2       20      23      26
    IPv4            0       19      22      25
    IPv4            1       22      24      27
    IPv4            2       23      26      29
    IPv6            0       28      31      34
    IPv6            1       30      33      36
    IPv6            2       32      35      38

**Why a 64-bit tag by default.** Nothing can be learned offline: a forgery must be
sent, and each try is a whole knock (16 SYNs or more, each one a packet the attacker
must send within ``knock_timeout``) that the daemon checks with at most a few tag
checks per arriving SYN. Succeeding takes ~2^63 tries, ~1.5 * 10^20 SYNs: centuries
at a million SYNs a second. Every 8 more bits cost 8 / 11 of a SYN.

pycryptodome is imported at first use, and so are ``hmac`` and ``secrets`` (as in
spa.py): settings that only name this module's limits load no cryptography.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
from collections.abc import Iterable, Sequence

from ..errors import InvalidValue, KnockError
from ..records import Record
from .portspan import PortSpan
from .sequence import Hit, Proto

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Literal, TypeAlias


VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 7
TAG_BITS = tuple(range(64, 129, 8))
DEFAULT_TAG_BITS = 64
SPAN_BITS, LABEL_BITS, DATA_BITS = 15, 4, 11
SPAN_SIZE, LABELS = 1 << SPAN_BITS, 1 << LABEL_BITS
DEFAULT_SPAN_START = 32768
MAX_EXTRA_PORTS = MAX_FLAGS = 15  # 4 bits each in the extension's count byte
#: Extra ports and flags together that ``lengths`` looks for by default (see there).
DEFAULT_EXTRAS = 2
MAX_SERVER_ID = 255  # bytes: its length is one byte of the tag's input

KDF_SALT = b"aioknock sealed v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
ENCRYPT_CONTEXT = b"aioknock sealed v1 encrypt"
MAC_CONTEXT = b"aioknock sealed v1 mac"
HOST_CONTEXT = b"aioknock host key v1\0"
TAG_PREFIX = b"aioknock sealed v1\0"

AddressKind: TypeAlias = "Literal['source', 'ipv4', 'ipv6']"
KINDS: tuple[AddressKind, ...] = ("source", "ipv4", "ipv6")  # by their code, 0-2
ADDRESS_BYTES = (0, 4, 16)
_BASE = 7  # byte 0, timestamp, port
# Every plaintext size a knock can have: without the extension 7, 11 or 23 bytes; with
# it (1-30 extra ports and flags, 2 bytes each) even sizes from 10 to 84.
PLAINTEXT_SIZES = frozenset(
    {_BASE + a for a in ADDRESS_BYTES}
    | {_BASE + 1 + 2 * m + a for m in range(1, MAX_EXTRA_PORTS + MAX_FLAGS + 1)
       for a in ADDRESS_BYTES}
)  # fmt: skip
MAX_PLAINTEXT = max(PLAINTEXT_SIZES)


class TagMismatch(KnockError):
    """The tag does not verify: not a knock made with this key for this server (or
    altered). Any other ``KnockError`` from ``open`` comes from a knock that verified."""


# ------------------------------------------------------------------------- keys


def key_from_text(line: str) -> bytes:
    """A key file's line: strict base64 of exactly 32 bytes."""
    text = line.strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue("expected one line of base64 (a key from aioknock keygen)") from None
    if len(key) != KEY_BYTES:
        raise InvalidValue(f"expected base64 of {KEY_BYTES} bytes (a key from aioknock "
                           f"keygen), got {len(key)} bytes")  # fmt: skip
    return key


def passphrase_key(passphrase: str | bytes) -> bytes:
    """A 32-byte key from a passphrase: scrypt, N = 2^15 (32 MiB, ~0.1 s: once a run)."""
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    if not data:
        raise InvalidValue("an empty passphrase")
    from Crypto.Protocol.KDF import scrypt

    key = scrypt(data, KDF_SALT, KEY_BYTES, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    assert isinstance(key, bytes)
    return key


def _hkdf(key: bytes, context: bytes) -> bytes:
    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    out = HKDF(key, KEY_BYTES, b"", SHA256, context=context)
    assert isinstance(out, bytes)
    return out


def canonical_host(host: str) -> str:
    """The form of a host name that keys and ``server_id`` are made from: lower case,
    without a trailing dot; printable ASCII without blanks, 1-255 bytes. No IDNA: an
    internationalized name is given as its ``xn--`` form, the same on every machine."""
    name = host.lower()
    name = name.removesuffix(".")
    if not name:
        raise InvalidValue("an empty host name")
    if not all("!" <= c <= "~" for c in name):
        raise InvalidValue(f"host name {host!r}: only printable ASCII without blanks "
                           "(give an internationalized name as its xn-- form)")  # fmt: skip
    if len(name) > MAX_SERVER_ID:
        raise InvalidValue(f"host name of {len(name)} characters; at most {MAX_SERVER_ID}")
    return name


def host_key(master: bytes, host: str) -> bytes:
    """The key of one host of a fleet, derived from the fleet's master key (HKDF): a
    host that holds it can derive neither the master nor another host's key."""
    if len(master) != KEY_BYTES:
        raise InvalidValue(f"a master key is {KEY_BYTES} bytes, got {len(master)}")
    return _hkdf(master, HOST_CONTEXT + canonical_host(host).encode("ascii"))


# ------------------------------------------------------------------------- sizes


def span_start_of(span: PortSpan) -> int:
    """The first port of ``span`` if it is what sealed knocks need: 2^15 consecutive
    ascending ports (the labels are offsets in it)."""
    first = span.ports[0]
    if span.size != SPAN_SIZE or span.ports != tuple(range(first, first + SPAN_SIZE)):
        raise InvalidValue(f"sealed knocks need a span of exactly {SPAN_SIZE} consecutive "
                           f"ports, such as 32768-65535 (got {span.size} ports)")  # fmt: skip
    return first


def plaintext_size(kind: AddressKind = "source", extras: int = 0) -> int:
    """Bytes of a plaintext with this address and ``extras`` extra ports and flags."""
    if not 0 <= extras <= MAX_EXTRA_PORTS + MAX_FLAGS:
        raise InvalidValue(f"extras must be 0-{MAX_EXTRA_PORTS + MAX_FLAGS}, got {extras}")
    address = ADDRESS_BYTES[KINDS.index(kind)]
    return _BASE + address + (1 + 2 * extras if extras else 0)


def syns_for_bytes(size: int) -> int:
    """SYNs that carry ``size`` wire bytes (11 bits each)."""
    return -(-8 * size // DATA_BITS)


def syn_count(
    kind: AddressKind = "source", extras: int = 0, tag_bits: int = DEFAULT_TAG_BITS
) -> int:
    """SYNs a sealed knock takes (the manual's table): nonce, plaintext and tag."""
    return syns_for_bytes(NONCE_BYTES + plaintext_size(kind, extras) + _tag_bytes(tag_bits))


def _tag_bytes(tag_bits: int) -> int:
    if tag_bits not in TAG_BITS:
        raise InvalidValue(f"tag_bits must be a multiple of 8 from 64 to 128, got {tag_bits}")
    return tag_bits // 8


MAX_SYNS = syns_for_bytes(NONCE_BYTES + MAX_PLAINTEXT + max(TAG_BITS) // 8)


# ------------------------------------------------------------------------- messages


def _port(port: int, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise KnockError(f"{what} {port!r} is not 1-65535")
    return port


def _address(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise KnockError(f"{text[:60]!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            raise KnockError(f"{text[:60]!r}: a scoped address means nothing to the server")
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped  # one spelling: the IPv4 address
    if ip.is_unspecified:
        raise KnockError(f"{text[:60]!r}: for the packet's source, give no address")
    return str(ip)


class SealedMessage(Record):
    """What a sealed knock says. ``address`` None: open for the packet's source.
    Built in one spelling: the address canonical (IPv4-mapped as IPv4), flags by n."""

    __slots__ = ("address", "extra_ports", "flags", "port", "proto", "timestamp")

    def __init__(
        self, timestamp: int, port: int, proto: Proto = "tcp", address: str | None = None,
        extra_ports: tuple[int, ...] = (), flags: tuple[tuple[int, int], ...] = (),
    ) -> None:  # fmt: skip
        stamp = timestamp
        if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 <= stamp < 1 << 32:
            raise KnockError(f"timestamp {timestamp!r} is not 0 to 2^32 - 1")
        _port(port, "port")
        if proto not in ("tcp", "udp"):
            raise KnockError(f"protocol {proto!r}: tcp or udp")
        extra = tuple(_port(p, "extra port") for p in extra_ports)
        if len(extra) > MAX_EXTRA_PORTS:
            raise KnockError(f"{len(extra)} extra ports; at most {MAX_EXTRA_PORTS}")
        if len({port, *extra}) != 1 + len(extra):
            raise KnockError("a port appears twice")
        try:
            pairs = tuple(sorted((int(n), int(v)) for n, v in flags))
        except (TypeError, ValueError):
            raise KnockError("flags are (n, value) pairs of integers") from None
        if len(pairs) > MAX_FLAGS:
            raise KnockError(f"{len(pairs)} flags; at most {MAX_FLAGS}")
        if any(not (0 <= n <= 255 and 0 <= v <= 255) for n, v in pairs):
            raise KnockError("a flag's number and value are 0-255")
        if len({n for n, _ in pairs}) != len(pairs):
            raise KnockError("a flag appears twice")
        self.timestamp = timestamp  # unix seconds
        self.port = port
        self.proto = proto
        self.address = None if address is None else _address(address)
        self.extra_ports = extra  # more ports to open, same protocol
        self.flags = pairs  # (n, value) of FLAGn, each 0-255

    @property
    def kind(self) -> AddressKind:
        if self.address is None:
            return "source"
        return "ipv6" if ":" in self.address else "ipv4"

    @property
    def extras(self) -> int:
        return len(self.extra_ports) + len(self.flags)

    @property
    def hits(self) -> tuple[Hit, ...]:
        """The (port, protocol) pairs to open."""
        return tuple((p, self.proto) for p in (self.port, *self.extra_ports))


def encode_plaintext(msg: SealedMessage) -> bytes:
    kind = KINDS.index(msg.kind)
    extension = bool(msg.extras)
    head = VERSION << 5 | kind << 3 | (msg.proto == "udp") << 2 | extension << 1
    out = bytearray([head])
    out += msg.timestamp.to_bytes(4, "big") + msg.port.to_bytes(2, "big")
    if extension:
        out.append(len(msg.extra_ports) << 4 | len(msg.flags))
        for port in msg.extra_ports:
            out += port.to_bytes(2, "big")
        for n, value in msg.flags:
            out += bytes((n, value))
    if msg.address is not None:
        out += ipaddress.ip_address(msg.address).packed
    return bytes(out)


def decode_plaintext(data: bytes) -> SealedMessage:
    """The strict inverse of ``encode_plaintext``."""
    if len(data) < _BASE:
        raise KnockError(f"a plaintext of {len(data)} bytes; at least {_BASE}")
    head = data[0]
    if head >> 5 != VERSION:
        raise KnockError(f"sealed knock version {head >> 5}; this is version {VERSION}")
    if head & 1:
        raise KnockError("the reserved bit is set")
    kind = head >> 3 & 3
    if kind == 3:
        raise KnockError("address kind 3 is undefined")
    proto: Proto = "udp" if head >> 2 & 1 else "tcp"
    timestamp = int.from_bytes(data[1:5], "big")
    port = int.from_bytes(data[5:7], "big")
    at = _BASE
    extra: list[int] = []
    flags: list[tuple[int, int]] = []
    if head >> 1 & 1:
        if len(data) < at + 1:
            raise KnockError("the extension's count byte is missing")
        count = data[at]
        at += 1
        n_ports, n_flags = count >> 4, count & 15
        if not count:
            raise KnockError("an extension that holds nothing")
        need = at + 2 * (n_ports + n_flags)
        if len(data) < need:
            raise KnockError(f"the extension needs {need} bytes, the plaintext has {len(data)}")
        extra = [int.from_bytes(data[at + 2 * i : at + 2 * i + 2], "big") for i in range(n_ports)]
        at += 2 * n_ports
        flags = [(data[at + 2 * i], data[at + 2 * i + 1]) for i in range(n_flags)]
        at += 2 * n_flags
        if any(a[0] >= b[0] for a, b in itertools.pairwise(flags)):
            raise KnockError("the flags are not in ascending order of n")
    size = ADDRESS_BYTES[kind]
    if len(data) != at + size:
        raise KnockError(f"a plaintext of {len(data)} bytes; its fields make {at + size}")
    address: str | None = None
    if kind == 1:
        address = str(ipaddress.IPv4Address(data[at:]))
    elif kind == 2:
        ip6 = ipaddress.IPv6Address(data[at:])
        if ip6.ipv4_mapped:
            raise KnockError("an IPv4-mapped IPv6 address (an IPv4 address has kind 1)")
        address = str(ip6)
    return SealedMessage(timestamp, port, proto, address, tuple(extra), tuple(flags))


# ------------------------------------------------------------------------- the codec


def new_nonce() -> bytes:
    """7 bytes from ``secrets`` (``seal`` puts the address kind in the first 2 bits)."""
    import secrets

    return secrets.token_bytes(NONCE_BYTES)


def _bound(kind: int, source: str | None) -> bytes:
    """What the tag binds besides the knock: for kind 0, the address it is sent from."""
    if kind:
        return b""
    if source is None:
        raise KnockError("a knock for the packet's source is bound to it: give source")
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        raise KnockError(f"{source[:60]!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
    return ip.packed


class SealedCodec(Record):
    """Sealed knocks for one server under one key: bytes and ports, both ways.

    ``extras``: the extra ports and flags, together, whose knock lengths ``lengths``
    names for the daemon to search (0 to 30; a longer knock still decodes here)."""

    __slots__ = ("_enc_key", "_head", "_mac_key", "extras", "key", "server_id", "span_start",
                 "tag_bits")  # fmt: skip

    def __init__(
        self, key: bytes, server_id: str, tag_bits: int = DEFAULT_TAG_BITS,
        span_start: int = DEFAULT_SPAN_START, extras: int = DEFAULT_EXTRAS,
    ) -> None:  # fmt: skip
        if len(key) != KEY_BYTES:
            raise InvalidValue(f"a sealed knock's key is {KEY_BYTES} bytes, got {len(key)}")
        _tag_bytes(tag_bits)  # checks it
        if not 1 <= span_start <= 65536 - SPAN_SIZE:
            raise InvalidValue(f"the span starts at 1-{65536 - SPAN_SIZE} ({SPAN_SIZE} ports), "
                               f"not {span_start}")  # fmt: skip
        plaintext_size("source", extras)
        self.key = key
        self.server_id = canonical_host(server_id)
        self.tag_bits = tag_bits
        self.span_start = span_start
        self.extras = extras
        self._enc_key = _hkdf(key, ENCRYPT_CONTEXT)
        self._mac_key = _hkdf(key, MAC_CONTEXT)
        sid = self.server_id.encode("ascii")
        self._head = TAG_PREFIX + bytes([len(sid)]) + sid  # the tag's input before the nonce

    def __repr__(self) -> str:
        return (f"SealedCodec(server_id={self.server_id!r}, tag_bits={self.tag_bits}, "
                f"span_start={self.span_start}, extras={self.extras})")  # fmt: skip

    @property
    def tag_bytes(self) -> int:
        return _tag_bytes(self.tag_bits)

    @property
    def span(self) -> range:
        return range(self.span_start, self.span_start + SPAN_SIZE)

    # -- bytes

    def _tag(self, bound: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
        from Crypto.Hash import HMAC, SHA256

        mac = HMAC.new(self._mac_key, self._head + bound + nonce + ciphertext, digestmod=SHA256)
        return mac.digest()[: self.tag_bytes]

    def _chacha(self, nonce: bytes, data: bytes) -> bytes:
        from Crypto.Cipher import ChaCha20

        out: bytes = ChaCha20.new(key=self._enc_key, nonce=nonce + b"\0").encrypt(data)
        return out

    def seal_plaintext(
        self, plaintext: bytes, nonce: bytes | None = None, source: str | None = None
    ) -> bytes:
        """Wire bytes for any plaintext (``seal`` for a message; this, for tests): the
        nonce's kind bits are the plaintext's (byte 0), or 0 if it has none."""
        kind = plaintext[0] >> 3 & 3 if plaintext else 0
        nonce = new_nonce() if nonce is None else nonce
        if len(nonce) != NONCE_BYTES:
            raise KnockError(f"a nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
        nonce = bytes([nonce[0] & 0x3F | kind << 6]) + nonce[1:]
        ciphertext = self._chacha(nonce, plaintext)
        return nonce + ciphertext + self._tag(_bound(kind, source), nonce, ciphertext)

    def seal(self, msg: SealedMessage, nonce: bytes | None = None,
             source: str | None = None) -> bytes:  # fmt: skip
        """The wire bytes; ``nonce`` None: 54 random bits from ``secrets``. ``source``:
        the address the knock is sent from, which a knock for the packet's source
        (``msg.address`` None) is bound to."""
        return self.seal_plaintext(encode_plaintext(msg), nonce, source)

    def verify(self, wire: bytes, source: str | None = None) -> bool:
        """Whether the tag verifies for a knock from ``source`` (constant-time
        comparison); nothing is decrypted."""
        split = len(wire) - self.tag_bytes
        if split - NONCE_BYTES not in PLAINTEXT_SIZES or wire[0] >> 6 == 3:
            return False
        try:
            bound = _bound(wire[0] >> 6, source)
        except KnockError:
            return False
        import hmac

        nonce, ciphertext = wire[:NONCE_BYTES], wire[NONCE_BYTES:split]
        return hmac.compare_digest(self._tag(bound, nonce, ciphertext), wire[split:])

    def open(self, wire: bytes, source: str | None = None) -> SealedMessage:
        """The message of wire bytes whose tag verifies for ``source``; ``KnockError``
        otherwise."""
        split = len(wire) - self.tag_bytes
        if split - NONCE_BYTES not in PLAINTEXT_SIZES:
            raise KnockError(f"{len(wire)} bytes is no sealed knock's size "
                             f"(tag_bits = {self.tag_bits})")  # fmt: skip
        if not self.verify(wire, source):
            raise TagMismatch("the tag does not verify (another key, server_id or source, "
                              "or altered)")  # fmt: skip
        msg = decode_plaintext(self._chacha(wire[:NONCE_BYTES], wire[NONCE_BYTES:split]))
        if KINDS.index(msg.kind) != wire[0] >> 6:
            raise KnockError("the address kind in the clear is not the plaintext's")
        return msg

    def replay_key(self, wire: bytes) -> bytes:
        """What identifies a used knock: the server and the nonce (the replay memory
        keeps its digest until the knock is stale)."""
        return self._head + wire[:NONCE_BYTES]

    # -- ports

    def ports(self, wire: bytes) -> list[int]:
        """The SYNs' destination ports, in order, for wire bytes."""
        nbits = 8 * len(wire)
        count = syns_for_bytes(len(wire))
        value = int.from_bytes(wire, "big") << (DATA_BITS * count - nbits)
        mask, start = (1 << DATA_BITS) - 1, self.span_start
        return [
            start + ((i % LABELS) << DATA_BITS | value >> (DATA_BITS * (count - 1 - i)) & mask)
            for i in range(count)
        ]

    def build(
        self, msg: SealedMessage, nonce: bytes | None = None, source: str | None = None
    ) -> list[int]:
        return self.ports(self.seal(msg, nonce, source))

    def label(self, port: int) -> int | None:
        """The position label (0-15) a port of the span carries; None outside it."""
        offset = port - self.span_start
        return offset >> DATA_BITS if 0 <= offset < SPAN_SIZE else None

    def wire_sizes(self, syns: int) -> tuple[int, ...]:
        """The wire sizes ``syns`` SYNs can carry, the smaller first (one or two)."""
        top = DATA_BITS * syns // 8
        return tuple(
            size
            for size in (top - 1, top)
            if size > 0 and syns_for_bytes(size) == syns
            and size - NONCE_BYTES - self.tag_bytes in PLAINTEXT_SIZES
        )  # fmt: skip

    def unpack(self, ports: Sequence[int]) -> list[bytes]:
        """The wire bytes ``ports`` may carry, the smaller first (a count of SYNs fits one
        or two sizes; each candidate's padding bits are zero). No tag is checked."""
        count = len(ports)
        if not 1 <= count <= MAX_SYNS:
            raise KnockError(f"{count} SYNs; a sealed knock has 1-{MAX_SYNS}")
        value = 0
        for i, port in enumerate(ports):
            label = self.label(port)
            if label is None:
                raise KnockError(f"port {port} is outside the span {self.span_start}-"
                                 f"{self.span_start + SPAN_SIZE - 1}")  # fmt: skip
            if label != i % LABELS:
                raise KnockError(f"SYN {i + 1} carries label {label}, not {i % LABELS}")
            value = value << DATA_BITS | (port - self.span_start) & ((1 << DATA_BITS) - 1)
        out: list[bytes] = []
        for size in self.wire_sizes(count):
            padding = DATA_BITS * count - 8 * size
            if not value & ((1 << padding) - 1):
                out.append((value >> padding).to_bytes(size, "big"))
        if not out:
            raise KnockError(f"{count} SYNs carry no sealed knock (its size, or padding bits)")
        return out

    def decode(self, ports: Sequence[int], source: str | None = None) -> SealedMessage:
        """The message ``ports`` carry (sent from ``source``): the first candidate whose
        tag verifies."""
        error = KnockError("no candidate")
        for wire in self.unpack(ports):
            try:
                return self.open(wire, source)
            except KnockError as exc:
                error = exc
        raise error

    def lengths(self) -> tuple[int, ...]:
        """The knock lengths (in SYNs) a daemon looks for: each address kind (source,
        IPv4, IPv6) with 0 to ``extras`` extra ports and flags. With the defaults (tag
        64, extras 2): 16, 19, 20, 22, 23, 28, 30 and 32."""
        return tuple(sorted({syn_count(kind, m, self.tag_bits)
                             for kind in KINDS for m in range(self.extras + 1)}))  # fmt: skip


def message_for(
    timestamp: float, hits: Iterable[Hit], *, address: str | None = None,
    flags: Iterable[tuple[int, int]] = (),
) -> SealedMessage:  # fmt: skip
    """A message from what a client knows: the time now, the (port, protocol) pairs
    to open (one protocol per knock), the address (None: the packet's source)."""
    pairs = list(hits)
    if not pairs:
        raise KnockError("a sealed knock opens at least one port")
    protos = {proto for _, proto in pairs}
    if len(protos) != 1:
        raise KnockError("one sealed knock opens ports of one protocol (send one per protocol)")
    ports = [port for port, _ in pairs]
    return SealedMessage(int(timestamp), ports[0], pairs[0][1], address, tuple(ports[1:]),
                         tuple(flags))  # fmt: skip
