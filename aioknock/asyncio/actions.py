"""Run the daemon's firewall actions: argument lists, never a shell, always bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import shlex

from ..daemon import nftables
from ..daemon.doors import Command, Door
from ..errors import AioknockError, ConfigError
from ..logs import get_logger

log = get_logger("aioknock.daemon")

ACTION_TIMEOUT = 10.0


class ActionError(AioknockError):
    """A firewall command failed; the message is one line with its first line of stderr."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_line(data: bytes) -> str:
    for line in data.decode(errors="replace").splitlines():
        if line.strip():
            return _one_line(line)
    return ""


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


async def run_argv(argv: list[str], stdin: str | None = None, timeout: float | None = None) -> None:
    """Run ``argv`` (no shell) with ``stdin``; ActionError unless it exits 0 in time."""
    if not argv:
        raise ActionError("empty command")
    name = _one_line(argv[0])
    limit = ACTION_TIMEOUT if timeout is None else timeout
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL in an argument
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ActionError(f"cannot run {name}: {_one_line(reason)}") from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), limit
        )
    except TimeoutError:
        await _kill(proc)
        raise ActionError(f"{name} did not finish within {limit:g} s") from None
    except BaseException:  # cancelled: leave no process behind
        await asyncio.shield(_kill(proc))
        raise
    code = await proc.wait()  # already reaped by communicate
    if code != 0:
        first = _first_line(err) or _first_line(out) or "no message"
        what = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        raise ActionError(f"{_one_line(shlex.join(argv))} failed ({what}): {first}")


class Backend:
    """Opens and closes doors; ``test`` mode logs what it would run and runs nothing.

    It keeps no state of its own: the engine knows which doors are open, and hands
    each action the duration it needs.
    """

    closes_itself = False  # its doors expire by themselves (no close needed)

    def __init__(self, *, test: bool = False) -> None:
        self.test = test

    async def setup(self) -> None:
        return None

    async def open(self, door: Door, duration: float) -> None:
        """Open the door; for one already open, keep it open ``duration`` more."""
        raise NotImplementedError

    async def close(self, door: Door, duration: float) -> None:
        """Close the door (``duration``: what it was opened for)."""
        raise NotImplementedError


class NftBackend(Backend):
    """The built-in nftables backend; doors time out in the kernel by themselves."""

    closes_itself = True

    def __init__(self, table: str, mark: int = nftables.DEFAULT_MARK, *, test: bool = False):
        super().__init__(test=test)
        self.table = nftables.check_table(table)
        self.mark = nftables.check_mark(mark)

    async def _nft(self, script: str) -> None:
        if self.test:
            log.info("test mode, not running: nft -f - <<%s", script.strip().replace("\n", "; "))
            return
        await run_argv(["nft", "-f", "-"], stdin=script)

    async def setup(self) -> None:
        try:
            await self._nft(nftables.setup_script(self.table, self.mark))
        except ActionError as exc:
            # nft has no quoting for names: a keyword ("accept", "filter"...) is a syntax error.
            if f"unexpected {self.table}," in str(exc):
                raise ConfigError(f"{self.table!r} is an nftables keyword; choose another "
                                  "table name", key="nft_table") from None  # fmt: skip
            raise

    async def open(self, door: Door, duration: float) -> None:
        await self._nft(nftables.open_script(self.table, door, duration))  # also refreshes

    async def close(self, door: Door, duration: float) -> None:
        await self._nft(nftables.close_script(self.table, door))


class CommandBackend(Backend):
    """``open``/``close`` argument-list templates, e.g. an iptables command set.

    The engine runs ``open`` once per door (a second rule would outlive the close,
    which removes one) and ``close`` with the duration the door was opened for.
    """

    def __init__(self, open_cmd: Command, close_cmd: Command | None, *, test: bool = False):
        super().__init__(test=test)
        self.open_cmd, self.close_cmd = open_cmd, close_cmd

    async def _run(self, argv: list[str]) -> None:
        if self.test:
            log.info("test mode, not running: %s", shlex.join(argv))
            return
        await run_argv(argv)

    async def open(self, door: Door, duration: float) -> None:
        await self._run(self.open_cmd.render(door, duration))

    async def close(self, door: Door, duration: float) -> None:
        if self.close_cmd is not None:
            await self._run(self.close_cmd.render(door, duration))
