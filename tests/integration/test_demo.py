"""`make demo` itself, run as a user runs it (in its own folder): every framework trains, cancel and resume work, a
killed trainer is recovered automatically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1300)  # the demo's own phases are bounded; its subprocess gets 1200 s
def test_the_demo_trains_every_framework_and_resumes_a_cancelled_run(tmp_path: Path) -> None:
    argv = [sys.executable, str(REPO / "scripts" / "demo.py"), "--dir", str(tmp_path / "demo")]
    demo = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = demo.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        demo.terminate()  # on SIGTERM the demo stops every process it started and prints its summary
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, out[-6000:] + err[-3000:]
    summary = out[out.index("=== Summary ===") :]
    for framework in ("hf", "nemo", "meta"):
        assert f"framework {framework} succeeded (attempt 1)" in summary
    assert "framework hf cancelled (attempt 1)" in summary and "framework hf succeeded (attempt 2)" in summary
    assert "resuming from step" in summary
    assert "recovered automatically, 2 of 2 attempts used" in summary
    assert "Flower: http://127.0.0.1:" in out and "demo: every job ended as expected" in out
    assert "stopped worker" in out and "stopped redis" in out
