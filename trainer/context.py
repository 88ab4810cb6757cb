"""Everything a runner needs, built once by `train.py` and handed to `runner.run(ctx)`.

Building a context: joins the process group (world_size > 1), makes the node's scratch dir, sets up logging, starts
the reporter and writes `config/run.json` (rank 0), resolves the model (an `s3://` model is downloaded once per
node), and when resume is asked finds the latest complete checkpoint and downloads it once per node.
Closing it: waits for the last checkpoint upload, marks progress completed/failed, uploads logs, leaves the process
group and removes the scratch dir.

A runner's duties (all three must keep them so every framework writes the same layout):
- train from `ctx.model_path` on `trainer.data.prepare(ctx, tokenizer)`, honouring `ctx.config.training`;
- report `ctx.reporter.metrics(...)` every `logging_steps` and `ctx.reporter.progress(...)` (rank 0 only; the
  reporter ignores other ranks);
- checkpoint every `save_steps` (and at the end) into a local folder/file, then `ctx.checkpoints.save(step, path)`
  on rank 0 (or per rank for sharded formats), never touching those files until the next save;
- when `ctx.resume` is set, continue from `ctx.resume.path` (step `ctx.resume.step`) and log it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trainer.checkpoints import CheckpointManager, ResumePoint
from trainer.config import RunConfig, join_uri
from trainer.dist import (
    DistInfo,
    barrier,
    broadcast_from_main,
    destroy_process_group,
    dist_info_from_env,
    init_process_group,
)
from trainer.model_store import resolve_model
from trainer.reporting import Reporter, carry_over_log, setup_logging, teardown_logging
from trainer.storage import Storage, storage_for

# What the PyTorchJob / torchrun said about the launch, recorded in config/run.json.
LAUNCH_ENV = ("NUM_NODES", "GPUS_PER_NODE", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "PET_NODE_RANK", "PET_NNODES", "TORCHELASTIC_RESTART_COUNT", "HOSTNAME")


@dataclass
class RunContext:
    """One process's view of the run. `work_dir` is node-local scratch shared by the node's ranks; `output_dir`
    (inside it) is where a runner writes native checkpoints before handing them to `checkpoints`."""

    config: RunConfig
    dist: DistInfo
    storage: Storage
    checkpoints: CheckpointManager
    reporter: Reporter
    work_dir: Path
    model_path: str
    resume: ResumePoint | None
    logger: logging.Logger
    remove_work_dir: bool = True
    log_handlers: list[logging.Handler] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    def barrier(self) -> None:
        barrier(self.dist)


def work_root(config: RunConfig) -> Path:
    """The node-local work dir: `config.work_dir`, or `trainer/` under the system temp dir. Launch scratch dirs and
    the dataset cache (which outlives a launch) live under it."""
    return Path(config.work_dir) if config.work_dir else Path(tempfile.gettempdir()) / "trainer"


def scratch_dir(config: RunConfig, environ: Mapping[str, str]) -> Path:
    """A folder unique to this launch and shared by the ranks of this node (torchrun workers share their agent's
    pid), under `work_root(config)`."""
    root = work_root(config)
    if "LOCAL_RANK" in environ:
        launch = f"agent{os.getppid()}-restart{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    else:
        launch = f"pid{os.getpid()}"
    return root / f"{config.run_id}-{config.framework}-{launch}"


def build_context(config: RunConfig, environ: Mapping[str, str] | None = None) -> RunContext:
    env = os.environ if environ is None else environ
    dist = dist_info_from_env(env)
    init_process_group(dist)
    work_dir = scratch_dir(config, env)
    log_name = f"train-rank{dist.rank}.log"
    carry_over_log(storage_for(config.logs_uri), join_uri(config.logs_uri, log_name), work_dir / "logs" / log_name)
    handlers = setup_logging(work_dir / "logs" / log_name, dist.rank)
    logger = logging.getLogger("trainer")
    logger.info("run %s framework=%s rank %d/%d (local %d) prefix=%s work_dir=%s", config.run_id, config.framework,
                dist.rank, dist.world_size, dist.local_rank, config.checkpoint_prefix, work_dir)
    storage = storage_for(config.checkpoint_prefix)
    reporter = Reporter(storage_for(config.logs_uri), config, dist, work_dir / "logs")
    checkpoints = CheckpointManager(storage, config.checkpoints_uri, keep=config.training.keep_checkpoints,
                                    before_manifest=reporter.flush)
    reporter.write_run_config({"launch": {k: env[k] for k in LAUNCH_ENV if k in env}})
    reporter.start()
    try:
        # One id for this launch on every rank: sharded checkpoint reports of another attempt never count.
        checkpoints.launch_id = broadcast_from_main(dist, uuid.uuid4().hex if dist.is_main else "")
        if dist.is_local_main:  # downloads an s3:// model once per node
            resolve_model(config.model_id, work_dir / "model")
        barrier(dist)
        model_path = resolve_model(config.model_id, work_dir / "model", download=False)
        resume = find_resume(config, dist, checkpoints, work_dir, logger) if config.resume else None
        if resume is not None:
            reporter.carry_over_metrics(resume.step)
        total = config.training.max_steps if config.training.max_steps > 0 else None
        reporter.progress(resume.step if resume else 0, total, None)
    except BaseException as exc:  # progress.json must not stay "running" for a run that never started
        logger.error("run %s failed to start: %s", config.run_id, exc)
        reporter.close("failed")
        teardown_logging(handlers)
        raise
    return RunContext(config, dist, storage, checkpoints, reporter, work_dir, model_path, resume, logger,
                      log_handlers=handlers)


def find_resume(config: RunConfig, dist: DistInfo, checkpoints: CheckpointManager, work_dir: Path,
                logger: logging.Logger) -> ResumePoint | None:
    """The latest complete checkpoint, downloaded once per node into `work_dir/resume`, or None (fresh start)."""
    # Rank 0 decides, so every rank (and every node's download) uses the same checkpoint.
    step = broadcast_from_main(dist, _latest_step(checkpoints) if dist.is_main else None)
    manifest = checkpoints.manifest(step) if step is not None else None
    if manifest is None:
        logger.info("resume requested but no complete checkpoint under %s: starting from scratch",
                    checkpoints.uri)
        return None
    if dist.is_local_main:
        checkpoints.download(manifest, work_dir / "resume")
    barrier(dist)
    logger.info("resuming from step %d: %s/%s", manifest.step, checkpoints.uri, manifest.name)
    return ResumePoint(manifest.step, work_dir / "resume" / manifest.name, manifest)


def _latest_step(checkpoints: CheckpointManager) -> int | None:
    latest = checkpoints.latest()
    return latest.step if latest else None


def close_context(ctx: RunContext, succeeded: bool, state: str | None = None) -> None:
    """Final flush, whatever happened: last checkpoint upload, progress state, logs; then leave the group.

    `state` (written to progress.json) defaults to `completed` / `failed` from `succeeded`; a failed final upload
    makes it `failed` and is re-raised after the logs are flushed.
    """
    errors: list[BaseException] = []
    try:
        ctx.checkpoints.close()
    except BaseException as exc:  # still flush the logs; re-raised below
        errors.append(exc)
    if errors:
        succeeded, state = False, "failed"
    state = state or ("completed" if succeeded else "failed")
    ctx.logger.info("run %s %s", ctx.config.run_id, state)
    try:
        ctx.reporter.close(state)
    except BaseException as exc:
        errors.append(exc)
    if succeeded:
        barrier(ctx.dist)
    destroy_process_group()
    teardown_logging(ctx.log_handlers)
    if ctx.remove_work_dir and ctx.dist.is_local_main and succeeded:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
    if errors:
        raise errors[0]
