"""A stand-in recognizer and a runner for the engine's actions, for engine-level tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aioknock.asyncio.actions import Backend
from aioknock.codec.sequence import Hit, Proto
from aioknock.daemon.engine import Action, Close, Engine, Open
from aioknock.daemon.packet import Packet
from aioknock.daemon.recognizer import Grant, Verdict


class Stub:
    """A recognizer that answers the next packet with the verdicts queued for it."""

    name = "stub"

    def __init__(self, ports: Iterable[Hit] = ((7000, "tcp"),)) -> None:
        self.ports = list(ports)
        self.answers: list[Verdict] = []
        self.sources = 0

    def wanted(self) -> list[Hit]:
        return self.ports

    def receive(self, packet: Packet) -> list[Verdict]:
        answers, self.answers = self.answers, []
        return answers

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> list[Verdict]:
        return []


def grant(address: str, port: int = 22, *, proto: Proto = "tcp", **kw: Any) -> Grant:
    return Grant(address, "stub", address, ((port, proto),), **kw)


def feed(engine: Engine, stub: Stub, *verdicts: Verdict, now: float) -> list[Action]:
    """The verdicts, as the stub's answer to one packet at ``now``; the actions back."""
    stub.answers = list(verdicts)
    engine.receive(Packet(now, "198.18.0.250", stub.ports[0][0], stub.ports[0][1]))
    return engine.actions()


def firewall(actions: Sequence[Action]) -> list[Open | Close]:
    return [a for a in actions if isinstance(a, Open | Close)]


async def perform(engine: Engine, backend: Backend, actions: Sequence[Action]) -> None:
    """Run the firewall actions with ``backend``, in order, as the daemon's worker does."""
    for action in firewall(actions):
        if isinstance(action, Open):
            await backend.open(action.door, action.duration)
        else:
            await backend.close(action.door, action.duration)
        engine.action_done(action)
