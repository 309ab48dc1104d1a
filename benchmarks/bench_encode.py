"""Knocks encoded per second (pure codec: fields, cipher, port span), per cipher and IV setting.

    python benchmarks/bench_encode.py [--seconds S]

Prints one line per configuration. The codec is built once, as the sender does, so
the figure is the per-knock cost: packing, padding, CBC encryption with a fresh IV,
and the port mapping.
"""

from __future__ import annotations

import argparse
import secrets
import time
from typing import TYPE_CHECKING

from aioknock.codec.ciphers import CryptCBC, Plain
from aioknock.codec.fields import KnockFormat, KnockInputs
from aioknock.codec.pipeline import Codec
from aioknock.codec.portspan import PortSpan

if TYPE_CHECKING:
    from aioknock.codec.ciphers import Cipher

FORMAT = "CLIENT,PORT,RAND,THISMINUTE,CHECKSUM"


def measure(codec: Codec, seconds: float) -> float:
    inputs = KnockInputs("198.18.0.1", 22, {}, 7)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            codec.build(inputs, 1_764_000_000.0, secrets.token_bytes)
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per configuration")
    args = parser.parse_args()
    span = PortSpan.parse("745-1000")
    configs: list[tuple[str, Cipher]] = [("plain", Plain())]
    for name in ("Blowfish", "CAST5", "DES", "DES_EDE3"):
        for iv in (True, False):
            configs.append((f"{name} iv={'yes' if iv else 'no'}", CryptCBC(name, b"k", iv=iv)))
    print(f"{'cipher':<20} {'knocks/s':>12}   format {FORMAT}, portspan 745-1000")
    for label, cipher in configs:
        rate = measure(Codec(KnockFormat.parse(FORMAT), cipher, span), args.seconds)
        print(f"{label:<20} {rate:>12,.0f}")


if __name__ == "__main__":
    main()
