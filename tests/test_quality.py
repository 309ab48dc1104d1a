"""The code stays ruff- and mypy-clean: checked as part of the suite, not by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "cmd",
    [
        ("ruff", "check", "aioknock", "tests", "benchmarks", "scripts"),
        ("ruff", "format", "--check", "aioknock", "tests", "benchmarks", "scripts"),
    ],
    ids=["ruff-check", "ruff-format"],
)
def test_ruff(cmd: tuple[str, ...]) -> None:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is part of the [test] extra"
    result = _run(exe, *cmd[1:])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(
        sys.executable, "-m", "mypy", "--strict", "aioknock", "tests", "benchmarks", "scripts"
    )
    assert result.returncode == 0, result.stdout + result.stderr
