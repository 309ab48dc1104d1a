"""Run the daemon's firewall actions: argument lists, never a shell, always bounded in time."""

from __future__ import annotations

import asyncio
import logging

from ..daemon import nftables
from ..daemon.doors import Command, Grant
from ..errors import AioknockError

log = logging.getLogger("aioknock.daemon")

ACTION_TIMEOUT = 10.0


class ActionError(AioknockError):
    """A firewall command failed; the message carries its first line of stderr."""


async def run_argv(argv: list[str], stdin: str | None = None) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ActionError(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        _, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), ACTION_TIMEOUT
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ActionError(f"{argv[0]} did not finish within {ACTION_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        first = (err.decode(errors="replace").strip().splitlines() or ["no message"])[0]
        raise ActionError(f"{' '.join(argv)} failed (exit {proc.returncode}): {first}")


class Backend:
    """Opens and closes doors; ``test`` mode logs what it would run and runs nothing."""

    closes_itself = False

    def __init__(self, *, test: bool = False) -> None:
        self.test = test

    async def setup(self) -> None:
        return None

    async def open(self, grant: Grant, duration: float) -> None:
        raise NotImplementedError

    async def close(self, grant: Grant) -> None:
        raise NotImplementedError


class NftBackend(Backend):
    """The built-in nftables backend; doors time out in the kernel by themselves."""

    closes_itself = True

    def __init__(self, table: str, mark: int = nftables.DEFAULT_MARK, *, test: bool = False):
        super().__init__(test=test)
        self.table = nftables.check_table(table)
        self.mark = mark

    async def _nft(self, script: str) -> None:
        if self.test:
            log.info("test mode, not running: nft -f - <<%s", script.strip().replace("\n", "; "))
            return
        await run_argv(["nft", "-f", "-"], stdin=script)

    async def setup(self) -> None:
        await self._nft(nftables.setup_script(self.table, self.mark))

    async def open(self, grant: Grant, duration: float) -> None:
        await self._nft(nftables.open_script(self.table, grant, duration))

    async def close(self, grant: Grant) -> None:
        await self._nft(nftables.close_script(self.table, grant))


class CommandBackend(Backend):
    """``open``/``close`` argument-list templates, e.g. an iptables command set."""

    def __init__(self, open_cmd: Command, close_cmd: Command | None, *, test: bool = False):
        super().__init__(test=test)
        self.open_cmd, self.close_cmd = open_cmd, close_cmd
        self.duration = 0.0

    async def _run(self, argv: list[str]) -> None:
        if self.test:
            log.info("test mode, not running: %s", " ".join(argv))
            return
        await run_argv(argv)

    async def open(self, grant: Grant, duration: float) -> None:
        await self._run(self.open_cmd.render(grant, duration))

    async def close(self, grant: Grant) -> None:
        if self.close_cmd is not None:
            await self._run(self.close_cmd.render(grant, 0))
