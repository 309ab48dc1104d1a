"""The whole knock pipeline, both directions: fields -> cipher -> port span and back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import KnockError
from ..records import Record
from .fields import Fields, KnockFormat, KnockInputs
from .portspan import PortSpan

TYPE_CHECKING = False  # typing is for the type checker only: ~3 ms of a start
if TYPE_CHECKING:
    from .ciphers import Cipher, RandomBytes


class KnockPlan(Record):
    """One knock, ready to send: its bytes before and after encryption, and its ports."""

    __slots__ = ("payload", "ports", "values")

    def __init__(self, values: list[int], payload: bytes, ports: list[int]) -> None:
        self.values = values
        self.payload = payload
        self.ports = ports


class DecodedKnock(Record):
    """A received knock that decoded: its fields, and the payload they came from."""

    __slots__ = ("fields", "payload")

    def __init__(self, fields: Fields, payload: bytes) -> None:
        self.fields = fields
        self.payload = payload


class Codec(Record):
    """Built once per settings (the key schedule included), used for every knock."""

    __slots__ = ("cipher", "format", "knock_length", "localtime", "payload_length", "span")

    def __init__(
        self, format: KnockFormat, cipher: Cipher, span: PortSpan, localtime: bool = False
    ) -> None:
        self.format = format
        self.cipher = cipher
        self.span = span
        self.localtime = localtime
        # Derived once: the daemon asks for them on every packet.
        self.payload_length = cipher.encrypted_length(format.length)
        self.knock_length = span.symbols(self.payload_length)  # ports in one knock

    def __repr__(self) -> str:
        return f"Codec({self.format!r}, {self.cipher!r}, {self.span!r}, {self.localtime!r})"

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
