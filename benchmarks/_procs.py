"""Process and report helpers the benchmarks share (they run as scripts, so it sits beside them)."""

from __future__ import annotations

import signal
import subprocess
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


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP end a run like Ctrl-C, so its namespaces are deleted."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
