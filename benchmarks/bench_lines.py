"""Microseconds per log line, per reader, for ordinary and hostile lines of growing size.

    python benchmarks/bench_lines.py [--repeat N]

A reader that is linear in the line takes about twice as long for a line twice as
long; one that backtracks takes four times or more. Lines are cut at the follower's
cap (``MAX_LINE``), as the daemon sees them.
"""

from __future__ import annotations

import argparse
import time

from aioknock.asyncio.follow import MAX_LINE
from aioknock.config.settings import DEFAULT_FILEFORMAT
from aioknock.daemon.logreader import LineReader

KERNEL_LINE = (
    "Nov 26 14:27:02 fw kernel: [12.3] knock: IN=eth0 OUT= MAC=02:00:00:00:00:01 "
    "SRC=198.18.0.1 DST=198.18.0.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=1 DF PROTO=TCP "
    "SPT=40000 DPT=745 WINDOW=64240 RES=0x00 SYN URGP=0"
)
HOSTILE = {
    "IN= repeated": "IN=",
    "IN=x OUT? repeated": "IN=x OUT? ",
    "spaces": " ",
    "SRC= repeated": "SRC=",
    "letters": "a",
}


def per_line(reader: LineReader, line: str, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        reader.decode(line, 0.0)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    readers = {
        "kernel": LineReader.build("kernel"),
        "kernel, prefix": LineReader.build("kernel", prefix="knock: "),
        "client template": LineReader.build("client", DEFAULT_FILEFORMAT),
    }
    sizes = (1024, 2048, 4096, MAX_LINE)
    print(f"{'reader':<16} {'line':<20} " + " ".join(f"{s:>9,}B" for s in sizes) + "   (us/line)")
    for name, reader in readers.items():
        print(f"{name:<16} {'a real SYN':<20} {per_line(reader, KERNEL_LINE, 1000):>10.1f}")
        for label, unit in HOSTILE.items():
            cells = [per_line(reader, (unit * size)[:size], args.repeat) for size in sizes]
            print(f"{name:<16} {label:<20} " + " ".join(f"{c:>10.1f}" for c in cells))


if __name__ == "__main__":
    main()
