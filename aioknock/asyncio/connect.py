"""Knock, then connect: ``aioknock connect HOST PORT``, an ssh ``ProxyCommand``.

Knocking and connecting as two commands (``aioknock run host && sleep 1 && ssh host``)
fails in practice: the knock goes out over IPv4 and ssh connects over IPv6, a fixed
sleep is too short on a slow link, and nothing says which step failed. Here the
connection goes to the very address that was knocked, is retried until the door opens,
and then carries stdin and stdout byte for byte, half-closes included. Every failure is
one line on stderr naming its step; stdout carries nothing but the connection's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..config.loader import CLI
from ..config.settings import ClientSettings
from ..config.values import override, placed
from ..errors import AioknockError, ConfigError
from .fleet import KnockResult, knock

log = logging.getLogger("aioknock.connect")

EXIT_OK, EXIT_FAILED = 0, 1  # configuration errors raise ConfigError: the CLI's 2
CHUNK = 256 * 1024  # bytes per read: large transfers move in few system calls
FIRST_GAP = 0.05  # seconds between the first connection attempts; doubles up to MAX_GAP
MAX_GAP = 1.0
IN_FLIGHT = 8  # connection attempts at once: sockets a long verify_timeout may hold
PORT_ARGUMENT = "connect's PORT"


class RelayError(AioknockError):
    """The relay stopped before both directions ended; ``str()`` is the whole line."""


@dataclass(slots=True)
class Relayed:
    """Bytes carried each way, for the debug line at the end."""

    up: int = 0  # stdin -> connection
    down: int = 0  # connection -> stdout


async def connect(
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
    result = await knock(host, own, verify=0)
    if not result.ok:
        # No address: the name did not resolve, and the error says so.
        log.error("%s", result.error if not result.address else f"knock failed: {result.error}")
        return EXIT_FAILED
    _report_knock(result, own)
    where = host if host == result.address else f"{host} ({result.address})"
    started = time.monotonic()
    try:
        sock, attempts = await open_connection(result.address, port, own.verify_timeout)
    except OSError as exc:
        log.error("%s: port %d still closed %g s after the knock (%s)", where, port,
                  own.verify_timeout, _why(exc))  # fmt: skip
        return EXIT_FAILED
    log.debug("%s: port %d open after %d connection attempts in %.3f s", where, port,
              attempts, time.monotonic() - started)  # fmt: skip
    counts = Relayed()
    with sock:
        try:
            await relay(sock, stdin_fd, stdout_fd, counts)
        except RelayError as exc:
            log.error("%s port %d: %s", where, port, exc)
            return EXIT_FAILED
    log.debug("%s port %d: closed; relayed %d bytes out, %d bytes in, in %.3f s", where, port,
              counts.up, counts.down, time.monotonic() - started)  # fmt: skip
    return EXIT_OK


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


async def open_connection(address: str, port: int, within: float) -> tuple[socket.socket, int]:
    """A connected socket to ``address`` (numeric) ``port``, and the attempts it took.

    A new attempt starts FIRST_GAP seconds after the first, then at doubling gaps up to
    MAX_GAP, while the earlier ones stay in flight (at most IN_FLIGHT, the oldest given
    up first); the first to connect wins. So a SYN the firewall dropped just before the
    door opened costs FIRST_GAP, not the kernel's one-second retransmission, and a slow
    link's handshake is not cut short. Raises the last attempt's OSError (TimeoutError
    if none answered) once ``within`` seconds have passed.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = loop.time() + within
    pending: list[asyncio.Task[socket.socket]] = []  # oldest first
    error: OSError = TimeoutError("no answer")
    gap, next_at, attempts = FIRST_GAP, loop.time(), 0
    try:
        while (now := loop.time()) < deadline:
            if now >= next_at:
                if len(pending) >= IN_FLIGHT:  # given up before the next one starts
                    _give_up(pending.pop(0))
                pending.append(asyncio.create_task(_attempt(family, address, port)))
                attempts += 1
                next_at, gap = now + gap, min(2 * gap, MAX_GAP)
            wake = min(next_at, deadline) - now
            if not pending:
                await asyncio.sleep(wake)
                continue
            done, _ = await asyncio.wait(pending, timeout=wake,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            pending = [task for task in pending if task not in done]
            winners = []
            for task in done:
                if (exc := task.exception()) is None:
                    winners.append(task.result())
                elif isinstance(exc, OSError):
                    error = exc
                else:
                    raise exc
            if winners:
                for extra in winners[1:]:
                    extra.close()
                return winners[0], attempts
        raise error
    finally:
        for task in pending:
            _give_up(task)
        await asyncio.gather(*pending, return_exceptions=True)


def _give_up(task: asyncio.Task[socket.socket]) -> None:
    """Cancel an attempt; one that connected meanwhile has its socket closed."""
    task.cancel()
    task.add_done_callback(_close_connected)


def _close_connected(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def _attempt(family: int, address: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Keystrokes go out one by one as they come: not held back for Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------- relay


async def relay(
    sock: socket.socket, stdin_fd: int, stdout_fd: int, counts: Relayed | None = None
) -> None:
    """Copy ``stdin_fd`` to ``sock`` and ``sock`` to ``stdout_fd`` until both directions
    have ended: EOF on stdin shuts down the socket's sending side, EOF from the socket
    ends stdout (``/dev/null`` takes its place), and each direction goes on alone after
    the other's end. Raises RelayError when either side fails; the other stops too.

    The fds (pipes, sockets, ttys, regular files) are switched to non-blocking for the
    relay and back afterwards: the loop waits for them instead of polling.
    """
    counts = counts if counts is not None else Relayed()
    loop = asyncio.get_running_loop()
    with _nonblocking(stdin_fd, stdout_fd) as restore:
        up = asyncio.create_task(_up(loop, stdin_fd, sock, counts))
        down = asyncio.create_task(_down(loop, sock, stdout_fd, counts, restore))
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure, if any
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)


def _why(exc: OSError) -> str:
    """The system's words for the error ("Connection refused"), whatever the message
    around it (asyncio's "Connect call failed ('127.0.0.1', 22)")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _lost(exc: OSError) -> RelayError:
    return RelayError(f"connection lost: {_why(exc)}")


async def _up(
    loop: asyncio.AbstractEventLoop, fd: int, sock: socket.socket, counts: Relayed
) -> None:
    while True:
        try:
            data = await _read(loop, fd)
        except OSError as exc:
            raise RelayError(f"cannot read stdin: {_why(exc)}") from None
        try:
            if not data:
                sock.shutdown(socket.SHUT_WR)
                return
            await loop.sock_sendall(sock, data)
        except OSError as exc:
            raise _lost(exc) from None
        counts.up += len(data)


async def _down(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, fd: int, counts: Relayed,
    restore: Callable[[int], None],
) -> None:  # fmt: skip
    while True:
        try:
            data = await loop.sock_recv(sock, CHUNK)
        except OSError as exc:
            raise _lost(exc) from None
        if not data:
            restore(fd)
            _end_output(fd)
            return
        try:
            await _write(loop, fd, memoryview(data))
        except OSError as exc:
            raise RelayError(f"cannot write stdout: {_why(exc)}") from None
        counts.down += len(data)


async def _read(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """What ``fd`` has, at most CHUNK bytes; b"" at its end. A regular file or /dev/null
    never blocks (and cannot be waited for): it is read at once."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except (BlockingIOError, InterruptedError):
            await _ready(fd, loop.add_reader, loop.remove_reader)


async def _write(loop: asyncio.AbstractEventLoop, fd: int, data: memoryview) -> None:
    while data:
        try:
            data = data[os.write(fd, data) :]
        except (BlockingIOError, InterruptedError):
            await _ready(fd, loop.add_writer, loop.remove_writer)


async def _ready(fd: int, add: Callable[..., None], remove: Callable[[int], object]) -> None:
    """Until the loop says ``fd`` is readable (writable): one wait, no polling."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    add(fd, _wake, ready)
    try:
        await ready
    finally:
        remove(fd)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _end_output(fd: int) -> None:
    """EOF for whoever reads ``fd``. A socket is shut down (it may be stdin too); then
    /dev/null takes the fd's place, which drops this process's hold on the pipe or
    terminal and keeps the number taken: nothing opened later lands on stdout."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            copy = os.dup(fd)
            try:
                sock = socket.socket(fileno=copy)
            except OSError:
                os.close(copy)
                raise
            with sock:
                sock.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


@contextlib.contextmanager
def _nonblocking(*fds: int) -> Iterator[Callable[[int], None]]:
    """The fds non-blocking, each restored at the end or when the function yielded is
    called for it: a terminal or a pipe may be shared with the shell that started this
    process. A file another of the fds is also open on (stdin and stdout on one terminal
    or socket) keeps its mode until the last of them: the flag belongs to both."""
    saved = {fd: (os.get_blocking(fd), _identity(fd)) for fd in fds}

    def restore(fd: int) -> None:
        if fd not in saved:
            return
        blocking, identity = saved.pop(fd)
        if all(other != identity for _, other in saved.values()):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)

    try:
        for fd in saved:
            os.set_blocking(fd, False)
        yield restore
    finally:
        for fd in list(saved):
            restore(fd)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino
