"""The whole knock pipeline, both directions: fields -> cipher -> port span and back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import KnockError
from .ciphers import Cipher, RandomBytes
from .fields import Fields, KnockFormat, KnockInputs
from .portspan import PortSpan


@dataclass(frozen=True, slots=True)
class KnockPlan:
    """One knock, ready to send: its bytes before and after encryption, and its ports."""

    values: list[int]
    payload: bytes
    ports: list[int]


@dataclass(frozen=True, slots=True)
class DecodedKnock:
    """A received knock that decoded: its fields, and the payload they came from."""

    fields: Fields
    payload: bytes


@dataclass(frozen=True, slots=True)
class Codec:
    """Built once per settings (the key schedule included), used for every knock."""

    format: KnockFormat
    cipher: Cipher
    span: PortSpan
    localtime: bool = False
    # Derived once: the daemon asks for them on every packet.
    payload_length: int = field(init=False)
    knock_length: int = field(init=False)  # ports in one knock

    def __post_init__(self) -> None:
        payload_length = self.cipher.encrypted_length(self.format.length)
        object.__setattr__(self, "payload_length", payload_length)
        object.__setattr__(self, "knock_length", self.span.symbols(payload_length))

    @property
    def needs_client(self) -> bool:
        """Whether the knock carries an address (CLIENT): only then is one looked up."""
        return "CLIENT" in self.format.fields

    def inputs(self, client: str, port: int, flags: Mapping[int, int], rand: int) -> KnockInputs:
        """The values a knock is built from; ``client`` matters only if it is carried."""
        return KnockInputs(client if self.needs_client else "0.0.0.0", port, flags, rand)

    def build(self, inputs: KnockInputs, now: float, random_bytes: RandomBytes) -> KnockPlan:
        plain = self.format.pack(inputs, now, localtime=self.localtime)
        payload = self.cipher.encrypt(plain, random_bytes)
        return KnockPlan(list(plain), payload, self.span.encode(payload))

    def decode(self, ports: Sequence[int]) -> DecodedKnock:
        """Decode and verify a received knock; any defect raises KnockError."""
        if len(ports) != self.knock_length:
            raise KnockError(f"expected {self.knock_length} ports, got {len(ports)}")
        payload = self.span.decode(ports, self.payload_length)
        return DecodedKnock(self.format.unpack(self.cipher.decrypt(payload)), payload)
