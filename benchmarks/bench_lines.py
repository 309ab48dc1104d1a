"""Microseconds per line, per reader, for ordinary and hostile lines of growing size.

    python benchmarks/bench_lines.py [--repeat N]

A reader that is linear in the line takes about twice as long for a line twice as
long; one that backtracks takes four times or more. Log lines are cut at the
follower's cap (``MAX_LINE``), as the daemon sees them; configuration lines (the
Config::General reader, issue 12 point 12: 2,000 ``<`` once took 11.7 s) are not.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from aioknock.asyncio.follow import MAX_LINE
from aioknock.config.general import parse_general
from aioknock.config.settings import DEFAULT_FILEFORMAT
from aioknock.daemon.logreader import LineReader
from aioknock.errors import ConfigError

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


CONFIG_HOSTILE = {
    "<": "<",
    "spaces": " ",
    "spaces then x": " ",
    "<<include ": "<<include ",
    ">>": ">>",
    " <<": " <<",
    '<a "': ' "',
    "/*": "/*",
    "a =": " =",
}
CONFIG_SIZES = (2000, 4000, 8000, 16000)


def config_line(label: str, unit: str, size: int) -> str:
    line = (unit * size)[:size]
    if label == "spaces then x":
        return line + "x = 1"
    return "<a" + line + ">" if label.startswith("<a") else line


def per_config_line(line: str, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        with contextlib.suppress(ConfigError):  # not an option, but still read whole
            parse_general(line + "\n")
    return (time.perf_counter() - start) / repeat * 1e6


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
    print()
    head = " ".join(f"{s:>9,}B" for s in CONFIG_SIZES)
    print(f"{'config line':<37} {head}   (us/line, Config::General reader)")
    for label, unit in CONFIG_HOSTILE.items():
        lines = [config_line(label, unit, size) for size in CONFIG_SIZES]
        cells = [per_config_line(line, args.repeat) for line in lines]
        print(f"{label + ' repeated':<37} " + " ".join(f"{c:>10.1f}" for c in cells))


if __name__ == "__main__":
    main()
