"""The run context every runner gets: layout, run.json, progress, logs, and the resume download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.config import ConfigError, parse_config
from trainer.context import build_context, close_context
from trainer.model_store import resolve_model
from trainer.storage import S3Storage


def config_for(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return parse_config(["--framework", "meta", "--run-id", "ctx-run", "--checkpoint-base-uri",
                         str(tmp_path / "runs"), "--dataset-uri", str(tmp_path / "d.jsonl"), "--model-id",
                         str(model), "--work-dir", str(tmp_path / "work"), "--max-steps", "5", *extra], {})


def test_a_run_writes_config_progress_metrics_and_its_log_under_the_prefix(tmp_path: Path) -> None:
    ctx = build_context(config_for(tmp_path), environ={})
    prefix = tmp_path / "runs" / "ctx-run" / "framework=meta"
    run = json.loads((prefix / "config" / "run.json").read_text())
    assert run["world_size"] == 1 and run["config"]["run_id"] == "ctx-run" and "torch" in run["versions"]
    assert run["config"]["training"]["max_steps"] == 5 and run["started_at"]
    ctx.reporter.metrics(step=1, loss=2.5, lr=1e-3, tokens_per_s=100.0)
    ctx.reporter.progress(step=1, total_steps=5, loss=2.5)
    ckpt = ctx.output_dir / "step-000001.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"state")
    ctx.checkpoints.save(1, ckpt)
    close_context(ctx, succeeded=True)
    progress = json.loads((prefix / "logs" / "progress.json").read_text())
    assert (progress["step"], progress["total_steps"], progress["loss"], progress["state"]) == (1, 5, 2.5, "completed")
    row = json.loads((prefix / "logs" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and row["loss"] == 2.5 and row["lr"] == 1e-3 and "elapsed_s" in row
    assert "ctx-run completed" in (prefix / "logs" / "train-rank0.log").read_text()
    assert (prefix / "checkpoints" / "step-000001.json").exists()
    assert not ctx.work_dir.exists()  # scratch removed after a clean finish


def test_resume_downloads_the_latest_complete_checkpoint_and_logs_it(tmp_path: Path) -> None:
    first = build_context(config_for(tmp_path), environ={})
    for step in (3, 6):
        path = first.output_dir / f"step-{step:06d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"state {step}".encode())
        first.checkpoints.save(step, path)
    for step in range(1, 9):  # killed at step 8: steps 7-8 will be redone after resuming from 6
        first.reporter.metrics(step=step, loss=10.0 - step, lr=1e-3, tokens_per_s=1.0)
    close_context(first, succeeded=False)
    second = build_context(config_for(tmp_path, "--resume"), environ={})
    try:
        assert second.resume is not None and second.resume.step == 6
        assert second.resume.path.read_bytes() == b"state 6"
        second.reporter.metrics(step=7, loss=2.5, lr=1e-3, tokens_per_s=1.0)
    finally:
        close_context(second, succeeded=True)
    logs = tmp_path / "runs" / "ctx-run" / "framework=meta" / "logs"
    log = (logs / "train-rank0.log").read_text()
    assert log.index("run ctx-run failed") < log.index("resuming from step 6")  # both attempts, in order
    rows = [json.loads(line) for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(s, 10.0 - s) for s in range(1, 7)] + [(7, 2.5)]


def test_resume_without_any_checkpoint_starts_fresh(tmp_path: Path) -> None:
    ctx = build_context(config_for(tmp_path, "--resume"), environ={})
    assert ctx.resume is None
    close_context(ctx, succeeded=False)
    progress = json.loads((tmp_path / "runs/ctx-run/framework=meta/logs/progress.json").read_text())
    assert progress["state"] == "failed"


def test_models_resolve_from_folders_s3_prefixes_or_hub_ids(tmp_path: Path, s3_bucket: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder), tmp_path / "cache") == str(folder)
    assert resolve_model("file://" + str(folder), tmp_path / "cache") == str(folder)
    assert resolve_model("org/some-model", tmp_path / "cache") == "org/some-model"
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"), tmp_path / "cache")
    storage = S3Storage()
    storage.put_file(folder / "config.json", f"s3://{s3_bucket}/models/tiny/config.json")
    local = resolve_model(f"s3://{s3_bucket}/models/tiny", tmp_path / "cache")
    assert (Path(local) / "config.json").read_text() == "{}"
    with pytest.raises(ConfigError, match="no objects"):
        resolve_model(f"s3://{s3_bucket}/models/none", tmp_path / "cache2")


def test_a_run_that_cannot_start_is_marked_failed(tmp_path: Path) -> None:
    config = parse_config(["--framework", "hf", "--run-id", "nostart", "--checkpoint-base-uri",
                           str(tmp_path / "runs"), "--dataset-uri", str(tmp_path / "d.jsonl"), "--model-id",
                           str(tmp_path / "no-such-model"), "--work-dir", str(tmp_path / "work")], {})
    with pytest.raises(ConfigError, match="no such folder"):
        build_context(config, environ={})
    progress = json.loads((tmp_path / "runs/nostart/framework=hf/logs/progress.json").read_text())
    assert progress["state"] == "failed"
