"""Reading the small files a user names (config files, includes, key files, hosts files):
regular files only, read whole up to a limit, opened without blocking.

``/dev/zero`` as a key file would fill memory, and a FIFO would wait for a writer for
ever; both are refused with a reason instead.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_CONFIG = 1 << 20  # a config file or an include: far more than any needs
MAX_KEY = 1 << 16
MAX_HOSTS = 1 << 26  # a hosts file: about two million hosts


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The file's bytes; OSError (its ``strerror`` says why) for a file that is missing,
    unreadable, not a regular file, or larger than ``limit``; ValueError for a name with
    a NUL in it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO or a device?)")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 16, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes")
    return b"".join(chunks)
