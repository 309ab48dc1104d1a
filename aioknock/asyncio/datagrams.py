"""SPA datagrams out: one UDP socket per address family for every host of a run.

A fleet of 10,000 hosts needs no 10,000 sockets for one datagram each: an unbound,
unconnected socket per family sends them all (``sendto``), as fast as the kernel
takes them. When its send buffer is full the sender waits, bounded, for room.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

from ..errors import SendError
from .sender import Resolved

SEND_WAIT = 2.0  # seconds a datagram may wait for room in the send buffer


class Datagrams:
    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}

    def _socket(self, family: int) -> socket.socket:
        sock = self._socks.get(family)
        if sock is None:
            sock = self._socks[family] = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
        return sock

    async def send(self, target: Resolved, port: int, data: bytes) -> None:
        """Send ``data`` to ``target``'s ``port``; SendError if it cannot leave."""
        address = (target.sockaddr[0], port, *target.sockaddr[2:])
        try:
            sock = self._socket(target.family)
            await asyncio.wait_for(_sendto(sock, data, address), SEND_WAIT)
        except TimeoutError:
            raise _cannot(target, port, "the send buffer stayed full") from None
        except OSError as exc:
            raise _cannot(target, port, os.strerror(exc.errno or errno.EINVAL)) from None

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


async def _sendto(sock: socket.socket, data: bytes, address: tuple[object, ...]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock.sendto(data, address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
        ready = loop.create_future()
        loop.add_writer(sock.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())


def _cannot(target: Resolved, port: int, why: str) -> SendError:
    return SendError(f"cannot send SPA to {target.host} ({target.address}) port {port}: {why}")
