"""The local backend runs PyTorchJob replicas as real processes with the operator's env and status semantics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from broker.backends import local_procs
from broker.backends.errors import AlreadyExists, ClusterError
from broker.backends.local import LocalBackend, expand_vars, matches_selector, resolve_argv, trainer_entrypoint

PY = sys.executable
NS = "team-a"


def pytorchjob(
    name: str,
    master: list[str],
    *,
    workers: int = 0,
    worker: list[str] | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    def replica(argv: list[str], count: int) -> dict[str, Any]:
        container = {
            "name": "pytorch",
            "image": "ghcr.io/deepfinery/trainer:latest",
            "command": argv[:1],
            "args": argv[1:],
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        }
        return {"replicas": count, "restartPolicy": "Never", "template": {"spec": {"containers": [container]}}}

    specs = {"Master": replica(master, 1)}
    if workers:
        specs["Worker"] = replica(worker or master, workers)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {"app.kubernetes.io/managed-by": "tb"}},
        "spec": {"nprocPerNode": "2", "pytorchReplicaSpecs": specs},
    }


def conditions(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["type"], c["status"]) for c in job["status"]["conditions"]]


def current(job: dict[str, Any]) -> str:
    return [c["type"] for c in job["status"]["conditions"] if c["status"] == "True"][-1]


def wait_for(
    backend: LocalBackend, name: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = backend.get(NS, name)
        assert job is not None
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def finished(job: dict[str, Any]) -> bool:
    return current(job) in ("Succeeded", "Failed")


def all_replicas_done(job: dict[str, Any]) -> bool:
    return all(r["active"] == 0 for r in job["status"]["replicaStatuses"].values())


def pid_gone(pid: int) -> bool:
    return not local_procs.is_alive(pid, None)


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "jobs", terminate_grace_s=5, base_env={"PATH": os.environ["PATH"]})


PRINT_ENV = [
    PY, "-c",
    "import json, os; keys = ['MASTER_ADDR', 'MASTER_PORT', 'PET_MASTER_PORT', 'PET_NNODES', 'PET_NPROC_PER_NODE',"
    " 'PET_NODE_RANK', 'RANK', 'WORLD_SIZE', 'PYTHONUNBUFFERED', 'FRAMEWORK', 'TRAINER_API_TOKEN'];"
    " print(json.dumps({k: os.environ.get(k) for k in keys}))",
]


def logged_env(backend: LocalBackend, name: str, replica: str) -> dict[str, str]:
    log = backend.workdir / NS / name / f"{replica}.log"
    return json.loads(log.read_text().splitlines()[0])


def test_each_replica_gets_the_operators_env_and_its_own_log(backend: LocalBackend) -> None:
    backend.create(pytorchjob("envs", PRINT_ENV, workers=2, env={"FRAMEWORK": "hf"}))
    job = wait_for(backend, "envs", lambda j: finished(j) and all_replicas_done(j))
    assert current(job) == "Succeeded"
    master, w0, w1 = (logged_env(backend, "envs", r) for r in ("master-0", "worker-0", "worker-1"))
    assert master["MASTER_ADDR"] == "127.0.0.1" and master["MASTER_PORT"] == master["PET_MASTER_PORT"]
    assert w0["MASTER_PORT"] == master["MASTER_PORT"] == w1["MASTER_PORT"]
    assert [e["PET_NODE_RANK"] for e in (master, w0, w1)] == ["0", "1", "2"]
    assert [e["RANK"] for e in (master, w0, w1)] == ["0", "1", "2"]
    assert {e["PET_NNODES"] for e in (master, w0, w1)} == {"3"}
    assert master["PET_NPROC_PER_NODE"] == "2" and master["WORLD_SIZE"] == "6"
    assert master["PYTHONUNBUFFERED"] == "1" and master["FRAMEWORK"] == "hf"
    assert master["TRAINER_API_TOKEN"] is None
    assert job["status"]["replicaStatuses"] == {
        "Master": {"active": 0, "succeeded": 1, "failed": 0},
        "Worker": {"active": 0, "succeeded": 2, "failed": 0},
    }


def test_a_job_goes_created_running_succeeded_in_the_operators_shape(backend: LocalBackend) -> None:
    created = backend.create(pytorchjob("ok", [PY, "-c", "import time; time.sleep(1.5)"]))
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    assert conditions(created) == [("Created", "True"), ("Running", "True")]
    job = wait_for(backend, "ok", finished)
    assert conditions(job) == [("Created", "True"), ("Running", "False"), ("Succeeded", "True")]
    assert job["status"]["startTime"] and job["status"]["completionTime"]


def test_a_failing_master_fails_the_job_with_its_exit_code(backend: LocalBackend) -> None:
    backend.create(pytorchjob("boom", [PY, "-c", "import sys; print('bad data', file=sys.stderr); sys.exit(3)"]))
    job = wait_for(backend, "boom", finished)
    assert current(job) == "Failed"
    failed = job["status"]["conditions"][-1]
    assert failed["reason"] == "PyTorchJobFailed" and "Master-0 exited with code 3" in failed["message"]
    assert "bad data" in (backend.workdir / NS / "boom" / "master-0.log").read_text()


def test_a_replica_killed_by_a_signal_reports_the_containers_exit_code(backend: LocalBackend) -> None:
    backend.create(pytorchjob("sig", [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]))
    job = wait_for(backend, "sig", finished)
    assert current(job) == "Failed" and "exited with code 143" in job["status"]["conditions"][-1]["message"]


def test_a_failed_worker_fails_the_job_and_stops_the_master(backend: LocalBackend) -> None:
    sleeper = [PY, "-c", "import time; time.sleep(60)"]
    backend.create(pytorchjob("wfail", sleeper, workers=1, worker=[PY, "-c", "raise SystemExit(2)"]))
    job = wait_for(backend, "wfail", finished)
    assert current(job) == "Failed" and "Worker-0 exited with code 2" in job["status"]["conditions"][-1]["message"]
    state = json.loads((backend.workdir / NS / "wfail" / "state.json").read_text())
    assert pid_gone(state["replicas"][0]["pid"])


def test_creating_an_existing_name_is_already_exists(backend: LocalBackend) -> None:
    job = pytorchjob("dup", [PY, "-c", "pass"])
    backend.create(job)
    with pytest.raises(AlreadyExists):
        backend.create(job)


def test_a_restarted_backend_sees_running_and_finished_jobs(backend: LocalBackend) -> None:
    backend.create(pytorchjob("short", [PY, "-c", "pass"], labels={"tb": "yes", "fw": "hf"}))
    backend.create(pytorchjob("long", [PY, "-c", "import time; time.sleep(60)"], labels={"tb": "yes", "fw": "meta"}))
    backend.create(pytorchjob("other", [PY, "-c", "pass"], labels={"tb": "no"}))
    wait_for(backend, "short", finished)

    restarted = LocalBackend(backend.workdir, terminate_grace_s=5)
    jobs = {j["metadata"]["name"]: current(j) for j in restarted.list(NS, "tb=yes")}
    assert jobs == {"short": "Succeeded", "long": "Running"}
    assert [j["metadata"]["name"] for j in restarted.list(NS, "tb=yes,fw!=hf")] == ["long"]
    assert restarted.list("elsewhere", "tb=yes") == []
    assert restarted.delete(NS, "long") is True


def test_a_replica_that_vanished_is_reported_failed(backend: LocalBackend) -> None:
    backend.create(pytorchjob("gone", [PY, "-c", "import time; time.sleep(60)"]))
    state = json.loads((backend.workdir / NS / "gone" / "state.json").read_text())
    os.killpg(state["replicas"][0]["pgid"], signal.SIGKILL)  # supervisor too: no exit code recorded
    job = wait_for(backend, "gone", finished)
    assert current(job) == "Failed" and "vanished" in job["status"]["conditions"][-1]["message"]


def test_delete_kills_the_whole_process_group_and_removes_the_object(backend: LocalBackend) -> None:
    spawn_grandchild = [
        PY, "-c",
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        " print(p.pid, flush=True); time.sleep(60)",
    ]
    backend.create(pytorchjob("victim", spawn_grandchild))
    log = backend.workdir / NS / "victim" / "master-0.log"
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(log.read_text().split()[0])
    supervisor = json.loads((backend.workdir / NS / "victim" / "state.json").read_text())["replicas"][0]["pid"]

    assert backend.delete(NS, "victim") is True
    assert pid_gone(grandchild) and pid_gone(supervisor)
    assert backend.get(NS, "victim") is None
    assert backend.delete(NS, "victim") is False
    backend.create(pytorchjob("victim", [PY, "-c", "pass"]))  # the name is free again


def test_gpu_quota_is_unknown_locally(backend: LocalBackend) -> None:
    assert backend.gpu_quota_free(NS) is None


def test_commands_are_mapped_to_this_machine() -> None:
    argv = resolve_argv(["torchrun", "--nnodes", "2", "train.py", "--framework", "hf"], "/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", "torch.distributed.run"]
    entry = trainer_entrypoint()
    assert argv[5] == (str(entry) if entry else "train.py")
    assert expand_vars("--node_rank=$(PET_NODE_RANK) $$(X) $(UNSET)", {"PET_NODE_RANK": "1"}) == (
        "--node_rank=1 $(X) $(UNSET)"
    )


def test_label_selectors_follow_kubernetes_equality_rules() -> None:
    labels = {"a": "1", "b": "2"}
    assert matches_selector(labels, "a=1,b==2") and matches_selector(labels, "a,!c") and matches_selector(labels, "")
    assert not matches_selector(labels, "a=1,b!=2") and not matches_selector(labels, "c")


def test_a_job_that_cannot_start_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = LocalBackend(tmp_path / "jobs", python="/nonexistent/python")
    with pytest.raises(ClusterError, match="could not start"):
        broken.create(pytorchjob("nostart", [PY, "-c", "pass"]))
    assert broken.get(NS, "nostart") is None and broken.list(NS, "") == []


def test_ending_a_replica_also_ends_its_workers_in_sessions_of_their_own(tmp_path: Path) -> None:
    """torchrun starts its workers with a session (and process group) of their own: ending the replica's group must
    not leave them training, even when they ignore SIGTERM."""
    pid_file = tmp_path / "worker.pid"
    worker = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    launcher = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    replica = subprocess.Popen([PY, "-c", launcher], start_new_session=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the launcher did not start its worker"
        time.sleep(0.05)
    worker_pid = int(pid_file.read_text())
    assert os.getpgid(worker_pid) != replica.pid  # in a group of its own, as torchrun's workers are
    assert local_procs.group_alive(replica.pid)

    local_procs.terminate_groups([replica.pid], grace_s=0.5)
    replica.wait(10)
    deadline = time.monotonic() + 10
    while local_procs.is_alive(worker_pid, None):
        assert time.monotonic() < deadline, "the worker outlived its replica"
        time.sleep(0.05)
    assert not local_procs.group_alive(replica.pid)
