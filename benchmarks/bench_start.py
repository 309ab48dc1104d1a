"""Start-up and stop: how long a one-host knock takes as a whole process, and how long
the daemon takes to exit on SIGTERM.

    python benchmarks/bench_start.py [--runs 30]

1. Whole processes, wall time from spawn to exit, median and best of ``--runs``, one
   after another in one run: ``python -c pass`` (the interpreter alone), ``aioknock run
   -quiet`` (one prototype knock: 9 SYNs at ``-timeout 0`` to 127.0.0.1, where nothing
   listens), ``aioknock run -protocol spa -quiet`` (one SPA datagram to 127.0.0.1),
   ``aioknock connect`` is measured by its own tests; and knockd's C ``knock 127.0.0.1
   7000 8000 9000`` if installed. Python's bytecode: as installed (``pip install``
   compiles it; here a fresh ``PYTHONPYCACHEPREFIX`` filled by one run first), and with
   none written (``PYTHONDONTWRITEBYTECODE=1``, as in this sandbox's environment), which
   compiles every module at every start.
2. ``aioknock daemon`` (file mode, command backend, nothing open): SIGTERM to exit,
   median and worst of ``--runs // 3`` starts.

Packets go only to 127.0.0.1. No root needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PY = sys.executable
KEY, HMAC = "a" * 43 + "=", "b" * 86 + "=="


def wall(cmd: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=30)  # fmt: skip
    return time.perf_counter() - start


def timed(cmd: Sequence[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    wall(cmd, env)  # warm the page cache (and the bytecode cache, where one is written)
    times = [wall(cmd, env) for _ in range(runs)]
    return statistics.median(times), min(times)


def environments(scratch: Path) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("AIOKNOCK_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    base["HOME"] = str(scratch)
    return {
        "bytecode cached": {**base, "PYTHONPYCACHEPREFIX": str(scratch / "pyc")},
        "no bytecode written": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
    }


def commands() -> list[tuple[str, list[str]]]:
    aioknock = [PY, "-m", "aioknock", "run", "-quiet", "-timeout", "0"]
    cmds = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("aioknock run (9 SYNs)", [*aioknock, "127.0.0.1"]),
        ("aioknock run -protocol spa", [*aioknock, "-protocol", "spa", "-key_base64", KEY,
                                        "-hmac_key_base64", HMAC, "127.0.0.1"]),
    ]  # fmt: skip
    knock = shutil.which("knock")
    if knock:
        cmds.append(("knockd's knock (3 SYNs)", [knock, "127.0.0.1", "7000", "8000", "9000"]))
    return cmds


def bench_processes(scratch: Path, runs: int) -> None:
    print(f"1. Whole processes, wall time, median / best of {runs} (ms):")
    print(f"{'command':<30}" + "".join(f"{name:>26}" for name in environments(scratch)))
    for label, cmd in commands():
        cells = []
        for env in environments(scratch).values():
            median, best = timed(cmd, env, runs)
            cells.append(f"{median * 1000:8.1f} / {best * 1000:6.1f}")
        print(f"{label:<30}" + "".join(f"{c:>26}" for c in cells))


def daemon_stop(scratch: Path, env: dict[str, str]) -> float:
    log = scratch / "fw.log"
    log.touch()
    conf = scratch / "knockdaemon.conf"
    conf.write_text(f"runmode = file\nlogfile = {log}\nlog_format = client\n"
                    "backend = command\nopen = true\n")  # fmt: skip
    err = scratch / "daemon.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen([PY, "-m", "aioknock", "daemon", "-conf", str(conf)],
                                env=env, stdout=subprocess.DEVNULL, stderr=out)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while b"following" not in err.read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the daemon did not start: {err.read_text()}")
            time.sleep(0.005)
        time.sleep(0.05)
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        return time.perf_counter() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def bench_daemon(scratch: Path, runs: int) -> None:
    env = environments(scratch)["bytecode cached"]
    times = [daemon_stop(scratch, env) for _ in range(max(3, runs // 3))]
    print(f"\n2. aioknock daemon, SIGTERM to exit (nothing open), {len(times)} starts: "
          f"median {statistics.median(times) * 1000:.1f} ms, "
          f"worst {max(times) * 1000:.1f} ms (target < 200 ms)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aioknock-bench-start-") as tmp:
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
        bench_processes(Path(tmp), args.runs)
        bench_daemon(Path(tmp), args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
