"""The meta runner trains the tiny model for real with its plain loop: local storage and S3, sharded DCP checkpoints
every 10 steps into the shared layout, a `kill -9` resume whose losses equal an uninterrupted run's bitwise, and FSDP
over gloo with two processes under torchrun from the `train.py` path: each rank reads only its share of the weights,
writes and uploads its own shard, resumes exactly on two processes and reshards from one process to two and back."""

from __future__ import annotations

import shutil
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
    torchrun_train_py,
    trainer_args,
    trainer_env,
    wait_for,
)
from trainer.checkpoints import CheckpointManager
from trainer.storage import LocalStorage, S3Storage

pytestmark = pytest.mark.slow
# 32 blocks per optimizer step (4 x 8, accumulated): slow enough to kill between two checkpoints, several data
# epochs in 40 steps (the resume crosses epoch boundaries), dropout on (the RNG state matters).
TRAINING = {"save_steps": 10, "logging_steps": 5, "batch_size": 8, "gradient_accumulation": 4, "block_size": 64,
            "lr": 1e-3, "warmup_steps": 5, "weight_decay": 0.01, "seed": 3}


def train_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float, float]]:
    """step -> (loss, lr, grad_norm) of the train rows: what must match exactly after a resume."""
    return {int(r["step"]): (r["loss"], r["lr"], r["grad_norm"]) for r in rows if r.get("kind") == "train"}


def drop_checkpoints_after(prefix: Path, step: int) -> None:
    """What a crash right after `step`'s upload leaves: later files may exist, their manifests do not."""
    checkpoints = prefix / "checkpoints"
    for manifest in checkpoints.glob("step-*.json"):
        if int(manifest.stem.split("-")[1]) > step:
            manifest.unlink()
    (checkpoints / "latest.json").unlink()


@pytest.fixture(scope="module")
def reference_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 40-step single-process run on local storage (checked; the baseline for resume)."""
    base = tmp_path_factory.mktemp("meta-ref")
    args = trainer_args("meta", "ref", str(base / "runs"), str(sample_dataset), str(tiny_model), max_steps=40,
                        **TRAINING)
    run(python_m_trainer(args), trainer_env(base / "work"))
    prefix = base / "runs" / "ref" / "framework=meta"
    return {"prefix": prefix, "layout": check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)}


def test_trains_and_checkpoints_every_10_steps_on_local_storage(reference_run: dict) -> None:
    layout = reference_run["layout"]
    manifest = layout["manifests"][20]
    assert manifest.name == "dcp-000020" and manifest.metadata["framework"] == "meta"
    assert {f.path for f in manifest.files} == {"dcp-000020/.metadata", "dcp-000020/__0_0.distcp",
                                                "dcp-000020/trainer_state.pt", "dcp-000020/_ranks/rank-00000.json"}
    folder = reference_run["prefix"] / "checkpoints" / "dcp-000020"
    payload = torch.load(folder / "trainer_state.pt", weights_only=True)
    assert payload["step"] == 20 and len(payload["rng"]) == 1
    assert {"scheduler", "sampler", "window"} <= payload.keys()
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    assert any(k.startswith("model.") for k in saved) and any(k.startswith("optimizer.state.") for k in saved), \
        "model weights and the AdamW moments are in the checkpoint"
    rows = layout["train_rows"]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    assert all(r["tokens_per_s"] is None or r["tokens_per_s"] > 0 for r in rows)
    assert [m["step"] for m in layout["metrics"] if m.get("kind") == "eval"] == [10, 20, 30, 40]
    summary = [m for m in layout["metrics"] if m.get("kind") == "summary"]
    assert summary and summary[0]["steps_per_s"] > 0
    print(f"\nmeta single process: {summary[0]['steps_per_s']:.1f} steps/s")


def test_resumes_after_kill_9_with_the_losses_of_an_uninterrupted_run(reference_run: dict, tiny_model: Path,
                                                                      sample_dataset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    prefix = runs / "crash" / "framework=meta"
    args = trainer_args("meta", "crash", str(runs), str(sample_dataset), str(tiny_model), max_steps=40, **TRAINING)
    env = trainer_env(tmp_path / "work")
    proc = start(python_m_trainer(args), env, tmp_path / "first.log")
    wait_for(lambda: (prefix / "checkpoints" / "step-000010.json").exists(), timeout=180, proc=proc)
    kill_group(proc)
    killed_at = CheckpointManager(LocalStorage(), str(prefix / "checkpoints")).latest()
    assert killed_at is not None and killed_at.step < 40, "the run finished before it was killed"
    # A checkpoint whose upload never finished (the file, no manifest) must be ignored.
    shutil.copytree(prefix / "checkpoints" / "dcp-000010", prefix / "checkpoints" / "dcp-000035")

    result = run(python_m_trainer([*args, "--resume"]), env)
    assert f"resuming from step {killed_at.step}" in result.stderr
    assert f"meta: resumed from dcp-{killed_at.step:06d} at step {killed_at.step}" in result.stderr
    check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)
    resumed = train_rows(read_jsonl(LocalStorage(), str(prefix / "logs" / "metrics.jsonl")))
    assert resumed == train_rows(reference_run["layout"]["metrics"])  # bitwise: same floats


def test_trains_and_resumes_on_s3(s3_server: S3Server, s3_bucket: str, tiny_model: Path, sample_dataset: Path,
                                  tmp_path: Path) -> None:
    storage = S3Storage()
    storage.put_file(sample_dataset, f"s3://{s3_bucket}/datasets/v1/part-0.jsonl")
    base = f"s3://{s3_bucket}/runs"
    args = trainer_args("meta", "s3-run", base, f"s3://{s3_bucket}/datasets/v1", str(tiny_model), max_steps=20,
                        **TRAINING)
    env = trainer_env(tmp_path / "work")
    run(python_m_trainer(args), env)
    prefix = f"{base}/s3-run/framework=meta"
    check_layout(storage, prefix, [10, 20], total_steps=20)
    assert "runs/s3-run/framework=meta/checkpoints/dcp-000020/__0_0.distcp" in s3_server.keys(s3_bucket, "runs/")

    more = trainer_args("meta", "s3-run", base, f"s3://{s3_bucket}/datasets/v1", str(tiny_model), max_steps=30,
                        resume=True, **TRAINING)
    result = run(python_m_trainer(more), env)
    assert "meta: resumed from dcp-000020 at step 20" in result.stderr
    layout = check_layout(storage, prefix, [10, 20, 30], total_steps=30)
    assert [r["step"] for r in layout["train_rows"]] == [5, 10, 15, 20, 25, 30]  # one history over both attempts


def copy_run(source: Path, runs: Path, run_id: str, upto: int) -> Path:
    """A copy of a run's prefix as a crash right after checkpoint `upto` leaves it, under another run id."""
    prefix = runs / run_id / "framework=meta"
    shutil.copytree(source, prefix)
    drop_checkpoints_after(prefix, upto)
    return prefix


def test_fsdp_two_processes_reshard_from_one_resume_exactly_and_back_to_one(reference_run: dict, tiny_model: Path,
                                                                            sample_dataset: Path,
                                                                            tmp_path: Path) -> None:
    """1 -> 2 processes (DCP reshards), 2 -> 2 bitwise, then 2 -> 1: two torchrun launches in all."""
    runs = tmp_path / "runs"
    prefix = copy_run(reference_run["prefix"], runs, "fsdp", upto=10)  # a single-process checkpoint at step 10
    args = trainer_args("meta", "fsdp", str(runs), str(sample_dataset), str(tiny_model), max_steps=30, resume=True,
                        **TRAINING)
    run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=400)
    layout = check_layout(LocalStorage(), str(prefix), [10, 20, 30], total_steps=30, world_size=2)
    for rank in (0, 1):
        log = (prefix / "logs" / f"train-rank{rank}.log").read_text()
        assert "FSDP2 sharded 2 blocks (GPT2Block)" in log
        assert f"meta: rank {rank} read its share of the weights" in log  # no full copy per rank
        assert "meta: resumed from dcp-000010 at step 10 (data epoch" in log and "written by 1 processes, now 2" in log
    rank1_log = (prefix / "logs" / "train-rank1.log").read_text()
    assert "opened the node's cache" in rank1_log  # local rank 0 tokenized once for the node
    assert "data: tokenizing" not in rank1_log and "data: tokenizing" in layout["log"]
    dataset = layout["run"]["dataset"]
    assert dataset["fingerprint"] == reference_run["layout"]["run"]["dataset"]["fingerprint"]
    assert dataset["train_blocks"] > 0
    manifest = layout["manifests"][20]
    sizes = {f.path.rsplit("/", 1)[1]: f.size for f in manifest.files}
    assert manifest.metadata["world_size"] == 2 and {"__0_0.distcp", "__1_0.distcp"} <= sizes.keys()
    assert {"rank-00000.json", "rank-00001.json"} <= sizes.keys()  # both ranks reported their uploads
    assert 0.8 < sizes["__0_0.distcp"] / sizes["__1_0.distcp"] < 1.25  # each rank wrote about half
    payload = torch.load(prefix / "checkpoints" / "dcp-000020" / "trainer_state.pt", weights_only=True)
    assert len(payload["rng"]) == 2 and payload["world_size"] == 2  # every rank's RNG state
    assert [r["step"] for r in layout["train_rows"]] == [5, 10, 15, 20, 25, 30]
    assert train_rows(layout["metrics"])[10] == train_rows(reference_run["layout"]["metrics"])[10]  # history kept

    # The same run, crashed after step 20 and retried on two processes: both ranks resume exactly.
    retried = copy_run(prefix, tmp_path / "retry", "fsdp", upto=20)
    args = trainer_args("meta", "fsdp", str(tmp_path / "retry"), str(sample_dataset), str(tiny_model), max_steps=30,
                        resume=True, **TRAINING)
    run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=400)
    resumed = check_layout(LocalStorage(), str(retried), [10, 20, 30], total_steps=30, world_size=2)
    for rank in (0, 1):
        assert "meta: resumed from dcp-000020 at step 20" in (retried / "logs" / f"train-rank{rank}.log").read_text()
    assert "skipping tokenization" in resumed["log"]  # the node's cache outlives the crashed attempt
    assert train_rows(resumed["metrics"]) == train_rows(layout["metrics"])

    # And the two-process checkpoint of step 30 continues on one process.
    args = trainer_args("meta", "fsdp", str(runs), str(sample_dataset), str(tiny_model), max_steps=40, resume=True,
                        **TRAINING)
    result = run(python_m_trainer(args), trainer_env(tmp_path / "work"))
    assert "written by 2 processes, now 1" in result.stderr and "reseeding" in result.stderr
    back = check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)
    assert [r["step"] for r in back["train_rows"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert back["train_rows"][-1]["loss"] < back["train_rows"][0]["loss"]


def test_a_bad_dataset_under_torchrun_exits_2_on_every_rank_with_its_one_line(tiny_model: Path,
                                                                             tmp_path: Path) -> None:
    import subprocess

    dataset = tmp_path / "bad.jsonl"
    dataset.write_text('{"text": "fine"}\n{"text": "fine"}\n{broken\n')
    args = trainer_args("meta", "bad", str(tmp_path / "runs"), str(dataset), str(tiny_model), max_steps=5)
    result = subprocess.run(torchrun_train_py(2, args), env=trainer_env(tmp_path / "work"), capture_output=True,
                            text=True, timeout=400)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("train.py: ")]
    assert lines == [f"train.py: {dataset} line 3: malformed JSON (Expecting property name enclosed in double "
                     "quotes)"] * 2, result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr


def test_the_api_metrics_series_reads_what_this_runner_wrote(reference_run: dict, redis_url: str,
                                                              tmp_path: Path) -> None:
    assert_api_reads_the_runs_metrics(redis_url, tmp_path / "jobs", Path(reference_run["prefix"]))
