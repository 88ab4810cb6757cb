"""The nemo runner trains the tiny model for real with Lightning: `.ckpt` checkpoints every 10 steps in the shared
layout on local storage and S3, a `kill -9` resume through `ckpt_path` that continues with the uninterrupted run's
losses. This venv has no NeMo (plain Lightning checkpointing); the runs driven by NeMo's `exp_manager`, in the NeMo
interpreter, are `test_nemo_toolkit.py`'s."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from devstack.s3 import S3Server
from tests.trainer.metrics_api import assert_api_reads_the_runs_metrics
from tests.trainer.runs import (
    check_layout,
    kill_group,
    python_m_trainer,
    read_jsonl,
    run,
    start,
    trainer_args,
    trainer_env,
    wait_for,
)
from trainer.checkpoints import CheckpointManager
from trainer.storage import LocalStorage, S3Storage

pytestmark = pytest.mark.slow
# Accumulation and dropout on: resuming exactly needs the data position and the RNG state, not only the weights.
TRAINING = {"save_steps": 10, "logging_steps": 5, "batch_size": 8, "gradient_accumulation": 4, "block_size": 64,
            "lr": 1e-3, "warmup_steps": 5, "seed": 3}


def train_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float, float]]:
    return {int(r["step"]): (r["loss"], r["lr"], r["grad_norm"]) for r in rows if r.get("kind") == "train"}


@pytest.fixture(scope="module")
def reference_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 40-step run on local storage (checked; the baseline for the resume test)."""
    base = tmp_path_factory.mktemp("nemo-ref")
    args = trainer_args("nemo", "ref", str(base / "runs"), str(sample_dataset), str(tiny_model), max_steps=40,
                        **TRAINING)
    result = run(python_m_trainer(args), trainer_env(base / "work"))
    prefix = base / "runs" / "ref" / "framework=nemo"
    layout = check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)
    return {"prefix": prefix, "layout": layout, "stderr": result.stderr}


def test_trains_and_checkpoints_ckpt_files_every_10_steps_on_local_storage(reference_run: dict) -> None:
    layout = reference_run["layout"]
    manifest = layout["manifests"][20]
    assert manifest.name == "step-000020.ckpt" and [f.path for f in manifest.files] == ["step-000020.ckpt"]
    assert manifest.metadata["format"] == "lightning-ckpt"
    ckpt = torch.load(reference_run["prefix"] / "checkpoints" / "step-000020.ckpt", weights_only=False)
    assert ckpt["global_step"] == 20 and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert len(ckpt["trainer_rng"]) == 1 and ckpt["trainer_data"]["micro_batches"] == 80
    assert any(k.startswith("model.") for k in ckpt["state_dict"])
    rows = layout["train_rows"]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert [m["step"] for m in layout["metrics"] if m.get("kind") == "eval"] == [10, 20, 30, 40]
    summary = [m for m in layout["metrics"] if m.get("kind") == "summary"]
    assert summary and summary[0]["steps_per_s"] > 0
    assert "plain Lightning checkpointing" in layout["log"]  # no NeMo in this environment
    print(f"\nnemo (Lightning) single process: {summary[0]['steps_per_s']:.1f} steps/s")


def test_resumes_after_kill_9_through_ckpt_path_with_the_same_losses(reference_run: dict, tiny_model: Path,
                                                                     sample_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    prefix = runs / "crash" / "framework=nemo"
    args = trainer_args("nemo", "crash", str(runs), str(sample_dataset), str(tiny_model), max_steps=40, **TRAINING)
    env = trainer_env(tmp_path / "work")
    proc = start(python_m_trainer(args), env, tmp_path / "first.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000010.json").exists(), timeout=180, proc=proc)
    kill_group(proc)
    killed_at = CheckpointManager(LocalStorage(), str(prefix / "checkpoints")).latest()
    assert killed_at is not None and killed_at.step < 40, "the run finished before it was killed"
    # A checkpoint whose upload never finished (the file, no manifest) must be ignored.
    shutil.copy(prefix / "checkpoints" / "step-000010.ckpt", prefix / "checkpoints" / "step-000035.ckpt")

    result = run(python_m_trainer([*args, "--resume"]), env)
    assert f"resuming from step {killed_at.step}" in result.stderr
    assert "Restoring states from the checkpoint path at" in result.stderr
    assert f"nemo: resumed at step {killed_at.step} (RNG restored)" in result.stderr
    check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)
    resumed = train_rows(read_jsonl(LocalStorage(), str(prefix / "logs" / "metrics.jsonl")))
    assert resumed == train_rows(reference_run["layout"]["metrics"])


def test_sigterm_passes_through_lightnings_handler_and_marks_the_run_terminated(tiny_model: Path,
                                                                                 sample_dataset: Path,
                                                                                 tmp_path: Path) -> None:
    """Lightning composes its own SIGTERM handler with train.py's: the run must still unwind, flush and exit 143."""
    runs = tmp_path / "runs"
    prefix = runs / "cancel" / "framework=nemo"
    args = trainer_args("nemo", "cancel", str(runs), str(sample_dataset), str(tiny_model), max_steps=5000,
                        **TRAINING)
    proc = start(python_m_trainer(args), trainer_env(tmp_path / "work"), tmp_path / "out.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000010.json").exists(), timeout=180, proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    progress = json.loads((prefix / "logs" / "progress.json").read_text())
    assert progress["state"] == "terminated" and progress["step"] >= 10
    assert "terminated by SIGTERM" in (prefix / "logs" / "train-rank0.log").read_text()


def test_trains_and_resumes_on_s3(s3_server: S3Server, s3_bucket: str, tiny_model: Path, sample_dataset: Path,
                                  tmp_path: Path) -> None:
    storage = S3Storage()
    storage.put_file(sample_dataset, f"s3://{s3_bucket}/datasets/v1/part-0.jsonl")
    base = f"s3://{s3_bucket}/runs"
    dataset = f"s3://{s3_bucket}/datasets/v1"
    env = trainer_env(tmp_path / "work")
    run(python_m_trainer(trainer_args("nemo", "s3-run", base, dataset, str(tiny_model), max_steps=20,
                                      **TRAINING)), env)
    prefix = f"{base}/s3-run/framework=nemo"
    check_layout(storage, prefix, [10, 20], total_steps=20)
    assert "runs/s3-run/framework=nemo/checkpoints/step-000020.ckpt" in s3_server.keys(s3_bucket, "runs/")

    # 25 is not a multiple of save_steps: the last step still gets its checkpoint.
    result = run(python_m_trainer(trainer_args("nemo", "s3-run", base, dataset, str(tiny_model), max_steps=25,
                                               resume=True, **TRAINING)), env)
    assert "nemo: resumed at step 20 (RNG restored)" in result.stderr
    layout = check_layout(storage, prefix, [10, 20, 25], total_steps=25)
    assert [r["step"] for r in layout["train_rows"]] == [5, 10, 15, 20, 25]


def test_the_api_metrics_series_reads_what_this_runner_wrote(reference_run: dict, redis_url: str,
                                                              tmp_path: Path) -> None:
    assert_api_reads_the_runs_metrics(redis_url, tmp_path / "jobs", Path(reference_run["prefix"]))
