"""Checkpoints count only once their manifest exists (written last); resume finds the newest complete one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from trainer.checkpoints import CheckpointManager
from trainer.storage import LocalStorage, S3Storage, Storage


def make_checkpoint(tmp_path: Path, step: int, size: int = 100) -> Path:
    folder = tmp_path / "out" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(bytes([step % 256]) * size)
    (folder / "sub").mkdir()
    (folder / "sub" / "state.json").write_text(json.dumps({"step": step}))
    return folder


class RecordingStorage(LocalStorage):
    """Local storage that records the order of writes (a real store; only observed)."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def put_file(self, local_path: Path, uri: str) -> None:
        self.gate.wait()
        super().put_file(local_path, uri)
        self.writes.append(uri)

    def put_bytes(self, data: bytes, uri: str) -> None:
        super().put_bytes(data, uri)
        self.writes.append(uri)


def test_files_upload_first_then_the_manifest_then_the_pointer(tmp_path: Path) -> None:
    storage = RecordingStorage()
    root = str(tmp_path / "ck")
    manager = CheckpointManager(storage, root)
    manager.save(10, make_checkpoint(tmp_path, 10))
    manager.close()
    names = [w[len(root) + 1:] for w in storage.writes]
    assert names == ["checkpoint-10/model.bin", "checkpoint-10/sub/state.json", "step-000010.json", "latest.json"]
    manifest = json.loads((tmp_path / "ck" / "step-000010.json").read_text())
    assert manifest["step"] == 10 and manifest["name"] == "checkpoint-10" and manifest["created_at"]
    assert {"path": "checkpoint-10/model.bin", "size": 100} in manifest["files"]


def test_save_returns_while_uploading_and_the_next_save_waits_for_it(tmp_path: Path) -> None:
    storage = RecordingStorage()
    storage.gate.clear()
    manager = CheckpointManager(storage, str(tmp_path / "ck"))
    manager.save(10, make_checkpoint(tmp_path, 10))  # returns although the upload is held
    assert manager.latest() is None
    second = threading.Thread(target=manager.save, args=(20, make_checkpoint(tmp_path, 20)))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # blocked behind the first upload: one in flight at most
    storage.gate.set()
    second.join(10)
    manager.close()
    latest = manager.latest()
    assert latest is not None and latest.step == 20


def test_a_checkpoint_without_its_manifest_or_with_missing_files_is_ignored(tmp_path: Path) -> None:
    storage = LocalStorage()
    root = tmp_path / "ck"
    manager = CheckpointManager(storage, str(root))
    manager.save(10, make_checkpoint(tmp_path, 10), blocking=True)
    manager.save(20, make_checkpoint(tmp_path, 20), blocking=True)
    # step 30: files uploaded, process killed before the manifest was written
    storage.put_file(make_checkpoint(tmp_path, 30) / "model.bin", str(root / "checkpoint-30" / "model.bin"))
    latest = manager.latest()
    assert latest is not None and latest.step == 20
    # step 20's manifest exists but one of its files is gone (or short): it does not count either
    (root / "checkpoint-20" / "model.bin").write_bytes(b"short")
    latest = manager.latest()
    assert latest is not None and latest.step == 10
    assert manager.complete_steps() == [10]


def test_latest_finds_a_newer_manifest_than_the_pointer_and_survives_a_missing_pointer(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    manager = CheckpointManager(LocalStorage(), str(root))
    for step in (10, 20, 30):
        manager.save(step, make_checkpoint(tmp_path, step), blocking=True)
    (root / "latest.json").write_text(json.dumps({"step": 10, "manifest": "step-000010.json"}))  # stale pointer
    assert manager.latest().step == 30  # type: ignore[union-attr]
    (root / "latest.json").unlink()
    assert manager.latest().step == 30  # type: ignore[union-attr]
    (root / "latest.json").write_text(json.dumps({"step": 40}))  # pointer to a manifest that never landed
    assert manager.latest().step == 30  # type: ignore[union-attr]


def test_retention_keeps_the_newest_complete_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "ck"
    manager = CheckpointManager(LocalStorage(), str(root), keep=2)
    for step in (10, 20, 30, 40):
        manager.save(step, make_checkpoint(tmp_path, step))
    manager.close()
    assert manager.complete_steps() == [30, 40]
    assert sorted(p.name for p in root.iterdir()) == [
        "checkpoint-30", "checkpoint-40", "latest.json", "step-000030.json", "step-000040.json"]
    with pytest.raises(ValueError):
        CheckpointManager(LocalStorage(), str(root), keep=0)


def test_download_restores_the_checkpoint_folder(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(), str(tmp_path / "ck"))
    manager.save(10, make_checkpoint(tmp_path, 10), blocking=True)
    manifest = manager.latest()
    assert manifest is not None
    local = manager.download(manifest, tmp_path / "resume")
    assert local == tmp_path / "resume" / "checkpoint-10"
    assert json.loads((local / "sub" / "state.json").read_text()) == {"step": 10}


def test_single_files_and_mappings_can_be_checkpoints(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(), str(tmp_path / "ck"))
    single = tmp_path / "step-000010.pt"
    single.write_bytes(b"weights")
    manager.save(10, single, blocking=True)
    shard = tmp_path / "shard0"
    shard.write_bytes(b"rank0")
    manager.save(20, {"step-000020/rank0.distcp": shard}, blocking=True, metadata={"format": "dcp"})
    latest = manager.latest()
    assert latest is not None and latest.name == "step-000020" and latest.metadata == {"format": "dcp"}
    assert manager.manifest(10).files[0].path == "step-000010.pt"  # type: ignore[union-attr]


def test_a_failed_upload_is_raised_on_the_next_call(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStorage(), str(tmp_path / "ck"))
    folder = make_checkpoint(tmp_path, 10)
    manager.save(10, folder)
    manager.wait()
    (folder / "model.bin").unlink()
    manager.save(20, {"checkpoint-20/model.bin": folder / "model.bin"})
    with pytest.raises(RuntimeError, match="checkpoint upload failed"):
        manager.close()


def test_the_same_rules_hold_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    storage: Storage = S3Storage()
    manager = CheckpointManager(storage, f"s3://{s3_bucket}/run/framework=hf/checkpoints", keep=2)
    for step in (10, 20, 30):
        manager.save(step, make_checkpoint(tmp_path, step))
    manager.close()
    storage.put_bytes(b"half", f"s3://{s3_bucket}/run/framework=hf/checkpoints/checkpoint-40/model.bin")
    latest = manager.latest()
    assert latest is not None and latest.step == 30
    assert manager.complete_steps() == [20, 30]
    local = manager.download(latest, tmp_path / "resume")
    assert (local / "model.bin").read_bytes() == bytes([30]) * 100


def test_per_rank_shards_count_once_one_rank_writes_the_manifest(tmp_path: Path) -> None:
    root = str(tmp_path / "ck")
    ranks = [CheckpointManager(LocalStorage(), root) for _ in range(2)]
    sizes = {}
    for rank, manager in enumerate(ranks):
        shard = tmp_path / f"__{rank}_0.distcp"
        shard.write_bytes(b"x" * (10 + rank))
        manager.save(10, {f"step-000010/__{rank}_0.distcp": shard}, write_manifest=False, blocking=True)
        sizes[f"step-000010/__{rank}_0.distcp"] = shard.stat().st_size
    assert ranks[0].latest() is None  # uploaded, but nothing counts before the manifest
    ranks[0].write_manifest(10, "step-000010", sizes, {"format": "dcp"})
    latest = ranks[1].latest()
    assert latest is not None and latest.step == 10 and len(latest.files) == 2


def rank_files(tmp_path: Path, rank: int, step: int) -> dict[str, Path]:
    folder = tmp_path / f"rank{rank}" / f"dcp-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"__{rank}_0.distcp").write_bytes(bytes([rank]) * (100 + rank))
    if rank == 0:
        (folder / ".metadata").write_bytes(b"index")
    return {p.name: p for p in folder.iterdir()}


def test_sharded_saves_upload_on_every_rank_and_rank_0_writes_the_manifest_after_all_reported(tmp_path: Path) -> None:
    storage = RecordingStorage()
    root = str(tmp_path / "ck")
    ranks = [CheckpointManager(storage, root) for _ in range(2)]
    ranks[0].save_shard(10, "dcp-000010", lambda: rank_files(tmp_path, 0, 10), rank=0, world_size=2)
    time.sleep(0.3)
    assert ranks[0].latest() is None  # rank 1 has not reported: rank 0 waits, no manifest
    ranks[1].save_shard(10, "dcp-000010", lambda: rank_files(tmp_path, 1, 10), rank=1, world_size=2,
                        blocking=True)
    ranks[0].close()
    latest = ranks[1].latest()
    assert latest is not None and latest.step == 10 and latest.metadata["world_size"] == 2
    assert {f.path for f in latest.files} == {"dcp-000010/.metadata", "dcp-000010/__0_0.distcp",
                                              "dcp-000010/__1_0.distcp", "dcp-000010/_ranks/rank-00000.json",
                                              "dcp-000010/_ranks/rank-00001.json"}
    names = [w[len(root) + 1:] for w in storage.writes]
    assert names.index("step-000010.json") > max(names.index("dcp-000010/__1_0.distcp"),
                                                 names.index("dcp-000010/_ranks/rank-00001.json"))
    assert names[-1] == "latest.json"


def test_a_rank_that_dies_mid_upload_never_yields_a_resumable_checkpoint(tmp_path: Path) -> None:
    """Rank 1 is killed while uploading step 20 (its report never lands): step 10 stays the one to resume from."""
    storage = LocalStorage()
    root = str(tmp_path / "ck")
    ranks = [CheckpointManager(storage, root, report_timeout_s=0.5) for _ in range(2)]
    for rank, manager in enumerate(ranks):
        manager.save_shard(10, "dcp-000010", lambda r=rank: rank_files(tmp_path, r, 10), rank=rank, world_size=2)
    for manager in ranks:
        manager.wait()

    def killed() -> dict[str, Path]:
        raise OSError("rank 1 died mid-upload")

    ranks[1].save_shard(20, "dcp-000020", killed, rank=1, world_size=2)
    ranks[0].save_shard(20, "dcp-000020", lambda: rank_files(tmp_path, 0, 20), rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="checkpoint upload failed") as raised:
        ranks[0].wait()
    assert "rank 1 did not report" in str(raised.value.__cause__)
    with pytest.raises(RuntimeError):
        ranks[1].wait()
    assert (tmp_path / "ck" / "dcp-000020" / "__0_0.distcp").is_file()  # rank 0's shard is there ...
    latest = CheckpointManager(storage, root).latest()
    assert latest is not None and latest.step == 10  # ... but step 20 never counts


def test_a_report_an_earlier_launch_left_never_completes_this_launchs_checkpoint(tmp_path: Path) -> None:
    """Attempt 1's rank 1 reported step 20, then attempt 1 died before its manifest; attempt 2 reuses the name:
    rank 0 waits for attempt 2's own report of rank 1 instead of writing a manifest over attempt 1's files."""
    storage = LocalStorage()
    root = str(tmp_path / "ck")
    CheckpointManager(storage, root, launch_id="attempt-1").save_shard(
        20, "dcp-000020", lambda: rank_files(tmp_path, 1, 20), rank=1, world_size=2, blocking=True)
    ranks = [CheckpointManager(storage, root, report_timeout_s=0.5, launch_id="attempt-2") for _ in range(2)]
    ranks[0].save_shard(20, "dcp-000020", lambda: rank_files(tmp_path, 0, 20), rank=0, world_size=2)
    with pytest.raises(RuntimeError, match="checkpoint upload failed") as raised:
        ranks[0].wait()
    assert "rank 1 did not report" in str(raised.value.__cause__)
    assert CheckpointManager(storage, root).latest() is None  # attempt 1's report did not count

    ranks[1].save_shard(20, "dcp-000020", lambda: rank_files(tmp_path, 1, 20), rank=1, world_size=2)
    ranks[0].save_shard(20, "dcp-000020", lambda: rank_files(tmp_path, 0, 20), rank=0, world_size=2)
    for manager in ranks:
        manager.wait()
    latest = CheckpointManager(storage, root).latest()
    assert latest is not None and latest.step == 20
    report = json.loads((tmp_path / "ck" / "dcp-000020" / "_ranks" / "rank-00001.json").read_text())
    assert report["launch"] == "attempt-2"
