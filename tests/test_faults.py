"""Issue 12's fault script, run as the suite's own test: every fault as expected.

``scripts/faults.py`` drives the real daemon through kill -9, a full disk under its
replay file, SIGHUP with each bad configuration and a hung firewall command, in
namespaces it creates and removes; it prints its table, which a failure shows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.netns import requires_root

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "faults.py"


@requires_root
def test_every_fault_is_survived() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    rows = res.stdout.splitlines()[2:]
    assert len(rows) >= 20 and all("  ok  " in row for row in rows), res.stdout
    for fault in ("kill -9", "full disk", "SIGHUP", "hangs"):
        assert any(fault in row for row in rows), (fault, res.stdout)


def test_the_script_lists_its_faults_without_root() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--list"], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout.split() == ["kill9", "enospc", "sighup", "hung"]
    bad = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope"], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and "unknown fault(s): nope" in bad.stderr
