"""The jobs dashboard (`/ui/`) in headless Chromium against the API under gunicorn on a real Redis.

Jobs are submitted over HTTP; what a trainer writes under a job's prefix (metrics.jsonl, progress.json, its log) is
written into the local storage the jobs point at, and the broker's status moves are made through the job store, as
the worker would. The browser side is tests/ui/dashboard.test.mjs (node's test runner with playwright-core).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from broker.jobs import JobStatus
from tests.ui.conftest import LiveApi, node_test, submit

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("browser_ready")]


def trainer_files(job: dict[str, Any], steps: int, every: int = 2, eval_every: int = 30) -> None:
    """The files a run writes under `<checkpoint_prefix>/logs/`, with a decaying loss."""
    logs = Path(str(job["checkpoint_prefix"])) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(every, steps + 1, every):
        loss = 2.0 + 8.0 * math.exp(-step / 25)
        rows.append({"step": step, "loss": loss, "lr": 1e-3 * min(1.0, step / 20), "tokens_per_s": 5000 + step,
                     "elapsed_s": step / 4, "grad_norm": 1.0, "epoch": step / 200, "kind": "train"})
        if step % eval_every == 0:
            rows.append({"step": step, "loss": None, "lr": None, "tokens_per_s": None, "elapsed_s": step / 4,
                         "eval_loss": loss + 0.3, "kind": "eval"})
    (logs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    progress = {"step": steps, "total_steps": 120 if steps <= 120 else steps, "loss": rows[-1]["loss"] or 2.0,
                "state": "running", "updated_at": "2026-12-02T08:30:00+00:00"}
    (logs / "progress.json").write_text(json.dumps(progress))
    lines = [f"2026-12-02 08:30:{i:02d} INFO rank0 trainer: step {i}" for i in range(40)]
    (logs / "train-rank0.log").write_text("\n".join([*lines, "the last line of the log"]) + "\n")


def to_running(api: LiveApi, name: str) -> None:
    for status in (JobStatus.ADMITTED, JobStatus.SUBMITTED, JobStatus.RUNNING):
        api.store.transition(name, status, reason=f"moved by the test (as the broker would): {status}")


@pytest.fixture(scope="module")
def jobs(live_api: LiveApi) -> dict[str, str]:
    curve = submit(live_api, "ui_curve_run")
    trainer_files(curve, 100)
    to_running(live_api, str(curve["name"]))
    long = submit(live_api, "ui_long_run", framework="meta")
    trainer_files(long, 3000, every=1, eval_every=250)
    to_running(live_api, str(long["name"]))
    failed = submit(live_api, "ui_failed_run", framework="nemo")
    live_api.store.transition(str(failed["name"]), JobStatus.FAILED, reason="image pull failed (set by the test)")
    cancel = submit(live_api, "ui_cancel_run")
    return {"JOB": str(curve["name"]), "LONG_JOB": str(long["name"]), "CANCEL_JOB": str(cancel["name"]),
            "JOBS": ",".join(str(j["name"]) for j in (curve, long, failed, cancel))}


def run_browser(live_api: LiveApi, jobs: dict[str, str], pattern: str, tmp_path: Path) -> str:
    late = {"framework": "hf", "model_id": "tiny-gpt2", "num_nodes": 1, "gpus_per_node": 0, "run_id": "ui_late_run",
            "checkpoint_base_uri": str(live_api.runs), "dataset_uri": "/data/fx.jsonl"}
    shots = os.environ.get("DASHBOARD_SHOTS") or str(tmp_path)  # `make screenshots` writes them into docs/img/
    env = {"DASH_URL": live_api.url, "DASH_TOKEN": live_api.token, "SHOTS": shots,
           "LATE_BODY": json.dumps(late), **jobs}
    return node_test("dashboard.test.mjs", pattern, env)


def test_the_static_files_are_open_but_hold_no_data_and_forbid_foreign_sources(live_api: LiveApi) -> None:
    page = requests.get(f"{live_api.url}/ui/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in page.text.replace('http-equiv', '')  # nothing fetched from elsewhere
    assert requests.get(f"{live_api.url}/ui/static/app.js", timeout=10).status_code == 200
    assert requests.get(f"{live_api.url}/ui/static/..%2F__init__.py", timeout=10).status_code == 404
    assert requests.get(f"{live_api.url}/ui/static/nope.js", timeout=10).status_code == 404
    assert requests.get(f"{live_api.url}/train", timeout=10).status_code == 401


def test_without_a_token_the_dashboard_shows_a_login_and_no_data(live_api: LiveApi, jobs: dict[str, str],
                                                                 tmp_path: Path) -> None:
    run_browser(live_api, jobs, "without a token", tmp_path)
    shots = Path(os.environ.get("DASHBOARD_SHOTS") or tmp_path)
    assert (shots / "dashboard-login.png").stat().st_size > 1000


def test_with_a_token_it_lists_the_jobs_of_the_live_api(live_api: LiveApi, jobs: dict[str, str],
                                                        tmp_path: Path) -> None:
    run_browser(live_api, jobs, "with a token", tmp_path)


def test_a_job_page_draws_a_curve_with_as_many_points_as_the_metrics_series(live_api: LiveApi, jobs: dict[str, str],
                                                                           tmp_path: Path) -> None:
    run_browser(live_api, jobs, "as many points|downsampled series", tmp_path)


def test_cancel_and_retry_from_the_page_move_the_job(live_api: LiveApi, jobs: dict[str, str], tmp_path: Path) -> None:
    run_browser(live_api, jobs, "cancel and retry", tmp_path)
    job = requests.get(f"{live_api.url}/train/{jobs['CANCEL_JOB']}", headers={"X-TRAINER-TOKEN": live_api.token},
                       timeout=10).json()
    assert job["status"] == "cancelled" and job["attempt"] == 2
