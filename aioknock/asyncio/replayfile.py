"""The daemon's replay memory on disk, so that a restart does not make a used knock good again.

The file is a 16-byte header and then one 16-byte digest per knock accepted, oldest
first. Each digest is appended by one ``write()`` on a file opened for that write
alone (knocks are accepted a few times a minute, not thousands), so there is no
descriptor to hand over on reload and a crash loses at most the last, partial
record, which the next start drops. When the file holds twice the memory's size it
is rewritten to a temporary file and renamed over the old one, so it is never
half-written. Writes are small and local: they run on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections import deque
from collections.abc import Iterable

from ..daemon.tracker import DIGEST_SIZE
from ..errors import ConfigError

log = logging.getLogger("aioknock.daemon")
MAGIC = b"aioknock-replay\n"  # a file without it is not ours, and is never overwritten
_FLAGS = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


class ReplayFile:
    def __init__(self, path: str, limit: int, digests: Iterable[bytes], *, write: bool) -> None:
        self.path, self.limit, self.write = path, limit, write
        self.digests: deque[bytes] = deque(digests, maxlen=limit)
        self._records = len(self.digests)  # records in the file, which may exceed the limit

    @classmethod
    def load(cls, path: str, limit: int, *, write: bool = True) -> ReplayFile:
        """Read ``path`` (a missing file is empty) and, when ``write``, create or tidy it
        now: a folder the daemon cannot write to must fail at start, not at a knock."""
        records: list[bytes] = []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _FLAGS)  # a FIFO must not block
        except FileNotFoundError:
            head, total, partial = b"", 0, False
        except OSError as exc:
            raise _error(path, "cannot read", exc) from None
        else:
            try:
                head, records, total, partial = _read(fd, limit)
            except OSError as exc:
                raise _error(path, "cannot read", exc) from None
            finally:
                os.close(fd)
        if head and head != MAGIC:
            raise ConfigError(f"{path} is not an aioknock replay file (it is left as it is)",
                              key="replay_file")  # fmt: skip
        if partial:
            log.warning("replay_file %s: dropped a partial record at its end", path)
        store = cls(path, limit, records, write=write)
        store._records = total
        if write and (not head or partial or total > limit):
            try:
                store._rewrite()
            except OSError as exc:
                raise _error(path, "cannot write", exc) from None
        return store

    def add(self, digest: bytes) -> None:
        """Record one accepted knock; a failure is logged (the memory still holds it)."""
        if not self.write:
            return
        self.digests.append(digest)
        self._records += 1
        try:
            if self._records > 2 * self.limit:
                self._rewrite()
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _FLAGS, 0o600)
            try:
                os.write(fd, digest)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("%s", _error(self.path, "cannot record a used knock", exc))

    def replace(self, digests: Iterable[bytes]) -> None:
        """Hold exactly ``digests`` (a reload that names a new file passes it the memory)."""
        self.digests = deque(digests, maxlen=self.limit)
        if not self.write:
            return
        try:
            self._rewrite()
        except OSError as exc:
            log.error("%s", _error(self.path, "cannot write", exc))

    def _rewrite(self) -> None:
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _FLAGS, 0o600)
        try:
            data = MAGIC + b"".join(self.digests)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self._records = len(self.digests)


def _read(fd: int, limit: int) -> tuple[bytes, list[bytes], int, bool]:
    """The header, the last ``limit`` records, how many records there are, and whether
    a partial one ends the file. Reads no more than it keeps."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    size = info.st_size
    head = os.pread(fd, len(MAGIC), 0)
    total, partial = divmod(max(0, size - len(MAGIC)), DIGEST_SIZE)
    keep = min(total, limit)
    data = os.pread(fd, keep * DIGEST_SIZE, len(MAGIC) + (total - keep) * DIGEST_SIZE)
    records = [
        data[i : i + DIGEST_SIZE] for i in range(0, len(data) - DIGEST_SIZE + 1, DIGEST_SIZE)
    ]
    return head, records, total, partial != 0


def _error(path: str, what: str, exc: OSError) -> ConfigError:
    why = "a symbolic link, which is not followed" if exc.errno == errno.ELOOP else exc.strerror
    return ConfigError(f"{what} {path}: {why or exc}", key="replay_file")
