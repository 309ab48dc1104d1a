"""Single-packet authorization as fwknop 2.6.10 (protocol 3.0.0) writes and reads it.

A packet is one line of base64 text. Inside, colon-separated: a 16-digit random
value, the base64 user name, the timestamp, the protocol version, the message type,
the base64 access message (``198.18.0.2,tcp/22,udp/53``), the client's timeout for
type 3, and a base64 SHA-256 of all that. It is encrypted as OpenSSL's ``enc
-aes-256-cbc -md md5`` does (``Salted__``, an 8-byte salt, key and IV from
``EVP_BytesToKey``, PKCS#7), base64-encoded without ``=``, and authenticated by an
HMAC over that base64 text; the constant ``U2FsdGVkX1`` ("Salted__" in base64) is
dropped on the wire and the HMAC's base64 appended.

Only pycryptodome's AES, HMAC and hashes do the work. The one derivation written
here is ``EVP_BytesToKey`` (MD5 chained over passphrase and salt), which
compatibility dictates. A packet is read in fwknopd's order: shape, HMAC (compared
in constant time, before any decryption), decryption, the inner digest, then the
fields; every defect is a ``KnockError`` with its reason.

pycryptodome is imported at first use (its modules load their C parts through ctypes,
or cffi where that is installed: ~8 ms of a start-up, ~50 ms with cffi), and so are
``hmac``, ``hashlib`` and ``secrets``: most runs (the prototype's knock, knockd's) never
build or read an SPA packet, and the settings only need this module's names and limits.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import ipaddress
from collections.abc import Callable, Iterator, Mapping

from ..errors import InvalidValue, KnockError
from ..records import Record

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Any, TypeAlias


VERSION = "3.0.0"
SALTED = b"Salted__"
PREFIX = "U2FsdGVkX1"  # base64 of "Salted__" as far as it does not depend on the salt
ACCESS_MSG, CLIENT_TIMEOUT_ACCESS_MSG = 1, 3
MESSAGE_TYPES = {
    0: "command",
    1: "access",
    2: "NAT access",
    3: "access with client timeout",
    4: "NAT access with client timeout",
    5: "local NAT access",
    6: "local NAT access with client timeout",
}
MIN_PACKET, MAX_PACKET = 140, 1500  # fwknopd's MIN_SPA_DATA_SIZE, MAX_SPA_PACKET_LEN
MAX_KEY = 32  # fwknop's RIJNDAEL_MAX_KEYSIZE: the passphrase is the key's material
MAX_HMAC_KEY = 128  # MAX_DIGEST_BLOCK_LEN
MAX_USER, MAX_MESSAGE, MAX_TIMESTAMP, MAX_VERSION = 64, 256, 12, 8
MAX_CLIENT_TIMEOUT = 2 << 15  # what fwknopd's decoder accepts
RAND_DIGITS = 16
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_USER_BANNED = frozenset('"/\\[]:;|=,+*?<>')

Hash: TypeAlias = "Any"  # a pycryptodome hash module (SHA256, ...)


class _Hashes(Mapping[str, Hash]):
    """pycryptodome's hash modules by fwknop's names: the names are known at once, each
    module is imported when it is first looked up."""

    def __init__(self, modules: dict[str, str]) -> None:
        self._modules = modules  # name -> module of Crypto.Hash
        self._loaded: dict[str, Hash] = {}

    def __getitem__(self, name: str) -> Hash:
        try:
            return self._loaded[name]
        except KeyError:
            module = importlib.import_module(f"Crypto.Hash.{self._modules[name]}")
            self._loaded[name] = module
            return module

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, name: object) -> bool:
        return name in self._modules


HASHES: Mapping[str, Hash] = _Hashes({
    "md5": "MD5",
    "sha1": "SHA1",
    "sha256": "SHA256",
    "sha384": "SHA384",
    "sha512": "SHA512",
    "sha3_256": "SHA3_256",
    "sha3_512": "SHA3_512",
})  # fmt: skip
# Inner digests are told apart by their base64 length, as fwknop does; SHA3 shares
# SHA256's and SHA512's lengths and is tried second.
_DIGESTS_BY_LENGTH = {
    22: ("md5",),
    27: ("sha1",),
    43: ("sha256", "sha3_256"),
    64: ("sha384",),
    86: ("sha512", "sha3_512"),
}


def b64(data: bytes) -> str:
    """fwknop's base64: standard alphabet, ``=`` stripped."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unb64(text: str) -> bytes:
    """Strict inverse of ``b64``; a non-canonical encoding is refused (its bytes would
    have two spellings)."""
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KnockError(f"not base64: {text[:20]!r}") from None
    if b64(data) != text:
        raise KnockError(f"not canonical base64: {text[:20]!r}")
    return data


def hash_named(name: str) -> Hash:
    try:
        return HASHES[name.lower()]
    except KeyError:
        raise InvalidValue(f"expected one of {', '.join(HASHES)}, got {name!r}") from None


def b64_length(name: str) -> int:
    """Length of a digest's base64 text without ``=``."""
    return len(b64(bytes(hash_named(name).digest_size)))


class SpaKeys(Record):
    """The encryption key's material (a passphrase's bytes or a decoded KEY_BASE64) and
    the HMAC key; fwknop takes both byte for byte."""

    __slots__ = ("hmac_digest", "hmac_key", "key")

    def __init__(self, key: bytes, hmac_key: bytes, hmac_digest: str = "sha256") -> None:
        if not 1 <= len(key) <= MAX_KEY:
            raise InvalidValue(f"the key must be 1-{MAX_KEY} bytes, got {len(key)}")
        if not 1 <= len(hmac_key) <= MAX_HMAC_KEY:
            raise InvalidValue(f"the HMAC key must be 1-{MAX_HMAC_KEY} bytes, "
                               f"got {len(hmac_key)}")  # fmt: skip
        hash_named(hmac_digest)
        self.key = key
        self.hmac_key = hmac_key
        self.hmac_digest = hmac_digest

    def __repr__(self) -> str:
        return f"SpaKeys(hmac_digest={self.hmac_digest!r})"


class SpaMessage(Record):
    """The fields of one packet. ``allow``: the address to open for ("0.0.0.0": the
    packet's source); ``access``: (protocol, port) pairs."""

    __slots__ = (
        "access",
        "allow",
        "client_timeout",
        "digest_type",
        "message_type",
        "rand",
        "timestamp",
        "username",
        "version",
    )

    def __init__(
        self, allow: str, access: tuple[tuple[str, int], ...], timestamp: int,
        username: str = "root", client_timeout: int = 0, rand: str = "",
        message_type: int = ACCESS_MSG, version: str = VERSION, digest_type: str = "sha256",
    ) -> None:  # fmt: skip
        self.allow = allow
        self.access = access
        self.timestamp = timestamp
        self.username = username
        self.client_timeout = client_timeout
        self.rand = rand
        self.message_type = message_type
        self.version = version
        self.digest_type = digest_type

    @property
    def message(self) -> str:
        return ",".join([self.allow, *(f"{proto}/{port}" for proto, port in self.access)])


# ------------------------------------------------------------------------- writing


def random_value(token: Callable[[int], int] | None = None) -> str:
    """The 16-digit random field (fwknop's is 16 decimal digits from /dev/urandom);
    ``token`` draws it (default: ``secrets.randbelow``)."""
    if token is None:
        import secrets

        token = secrets.randbelow
    return f"{token(10**RAND_DIGITS):0{RAND_DIGITS}d}"


def encode_message(msg: SpaMessage) -> bytes:
    """The plaintext: the fields and their inner digest."""
    check_user(msg.username)
    check_access(msg.message)
    rand = msg.rand or random_value()
    mtype = CLIENT_TIMEOUT_ACCESS_MSG if msg.client_timeout > 0 else ACCESS_MSG
    fields = [rand, b64(msg.username.encode()), str(msg.timestamp), msg.version, str(mtype),
              b64(msg.message.encode())]  # fmt: skip
    if msg.client_timeout > 0:
        fields.append(str(msg.client_timeout))
    body = ":".join(fields).encode("ascii")
    return body + b":" + b64(hash_named(msg.digest_type).new(body).digest()).encode()


def encrypt(plaintext: bytes, key: bytes, salt: bytes) -> bytes:
    """``Salted__``, the salt, and AES-256-CBC under the key and IV that OpenSSL's
    ``EVP_BytesToKey(MD5, passphrase, salt)`` derives."""
    import Crypto.Util.Padding as padding

    aes_key, iv = bytes_to_key(key, salt)
    sealed: bytes = _aes_cbc(aes_key, iv).encrypt(padding.pad(plaintext, 16))
    return SALTED + salt + sealed


def decrypt(data: bytes, key: bytes) -> bytes:
    if len(data) < 32 or len(data) % 16 or data[:8] != SALTED:
        raise KnockError("the ciphertext is not salted AES blocks")
    import Crypto.Util.Padding as padding

    aes_key, iv = bytes_to_key(key, data[8:16])
    try:
        plain: bytes = _aes_cbc(aes_key, iv).decrypt(data[16:])
        return padding.unpad(plain, 16)
    except ValueError:
        raise KnockError("decryption failed (wrong key?)") from None


def _aes_cbc(key: bytes, iv: bytes) -> Any:
    import Crypto.Cipher.AES as AES

    return AES.new(key, AES.MODE_CBC, iv)


def bytes_to_key(passphrase: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey with MD5 and one iteration: 32 key and 16 IV bytes."""
    md5 = HASHES["md5"]
    out, block = b"", b""
    while len(out) < 48:
        block = md5.new(block + passphrase + salt).digest()
        out += block
    return out[:32], out[32:48]


def seal(plaintext: bytes, keys: SpaKeys, salt: bytes | None = None) -> bytes:
    """The datagram: encrypted, prefix dropped, HMAC appended."""
    if salt is None:
        import secrets

        salt = secrets.token_bytes(8)
    text = b64(encrypt(plaintext, keys.key, salt))
    return (text[len(PREFIX) :] + _tag(text, keys)).encode("ascii")


def _tag(text: str, keys: SpaKeys) -> str:
    import Crypto.Hash.HMAC as HMAC

    mac = HMAC.new(keys.hmac_key, text.encode("ascii"), digestmod=hash_named(keys.hmac_digest))
    return b64(mac.digest())


def build(msg: SpaMessage, keys: SpaKeys, salt: bytes | None = None) -> bytes:
    return seal(encode_message(msg), keys, salt)


# ------------------------------------------------------------------------- reading


def check_shape(packet: bytes) -> str:
    """fwknopd's first look: length, base64 characters, no prefix put back on (a
    replayed packet with the prefix added would otherwise get a new digest)."""
    if not MIN_PACKET <= len(packet) <= MAX_PACKET:
        raise KnockError(f"{len(packet)} bytes, not {MIN_PACKET}-{MAX_PACKET}")
    if not _B64.issuperset(packet):
        raise KnockError("not base64 text")
    text = packet.decode("ascii")
    if text.startswith(PREFIX):
        raise KnockError("starts with the encryption prefix")
    return text


def authenticate(text: str, keys: SpaKeys) -> str:
    """The base64 ciphertext (prefix restored) if the HMAC verifies; nothing is
    decrypted before."""
    size = b64_length(keys.hmac_digest)
    body, tag = text[:-size], text[-size:]
    if len(body) < 36:
        raise KnockError("too short for its HMAC")
    full = PREFIX + body
    import hmac

    if not hmac.compare_digest(_tag(full, keys).encode(), tag.encode()):
        raise KnockError("HMAC does not verify")
    return full


def unseal(packet: bytes, keys: SpaKeys) -> bytes:
    """The plaintext of an authenticated packet."""
    return unseal_text(check_shape(packet), keys)


def unseal_text(text: str, keys: SpaKeys) -> bytes:
    """``unseal`` for a packet whose shape was checked (``check_shape``'s text): a
    daemon tries several stanzas' keys on one packet."""
    return decrypt(unb64(authenticate(text, keys)), keys.key)


def decode_message(plaintext: bytes) -> SpaMessage:
    """The fields, after the inner digest verified; refuses what fwknopd refuses and
    message types aioknock does not implement."""
    try:
        text = plaintext.decode("ascii")
    except UnicodeDecodeError:
        raise KnockError("the plaintext is not ASCII") from None
    if not text.isprintable():
        raise KnockError("the plaintext holds unprintable characters")
    body, _, digest = text.rpartition(":")
    digest_type = _verify_digest(body, digest)
    fields = body.split(":")
    if len(fields) < 6:
        raise KnockError(f"{len(fields) + 1} fields, expected 7 or more")
    rand, user, stamp, version, mtype, message, *rest = fields
    if len(rand) != RAND_DIGITS or not _digits(rand):
        raise KnockError("the random value is not 16 digits")
    kind = _message_type(mtype)
    allow, access = parse_access(_field(message, MAX_MESSAGE, "access message"))
    return SpaMessage(
        allow=allow, access=access, timestamp=_number(stamp, MAX_TIMESTAMP, "timestamp"),
        username=_user(user), client_timeout=_client_timeout(kind, rest), rand=rand,
        message_type=kind, version=_version(version), digest_type=digest_type,
    )  # fmt: skip


def _verify_digest(body: str, digest: str) -> str:
    import hmac

    for name in _DIGESTS_BY_LENGTH.get(len(digest), ()):
        expected = b64(HASHES[name].new(body.encode("ascii")).digest())
        if hmac.compare_digest(expected, digest):
            return name
    raise KnockError("the inner digest does not match")


def _field(text: str, limit: int, what: str) -> str:
    if not text or len(text) > limit:
        raise KnockError(f"the {what} is empty or longer than {limit}")
    try:
        return unb64(text).decode("ascii")
    except UnicodeDecodeError:
        raise KnockError(f"the {what} is not ASCII") from None


def _user(text: str) -> str:
    user = _field(text, MAX_USER, "user name")
    check_user(user)
    return user


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes superscripts, which int() refuses."""
    return text.isascii() and text.isdigit()


def _number(text: str, limit: int, what: str) -> int:
    if not _digits(text) or len(text) > limit:
        raise KnockError(f"the {what} is not a number: {text[:limit]!r}")
    return int(text)


def _version(text: str) -> str:
    if not text or len(text) > MAX_VERSION:
        raise KnockError("no protocol version")
    return text


def _message_type(text: str) -> int:
    kind = _number(text, 2, "message type")
    if kind not in (ACCESS_MSG, CLIENT_TIMEOUT_ACCESS_MSG):
        name = MESSAGE_TYPES.get(kind, f"unknown ({kind})")
        raise KnockError(f"{name} messages (type {kind}) are not implemented")
    return kind


def _client_timeout(kind: int, rest: list[str]) -> int:
    if kind == ACCESS_MSG:
        if rest:
            raise KnockError("extra fields (server_auth is not implemented)")
        return 0
    if len(rest) != 1:
        raise KnockError("a client-timeout message needs exactly one timeout field")
    timeout = _number(rest[0], 6, "client timeout")
    if timeout > MAX_CLIENT_TIMEOUT:
        raise KnockError(f"client timeout {timeout} is over {MAX_CLIENT_TIMEOUT}")
    return timeout


def check_user(user: str) -> None:
    """fwknop's user name rule: 1-64 printable characters, none of ``"/\\[]:;|=,+*?<>``."""
    if not 1 <= len(user) <= MAX_USER:
        raise KnockError(f"the user name must be 1-{MAX_USER} characters")
    bad = [c for c in user if not (" " <= c <= "~") or c in _USER_BANNED]
    if bad:
        raise KnockError(f"the user name holds {bad[0]!r}")


def check_access(message: str) -> None:
    parse_access(message)


def parse_access(message: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """``ADDRESS,proto/port[,proto/port...]`` into the address and its pairs. The
    address may be IPv6 (aioknock's extension; stock fwknopd reads IPv4 only)."""
    allow, *specs = message.split(",")
    try:
        address = ipaddress.ip_address(allow)
    except ValueError:
        raise KnockError(f"the allow address is not an IP address: {allow[:40]!r}") from None
    if not specs:
        raise KnockError("the access message names no port")
    return str(address), tuple(parse_proto_port(spec) for spec in specs)


def parse_proto_port(spec: str) -> tuple[str, int]:
    proto, _, port = spec.partition("/")
    if proto not in ("tcp", "udp"):
        raise KnockError(f"protocol {proto[:8]!r}: only tcp and udp are implemented")
    if not _digits(port) or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise KnockError(f"port {port[:8]!r} is not 1-65535")
    return proto, int(port)


def replay_digest(packet: bytes) -> bytes:
    """What the replay memory keeps of a packet: its SHA-256, as fwknopd's cache. An
    index, not a check of the packet: hashlib's is ten times faster per datagram."""
    import hashlib

    return hashlib.sha256(packet).digest()
