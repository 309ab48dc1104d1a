"""Knock ciphers: a small pluggable layer over well-kept libraries.

The legacy family reproduces Perl's Crypt::CBC as the 2004 prototype used it, so
that existing knockdaemon set-ups keep working: CBC over an 8-byte block
cipher, PKCS#5 padding (always 1-8 bytes), a key stretched from the passphrase
with MD5, and either Crypt::CBC's ``RandomIV`` header or a fixed all-zero IV.
No cipher is implemented here: pycryptodome (and ``cryptography`` for IDEA)
encrypt the blocks. Only the CBC chaining (one XOR per block) is done here, so
that the block cipher is keyed once per codec: the Blowfish key schedule is ~80%
of a knock's encoding cost, and the libraries' CBC objects redo it for every
IV. A property test holds the chaining byte-equal to pycryptodome's CBC mode.

A cipher's module is imported when a codec is first keyed with it: pycryptodome loads
its C parts through ctypes, or cffi where that is installed (~8 ms of a start-up, ~50 ms
with cffi), and an unencrypted knock, the daemon's other kinds and the settings' names
need none of it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import InvalidValue, KnockError
from ..records import Record

RandomBytes = Callable[[int], bytes]

BLOCK = 8
RANDOMIV_HEADER = b"RandomIV"


TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from typing import Protocol, TypeAlias

    class Cipher(Protocol):
        """What the knock codec needs from a cipher; randomness is passed in, never drawn."""

        name: str

        def encrypted_length(self, plain_length: int) -> int:
            """Length of the ciphertext for a plaintext of ``plain_length`` bytes."""
            ...

        def encrypt(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes: ...

        def decrypt(self, data: bytes) -> bytes:
            """Return the plaintext, or raise KnockError; never guess."""
            ...

        def replay_key(self, data: bytes) -> bytes:
            """What identifies a knock for replay checks: the part nobody can alter without
            the key while keeping its meaning."""
            ...

    class _Block(Protocol):
        """A block cipher keyed once (ECB): whole blocks in, whole blocks out."""

        def encrypt(self, data: bytes) -> bytes: ...
        def decrypt(self, data: bytes) -> bytes: ...


BlockFactory: TypeAlias = "Callable[[bytes], _Block]"  # key -> keyed block cipher


def _pycryptodome(name: str) -> BlockFactory:
    """The block cipher ``Crypto.Cipher.<name>``, keyed in ECB mode."""
    module = importlib.import_module(f"Crypto.Cipher.{name}")

    def factory(key: bytes) -> _Block:
        return module.new(key, module.MODE_ECB)  # type: ignore[no-any-return]

    return factory


def _des_ede3(key: bytes) -> _Block:
    # E-D-E with K1 == K2 or K2 == K3 is single DES with the remaining key;
    # pycryptodome refuses such keys, so hand them to single DES instead.
    import Crypto.Cipher.DES as DES
    import Crypto.Cipher.DES3 as DES3

    try:
        return DES3.new(key, DES3.MODE_ECB)
    except ValueError:
        k1, k2, k3 = key[:8], key[8:16], key[16:]
        same12 = bytes(b & 0xFE for b in k1) == bytes(b & 0xFE for b in k2)  # parity bits
        return DES.new(k3 if same12 else k1, DES.MODE_ECB)


class _IdeaBlock:
    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.decrepit.ciphers.algorithms import IDEA
        from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
        from cryptography.hazmat.primitives.ciphers import modes

        cipher = _Cipher(IDEA(key), modes.ECB())
        # ECB contexts hold no chaining state: whole blocks can be fed for ever.
        self._enc, self._dec = cipher.encryptor(), cipher.decryptor()

    def encrypt(self, data: bytes) -> bytes:
        return self._enc.update(data)

    def decrypt(self, data: bytes) -> bytes:
        return self._dec.update(data)


def _idea_factory() -> BlockFactory:
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import IDEA  # noqa: F401

        _IdeaBlock(b"\0" * 16).encrypt(b"\0" * 8)
    except Exception:
        raise InvalidValue(
            "IDEA needs the 'cryptography' package with IDEA support "
            "(pip install 'aioknock[idea]'); Blowfish or CAST5 work without it"
        ) from None
    return _IdeaBlock


def cbc_encrypt(block: _Block, iv: bytes, data: bytes) -> bytes:
    """CBC chaining over a block cipher keyed once: c[i] = E(p[i] xor c[i-1])."""
    out = bytearray()
    prev = iv
    for i in range(0, len(data), BLOCK):
        mixed = int.from_bytes(data[i : i + BLOCK]) ^ int.from_bytes(prev)
        prev = block.encrypt(mixed.to_bytes(BLOCK))
        out += prev
    return bytes(out)


def cbc_decrypt(block: _Block, iv: bytes, data: bytes) -> bytes:
    """p[i] = D(c[i]) xor c[i-1], all blocks through the cipher in one call."""
    chain = iv + data[:-BLOCK]
    return (int.from_bytes(block.decrypt(data)) ^ int.from_bytes(chain)).to_bytes(len(data))


class _Algorithm(Record):
    __slots__ = ("factory", "key_size", "name")

    def __init__(self, name: str, key_size: int, factory: Callable[[], BlockFactory]) -> None:
        self.name = name
        self.key_size = key_size
        self.factory = factory


ALGORITHMS: dict[str, _Algorithm] = {
    a.name.lower(): a
    for a in (
        _Algorithm("Blowfish", 56, lambda: _pycryptodome("Blowfish")),
        _Algorithm("DES", 8, lambda: _pycryptodome("DES")),
        _Algorithm("DES_EDE3", 24, lambda: _des_ede3),
        _Algorithm("CAST5", 16, lambda: _pycryptodome("CAST")),
        _Algorithm("IDEA", 16, _idea_factory),
    )
}
ALIASES = {"3des": "des_ede3", "des3": "des_ede3", "tripledes": "des_ede3", "cast": "cast5"}


def cipher_names() -> list[str]:
    return [a.name for a in ALGORITHMS.values()]


def _algorithm(name: str) -> _Algorithm:
    lookup = name.strip().lower().removeprefix("crypt::")
    algo = ALGORITHMS.get(ALIASES.get(lookup, lookup))
    if algo is None:
        raise InvalidValue(f"unknown cipher {name!r}; expected one of {', '.join(cipher_names())}")
    return algo


def cipher_name(name: str) -> str:
    """The canonical name of a cipher (``crypt::blowfish`` is ``Blowfish``)."""
    return _algorithm(name).name


def stretch_key(passphrase: bytes, size: int) -> bytes:
    """Crypt::CBC's legacy key: MD5 of the passphrase, extended by MD5 of all so far."""
    import hashlib

    material = hashlib.md5(passphrase).digest()
    while len(material) < size:
        material += hashlib.md5(material).digest()
    return material[:size]


class CryptCBC:
    """Crypt::CBC-compatible knock cipher (``iv = yes`` adds the RandomIV header)."""

    def __init__(self, algorithm: str, passphrase: bytes, *, iv: bool) -> None:
        algo = _algorithm(algorithm)
        if not passphrase:
            raise InvalidValue("encryption needs a non-empty key")
        self.name = algo.name
        self.iv = iv
        self._block = algo.factory()(stretch_key(passphrase, algo.key_size))
        import Crypto.Util.Padding as padding  # with the block cipher: at first use

        self._pad, self._unpad = padding.pad, padding.unpad

    def encrypted_length(self, plain_length: int) -> int:
        return 2 * BLOCK * self.iv + BLOCK * (plain_length // BLOCK + 1)

    def replay_key(self, data: bytes) -> bytes:
        # The IV travels in the clear, and flipping its bits flips the same bits of the
        # first plaintext block (CLIENT, a time field): a recorded knock can be altered
        # that way without the key. The ciphertext after it cannot, so that is the key.
        return data[2 * BLOCK :] if self.iv else data

    def encrypt(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes:
        if self.iv:
            iv = random_bytes(BLOCK)
            return RANDOMIV_HEADER + iv + cbc_encrypt(self._block, iv, self._pad(plaintext, BLOCK))
        return cbc_encrypt(self._block, bytes(BLOCK), self._pad(plaintext, BLOCK))

    def decrypt(self, data: bytes) -> bytes:
        if self.iv:
            if data[:BLOCK] != RANDOMIV_HEADER:
                raise KnockError("missing RandomIV header (wrong key, cipher or iv setting?)")
            iv, body = data[BLOCK : 2 * BLOCK], data[2 * BLOCK :]
        else:
            iv, body = bytes(BLOCK), data
        if not body or len(body) % BLOCK:
            raise KnockError(f"ciphertext of {len(body)} bytes is not whole {BLOCK}-byte blocks")
        try:
            return self._unpad(cbc_decrypt(self._block, iv, body), BLOCK)
        except ValueError:
            raise KnockError("bad padding after decryption (wrong key or cipher?)") from None


class Plain:
    """No encryption: the payload is the knock's bytes."""

    name = "none"

    def encrypted_length(self, plain_length: int) -> int:
        return plain_length

    def encrypt(self, plaintext: bytes, random_bytes: RandomBytes) -> bytes:
        return plaintext

    def decrypt(self, data: bytes) -> bytes:
        return data

    def replay_key(self, data: bytes) -> bytes:
        return data
