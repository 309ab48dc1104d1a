"""Deliver a knock as lines appended to a faked firewall log (the prototype's debug path)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Sequence

from ..codec.logtemplate import LogTemplate
from ..errors import SendError

# O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking a worker
# thread forever; it changes nothing for regular files.
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one whole line with a single O_APPEND write, so concurrent writers never
    interleave inside a line and a reader never sees half of one."""
    name = os.fspath(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(name, _FLAGS, 0o644)
    except OSError as exc:
        raise SendError(f"cannot open log file {name}: {exc.strerror}") from None
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise SendError(f"cannot write log file {name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if written != len(data):
        raise SendError(f"short write to log file {name} ({written} of {len(data)} bytes)")


async def write_knock(
    path: str | os.PathLike[str], template: LogTemplate, *, client: str, remote: str,
    ports: Sequence[int], timeout: float,
) -> list[str]:  # fmt: skip
    """One line per port, ``timeout`` seconds apart (manual, v0.23.1); returns the lines.

    Line i is written at start + i * timeout on the loop's clock (an absolute
    schedule: the lateness of one write does not add up over the lines).
    """
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    start = loop.time()
    for i, port in enumerate(ports):
        slot = start + i * timeout
        while (delay := slot - loop.time()) > 0:
            await asyncio.sleep(delay)
        line = template.format(
            when=time.time(), client=client, remote=remote,
            clientport=1024 + secrets.randbelow(65536 - 1024), remoteport=port,
        )  # fmt: skip
        await loop.run_in_executor(None, append_line, path, line)
        lines.append(line)
    return lines
