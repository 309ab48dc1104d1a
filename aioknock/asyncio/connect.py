"""Knock, then connect: ``aioknock connect HOST PORT``, an ssh ``ProxyCommand``.

Knocking and connecting as two commands (``aioknock run host && sleep 1 && ssh host``)
fails in practice: the knock goes out over IPv4 and ssh connects over IPv6, a fixed
sleep is too short on a slow link, and nothing says which step failed. Here the
connection goes to the very address that was knocked, is retried until the door opens,
and then carries stdin and stdout byte for byte, half-closes included. Every failure is
one line on stderr naming its step; stdout carries nothing but the connection's bytes.

No event loop: the knock is ``oneshot``'s, the connection attempts and the relay wait in
``poll()`` (which also takes a regular file or ``/dev/null`` as stdin or stdout: always
ready). One connection needs nothing more, and asyncio with its ssl and uvloop would be
most of the command's start (ssh waits for it at every login).
"""

from __future__ import annotations

import errno
import math
import os
import select
import socket
import stat
import time
from collections.abc import Callable

from ..config.loader import CLI
from ..config.settings import ClientSettings
from ..config.values import override, placed
from ..errors import AioknockError, ConfigError
from ..logs import get_logger
from .hostknock import KnockResult
from .oneshot import knock_one

log = get_logger("aioknock.connect")

EXIT_OK, EXIT_FAILED = 0, 1  # configuration errors raise ConfigError: the CLI's 2
CHUNK = 256 * 1024  # bytes per read: large transfers move in few system calls
FIRST_GAP = 0.05  # seconds between the first connection attempts; doubles up to MAX_GAP
MAX_GAP = 1.0
IN_FLIGHT = 8  # connection attempts at once: sockets a long verify_timeout may hold
PORT_ARGUMENT = "connect's PORT"
READY = select.POLLIN | select.POLLHUP | select.POLLERR  # worth a read: data, EOF, error
WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR  # worth a write (or its error)


class RelayError(AioknockError):
    """The relay stopped before both directions ended; ``str()`` is the whole line."""


class Relayed:
    """Bytes carried each way, for the debug line at the end."""

    __slots__ = ("down", "up")

    def __init__(self) -> None:
        self.up = 0  # stdin -> connection
        self.down = 0  # connection -> stdout


def connect(
    settings: ClientSettings, host: str, port: int, *, stdin_fd: int = 0, stdout_fd: int = 1
) -> int:
    """Knock ``host`` as its settings say, connect to ``port`` on the address knocked,
    and relay ``stdin_fd``/``stdout_fd`` to the connection until both directions end.

    Returns 0, or 1 after one error line (``aioknock.connect`` logger) naming the step
    that failed: the resolve, the knock, the port still closed ``verify_timeout``
    seconds after the knock, or the connection lost. The knock asks for ``port`` unless
    the host's own settings name another one (for SPA, ``access`` defaults to tcp/PORT).
    Raises ConfigError for settings that cannot make this knock. The steps are logged
    at debug level: as a ProxyCommand, it has nothing to say when all goes well.
    """
    own = knock_settings(settings, host, port)
    _hold_standard_fds()
    result = knock_one(host, own.replace(verify=0) if own.verify else own)
    if not result.ok:
        # No address: the name did not resolve, and the error says so.
        log.error("%s", result.error if not result.address else f"knock failed: {result.error}")
        return EXIT_FAILED
    _report_knock(result, own)
    where = host if host == result.address else f"{host} ({result.address})"
    started = time.monotonic()
    try:
        sock, attempts = open_connection(result.address, port, own.verify_timeout)
    except OSError as exc:
        log.error("%s: port %d still closed %g s after the knock (%s)", where, port,
                  own.verify_timeout, _why(exc))  # fmt: skip
        return EXIT_FAILED
    log.debug("%s: port %d open after %d connection attempts in %.3f s", where, port,
              attempts, time.monotonic() - started)  # fmt: skip
    counts = Relayed()
    with sock:
        try:
            relay(sock, stdin_fd, stdout_fd, counts)
        except RelayError as exc:
            log.error("%s port %d: %s", where, port, exc)
            return EXIT_FAILED
    log.debug("%s port %d: closed; relayed %d bytes out, %d bytes in, in %.3f s", where, port,
              counts.up, counts.down, time.monotonic() - started)  # fmt: skip
    return EXIT_OK


def _hold_standard_fds() -> None:
    """/dev/null on a closed stdin, stdout or stderr (``connect ... <&-``): else the
    first socket opened would take the number, and the relay would read its own
    connection as stdin."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.close(null)


def knock_settings(settings: ClientSettings, host: str, port: int) -> ClientSettings:
    """The settings ``host`` is knocked with: its own (``<host>`` blocks), asking for
    ``port`` unless they, or the command line, name the port to open (ssh's ``-p 2222``
    should open 2222, whatever the file's top level says)."""
    if not 0 < port < 65536:
        raise ConfigError(f"expected a port 1-65535, got {port}", source=PORT_ARGUMENT)
    own = settings.for_host(host)
    by_block = own.origin("port") != settings.origin("port")
    if not by_block and settings.origin("port") != CLI:
        own = override(own, {"port": port}, PORT_ARGUMENT)
    if own.logtofile:
        raise ConfigError("connect sends its knock; unset logtofile", key="logtofile")
    try:
        own.check_sendable()
    except ConfigError as exc:
        raise placed(exc, own.origins) from None
    return own


def _report_knock(result: KnockResult, settings: ClientSettings) -> None:
    if settings.protocol == "spa":
        access = ",".join(f"{proto}/{port}" for proto, port in settings.spa_access)
        log.debug("SPA packet for %s (%s) to %s: %d bytes to udp port %d", result.host, access,
                  result.address, len(result.payload), settings.spa_server_port)  # fmt: skip
    else:
        ports = " ".join(map(str, result.ports))
        log.debug("knock for %s (%s): %s", result.host, result.address, ports)
    for a in result.attempts:
        log.debug("%s port %d: %s", result.host, a.port, a.outcome)


# ------------------------------------------------------------------ connecting


def open_connection(address: str, port: int, within: float) -> tuple[socket.socket, int]:
    """A connected non-blocking socket to ``address`` (numeric) ``port``, and the
    attempts it took.

    A new attempt starts FIRST_GAP seconds after the first, then at doubling gaps up to
    MAX_GAP, while the earlier ones stay in flight (at most IN_FLIGHT, the oldest given
    up first); the first to connect wins. So a SYN the firewall dropped just before the
    door opened costs FIRST_GAP, not the kernel's one-second retransmission, and a slow
    link's handshake is not cut short. Raises the last attempt's OSError (TimeoutError
    if none answered) once ``within`` seconds have passed.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = time.monotonic() + within
    pending: dict[int, socket.socket] = {}  # by fd, oldest first
    poller = select.poll()
    error: OSError = TimeoutError("no answer")
    gap, next_at, attempts = FIRST_GAP, time.monotonic(), 0
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_at:
                if len(pending) >= IN_FLIGHT:  # given up before the next one starts
                    _forget(poller, pending, next(iter(pending))).close()
                try:
                    sock = _attempt(family, address, port)
                except OSError as exc:  # refused at once (no route, no address)
                    error = exc
                else:
                    pending[sock.fileno()] = sock
                    poller.register(sock, select.POLLOUT)
                attempts += 1
                next_at, gap = now + gap, min(2 * gap, MAX_GAP)
            wait = max(0.0, min(next_at, deadline) - time.monotonic())
            for fd, _ in poller.poll(math.ceil(wait * 1000)):
                sock = _forget(poller, pending, fd)
                if not (err := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)):
                    return sock, attempts
                sock.close()
                error = OSError(err, os.strerror(err))  # ECONNREFUSED: ConnectionRefusedError
        raise error
    finally:
        for sock in pending.values():
            sock.close()


def _forget(poller: select.poll, pending: dict[int, socket.socket], fd: int) -> socket.socket:
    poller.unregister(fd)
    return pending.pop(fd)


def _attempt(family: int, address: str, port: int) -> socket.socket:
    """A socket whose connect has begun (non-blocking: it is done when writable)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Keystrokes go out one by one as they come: not held back for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((address, port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------- relay


def relay(
    sock: socket.socket, stdin_fd: int, stdout_fd: int, counts: Relayed | None = None
) -> None:
    """Copy ``stdin_fd`` to ``sock`` and ``sock`` to ``stdout_fd`` until both directions
    have ended: EOF on stdin shuts down the socket's sending side, EOF from the socket
    ends stdout (``/dev/null`` takes its place), and each direction goes on alone after
    the other's end. Raises RelayError when either side fails; the other stops too.

    The fds (pipes, sockets, ttys, regular files) are switched to non-blocking for the
    relay and back afterwards: ``poll()`` waits for them instead of polling in a loop.
    """
    sock.setblocking(False)
    with _NonBlocking(stdin_fd, stdout_fd) as restore:
        _Relay(sock, stdin_fd, stdout_fd, counts or Relayed(), restore).run()


class _Relay:
    """Both directions' state: what was read and not yet written, and which ended."""

    def __init__(
        self, sock: socket.socket, stdin_fd: int, stdout_fd: int, counts: Relayed,
        restore: Callable[[int], None],
    ) -> None:  # fmt: skip
        self.sock, self.stdin_fd, self.stdout_fd = sock, stdin_fd, stdout_fd
        self.counts, self.restore = counts, restore
        self.up = memoryview(b"")  # from stdin, for the connection
        self.down = memoryview(b"")  # from the connection, for stdout
        self.up_open = self.down_open = True  # not yet at EOF (and shut down)

    def run(self) -> None:
        poller = select.poll()
        while self.up_open or self.down_open:
            wanted = self._wanted()
            for fd, mask in wanted.items():
                poller.register(fd, mask)  # again: changes the mask
            for fd, events in poller.poll():
                if events & select.POLLNVAL:
                    raise RelayError(f"fd {fd} is not open")
                self._serve(fd, events & wanted.get(fd, 0))
            for fd in wanted:
                poller.unregister(fd)

    def _wanted(self) -> dict[int, int]:
        """The events each fd is waited for (stdin and stdout may be one fd, as may be
        the socket and either of them)."""
        want: dict[int, int] = {}

        def add(fd: int, mask: int) -> None:
            want[fd] = want.get(fd, 0) | mask

        if self.up:
            add(self.sock.fileno(), WRITABLE)
        elif self.up_open:
            add(self.stdin_fd, READY)
        if self.down:
            add(self.stdout_fd, WRITABLE)
        elif self.down_open:
            add(self.sock.fileno(), READY)
        return want

    def _serve(self, fd: int, events: int) -> None:
        sock_fd = self.sock.fileno()
        if fd == self.stdin_fd and events & READY and self.up_open and not self.up:
            self._read_stdin()
        if fd == sock_fd and events & WRITABLE and self.up:
            self._send()
        if fd == sock_fd and events & READY and self.down_open and not self.down:
            self._receive()
        if fd == self.stdout_fd and events & WRITABLE and self.down:
            self._write_stdout()

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise RelayError(f"cannot read stdin: {_why(exc)}") from None
        if data:
            self.up = memoryview(data)
            return
        self.up_open = False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _lost(exc) from None

    def _send(self) -> None:
        try:
            sent = self.sock.send(self.up)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise _lost(exc) from None
        self.up = self.up[sent:]
        self.counts.up += sent

    def _receive(self) -> None:
        try:
            data = self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise _lost(exc) from None
        if data:
            self.down = memoryview(data)
            return
        self.down_open = False
        self.restore(self.stdout_fd)
        _end_output(self.stdout_fd, still_read=self.up_open and self.stdin_fd == self.stdout_fd)

    def _write_stdout(self) -> None:
        try:
            written = os.write(self.stdout_fd, self.down)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            raise RelayError(f"cannot write stdout: {_why(exc)}") from None
        self.down = self.down[written:]
        self.counts.down += written


def _why(exc: OSError) -> str:
    """The system's words for the error ("Connection refused"), whatever the message
    around it."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _lost(exc: OSError) -> RelayError:
    return RelayError(f"connection lost: {_why(exc)}")


def _end_output(fd: int, *, still_read: bool = False) -> None:
    """EOF for whoever reads ``fd``. A socket is shut down (it may be stdin too); then
    /dev/null takes the fd's place, which drops this process's hold on the pipe or
    terminal and keeps the number taken: nothing opened later lands on stdout. Not
    when ``still_read``: stdin is that very fd, and goes on."""
    _shut_down(fd)
    if not still_read:
        _to_devnull(fd)


def _shut_down(fd: int) -> None:
    """SHUT_WR if ``fd`` is a socket (errors: nothing more to end)."""
    try:
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            copy = os.dup(fd)
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                raise
            with sock:
                sock.shutdown(socket.SHUT_WR)
    except OSError:
        return


def _to_devnull(fd: int) -> None:
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except OSError:
        return  # fd closed already: nothing to take its place


class _NonBlocking:
    """The fds non-blocking, each restored at the end or when the function ``with`` gives
    is called for it: a terminal or a pipe may be shared with the shell that started this
    process. A file another of the fds is also open on (stdin and stdout on one terminal
    or socket) keeps its mode until the last of them: the flag belongs to both. (A class:
    contextlib would cost ~3 M instructions of the start.)"""

    def __init__(self, *fds: int) -> None:
        self.saved = {fd: (os.get_blocking(fd), _identity(fd)) for fd in fds}

    def __enter__(self) -> Callable[[int], None]:
        try:
            for fd in self.saved:
                os.set_blocking(fd, False)
        except BaseException:
            self.__exit__()
            raise
        return self.restore

    def __exit__(self, *_: object) -> None:
        for fd in list(self.saved):
            self.restore(fd)

    def restore(self, fd: int) -> None:
        if fd not in self.saved:
            return
        blocking, identity = self.saved.pop(fd)
        if all(other != identity for _, other in self.saved.values()):
            try:
                os.set_blocking(fd, blocking)
            except OSError:
                return  # closed already


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino
