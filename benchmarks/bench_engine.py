"""Packets per second through the daemon's engine alone: no socket, no log, no firewall.

    python benchmarks/bench_engine.py [--packets N] [--sources N] [--knocks N]

A flood of random SYNs (a quarter of them into the span, from ``--sources`` addresses)
with ``--knocks`` genuine encrypted knocks woven in is built first; then the packets
are fed to ``Engine.receive`` in batches of 256, as the daemon's capture hands them
over, and the engine's actions taken after each batch. Prints the rate, the verdicts,
and the best of three runs. The daemon's settings defaults (Blowfish, ``iv = yes``,
32 ports per knock, ``max_sources = 10000``) except the key.
"""

from __future__ import annotations

import argparse
import random
import time

from aioknock import DaemonSettings
from aioknock.asyncio.client import plan_knock
from aioknock.config.settings import ClientSettings
from aioknock.daemon.encoded import EncodedKnocks
from aioknock.daemon.engine import Engine, Policy
from aioknock.daemon.packet import Packet

NOW = 1_764_000_000.0
BATCH = 256


def stream(packets: int, sources: int, knocks: int, seed: int = 1) -> list[Packet]:
    rng = random.Random(seed)
    client = ClientSettings.of(encrypt=True, key="bench")
    out = [
        Packet(NOW + i * 1e-5, f"198.19.{rng.randrange(sources) // 250}.{rng.randrange(250)}",
               rng.randrange(745, 1001) if rng.random() < 0.25 else rng.randrange(1, 745),
               "tcp", rng.randrange(1024, 65536))
        for i in range(packets)
    ]  # fmt: skip
    for j in range(knocks):
        src = f"198.18.1.{j + 1}"
        ports = plan_knock(client, src, NOW).ports
        at = (j + 1) * packets // (knocks + 1)
        for m, port in enumerate(ports):
            out.insert(at + 40 * m, Packet(out[at].now, src, port, "tcp", 40000 + m))
    return out


def run(packets: list[Packet]) -> tuple[float, dict[str, int]]:
    settings = DaemonSettings.of(encrypt=True, key="bench", backend="command", open="true")
    recognizer = EncodedKnocks(
        settings.codec, knock_timeout=settings.knock_timeout, max_sources=settings.max_sources,
        time_tolerance=settings.time_tolerance, allow_nat=settings.allow_nat,
    )  # fmt: skip
    engine = Engine(Policy(settings.duration, settings.cooldown), [recognizer])
    start = time.perf_counter()
    for i in range(0, len(packets), BATCH):
        for packet in packets[i : i + BATCH]:
            engine.receive(packet)
        engine.actions()
    return time.perf_counter() - start, engine.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--knocks", type=int, default=5)
    args = parser.parse_args()
    packets = stream(args.packets, args.sources, args.knocks)
    best, counts = min((run(packets) for _ in range(3)), key=lambda result: result[0])
    print(f"{len(packets):,} packets through Engine.receive: {len(packets) / best:,.0f} packets/s "
          f"(best of 3); verdicts {counts}")  # fmt: skip


if __name__ == "__main__":
    main()
