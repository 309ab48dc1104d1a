"""``aioknock daemon``: the asyncio shell around the sans-I/O engine.

It only moves data: packets from a followed log or a capture into the engine, the
engine's actions out (log lines, records of used knocks, firewall commands run one
at a time by a worker), results back in, and a timer for the engine's deadlines.
What any of it means is decided in ``aioknock.daemon.engine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import socket
import stat
import time
import traceback
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..codec import spa
from ..config.settings import DaemonSettings
from ..config.values import placed
from ..daemon.encoded import EncodedKnocks
from ..daemon.engine import Engine, FirewallAction, Log, Open, Policy, Record, wanted_ports
from ..daemon.fwknopd import SpaPackets
from ..daemon.knockd import SequenceDoors
from ..daemon.logreader import KMSG
from ..daemon.packet import Packet, unmapped
from ..daemon.recognizer import Recognizer
from ..daemon.replay import ReplayMemory
from ..daemon.sealedknocks import SealedKnocks
from ..errors import AioknockError, ConfigError
from ..logs import get_logger
from .actions import ActionError, Backend, CommandBackend, NftBackend
from .follow import Follower
from .kmsg import Kmsg
from .replayfile import ReplayFile
from .sniffer import Sniffer

log = get_logger("aioknock.daemon")
STOP_WAIT = 4.5  # seconds the stop waits for queued firewall commands, at most
DATAGRAM_BATCH = 64  # datagrams read from the SPA socket per wake-up, at most


def make_recognizers(settings: DaemonSettings, replays: ReplayMemory) -> list[Recognizer]:
    """One recognizer per kind of knock the settings ask for."""
    timeout, limit = settings.knock_timeout, settings.max_sources
    recognizers: list[Recognizer] = []
    if settings.encoded and settings.protocol == "sealed":
        recognizers.append(SealedKnocks(
            settings.sealed_codec(settings.server_id), knock_timeout=timeout, max_sources=limit,
            replays=replays, time_tolerance=settings.time_tolerance, allow_nat=settings.allow_nat,
        ))  # fmt: skip
    elif settings.encoded:
        recognizers.append(EncodedKnocks(
            settings.codec, knock_timeout=timeout, max_sources=limit, replays=replays,
            time_tolerance=settings.time_tolerance, allow_nat=settings.allow_nat,
        ))  # fmt: skip
    if settings.doors:
        recognizers.append(SequenceDoors(settings.doors, knock_timeout=timeout, max_sources=limit))
    if settings.stanzas:
        recognizers.append(
            SpaPackets(
                settings.stanzas,
                port=settings.spa_server_port,
                max_age=settings.max_spa_packet_age,
                replays=replays,
            )
        )
    return recognizers


def make_backend(settings: DaemonSettings) -> Backend:
    if settings.backend == "nftables":
        return NftBackend(settings.nft_table, settings.nft_mark, test=settings.test)
    assert settings.open is not None  # the settings refuse backend = command without it
    return CommandBackend(settings.open, settings.close, test=settings.test)


def check_paths(settings: DaemonSettings) -> None:
    """What the settings name outside themselves: the log to follow is a regular file (or
    not there yet), the interface exists, the commands are programs that can run. A
    reload that names something unusable must be refused before anything changes."""
    if settings.runmode == "file" and settings.logfile != KMSG:
        _check_logfile(settings.logfile)
    if settings.runmode == "network" and settings.interface:
        try:
            socket.if_nametoindex(settings.interface)
        except OSError:
            raise ConfigError("no such network interface", key="interface") from None
    for key, command in (("open", settings.open), ("close", settings.close)):
        if command is not None and settings.backend == "command":
            _check_program(command.argv[0], key)


def _check_logfile(path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return  # waited for
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                          key="logfile") from None  # fmt: skip
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file (a directory, a FIFO?)", key="logfile")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"cannot read {path}: permission denied", key="logfile")


def _check_program(program: str, key: str) -> None:
    if shutil.which(program) is None:
        where = "" if "/" in program else " on PATH"
        raise ConfigError(f"no program {program!r}{where} that can run", key=key)


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


def capture_ports(settings: DaemonSettings, wanted: tuple[list[int], list[int]]) -> tuple[
    list[int], list[int]]:  # fmt: skip
    """The ports to capture: with ``spa_listen`` the SPA port is read from its socket
    alone (captured as well, each packet would come twice, the second a replay)."""
    tcp, udp = wanted
    if settings.spa_listen:
        udp = [port for port in udp if port != settings.spa_server_port]
    return tcp, udp


class SpaSocket:
    """A UDP socket bound to ``spa_listen`` (fwknopd -U): SPA without capture rights."""

    def __init__(self, address: str, port: int, receive: Callable[[list[Packet], int], None],
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.key = (address, port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((address, port))
        except OSError as exc:
            self._sock.close()
            raise ConfigError(f"cannot bind udp {address} port {port}: {exc.strerror}",
                              key="spa_listen") from None  # fmt: skip
        self._sock.setblocking(False)
        self._receive, self._clock, self._port = receive, clock, port
        self._reading = False

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)
        self._reading = True
        log.info("receiving SPA on udp %s port %d", *self.key)

    def _read(self) -> None:
        packets: list[Packet] = []
        now = self._clock()
        for _ in range(DATAGRAM_BATCH):
            try:
                data, addr = self._sock.recvfrom(spa.MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued for the socket: not a packet
                log.debug("SPA socket: %s", exc.strerror)
                continue
            packets.append(Packet(now, _unmapped(addr[0]), self._port, "udp", addr[1], "", data))
        if packets:
            self._receive(packets, len(packets))

    def close(self) -> None:
        if self._reading:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()


def _unmapped(address: str) -> str:
    """A dual-stack socket's ::ffff:a.b.c.d as a.b.c.d."""
    try:
        return str(unmapped(ipaddress.ip_address(address)))
    except ValueError:
        return address


@dataclass(frozen=True, slots=True)
class _Configuration:
    """Everything one set of settings needs, built before any of it is used."""

    settings: DaemonSettings
    recognizers: list[Recognizer]
    backend: Backend
    backend_id: int
    replay: ReplayFile | None

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(s.duration, s.cooldown, self.backend_id, self.backend.closes_itself,
                      refuse_unrecorded=s.replay_failure == "refuse")  # fmt: skip

    @property
    def source(self) -> tuple[str, str]:
        """Which stream of packets it reads: a reload to the same one keeps reading it."""
        if self.settings.runmode == "file":
            return ("file", self.settings.logfile)
        return ("network", self.settings.interface)


class KnockDaemon:
    def __init__(self, settings: DaemonSettings, *, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._ids = itertools.count()
        self._backends: dict[int, Backend] = {}
        self._inflight: Counter[int] = Counter()  # firewall actions queued, per backend
        self.replay: ReplayFile | None = None
        replays = ReplayMemory()
        self._current = self._prepare(settings, replays)
        self._pending: _Configuration | None = None  # a reload waiting for its set-up
        self._running = False
        self.engine = Engine(self._current.policy, self._current.recognizers, replays)
        self._use(self._current)
        if self.replay is not None:
            replays.load(self.replay.digests)
        # Firewall actions wait here for the one worker that runs them in order.
        self._queue: asyncio.Queue[FirewallAction] = asyncio.Queue()
        self._undone: list[FirewallAction] = []  # queued or running, in order
        self._timer_wake = asyncio.Event()
        self._restart = asyncio.Event()
        self._started = False
        self._sniffer: Sniffer | None = None
        self._capture_ready: Sniffer | None = None  # opened by a reload, for the next feed
        self._announced = False  # "capturing on": said once the capture socket is open
        self._feeding: tuple[tuple[str, str], asyncio.Task[None]] | None = None
        self._spa_socket: SpaSocket | None = None
        self._spa_ready: SpaSocket | None = None  # bound by a reload, for the switch

    @property
    def settings(self) -> DaemonSettings:
        return self._current.settings

    @property
    def counts(self) -> dict[str, int]:
        return self.engine.counts

    # ------------------------------------------------------------- configurations

    def _prepare(self, settings: DaemonSettings, replays: ReplayMemory) -> _Configuration:
        """Everything is built before anything is replaced: a reload that fails half-way
        must leave the old configuration whole."""
        try:
            check_paths(settings)
        except ConfigError as exc:
            raise placed(exc, settings.origins) from None
        recognizers = make_recognizers(settings, replays)
        backend = make_backend(settings)
        replay, write = self.replay, not settings.test
        if not settings.replay_file:
            replay = None
        elif replay is None or replay.path != settings.replay_file or replay.write != write:
            # -test judges knocks but must not use them up for the real daemon.
            try:
                replay = ReplayFile.load(settings.replay_file, replays.limit, write=write)
            except ConfigError as exc:
                raise placed(exc, settings.origins) from None
        return _Configuration(settings, recognizers, backend, next(self._ids), replay)

    def _use(self, conf: _Configuration) -> None:
        self._current = conf
        self._backends[conf.backend_id] = conf.backend
        self.replay = conf.replay

    def reload(self, settings: DaemonSettings) -> None:
        """New settings, checked and built now (ConfigError: the old ones go on). A
        running daemon sets their firewall backend up first, and switches only if that
        worked; knocks in progress start again, open doors keep their deadlines."""
        conf = self._prepare(settings, self.engine.replays)
        if self._running:
            self._pending = conf
            self._restart.set()
        else:  # run() sets the backend up before anything uses it
            self._switch(conf)

    def _switch(self, conf: _Configuration) -> None:
        older = self.replay
        self._use(conf)
        self.engine.reload(conf.policy, conf.recognizers)
        if self.replay is not None and self.replay is not older:
            # Another file: it learns what this daemon remembers, and the reverse; what
            # this daemon accepted stays the newest (the first forgotten when full).
            memory = self.engine.replays
            memory.load([*self.replay.digests, *memory.items()])
            self.replay.replace(memory.items())
        self._prune_backends()
        log.info("configuration reloaded")

    async def _reload_pending(self) -> None:
        """Set the waiting configuration's backend (and any new capture) up; switch to it
        if that worked."""
        conf, self._pending = self._pending, None
        if conf is None:
            return
        capture: Sniffer | None = None
        try:
            await conf.backend.setup()  # a reload may name another table
            capture = self._new_capture(conf)
            listener = self._new_spa_socket(conf.settings)
        except AioknockError as exc:
            if capture is not None:
                capture.close()
            log.error("reload failed, keeping the old configuration: %s", exc)
            return
        if self._pending is not None:  # a newer one came meanwhile: that one is next
            for opened in (capture, listener):
                if opened is not None:
                    opened.close()
            return
        self._capture_ready, self._spa_ready = capture, listener
        self._switch(conf)

    def _new_spa_socket(self, settings: DaemonSettings) -> SpaSocket | None:
        """The SPA socket the settings ask for, bound now (None: none, or the one open)."""
        if not settings.spa_listen or not settings.stanzas:
            return None
        key = (settings.spa_listen, settings.spa_server_port)
        if self._spa_socket is not None and self._spa_socket.key == key:
            return None
        return SpaSocket(*key, self._receive, self.clock)

    def _use_spa_socket(self, settings: DaemonSettings) -> None:
        """Start the socket made for these settings; close one they no longer want."""
        ready, self._spa_ready = self._spa_ready, None
        wanted = bool(settings.spa_listen and settings.stanzas)
        current = self._spa_socket
        if ready is not None or (current is not None and not wanted):
            if current is not None:
                current.close()
            self._spa_socket = ready
            if ready is not None:
                ready.start()

    def _new_capture(self, conf: _Configuration) -> Sniffer | None:
        """A capture on another interface is opened before the switch: if it cannot be,
        the old configuration goes on."""
        if conf.settings.runmode != "network" or conf.source == self._current.source:
            return None
        tcp, udp = capture_ports(conf.settings, wanted_ports(conf.recognizers))
        return Sniffer(tcp, udp, interface=conf.settings.interface or None, clock=self.clock)

    def _prune_backends(self) -> None:
        """Forget backends that no open door and no queued action needs any more."""
        keep = self.engine.backends_in_use()
        for backend_id in list(self._backends):
            if backend_id not in keep and not self._inflight.get(backend_id):
                del self._backends[backend_id]

    # -------------------------------------------------------------------- actions

    def _perform(self) -> None:
        """Carry out what the engine decided, in order (and what that leads to)."""
        while actions := self.engine.actions():
            for action in actions:
                if isinstance(action, Log):
                    log.log(action.level, "%s", action.message)
                elif isinstance(action, Record):
                    # Small and local (a few a minute): written and synced on the loop.
                    error = self.replay.add(action.digest) if self.replay is not None else None
                    self.engine.recorded(action, error)
                else:
                    self._inflight[action.backend] += 1
                    self._undone.append(action)
                    self._queue.put_nowait(action)
                    self._timer_wake.set()

    async def _work(self) -> None:
        """Run firewall actions one at a time, in the order decided: a slow command (up
        to ACTION_TIMEOUT) must not stop packets being read, and a door's close must
        never overtake its open."""
        while True:
            action = await self._queue.get()
            try:
                error = await self._run_action(action)
                self.engine.action_done(action, error)
                self._perform()  # before task_done: what it queues is waited for too
            finally:
                self._undone.remove(action)
                self._inflight[action.backend] -= 1
                if not self._inflight[action.backend]:
                    del self._inflight[action.backend]
                self._queue.task_done()

    async def _run_action(self, action: FirewallAction) -> str | None:
        """Run one firewall action; why it failed, or None."""
        backend = self._backends[action.backend]
        try:
            if isinstance(action, Open):
                await backend.open(action.door, action.duration)
            else:
                await backend.close(action.door, action.duration)
        except ActionError as exc:
            return str(exc)
        except Exception as exc:  # a bug: said in one line, and the daemon goes on
            log.debug("%s", "".join(traceback.format_exception(exc)).rstrip())
            return f"internal error: {type(exc).__name__}: {exc}"
        return None

    async def _timer(self) -> None:
        """Call the engine back when its next deadline comes (doors to close)."""
        while True:
            deadline = self.engine.get_timer()
            self._timer_wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), timeout)
            self.engine.handle_timer(self.clock())
            self._perform()

    # -------------------------------------------------------------------- packets

    async def _lines(self, conf: _Configuration) -> AsyncIterator[list[str]]:
        settings = conf.settings
        # from_start is for the first start: after a reload, reading the log again
        # would judge every knock in it a second time.
        from_start, self._started = settings.from_start and not self._started, True
        source: Follower | Kmsg
        if settings.logfile == KMSG:
            source = Kmsg(from_start=from_start)
        else:
            hint = (f" (no syslog daemon? logfile = {KMSG} reads the kernel log directly)"
                    if settings.log_format.name == "kernel" else "")  # fmt: skip
            source = Follower(settings.logfile, from_start=from_start, missing_hint=hint)
        async for lines in source.lines():
            yield lines

    async def _read_file(self, conf: _Configuration) -> None:
        async for lines in self._lines(conf):
            if self._current.source != conf.source:
                return  # switched to another file or to capture: that one reads now
            reader, now = self.settings.reader, self.clock()  # the reader of the day
            assert reader is not None
            packets = [p for line in lines if (p := reader.decode(line, now)) is not None]
            self._receive(packets, len(packets))

    async def _capture(self, conf: _Configuration) -> None:
        sniffer, self._capture_ready = self._capture_ready, None
        if sniffer is None:
            tcp, udp = capture_ports(conf.settings, self.engine.wanted())
            interface = conf.settings.interface or None
            sniffer = Sniffer(tcp, udp, interface=interface, clock=self.clock)
        self._sniffer = sniffer
        if not self._announced:  # now that the socket is open: a knock from now is seen
            log.info("capturing on %s", conf.settings.interface or "all interfaces")
            self._announced = True
        local = LocalAddresses()
        try:
            async for batch in sniffer.batches():
                self._receive([p for p in batch if not p.dst or local(p.dst, p.now)], len(batch))
        finally:
            self._sniffer = None
            sniffer.close()

    def _receive(self, packets: list[Packet], seen: int) -> None:
        """One batch of packets (``seen``: how many were read, ours or not)."""
        if len(packets) < seen:
            log.debug("ignored %d packets not addressed to this host", seen - len(packets))
        before = self.engine.get_timer()
        for packet in packets:
            self.engine.receive(packet)
        after = self.engine.get_timer()
        if after is not None and (before is None or after < before):
            self._timer_wake.set()  # a knock begun: its expiry is due before what _timer waits for
        self._perform()

    def _feed(self) -> asyncio.Task[None]:
        """The task that reads the current configuration's packets: the one already
        running when it reads the same file or interface (only its reader or capture
        filter changes), else a new one."""
        conf = self._current
        reused = self._feeding is not None and self._feeding[0] == conf.source
        if self._feeding is not None and reused:
            task = self._feeding[1]
            if self._sniffer is not None:
                self._sniffer.update_filter(*capture_ports(conf.settings, self.engine.wanted()))
        else:
            if self._feeding is not None:
                self._feeding[1].cancel()
            reading = self._read_file if conf.settings.runmode == "file" else self._capture
            task = asyncio.create_task(reading(conf))
            self._feeding = (conf.source, task)
        self._use_spa_socket(conf.settings)
        self._announce(conf.settings, reused)
        return task

    def _announce(self, settings: DaemonSettings, reused: bool) -> None:
        if settings.runmode == "network":
            # A new capture says so once its socket is open: a knock from then on is seen.
            self._announced = reused
            if reused:
                log.info("capturing on %s", settings.interface or "all interfaces")
        elif settings.logfile == KMSG:
            log.info("reading the kernel log %s (%s lines)", KMSG, settings.log_format)
        else:
            log.info("following %s (%s lines)", settings.logfile, settings.log_format)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        self._running = True  # from now on a reload waits for its backend's set-up
        try:
            await self._current.backend.setup()
            self._spa_ready = self._new_spa_socket(self.settings)
        except BaseException:
            self._running = False
            raise
        EncodedKnocks.warn_exposure(log, self.engine.recognizers)  # once, at start
        worker = asyncio.create_task(self._work())
        timer = asyncio.create_task(self._timer())
        stopper = asyncio.create_task(stop.wait())
        try:
            await self._serve(stopper)
        finally:
            if self._feeding is not None:
                await _cancelled(self._feeding[1])
            for opened in (self._spa_socket, self._spa_ready):
                if opened is not None:
                    opened.close()
            self._spa_socket = self._spa_ready = None
            await _cancelled(timer)
            stopper.cancel()
            try:
                self.engine.stop()
                self._perform()
                await self._finish_actions()
            finally:
                await _cancelled(worker)
                self._running = False
            c = self.counts
            log.info("stopped: %d packets, %d accepted, %d refused, %d ignored",
                     c["packets"], c["accept"], c["refuse"], c["ignore"])  # fmt: skip

    async def _finish_actions(self) -> None:
        """Let the queued firewall actions run, for STOP_WAIT seconds at most: a hung
        command (each is killed after ACTION_TIMEOUT) must not hold the stop."""
        try:
            await asyncio.wait_for(self._queue.join(), STOP_WAIT)
        except TimeoutError:
            left = "; ".join(f"{type(a).__name__.lower()} {a.door}" for a in self._undone)
            log.error("stopping: firewall commands still running after %g s, not done: %s",
                      STOP_WAIT, left)  # fmt: skip

    async def _serve(self, stopper: asyncio.Task[bool]) -> None:
        """Read packets until stopped; on a reload, set the new backend up first."""
        while True:
            feeder = self._feed()
            restart = asyncio.create_task(self._restart.wait())
            done, _ = await asyncio.wait({feeder, stopper, restart},
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            restart.cancel()
            if feeder in done:
                feeder.result()  # a capture or follow error ends the daemon
                return
            if stopper in done:
                return
            self._restart.clear()
            await self._reload_pending()


async def _cancelled(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
