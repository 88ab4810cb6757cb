"""The nemo runner sharded over two processes under real `torchrun --nproc_per_node=2` (gloo, CPU): what a GPU user
asks for reaches Lightning's objects (its FSDPStrategy on the model's own blocks, sharded state dict, bf16 compute
with fp32 gradient reduction, activation checkpointing, no gradient sync on accumulation micro-steps); every rank
writes and uploads its own checkpoint shard; resume on two processes gives the uninterrupted run's losses; the
world-size changes Lightning cannot continue (sharded -> one process, full -> FSDP) are refused with the sharding
that does, and DDP stays available."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.runs import (
    NEMO_PYTHON,
    check_layout,
    copy_run,
    fsdp_baseline,
    losses,
    needs_nemo,
    probe_argv,
    python_m_trainer,
    requirement_pins,
    run,
    torchrun_of,
    torchrun_train_py,
    trainer_args,
    trainer_env,
)
from trainer.storage import LocalStorage

pytestmark = pytest.mark.slow
# Accumulation and dropout on (the tiny model's default): an exact resume needs data position and RNG state too.
TRAINING = {"save_steps": 10, "logging_steps": 5, "batch_size": 4, "gradient_accumulation": 2, "block_size": 64,
            "lr": 1e-3, "warmup_steps": 5, "seed": 3}
ROOT = Path(__file__).resolve().parents[2]


# The project venv (Lightning 2.6.6, Lightning's ModelCheckpoint) and the NeMo interpreter (Lightning 2.4.0, NeMo's
# exp_manager and its NeMoModelCheckpoint: the trainer image's WITH_NEMO=1): the strategy subclass works on both.
LIGHTNINGS = [pytest.param(sys.executable, requirement_pins(ROOT / "trainer/requirements.txt")["lightning"],
                           "ModelCheckpoint", id="lightning-2.6"),
              pytest.param(NEMO_PYTHON, requirement_pins(ROOT / "trainer/requirements-nemo.txt")["lightning"],
                           "NeMoModelCheckpoint", id="nemo-lightning-2.4", marks=needs_nemo)]


@pytest.mark.parametrize("python, lightning, callback", LIGHTNINGS)
def test_fsdp_settings_reach_lightnings_strategy_and_the_wrapped_model(python: str, lightning: str, callback: str,
                                                                       tiny_model: Path, sample_dataset: Path,
                                                                       tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    args = trainer_args("nemo", "probe", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=2,
                        save_steps=10, logging_steps=1, batch_size=2, block_size=32, gradient_accumulation=2,
                        precision="bf16", activation_checkpointing=True)
    argv = probe_argv("tests.trainer.nemo_probe", args, torchrun_of(python))
    run(argv, trainer_env(tmp_path / "work", {"NEMO_PROBE_OUT": str(tmp_path / "probe"), "PYTHONPATH": str(ROOT)}),
        timeout=400)
    total = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    got = [json.loads((tmp_path / "probe" / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    for report in got:
        assert "FSDPStrategy" in report["strategy_bases"] and report["process_group_backend"] == "gloo"
        assert report["state_dict_type"] == "sharded"
        assert report["wrapped_modules"] == ["CausalLMModule", "GPT2Block"]  # each block (_no_split_modules), root
        assert report["wrapped_blocks"] == 2
        assert (report["param_dtype"], report["reduce_dtype"]) == ("torch.bfloat16", "torch.float32")
        assert (report["block_param_dtype"], report["block_reduce_dtype"]) == ("torch.bfloat16", "torch.float32")
        assert report["compute_dtypes"] == ["torch.bfloat16"] and report["grad_dtypes"] == ["torch.float32"]
        assert report["activation_checkpointing"] == [True, True]
        assert report["decay_group_sizes"][0] > 0  # the matrices keep their weight decay once flattened
        assert report["no_sync_entries"] == 2  # 2 steps of 2 micro-steps: the first of each skips the sync
        assert report["global_step"] == 2
        assert report["lightning"] == lightning and report["checkpoint_callbacks"] == [callback]
    local = [report["local_numel"] for report in got]
    assert sum(local) == total and abs(local[0] - local[1]) < 0.2 * total  # each rank holds about half


@pytest.fixture(scope="module")
def fsdp_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 30-step FSDP run on two processes (checked; the baseline for the resumes)."""
    return fsdp_baseline("nemo", tmp_path_factory.mktemp("nemo-fsdp"), sample_dataset, tiny_model, 30, TRAINING)


def test_every_rank_writes_and_uploads_its_own_shard(fsdp_run: dict) -> None:
    manifest = fsdp_run["layout"]["manifests"][20]
    assert manifest.name == "step-000020.ckpt"
    assert manifest.metadata == {"framework": "nemo", "format": "lightning-fsdp-sharded", "nemo_exp_manager": False,
                                 "world_size": 2}
    sizes = {f.path.split("/", 1)[1]: f.size for f in manifest.files}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"} <= sizes.keys()
    assert 0.8 < sizes["__0_0.distcp"] / sizes["__1_0.distcp"] < 1.25  # about half of model and optimizer each
    assert {"_ranks/rank-00000.json", "_ranks/rank-00001.json"} <= sizes.keys()  # both ranks reported
    rank1 = json.loads((fsdp_run["prefix"] / "checkpoints" / "step-000020.ckpt/_ranks/rank-00001.json").read_text())
    assert sorted(rank1["files"]) == ["step-000020.ckpt/__1_0.distcp"]  # rank 1 uploaded what it wrote
    for rank in (0, 1):
        log = (fsdp_run["prefix"] / "logs" / f"train-rank{rank}.log").read_text()
        assert "FSDP over 2 processes (sharded checkpoints)" in log
    rows = [r for r in fsdp_run["layout"]["metrics"] if r.get("kind") == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"] and all(r["grad_norm"] > 0 for r in rows)


def test_resume_on_two_processes_gives_the_losses_of_the_uninterrupted_run(fsdp_run: dict, tiny_model: Path,
                                                                           sample_dataset: Path,
                                                                           tmp_path: Path) -> None:
    prefix = copy_run(fsdp_run["prefix"], tmp_path / "runs", "fsdp", upto=20, framework="nemo")
    args = trainer_args("nemo", "fsdp", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=30,
                        resume=True, **TRAINING)
    result = run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=400)
    assert "nemo: resumed at step 20 (RNG restored)" in result.stderr
    resumed = check_layout(LocalStorage(), str(prefix), [10, 20, 30], total_steps=30, world_size=2)
    rows = {r["step"]: (r["loss"], r["grad_norm"]) for r in resumed["metrics"] if r.get("kind") == "train"}
    reference = {r["step"]: (r["loss"], r["grad_norm"]) for r in fsdp_run["layout"]["metrics"]
                 if r.get("kind") == "train"}
    assert rows == reference


def test_world_size_changes_lightning_cannot_continue_are_refused_with_the_sharding_that_can(
        fsdp_run: dict, tiny_model: Path, sample_dataset: Path, tmp_path: Path) -> None:
    env = trainer_env(tmp_path / "work")
    # 2 -> 1: Lightning loads a sharded checkpoint into FSDP only.
    copy_run(fsdp_run["prefix"], tmp_path / "runs", "down", upto=30, framework="nemo")
    args = trainer_args("nemo", "down", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=40,
                        resume=True, **TRAINING)
    result = run_failing(python_m_trainer(args), env)
    assert ("checkpoint step 30 is sharded (FSDP over 2 processes): Lightning cannot continue it with sharding=none "
            "on 1 process(es); resume it with sharding=fsdp on several processes") in result

    # 1 -> 2: a one-process (full) checkpoint cannot go into FSDP, but continues under DDP on two processes.
    runs = tmp_path / "runs"
    args = trainer_args("nemo", "up", str(runs), str(sample_dataset), str(tiny_model), max_steps=10, **TRAINING)
    run(python_m_trainer(args), env)
    more = trainer_args("nemo", "up", str(runs), str(sample_dataset), str(tiny_model), max_steps=20, resume=True,
                        **TRAINING)
    result = run_failing(torchrun_train_py(2, more), env)
    assert ("checkpoint step 10 is a full one (one process or DDP): Lightning cannot continue it with sharding=fsdp "
            "on 2 process(es); resume it with sharding=ddp") in result
    done = run(torchrun_train_py(2, [*more, "--sharding", "ddp"]), env, timeout=400)
    assert "nemo: resumed at step 10 (RNG restored)" in done.stderr and "DDP over 2 processes" in done.stderr
    layout = check_layout(LocalStorage(), str(runs / "up" / "framework=nemo"), [10, 20], total_steps=20,
                          world_size=2)
    assert layout["manifests"][20].name == "step-000020.ckpt" and layout["manifests"][20].metadata["format"] == \
        "lightning-ckpt"  # DDP: one full file from rank 0
    assert [f.path for f in layout["manifests"][20].files] == ["step-000020.ckpt"]
    after = losses(layout["metrics"])
    assert after[20] < after[5]


def run_failing(argv: list[str], env: dict[str, str]) -> str:
    """Run a command that must fail (before training: the refusal is a config error); returns its stderr."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400, start_new_session=True)
    assert result.returncode != 0, result.stderr[-3000:]
    return result.stderr


def test_each_rank_removes_only_its_own_files_of_an_older_local_checkpoint(tmp_path: Path) -> None:
    from trainer.runners._lightning_fsdp import remove_own_files

    folder = tmp_path / "step-000010.ckpt"
    folder.mkdir()
    for name in (".metadata", "meta.pt", "__0_0.distcp", "__1_0.distcp"):
        (folder / name).write_text(name)
    remove_own_files(folder, 1)  # rank 0's files may still be uploading: they stay
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp", "meta.pt"]
    remove_own_files(folder, 0)
    assert not folder.exists()
