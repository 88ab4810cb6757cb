"""The nemo runner with NeMo installed, as the trainer image's `WITH_NEMO=1` ships it, in the interpreter
`make nemo-venv` builds from trainer/requirements-nemo.txt (nemo_toolkit 3.0.0 with lightning 2.4.0; `make unit`
passes it as TRAINER_NEMO_PYTHON). NeMo's `exp_manager` owns the checkpoint callback: on one process (`.ckpt` files,
resume with the same losses) and on two under `torchrun` with FSDP (sharded folders, every rank uploading its own
shard, resume 2 -> 2 with the uninterrupted run's losses and grad norms). And the pins file itself: exact pins,
trainer/requirements.txt's but lightning, and exactly what that interpreter holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.runs import (
    NEMO_PYTHON,
    REPO,
    check_layout,
    copy_run,
    fsdp_baseline,
    needs_nemo,
    requirement_pins,
    run,
    torchrun_of,
    torchrun_train_py,
    trainer_args,
    trainer_env,
)
from trainer.storage import LocalStorage

NEMO_REQUIREMENTS = REPO / "trainer" / "requirements-nemo.txt"
# Accumulation and dropout on: an exact resume needs the data position and the RNG state too.
ONE_PROCESS = {"save_steps": 10, "logging_steps": 5, "batch_size": 8, "gradient_accumulation": 4, "block_size": 64,
               "lr": 1e-3, "warmup_steps": 5, "seed": 3}
SHARDED = {**ONE_PROCESS, "batch_size": 4, "gradient_accumulation": 2}
# What distributions every venv holds without being asked (pip freeze leaves them out too).
SEEDED = {"pip", "setuptools", "wheel"}
INSTALLED = """
import json, re
from importlib import metadata
print(json.dumps({re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in metadata.distributions()}))
"""


def nemo_env(work: Path) -> dict[str, str]:
    """`trainer_env` for the NeMo interpreter: the repository on PYTHONPATH (nothing is installed there of it)."""
    return trainer_env(work, {"PYTHONPATH": str(REPO)})


def train_rows(rows: list[dict[str, Any]]) -> dict[int, tuple[float, float, float]]:
    return {int(r["step"]): (r["loss"], r["lr"], r["grad_norm"]) for r in rows if r.get("kind") == "train"}


def test_the_nemo_requirements_are_exact_pins_of_the_trainers_but_lightning() -> None:
    nemo, trainer = requirement_pins(NEMO_REQUIREMENTS), requirement_pins(REPO / "trainer" / "requirements.txt")
    assert "nemo_toolkit[core,common-only]==3.0.0" in NEMO_REQUIREMENTS.read_text().splitlines()
    assert nemo["lightning"] == "2.4.0" != trainer["lightning"]  # nemo_toolkit 3.0.0 pins lightning<=2.4.0
    assert {name: nemo.get(name) for name in trainer if name != "lightning"} == \
        {name: version for name, version in trainer.items() if name != "lightning"}
    assert len(nemo) > 100  # NeMo's transitive dependencies are pinned too, not left to the resolver


@needs_nemo
def test_the_nemo_interpreter_holds_exactly_the_pinned_distributions() -> None:
    """Nothing the build resolved by itself: every installed distribution is pinned at its version (torch's `+cpu`
    local tag aside), and NeMo's exp_manager imports with that Lightning."""
    out = subprocess.run([NEMO_PYTHON, "-c", INSTALLED], capture_output=True, text=True, timeout=120, check=True)
    installed = {name: version.split("+")[0] for name, version in json.loads(out.stdout).items()
                 if name not in SEEDED}
    assert installed == requirement_pins(NEMO_REQUIREMENTS)
    check = "from nemo.utils.exp_manager import exp_manager; import lightning; print(lightning.__version__)"
    imported = subprocess.run([NEMO_PYTHON, "-c", check], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0 and imported.stdout.strip() == "2.4.0", imported.stderr[-3000:]


@pytest.mark.slow
@needs_nemo
def test_exp_manager_drives_checkpoints_and_resume_on_one_process(tiny_model: Path, sample_dataset: Path,
                                                                   tmp_path: Path) -> None:
    env = nemo_env(tmp_path / "work")
    runs = tmp_path / "runs"
    args = trainer_args("nemo", "nemo", str(runs), str(sample_dataset), str(tiny_model), max_steps=20,
                        **ONE_PROCESS)
    first = run([NEMO_PYTHON, "-m", "trainer", *args], env)
    assert "checkpoints by NeMo exp_manager" in first.stderr
    assert "Checkpoint save for step 10 started" in first.stdout  # NeMo's NeMoModelCheckpoint saved it (its log)
    prefix = runs / "nemo" / "framework=nemo"
    layout = check_layout(LocalStorage(), str(prefix), [10, 20], total_steps=20)
    assert layout["run"]["versions"]["nemo_toolkit"] == "3.0.0" and layout["run"]["versions"]["lightning"] == "2.4.0"
    assert layout["manifests"][20].metadata["format"] == "lightning-ckpt"
    assert layout["manifests"][20].metadata["nemo_exp_manager"] is True
    assert (prefix / "logs" / "nemo" / "cmd-args.log").is_file()  # exp_manager's own logs, beside ours
    (prefix / "checkpoints" / "step-000020.json").unlink()  # as if killed before step 20's manifest
    (prefix / "checkpoints" / "latest.json").unlink()
    second = run([NEMO_PYTHON, "-m", "trainer", *args, "--resume"], env)
    assert "nemo: resumed at step 10 (RNG restored)" in second.stderr
    resumed = check_layout(LocalStorage(), str(prefix), [10, 20], total_steps=20)
    assert train_rows(resumed["metrics"]) == train_rows(layout["metrics"])


@pytest.fixture(scope="module")
def nemo_fsdp_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 20-step FSDP run on two processes in the NeMo interpreter (checked; the resume's baseline)."""
    if not NEMO_PYTHON:
        pytest.skip("needs the NeMo interpreter (`make nemo-venv`, TRAINER_NEMO_PYTHON)")
    return fsdp_baseline("nemo", tmp_path_factory.mktemp("nemo-toolkit-fsdp"), sample_dataset, tiny_model, 20,
                         SHARDED, torchrun=torchrun_of(NEMO_PYTHON), env={"PYTHONPATH": str(REPO)})


@pytest.mark.slow
@needs_nemo
def test_exp_manager_checkpoints_fsdp_shards_from_every_rank(nemo_fsdp_run: dict) -> None:
    layout, prefix = nemo_fsdp_run["layout"], nemo_fsdp_run["prefix"]
    assert layout["run"]["versions"]["lightning"] == "2.4.0" and layout["run"]["versions"]["nemo_toolkit"] == "3.0.0"
    output = nemo_fsdp_run["output"]  # NeMo's own log lines (NeMoModelCheckpoint's), on stdout
    assert "Checkpoint save for step 10 started" in output and "Checkpoint save for step 20 started" in output
    for rank in (0, 1):
        log = (prefix / "logs" / f"train-rank{rank}.log").read_text()
        assert "FSDP over 2 processes (sharded checkpoints); checkpoints by NeMo exp_manager" in log
    for step in (10, 20):
        manifest = layout["manifests"][step]
        assert manifest.name == f"step-{step:06d}.ckpt"
        assert manifest.metadata == {"framework": "nemo", "format": "lightning-fsdp-sharded",
                                     "nemo_exp_manager": True, "world_size": 2}
        sizes = {f.path.split("/", 1)[1]: f.size for f in manifest.files}
        assert {".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt", "_ranks/rank-00000.json",
                "_ranks/rank-00001.json"} <= sizes.keys()
        assert 0.8 < sizes["__0_0.distcp"] / sizes["__1_0.distcp"] < 1.25  # about half of model and optimizer each
    rank1 = json.loads((prefix / "checkpoints" / "step-000020.ckpt/_ranks/rank-00001.json").read_text())
    assert sorted(rank1["files"]) == ["step-000020.ckpt/__1_0.distcp"]  # rank 1 uploaded what it wrote
    assert not list((prefix / "checkpoints").glob("*-last*"))  # NeMo's rolling copy is not uploaded (none asked)
    assert (prefix / "logs" / "nemo" / "cmd-args.log").is_file()
    rows = [r for r in layout["metrics"] if r.get("kind") == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"] and all(r["grad_norm"] > 0 for r in rows)


@pytest.mark.slow
@needs_nemo
def test_exp_manager_fsdp_run_resumes_on_two_processes_with_the_same_losses(nemo_fsdp_run: dict, tiny_model: Path,
                                                                            sample_dataset: Path,
                                                                            tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    prefix = copy_run(nemo_fsdp_run["prefix"], runs, "fsdp", upto=10, framework="nemo")
    args = trainer_args("nemo", "fsdp", str(runs), str(sample_dataset), str(tiny_model), max_steps=20, resume=True,
                        **SHARDED)
    result = run(torchrun_train_py(2, args, torchrun_of(NEMO_PYTHON)), nemo_env(tmp_path / "work"), timeout=400)
    assert "nemo: resumed at step 10 (RNG restored)" in result.stderr
    assert "Checkpoint save for step 20 started" in result.stdout + result.stderr  # exp_manager's callback again
    resumed = check_layout(LocalStorage(), str(prefix), [10, 20], total_steps=20, world_size=2)
    assert resumed["manifests"][20].metadata["nemo_exp_manager"] is True
    assert train_rows(resumed["metrics"]) == train_rows(nemo_fsdp_run["layout"]["metrics"])
