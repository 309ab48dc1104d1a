"""The daemon's replay memory on disk, so that a restart does not make a used knock good again.

The file is a 16-byte header and then one 20-byte record per knock accepted, oldest
first: the knock's 16-byte digest and a 4-byte checksum of it, so that a damaged
record is found, reported and counted instead of silently forgetting a knock. Each
record is appended by one ``write()`` and synced (``fsync``) before the knock's door
opens, on a file opened for that write alone (knocks are accepted a few times a
minute, not thousands), so there is no descriptor to hand over on reload and a crash
loses at most the last, partial record, which the next start drops. The daemon always
writes the header first: an empty file was cut short, and is reported. Files of the
first format (bare 16-byte digests, no checksums) are read and written anew.

Whenever the file is not exactly what this daemon wrote (gone, short, grown a partial
record, damaged) or holds twice the memory's size, it is written anew to a fresh
temporary file and renamed over the old one, so it is never half-written. Only a
regular file with one link is read or appended to: the daemon runs as root, and must
not be steered into another file.

**What it cannot be made to forget silently.** At start, every way the file can lose
knocks that is visible in it is said, and kept in ``incomplete`` (``damaged`` counts
the records): records that fail their checksum (an error, with their number; flipping
bytes in every record drops them all, and says so), a file of no bytes (an error: it
was cut short), a partial last record (a warning: a crash while appending, which loses
only the knock whose door had not opened yet). A file that cannot be read (no
permission, an I/O error, not a regular file) stops the start, and a reload keeps the
old configuration: the daemon never runs on a memory it could not read.

**A file that is missing** at start is created, empty, with a warning. The daemon
cannot tell its first start from a file that was removed (by hand, a clean-up job, a
new disk, a ``/run`` that a reboot emptied) unless it keeps a marker, and a marker can
be removed with the file (the folder, the disk). So it says so every time it has to
create the file, and the knocks the file held, if there was one, could be replayed.
Refusing knocks for a while after such a start would not make up for them: the
prototype's time fields repeat (THISMINUTE every 256 minutes), so a forgotten knock
stays good for as long as it is not seen again, and the wait would lock out the
admin at every first start. A file cut back to fewer whole records (an older backup
restored) cannot be told from one that never held more: that, too, is a limit of a
file the daemon itself cannot keep out of other hands. A file removed while the daemon
runs is written anew from the memory, which still holds every knock, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..daemon.replay import DIGEST_SIZE
from ..errors import ConfigError
from ..logs import get_logger

log = get_logger("aioknock.daemon")
MAGIC = b"aioknock-replay2"  # a non-empty file without it is not ours, and is left alone
LEGACY_MAGIC = b"aioknock-replay\n"  # the first format: bare digests, no checksums
CHECK_SIZE = 4
RECORD_SIZE = DIGEST_SIZE + CHECK_SIZE


def record(digest: bytes) -> bytes:
    """One record: the digest and its checksum (against damage, not against an attacker,
    who could as well delete the file)."""
    return (
        digest + hashlib.blake2b(digest, digest_size=CHECK_SIZE, person=b"aioknock-replay").digest()
    )


_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)


class ReplayFile:
    def __init__(self, path: str, limit: int, digests: Iterable[bytes], *, write: bool) -> None:
        self.path, self.limit, self.write = path, limit, write
        self.digests: deque[bytes] = deque(digests, maxlen=limit)
        self._records = len(self.digests)  # records in the file, which may exceed the limit
        self.damaged = 0  # records found damaged when the file was read
        # Why the file may have held knocks it no longer does, as found at start: "" (it
        # is as this daemon wrote it), "missing", "empty", "damaged" or "partial".
        self.incomplete = ""

    @classmethod
    def load(cls, path: str, limit: int, *, write: bool = True) -> ReplayFile:
        """Read ``path`` (a missing file is empty) and, when ``write``, create or tidy it
        now: a folder the daemon cannot write to must fail at start, not at a knock."""
        try:
            fd = os.open(path, os.O_RDONLY | _FLAGS)
        except FileNotFoundError:
            contents = _Contents(missing=True)
        except OSError as exc:
            raise _error(path, "cannot read", exc) from None
        else:
            try:
                contents = _read(fd, path, limit)
            except OSError as exc:
                raise _error(path, "cannot read", exc) from None
            finally:
                os.close(fd)
        contents.report(path)
        store = cls(path, limit, contents.digests, write=write)
        store._records = contents.total
        store.damaged = contents.damaged
        store.incomplete = contents.incomplete()
        if write and contents.untidy(limit):
            try:
                store._rewrite()
            except OSError as exc:
                raise _error(path, "cannot write", exc) from None
        return store

    def add(self, digest: bytes) -> str | None:
        """Record one accepted knock, durably; why it could not be, or None. The memory
        holds it either way."""
        if not self.write:
            return None
        self.digests.append(digest)
        self._records += 1
        try:
            if self._records > 2 * self.limit:
                self._rewrite()
            elif not self._append(record(digest)):
                log.warning("replay_file %s was removed or changed while the daemon ran; "
                            "written anew from the memory", self.path)  # fmt: skip
                self._rewrite()
        except OSError as exc:
            return str(_error(self.path, "cannot record a used knock in", exc))
        return None

    def replace(self, digests: Iterable[bytes]) -> None:
        """Hold exactly ``digests`` (a reload that names a new file passes it the memory)."""
        self.digests = deque(digests, maxlen=self.limit)
        if not self.write:
            return
        try:
            self._rewrite()
        except OSError as exc:
            log.error("%s", _error(self.path, "cannot write", exc))

    def _append(self, data: bytes) -> bool:
        """Append to the file as this daemon left it, and sync it; False when it is not as
        left (then it is written anew); OSError when the write or the sync fails."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _FLAGS)
        except FileNotFoundError:
            return False
        try:
            expected = len(MAGIC) + (self._records - 1) * RECORD_SIZE
            try:
                if _check(fd) != expected:
                    return False
            except OSError:  # swapped for something else: put ours back beside it
                return False
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
            return True
        finally:
            os.close(fd)

    def _rewrite(self) -> None:
        folder, name = os.path.split(os.path.abspath(self.path))
        # A fresh, unguessable name (O_EXCL): nothing already in the folder is reused.
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:200]}.", suffix=".tmp", dir=folder)
        try:
            view = memoryview(MAGIC + b"".join(map(record, self.digests)))
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


@dataclass(slots=True)
class _Contents:
    """What a replay file held: the newest digests, and what was wrong with it."""

    digests: list[bytes] = field(default_factory=list)
    total: int = 0  # records in the file, which may exceed the limit
    partial: bool = False  # a record cut short at the end (a crash while writing)
    damaged: int = 0  # records whose checksum failed: dropped, and counted
    empty: bool = False  # an existing file of no bytes: the daemon writes a header first
    legacy: bool = False  # the first format, to be written anew in this one
    missing: bool = False  # no file yet (or it was removed): created now

    def untidy(self, limit: int) -> bool:
        """Whether the file must be written anew: created, cut, damaged or too long."""
        wrong = self.missing or self.empty or self.partial or self.damaged or self.legacy
        return bool(wrong) or self.total > limit

    def incomplete(self) -> str:
        """The worst reason the file may have lost knocks, or ""."""
        reasons = (("missing", self.missing), ("empty", self.empty),
                   ("damaged", self.damaged), ("partial", self.partial))  # fmt: skip
        return next((name for name, found in reasons if found), "")

    def report(self, path: str) -> None:
        if self.missing:
            log.warning("replay_file %s does not exist, so the daemon starts with no memory "
                        "of used knocks: if the file existed (removed, a new disk, an emptied "
                        "/run), the knocks it held could be replayed", path)  # fmt: skip
        if self.empty:
            log.error("replay_file %s is empty, though the daemon writes a header first: it "
                      "was cut short, and the knocks it held could be replayed", path)  # fmt: skip
        if self.damaged:
            log.error("replay_file %s: %d records failed their checksum and were dropped; "
                      "the knocks they held could be replayed", path, self.damaged)  # fmt: skip
        if self.partial:
            log.warning("replay_file %s: dropped a partial record at its end", path)


def _read(fd: int, path: str, limit: int) -> _Contents:
    size = _check(fd)
    if not size:
        return _Contents(empty=True)
    head = os.pread(fd, len(MAGIC), 0)
    if head not in (MAGIC, LEGACY_MAGIC):
        raise ConfigError(f"{path} is not an aioknock replay file (left as it is)",
                          key="replay_file")  # fmt: skip
    width = RECORD_SIZE if head == MAGIC else DIGEST_SIZE
    total, rest = divmod(size - len(MAGIC), width)
    keep = min(total, limit)
    data = os.pread(fd, keep * width, len(MAGIC) + (total - keep) * width)
    chunks = [data[i : i + width] for i in range(0, len(data) - len(data) % width, width)]
    if head == LEGACY_MAGIC:
        return _Contents(chunks, total, bool(rest), legacy=True)
    good = [c[:DIGEST_SIZE] for c in chunks if record(c[:DIGEST_SIZE]) == c]
    return _Contents(good, total, bool(rest), damaged=len(chunks) - len(good))


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
