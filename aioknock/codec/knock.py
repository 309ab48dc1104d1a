"""The whole knock pipeline, both directions: fields -> cipher -> port span and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import KnockError
from .ciphers import Cipher, RandomBytes
from .fields import KnockFormat, KnockInputs
from .portspan import PortSpan


@dataclass(frozen=True, slots=True)
class KnockPlan:
    """One knock, ready to send: its bytes before and after encryption, and its ports."""

    values: list[int]
    payload: bytes
    ports: list[int]


@dataclass(frozen=True, slots=True)
class Codec:
    """Built once per settings (the key schedule included), used for every knock."""

    format: KnockFormat
    cipher: Cipher
    span: PortSpan
    localtime: bool = False

    @property
    def payload_length(self) -> int:
        return self.cipher.encrypted_length(self.format.length)

    @property
    def knock_length(self) -> int:
        """Ports in one knock."""
        return self.span.symbols(self.payload_length)

    def build(self, inputs: KnockInputs, now: float, random_bytes: RandomBytes) -> KnockPlan:
        plain = self.format.pack(inputs, now, localtime=self.localtime)
        payload = self.cipher.encrypt(plain, random_bytes)
        return KnockPlan(list(plain), payload, self.span.encode(payload))

    def parse(self, ports: Sequence[int]) -> dict[str, int | str]:
        """Decode and verify a received knock; any defect raises KnockError."""
        if len(ports) != self.knock_length:
            raise KnockError(f"expected {self.knock_length} ports, got {len(ports)}")
        payload = self.span.decode(ports, self.payload_length)
        return self.format.unpack(self.cipher.decrypt(payload))
