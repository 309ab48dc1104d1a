"""``aioknock daemon``: the asyncio shell around the sans-I/O tracker and door keeper.

It only moves data: packets from a followed log or a capture into the
tracker, decisions out to the log and the firewall backend, and a timer that
closes doors the backend cannot close by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from ..config.settings import DaemonSettings
from ..daemon.doors import Command, DoorKeeper, Grant
from ..daemon.loglines import LineReader
from ..daemon.tracker import Decision, Packet, SequenceDoor, Tracker, TrackerConfig
from ..errors import AioknockError, ConfigError
from ..knock import codec_for
from .actions import ActionError, Backend, CommandBackend, NftBackend
from .follow import Follower
from .kmsg import KMSG, Kmsg
from .replayfile import ReplayFile

log = logging.getLogger("aioknock.daemon")
MAX_PENDING = 256  # firewall commands waiting to run; more knocks are refused meanwhile


def make_tracker(settings: DaemonSettings) -> Tracker:
    doors = [
        SequenceDoor(d.name, tuple((p, "udp" if pr == "udp" else "tcp") for p, pr in d.sequence),
                     d.port, "udp" if d.proto == "udp" else "tcp")
        for d in settings.doors
    ]  # fmt: skip
    config = TrackerConfig(
        knock_timeout=settings.knock_timeout,
        max_sources=settings.max_sources,
        time_tolerance=settings.time_tolerance,
        allow_nat=settings.allow_nat,
    )
    codec = codec_for(settings) if settings.encoded else None
    if codec is None and not doors:
        raise ConfigError("nothing to listen for: encoded = no and no <door> blocks",
                          key="encoded")  # fmt: skip
    return Tracker(codec, config, doors)


def make_backend(settings: DaemonSettings) -> Backend:
    if settings.backend == "nftables":
        return NftBackend(settings.nft_table, settings.nft_mark, test=settings.test)
    if not settings.open:
        raise ConfigError("backend = command needs an open command", key="open")
    close = Command.parse(settings.close, "close") if settings.close else None
    return CommandBackend(Command.parse(settings.open, "open"), close, test=settings.test)


class LocalAddresses:
    """Whether a packet was addressed to this host. A gateway also sees packets for the
    hosts behind it, and a bridge or a promiscuous interface those for its neighbours: a
    knock for them must not open a door here. The kernel decides (a socket may bind only
    a local address); answers are kept ``ttl`` seconds, for at most ``size`` addresses."""

    def __init__(self, ttl: float = 30.0, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._known: OrderedDict[str, tuple[bool, float]] = OrderedDict()

    def __call__(self, address: str, now: float) -> bool:
        known = self._known.get(address)
        if known is not None and now - known[1] < self.ttl:
            return known[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            if ipaddress.ip_address(address).is_multicast:  # bindable, yet nobody's own
                raise OSError
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((address, 0))
        except (OSError, ValueError):
            local = False
        else:
            local = True
        self._known[address] = (local, now)
        self._known.move_to_end(address)
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return local


_Configuration = tuple[DaemonSettings, Tracker, Backend, LineReader | None, ReplayFile | None]


class KnockDaemon:
    def __init__(self, settings: DaemonSettings, *, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.counts = {"accept": 0, "refuse": 0, "ignore": 0, "packets": 0}
        self._closer_wake = asyncio.Event()
        self._restart = asyncio.Event()
        # Open doors and the backend that opened them: after a reload, that backend
        # (its commands, its state) extends and closes them, not the new one.
        self._grants: dict[tuple[str, int, str], tuple[Grant, Backend]] = {}
        # Firewall commands wait here for the one worker that runs them in order. Only
        # accepted knocks (which need the key, and pass the cooldown) add to it.
        self._actions: asyncio.Queue[tuple[str, Grant, Backend, float]] = asyncio.Queue()
        self._started = False
        self._previous: _Configuration | None = None
        self.replay: ReplayFile | None = None
        self._configure(settings)
        if self.replay is not None:
            self.tracker.load_replays(self.replay.digests)

    def _configure(self, settings: DaemonSettings) -> None:
        # Everything is built before anything is replaced: a reload that fails half-way
        # must leave the old configuration whole.
        tracker = make_tracker(settings)
        backend = make_backend(settings)
        reader = (
            LineReader.for_format(settings.log_format, settings.fileformat,
                                  prefix=settings.log_prefix, anchored=settings.logfile == KMSG)
            if settings.runmode == "file"
            else None
        )  # fmt: skip
        replay, write = self.replay, not settings.test
        if not settings.replay_file:
            replay = None
        elif replay is None or replay.path != settings.replay_file or replay.write != write:
            # -test judges knocks but must not use them up for the real daemon.
            replay = ReplayFile.load(settings.replay_file, tracker.config.replay_memory,
                                     write=write)  # fmt: skip
        self.settings, self.tracker, self.backend, self.reader = settings, tracker, backend, reader
        self.replay = replay
        self.keeper = DoorKeeper(settings.duration, settings.cooldown)

    def reload(self, settings: DaemonSettings) -> None:
        """New settings; knocks in progress are dropped, open doors keep their deadlines."""
        keeper, tracker, replay = self.keeper, self.tracker, self.replay
        self._previous = (self.settings, tracker, self.backend, self.reader, replay)
        self._configure(settings)
        self.tracker.remember(tracker)
        if self.replay is not None and self.replay is not replay:
            # Another file: it learns what this daemon remembers, and the reverse; what
            # this daemon accepted stays the newest (the first forgotten when full).
            self.tracker.load_replays([*self.replay.digests, *self.tracker.replays()])
            self.replay.replace(self.tracker.replays())
        keeper.duration, keeper.cooldown = settings.duration, settings.cooldown
        self.keeper = keeper
        self._restart.set()
        log.info("configuration reloaded")

    def _revert(self, exc: AioknockError) -> None:
        """The reloaded configuration's firewall set-up failed: go on with the old one."""
        log.error("reload failed, keeping the old configuration: %s", exc)
        assert self._previous is not None  # set by reload(), which precedes any set-up
        self.settings, self.tracker, self.backend, self.reader, self.replay = self._previous
        self.keeper.duration, self.keeper.cooldown = self.settings.duration, self.settings.cooldown

    async def packets(self) -> AsyncIterator[list[Packet]]:
        if self.settings.runmode == "file":
            # from_start is for the first start: after a reload, reading the log again
            # would judge every knock in it a second time.
            from_start, self._started = self.settings.from_start and not self._started, True
            source: Follower | Kmsg
            if self.settings.logfile == KMSG:
                source = Kmsg(from_start=from_start)
                log.info("reading the kernel log %s (%s lines)", KMSG, self.settings.log_format)
            else:
                hint = (f" (no syslog daemon? logfile = {KMSG} reads the kernel log directly)"
                        if self.settings.log_format == "kernel" else "")  # fmt: skip
                source = Follower(self.settings.logfile, from_start=from_start,
                                  missing_hint=hint)  # fmt: skip
                log.info("following %s (%s lines)", self.settings.logfile,
                         self.settings.log_format)  # fmt: skip
            async for lines in source.lines():
                now = self.clock()
                assert self.reader is not None
                batch = [p for line in lines if (p := self.reader.parse(line, now))]
                if batch:
                    yield batch
        else:
            from .sniffer import Sniffer

            tcp = sorted(self.tracker.codec.span.ports) if self.tracker.codec else []
            udp = sorted({p for d in self.tracker.doors for p, pr in d.sequence if pr == "udp"})
            tcp += sorted({p for d in self.tracker.doors for p, pr in d.sequence if pr == "tcp"})
            sniffer = Sniffer(tcp, udp, interface=self.settings.interface or None, clock=self.clock)
            log.info("capturing on %s", self.settings.interface or "all interfaces")
            local = LocalAddresses()
            try:
                async for batch in sniffer.batches():
                    ours = [p for p in batch if not p.dst or local(p.dst, p.now)]
                    if len(ours) < len(batch):
                        log.debug("ignored %d packets not addressed to this host",
                                  len(batch) - len(ours))  # fmt: skip
                    if ours:
                        yield ours
            finally:
                sniffer.close()

    async def handle(self, packet: Packet) -> None:
        self.counts["packets"] += 1
        for decision in self.tracker.receive(packet):
            await self._act(decision, packet.now)

    def _refuse(self, d: Decision, reason: str) -> None:
        self.counts["refuse"] += 1
        door = f" ({d.door})" if d.door and d.verdict == "accept" else ""
        log.warning("refused knock from %s%s: %s", d.source, door, reason)

    async def _act(self, d: Decision, now: float) -> None:
        if d.verdict == "ignore":
            self.counts["ignore"] += 1
            log.info("ignored knock from %s: %s", d.source, d.reason)
            return
        if d.verdict == "refuse":
            self._refuse(d, d.reason)
            return
        if d.digest and self.replay is not None:
            self.replay.add(d.digest)  # used up now, whether or not a door opens below
        flags = {int(k[4:]): int(v) for k, v in d.fields.items() if k.startswith("flag")}
        try:
            grant = Grant.make(d.address, d.port, d.proto, flags)
        except ValueError as exc:
            self._refuse(d, str(exc))
            return
        if self._actions.qsize() >= MAX_PENDING:
            # Sequence doors and unencrypted knocks need no key: a flood of them must
            # neither grow this queue without end nor bury a real knock's command.
            self._refuse(d, f"{MAX_PENDING} firewall commands already waiting")
            return
        verdict = self.keeper.request(grant, now)
        what = f"{grant.proto}/{grant.port} for {grant.address}"
        if verdict == "cooldown":
            self._refuse(d, f"cooldown, {what} was opened moments ago")
            return
        self.counts["accept"] += 1
        action = "opening" if verdict == "open" else "extending"
        log.info("accepted knock from %s (%s): %s %s for %g s",
                 d.source, d.door, action, what, self.settings.duration)  # fmt: skip
        held = self._grants.get(grant.key)
        backend = held[1] if verdict == "extend" and held is not None else self.backend
        # Recorded before the (slow) open, so the closer finds it whenever it is due.
        self._grants[grant.key] = (grant, backend)
        self._closer_wake.set()
        self._actions.put_nowait(("open", grant, backend, self.settings.duration))

    async def _run_actions(self) -> None:
        """Run firewall commands one at a time, in the order decided: a slow command (up
        to ACTION_TIMEOUT) must not stop packets being read, and a door's close must
        never overtake its open."""
        while True:
            kind, grant, backend, duration = await self._actions.get()
            try:
                if kind == "open":
                    await backend.open(grant, duration)
                else:
                    await backend.close(grant)
            except ActionError as exc:
                log.error("could not %s %s/%d for %s: %s", kind, grant.proto, grant.port,
                          grant.address, exc)  # fmt: skip
            finally:
                self._actions.task_done()

    async def _closer(self) -> None:
        """Close doors whose time is up (the nftables backend's kernel does it too)."""
        while True:
            deadline = self.keeper.next_deadline()
            self._closer_wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closer_wake.wait(), timeout)
            for key in self.keeper.due(self.clock()):
                held = self._grants.pop(key, None)
                if held is None:
                    continue
                grant, backend = held
                log.info("closing %s/%d for %s", grant.proto, grant.port, grant.address)
                if not backend.closes_itself:
                    self._actions.put_nowait(("close", grant, backend, 0.0))

    async def run(self, stop: asyncio.Event) -> None:
        await self.backend.setup()
        worker = asyncio.create_task(self._run_actions())
        closer = asyncio.create_task(self._closer())
        stopper = asyncio.create_task(stop.wait())
        try:
            while True:
                feeder = asyncio.create_task(self._feed())
                restart = asyncio.create_task(self._restart.wait())
                waiting = {feeder, stopper, restart}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                restart.cancel()
                if feeder in done:
                    feeder.result()  # a capture or follow error ends the daemon
                    break
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
                if stopper in done:
                    break
                self._restart.clear()
                try:
                    await self.backend.setup()  # a reload may name another table
                except AioknockError as exc:
                    self._revert(exc)
        finally:
            closer.cancel()
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closer
            try:
                self._close_on_stop()
                await self._actions.join()  # each command is bounded by ACTION_TIMEOUT
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            log.info("stopped: %d packets, %d accepted, %d refused, %d ignored",
                     self.counts["packets"], self.counts["accept"], self.counts["refuse"],
                     self.counts["ignore"])  # fmt: skip

    def _close_on_stop(self) -> None:
        """Doors opened by commands would stay open for good once the daemon is gone:
        close them now (after the opens still queued). nftables doors keep their kernel
        timeouts instead."""
        for key, (grant, backend) in list(self._grants.items()):
            if backend.closes_itself:
                continue
            del self._grants[key]
            log.info("closing %s/%d for %s: the daemon is stopping", grant.proto, grant.port,
                     grant.address)  # fmt: skip
            self._actions.put_nowait(("close", grant, backend, 0.0))

    async def _feed(self) -> None:
        async for batch in self.packets():
            for packet in batch:
                await self.handle(packet)


async def serve(settings: DaemonSettings, reload: Callable[[], DaemonSettings]) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP re-reads the configuration."""
    loop = asyncio.get_running_loop()
    daemon = KnockDaemon(settings)
    stop = asyncio.Event()

    def on_hup() -> None:
        try:
            daemon.reload(reload())
        except AioknockError as exc:
            log.error("reload failed, keeping the old configuration: %s", exc)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        await daemon.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0
