"""The hf runner sharded over two processes under real `torchrun --nproc_per_node=2` (gloo, CPU): what a GPU user
asks for reaches the Trainer's objects (accelerate's FSDP2 plugin on the model's own blocks, sharded state dict, bf16
compute with fp32 gradient reduction, activation checkpointing, no gradient sync on accumulation micro-steps);
every rank writes and uploads its own checkpoint shard; resume is exact on the same world size and works from two
processes to one and from one to two; a rank whose upload never finished leaves no resumable checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.trainer.runs import (
    HF_TRAINING,
    check_layout,
    copy_run,
    descendants,
    fsdp_baseline,
    kill_group,
    losses,
    probe_argv,
    python_m_trainer,
    read_jsonl,
    run,
    running,
    start,
    torchrun_train_py,
    trainer_args,
    trainer_env,
    wait_for,
)
from trainer.checkpoints import CheckpointManager
from trainer.storage import LocalStorage

pytestmark = pytest.mark.slow
TRAINING = HF_TRAINING
ROOT = Path(__file__).resolve().parents[2]


def test_fsdp_settings_reach_the_trainers_accelerator_and_model(tiny_model: Path, sample_dataset: Path,
                                                                tmp_path: Path) -> None:
    args = trainer_args("hf", "probe", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=2,
                        save_steps=10, logging_steps=1, batch_size=2, block_size=32, gradient_accumulation=2,
                        precision="bf16", activation_checkpointing=True)
    argv = probe_argv("tests.trainer.hf_probe", args)
    env = trainer_env(tmp_path / "work", {"HF_PROBE_OUT": str(tmp_path / "probe"),
                                          "PYTHONPATH": str(ROOT)})
    run(argv, env, timeout=400)
    for rank in (0, 1):
        got = json.loads((tmp_path / "probe" / f"rank-{rank}.json").read_text())
        assert got["is_fsdp_enabled"] and got["distributed_type"] == "DistributedType.FSDP"
        assert got["fsdp_version"] == 2 and got["state_dict_type"] == "StateDictType.SHARDED_STATE_DICT"
        assert got["wrap_classes"] == ["GPT2Block"]  # from the model's _no_split_modules
        assert {"FSDPGPT2Block", "FSDPGPT2LMHeadModel"} <= set(got["fsdp_modules"])  # each block, then the root
        assert (got["plugin_param_dtype"], got["plugin_reduce_dtype"]) == ("torch.bfloat16", "torch.float32")
        assert (got["block_param_dtype"], got["block_reduce_dtype"]) == ("torch.bfloat16", "torch.float32")
        assert got["compute_dtypes"] == ["torch.bfloat16"] and got["master_dtype"] == "torch.float32"
        assert got["weight_is_dtensor"] and got["weight_placements"] == ["S(0)"]
        assert got["weight_local_rows"] * 2 == got["weight_rows"]  # each rank holds half of every weight
        assert got["activation_checkpointing"] == [True, True]
        assert got["sync_calls"] == [False, True, False, True]  # off for the first micro-step of each step
        assert got["global_step"] == 2


@pytest.fixture(scope="module")
def fsdp_run(tiny_model: Path, sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 30-step FSDP run on two processes (checked; the baseline for the resumes)."""
    return fsdp_baseline("hf", tmp_path_factory.mktemp("hf-fsdp"), sample_dataset, tiny_model, 30, TRAINING)


def test_every_rank_writes_and_uploads_its_own_shard(fsdp_run: dict) -> None:
    manifest = fsdp_run["layout"]["manifests"][20]
    assert manifest.name == "checkpoint-20"
    assert manifest.metadata == {"framework": "hf", "format": "hf-trainer-fsdp-sharded", "world_size": 2}
    sizes = {f.path.split("/", 1)[1]: f.size for f in manifest.files}
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert {f"{part}/.metadata", f"{part}/__0_0.distcp", f"{part}/__1_0.distcp"} <= sizes.keys()
        assert 0.8 < sizes[f"{part}/__0_0.distcp"] / sizes[f"{part}/__1_0.distcp"] < 1.25  # about half each
    assert {"rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "trainer_state.json"} <= sizes.keys()
    assert {"_ranks/rank-00000.json", "_ranks/rank-00001.json"} <= sizes.keys()  # both ranks reported
    assert "model.safetensors" not in sizes and "optimizer.pt" not in sizes  # nothing gathered into one file
    rank1 = json.loads((fsdp_run["prefix"] / "checkpoints" / "checkpoint-20/_ranks/rank-00001.json").read_text())
    assert sorted(rank1["files"]) == ["checkpoint-20/optimizer_0/__1_0.distcp",
                                      "checkpoint-20/pytorch_model_fsdp_0/__1_0.distcp",
                                      "checkpoint-20/rng_state_1.pth"]  # rank 1 uploaded what it wrote
    for rank in (0, 1):
        log = (fsdp_run["prefix"] / "logs" / f"train-rank{rank}.log").read_text()
        assert "FSDP over 2 processes" in log


def test_resume_on_two_processes_gives_the_losses_of_the_uninterrupted_run(fsdp_run: dict, tiny_model: Path,
                                                                           sample_dataset: Path,
                                                                           tmp_path: Path) -> None:
    prefix = copy_run(fsdp_run["prefix"], tmp_path / "runs", "fsdp", upto=20, framework="hf")
    args = trainer_args("hf", "fsdp", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=30,
                        resume=True, **TRAINING)
    run(torchrun_train_py(2, args), trainer_env(tmp_path / "work"), timeout=400)
    resumed = check_layout(LocalStorage(), str(prefix), [10, 20, 30], total_steps=30, world_size=2)
    for rank in (0, 1):
        log = (prefix / "logs" / f"train-rank{rank}.log").read_text()
        assert "resuming from step 20" in log and "resumed model, optimizer and scheduler" not in log  # native
    assert losses(resumed["metrics"]) == losses(fsdp_run["layout"]["metrics"])


def test_a_two_process_checkpoint_resumes_on_one_and_a_one_process_checkpoint_on_two(
        fsdp_run: dict, tiny_model: Path, sample_dataset: Path, tmp_path: Path) -> None:
    env = trainer_env(tmp_path / "work")
    # 2 -> 1: DCP reads both shards into the one process's full model and optimizer.
    prefix = copy_run(fsdp_run["prefix"], tmp_path / "runs", "down", upto=30, framework="hf")
    args = trainer_args("hf", "down", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=40,
                        resume=True, **TRAINING)
    result = run(python_m_trainer(args), env)
    assert "resumed model, optimizer and scheduler from the sharded (FSDP) checkpoint checkpoint-30" in result.stderr
    down = check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40)
    before = losses(fsdp_run["layout"]["metrics"])
    after = losses(down["metrics"])
    assert {s: after[s] for s in before} == before  # the history up to the checkpoint is kept
    assert after[35] < before[10]  # it continued from the trained weights, not from the start
    assert down["manifests"][40].metadata["format"] == "hf-trainer"  # one process writes the full format

    # 1 -> 2: that one-process checkpoint of step 40 continues on two processes, each keeping its shard.
    args = trainer_args("hf", "down", str(tmp_path / "runs"), str(sample_dataset), str(tiny_model), max_steps=50,
                        resume=True, **TRAINING)
    run(torchrun_train_py(2, args), env, timeout=400)
    up = check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40, 50], total_steps=50, world_size=2)
    for rank in (0, 1):
        log = (prefix / "logs" / f"train-rank{rank}.log").read_text()
        assert "resumed model, optimizer and scheduler from the full checkpoint checkpoint-40" in log
    final = losses(up["metrics"])
    assert final[45] < before[10] and up["manifests"][50].metadata["format"] == "hf-trainer-fsdp-sharded"


def test_a_rank_whose_upload_never_finished_leaves_no_resumable_checkpoint(tiny_model: Path, sample_dataset: Path,
                                                                           tmp_path: Path) -> None:
    """Rank 1's report for step 20 can never land (a directory holds its name), as if rank 1 died mid-upload;
    the run is then killed: step 20's files are there, its manifest is not, and the retry resumes from step 10."""
    runs = tmp_path / "runs"
    prefix = runs / "lost" / "framework=hf"
    blocker = prefix / "checkpoints" / "checkpoint-20" / "_ranks" / "rank-00001.json"
    (blocker / "held").mkdir(parents=True)
    args = trainer_args("hf", "lost", str(runs), str(sample_dataset), str(tiny_model), max_steps=40, **TRAINING)
    env = trainer_env(tmp_path / "work")
    proc = start(torchrun_train_py(2, args), env, tmp_path / "first.log")
    step20 = prefix / "checkpoints" / "checkpoint-20"
    wait_for(lambda: (step20 / "_ranks" / "rank-00000.json").exists()  # rank 0 uploaded and reported ...
             and (step20 / "pytorch_model_fsdp_0" / "__1_0.distcp").exists(), timeout=300)  # ... rank 1 uploaded
    assert not (step20 / "_ranks" / "rank-00001.json").is_file()  # ... but never reported
    workers = descendants(proc.pid)
    kill_group(proc)  # torchrun and both workers, before rank 1 fails on its next save
    assert len(workers) >= 2
    wait_for(lambda: not any(running(pid) for pid in workers), timeout=30)
    checkpoints = prefix / "checkpoints"
    assert (checkpoints / "checkpoint-20" / "pytorch_model_fsdp_0" / "__0_0.distcp").is_file()
    assert (checkpoints / "checkpoint-20" / "pytorch_model_fsdp_0" / "__1_0.distcp").is_file()
    assert not (checkpoints / "step-000020.json").exists()
    manager = CheckpointManager(LocalStorage(), str(checkpoints))
    latest = manager.latest()
    assert latest is not None and latest.step == 10 and manager.complete_steps() == [10]

    shutil.rmtree(blocker)
    run(torchrun_train_py(2, [*args, "--resume"]), env, timeout=400)
    layout = check_layout(LocalStorage(), str(prefix), [10, 20, 30, 40], total_steps=40, world_size=2)
    assert "resuming from step 10" in layout["log"]
    rows = read_jsonl(LocalStorage(), str(prefix / "logs" / "metrics.jsonl"))
    assert [r["step"] for r in rows if r.get("kind") == "train"] == [5, 10, 15, 20, 25, 30, 35, 40]


def test_each_rank_owns_its_shards_and_rng_file_and_rank_0_the_rest(tmp_path: Path) -> None:
    from trainer.runners.hf_checkpoint import prune_local
    from trainer.runners.sharding import own_files

    folder = tmp_path / "checkpoint-20"
    names = ["pytorch_model_fsdp_0/.metadata", "pytorch_model_fsdp_0/__0_0.distcp",
             "pytorch_model_fsdp_0/__1_0.distcp", "optimizer_0/__1_0.distcp", "optimizer_0/__10_0.distcp",
             "rng_state_1.pth", "rng_state_10.pth", "rng_state.pth", "scheduler.pt", "trainer_state.json"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    assert sorted(own_files(folder, 1)) == ["optimizer_0/__1_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
                                            "rng_state_1.pth"]
    assert sorted(own_files(folder, 10)) == ["optimizer_0/__10_0.distcp", "rng_state_10.pth"]
    assert sorted(own_files(folder, 0)) == ["pytorch_model_fsdp_0/.metadata", "pytorch_model_fsdp_0/__0_0.distcp",
                                            "rng_state.pth", "scheduler.pt", "trainer_state.json"]
    for step in (30, 40, 100):
        (tmp_path / f"checkpoint-{step}").mkdir()
    prune_local(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-100", "checkpoint-30", "checkpoint-40"]
