"""The sealed knock's recognizer: finds a knock among stray SYNs by its labels and tag.

Per source, the last SYNs into the span are kept (port and time; at most the longest
knock's length + 2, none older than ``knock_timeout``). A SYN whose label (the high 4
bits of its span offset, codec/sealed.py) is that of a knock's last position, for one
of the knock lengths the codec names (``SealedCodec.lengths``), ends a candidate: the
window is walked back, each position taking a SYN with its label, and up to
``MAX_EXTRA_SYNS`` (2) SYNs inside the knock may be skipped: someone spoofing the
client's address to break its knock, a late duplicate. Candidates are tried fewest
skips first; the first whose tag verifies wins. A wrong label costs nothing; a right
label that is not the knock's makes a branch.

**The bound.** At most ``MAX_TAG_CHECKS`` (K = 8) tag checks per arriving SYN, over
every length and candidate together, whatever the source sends: a flood costs at most
K HMACs a packet, and most SYNs cost none (a stray label ends the walk within a step or
two; a candidate whose padding bits are not zero needs no tag). With 2 skips a length
has at most 4 arrangements (two labels doubled), and of the default lengths at most
two end on one label (16 and 32) or fit two sizes (19 SYNs: 25 or 26 bytes): K = 8 is
what they can ask for, so a knock with up to 2 strays among its SYNs is always found
(tests/test_sealed_recognizer.py tries every pair of places and labels). More strays:
refused, and said.

A knock that verifies is judged in this order: its age (``time_tolerance`` around the
packet's time), replay (its server and nonce, remembered until it is stale; with no
room in the memory, refused: fail closed), then its address: the packet's source (whose
address the tag binds, so such a knock verifies from nowhere else), or the address it
names (refused unless ``allow_nat`` if that is not the source). A
window that looked complete but held no knock is reported once a knock that could have
included it would have ended, or when the source's SYNs expire (rate-limited, as the
encoded knock's): a longer knock (IPv4, IPv6) passes through shorter lengths' labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..codec.sealed import DATA_BITS, LABELS, SealedCodec, SealedMessage, TagMismatch
from ..codec.sequence import Hit
from ..errors import KnockError
from .packet import Packet, same_ip
from .recognizer import Grant, Ignored, PortWindow, Refusal, Reports, SourceTable, Verdict
from .replay import ReplayMemory, digest

MAX_EXTRA_SYNS = 2  # stray SYNs inside one knock that are searched past
MAX_TAG_CHECKS = 8  # K: tag checks per arriving SYN, at most


@dataclass(slots=True)
class _Window(PortWindow):
    count: int = 0  # SYNs this source sent (while its state lives)
    failures: int = 0  # complete-looking windows that held no knock
    unsaid: str = ""  # why the last of them was no knock, not yet reported
    say_at: int = 0  # ``count`` at which ``unsaid`` is reported


class SealedKnocks:
    """Recognizes the sealed knocks ``codec`` reads; ``tag_checks`` counts every tag
    checked, ``most_checks`` the most one SYN cost (never over ``MAX_TAG_CHECKS``)."""

    name = "sealed"

    def __init__(
        self, codec: SealedCodec, *, knock_timeout: float, max_sources: int,
        time_tolerance: float, allow_nat: bool, replays: ReplayMemory | None = None,
    ) -> None:  # fmt: skip
        self.codec = codec
        self.knock_timeout, self.time_tolerance = knock_timeout, time_tolerance
        self.allow_nat = allow_nat
        # Used knocks by server and nonce, each until it is stale (shared by every kind).
        self.replays = ReplayMemory() if replays is None else replays
        self.lengths = codec.lengths()
        # Lengths by the label of their last SYN, shortest first.
        self._ending = {label: tuple(n for n in self.lengths if (n - 1) % LABELS == label)
                        for label in range(LABELS)}  # fmt: skip
        self._cap = max(self.lengths) + MAX_EXTRA_SYNS
        self._windows = SourceTable(_Window, timeout=knock_timeout, limit=max_sources)
        self._reports = Reports()
        self.tag_checks = 0
        self.most_checks = 0
        self._checks = 0  # this SYN's

    @property
    def sources(self) -> int:
        return len(self._windows)

    def wanted(self) -> list[Hit]:
        return [(port, "tcp") for port in self.codec.span]

    def get_timer(self) -> float | None:
        return self._windows.next_sweep()

    def handle_timer(self, now: float) -> list[Verdict]:
        """Sources whose SYNs expired: a window that held no knock is refused with its
        reason, an incomplete knock said (both rate-limited)."""
        self._windows.expire(now)
        expired, self._windows.expired = self._windows.expired, []
        out: list[Verdict] = []
        for src, window in expired:
            if window.unsaid:
                verdict: Verdict = Refusal(src, window.unsaid)
            elif len(window.ports) >= 2 and not window.failures:
                verdict = Ignored(src, self._incomplete(len(window.ports)))
            else:
                continue
            if self._reports.allow(src, now):
                out.append(verdict)
        if held := self._reports.take_held(now):
            out.append(Ignored("more sources", f"{held} more sealed-knock lines not logged"))
        return out

    def _incomplete(self, count: int) -> str:
        return (f"incomplete sealed knock: {count} SYNs within knock_timeout "
                f"({self.knock_timeout:g} s), the shortest is {self.lengths[0]}; does the "
                f"client send sealed knocks to the same span with tag_bits = "
                f"{self.codec.tag_bits}?")  # fmt: skip

    def receive(self, packet: Packet) -> list[Verdict]:
        label = self.codec.label(packet.dport) if packet.proto == "tcp" else None
        if label is None:
            return []
        window = self._windows.get(packet)
        if window.duplicate(packet, self._cap):
            return [Ignored(packet.src, f"duplicate SYN to port {packet.dport}")]
        window.prune(packet.now, self.knock_timeout)
        window.ports.append(packet.dport)
        window.times.append(packet.now)
        if len(window.ports) > self._cap:
            del window.ports[0], window.times[0]
        window.count += 1
        self._checks = 0
        try:
            for length in self._ending[label]:
                if len(window.ports) < length:
                    break
                found = self._search(window, length, packet.src)
                if isinstance(found, tuple):
                    self._windows.drop(packet.src)
                    return [self._judge(packet, *found)]
                if found:
                    self._failed(packet.src, window, found)
        except KnockError as exc:  # a knock that verified but does not read
            self._windows.drop(packet.src)
            return [Refusal(packet.src, f"a sealed knock that verified: {exc.reason}")]
        finally:
            self.most_checks = max(self.most_checks, self._checks)
        if window.unsaid and window.count >= window.say_at:
            reason, window.unsaid = window.unsaid, ""
            if self._reports.allow(packet.src, packet.now):
                return [Refusal(packet.src, reason)]
        elif window.failures <= MAX_EXTRA_SYNS:
            self._windows.rank(packet.src, window, len(window.ports))
        return []

    def _failed(self, src: str, window: _Window, reason: str) -> None:
        """A complete-looking window held no knock: said once no longer knock could
        still end with these SYNs in it (or when they expire)."""
        if not window.unsaid:
            window.say_at = window.count + self._cap
        window.unsaid = reason
        window.failures += 1
        if window.failures > MAX_EXTRA_SYNS:
            # Not before: a stray SYN with a knock's last label (one spoofed from the
            # client's address, say) fails a window of a knock still on its way, and a
            # demoted source is the first a flood evicts.
            self._windows.demote(src, window)

    def _search(self, window: _Window, length: int, src: str) -> tuple[bytes, SealedMessage] | str:
        """The knock of ``length`` SYNs that ends with the window's last, as its wire
        bytes and message; else why there is none ("": the window holds no such
        arrangement of labels, nothing to say yet)."""
        tail = window.ports[-(length + MAX_EXTRA_SYNS) :]
        for candidate in _arrangements(self.codec, tail, length):
            try:
                wires = self.codec.unpack(candidate)
            except KnockError:
                continue  # padding bits that are not zero: no tag to check
            for wire in wires:
                if self._checks >= MAX_TAG_CHECKS:
                    return (f"no sealed knock of {length} SYNs found within {MAX_TAG_CHECKS} "
                            "tag checks (the bound per SYN)")  # fmt: skip
                self._checks += 1
                self.tag_checks += 1
                try:
                    return wire, self.codec.open(wire, src)
                except TagMismatch:
                    continue
        extras = _fewest_extras(self.codec, window.ports, length)
        if extras is None:
            return ""
        if extras > MAX_EXTRA_SYNS:
            return (f"a sealed knock of {length} SYNs would need {extras} stray SYNs among "
                    f"its own (at most {MAX_EXTRA_SYNS} are searched)")  # fmt: skip
        return (f"no sealed knock among the last {len(window.ports)} SYNs "
                "(tag did not verify)")  # fmt: skip

    def _judge(self, packet: Packet, wire: bytes, msg: SealedMessage) -> Verdict:
        src, now = packet.src, packet.now
        age = now - msg.timestamp
        if abs(age) > self.time_tolerance:
            return Refusal(src, f"sealed knock made {age:+.0f} s ago: outside time_tolerance "
                                f"({self.time_tolerance:g} s)")  # fmt: skip
        self.replays.expire(now)
        used = digest(self.codec.replay_key(wire))
        if used in self.replays:
            return Refusal(src, "replayed sealed knock")
        if not self.replays.room(now):
            return Refusal(src, "the replay memory is full of knocks within the age window")
        # Used from here on, whatever follows; forgotten once it is too old to pass.
        self.replays.add(used, until=msg.timestamp + self.time_tolerance)
        address = msg.address or src
        if msg.address is not None and not self.allow_nat and not same_ip(address, src):
            return Refusal(src, f"sealed knock for {address}, not the source {src} "
                                "(allow_nat = no)")  # fmt: skip
        return Grant(src, self.name, address, msg.hits, msg.flags,
                     reason="sealed knock verified", digest=used)  # fmt: skip


def _labels(codec: SealedCodec, ports: list[int]) -> list[int]:
    return [(port - codec.span_start) >> DATA_BITS for port in ports]


def _arrangements(codec: SealedCodec, tail: list[int], length: int) -> Iterator[list[int]]:
    """The ways ``length`` SYNs of ``tail`` ending with its last carry the labels
    0, 1, ..., 15, 0, ... in order with at most ``MAX_EXTRA_SYNS`` skipped between
    them, fewest skipped first: each as its ports.

    Position i with s SYNs skipped after it is tail index ``last - (length - 1 - i) -
    s``, so the states are (i, s). A pass down from the last position finds the states
    it reaches (stray labels end it within a step or two), a pass up the totals of
    skips each can still end with (bit masks): the walk then only enters states that
    lead to an arrangement, and costs O(length) per arrangement."""
    labels = _labels(codec, tail)
    top = MAX_EXTRA_SYNS + 1
    offset = len(tail) - length  # index(i, s) = offset + i - s
    down = [0] * length  # bit s: state (i, s) is reached from the last position
    down[length - 1] = 1
    for i in range(length - 2, -1, -1):
        above, bits, want = down[i + 1], 0, i % LABELS
        for s in range(top):
            p = offset + i - s
            if above & ((2 << s) - 1) and p >= 0 and labels[p] == want:
                bits |= 1 << s
        if not bits:
            return
        down[i] = bits
    reach = [[(1 << s) if down[0] >> s & 1 else 0 for s in range(top)]]
    for i in range(1, length):
        below, row, ends = reach[-1], [0] * top, 0
        for s in range(top - 1, -1, -1):
            ends |= below[s]  # a state (i - 1, s') with s' >= s follows (i, s)
            if down[i] >> s & 1:
                row[s] = ends
        reach.append(row)
    for total in range(top):
        if not reach[length - 1][0] >> total & 1:
            continue
        stack: list[tuple[int, int, list[int]]] = [(length - 1, 0, [])]
        while stack:
            i, s, path = stack.pop()
            path = [*path, tail[offset + i - s]]
            if i == 0:
                yield path[::-1]
                continue
            # Pushed in reverse: the branch that skips least is taken first.
            for more in range(top - 1, s - 1, -1):
                if reach[i - 1][more] >> total & 1:
                    stack.append((i - 1, more, path))


def _fewest_extras(codec: SealedCodec, ports: list[int], length: int) -> int | None:
    """The fewest SYNs that must be skipped for a knock of ``length`` to end with the
    window's last (None: its labels hold none): matching each position to the latest
    SYN with its label, from the end, leaves the latest start."""
    labels = _labels(codec, ports)
    p = len(labels) - 1
    for i in range(length - 2, -1, -1):
        p -= 1
        while p >= 0 and labels[p] != i % LABELS:
            p -= 1
        if p < 0:
            return None
    return len(labels) - p - length
