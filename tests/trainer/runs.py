"""Helpers to launch the real trainer in subprocesses (`python -m trainer` or `torchrun ... trainer/train.py`) and
to read what a run left in storage. Shared by every runner's tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from devstack import free_port
from trainer.storage import LocalStorage, Storage

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "trainer" / "train.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"
#: The hf runner's test settings (the tiny model: 10-step checkpoints, losses logged every 5 steps).
HF_TRAINING = {"save_steps": 10, "logging_steps": 5, "batch_size": 4, "block_size": 64, "lr": 1e-3, "seed": 3}
# The interpreter with NeMo (`make nemo-venv` builds .venv-nemo from trainer/requirements-nemo.txt: nemo_toolkit
# 3.0.0, lightning 2.4.0); `make unit` sets it. Tests that need it skip without it (bare pytest).
NEMO_PYTHON = os.environ.get("TRAINER_NEMO_PYTHON", "")
needs_nemo = pytest.mark.skipif(not NEMO_PYTHON, reason="needs the NeMo interpreter: run `make nemo-venv` and set "
                                "TRAINER_NEMO_PYTHON=$PWD/.venv-nemo/bin/python (`make test` does both)")


def trainer_args(framework: str, run_id: str, base_uri: str, dataset_uri: str, model_id: str,
                 **extra: Any) -> list[str]:
    """The flags the PyTorchJob renders, plus `--key value` extra args (underscores become dashes)."""
    args = ["--framework", framework, "--run-id", run_id, "--checkpoint-base-uri", base_uri,
            "--dataset-uri", dataset_uri, "--model-id", model_id]
    for key, value in extra.items():
        if value is True:
            args.append(f"--{key.replace('_', '-')}")
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def trainer_env(work_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's env (with any S3 settings the fixtures applied), one thread per process, a scratch dir."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TRAINER_WORK_DIR": str(work_dir),
           "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.pop("LOCAL_RANK", None)
    return env


def requirement_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a requirements file (names normalized, extras dropped), e.g.
    `requirement_pins(REPO / "trainer/requirements-nemo.txt")["lightning"]`."""
    pins = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, sep, version = spec.partition("==")
            assert sep and version, f"{path.name}: not an exact pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name.split("[", 1)[0]).lower()] = version
    return pins


def python_m_trainer(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


def torchrun_train_py(nproc: int, args: Sequence[str], torchrun: Path = TORCHRUN) -> list[str]:
    """The rendered PyTorchJob command shape, run from the script path of `trainer/train.py` (by `torchrun`: this
    venv's, or `torchrun_of(NEMO_PYTHON)`)."""
    return [str(torchrun), f"--nproc_per_node={nproc}", "--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", str(TRAIN_PY), *args]


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout,
                            start_new_session=True)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return result


def start(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start in its own process group, so `kill_group` reaches the whole of `python -m trainer`. Not torchrun's
    workers: torch's elastic agent starts each in a session of its own (`reliability.trainer_runs.kill_tree` kills
    a torchrun tree)."""
    handle = log.open("wb")
    return subprocess.Popen(list(argv), env=dict(env), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """`kill -9` the process, its group and every descendant, as a node loss or OOM kill would (torchrun starts its
    workers in sessions of their own, so the group alone would leave them running)."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def descendants(pid: int) -> list[int]:
    """Every descendant of `pid` (psutil), whatever session it runs in."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
             interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before the condition held")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(interval)


def read_jsonl(storage: Storage, uri: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storage.get_bytes(uri).decode().splitlines() if line.strip()]


def read_json(storage: Storage, uri: str) -> Any:
    return json.loads(storage.get_bytes(uri))


def check_layout(storage: Storage, prefix: str, steps: Sequence[int], total_steps: int,
                 world_size: int = 1) -> dict[str, Any]:
    """Assert the shared layout every runner writes under `prefix`; returns what was read for further checks.

    - `checkpoints/step-XXXXXX.json` for exactly `steps`, each listing files that exist with the listed sizes, and
      `checkpoints/latest.json` pointing at the last;
    - `config/run.json` with the resolved config and world size;
    - `logs/metrics.jsonl` rows with step, loss, lr, tokens_per_s, elapsed_s; `logs/progress.json` completed at
      `total_steps`; `logs/train-rank0.log`.
    """
    from trainer.checkpoints import CheckpointManager

    manager = CheckpointManager(storage, f"{prefix}/checkpoints")
    assert manager.complete_steps() == list(steps)
    manifests = {step: manager.manifest(step) for step in steps}
    for manifest in manifests.values():
        assert manifest is not None and manifest.files and manifest.created_at
        for item in manifest.files:
            assert storage.size(f"{prefix}/checkpoints/{item.path}") == item.size
    assert read_json(storage, f"{prefix}/checkpoints/latest.json")["step"] == steps[-1]
    run_json = read_json(storage, f"{prefix}/config/run.json")
    assert run_json["world_size"] == world_size and run_json["config"]["checkpoint_prefix"] == prefix
    assert "torch" in run_json["versions"] and run_json["started_at"]
    metrics = read_jsonl(storage, f"{prefix}/logs/metrics.jsonl")
    train_rows = [m for m in metrics if m.get("loss") is not None and m.get("kind", "train") == "train"]
    assert train_rows, metrics
    for row in train_rows:
        assert {"step", "loss", "lr", "tokens_per_s", "elapsed_s"} <= row.keys()
    assert [r["step"] for r in train_rows] == sorted({r["step"] for r in train_rows})  # rank 0 alone, in order
    assert train_rows[-1]["step"] == total_steps
    progress = read_json(storage, f"{prefix}/logs/progress.json")
    assert (progress["step"], progress["total_steps"], progress["state"]) == (total_steps, total_steps, "completed")
    assert progress["loss"] is not None and progress["updated_at"]
    log = storage.get_bytes(f"{prefix}/logs/train-rank0.log").decode()
    assert "completed" in log
    return {"manifests": manifests, "metrics": metrics, "train_rows": train_rows, "progress": progress,
            "run": run_json, "log": log}


def losses(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {int(r["step"]): float(r["loss"]) for r in rows if r.get("kind") == "train"}


def running(pid: int) -> bool:
    """Still running: exists and is not a zombie (a zombie's cmdline is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def copy_run(source: Path, runs: Path, run_id: str, upto: int, framework: str) -> Path:
    """A copy of a run's prefix as a crash right after checkpoint `upto` leaves it, under another run id."""
    prefix = runs / run_id / f"framework={framework}"
    shutil.copytree(source, prefix)
    for manifest in (prefix / "checkpoints").glob("step-*.json"):
        if int(manifest.stem.split("-")[1]) > upto:
            manifest.unlink()
    (prefix / "checkpoints" / "latest.json").unlink()
    return prefix


def fsdp_baseline(framework: str, base: Path, dataset: Path, model: Path, max_steps: int,
                  training: Mapping[str, Any], torchrun: Path = TORCHRUN,
                  env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One uninterrupted FSDP run of `framework` on two processes, checkpoints every 10 steps (checked); the
    baseline the sharding tests resume against: {"prefix": its run prefix, "layout": `check_layout`'s answer,
    "output": what the run wrote, stdout then stderr}. `torchrun` and `env` (added to `trainer_env`'s) pick another
    interpreter."""
    args = trainer_args(framework, "fsdp", str(base / "runs"), str(dataset), str(model), max_steps=max_steps,
                        **training)
    result = run(torchrun_train_py(2, args, torchrun), trainer_env(base / "work", env), timeout=400)
    prefix = base / "runs" / "fsdp" / f"framework={framework}"
    layout = check_layout(LocalStorage(), str(prefix), list(range(10, max_steps + 1, 10)), total_steps=max_steps,
                          world_size=2)
    return {"prefix": prefix, "layout": layout, "output": result.stdout + result.stderr}


def torchrun_of(python: str) -> Path:
    """The `torchrun` beside an interpreter (its virtualenv's `bin/`)."""
    return Path(python).parent / "torchrun"


def probe_argv(module: str, args: Sequence[str], torchrun: Path = TORCHRUN) -> list[str]:
    """`torchrun --nproc_per_node=2 -m <module> <train.py flags>` (a probe such as `tests.trainer.hf_probe`)."""
    return [str(torchrun), "--nproc_per_node=2", "--nnodes=1", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", "-m", module, *args]
