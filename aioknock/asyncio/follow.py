"""Follow a log file like ``tail -F``: survives rotation and truncation, holds back
partial lines until their newline arrives, and starts at the end unless told otherwise.

Only a regular file is read: it is opened without blocking (a FIFO would otherwise
hang the reading thread until a writer came, and with it the daemon's stop).
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncGenerator
from typing import BinaryIO

from ..errors import AioknockError
from ..logs import get_logger

log = get_logger("aioknock.follow")


class FollowError(AioknockError):
    """The followed file exists but cannot be read."""


# Longer lines are dropped (the next line is read as usual): the kernel writes at most
# 1,024 bytes a message, and a firewall log line of interest has a few hundred.
MAX_LINE = 8192
HEAD = 64  # bytes of the file's start kept to see it was truncated and written again
# Bytes read per poll: a huge backlog is taken in bites of ~2,000 lines, so memory stays
# small and the loop is never held long (benchmarks/bench_daemon.py: 4 MiB bites cost
# ~25 MB and 0.1 s of blocked loop each).
READ_LIMIT = 1 << 18


class Follower:
    """``poll_once`` returns the complete lines written since the last call.

    Started at the end of an existing file (``from_start`` reads it whole); an
    unterminated last line there is a fragment and is skipped. A file that is
    missing at first, or that replaces a rotated one, is read from its start;
    the rotated file is read to its end first. A file that shrank, or whose first
    bytes changed, was truncated (copytruncate) and is read again from its start,
    also when it grew past where reading stood before the next poll. What is at the
    path when it is first opened must be a readable regular file (FollowError);
    what later takes its place and is not (a directory, a FIFO) is reported and
    waited for. ``behind`` says whether a poll stopped before the end (READ_LIMIT).
    Once closed it delivers nothing more.
    """

    def __init__(
        self, path: str, *, from_start: bool = False, poll: float = 0.2, max_line: int = MAX_LINE,
        missing_hint: str = "",
    ) -> None:  # fmt: skip
        self.path = path
        self.missing_hint = missing_hint
        self.poll = poll
        self.max_line = max_line
        self._from_start = from_start
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] = (0, 0)
        self._partial = b""
        self._skipping = False  # inside a line being dropped: discard up to its newline
        self._missing_logged = False
        self._odd_logged = False  # what is at the path is not a regular file: said once
        self._first = True  # the first open: an unusable path is an error, not a wait
        self._head = b""  # the file's first bytes as last seen
        self._size = 0  # its size at the last poll
        self.behind = False
        self._closed = False
        self._lock = threading.Lock()  # poll_once runs in a worker thread, close on the loop

    def close(self) -> None:
        """Close the file (waits for a poll in progress); idempotent."""
        with self._lock:
            self._closed = True
            self._drop_file()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, *, at_end: bool) -> bool:
        first, self._first = self._first, False
        try:
            f = self._open_regular()
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("%s does not exist yet; waiting for it%s", self.path,
                            self.missing_hint)  # fmt: skip
                self._missing_logged = True
            return False
        except OSError as exc:  # a directory, a FIFO, no permission, a link loop
            reason = f"cannot read {self.path}: {exc.strerror or exc}"
            if first:
                raise FollowError(reason) from None
            if not self._odd_logged:
                log.warning("%s; waiting for a regular file there", reason)
                self._odd_logged = True
            return False
        except ValueError:  # a NUL in the name
            raise FollowError(f"cannot read {self.path!r}: not a usable file name") from None
        skipping = False
        try:
            st = os.fstat(f.fileno())
            if at_end and st.st_size > 0:
                f.seek(st.st_size - 1)
                skipping = f.read(1) != b"\n"  # a line still being written: not ours
            head = os.pread(f.fileno(), HEAD, 0)
        except BaseException:
            f.close()
            raise
        self._drop_file()
        self._file, self._ident = f, (st.st_dev, st.st_ino)
        self._head, self._size = head, st.st_size
        self._partial, self._skipping = b"", skipping
        self._missing_logged = self._odd_logged = False
        return True

    def _open_regular(self) -> BinaryIO:
        """The file, opened for reading without blocking; OSError unless regular."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(0, "not a regular file (a directory, a FIFO, a device?)")
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _read(self) -> tuple[list[bytes], bool]:
        """Complete lines from the current position; True if READ_LIMIT stopped the read."""
        assert self._file is not None
        data = self._file.read(READ_LIMIT)
        if not data:
            return [], False
        *complete, rest = (self._partial + data).split(b"\n")
        lines: list[bytes] = []
        for line in complete:
            if self._skipping:
                self._skipping = False  # the tail of the dropped line
            elif len(line) > self.max_line:
                self._warn_long()
            else:
                lines.append(line)
        if self._skipping:
            rest = b""
        elif len(rest) > self.max_line:
            self._warn_long()
            rest, self._skipping = b"", True
        self._partial = rest
        return lines, len(data) == READ_LIMIT

    def _warn_long(self) -> None:
        log.warning("%s: dropping a line longer than %d bytes", self.path, self.max_line)

    def _poll(self) -> list[bytes]:
        self.behind = False
        if self._file is None:
            opened = self._open(at_end=not self._from_start)
            self._from_start = True  # a file that appears later is read from its start
            if not opened:
                return []
        assert self._file is not None
        try:
            st: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            st = None  # rotated away, not yet recreated: keep the old one
        rotated = st is not None and (st.st_dev, st.st_ino) != self._ident
        if st is not None and not rotated and self._truncated(st):
            self._file.seek(0)  # before reading: what stands past the old offset is new
            self._partial, self._skipping = b"", False
        lines, self.behind = self._read()
        if not self.behind and rotated:
            lines += self._rotated()
        elif self._file is not None:
            self._size = os.fstat(self._file.fileno()).st_size
            self._head = os.pread(self._file.fileno(), HEAD, 0)
        return lines

    def _rotated(self) -> list[bytes]:
        """Lines the old file got just before the switch, then the new file's."""
        lines, self.behind = self._read()
        if self.behind:
            return lines
        if not stat.S_ISREG(os.stat(self.path).st_mode):
            if not self._odd_logged:  # keep the old one until a regular file is back
                log.warning("%s is no longer a regular file; waiting for one", self.path)
                self._odd_logged = True
            return lines
        if self._partial or self._skipping:
            log.warning("%s was rotated in the middle of a line; dropped it", self.path)
        if self._open(at_end=False):
            log.info("%s was rotated; following the new file", self.path)
            lines += self._read()[0]
        return lines

    def _truncated(self, st: os.stat_result) -> bool:
        """Shorter than read, shorter than at the last poll, or other first bytes (cut and
        written again between two polls)."""
        assert self._file is not None
        if st.st_size < self._file.tell() or st.st_size < self._size:
            log.info("%s was truncated; reading from its start", self.path)
            return True
        head = os.pread(self._file.fileno(), HEAD, 0)
        if head[: len(self._head)] != self._head:
            log.warning("%s was truncated and written again between two reads; reading it "
                        "from its start", self.path)  # fmt: skip
            return True
        return False

    def poll_once(self) -> list[str]:
        """Complete new lines since the last call (blocking file I/O: run off the loop)."""
        with self._lock:
            if self._closed:
                return []
            lines = self._poll()
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    async def lines(self) -> AsyncGenerator[list[str], None]:
        """Batches of new lines, forever; each poll runs in a worker thread.

        The file is closed when the iteration ends (cancelled or ``aclose``).
        """
        try:
            while True:
                batch = await asyncio.to_thread(self.poll_once)
                if batch:
                    yield batch
                elif not self.behind:  # caught up: wait; behind (a long line): read on
                    await asyncio.sleep(self.poll)
        finally:
            self.close()
