"""Shared fixtures, the run-time root check, and keeping the source tree clean.

Nothing the suite does writes into the source tree: this process writes no bytecode,
the Python subprocesses tests start write theirs to a temporary directory of this run
(``PYTHONPYCACHEPREFIX``), and so do Hypothesis, mypy and ruff (test_quality.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

# ------------------------------------------------------- nothing into the source tree

# Before anything from the tree is imported: no bytecode from this process.  This
# module's own was written before it could say so (assertion rewriting); remove it.
sys.dont_write_bytecode = True
_PYCACHE = Path(__file__).parent / "__pycache__"
for _pyc in _PYCACHE.glob("conftest.*.pyc"):
    _pyc.unlink(missing_ok=True)
with contextlib.suppress(OSError):
    _PYCACHE.rmdir()  # only if empty

#: This run's scratch directory for caches; removed again in ``pytest_unconfigure``.
SCRATCH = Path(tempfile.mkdtemp(prefix="aioknock-tests-"))
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(SCRATCH / "pycache"))  # subprocesses
os.environ.setdefault("MYPY_CACHE_DIR", str(SCRATCH / "mypy"))
os.environ.setdefault("RUFF_CACHE_DIR", str(SCRATCH / "ruff"))
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(SCRATCH / "hypothesis")  # example database, constants cache

from helpers.netns import NetnsPair, check_root, netns_pair  # noqa: E402

from aioknock.config import loader  # noqa: E402


def pytest_unconfigure() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)


# ------------------------------------------------------------------- root, at run time


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``root`` (``requires_root``) are checked here, when they are set up,
    not when their module is imported: skipped without root and network namespaces,
    failed instead under ``CI=true`` (``check_root``).  Runs after ``skipif`` marks and
    before the test's fixtures."""
    if item.get_closest_marker("root") is not None:
        check_root()


# ------------------------------------------------------------ environment isolation


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AIOKNOCK_* variable from the caller's environment."""
    for name in list(os.environ):
        if name.upper().startswith("AIOKNOCK_"):
            monkeypatch.delenv(name)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Path:
    """No real config file is found, and no AIOKNOCK_* variable leaks in; returns tmp_path.

    Empty ``home/`` (``HOME``), ``xdg/`` (``XDG_CONFIG_HOME``), ``prefix/bin/`` (the
    running script's folder, ``sys.argv[0]``) and ``etc/`` (``SYSTEM_DIR`` is
    ``etc/aioknock``) under tmp_path.
    """
    home, xdg, bin_dir, etc = (tmp_path / d for d in ("home", "xdg", "prefix/bin", "etc"))
    for d in (home, xdg, bin_dir, etc):
        d.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "aioknock")])
    monkeypatch.setattr(loader, "SYSTEM_DIR", etc / "aioknock")
    return tmp_path


@pytest.fixture
def home(isolated: Path) -> Path:
    """``isolated``'s (empty) HOME directory."""
    return isolated / "home"


# ------------------------------------------------------------------ namespace pair


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    """A client/server network namespace pair (``netns_pair()``), removed afterwards."""
    with netns_pair() as p:
        yield p


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of an ``aioknock`` subprocess: this tree importable, no config of
    the user's (HOME and XDG in tmp), bytecode out of the tree."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "PYTHONPYCACHEPREFIX": os.environ["PYTHONPYCACHEPREFIX"],
    }
