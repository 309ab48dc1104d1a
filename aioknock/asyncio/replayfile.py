"""The daemon's replay memory on disk, so that a restart does not make a used knock good again.

The file is a 16-byte header and then one 16-byte digest per knock accepted, oldest
first. Each digest is appended by one ``write()`` on a file opened for that write
alone (knocks are accepted a few times a minute, not thousands), so there is no
descriptor to hand over on reload and a crash loses at most the last, partial
record, which the next start drops. Whenever the file is not exactly what this
daemon wrote (gone, short, grown a partial record) or holds twice the memory's
size, it is written anew to a fresh temporary file and renamed over the old one, so
it is never half-written. Only a regular file with one link is read or appended to:
the daemon runs as root, and must not be steered into another file. Writes are small
and local: they run on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from collections import deque
from collections.abc import Iterable

from ..daemon.replay import DIGEST_SIZE
from ..errors import ConfigError

log = logging.getLogger("aioknock.daemon")
MAGIC = b"aioknock-replay\n"  # a non-empty file without it is not ours, and is left alone
_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)


class ReplayFile:
    def __init__(self, path: str, limit: int, digests: Iterable[bytes], *, write: bool) -> None:
        self.path, self.limit, self.write = path, limit, write
        self.digests: deque[bytes] = deque(digests, maxlen=limit)
        self._records = len(self.digests)  # records in the file, which may exceed the limit

    @classmethod
    def load(cls, path: str, limit: int, *, write: bool = True) -> ReplayFile:
        """Read ``path`` (a missing or empty file is empty) and, when ``write``, create or
        tidy it now: a folder the daemon cannot write to must fail at start, not at a knock."""
        records: list[bytes] = []
        try:
            fd = os.open(path, os.O_RDONLY | _FLAGS)
        except FileNotFoundError:
            size, total, partial = 0, 0, 0
        except OSError as exc:
            raise _error(path, "cannot read", exc) from None
        else:
            try:
                size = _check(fd)
                head = os.pread(fd, len(MAGIC), 0)
                if size and head != MAGIC:
                    raise ConfigError(f"{path} is not an aioknock replay file (left as it is)",
                                      key="replay_file")  # fmt: skip
                total, partial = divmod(max(0, size - len(MAGIC)), DIGEST_SIZE)
                keep = min(total, limit)
                data = os.pread(fd, keep * DIGEST_SIZE, len(MAGIC) + (total - keep) * DIGEST_SIZE)
            except OSError as exc:
                raise _error(path, "cannot read", exc) from None
            finally:
                os.close(fd)
            whole = len(data) - len(data) % DIGEST_SIZE
            records = [data[i : i + DIGEST_SIZE] for i in range(0, whole, DIGEST_SIZE)]
        if partial:
            log.warning("replay_file %s: dropped a partial record at its end", path)
        store = cls(path, limit, records, write=write)
        store._records = total
        if write and (not size or partial or total > limit):
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
            if self._records > 2 * self.limit or not self._append(digest):
                self._rewrite()
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

    def _append(self, digest: bytes) -> bool:
        """Append to the file as this daemon left it; False when it is not (then rewrite)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _FLAGS)
        except FileNotFoundError:
            return False
        try:
            expected = len(MAGIC) + (self._records - 1) * DIGEST_SIZE
            try:
                if _check(fd) != expected:
                    return False
            except OSError:  # swapped for something else: put ours back beside it
                return False
            return os.write(fd, digest) == len(digest)
        finally:
            os.close(fd)

    def _rewrite(self) -> None:
        folder, name = os.path.split(os.path.abspath(self.path))
        # A fresh, unguessable name (O_EXCL): nothing already in the folder is reused.
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:200]}.", suffix=".tmp", dir=folder)
        try:
            view = memoryview(MAGIC + b"".join(self.digests))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, self.path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # the rename itself survives a power cut
            dirfd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        self._records = len(self.digests)


def _check(fd: int) -> int:
    """The size of a regular file with no other links; OSError for anything else."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    if info.st_nlink != 1:
        raise OSError(errno.EMLINK, "it has other hard links")
    return info.st_size


def _error(path: str, what: str, exc: OSError) -> ConfigError:
    why = "a symbolic link, which is not followed" if exc.errno == errno.ELOOP else exc.strerror
    hint = " (create the folder, or leave replay_file empty)" if exc.errno == errno.ENOENT else ""
    return ConfigError(f"{what} {path}: {why or exc}{hint}", key="replay_file")
