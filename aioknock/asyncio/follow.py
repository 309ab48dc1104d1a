"""Follow a log file like ``tail -F``: survives rotation and truncation, holds back
partial lines until their newline arrives, and starts at the end unless told otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import BinaryIO

log = logging.getLogger("aioknock.follow")

CHUNK = 1 << 16
MAX_LINE = 1 << 16


class Follower:
    def __init__(self, path: str, *, from_start: bool = False, poll: float = 0.2) -> None:
        self.path = path
        self.poll = poll
        self._from_start = from_start
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] = (0, 0)
        self._partial = b""
        self._missing_logged = False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, *, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("%s does not exist yet; waiting for it", self.path)
                self._missing_logged = True
            return False
        st = os.fstat(f.fileno())
        if at_end:
            f.seek(0, os.SEEK_END)
        self.close()
        self._file, self._ident, self._partial = f, (st.st_dev, st.st_ino), b""
        self._missing_logged = False
        return True

    def _read_available(self) -> list[bytes]:
        assert self._file is not None
        data = bytearray()
        while chunk := self._file.read(CHUNK):
            data += chunk
        if not data:
            return []
        parts = (self._partial + bytes(data)).split(b"\n")
        self._partial = parts.pop()
        if len(self._partial) > MAX_LINE:
            log.warning("%s: dropping a line longer than %d bytes", self.path, MAX_LINE)
            self._partial = b""
        return parts

    def poll_once(self) -> list[str]:
        """Complete new lines since the last call (blocking file I/O: run off the loop)."""
        if self._file is None:
            opened = self._open(at_end=not self._from_start)
            self._from_start = True  # a file that appears later is read from its start
            if not opened:
                return []
        lines = self._read_available()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._decode(lines)  # rotated away, not yet recreated: keep the old one
        assert self._file is not None
        if (st.st_dev, st.st_ino) != self._ident:
            lines += self._read_available()  # finish the rotated file first
            if self._open(at_end=False):
                log.info("%s was rotated; following the new file", self.path)
                lines += self._read_available()
        elif st.st_size < self._file.tell():
            log.info("%s was truncated; reading from its start", self.path)
            self._file.seek(0)
            self._partial = b""
            lines += self._read_available()
        return self._decode(lines)

    @staticmethod
    def _decode(lines: list[bytes]) -> list[str]:
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    async def lines(self) -> AsyncIterator[list[str]]:
        """Batches of new lines, forever; each poll runs in a worker thread."""
        try:
            while True:
                batch = await asyncio.to_thread(self.poll_once)
                if batch:
                    yield batch
                else:
                    await asyncio.sleep(self.poll)
        finally:
            self.close()
