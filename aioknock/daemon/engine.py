"""The daemon's engine: packets in, actions out, time passed in. No sockets, no clock.

Shaped like aioquic's connection: the asyncio layer calls ``receive(packet)`` for
every packet (each carries the time it was seen), ``handle_timer(now)`` when
``get_timer()`` comes due, and ``action_done(action, error)`` when a firewall
action it was handed has finished; after each call it takes ``actions()`` and
performs them in order: ``Log`` a line, ``Record`` a used knock durably, ``Open``
or ``Close`` a door with the backend the action names. Every decision lives here:
which knocks open which doors, for how long, extension, cooldown, how many firewall
commands may wait, the counts, what a reload keeps and what stopping closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..codec.sequence import Hit
from ..logs import ERROR, INFO, WARNING
from .doors import Door, DoorTable, OpenDoor
from .packet import Packet
from .recognizer import Grant, Recognizer, Refusal, Verdict
from .replay import ReplayMemory

MAX_PENDING = 256  # firewall actions waiting to run; more knocks are refused meanwhile


@dataclass(frozen=True, slots=True)
class Policy:
    """How doors are kept: the settings' ``duration`` and ``cooldown``, and the backend
    that opens them (``backend`` names it in actions; ``closes_itself``: its rules
    expire on their own, as nftables timeouts do, so they are refreshed, not closed)."""

    duration: float
    cooldown: float
    backend: int = 0
    closes_itself: bool = False
    refuse_unrecorded: bool = True  # a used knock that cannot be recorded opens nothing


@dataclass(frozen=True, slots=True)
class Log:
    level: int  # a ``logging`` level
    message: str


@dataclass(frozen=True, slots=True)
class Record:
    """Make a used knock durable (the replay file); its doors open once ``recorded``
    says it is (or, with ``refuse_unrecorded`` off, whatever it says)."""

    digest: bytes


@dataclass(frozen=True, slots=True)
class Open:
    """Open ``door`` for ``duration`` seconds (``refresh``: it is open, extend it)."""

    door: Door
    duration: float
    backend: int
    refresh: bool = False
    serial: int = field(default=0, compare=False)  # the opening it belongs to


@dataclass(frozen=True, slots=True)
class Close:
    door: Door
    duration: float  # what it was opened for
    backend: int


Action = Log | Record | Open | Close
FirewallAction = Open | Close


@dataclass(slots=True)
class _Opening:
    """A door with opens (its first, or refreshes) that have not reported yet. Until they
    have, it is neither forgotten nor closed: it is open if any of them worked."""

    held: OpenDoor
    running: int = 0  # opens handed out and not yet reported
    opened: bool = False  # one of them worked (or the door was open before)
    closing: str | None = None  # it came due meanwhile: close it then, with this reason


def wanted_ports(recognizers: Sequence[Recognizer]) -> tuple[list[int], list[int]]:
    """The TCP and UDP ports the recognizers read."""
    hits = {hit for recognizer in recognizers for hit in recognizer.wanted()}
    return sorted(p for p, proto in hits if proto == "tcp"), sorted(
        p for p, proto in hits if proto == "udp"
    )


class Engine:
    """``replays``: the memory of used knocks that the recognizers share; like the open
    doors, it outlives every reload."""

    def __init__(
        self, policy: Policy, recognizers: Sequence[Recognizer], replays: ReplayMemory | None = None
    ) -> None:
        self.counts = {"accept": 0, "refuse": 0, "ignore": 0, "packets": 0}
        self.pending = 0  # firewall actions handed out and not yet done
        self.doors = DoorTable(policy.duration, policy.cooldown)
        self.replays = ReplayMemory() if replays is None else replays
        # Doors with opens not reported yet, by serial (see _Opening).
        self._opening: dict[int, _Opening] = {}
        # Knocks waiting for their Record to be made durable, by digest, with their time.
        self._recording: dict[bytes, tuple[Grant, float]] = {}
        self._actions: list[Action] = []
        self._configure(policy, recognizers)

    # ---------------------------------------------------------------- configuration

    def _configure(self, policy: Policy, recognizers: Sequence[Recognizer]) -> None:
        self.policy = policy
        self.recognizers = tuple(recognizers)
        self.doors.duration, self.doors.cooldown = policy.duration, policy.cooldown
        routes: dict[Hit, list[Recognizer]] = {}
        for recognizer in self.recognizers:
            for hit in recognizer.wanted():
                routes.setdefault(hit, []).append(recognizer)
        self._routes = {hit: tuple(rs) for hit, rs in routes.items()}

    def reload(self, policy: Policy, recognizers: Sequence[Recognizer]) -> None:
        """A new configuration takes over: open doors stay open (their own backend
        extends and closes them), the memory of used knocks is kept (the new recognizers
        are made with it), and knocks in progress start again."""
        self._configure(policy, recognizers)

    def wanted(self) -> tuple[list[int], list[int]]:
        """The TCP and UDP ports some recognizer reads (the capture filter's question)."""
        return wanted_ports(self.recognizers)

    def backends_in_use(self) -> set[int]:
        """The backends that open doors still hold, besides the current one."""
        return {d.backend for d in self.doors.open_doors()} | {self.policy.backend}

    # ---------------------------------------------------------------------- input

    def receive(self, packet: Packet) -> None:
        self.counts["packets"] += 1
        for recognizer in self._routes.get((packet.dport, packet.proto), ()):
            for verdict in recognizer.receive(packet):
                self._judge(verdict, packet.now)

    def handle_timer(self, now: float) -> None:
        """Close the doors whose time is up; let recognizers time out their knocks."""
        for held in self.doors.due(now):
            self._close(held, "")
        for recognizer in self.recognizers:
            due = recognizer.get_timer()
            if due is not None and due <= now:
                for verdict in recognizer.handle_timer(now):
                    self._judge(verdict, now)

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called; None: not until something happens."""
        times = [self.doors.next_deadline(), *(r.get_timer() for r in self.recognizers)]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def action_done(self, action: FirewallAction, error: str | None = None) -> None:
        """The firewall action has run; ``error`` says why it failed."""
        self.pending -= 1
        if error is not None:
            verb = "open" if isinstance(action, Open) else "close"
            self._log(ERROR, f"could not {verb} {action.door}: {error}")
        if isinstance(action, Open):
            self._opened(action.serial, error is None)

    def _opened(self, serial: int, worked: bool) -> None:
        opening = self._opening.get(serial)
        if opening is None:
            return
        opening.running -= 1
        opening.opened = opening.opened or worked
        if opening.running:
            return
        del self._opening[serial]
        if not opening.opened:
            self.doors.forget(opening.held)  # nothing to close; a new knock opens it
        elif opening.closing is not None:
            self.doors.forget(opening.held)
            self._close(opening.held, opening.closing)

    def recorded(self, record: Record, error: str | None = None) -> None:
        """The used knock is on record (``error``: why it could not be): open its doors,
        or refuse it, failing closed, if a restart could let it in again."""
        grant, now = self._recording.pop(record.digest)
        self.pending -= 1
        if error is not None:
            if self.policy.refuse_unrecorded:
                self._refuse(grant.source, f"it could not be recorded as used: {error}",
                             grant.via)  # fmt: skip
                return
            self._log(WARNING, f"knock from {grant.source} ({grant.via}) not recorded "
                                       f"as used, accepted anyway (replay_failure = accept): "
                                       f"{error}")  # fmt: skip
        self._open_doors(grant, now)

    def stop(self) -> None:
        """Close what would stay open for good once the daemon is gone: doors opened by
        commands. Doors whose rules expire by themselves keep their timeouts."""
        for held in self.doors.take_all():
            if not held.closes_itself:
                self._close(held, ": the daemon is stopping")

    def actions(self) -> list[Action]:
        """What to do now, in order; each is handed out once."""
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------- decisions

    def _judge(self, verdict: Verdict, now: float) -> None:
        if isinstance(verdict, Grant):
            self._grant(verdict, now)
        elif isinstance(verdict, Refusal):
            self._refuse(verdict.source, verdict.reason)
        else:
            self.counts["ignore"] += 1
            self._log(INFO, f"ignored knock from {verdict.source}: {verdict.reason}")

    def _refuse(self, source: str, reason: str, via: str = "") -> None:
        self.counts["refuse"] += 1
        door = f" ({via})" if via else ""
        self._log(WARNING, f"refused knock from {source}{door}: {reason}")

    def _grant(self, grant: Grant, now: float) -> None:
        if not grant.digest:
            self._open_doors(grant, now)
        else:  # used up now, door or not; the doors wait for the record
            self._recording[grant.digest] = (grant, now)
            self.pending += 1
            self._actions.append(Record(grant.digest))

    def _open_doors(self, grant: Grant, now: float) -> None:
        flags = dict(grant.flags)
        for port, proto in grant.ports:
            try:
                door = Door.make(grant.address, port, proto, flags)
            except ValueError as exc:
                self._refuse(grant.source, str(exc), grant.via)
                continue
            self._open(grant, door, now)

    def _open(self, grant: Grant, door: Door, now: float) -> None:
        if self.pending >= MAX_PENDING:
            # Sequence doors and unencrypted knocks need no key: a flood of them must
            # neither queue commands without end nor bury a real knock's command.
            self._refuse(grant.source, f"{MAX_PENDING} firewall commands already waiting",
                         grant.via)  # fmt: skip
            return
        policy = self.policy
        duration = policy.duration if grant.duration is None else grant.duration
        outcome = self.doors.request(door, now, duration=duration, backend=policy.backend,
                                     closes_itself=policy.closes_itself)  # fmt: skip
        if outcome == "cooldown":
            self._refuse(grant.source, f"cooldown, {door} was opened moments ago", grant.via)
            return
        self.counts["accept"] += 1
        action = "opening" if outcome == "open" else "extending"
        self._log(INFO, f"accepted knock from {grant.source} ({grant.via}): "
                                f"{action} {door} for {duration:g} s")  # fmt: skip
        held = self.doors.get(door.key)
        assert held is not None
        opening = self._opening.get(held.serial)
        if opening is not None:
            opening.closing = None  # extended: no longer to be closed when the open reports
        if outcome == "extend" and not held.closes_itself:
            return  # a command's rule stays as it is: a second one would outlive the close
        if opening is None:
            opening = self._opening[held.serial] = _Opening(held, opened=outcome == "extend")
        opening.running += 1
        # A refresh asks the kernel for what remains of the door's (extended) time.
        seconds = duration if outcome == "open" else held.deadline - now
        self._firewall(Open(door, seconds, held.backend, outcome == "extend", held.serial))

    def _close(self, held: OpenDoor, why: str) -> None:
        opening = self._opening.get(held.serial)
        if opening is not None:  # close it once its opens are known to have worked
            opening.closing = why
            self.doors.keep(held)
            return
        self._log(INFO, f"closing {held.door}{why}")
        if not held.closes_itself:
            self._firewall(Close(held.door, held.duration, held.backend))

    def _firewall(self, action: FirewallAction) -> None:
        self.pending += 1
        self._actions.append(action)

    def _log(self, level: int, message: str) -> None:
        self._actions.append(Log(level, message))
