"""`trainer.host_memory`: with the threshold the trainer sets, freed tensor memory leaves the process.

Each case runs in a fresh interpreter (glibc's malloc settings are per process): allocate and free a few hundred
MB of 8 MiB tensors, interleaved with small ones that keep the heap's top in use, and read RssAnon afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.host_memory import DEFAULT_THRESHOLD, configure_malloc, mmap_threshold

ROOT = Path(__file__).resolve().parents[2]
CHURN = """
import json, sys, torch
from trainer.host_memory import configure_malloc
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) // 1024
set_to = configure_malloc()
before = anon()
keep = []
for _ in range(3):
    big = [torch.ones(2**21) for _ in range(40)]  # 40 x 8 MiB
    keep += [torch.ones(64) for _ in range(40)]    # small survivors between the big ones
    del big
print(json.dumps({"set": set_to, "retained_mb": anon() - before}))
"""


def churn(extra_env: dict[str, str]) -> dict[str, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra_env}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", CHURN], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_freed_tensors_leave_the_process() -> None:
    got = churn({"WORLD_SIZE": "2"})  # one rank of two: the default threshold
    assert got["set"] == DEFAULT_THRESHOLD
    assert got["retained_mb"] < 40, got  # 320 MB allocated per round, none of it kept
    control = churn({"TRAINER_MALLOC_MMAP_THRESHOLD": "0", "WORLD_SIZE": "2"})  # glibc's dynamic threshold:
    assert control["set"] == 0 and control["retained_mb"] > 200, control      # the heap keeps it
    single = churn({"WORLD_SIZE": "1"})  # a single process keeps glibc's default, unless told
    assert single["set"] == 0 and single["retained_mb"] > 200, single
    told = churn({"WORLD_SIZE": "1", "TRAINER_MALLOC_MMAP_THRESHOLD": str(DEFAULT_THRESHOLD)})
    assert told["set"] == DEFAULT_THRESHOLD and told["retained_mb"] < 40, told


def test_threshold_from_the_environment() -> None:
    assert mmap_threshold({"WORLD_SIZE": "16"}) == DEFAULT_THRESHOLD
    assert mmap_threshold({}) == 0 and mmap_threshold({"WORLD_SIZE": "1"}) == 0  # one process: glibc's default
    assert mmap_threshold({"WORLD_SIZE": "1", "TRAINER_MALLOC_MMAP_THRESHOLD": "4194304"}) == 4 << 20
    assert mmap_threshold({"TRAINER_MALLOC_MMAP_THRESHOLD": "4194304"}) == 4 << 20
    assert mmap_threshold({"TRAINER_MALLOC_MMAP_THRESHOLD": "0"}) == 0
    assert mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) == 0  # glibc already read the user's own setting
    assert configure_malloc({"TRAINER_MALLOC_MMAP_THRESHOLD": "0"}) == 0


def test_a_threshold_that_is_not_a_number_is_a_one_line_error_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        mmap_threshold({"TRAINER_MALLOC_MMAP_THRESHOLD": "1MiB"})
    assert exited.value.code == 2
    assert "TRAINER_MALLOC_MMAP_THRESHOLD must be a number of bytes" in capsys.readouterr().err
