"""bench/gpu_check.sh keeps running: its CPU path (`--dry-run`: a tiny Llama, fp32) trains every runner through the
real trainer in two launches (save, then resume) and the bare loop, and prints the one table. The GPU figures
themselves come from running the script on a GPU machine (docs/PERFORMANCE.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"


def test_the_dry_run_trains_saves_and_resumes_every_runner_and_prints_one_table(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run([str(SCRIPT), "--dry-run", "--steps", "4", "--json", str(out)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["meta", "hf", "nemo", "bare loop"]
    for name in ("meta", "hf", "nemo"):
        assert rows[name]["note"].startswith("4 steps in 2 launches, resumed at step 2"), rows[name]
        assert rows[name]["tokens_per_s"] and rows[name]["mfu"] is None  # no peak FLOP/s for a CPU
    assert rows["bare loop"]["tokens_per_s"] > 0
    table = result.stdout
    assert "| run | tokens/s | MFU | note |" in table and table.count("\n| ") >= 5


def test_without_a_gpu_the_gpu_path_refuses_clearly() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([str(SCRIPT), "--steps", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no CUDA device" in result.stderr
