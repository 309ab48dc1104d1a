"""Process and report helpers the benchmarks share (they run as scripts, so it sits beside them)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def run(cmd: list[str], *, timeout: float = 10.0, input: str | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """Stop a process we started (by its own pid), then reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(wait)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "FAIL"


def print_checks(checks: Iterable[tuple[bool | None, str]], started: float) -> None:
    """A run's PASS/FAIL lines, then how long it took (``started``: its monotonic start)."""
    checks = list(checks)
    if checks:
        print("\nChecks:")
        for ok, text in checks:
            print(f"  [{verdict(ok)}] {text}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nwhole run: {time.monotonic() - started:.1f} s; load average {load}")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP end a run like Ctrl-C, so its namespaces are deleted."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


def print_head(head: str) -> None:
    """A table's head line, underlined."""
    print(head)
    print("-" * len(head))


def daemon_run_options(parser: argparse.ArgumentParser) -> None:
    """The last options of a benchmark that runs the daemon: --seed, --profile, --keep."""
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the daemon")
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")


def need_root(parser: argparse.ArgumentParser, commands: Iterable[str]) -> None:
    """Stop at the arguments unless this runs as root on Linux, with ``commands`` at hand."""
    if sys.platform != "linux" or os.geteuid() != 0:
        parser.error("needs root on Linux (network namespaces, nftables, raw sockets)")
    if missing := sorted({c for c in commands if shutil.which(c) is None}):
        parser.error(f"missing commands: {', '.join(missing)}")


@contextlib.contextmanager
def scratch(prefix: str, keep: bool) -> Iterator[Path]:
    """A temporary folder for a run's files, removed at the end unless ``keep``. Ctrl-C
    (SIGTERM, SIGHUP: ``interrupt_on_signals``) ends the program with status 130 once
    the ``with`` blocks inside, which delete the namespaces, are done."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    except KeyboardInterrupt:
        print("\ninterrupted; namespaces removed", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if keep:
            print(f"\nfiles kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def own_namespace(name: str) -> Iterator[str]:
    """A fresh network namespace ``name`` with ``lo`` up, deleted again at the end."""
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
