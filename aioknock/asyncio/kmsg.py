"""Read the kernel's log straight from ``/dev/kmsg``: firewall log lines on hosts
without rsyslog (journald alone, as on a default Debian 12), and without the delay
or the rate limits of a logging daemon in between.

Each ``read()`` of ``/dev/kmsg`` returns one record: ``prio,seq,usec,flags;text``
followed by optional continuation lines (`` KEY=value``). Only the text is kept.
Reading needs root (or CAP_SYSLOG where ``kernel.dmesg_restrict = 1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncGenerator

from ..daemon.logreader import KMSG
from ..errors import AioknockError
from ..logs import get_logger

log = get_logger("aioknock.kmsg")

RECORD_MAX = 8192  # the kernel's record limit (CONSOLE_EXT_LOG_MAX)
BATCH = 1024  # records per wakeup, so a backlog is taken in bounded bites


class KmsgError(AioknockError):
    """The kernel log could not be opened or read."""


_KERNEL_PRIORITIES = frozenset(b"%d" % level for level in range(8))  # facility 0: the kernel


def record_text(record: bytes) -> str | None:
    """The message of one kernel record, without its header and continuations; None for
    anything else, including what user space wrote to ``/dev/kmsg`` (facility > 0), so
    that no process can pass a line of its own off as a firewall log line."""
    header, sep, rest = record.partition(b";")
    fields = header.split(b",")
    if not sep or len(fields) < 4 or fields[0] not in _KERNEL_PRIORITIES:
        return None
    return rest.split(b"\n", 1)[0].decode("utf-8", "replace")


class Kmsg:
    """``async for lines in Kmsg().lines()``: batches of kernel log messages.

    Starts after the newest record unless ``from_start`` (then with the oldest the
    kernel still holds). Records the kernel overwrote before they were read are
    skipped with a warning.
    """

    def __init__(self, path: str = KMSG, *, from_start: bool = False) -> None:
        self.path = path
        self.from_start = from_start
        self._eof = False

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            hint = " (needs root or CAP_SYSLOG)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
            raise KmsgError(f"cannot read {self.path}: {exc.strerror}{hint}") from None
        if not self.from_start:
            # A FIFO (tests) cannot seek, and has no backlog to skip.
            with contextlib.suppress(OSError):
                os.lseek(fd, 0, os.SEEK_END)
        return fd

    def _drain(self, fd: int) -> tuple[list[str], bool]:
        """Records ready now; True once nothing more is ready."""
        lines: list[str] = []
        for _ in range(BATCH):
            try:
                record = os.read(fd, RECORD_MAX)
            except BlockingIOError:
                return lines, True
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read them: go on
                    log.warning("%s: kernel log records were lost before they were read",
                                self.path)  # fmt: skip
                    continue
                raise KmsgError(f"cannot read {self.path}: {exc.strerror}") from None
            if not record:  # end of file: only a FIFO (tests) ends
                self._eof = True
                return lines, True
            for chunk in record.split(b"\n"):  # a FIFO may join records
                if (text := record_text(chunk)) is not None:
                    lines.append(text)
        return lines, False

    async def lines(self) -> AsyncGenerator[list[str], None]:
        """Batches of new messages, forever; the device is closed when iteration ends."""
        loop = asyncio.get_running_loop()
        fd = self._open()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        log.debug("reading %s", self.path)
        try:
            while True:
                await ready.wait()
                ready.clear()
                drained = False
                while not drained:
                    batch, drained = self._drain(fd)
                    if batch:
                        yield batch
                if self._eof:  # a FIFO without writers stays readable: do not spin
                    self._eof = False
                    await asyncio.sleep(0.2)
        finally:
            loop.remove_reader(fd)
            os.close(fd)
