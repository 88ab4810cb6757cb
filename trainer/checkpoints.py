"""Crash-safe checkpoints under `<prefix>/checkpoints/`, whatever the framework's native format.

Layout (paths relative to the checkpoints URI):
    <name>/...                  the checkpoint's files (HF `checkpoint-10/`, Lightning `step=10.ckpt`, meta `...pt`)
    step-000010.json            the manifest: step, name, files with sizes, created time — written LAST
    latest.json                 a pointer to the newest manifest, updated after it (a hint; manifests are the truth)

A checkpoint counts only once its manifest exists and every file it lists is present with the listed size, so a run
killed mid-upload leaves an ignored, half-uploaded checkpoint. Finding the latest reads the pointer, then lists only
manifests after it (`step-*.json` keys sort by step); it never lists every checkpoint's files.

Uploads run in one background thread beside training: `save()` returns once the previous upload has finished (at
most one in flight) and the new one has started. The files handed to `save()` must stay unchanged until that upload
ends (i.e. until the next `save()`, `wait()` or `close()` returns). Only rank 0 calls `save()`.

Sharded checkpoints (every rank writes its own files) go through `save_shard()` on EVERY rank: each rank uploads its
own files (so every node uploads in parallel), then reports them done with a small `<name>/_ranks/rank-XXXXX.json`
listing their sizes; rank 0, once every rank has reported, writes the manifest listing every rank's files. A rank
that dies before reporting leaves no manifest, so that checkpoint is never resumed from. Each report carries the
launch's `launch_id` (one value for all ranks of one launch) and rank 0 counts only reports of its own launch: a
report an earlier attempt left under the same checkpoint name, or a stray process of that attempt, never completes
this launch's checkpoint.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config import join_uri, now_iso
from trainer.storage import ObjectNotFound, Storage, read_json, write_json

log = logging.getLogger(__name__)

POINTER = "latest.json"
RANKS_DIR = "_ranks"  # inside a sharded checkpoint: one "this rank's upload is done" report per rank
REPORT_TIMEOUT_S = 3600.0  # how long rank 0 waits for the other ranks' reports before failing the save
_MANIFEST_RE = re.compile(r"step-(\d+)\.json$")


def manifest_name(step: int) -> str:
    return f"step-{step:06d}.json"


@dataclass(frozen=True)
class CheckpointFile:
    path: str  # relative to the checkpoints URI
    size: int


@dataclass(frozen=True)
class Manifest:
    """What one complete checkpoint holds. `name` is the checkpoint's own relative path (a folder or one file)."""

    step: int
    name: str
    files: tuple[CheckpointFile, ...]
    created_at: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "name": self.name, "created_at": self.created_at,
                "files": [{"path": f.path, "size": f.size} for f in self.files], "metadata": dict(self.metadata)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        return cls(step=int(data["step"]), name=str(data["name"]), created_at=str(data.get("created_at", "")),
                   files=tuple(CheckpointFile(str(f["path"]), int(f["size"])) for f in data["files"]),
                   metadata=dict(data.get("metadata") or {}))


@dataclass(frozen=True)
class ResumePoint:
    """A downloaded checkpoint: `path` is the local copy of `manifest.name` (a folder or a file)."""

    step: int
    path: Path
    manifest: Manifest


class CheckpointManager:
    """Save, find, download and prune checkpoints under `checkpoints_uri` (see the module docstring).

    `keep`: keep only the newest `keep` complete checkpoints (None keeps all); the newest is never deleted.
    `before_manifest(step)`: called in the upload thread after the files and before the manifest (the run context
    uses it to upload metrics, so a run that resumes from this checkpoint finds its history up to it); its errors
    are logged, not raised.
    """

    def __init__(self, storage: Storage, checkpoints_uri: str, keep: int | None = None,
                 before_manifest: Callable[[int], None] | None = None,
                 report_timeout_s: float = REPORT_TIMEOUT_S, launch_id: str = "") -> None:
        if keep is not None and keep < 1:
            raise ValueError("keep must be >= 1")
        self.storage = storage
        self.uri = checkpoints_uri.rstrip("/")
        self.keep = keep
        self.before_manifest = before_manifest
        self.report_timeout_s = report_timeout_s
        self.launch_id = launch_id  # stamped on sharded-upload reports; the same on every rank of one launch
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.saves = 0
        self.upload_seconds = 0.0  # time spent uploading, in the background
        self.blocked_seconds = 0.0  # time save() waited for the previous upload (training stalled)

    # -- saving --------------------------------------------------------------------------------------------------
    def save(self, step: int, source: Path | Mapping[str, Path], name: str | None = None, *,
             metadata: Mapping[str, Any] | None = None, write_manifest: bool = True, blocking: bool = False) -> None:
        """Upload one checkpoint in the background, then write its manifest, the pointer, and apply retention.

        `source`: a folder (every file under it goes to `<name>/<relative path>`, name defaulting to the folder's
        name), one file (to `<name>`, defaulting to its file name), or a mapping of relative path -> local file.
        Waits for the previous upload first; re-raises its error if it failed. `blocking=True` waits for this one too.
        """
        self.wait_previous()
        files = _collect(source, name)
        ckpt_name = name or (source.name if isinstance(source, Path) else _common_root(files))
        meta = dict(metadata or {})
        self._start(step, lambda: self._upload(step, ckpt_name, files, meta, write_manifest), blocking)

    def save_shard(self, step: int, name: str, collect: Callable[[], Mapping[str, Path]], *, rank: int,
                   world_size: int, metadata: Mapping[str, Any] | None = None, blocking: bool = False) -> None:
        """This rank's part of sharded checkpoint `name` (call on every rank, in the same order of steps).

        In the background: `collect()` names this rank's files (path relative to the checkpoint folder -> local
        file; it may first wait for an asynchronous write), they are uploaded under `<name>/`, and the rank reports
        them done in `<name>/_ranks/rank-XXXXX.json`. Rank 0 then waits for the reports of all `world_size` ranks
        and writes the manifest listing every file, the reports included.
        """
        self.wait_previous()
        meta = dict(metadata or {}, world_size=world_size)
        self._start(step, lambda: self._upload_shard(step, name, collect, rank, world_size, meta), blocking)

    def wait_previous(self) -> None:
        """Wait for the upload in flight, counted as training time lost to checkpointing (call before a save)."""
        blocked = time.monotonic()
        self.wait()
        self.blocked_seconds += time.monotonic() - blocked

    def _start(self, step: int, work: Callable[[], None], blocking: bool) -> None:
        self.saves += 1
        self._thread = threading.Thread(target=self._guarded, name=f"checkpoint-upload-{step}", daemon=True,
                                        args=(step, work))
        self._thread.start()
        if blocking:
            self.wait()

    def wait(self) -> None:
        """Block until the upload in flight (if any) is done; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("checkpoint upload failed") from error

    def close(self) -> None:
        """Final flush: wait for the last upload (call before the process exits)."""
        blocked = time.monotonic()
        self.wait()
        if self.saves:
            log.info("checkpoints: %d saved, %.2fs uploading in the background, training waited %.2fs for "
                     "uploads, %.2fs at the final flush", self.saves, self.upload_seconds, self.blocked_seconds,
                     time.monotonic() - blocked)

    def _guarded(self, step: int, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the training thread by wait()
            log.exception("checkpoint step %d upload failed", step)
            self._error = exc

    def _upload(self, step: int, name: str, files: dict[str, Path], meta: dict[str, Any],
                write_manifest: bool) -> None:
        sizes = self._put_files(step, name, files)
        if write_manifest:
            self.write_manifest(step, name, sizes, meta)

    def _put_files(self, step: int, name: str, files: Mapping[str, Path]) -> dict[str, int]:
        started = time.monotonic()
        sizes = {}
        for rel, local in sorted(files.items()):
            sizes[rel] = local.stat().st_size
            self.storage.put_file(local, self._join(rel))
        elapsed = time.monotonic() - started
        self.upload_seconds += elapsed
        log.info("checkpoint step %d uploaded: %d files, %.1f MiB in %.2fs -> %s", step, len(sizes),
                 sum(sizes.values()) / 2**20, elapsed, self._join(name))
        return sizes

    def _upload_shard(self, step: int, name: str, collect: Callable[[], Mapping[str, Path]], rank: int,
                      world_size: int, meta: dict[str, Any]) -> None:
        files = {f"{name}/{rel.strip('/')}": Path(local) for rel, local in collect().items()}
        sizes = self._put_files(step, name, files)
        write_json(self.storage, self._join(_report_name(name, rank)),
                   {"rank": rank, "files": sizes, "launch": self.launch_id})
        if rank == 0:
            self.write_manifest(step, name, self._gather_reports(step, name, world_size), meta)

    def _gather_reports(self, step: int, name: str, world_size: int) -> dict[str, int]:
        """Every rank's files (and the reports themselves) once all `world_size` ranks reported; polls storage."""
        deadline = time.monotonic() + self.report_timeout_s
        files: dict[str, int] = {}
        pending = list(range(world_size))
        delay = 0.05
        while pending:
            uri = self._join(_report_name(name, pending[0]))
            try:
                report = read_json(self.storage, uri)
                if report.get("launch", "") != self.launch_id:  # an earlier attempt's: wait for this launch's
                    raise ObjectNotFound(uri)
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"checkpoint step {step}: rank {pending[0]} did not report its upload within "
                                       f"{self.report_timeout_s:.0f}s; no manifest written") from None
                time.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            files.update({str(k): int(v) for k, v in report["files"].items()})
            files[_report_name(name, pending.pop(0))] = self.storage.size(uri) or 0
        return files

    def write_manifest(self, step: int, name: str, files: Mapping[str, int],
                       metadata: Mapping[str, Any] | None = None) -> None:
        """Make checkpoint `step` count: the `before_manifest` hook, the manifest, the pointer, then retention.

        `files` maps each uploaded file (relative path) to its size. `save()` calls this itself; call it directly
        only for files other ranks uploaded (`save(..., write_manifest=False)` on each rank, gather the sizes,
        then one rank writes the manifest after every upload finished).
        """
        if self.before_manifest is not None:
            try:
                self.before_manifest(step)
            except Exception:
                log.warning("before_manifest hook failed for step %d", step, exc_info=True)
        created = now_iso()
        listed = tuple(CheckpointFile(rel, size) for rel, size in sorted(files.items()))
        write_json(self.storage, self._join(manifest_name(step)),
                   Manifest(step, name, listed, created, dict(metadata or {})).to_json())
        write_json(self.storage, self._join(POINTER), {"step": step, "manifest": manifest_name(step)})
        if self.keep is not None:
            self._prune(step)

    # -- finding -------------------------------------------------------------------------------------------------
    def latest(self) -> Manifest | None:
        """The complete checkpoint with the highest step, or None.

        Reads the pointer, then lists only the manifests after it (newer ones whose pointer update was lost), and
        checks candidates newest first. Only when the pointer is missing or names nothing complete does it list all
        manifests. A manifest whose files are missing or short is skipped.
        """
        hint = self._pointer()
        after = self._join(manifest_name(hint)) if hint is not None else None
        candidates = self._manifest_steps(start_after=after)
        if hint is not None:
            candidates.add(hint)
        found = self._first_complete(sorted(candidates, reverse=True))
        if found is None and hint is not None:
            found = self._first_complete(sorted(self._manifest_steps(), reverse=True))
        return found

    def complete_steps(self) -> list[int]:
        """Steps of every complete checkpoint, ascending (lists all manifests; for tests and tools)."""
        return sorted(s for s in self._manifest_steps() if self._load_complete(s) is not None)

    def manifest(self, step: int) -> Manifest | None:
        try:
            return Manifest.from_json(read_json(self.storage, self._join(manifest_name(step))))
        except ObjectNotFound:
            return None

    def is_complete(self, manifest: Manifest) -> bool:
        return all(self.storage.size(self._join(f.path)) == f.size for f in manifest.files)

    def _pointer(self) -> int | None:
        try:
            return int(read_json(self.storage, self._join(POINTER))["step"])
        except (ObjectNotFound, KeyError, TypeError, ValueError):
            return None

    def _manifest_steps(self, start_after: str | None = None) -> set[int]:
        steps = set()
        for uri in self.storage.list(self._join("step-"), start_after=start_after):
            match = _MANIFEST_RE.search(uri)
            if match:
                steps.add(int(match.group(1)))
        return steps

    def _first_complete(self, steps: list[int]) -> Manifest | None:
        for step in steps:
            manifest = self._load_complete(step)
            if manifest is not None:
                return manifest
            log.warning("checkpoint step %d is incomplete (manifest or files missing); skipped", step)
        return None

    def _load_complete(self, step: int) -> Manifest | None:
        try:
            manifest = self.manifest(step)
        except (ValueError, KeyError, TypeError):
            return None
        return manifest if manifest is not None and self.is_complete(manifest) else None

    # -- downloading and pruning ---------------------------------------------------------------------------------
    def download(self, manifest: Manifest, local_dir: Path) -> Path:
        """Download every file of `manifest` under `local_dir`; returns `local_dir / manifest.name`."""
        for item in manifest.files:
            self.storage.get_file(self._join(item.path), local_dir / item.path)
        return local_dir / manifest.name

    def _prune(self, newest: int) -> None:
        assert self.keep is not None
        steps = sorted((s for s in self._manifest_steps() if s <= newest), reverse=True)
        for step in steps[self.keep:]:
            manifest = self.manifest(step)
            # The manifest goes first: from then on the checkpoint no longer counts, even if deletion stops midway.
            self.storage.delete(self._join(manifest_name(step)))
            for item in manifest.files if manifest else ():
                self.storage.delete(self._join(item.path))
            log.info("checkpoint step %d deleted (keep_checkpoints=%d)", step, self.keep)

    def _join(self, rel: str) -> str:
        return join_uri(self.uri, rel)


def _report_name(name: str, rank: int) -> str:
    return f"{name}/{RANKS_DIR}/rank-{rank:05d}.json"


def _collect(source: Path | Mapping[str, Path], name: str | None) -> dict[str, Path]:
    if isinstance(source, Mapping):
        return {rel.strip("/"): Path(p) for rel, p in source.items()}
    if source.is_dir():
        root = name or source.name
        return {f"{root}/{p.relative_to(source).as_posix()}": p for p in sorted(source.rglob("*")) if p.is_file()}
    if source.is_file():
        return {name or source.name: source}
    raise FileNotFoundError(f"checkpoint source {source} does not exist")


def _common_root(files: Mapping[str, Path]) -> str:
    roots = {rel.split("/", 1)[0] for rel in files}
    return roots.pop() if len(roots) == 1 else ""
