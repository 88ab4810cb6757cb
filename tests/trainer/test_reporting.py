"""The reporter's progress: set every step, stored with the uploads — what the API's `/progress` reads while a run
trains is at most one upload interval old, and the final state always lands."""

from __future__ import annotations

import json
from pathlib import Path

from devstack import wait_for
from trainer.config import parse_config
from trainer.dist import DistInfo
from trainer.reporting import Reporter
from trainer.storage import LocalStorage


def reporter(tmp_path: Path, interval_s: float) -> tuple[Reporter, Path]:
    config = parse_config(["--framework", "meta", "--run-id", "rep", "--checkpoint-base-uri", str(tmp_path / "runs"),
                           "--dataset-uri", str(tmp_path / "d.jsonl"), "--model-id", "m", "--max-steps", "9"], {})
    return (Reporter(LocalStorage(), config, DistInfo(), tmp_path / "local", upload_interval_s=interval_s),
            Path(config.logs_uri) / "progress.json")


def test_progress_set_every_step_is_stored_by_the_next_upload_and_close_stores_the_end(tmp_path: Path) -> None:
    rep, stored = reporter(tmp_path, interval_s=0.05)
    rep.start()
    for step in range(1, 501):
        rep.progress(step, 1000, 2.5)

    def latest() -> dict[str, object] | None:
        data = json.loads(stored.read_text()) if stored.exists() else None
        return data if data and data["step"] == 500 else None

    progress = wait_for(latest, 10, "progress of step 500 in storage")
    assert progress["state"] == "running" and progress["total_steps"] == 1000 and progress["run_id"] == "rep"
    rep.progress(501, 1000, 2.4)
    rep.close("completed")
    assert json.loads(stored.read_text())["step"] == 501
    assert json.loads(stored.read_text())["state"] == "completed"


def test_flush_stores_the_progress_at_once(tmp_path: Path) -> None:
    rep, stored = reporter(tmp_path, interval_s=3600)  # the background upload never comes
    rep.start()
    rep.progress(7, 9, 1.0)
    rep.flush()
    assert json.loads(stored.read_text())["step"] == 7
    rep.close("completed")
