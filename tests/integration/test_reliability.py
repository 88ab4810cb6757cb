"""`make reliability`'s quick mode: every scenario with smaller loads against the real stack, every invariant
counted from the emulator's and Redis's own state. The table is printed; any row that does not hold fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pytorchjob_rules import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(960)  # above the run's own 900 s, so a slow machine gets the run's answer, not a kill
def test_the_quick_reliability_run_holds_in_every_scenario(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "reliability", "--quick", "--workdir", str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    print(done.stdout)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-5000:]}"
    table = done.stdout
    for scenario in ("cluster faults", "workers killed", "a second beat", "objects changed behind the broker",
                     "API restarts", "Redis restarts", "fuzzed bodies"):
        assert f"| {scenario} |" in table
    assert "**NO**" not in table
