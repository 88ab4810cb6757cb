"""What a run tells the outside world while it trains, under `logs/` and `config/`:

    logs/metrics.jsonl       one JSON object per logged step: step, loss, lr, tokens_per_s, elapsed_s (+ extras)
    logs/progress.json       {step, total_steps, loss, state, updated_at};
                             state: running | completed | failed | terminated (SIGTERM, e.g. cancelled)
    logs/train-rank<R>.log   each process's log (rank 0's uploaded as training goes, others at the end)
    config/run.json          the resolved config, world size, library versions, start time

Files are written locally first and uploaded by a throttled background thread (every `upload_interval_s`), so a
slow store never stalls a training step; `close()` does the final upload. Only rank 0 writes metrics and progress.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from trainer.config import RunConfig, join_uri, now_iso
from trainer.dist import DistInfo
from trainer.storage import ObjectNotFound, Storage, write_json

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "pyarrow", "accelerate", "lightning", "nemo_toolkit",
             "boto3", "safetensors")
LOG_FORMAT = "%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape a run (without importing them)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def carry_over_log(storage: Storage, uri: str, log_file: Path) -> None:
    """Start the local log with the run's earlier log (earlier attempts), so the uploaded log keeps the history."""
    try:
        previous = storage.get_bytes(uri)
    except ObjectNotFound:
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_bytes(previous if previous.endswith(b"\n") or not previous else previous + b"\n")


def setup_logging(log_file: Path, rank: int, level: int = logging.INFO) -> list[logging.Handler]:
    """Log to stderr and to `log_file` with the rank in every line; returns the handlers added to the root logger
    (remove them with `teardown_logging`)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT.format(rank=rank))
    root = logging.getLogger()
    root.setLevel(level)
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(log_file)]
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    return handlers


def teardown_logging(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for handler in handlers:
        handler.flush()
        root.removeHandler(handler)
        handler.close()


class Reporter:
    """Metrics, progress, the process log and `config/run.json` for one process (see the module docstring)."""

    def __init__(self, storage: Storage, config: RunConfig, dist: DistInfo, local_dir: Path,
                 upload_interval_s: float = 5.0) -> None:
        self.storage = storage
        self.config = config
        self.dist = dist
        self.local_dir = local_dir
        local_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_file = local_dir / "metrics.jsonl"
        self.progress_file = local_dir / "progress.json"
        self.log_file = local_dir / f"train-rank{dist.rank}.log"
        self.started = time.monotonic()
        self.started_at = now_iso()
        self._run_extra: dict[str, Any] = {}
        self._interval = upload_interval_s
        self._lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._stop = threading.Event()
        self._dirty: set[Path] = set()
        self._thread: threading.Thread | None = None
        self.last_progress: dict[str, Any] = {}
        self._metrics_fh: TextIO | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def start(self) -> None:
        """Start the background uploader (rank 0 only; other ranks upload their log in `close()`)."""
        if self.dist.is_main and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="reporter-upload", daemon=True)
            self._thread.start()

    def carry_over_metrics(self, up_to_step: int) -> int:
        """On resume, keep the earlier attempts' metrics rows up to the resumed step (later ones get redone).

        Returns how many rows were kept. Rank 0 only; unreadable rows are dropped.
        """
        if not self.dist.is_main:
            return 0
        try:
            raw = self.storage.get_bytes(join_uri(self.config.logs_uri, self.metrics_file.name))
        except ObjectNotFound:
            return 0
        kept = []
        for line in raw.decode(errors="replace").splitlines():
            try:
                if int(json.loads(line)["step"]) <= up_to_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        with self._lock:
            self._close_metrics()
            self.metrics_file.write_text("".join(f"{line}\n" for line in kept))
            self._dirty.add(self.metrics_file)
        return len(kept)

    def write_run_config(self, extra: Mapping[str, Any] | None = None) -> None:
        """`config/run.json`: resolved config, world size, versions, start time (rank 0, uploaded now). A later call
        adds its `extra` keys to the earlier ones (e.g. the dataset's fingerprint once the data is prepared)."""
        if not self.dist.is_main:
            return
        self._run_extra.update(extra or {})
        data = {"config": self.config.to_dict(), "world_size": self.dist.world_size, "started_at": self.started_at,
                "versions": library_versions(), "host": platform.node(), **self._run_extra}
        write_json(self.storage, join_uri(self.config.config_uri, "run.json"), data)

    def metrics(self, step: int, loss: float | None, lr: float | None, tokens_per_s: float | None,
                **extra: Any) -> None:
        """Append one metrics row (rank 0 only); `elapsed_s` is added from the reporter's clock."""
        if not self.dist.is_main:
            return
        row = {"step": step, "loss": loss, "lr": lr, "tokens_per_s": tokens_per_s,
               "elapsed_s": round(self.elapsed_s, 3), "time": now_iso(), **extra}
        with self._lock:
            if self._metrics_fh is None:  # opened once: an open per row cost ~0.3 ms on an overlay filesystem
                self._metrics_fh = self.metrics_file.open("a")
            self._metrics_fh.write(json.dumps(row) + "\n")
            self._metrics_fh.flush()  # whole lines on disk before an upload reads the file
            self._dirty.add(self.metrics_file)

    def progress(self, step: int, total_steps: int | None, loss: float | None, state: str = "running") -> None:
        """Set the run's progress (rank 0 only). Called every step, it stays in memory: `progress.json` is written
        when it is uploaded (every `upload_interval_s`, on `flush()` and at `close()`), not once per step — a file
        rewrite per step was 5% of a small model's step time (py-spy, bench/runner_bench.py)."""
        if not self.dist.is_main:
            return
        progress = {"step": step, "total_steps": total_steps, "loss": loss, "state": state, "updated_at": now_iso(),
                    "run_id": self.config.run_id, "framework": self.config.framework}
        with self._lock:
            self.last_progress = progress
            self._dirty.add(self.progress_file)

    def close(self, state: str) -> None:
        """Mark the final state in progress.json (`completed` / `failed` / `terminated`) and upload everything."""
        if self.dist.is_main and self.last_progress:
            p = self.last_progress
            self.progress(p["step"], p["total_steps"], p["loss"], state)
        elif self.dist.is_main:
            self.progress(0, None, None, state)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._upload(include_log=True)
        with self._lock:
            self._close_metrics()

    def _close_metrics(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._metrics_fh = None

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._upload(include_log=True)
            except Exception:  # a flaky store must not kill training; the next round retries
                log.warning("uploading logs failed; will retry", exc_info=True)

    def flush(self, step: int | None = None) -> None:
        """Upload now (from any thread); e.g. before a checkpoint's manifest, so metrics up to it are stored."""
        self._upload(include_log=True)

    def _upload(self, include_log: bool) -> None:
        # One upload at a time, so an older snapshot never lands after a newer one.
        with self._upload_lock:
            with self._lock:  # snapshot under the lock so an upload never holds half a line
                dirty, self._dirty = self._dirty, set()
                if self.progress_file in dirty:
                    self.progress_file.write_text(json.dumps(self.last_progress) + "\n")
                snapshots = {path.name: path.read_bytes() for path in dirty}
            try:
                for name, data in sorted(snapshots.items()):
                    self.storage.put_bytes(data, join_uri(self.config.logs_uri, name))
            except BaseException:
                with self._lock:
                    self._dirty |= dirty  # retried on the next round
                raise
            if include_log and self.log_file.exists():
                self.storage.put_file(self.log_file, join_uri(self.config.logs_uri, self.log_file.name))
