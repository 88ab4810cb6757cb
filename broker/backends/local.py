"""The embedded cluster: runs a rendered PyTorchJob's replicas as local processes, with the operator's semantics.

What the Training Operator would do on a cluster, done on this machine:

- Every replica (Master 0, Worker i → node rank i + 1) runs the `pytorch` container's `command` + `args` as an argv
  list (never a shell), with Kubernetes' `$(VAR)` expansion against the container's own `env` and the operator's
  variables only (never this process's environment), in its own session and process group. The image, the
  resources and the restart policy are ignored: a failed replica fails the job (no restarts).
- Env = a minimal environment (`broker.launch_policy.replica_base_env`: PATH, HOME, locale, PYTHONPATH, HF offline
  settings and the names in `TRAINER_LOCAL_REPLICA_ENV`; never the service's secrets) + the container's `env` +
  what the operator injects: `MASTER_ADDR`/`PET_MASTER_ADDR` = 127.0.0.1, `MASTER_PORT`/`PET_MASTER_PORT` = a
  free port per job, `PET_NNODES`, `PET_NPROC_PER_NODE` (= `spec.nprocPerNode`), `PET_NODE_RANK` and `RANK` per
  replica, `WORLD_SIZE`, `PYTHONUNBUFFERED=1`.
- The container's `torchrun` becomes `<this python> -m torch.distributed.run`, `python`/`python3` this interpreter,
  and a `train.py` argument that is not an existing file becomes the installed `trainer/train.py` — the image's
  entrypoint, found without importing the trainer.

Everything lives on disk under `workdir/<namespace>/<name>/`, so a restarted worker (or another process: the API
reading logs, a second worker) sees the same jobs:

- `object.json` — the object as created (metadata with uid and creationTimestamp, spec);
- `state.json` — master port, and per replica its supervisor pid, that process's creation time and file names;
  the terminal outcome once observed;
- `<replica>-<i>.log` — the replica's stdout and stderr (`master-0.log`, `worker-0.log`, …);
- `<replica>-<i>.exit` — written by `broker.backends.local_supervisor` when the replica ends (exit code and time).

Each replica runs under that small supervisor, which leads the process group, waits for the replica and records its
exit code: the backend needs not be the replica's parent to learn how it ended. A replica whose supervisor is gone
without an exit file (SIGKILL, machine reboot) is reported failed as vanished. `get`/`list` rebuild `.status` from
these files and live pid checks each time; a terminal outcome is written to `state.json` once, so it never changes
later. When a job fails, replicas still running are terminated (a torchrun waiting for a dead peer would hang).

`delete` terminates every replica's process group (SIGTERM, then SIGKILL after a grace period) and moves the job's
directory to `workdir/<namespace>/.deleted/<name>-<uid>/`, keeping its logs for inspection.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

from broker.backends import local_procs as procs
from broker.backends.base import PyTorchJob, status_view
from broker.backends.errors import AlreadyExists, ClusterError, Conflict, Invalid
from broker.backends.local_files import DELETED_DIR, OBJECT_FILE, STATE_FILE, job_dir, log_files
from broker.backends.local_files import read_json as _read_json
from broker.backends.local_files import write_json as _write_json
from broker.backends.local_status import FAILED, RUNNING, SUCCEEDED, Outcome, ReplicaState, decide_outcome, job_status
from broker.jobs import now_iso
from broker.launch_policy import replica_base_env

#: (replica type, index, node rank, container) per replica, Master first.
Plan = list[tuple[str, int, int, dict[str, Any]]]
Argv = list[str]
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_SELECTOR_TERM = re.compile(r"^\s*(!?)\s*([^=!\s]+)\s*(?:(==|=|!=)\s*(\S*))?\s*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- label selectors -------------------------------------------------------------------------------------------


def matches_selector(labels: dict[str, str], selector: str) -> bool:
    """Kubernetes equality-based selector: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k`, joined by commas."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        m = _SELECTOR_TERM.match(term)
        if not m:
            raise Invalid(f"unsupported label selector term {term!r}")
        negate, key, op, value = m.groups()
        if op is None:
            if (key in labels) == bool(negate):
                return False
        elif op == "!=":
            if labels.get(key) == value:
                return False
        elif labels.get(key) != value:
            return False
    return True


# --- turning a replica spec into a process ---------------------------------------------------------------------


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`, the rest kept."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(repl, text)


def trainer_entrypoint() -> Path | None:
    """The installed `trainer/train.py`, located without importing the trainer package."""
    spec = importlib.util.find_spec("trainer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "train.py"
    return path if path.is_file() else None


def resolve_argv(argv: list[str], python: str) -> list[str]:
    """Map the image's commands onto this machine: torchrun and python to this interpreter, train.py to ours."""
    if not argv:
        raise Invalid("the pytorch container has no command")
    head = argv[0]
    if os.path.basename(head) == "torchrun":
        out = [python, "-m", "torch.distributed.run"]
    elif os.path.basename(head) in ("python", "python3"):
        out = [python]
    else:
        out = [head]
    entry = trainer_entrypoint()
    for arg in argv[1:]:
        if entry and os.path.basename(arg) == "train.py" and not os.path.isfile(arg):
            out.append(str(entry))
        else:
            out.append(arg)
    return out


def _container(replica_spec: dict[str, Any]) -> dict[str, Any]:
    containers = replica_spec.get("template", {}).get("spec", {}).get("containers") or []
    if not containers:
        raise Invalid("every replica needs a container")
    return next((c for c in containers if c.get("name") == "pytorch"), containers[0])


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand_vars(str(item["value"]), env)
    return env


def _plan(job: PyTorchJob) -> Plan:
    """(replica type, index, node rank, container) for every replica, Master first."""
    specs = job.get("spec", {}).get("pytorchReplicaSpecs") or {}
    if not specs or set(specs) - {"Master", "Worker"}:
        raise Invalid("spec.pytorchReplicaSpecs must have Master and/or Worker")
    plan: Plan = []
    rank = 0
    for rtype in ("Master", "Worker"):
        if rtype in specs:
            for index in range(int(specs[rtype].get("replicas", 1))):
                plan.append((rtype, index, rank, _container(specs[rtype])))
                rank += 1
    return plan


def _operator_env(job: PyTorchJob, node_rank: int, nnodes: int, port: int) -> dict[str, str]:
    nproc = str(job.get("spec", {}).get("nprocPerNode") or "auto")
    world = nnodes * int(nproc) if nproc.isdigit() else nnodes
    return {
        "MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "PET_MASTER_PORT": str(port),
        "PET_NNODES": str(nnodes),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NODE_RANK": str(node_rank),
        "RANK": str(node_rank),
        "WORLD_SIZE": str(world),
        "PYTHONUNBUFFERED": "1",
    }


class LocalBackend:
    """`ClusterBackend` on this machine. `workdir` holds every job; share it between the worker and the API."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        terminate_grace_s: float = 10.0,
        base_env: dict[str, str] | None = None,
        python: str | None = None,
        pass_env: tuple[str, ...] = (),
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.terminate_grace_s = terminate_grace_s
        self.base_env = replica_base_env(os.environ if base_env is None else base_env, pass_env)
        self.python = python or sys.executable

    # --- paths ---

    def job_dir(self, namespace: str, name: str) -> Path:
        return job_dir(self.workdir, namespace, name)

    def log_files(self, namespace: str, name: str) -> list[Path]:
        """The job's replica logs, Master first; empty when the job does not exist."""
        return log_files(self.workdir, namespace, name)

    # --- ClusterBackend ---

    def create(self, job: PyTorchJob) -> PyTorchJob:
        meta = job.get("metadata", {})
        name, namespace = meta.get("name"), meta.get("namespace") or "default"
        if not name:
            raise Invalid("metadata.name is required")
        plan = _plan(job)
        directory = self.job_dir(namespace, name)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir()  # the atomic claim on the name
        except FileExistsError as exc:
            raise AlreadyExists(f"pytorchjobs {name!r} already exists in {namespace!r}", status=409) from exc
        stored = {
            "apiVersion": job.get("apiVersion", "kubeflow.org/v1"),
            "kind": job.get("kind", "PyTorchJob"),
            "metadata": {
                **meta,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_iso(),
            },
            "spec": job.get("spec", {}),
        }
        try:
            _write_json(directory / OBJECT_FILE, stored)
            self._start(directory, stored, plan)
        except OSError as exc:  # undo the claim: a half-created job would block its name forever
            self._terminate(directory, _read_json(directory / STATE_FILE) or {}, only_running=False)
            shutil.rmtree(directory, ignore_errors=True)
            raise ClusterError(f"could not start {namespace}/{name} locally: {exc}") from exc
        return self._with_status(directory, stored)

    def validate(self, job: PyTorchJob) -> PyTorchJob:
        """What `create` checks (a name, runnable replicas), without starting anything."""
        meta = job.get("metadata", {})
        if not meta.get("name"):
            raise Invalid("metadata.name is required")
        self.job_dir(meta.get("namespace") or "default", meta["name"])
        _plan(job)
        return job

    def get(self, namespace: str, name: str) -> PyTorchJob | None:
        directory = self.job_dir(namespace, name)
        stored = _read_json(directory / OBJECT_FILE)
        return None if stored is None else self._with_status(directory, stored)

    def list(self, namespace: str, label_selector: str, only: Collection[str] | None = None) -> list[PyTorchJob]:
        root = self.workdir / namespace
        if not root.is_dir():
            return []
        out = []
        for directory in sorted(root.iterdir()):
            hidden = directory.name.startswith(".") or not directory.is_dir() or (
                only is not None and directory.name not in only)
            stored = None if hidden else _read_json(directory / OBJECT_FILE)
            if stored and matches_selector(stored["metadata"].get("labels") or {}, label_selector):
                out.append(status_view(self._with_status(directory, stored)))
        return out

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        directory = self.job_dir(namespace, name)
        stored = _read_json(directory / OBJECT_FILE)
        if stored is None:
            return False
        if uid is not None and stored["metadata"].get("uid") != uid:
            raise Conflict(f"precondition failed: {namespace}/{name} is not the object of uid {uid}", status=409)
        state = _read_json(directory / STATE_FILE) or {}
        self._terminate(directory, state, only_running=False)
        graveyard = self.workdir / namespace / DELETED_DIR
        graveyard.mkdir(exist_ok=True)
        try:
            directory.rename(graveyard / f"{name}-{stored['metadata']['uid'][:8]}")
        except FileNotFoundError:
            return False  # a concurrent delete won
        return True

    def gpu_quota_free(self, namespace: str) -> int | None:
        return None

    # --- processes ---

    def _start(self, directory: Path, stored: PyTorchJob, plan: Plan) -> None:
        port = free_port()
        state: dict[str, Any] = {"master_port": port, "expected": len(plan), "replicas": [], "outcome": None}
        for rtype, index, rank, container in plan:
            own = {**_container_env(container), **_operator_env(stored, rank, len(plan), port)}
            env = {**self.base_env, **own}
            argv = [expand_vars(a, own) for a in [*container.get("command", []), *container.get("args", [])]]
            base = f"{rtype.lower()}-{index}"
            state["replicas"].append(self._spawn(directory, base, resolve_argv(argv, self.python), env, rtype, index))
            _write_json(directory / STATE_FILE, state)

    def _spawn(
        self, directory: Path, base: str, argv: Argv, env: dict[str, str], rtype: str, index: int
    ) -> dict[str, Any]:
        exit_file = directory / f"{base}.exit"
        supervisor = [self.python, "-m", "broker.backends.local_supervisor", "--exit-file", str(exit_file), "--", *argv]
        with open(directory / f"{base}.log", "ab") as log:
            proc = subprocess.Popen(
                supervisor, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.remember_child(proc.pid)
        return {
            "type": rtype, "index": index, "pid": proc.pid, "pgid": proc.pid, "started": procs.start_time(proc.pid),
            "log": f"{base}.log", "exit_file": exit_file.name, "argv": argv,
        }

    def _terminate(self, directory: Path, state: dict[str, Any], *, only_running: bool) -> None:
        groups = [r["pgid"] for r in state.get("replicas", [])
                  if not (only_running and (directory / r["exit_file"]).exists())]
        procs.terminate_groups(groups, self.terminate_grace_s)

    # --- status ---

    def _observe(self, directory: Path, replica: dict[str, Any]) -> ReplicaState:
        rtype, index = replica["type"], replica["index"]
        record = _read_json(directory / replica["exit_file"])
        if record is None and procs.is_alive(replica["pid"], replica.get("started")):
            return ReplicaState(rtype, index, RUNNING)
        if record is None:
            record = _read_json(directory / replica["exit_file"])  # it may have ended between the two looks
        if record is None:
            return ReplicaState(rtype, index, FAILED, vanished=True)
        code = int(record["exit_code"])
        return ReplicaState(rtype, index, SUCCEEDED if code == 0 else FAILED, code, record.get("finished_at"))

    def _with_status(self, directory: Path, stored: PyTorchJob) -> PyTorchJob:
        name, created = stored["metadata"]["name"], stored["metadata"]["creationTimestamp"]
        state = _read_json(directory / STATE_FILE)
        if not state or len(state["replicas"]) < state["expected"]:
            status = job_status(name, created, [], None)
            status["conditions"] = status["conditions"][:1]  # still starting: Created only
            return {**stored, "status": status}
        replicas = [self._observe(directory, r) for r in state["replicas"]]
        outcome = Outcome.from_dict(state["outcome"]) if state.get("outcome") else None
        if outcome is None:
            outcome = decide_outcome(name, replicas, now_iso())
            if outcome is not None:
                self._record_outcome(directory, state, outcome)
        return {**stored, "status": job_status(name, created, replicas, outcome)}

    def _record_outcome(self, directory: Path, state: dict[str, Any], outcome: Outcome) -> None:
        if outcome.phase == FAILED:
            self._terminate(directory, state, only_running=True)
        latest = _read_json(directory / STATE_FILE)
        if latest and not latest.get("outcome"):
            try:
                _write_json(directory / STATE_FILE, {**latest, "outcome": outcome.to_dict()})
            except FileNotFoundError:
                pass  # deleted meanwhile: there is no object left to record it on
