"""The daemon's engine on a fake clock: every policy decision, no sockets, no sleeps.

Time is whatever the test says it is: packets carry it, ``handle_timer`` is called
with it. A stub recognizer grants what the test asks for, so each test states the
verdicts it feeds and the actions it expects back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helpers.engine import Stub, firewall
from helpers.engine import feed as stub_feed
from helpers.engine import grant as stub_grant
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recognizers import encoded, knock_ports, make_codec

from aioknock.daemon.doors import Door
from aioknock.daemon.engine import MAX_PENDING, Action, Close, Engine, Log, Open, Policy, Record
from aioknock.daemon.knockd import SequenceDoors
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Ignored, Refusal, Verdict

NOW = 1_000.0
A, B = "198.18.0.1", "198.18.0.9"


def grant(address: str = A, port: int = 22, **kw: Any) -> Grant:
    return stub_grant(address, port, **kw)


def feed(engine: Engine, stub: Stub, *verdicts: Verdict, now: float = NOW) -> list[Action]:
    return stub_feed(engine, stub, *verdicts, now=now)


def logs(actions: Sequence[Action]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log)]


def done(engine: Engine, actions: Sequence[Action], error: str | None = None) -> list[Action]:
    """Report every firewall action in ``actions`` finished (or failed with ``error``)."""
    for action in firewall(actions):
        engine.action_done(action, error)
    return engine.actions()


def make(
    duration: float = 30, cooldown: float = 2, closes_itself: bool = False
) -> tuple[Engine, Stub]:
    stub = Stub()
    return Engine(Policy(duration, cooldown, 0, closes_itself), [stub]), stub


DOOR_A = Door.make(A, 22, "tcp")


def test_a_grant_opens_then_the_timer_closes() -> None:
    engine, stub = make()
    assert engine.get_timer() is None
    actions = feed(engine, stub, grant())
    assert firewall(actions) == [Open(DOOR_A, 30, 0)]
    assert logs(actions) == [f"accepted knock from {A} (stub): opening tcp/22 for {A} for 30 s"]
    assert done(engine, actions) == []
    assert engine.get_timer() == NOW + 30
    engine.handle_timer(NOW + 29.9)
    assert engine.actions() == []
    engine.handle_timer(NOW + 30)
    closing = engine.actions()
    assert firewall(closing) == [Close(DOOR_A, 30, 0)]
    assert logs(closing) == [f"closing tcp/22 for {A}"]
    assert engine.get_timer() is None
    assert engine.counts == {"accept": 1, "refuse": 0, "ignore": 0, "packets": 1}


def test_a_repeated_knock_extends_the_command_door_without_a_second_rule() -> None:
    engine, stub = make()
    done(engine, feed(engine, stub, grant()))
    actions = feed(engine, stub, grant(), now=NOW + 10)
    assert firewall(actions) == []  # a second rule would outlive the close
    assert "extending tcp/22" in logs(actions)[0]
    assert engine.get_timer() == NOW + 40
    engine.handle_timer(NOW + 30)
    assert engine.actions() == []
    engine.handle_timer(NOW + 40)
    assert firewall(engine.actions()) == [Close(DOOR_A, 30, 0)]  # once, for what it opened


def test_a_repeated_knock_refreshes_a_door_that_closes_itself() -> None:
    engine, stub = make(closes_itself=True)
    done(engine, feed(engine, stub, grant()))
    refresh = feed(engine, stub, grant(), now=NOW + 10)
    assert firewall(refresh) == [Open(DOOR_A, 30, 0, refresh=True)]
    done(engine, refresh)
    engine.handle_timer(NOW + 40)
    closing = engine.actions()
    assert firewall(closing) == []  # the kernel's timeout closes it
    assert logs(closing) == [f"closing tcp/22 for {A}"]


def test_cooldown_refuses_and_does_not_extend() -> None:
    engine, stub = make(cooldown=5)
    done(engine, feed(engine, stub, grant()))
    actions = feed(engine, stub, grant(), now=NOW + 4.9)
    assert firewall(actions) == []
    assert logs(actions) == [
        f"refused knock from {A} (stub): cooldown, tcp/22 for {A} was opened moments ago"
    ]
    assert engine.get_timer() == NOW + 30
    assert engine.counts["refuse"] == 1 and engine.counts["accept"] == 1
    feed(engine, stub, grant(), now=NOW + 5)
    assert engine.get_timer() == NOW + 35
    assert firewall(feed(engine, stub, grant(B), now=NOW + 5)) == [
        Open(Door.make(B, 22, "tcp"), 30, 0)
    ]


def test_a_grant_asks_for_its_own_duration() -> None:
    engine, stub = make()
    actions = feed(engine, stub, grant(duration=90.0))
    assert firewall(actions) == [Open(DOOR_A, 90.0, 0)]
    assert engine.get_timer() == NOW + 90


def test_the_pending_limit_refuses_until_actions_finish() -> None:
    """Knocks that need no key (sequence doors) must not queue commands without end."""
    engine, stub = make(cooldown=60)
    first = feed(engine, stub, grant())
    feed(engine, stub, grant(), now=NOW + 1)  # the same door within its cooldown
    assert (engine.counts["accept"], engine.counts["refuse"]) == (1, 1)
    queued = list(first)
    for i in range(MAX_PENDING + 10):
        queued += feed(engine, stub, grant(f"198.18.{i // 250}.{i % 250 + 1}"), now=NOW + 2)
    assert engine.pending == MAX_PENDING == len(firewall(queued))
    assert engine.counts["accept"] == MAX_PENDING
    assert engine.counts["refuse"] == 1 + 11
    assert "256 firewall commands already waiting" in logs(queued)[-1]
    done(engine, firewall(queued)[:1])
    assert firewall(feed(engine, stub, grant("198.18.9.9"), now=NOW + 3))  # room for one


def test_a_failed_open_is_forgotten_and_the_next_knock_opens_again() -> None:
    engine, stub = make(cooldown=0)
    actions = feed(engine, stub, grant())
    failed = done(engine, actions, "iptables: Resource temporarily unavailable")
    assert logs(failed) == [
        f"could not open tcp/22 for {A}: iptables: Resource temporarily unavailable"
    ]
    assert engine.get_timer() is None  # nothing to close: it never opened
    assert engine.pending == 0
    retry = feed(engine, stub, grant(), now=NOW + 1)
    assert firewall(retry) == [Open(DOOR_A, 30, 0)]
    assert "opening" in logs(retry)[0]


def test_a_failed_refresh_keeps_the_open_door() -> None:
    engine, stub = make(closes_itself=True, cooldown=0)
    done(engine, feed(engine, stub, grant()))
    refresh = feed(engine, stub, grant(), now=NOW + 10)
    assert "could not open" in logs(done(engine, refresh, "nft: busy"))[0]
    assert engine.get_timer() == NOW + 40


def test_a_door_due_while_its_open_runs_closes_once_the_open_worked() -> None:
    engine, stub = make(duration=5)
    opening = feed(engine, stub, grant())
    engine.handle_timer(NOW + 6)
    assert engine.actions() == []  # the open has not reported: nothing to close yet
    assert firewall(feed(engine, stub, grant(), now=NOW + 6.5)) == []  # extends, no 2nd rule
    engine.handle_timer(NOW + 12)
    assert engine.actions() == []
    closing = done(engine, opening)
    assert firewall(closing) == [Close(DOOR_A, 5, 0)]
    assert logs(closing) == [f"closing tcp/22 for {A}"]
    assert engine.get_timer() is None


def test_a_door_due_while_its_open_runs_is_not_closed_if_the_open_failed() -> None:
    engine, stub = make(duration=5)
    opening = feed(engine, stub, grant())
    engine.handle_timer(NOW + 6)
    assert firewall(done(engine, opening, "boom")) == []
    assert firewall(feed(engine, stub, grant(), now=NOW + 7)) == [Open(DOOR_A, 5, 0)]


def test_a_failed_first_open_with_a_refresh_that_worked_is_open() -> None:
    """nftables: the refresh (add-delete-add) opens the door even if the first add failed."""
    engine, stub = make(closes_itself=True, cooldown=0)
    first = feed(engine, stub, grant())
    refresh = feed(engine, stub, grant(), now=NOW + 1)
    done(engine, first, "nft: busy")
    done(engine, refresh)
    again = feed(engine, stub, grant(), now=NOW + 2)
    assert "extending tcp/22" in logs(again)[0]  # still open
    engine.handle_timer(NOW + 40)
    assert engine.actions() == []  # the refresh of NOW + 2 has not reported yet
    assert logs(done(engine, again)) == [f"closing tcp/22 for {A}"]


def test_a_refresh_asks_for_what_remains_of_the_door() -> None:
    """After a reload to a shorter duration, an extension keeps the later deadline; the
    kernel's timeout is set to match it, not to the new duration."""
    stub = Stub()
    engine = Engine(Policy(30, 0, closes_itself=True), [stub])
    done(engine, feed(engine, stub, grant()))
    engine.reload(Policy(5, 0, closes_itself=True), [stub])
    assert firewall(feed(engine, stub, grant(), now=NOW + 1)) == [Open(DOOR_A, 29, 0, refresh=True)]
    assert engine.get_timer() == NOW + 30


def test_stop_closes_doors_opened_by_commands_only() -> None:
    stub = Stub()
    engine = Engine(Policy(30, 0, backend=1, closes_itself=True), [stub])
    done(engine, feed(engine, stub, grant(B)))
    engine.reload(Policy(30, 0, backend=2, closes_itself=False), [stub])
    done(engine, feed(engine, stub, grant()))
    engine.stop()
    actions = engine.actions()
    assert firewall(actions) == [Close(DOOR_A, 30, 2)]
    assert logs(actions) == [f"closing tcp/22 for {A}: the daemon is stopping"]
    assert engine.get_timer() is None


def test_reload_keeps_doors_with_the_backend_that_opened_them() -> None:
    stub = Stub()
    engine = Engine(Policy(30, 0, backend=1), [stub])
    done(engine, feed(engine, stub, grant()))
    new = Stub()
    engine.reload(Policy(60, 0, backend=2), [new])
    assert engine.backends_in_use() == {1, 2}
    # Extended under the new duration, but by the first backend: its rule is the one open.
    assert firewall(feed(engine, new, grant(), now=NOW + 10)) == []
    assert engine.get_timer() == NOW + 70
    engine.handle_timer(NOW + 70)
    assert firewall(engine.actions()) == [Close(DOOR_A, 30, 1)]
    assert engine.backends_in_use() == {2}
    assert firewall(feed(engine, new, grant(B), now=NOW + 71)) == [
        Open(Door.make(B, 22, "tcp"), 60, 2)
    ]


def test_reload_keeps_the_replay_memory_and_routes_to_the_new_recognizers() -> None:
    old = Stub([(7000, "tcp")])
    engine = Engine(Policy(30, 0), [old])
    engine.replays.add(b"x" * 16)
    memory = engine.replays
    new = Stub([(8000, "udp")])
    engine.reload(Policy(30, 0), [new])
    assert engine.replays is memory and b"x" * 16 in engine.replays
    assert engine.wanted() == ([], [8000])
    old.answers = new.answers = [grant()]
    engine.receive(Packet(NOW, A, 7000))
    assert engine.actions() == []  # no longer routed
    engine.receive(Packet(NOW, A, 8000, "udp"))
    assert firewall(engine.actions())


def test_refusals_ignores_records_and_bad_grants() -> None:
    engine, stub = make()
    actions = feed(engine, stub, Refusal(A, "replayed knock"), Ignored(A, "duplicate SYN"))
    assert logs(actions) == [
        f"refused knock from {A}: replayed knock",
        f"ignored knock from {A}: duplicate SYN",
    ]
    recorded = feed(engine, stub, grant(digest=b"d" * 16))
    assert recorded == [Record(b"d" * 16)]  # before the door opens, whether it opens or not
    engine.recorded(Record(b"d" * 16))
    assert firewall(engine.actions()) == [Open(DOOR_A, 30, 0)]
    bad = feed(engine, stub, grant("fe80::1%eth0", digest=b"e" * 16))
    assert bad == [Record(b"e" * 16)]
    engine.recorded(Record(b"e" * 16))
    refused = logs(engine.actions())
    assert "refused knock from fe80::1%eth0 (stub): an IPv6 address with a scope id" in refused[0]
    assert engine.counts == {"accept": 1, "refuse": 2, "ignore": 1, "packets": 3}


def test_a_knock_that_could_not_be_recorded_opens_nothing() -> None:
    """Fail closed: a restart would forget it, and it could then be replayed."""
    engine, stub = make()
    record = feed(engine, stub, grant(digest=b"d" * 16))[0]
    assert isinstance(record, Record) and engine.pending == 1
    engine.recorded(record, "replay_file: cannot record a used knock in /x: No space left")
    actions = engine.actions()
    assert firewall(actions) == [] and engine.pending == 0
    assert logs(actions) == [
        f"refused knock from {A} (stub): it could not be recorded as used: replay_file: "
        "cannot record a used knock in /x: No space left"
    ]
    lenient = Engine(Policy(30, 2, refuse_unrecorded=False), [stub])
    record = feed(lenient, stub, grant(digest=b"d" * 16))[0]
    assert isinstance(record, Record)
    lenient.recorded(record, "disk full")
    actions = lenient.actions()
    assert "accepted anyway (replay_failure = accept): disk full" in logs(actions)[0]
    assert firewall(actions) == [Open(DOOR_A, 30, 0)]


def test_packets_no_recognizer_wants_cost_nothing() -> None:
    engine, stub = make()
    stub.answers = [grant()]
    engine.receive(Packet(NOW, A, 7001))
    engine.receive(Packet(NOW, A, 7000, "udp"))
    assert engine.actions() == [] and stub.answers
    assert engine.counts["packets"] == 2


def test_a_sequence_door_through_the_engine() -> None:
    from aioknock.config.settings import DoorSettings

    door = DoorSettings("ssh", ((7000, "tcp"), (8000, "udp")), 22, "tcp")
    doors = SequenceDoors([door], knock_timeout=10, max_sources=100)
    engine = Engine(Policy(30, 2), [doors])
    assert engine.wanted() == ([7000], [8000])
    engine.receive(Packet(NOW, A, 7000, "tcp", 1))
    engine.receive(Packet(NOW + 1, A, 8000, "udp", 2))
    actions = engine.actions()
    assert firewall(actions) == [Open(DOOR_A, 30, 0)]
    assert logs(actions) == [f"accepted knock from {A} (ssh): opening tcp/22 for {A} for 30 s"]


class Worker:
    """The asyncio layer's worker, as a model: firewall actions run in order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.commands = not engine.policy.closes_itself  # rules that stack, closed by hand
        self.queue: list[Open | Close] = []
        self.rules: dict[Door, int] = {}  # command rules the firewall holds -> their backend
        self.worked: dict[int, bool] = {}  # per opening (serial): did one of its opens work

    def take(self) -> None:
        self.queue += firewall(self.engine.actions())

    def run_one(self, ok: bool) -> None:
        action = self.queue.pop(0)
        if isinstance(action, Close):
            assert action.door in self.rules, "closed a door that is not open"
            assert self.rules.pop(action.door) == action.backend, "closed by another backend"
        elif ok and not action.refresh and self.commands:
            assert action.door not in self.rules, "a second rule for an open door"
            self.rules[action.door] = action.backend
        if isinstance(action, Open):
            self.worked[action.serial] = self.worked.get(action.serial, False) or ok
        self.engine.action_done(action, None if ok else "boom")
        self.take()


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["knock", "timer", "done", "fail", "reload"]),
        st.integers(0, 3),  # which address knocks
        st.floats(0, 8),  # seconds later
    ),
    max_size=50,
)


def _play(engine: Engine, stub: Stub, worker: Worker, steps: list[tuple[str, int, float]]) -> None:
    now, backend = NOW, 0
    for what, who, later in steps:
        now += later
        if what == "knock":
            stub.answers = [grant(f"198.18.0.{who + 1}")]
            engine.receive(Packet(now, A, 7000))
            worker.take()
        elif what == "timer":
            engine.handle_timer(now)
            worker.take()
        elif what == "reload":
            backend += 1
            policy = engine.policy
            engine.reload(Policy(2 + who, 1, backend, policy.closes_itself), [stub])
        elif worker.queue:
            worker.run_one(what == "done")


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_every_command_door_is_closed_once_and_only_after_it_opened(
    steps: list[tuple[str, int, float]],
) -> None:
    """Whatever the order of knocks, timers, reloads and results (some failing): no
    second rule for an open door, no close for a door that is not open or by another
    backend than the one that opened it, and after stopping (the worker drains its
    queue) no rule is left behind."""
    engine, stub = make(duration=5, cooldown=1)
    worker = Worker(engine)
    _play(engine, stub, worker, steps)
    engine.stop()
    worker.take()
    while worker.queue:
        worker.run_one(True)
    assert worker.rules == {}, "a command door outlived the daemon"
    assert engine.pending == 0
    assert engine.get_timer() is None


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_doors_that_close_themselves_are_open_exactly_when_an_open_worked(
    steps: list[tuple[str, int, float]],
) -> None:
    """nftables: no Close is ever asked for, and once every open has reported, the
    engine holds a door open only if one of its opens worked."""
    engine, stub = make(duration=5, cooldown=1, closes_itself=True)
    worker = Worker(engine)
    _play(engine, stub, worker, steps)
    assert all(isinstance(a, Open) for a in worker.queue)
    while worker.queue:
        worker.run_one(True)
    assert engine.pending == 0
    for held in engine.doors.open_doors():
        assert worker.worked.get(held.serial), f"{held.door} held open, no open of it worked"


def test_the_engine_times_out_recognizers_knocks_and_logs_them() -> None:
    """The engine's timer covers the recognizers' too: an incomplete knock is one log
    line after knock_timeout, with no packet needed to notice it."""
    codec = make_codec()
    rec = encoded(codec, knock_timeout=10.0)
    engine = Engine(Policy(30.0, 0.0, 0, True), [rec])
    for i, port in enumerate(knock_ports(codec, client=A, now=NOW)[:9]):
        engine.receive(Packet(NOW + i * 0.01, A, port, "tcp", 40000 + i))
    assert engine.actions() == []
    due = engine.get_timer()
    assert due is not None and NOW < due <= NOW + 11
    now = NOW
    while (due := engine.get_timer()) is not None and now < NOW + 20:
        now = max(now, due)
        engine.handle_timer(now)
    assert logs(engine.actions()) == [
        f"ignored knock from {A}: incomplete knock: 9 of 32 ports within knock_timeout (10 s); "
        "does the client use the same knock, portspan and cipher?"
    ]
