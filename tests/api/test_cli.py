"""`trainctl` against the real API served over HTTP on a free port, with the session's Redis."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from broker.jobs import JobStatus
from broker.store import JobStore
from devstack import free_port
from tests.api.conftest import TOKEN, api_env, sample
from trainctl.cli import main


class LiveApi:
    def __init__(self, url: str, store: JobStore) -> None:
        self.url, self.store = url, store


@pytest.fixture
def live_api(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApi]:
    env = api_env(redis_url, TRAINER_LOCAL_WORKDIR=str(tmp_path / "jobs"))
    app = create_app({"ENVIRON": env, "PROGRESS_CACHE_S": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("TRAINER_BASE_URL", url)
    monkeypatch.setenv("TRAINER_API_TOKEN", TOKEN)
    yield LiveApi(url, app.extensions["job_store"])
    server.shutdown()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    body = sample(framework="hf", checkpoint_base_uri=str(tmp_path / "runs"), dataset_uri=str(tmp_path / "d.jsonl"),
                  num_nodes=1, gpus_per_node=0)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    return path


def submitted_name(output: str) -> str:
    return output.split()[0]


def test_submit_then_status_list_and_events(live_api: LiveApi, request_file: Path) -> None:
    code, out = run("submit", str(request_file))
    assert code == 0 and "queued" in out
    name = submitted_name(out)
    code, out = run("status", name)
    assert code == 0 and "status" in out and "queued" in out and "framework" in out
    code, out = run("status", name, "--json")
    assert json.loads(out)["name"] == name
    code, out = run("list", "--framework", "hf")
    assert code == 0 and name in out
    code, out = run("events", name)
    assert code == 0 and "-> queued" in out


def test_cancel_then_retry(live_api: LiveApi, request_file: Path) -> None:
    name = submitted_name(run("submit", str(request_file))[1])
    code, out = run("cancel", name)
    assert code == 0 and "cancelled" in out
    code, out = run("retry", name)
    assert code == 0 and "queued" in out and "attempt=2" in out
    code, _ = run("retry", name)
    assert code == 1


def test_a_refused_request_prints_the_apis_message_and_fields(
    live_api: LiveApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(sample(framework="tensorflow", checkpoint_base_uri="ftp://x")))
    code, _ = run("submit", str(bad))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("trainctl: 400 invalid_request") and "framework" in err and "checkpoint_base_uri" in err
    assert run("status", "no-such-job")[0] == 1 and "404 not_found" in capsys.readouterr().err
    assert run("--token", "wrong", "list")[0] == 1 and "403" in capsys.readouterr().err


def test_an_unreachable_api_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("--url", f"http://127.0.0.1:{free_port()}", "list")
    err = capsys.readouterr().err
    assert code == 3 and "cannot reach the API" in err and len(err.strip().splitlines()) == 1


def test_an_unreadable_request_file_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    assert run("submit", str(tmp_path / "x.json"))[0] == 2
    assert run("submit", str(tmp_path / "missing.json"))[0] == 2
    assert "cannot read" in capsys.readouterr().err


def finish(store: JobStore, name: str, final: JobStatus) -> None:
    for status in (JobStatus.ADMITTED, JobStatus.SUBMITTED, JobStatus.RUNNING, final):
        store.transition(name, status, reason="test")


def write_progress(job: dict[str, Any], step: int) -> None:
    logs = Path(job["checkpoint_prefix"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "progress.json").write_text(json.dumps({"step": step, "total_steps": 40, "loss": 1.25}))


def test_wait_shows_progress_and_exits_by_the_outcome(live_api: LiveApi, request_file: Path) -> None:
    name = submitted_name(run("submit", str(request_file))[1])
    job = json.loads(run("status", name, "--json")[1])
    write_progress(job, 40)
    finish(live_api.store, name, JobStatus.SUCCEEDED)
    code, out = run("wait", name, "--interval", "0.1")
    assert code == 0
    assert f"{name}: step 40/40 loss 1.2500" in out and f"{name}: framework hf succeeded (attempt 1)" in out

    other = request_file.with_name("other.json")
    other.write_text(json.dumps({**json.loads(request_file.read_text()), "run_id": "other-run"}))
    failed = submitted_name(run("submit", str(other))[1])
    finish(live_api.store, failed, JobStatus.FAILED)
    code, out = run("wait", failed, "--interval", "0.1")
    assert code == 1 and "did not succeed: failed" in out


def test_wait_gives_up_after_its_timeout(live_api: LiveApi, request_file: Path) -> None:
    name = submitted_name(run("submit", str(request_file))[1])
    code, out = run("wait", name, "--interval", "0.1", "--timeout", "0.3")
    assert code == 1 and "giving up" in out


def test_logs_prints_the_trainers_log(live_api: LiveApi, request_file: Path) -> None:
    name = submitted_name(run("submit", str(request_file))[1])
    job = json.loads(run("status", name, "--json")[1])
    logs = Path(job["checkpoint_prefix"]) / "logs"
    logs.mkdir(parents=True)
    (logs / "train-rank0.log").write_text("step 1\nstep 2\nstep 3\n")
    code, out = run("logs", name, "--tail", "2")
    assert code == 0 and out == "step 2\nstep 3\n"


def test_the_installed_console_script_talks_to_the_api(live_api: LiveApi) -> None:
    trainctl = Path(sys.executable).with_name("trainctl")
    result = subprocess.run([str(trainctl), "list"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([str(trainctl), "status", "ghost"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1 and "404 not_found" in result.stderr


def test_metrics_draws_sparklines_and_a_table_of_the_series(live_api: LiveApi, request_file: Path) -> None:
    name = submitted_name(run("submit", str(request_file))[1])
    job = json.loads(run("status", name, "--json")[1])
    logs = Path(job["checkpoint_prefix"]) / "logs"
    logs.mkdir(parents=True)
    rows = [{"step": s, "loss": 10.0 - s, "lr": 0.001, "tokens_per_s": 5000.0, "kind": "train"} for s in range(1, 9)]
    rows.append({"step": 8, "eval_loss": 2.5, "kind": "eval"})
    (logs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = run("metrics", name, "--points", "4")
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0] == f"{name}  queued  attempt 1  4 of 8 points (averaged)"
    assert lines[1] == "loss         █▆▃▁  8.5 → 2.5"  # bucket means 8.5, 6.5, 4.5, 2.5 on 8 levels
    assert lines[2] == "eval_loss    ▁  2.5 → 2.5"
    assert lines[5].split() == ["step", "loss", "eval_loss", "lr", "tokens/s"]
    assert lines[6].split() == ["2", "8.5", "-", "0.001", "5,000"]
    assert lines[9].split() == ["8", "2.5", "2.5", "0.001", "5,000"]
    assert json.loads(run("metrics", name, "--json")[1])["total_points"] == 8
    assert run("metrics", "ghost")[0] == 1
