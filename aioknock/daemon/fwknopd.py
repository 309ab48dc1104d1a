"""Single-packet authorization as fwknopd checks it: one datagram, one verdict.

The order is fwknopd's (``server/incoming_spa.c``): shape, replay digest, then per
access stanza whose SOURCE matches: HMAC (constant time, before any decryption),
decryption, inner digest, packet age, the allow address, the user name, the ports.
The first stanza whose HMAC verifies decides, as in fwknopd. Each used packet's
SHA-256 is remembered until it is too old to pass the age check anyway, so the
memory is bounded by the age window times the rate of good packets, and it is
shared with the replay file through the grant's digest.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ..codec import spa
from ..codec.sequence import Hit, proto_of
from ..errors import KnockError
from .packet import IP, Packet, same_ip, unmapped
from .recognizer import Grant, Refusal, Verdict
from .replay import DIGEST_SIZE, ReplayMemory

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
DEFAULT_ACCESS_TIMEOUT, DEFAULT_MAX_TIMEOUT = 30, 300  # fwknopd's defaults
SOURCE_ADDRESSES = ("0.0.0.0", "::")  # "open for the packet's source" (fwknop -s)


@dataclass(frozen=True, slots=True)
class Stanza:
    """One stanza of fwknopd's access.conf. ``open_ports`` empty: any port;
    ``access_expire``: epoch seconds after which the stanza no longer matches."""

    sources: tuple[Network, ...]
    keys: spa.SpaKeys
    open_ports: tuple[tuple[str, int], ...] = ()
    restrict_ports: tuple[tuple[str, int], ...] = ()
    fw_access_timeout: int = DEFAULT_ACCESS_TIMEOUT
    max_fw_timeout: int = DEFAULT_MAX_TIMEOUT
    require_source_address: bool = False
    require_username: str = ""
    access_expire: float | None = None
    where: str = ""  # "file:line" of its SOURCE line, for log lines

    def matches(self, ip: IP, now: float) -> bool:
        if self.access_expire is not None and now > self.access_expire:
            return False
        return any(ip.version == net.version and ip in net for net in self.sources)

    def denied(self, access: Sequence[tuple[str, int]]) -> str:
        """Why a requested port is not allowed here ("" when all are)."""
        for pair in access:
            if pair in self.restrict_ports:
                return f"{pair[0]}/{pair[1]} is in RESTRICT_PORTS"
            if self.open_ports and pair not in self.open_ports:
                return f"{pair[0]}/{pair[1]} is not in OPEN_PORTS"
        return ""

    def duration(self, client_timeout: int) -> int:
        """fwknopd's rule: the client's timeout within MAX_FW_TIMEOUT, else the stanza's."""
        if client_timeout > 0:
            return min(client_timeout, self.max_fw_timeout)
        return self.fw_access_timeout


class SpaPackets:
    """Recognizes fwknop SPA datagrams sent to ``port`` (UDP)."""

    name = "spa"

    def __init__(
        self, stanzas: Sequence[Stanza], *, port: int, max_age: float,
        replays: ReplayMemory | None = None,
    ) -> None:  # fmt: skip
        self.stanzas = tuple(stanzas)
        self.port, self.max_age = port, max_age
        self.replays = ReplayMemory() if replays is None else replays

    @property
    def sources(self) -> int:
        return 0  # one datagram is the whole knock: nothing is kept per source

    def wanted(self) -> list[Hit]:
        return [(self.port, "udp")]

    def get_timer(self) -> float | None:
        return None  # a datagram is judged when it comes; the replay memory expires then

    def handle_timer(self, now: float) -> list[Verdict]:
        return []

    def receive(self, packet: Packet) -> list[Verdict]:
        if packet.proto != "udp" or packet.dport != self.port or not packet.payload:
            return []  # a firewall log's line has no datagram to read
        try:
            text = spa.check_shape(packet.payload)
            ip = ipaddress.ip_address(packet.src)
        except (KnockError, ValueError):
            # Not SPA at all (fwknopd logs it at debug level only): a flood of junk
            # must not flood the log; what is SPA-shaped gets a verdict and a line.
            return []
        return [self._judge(packet, text, unmapped(ip))]

    def _judge(self, packet: Packet, text: str, ip: IP) -> Verdict:
        src, now = packet.src, packet.now
        used = spa.replay_digest(packet.payload)[:DIGEST_SIZE]
        self.replays.expire(now)
        if used in self.replays:
            return Refusal(src, "replayed SPA packet")
        stanzas = [s for s in self.stanzas if s.matches(ip, now)]
        if not stanzas:
            return Refusal(src, "no access stanza's SOURCE matches")
        for stanza in stanzas:
            try:
                plaintext = spa.unseal_text(text, stanza.keys)
            except KnockError:
                continue  # not this stanza's keys (fwknopd tries the next)
            return self._decoded(packet, stanza, plaintext, used)
        return Refusal(src, f"HMAC does not verify with the keys of {_stanzas(stanzas)}")

    def _decoded(self, packet: Packet, stanza: Stanza, plaintext: bytes, used: bytes) -> Verdict:
        src = packet.src
        try:
            msg = spa.decode_message(plaintext)
        except KnockError as exc:
            return Refusal(src, f"{exc.reason} ({stanza.where})")
        if not self.replays.room(packet.now):
            return Refusal(src, "the replay memory is full of packets within the age window")
        # Used from here on, whatever follows (fwknopd adds it to its cache here too);
        # forgotten once it is too old to pass the age check (a timestamp may be ahead).
        self.replays.add(used, until=max(packet.now, msg.timestamp) + self.max_age)
        reason = self._refused(packet, stanza, msg)
        if reason:
            return Refusal(src, f"{reason} ({stanza.where})")
        address = src if msg.allow in SOURCE_ADDRESSES else msg.allow
        ports = tuple((port, proto_of(proto)) for proto, port in msg.access)
        return Grant(src, self.name, address, ports,
                     duration=float(stanza.duration(msg.client_timeout)),
                     reason=f"SPA packet verified ({stanza.where})", digest=used)  # fmt: skip

    def _refused(self, packet: Packet, stanza: Stanza, msg: spa.SpaMessage) -> str:
        age = abs(packet.now - msg.timestamp)
        if age > self.max_age:
            return f"packet age {age:.0f} s is over max_spa_packet_age ({self.max_age:g} s)"
        if stanza.require_source_address:
            if msg.allow in SOURCE_ADDRESSES:
                return "no allow address in the packet (REQUIRE_SOURCE_ADDRESS)"
            if not same_ip(msg.allow, packet.src):
                return f"allow address {msg.allow} is not the source (REQUIRE_SOURCE_ADDRESS)"
        if stanza.require_username and msg.username != stanza.require_username:
            return f"user {msg.username!r} is not REQUIRE_USERNAME"
        return stanza.denied(msg.access)


def _stanzas(stanzas: Sequence[Stanza]) -> str:
    if len(stanzas) == 1:
        return f"the stanza at {stanzas[0].where}" if stanzas[0].where else "the stanza"
    return f"{len(stanzas)} stanzas"
