"""Start-up and stop: how long a one-host knock takes as a whole process, and how long
the daemon takes to exit on SIGTERM.

    python benchmarks/bench_start.py [--runs 30] [--instructions] [--python PY ...]

1. Whole processes, wall time from spawn to exit, median and best of ``--runs``, in
   rounds that run every command once (a change of load on the machine reaches every row
   alike): ``python -c pass`` (the interpreter alone), ``aioknock run -quiet`` (one
   prototype knock: 9 SYNs at ``-timeout 0`` to 127.0.0.1, where nothing listens),
   ``aioknock run -protocol spa -quiet`` (one SPA datagram to 127.0.0.1), ``aioknock
   connect -quiet`` (the same knock, then a connection to a loopback port this script
   serves, which closes it at once: stdin is /dev/null, so the relay ends at once too);
   and knockd's C ``knock 127.0.0.1 7000 8000 9000`` if installed. Python's bytecode: as
   installed (``pip install`` compiles it; here a fresh ``PYTHONPYCACHEPREFIX`` filled by
   one run first), and with none written (``PYTHONDONTWRITEBYTECODE=1``, as in this
   sandbox's environment), which compiles every module at every start. ``--python``
   (repeatable) runs the aioknock rows with each interpreter given (e.g. two venvs:
   before and after a change), in the same rounds: runs made one after another on a
   shared machine differ by more than a change of a few milliseconds.
2. ``aioknock daemon`` (file mode, command backend, nothing open): SIGTERM to exit,
   median and worst of ``--runs // 3`` starts.
3. With ``--instructions`` (needs valgrind): the instructions each command of 1 executes
   (callgrind, bytecode cached), which the machine's load does not change: a shared
   machine's wall times wander by a factor of two, these by about 1%.

The commands run in a scratch directory: ``python -m`` puts the current directory first
on the module path, so a source tree there would be measured instead of the install.
Packets go only to 127.0.0.1. No root needed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PY = sys.executable
KEY, HMAC = "a" * 43 + "=", "b" * 86 + "=="


def waited(proc: subprocess.Popen[bytes], limit: float) -> int:
    """``proc``'s exit status, waited for in one blocking wait (killed after ``limit``
    seconds). ``Popen.wait(timeout)`` polls instead, sleeping up to 50 ms between looks,
    which rounds what it times up to its next look: 15.5, 31.5, 63.5, 113.5, 163.5 ms..."""
    timer = threading.Timer(limit, proc.kill)
    timer.start()
    try:
        return proc.wait()
    finally:
        timer.cancel()


def wall(cmd: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    status = waited(proc, 30)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise subprocess.CalledProcessError(status, cmd)
    return elapsed


def environments(scratch: Path) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("AIOKNOCK_") and k != "PYTHONDONTWRITEBYTECODE"}  # fmt: skip
    base["HOME"] = str(scratch)
    return {
        "bytecode cached": {**base, "PYTHONPYCACHEPREFIX": str(scratch / "pyc")},
        "no bytecode written": {**base, "PYTHONDONTWRITEBYTECODE": "1"},
    }


def commands(pythons: Sequence[str], port: int) -> list[tuple[str, list[str]]]:
    """The rows; ``port``: where ``connect`` connects (a server that closes at once)."""
    cmds = [("python -c pass", [pythons[0], "-c", "pass"])]
    for py in pythons:
        # Two interpreters: each row says whose (its venv's directory name).
        whose = f" [{Path(py).parent.parent.name}]" if len(pythons) > 1 else ""
        aioknock = [py, "-m", "aioknock", "run", "-quiet", "-timeout", "0"]
        cmds += [
            (f"aioknock run (9 SYNs){whose}", [*aioknock, "127.0.0.1"]),
            (f"aioknock run -protocol spa{whose}", [*aioknock, "-protocol", "spa",
             "-key_base64", KEY, "-hmac_key_base64", HMAC, "127.0.0.1"]),
            (f"aioknock connect (9 SYNs){whose}",
             [py, "-m", "aioknock", "connect", "-quiet", "-timeout", "0", "127.0.0.1",
              str(port)]),
        ]  # fmt: skip
    knock = shutil.which("knock")
    if knock:
        cmds.append(("knockd's knock (3 SYNs)", [knock, "127.0.0.1", "7000", "8000", "9000"]))
    return cmds


def bench_processes(scratch: Path, runs: int, cmds: list[tuple[str, list[str]]]) -> None:
    envs = environments(scratch)
    cases = [(label, cmd, env_name) for label, cmd in cmds for env_name in envs]
    for _, cmd, env_name in cases:  # warm the page cache and the bytecode cache
        wall(cmd, envs[env_name])
    times: dict[tuple[str, str], list[float]] = {(c[0], c[2]): [] for c in cases}
    for _ in range(runs):
        for label, cmd, env_name in cases:
            times[label, env_name].append(wall(cmd, envs[env_name]))
    print(f"1. Whole processes, wall time, median / best of {runs} (ms):")
    print(f"{'command':<40}" + "".join(f"{name:>26}" for name in envs))
    for label, _ in cmds:
        cells = [times[label, env_name] for env_name in envs]
        print(f"{label:<40}" + "".join(
            f"{statistics.median(t) * 1000:8.1f} / {min(t) * 1000:6.1f}".rjust(26) for t in cells
        ))  # fmt: skip


def instructions(cmd: Sequence[str], env: dict[str, str]) -> float:
    """Millions of instructions ``cmd`` executes under callgrind."""
    grind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    out = subprocess.run([*grind, *cmd], env={**env, "PYTHONHASHSEED": "0"},
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(m.group(1)) / 1e6


def bench_instructions(scratch: Path, cmds: list[tuple[str, list[str]]]) -> None:
    if shutil.which("valgrind") is None:
        print("\n3. instructions: valgrind is not installed")
        return
    env = environments(scratch)["bytecode cached"]
    print("\n3. Instructions executed (millions, callgrind; bytecode cached):")
    for label, cmd in cmds:
        print(f"{label:<40}{instructions(cmd, env):>10.1f}")


@contextlib.contextmanager
def closing_server() -> Iterator[int]:
    """A loopback port whose connections are accepted and closed at once."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        done = threading.Event()

        def serve() -> None:
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    server.accept()[0].close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            done.set()
            thread.join(2)


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
        waited(proc, 10)
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
    parser.add_argument("--instructions", action="store_true",
                        help="also count each command's instructions (valgrind)")  # fmt: skip
    parser.add_argument("--python", action="append", metavar="PY",
                        help="an interpreter that has aioknock (default: this one)")  # fmt: skip
    args = parser.parse_args(argv)
    pythons = args.python or [PY]
    with (
        tempfile.TemporaryDirectory(prefix="aioknock-bench-start-") as tmp,
        contextlib.chdir(tmp),  # -m aioknock imports the installed package, not ./aioknock
        closing_server() as port,
    ):
        cmds = commands(pythons, port)
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")  # fmt: skip
        bench_processes(Path(tmp), args.runs, cmds)
        bench_daemon(Path(tmp), args.runs)
        if args.instructions:
            bench_instructions(Path(tmp), cmds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
