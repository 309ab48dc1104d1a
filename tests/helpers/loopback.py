"""What the loopback tests need to know about this host, and a server to talk to."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

TIMEOUT = 20.0  # no test process or connection runs longer


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound (containers often run without IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="::1 is not available on this host")


class Server:
    """A TCP server on loopback: each connection runs ``handler`` in its own thread;
    what it returns is kept in ``results``. Bounded: connections time out."""

    def __init__(self, handler: Callable[[socket.socket], object], host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.handler = handler
        self.results: list[object] = []
        self.errors: list[BaseException] = []
        self.accepted = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        workers = []
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            worker = threading.Thread(target=self._one, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join(TIMEOUT)

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                self.results.append(self.handler(conn))
            except BaseException as exc:
                self.errors.append(exc)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(TIMEOUT)
        self.sock.close()
        assert not self.errors, self.errors


@contextlib.contextmanager
def serving(
    handler: Callable[[socket.socket], object], host: str = "127.0.0.1"
) -> Iterator[Server]:
    server = Server(handler, host)
    try:
        yield server
    finally:
        server.close()
