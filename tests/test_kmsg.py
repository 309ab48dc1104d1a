"""The /dev/kmsg reader: record parsing, batching and errors, over a FIFO that stands
in for the device (the namespace tests read the real one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from aioknock.asyncio.kmsg import Kmsg, KmsgError, record_text

LINE = (
    "nft-knock: IN=eth0 OUT= MAC=00 SRC=198.18.0.1 DST=198.18.0.2 LEN=60 TOS=0x00 PREC=0x00 "
    "TTL=64 ID=1 DF PROTO=TCP SPT=40000 DPT=800 WINDOW=64240 RES=0x00 SYN URGP=0"
)


@pytest.mark.parametrize(
    ("record", "text"),
    [
        (f"6,1234,5678901,-;{LINE}\n".encode(), LINE),
        (f"4,7,8,c;{LINE}\n SUBSYSTEM=net\n DEVICE=+net:eth0\n".encode(), LINE),
        (b"6,1,2,-;a;b;c\n", "a;b;c"),  # only the first ; ends the header
        (b" SUBSYSTEM=net", None),  # a continuation line alone
        (b"no header here", None),
        (b"6,1;short header", None),
        (f"14,9,10,-;{LINE}\n".encode(), None),  # facility user: written by a process
        (f"x,9,10,-;{LINE}\n".encode(), None),
        (b"6,1,2,-;caf\xc3\xa9 \xff\n", "caf\u00e9 \ufffd"),
    ],
)
def test_record_text(record: bytes, text: str | None) -> None:
    assert record_text(record) == text


async def test_reads_records_as_they_come(tmp_path: Path) -> None:
    fifo = tmp_path / "kmsg"
    os.mkfifo(fifo)
    reader = Kmsg(str(fifo)).lines()
    first = asyncio.ensure_future(anext(reader))  # opens the FIFO (non-blocking)
    await asyncio.sleep(0.05)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, f"6,1,10,-;{LINE}\n SUBSYSTEM=net\n".encode())
        assert await asyncio.wait_for(first, 2) == [LINE]
        os.write(writer, b"6,2,11,-;second\n6,3,12,-;third\n")
        assert await asyncio.wait_for(anext(reader), 2) == ["second", "third"]
        nothing = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0.2)
        assert not nothing.done()  # waits for the next record, does not spin
        nothing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await nothing
    finally:
        os.close(writer)
        await reader.aclose()


async def test_missing_or_unreadable_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KmsgError, match=r"cannot read .*nowhere: No such file or directory"):
        await anext(Kmsg(str(tmp_path / "nowhere")).lines())
