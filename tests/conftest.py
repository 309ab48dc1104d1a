"""Shared fixtures and the run-time root check."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.netns import NetnsPair, check_root, netns_pair

from aioknock.config import loader

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
