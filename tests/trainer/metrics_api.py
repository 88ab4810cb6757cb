"""What a runner really wrote to `logs/metrics.jsonl`, read back through `GET /train/<name>/metrics`: a job is
submitted to the API (local backend, a real Redis) with the run's base URI, run id and framework, so the job's own
prefix is the one the run wrote, and every row the runner logged must come back as the point of its step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api.app import create_app
from tests.api.conftest import AUTH, api_env, sample


def api_series(redis_url: str, workdir: Path, prefix: Path) -> dict[str, Any]:
    """GET /train/<name>/metrics of a job whose prefix is `prefix` (`<base>/<run_id>/framework=<framework>`)."""
    framework = prefix.name.removeprefix("framework=")
    app = create_app({"ENVIRON": api_env(redis_url, TRAINER_LOCAL_WORKDIR=str(workdir)), "TESTING": True})
    client = app.test_client()
    body = sample(framework=framework, run_id=prefix.parent.name, checkpoint_base_uri=str(prefix.parent.parent),
                  dataset_uri="/data/fx.jsonl", num_nodes=1, gpus_per_node=0)
    submitted = client.post("/train", json=body, headers=AUTH)
    assert submitted.status_code == 202, submitted.json
    assert submitted.json["checkpoint_prefix"] == str(prefix)
    answer = client.get(f"/train/{submitted.json['name']}/metrics?max_points=5000", headers=AUTH)
    assert answer.status_code == 200, answer.json
    return answer.json  # type: ignore[no-any-return]


def assert_api_reads_the_runs_metrics(redis_url: str, workdir: Path, prefix: Path) -> None:
    """Every train row's loss, lr, tokens/s, grad norm and epoch, every eval row's eval loss and the summary row of
    the run's own metrics.jsonl are in the API's series, at their steps."""
    rows = [json.loads(line) for line in (prefix / "logs" / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in rows if r.get("kind") == "train"}
    evals = {r["step"]: r for r in rows if r.get("kind") == "eval"}
    (summary,) = [r for r in rows if r.get("kind") == "summary"]
    assert train and evals, rows
    body = api_series(redis_url, workdir, prefix)
    assert body["complete"] is True and body["downsampled"] is False
    points = {p["step"]: p for p in body["points"]}
    assert sorted(points) == sorted(train.keys() | evals.keys())
    for step, row in train.items():
        point = points[step]
        assert point["loss"] is not None and point["loss"] == row["loss"], (step, point, row)
        assert point["lr"] == row["lr"] and point["tokens_per_s"] == row["tokens_per_s"], (step, point, row)
        assert point["grad_norm"] == row.get("grad_norm") and point["epoch"] == row.get("epoch"), (step, point, row)
    # A step's clock is that of its last row (the eval row logged after the train row of the same step).
    clock = {r["step"]: r["elapsed_s"] for r in rows if r.get("kind") in {"train", "eval"}}
    assert {s: p["elapsed_s"] for s, p in points.items()} == clock
    for step, row in evals.items():
        assert points[step]["eval_loss"] is not None and points[step]["eval_loss"] == row["eval_loss"], (step, row)
    assert body["summary"]["step"] == summary["step"] and body["summary"]["steps_per_s"] == summary["steps_per_s"]
    assert body["summary"]["steps_per_s"] is not None and body["summary"]["loss"] == summary["loss"]
