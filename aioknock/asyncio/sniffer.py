"""Capture knocks from the network: a raw ``AF_PACKET`` socket read by the event loop.

The kernel runs ``build_filter``'s BPF program on every packet, so only initial TCP
SYNs and UDP datagrams to wanted ports are copied to Python; parsing and judging
stay in the pure ``aioknock.daemon`` modules. ``SOCK_DGRAM`` strips the link header,
which makes one code path serve every interface type and "all interfaces" alike.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import errno
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType

from ..daemon.frames import build_filter, decode_frame
from ..daemon.packet import Packet
from ..errors import AioknockError
from ..logs import DEBUG, get_logger

log = get_logger("aioknock.sniffer")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20; the filter also drops outgoing packets
PACKET_AUXDATA = 8  # a struct tpacket_auxdata per packet: tp_status says about checksums
#: tp_status bits: the checksum is not filled in yet (sent by this host, a local VM or
#: container: the stack fills it in later and the kernel does not check it either), or
#: the device or kernel verified it already. With neither, the parser verifies it.
TP_STATUS_CSUMNOTREADY, TP_STATUS_CSUM_VALID = 1 << 3, 1 << 7
ARPHRD_LOOPBACK = 772
_AUXDATA_SPACE = socket.CMSG_SPACE(20)
_REJECT_ALL = [(0x06, 0, 0, 0)]  # ret #0


class CaptureError(AioknockError):
    """The capture socket could not be opened or read (not root, no such interface)."""


class Sniffer:
    """Knock candidates arriving on ``interface`` (every interface if ``None``).

    ``async for packet in sniffer`` (or ``async for batch in sniffer.batches()``) yields
    ``Packet`` objects (``now`` from ``clock`` when read) until ``close()``. Each wakeup
    drains up to ``batch`` frames; reading pauses while ``max_queue`` packets wait for
    the consumer, so a flood is dropped by the kernel, not buffered in memory. On
    ``interface=None`` a packet crossing a bridge or VLAN device is seen once per
    device; the recognizers ignore the repeat (same source port).
    """

    def __init__(
        self,
        tcp_ports: Iterable[int],
        udp_ports: Iterable[int] = (),
        *,
        interface: str | None = None,
        batch: int = 256,
        max_queue: int = 4096,
        rcvbuf: int = 1 << 21,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interface = interface
        self.batch, self.max_queue, self.clock = batch, max_queue, clock
        self._where = f"interface {interface!r}" if interface else "all interfaces"
        program = build_filter(tcp_ports, udp_ports)  # ValueError before any socket exists
        self._buf = bytearray(0x10000)
        self._view = memoryview(self._buf)
        self._ready: collections.deque[Packet] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._error: OSError | None = None
        self.refused = 0  # frames the filter passed but the parser did not take
        self._sock = self._open(program, rcvbuf)

    def _open(self, program: list[tuple[int, int, int, int]], rcvbuf: int) -> socket.socket:
        # Bound to an interface, the socket starts with no protocol and so sees nothing
        # until bind(); for all interfaces it must start with ETH_P_ALL.
        protocol = 0 if self.interface else socket.htons(ETH_P_ALL)
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, protocol)
        except PermissionError:
            raise CaptureError(
                "capturing packets (runmode = network) needs root or CAP_NET_RAW"
            ) from None
        except OSError as exc:
            raise CaptureError(f"cannot open a packet socket: {exc.strerror}") from None
        try:
            # Reject everything, bind, discard what slipped in before, then filter for real:
            # no unfiltered packet is ever read.
            _attach(sock, _REJECT_ALL)
            if self.interface:
                try:
                    socket.if_nametoindex(self.interface)
                except OSError:
                    raise CaptureError(
                        f"network interface {self.interface!r} does not exist"
                    ) from None
                sock.bind((self.interface, ETH_P_ALL))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                for _ in range(1 << 16):  # bounded by the socket buffer; this just caps it
                    sock.recv_into(self._buf)
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:  # as root, beyond net.core.rmem_max: room for a burst of knocks
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            _attach(sock, program)
        except OSError as exc:
            sock.close()
            raise CaptureError(f"capture on {self._where}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def update_filter(self, tcp_ports: Iterable[int], udp_ports: Iterable[int] = ()) -> None:
        """Swap in a filter for new ports (on reload) without reopening the socket.

        The swap is atomic; packets already queued passed the old filter, so the
        consumer must still check ports (the engine routes by port).
        """
        program = build_filter(tcp_ports, udp_ports)
        if self._sock.fileno() < 0:
            raise CaptureError(f"capture on {self._where} is closed")
        try:
            _attach(self._sock, program)
        except OSError as exc:
            raise CaptureError(f"capture on {self._where}: {exc.strerror or exc}") from None

    def stats(self) -> tuple[int, int]:
        """``(received, dropped)`` by the kernel since the last call (it resets them)."""
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        received, dropped = struct.unpack("II", raw)
        return received, dropped

    def close(self) -> None:
        """Stop reading and close the socket; a waiting ``async for`` ends."""
        if self._reading and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False
        self._sock.close()
        self._wake()

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> Sniffer:
        return self

    async def __anext__(self) -> Packet:
        if not await self._fill():
            raise StopAsyncIteration
        packet = self._ready.popleft()
        if not self._ready:
            self._resume()
        return packet

    async def batches(self) -> AsyncIterator[list[Packet]]:
        """Like ``async for``, but everything read in one wakeup at once: fewer switches."""
        while await self._fill():
            batch = list(self._ready)
            self._ready.clear()
            self._resume()
            yield batch

    async def _fill(self) -> bool:
        """Wait until a packet is ready; False once closed, ``CaptureError`` on failure."""
        while not self._ready:
            if self._error is not None:
                exc, self._error = self._error, None
                raise CaptureError(f"capture on {self._where}: {exc.strerror or exc}")
            if self._sock.fileno() < 0:
                return False
            self._loop = asyncio.get_running_loop()
            self._resume()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def _resume(self) -> None:
        if not self._reading and self._loop is not None and self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_readable(self) -> None:
        for _ in range(self.batch):
            try:
                size, ancillary, _, address = self._sock.recvmsg_into((self._buf,), _AUXDATA_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENETDOWN:  # reported once; resumes when it is up
                    log.warning("capture on %s: network is down", self._where)
                    continue
                self._error = exc
                self._pause()
                break
            packet = decode_frame(
                self._view[:size], self.clock(), link="ip",
                loopback=_on_loopback(address), transport_checksum=_unverified(ancillary),
            )  # fmt: skip
            if packet is not None:
                self._ready.append(packet)
            else:
                self._refuse(size, address)
        if len(self._ready) >= self.max_queue:
            self._pause()
        self._wake()

    def _refuse(self, size: int, address: tuple[object, ...] | None) -> None:
        """Count (and at debug level log) a frame the parser refused: not valid, not
        whole, from a martian source, or caught by the filter just replaced."""
        self.refused += 1
        if log.is_enabled_for(DEBUG):
            where = "?" if address is None else address[0]
            log.debug("refused a %d-byte frame on %s: not a valid, whole knock", size, where)

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False


def _on_loopback(address: tuple[object, ...] | None) -> bool:
    """Whether ``recvmsg`` says the frame came in on a loopback device (``sll_hatype``)."""
    return address is not None and address[3] == ARPHRD_LOOPBACK


_OFFLOADED = TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID  # both in tp_status's low byte
_LOW_BYTE = 0 if sys.byteorder == "little" else 3


def _unverified(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether the parser must verify the TCP/UDP checksum itself: the capture says it
    is neither verified yet nor left for later (no auxdata: it must, to be safe). The
    socket asks for PACKET_AUXDATA alone, so it is the first and only message."""
    if not ancillary:
        return True
    level, kind, data = ancillary[0]
    if level != SOL_PACKET or kind != PACKET_AUXDATA or len(data) < 4:
        return True
    return not data[_LOW_BYTE] & _OFFLOADED


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """``SO_ATTACH_FILTER`` with a ``struct sock_fprog`` built from a byte array."""
    code = array.array("B", b"".join(struct.pack("HBBI", *insn) for insn in program))
    address, _ = code.buffer_info()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(program), address))
