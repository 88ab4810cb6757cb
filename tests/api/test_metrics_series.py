"""`GET /train/<name>/metrics`: the run's metrics series from its own `logs/metrics.jsonl`, bounded in points and in
bytes read, on local storage and on S3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from api import run_metrics
from broker import run_files
from broker.store import JobStore
from devstack.s3 import S3Server
from tests.api.conftest import AUTH
from tests.api.test_observe import make_client, s3_env, submit  # noqa: F401  (s3_env is a fixture)


def train_row(step: int, loss: float, **extra: Any) -> dict[str, Any]:
    return {"step": step, "loss": loss, "lr": 1e-3 * step, "tokens_per_s": 100.0 + step, "elapsed_s": step / 10,
            "grad_norm": 1.5, "epoch": step / 100, "time": "2026-12-02T08:00:00Z", "kind": "train", **extra}


def eval_row(step: int, eval_loss: float) -> dict[str, Any]:
    return {"step": step, "loss": None, "lr": None, "tokens_per_s": None, "elapsed_s": step / 10,
            "eval_loss": eval_loss, "kind": "eval"}


def write_metrics(job: dict[str, Any], rows: list[Any]) -> Path:
    logs = Path(job["checkpoint_prefix"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "metrics.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def client_store(redis_url: str, tmp_path: Path) -> tuple[FlaskClient, JobStore]:
    return make_client(redis_url, tmp_path / "jobs", PROGRESS_CACHE_S=0)


def test_train_and_eval_rows_of_a_step_merge_into_one_point(client_store: tuple[FlaskClient, JobStore],
                                                           tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    summary = {"step": 20, "loss": 1.5, "lr": None, "tokens_per_s": None, "kind": "summary", "steps_per_s": 4.0,
               "train_runtime": 5.0}
    write_metrics(job, [train_row(10, 2.5), eval_row(10, 2.75), train_row(20, 1.5), eval_row(20, 1.75), summary])
    answer = client.get(f"/train/{job['name']}/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["name"] == job["name"] and body["status"] == "queued" and body["attempt"] == 1
    assert body["points"] == [
        {"step": 10, "loss": 2.5, "eval_loss": 2.75, "lr": 0.01, "tokens_per_s": 110.0, "grad_norm": 1.5,
         "epoch": 0.1, "elapsed_s": 1.0},
        {"step": 20, "loss": 1.5, "eval_loss": 1.75, "lr": 0.02, "tokens_per_s": 120.0, "grad_norm": 1.5,
         "epoch": 0.2, "elapsed_s": 2.0},
    ]
    assert body["summary"] == {"step": 20, "loss": 1.5, "steps_per_s": 4.0, "train_runtime": 5.0}
    assert body["total_points"] == 2 and body["downsampled"] is False and body["complete"] is True


def test_a_redone_step_keeps_the_later_row_and_junk_lines_are_skipped(client_store: tuple[FlaskClient, JobStore],
                                                                     tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    write_metrics(job, [train_row(5, 3.0), "not json", "[1, 2]", '{"loss": 1}', '{"step": "7", "loss": 1}',
                        '{"step": 6, "loss": NaN, "kind": "train"}', train_row(5, 2.0), '{"step": 8, "loss'])
    points = client.get(f"/train/{job['name']}/metrics", headers=AUTH).json["points"]
    assert [(p["step"], p["loss"]) for p in points] == [(5, 2.0), (6, None)]


def test_more_points_than_asked_are_averaged_into_buckets_keeping_sparse_eval_points(
    client_store: tuple[FlaskClient, JobStore], tmp_path: Path
) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    rows: list[Any] = []
    for step in range(1, 1001):
        rows.append(train_row(step, float(step)))
        if step % 100 == 0:
            rows.append(eval_row(step, float(step) / 1000))
    write_metrics(job, rows)
    body = client.get(f"/train/{job['name']}/metrics?max_points=10", headers=AUTH).json
    assert body["total_points"] == 1000 and body["downsampled"] is True and body["max_points"] == 10
    points = body["points"]
    assert [p["step"] for p in points] == list(range(100, 1001, 100))
    assert points[0]["loss"] == sum(range(1, 101)) / 100  # the mean of the bucket's 100 train rows
    assert [p["eval_loss"] for p in points] == [s / 1000 for s in range(100, 1001, 100)]
    default = client.get(f"/train/{job['name']}/metrics", headers=AUTH).json
    assert len(default["points"]) == run_metrics.DEFAULT_POINTS


@pytest.mark.parametrize("value", ["0", "-3", "abc", str(run_metrics.MAX_POINTS + 1)])
def test_max_points_out_of_range_is_a_400_naming_the_parameter(client_store: tuple[FlaskClient, JobStore],
                                                                tmp_path: Path, value: str) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    answer = client.get(f"/train/{job['name']}/metrics?max_points={value}", headers=AUTH)
    assert answer.status_code == 400 and "max_points" in answer.json["error"]["fields"]


def test_no_metrics_yet_unknown_job_and_no_token(client_store: tuple[FlaskClient, JobStore], tmp_path: Path) -> None:
    client, _ = client_store
    job = submit(client, str(tmp_path / "runs"))
    assert client.get(f"/train/{job['name']}/metrics", headers=AUTH).status_code == 404
    assert client.get("/train/no-such-job/metrics", headers=AUTH).status_code == 404
    assert client.get(f"/train/{job['name']}/metrics").status_code == 401


def test_a_file_beyond_the_byte_budget_is_read_in_windows_spanning_the_run(redis_url: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = make_client(redis_url, tmp_path / "jobs", PROGRESS_CACHE_S=0, METRICS_MAX_BYTES=64 * 1024)
    job = submit(client, str(tmp_path / "runs"))
    path = write_metrics(job, [train_row(step, 1.0 / step) for step in range(1, 20_001)])
    assert path.stat().st_size > 3_000_000
    reads: list[int] = []
    real = run_files.read_range
    monkeypatch.setattr(run_files, "read_range",
                        lambda uri, start, n, *root: reads.append(n) or real(uri, start, n, *root))
    body = client.get(f"/train/{job['name']}/metrics?max_points=5000", headers=AUTH).json
    assert sum(reads) <= 64 * 1024 and len(reads) == run_metrics.WINDOWS
    steps = [p["step"] for p in body["points"]]
    assert body["complete"] is False and steps[0] == 1 and steps[-1] == 20_000
    assert steps == sorted(steps) and 0 < body["total_points"] < 20_000
    assert all(p["loss"] == pytest.approx(1.0 / p["step"]) for p in body["points"])  # whole rows only


def test_the_series_is_read_from_s3_with_ranged_reads(client_store: tuple[FlaskClient, JobStore],
                                                      s3_env: S3Server) -> None:  # noqa: F811
    client, _ = client_store
    bucket = s3_env.new_bucket()
    job = submit(client, f"s3://{bucket}/runs")
    key = job["checkpoint_prefix"].removeprefix(f"s3://{bucket}/") + "/logs/metrics.jsonl"
    rows = [train_row(step, 2.0) for step in range(1, 5001)]
    s3_env.client().put_object(Bucket=bucket, Key=key, Body="".join(json.dumps(r) + "\n" for r in rows).encode())
    body = client.get(f"/train/{job['name']}/metrics?max_points=5000", headers=AUTH).json
    assert body["total_points"] == 5000 and body["complete"] is True
    assert [p["step"] for p in body["points"]] == list(range(1, 5001))
    s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"")
    run_metrics_empty = client.get(f"/train/{job['name']}/metrics", headers=AUTH).json
    assert run_metrics_empty["points"] == [] and run_metrics_empty["total_points"] == 0
