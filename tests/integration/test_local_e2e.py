"""The whole path on this machine: trainctl → API (HTTP) → Redis → Celery worker + beat → local backend → torchrun →
train.py → storage → status, progress and logs back through the API. Real processes everywhere."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from api.app import create_app
from devstack import Service, celery_argv
from devstack.commands import worker_options
from tests.api.conftest import TOKEN, sample
from trainctl.cli import main as trainctl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    argv = [sys.executable, "-m", "trainer.tiny", "--out", str(root / "model"), "--dataset", str(root / "d.jsonl")]
    subprocess.run(argv, check=True, timeout=300, capture_output=True)
    return root / "model", root / "d.jsonl"


class System:
    def __init__(self, url: str, workdir: Path, runs: Path, env: dict[str, str], logs: Path) -> None:
        self.url, self.workdir, self.runs, self.env, self.logs = url, workdir, runs, env, logs
        self.procs: dict[str, Service] = {}

    def start(self, role: str) -> None:
        argv = {
            "worker": celery_argv("worker", *worker_options(f"e2e-{role}@%h", 2, heartbeat=True)),
            "beat": celery_argv("beat", "-l", "warning", "-s", str(self.logs / "beat-schedule")),
        }[role]
        self.procs[role] = Service(role, argv, self.env, self.logs / f"{role}.log").start()

    def kill(self, role: str, signum: int = signal.SIGTERM) -> None:
        service = self.procs.pop(role)
        service.signal(signum)
        assert service.proc is not None
        service.proc.wait(30)


def _services_env(redis_url: str, workdir: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "KUBE"))},
        "REDIS_URL": redis_url, "TRAINER_API_TOKEN": TOKEN, "TRAINER_CLUSTER_BACKEND": "local",
        "TRAINER_LOCAL_WORKDIR": str(workdir), "TRAINER_SYNC_INTERVAL_S": "1", "TRAINER_LOCAL_TERMINATE_GRACE_S": "5",
        "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def system(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    workdir, runs = tmp_path / "jobs", tmp_path / "runs"
    env = _services_env(redis_url, workdir)
    app = create_app({"ENVIRON": env, "PROGRESS_CACHE_S": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("TRAINER_BASE_URL", url)
    monkeypatch.setenv("TRAINER_API_TOKEN", TOKEN)
    system = System(url, workdir, runs, env, tmp_path)
    system.start("worker")
    system.start("beat")
    yield system
    server.shutdown()
    for role in list(system.procs):
        system.kill(role)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return trainctl(list(argv), out=out), out.getvalue()


def submit(tmp_path: Path, **overrides: Any) -> str:
    path = tmp_path / f"request-{overrides['run_id']}.json"
    path.write_text(json.dumps(sample(**overrides)))
    code, out = run("submit", str(path))
    assert code == 0, out
    return out.split()[0]


def test_a_cpu_job_trains_through_the_whole_system(system: System, tiny_inputs: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    model, dataset = tiny_inputs
    name = submit(tmp_path, framework="hf", run_id="e2e-hf", model_id=str(model), dataset_uri=str(dataset),
                  checkpoint_base_uri=str(system.runs), num_nodes=1, gpus_per_node=0,
                  extra_args={"max_steps": 6, "save_steps": 3, "batch_size": 4, "block_size": 32})
    code, out = run("wait", name, "--interval", "1", "--timeout", "400")
    assert code == 0, out + run("logs", name)[1]
    assert f"{name}: framework hf succeeded (attempt 1)" in out
    checkpoints = system.runs / "e2e-hf" / "framework=hf" / "checkpoints"
    assert (checkpoints / "step-000006.json").is_file()
    code, logs = run("logs", name)
    assert code == 0 and "master-0.log" not in logs and logs.strip()  # one replica: printed without a header
    code, events = run("events", name)
    assert [line.split()[3] for line in events.splitlines()][-2:] == ["running", "succeeded"]


def test_a_job_whose_trainer_fails_is_failed_with_the_exit_code(system: System, tiny_inputs: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    model, _ = tiny_inputs
    name = submit(tmp_path, framework="meta", run_id="e2e-missing-data", model_id=str(model),
                  dataset_uri=str(tmp_path / "no-such.jsonl"), checkpoint_base_uri=str(system.runs), num_nodes=1,
                  gpus_per_node=0, extra_args={"max_steps": 2})
    code, out = run("wait", name, "--interval", "1", "--timeout", "300")
    assert code == 1 and "did not succeed: failed" in out
    code, status = run("status", name, "--json")
    assert "exited with code" in json.loads(status)["detail"]


def test_a_crashed_worker_neither_orphans_nor_loses_a_running_job(system: System, tiny_inputs: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, dataset = tiny_inputs
    name = submit(tmp_path, framework="meta", run_id="e2e-restart", model_id=str(model), dataset_uri=str(dataset),
                  checkpoint_base_uri=str(system.runs), num_nodes=1, gpus_per_node=0,
                  extra_args={"max_steps": 400, "save_steps": 200, "batch_size": 4, "block_size": 32})
    deadline = time.monotonic() + 300
    while json.loads(run("status", name, "--json")[1])["status"] != "running":
        assert time.monotonic() < deadline, "the job never started running"
        time.sleep(0.5)

    system.kill("worker", signal.SIGKILL)  # the worker and its pool die; the replica runs in its own session
    system.start("worker")
    code, out = run("wait", name, "--interval", "1", "--timeout", "400")
    assert code == 0, out + run("logs", name)[1]
    assert (system.runs / "e2e-restart" / "framework=meta" / "checkpoints" / "step-000400.json").is_file()
