"""The hf runner trains the tiny model for real, on local storage and on S3, checkpoints every 10 steps into the
shared layout, resumes after `kill -9`, and runs with two processes under torchrun from the `train.py` path."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from devstack.s3 import S3Server
from tests.trainer.metrics_api import assert_api_reads_the_runs_metrics
from tests.trainer.runs import (
    HF_TRAINING,
    check_layout,
    kill_group,
    losses,
    python_m_trainer,
    read_jsonl,
    run,
    start,
    torchrun_train_py,
    trainer_args,
    trainer_env,
    wait_for,
)
from trainer.checkpoints import CheckpointManager
from trainer.storage import LocalStorage, S3Storage

pytestmark = pytest.mark.slow
TRAINING = HF_TRAINING


@pytest.fixture(scope="module")
def reference_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 40-step run on local storage (checked, and the baseline for the resume test)."""
    base = tmp_path_factory.mktemp("hf-ref")
    args = trainer_args("hf", "ref", str(base / "runs"), str(sample_dataset), str(tiny_model), max_steps=40,
                        **TRAINING)
    run(python_m_trainer(args), trainer_env(base / "work"))
    prefix = str(base / "runs" / "ref" / "framework=hf")
    return {"prefix": prefix, "layout": check_layout(LocalStorage(), prefix, [10, 20, 30, 40], total_steps=40)}


def test_trains_and_checkpoints_every_10_steps_on_local_storage(reference_run: dict) -> None:
    layout = reference_run["layout"]
    manifest = layout["manifests"][20]
    assert manifest.name == "checkpoint-20"
    names = {f.path.split("/", 1)[1] for f in manifest.files}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "rng_state.pth"} <= names
    rows = layout["train_rows"]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    assert any(m.get("kind") == "eval" and m["eval_loss"] > 0 for m in layout["metrics"])
    summary = [m for m in layout["metrics"] if m.get("kind") == "summary"]
    assert summary and summary[0]["steps_per_s"] > 0
    print(f"\nhf single process: {summary[0]['steps_per_s']:.1f} steps/s")


def test_resumes_after_kill_9_from_the_last_complete_checkpoint(reference_run: dict, tiny_model: Path,
                                                                sample_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    prefix = runs / "crash" / "framework=hf"
    args = trainer_args("hf", "crash", str(runs), str(sample_dataset), str(tiny_model), max_steps=40, **TRAINING)
    env = trainer_env(tmp_path / "work")
    proc = start(python_m_trainer(args), env, tmp_path / "first.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000010.json").exists(), timeout=180, proc=proc)
    kill_group(proc)
    manager = CheckpointManager(LocalStorage(), str(prefix / "checkpoints"))
    killed_at = manager.latest()
    assert killed_at is not None and killed_at.step < 40, "the run finished before it was killed"
    # A checkpoint whose upload never finished (files, no manifest) must be ignored.
    shutil.copytree(prefix / "checkpoints" / "checkpoint-10", prefix / "checkpoints" / "checkpoint-35")

    result = run(python_m_trainer([*args, "--resume"]), env)
    assert f"resuming from step {killed_at.step}" in result.stderr
    check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)  # not 35: it had no manifest
    # Metrics of both attempts form one history, equal to the uninterrupted run's (HF resumes exactly on CPU).
    resumed = losses(read_jsonl(LocalStorage(), str(prefix / "logs" / "metrics.jsonl")))
    assert resumed == losses(reference_run["layout"]["metrics"])
    state = json.loads((prefix / "checkpoints" / "checkpoint-40" / "trainer_state.json").read_text())
    assert state["global_step"] == 40


def test_sigterm_flushes_the_uploads_and_marks_the_run_terminated(tiny_model: Path, sample_dataset: Path,
                                                                   tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    prefix = runs / "cancel" / "framework=hf"
    args = trainer_args("hf", "cancel", str(runs), str(sample_dataset), str(tiny_model), max_steps=5000,
                        **TRAINING)
    proc = start(python_m_trainer(args), trainer_env(tmp_path / "work"), tmp_path / "out.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000010.json").exists(), timeout=180, proc=proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    progress = json.loads((prefix / "logs" / "progress.json").read_text())
    assert progress["state"] == "terminated" and progress["total_steps"] == 5000
    assert "terminated by SIGTERM" in (prefix / "logs" / "train-rank0.log").read_text()
    latest = CheckpointManager(LocalStorage(), str(prefix / "checkpoints")).latest()
    assert latest is not None and latest.step >= 10


def test_a_malformed_dataset_exits_2_naming_the_line(tiny_model: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    args = trainer_args("hf", "bad", str(tmp_path / "runs"), str(dataset), str(tiny_model), max_steps=5)
    result = subprocess.run(python_m_trainer(args), env=trainer_env(tmp_path / "work"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"train.py: {dataset} line 2: no field 'text' " \
        "(set dataset_text_field)"
    progress = json.loads((tmp_path / "runs/bad/framework=hf/logs/progress.json").read_text())
    assert progress["state"] == "failed"


def test_trains_on_s3_with_the_model_and_dataset_on_s3(s3_server: S3Server, s3_bucket: str, tiny_model: Path,
                                                        sample_dataset: Path, tmp_path: Path) -> None:
    storage = S3Storage()
    for path in tiny_model.iterdir():
        storage.put_file(path, f"s3://{s3_bucket}/models/tiny/{path.name}")
    storage.put_file(sample_dataset, f"s3://{s3_bucket}/datasets/v1/part-0.jsonl")
    args = trainer_args("hf", "s3-run", f"s3://{s3_bucket}/runs", f"s3://{s3_bucket}/datasets/v1",
                        f"s3://{s3_bucket}/models/tiny", max_steps=20, keep_checkpoints=1, **TRAINING)
    run(python_m_trainer(args), trainer_env(tmp_path / "work"))
    prefix = f"s3://{s3_bucket}/runs/s3-run/framework=hf"
    check_layout(storage, prefix, [20], total_steps=20)  # keep_checkpoints=1 pruned step 10
    keys = s3_server.keys(s3_bucket, "runs/s3-run/framework=hf/")
    assert not any(k.startswith("runs/s3-run/framework=hf/checkpoints/checkpoint-10/") for k in keys)
    assert "runs/s3-run/framework=hf/checkpoints/checkpoint-20/model.safetensors" in keys


def test_two_processes_with_ddp_under_torchrun_through_the_train_py_path(tiny_model: Path, sample_dataset: Path,
                                                                         tmp_path: Path) -> None:
    """`sharding=ddp` (FSDP, the default with two processes, is tested in test_hf_sharding.py)."""
    runs = tmp_path / "runs"
    args = trainer_args("hf", "ddp", str(runs), str(sample_dataset), str(tiny_model), max_steps=20, sharding="ddp",
                        **TRAINING)
    run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=400)
    prefix = str(runs / "ddp" / "framework=hf")
    layout = check_layout(LocalStorage(), prefix, [10, 20], total_steps=20, world_size=2)
    manifest = layout["manifests"][20]
    names = {f.path for f in manifest.files}
    assert {"checkpoint-20/rng_state_0.pth", "checkpoint-20/rng_state_1.pth", "checkpoint-20/model.safetensors",
            "checkpoint-20/optimizer.pt"} <= names
    assert manifest.metadata["format"] == "hf-trainer"
    rank1 = json.loads((Path(prefix) / "checkpoints/checkpoint-20/_ranks/rank-00001.json").read_text())
    assert list(rank1["files"]) == ["checkpoint-20/rng_state_1.pth"]  # each rank uploads its own RNG file
    assert "DDP over 2 processes" in layout["log"]
    assert (Path(prefix) / "logs" / "train-rank1.log").exists()
    summary = [m for m in layout["metrics"] if m.get("kind") == "summary"]
    print(f"\nhf torchrun x2 (gloo): {summary[0]['steps_per_s']:.1f} steps/s")

    # A retry of the same run resumes on both ranks from the node's one download of the latest checkpoint.
    more = trainer_args("hf", "ddp", str(runs), str(sample_dataset), str(tiny_model), max_steps=30, resume=True,
                        sharding="ddp", **TRAINING)
    run(torchrun_train_py(2, more), trainer_env(tmp_path / "work"), timeout=400)
    check_layout(LocalStorage(), prefix, [10, 20, 30], total_steps=30, world_size=2)
    for rank in (0, 1):
        assert "resuming from step 20" in (Path(prefix) / "logs" / f"train-rank{rank}.log").read_text()


def test_the_api_metrics_series_reads_what_this_runner_wrote(reference_run: dict, redis_url: str,
                                                              tmp_path: Path) -> None:
    assert_api_reads_the_runs_metrics(redis_url, tmp_path / "jobs", Path(reference_run["prefix"]))
