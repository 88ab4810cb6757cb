"""`GET /train/<name>/progress` and `GET /train/<name>/logs`: what the trainer reports, read on demand.

Neither is on the status path: `GET /train/<name>` reads Redis only, these read the run's storage (or the local
backend's replica logs) when asked. Progress is `<checkpoint prefix>/logs/progress.json` as the trainer writes it
(step, total_steps, loss, state, updated_at), cached in-process for a few seconds (`PROGRESS_CACHE_S` in the Flask
config, default 3) so a poller per job does not become a storage request per poll. Logs are the local backend's
replica logs (`master-0.log`, `worker-0.log`, …) when the job ran locally and they are still there, else the files
of the run's `logs/` prefix; `tail` (default 200, at most 10000) limits the lines returned per file.

Unknown job or nothing written yet → 404; storage that does not answer → 503 with `Retry-After`. Authentication
and the error body are the API's own (the blueprint is registered in `api.app.BLUEPRINTS`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api.errors import ApiError, invalid
from broker import run_files
from broker.backends import replica_logs
from broker.jobs import JobRecord
from broker.store import JobStore

bp = Blueprint("observe", __name__, url_prefix="/train")

DEFAULT_TAIL, MAX_TAIL = 200, 10_000
DEFAULT_CACHE_S = 3.0
_CACHE_SIZE = 1024


class TtlCache:
    """A small thread-safe cache of loaded values (and of misses) for `ttl_s` seconds."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
        if hit and hit[0] > now:
            return hit[1]
        value = load()  # StorageUnavailable propagates and is not cached
        with self._lock:
            if len(self._items) >= _CACHE_SIZE:
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (now + self.ttl_s, value)
        return value


def _store() -> JobStore:
    return current_app.extensions["job_store"]  # type: ignore[no-any-return]


def _cache() -> TtlCache:
    ttl = float(current_app.config.get("PROGRESS_CACHE_S", DEFAULT_CACHE_S))
    return current_app.extensions.setdefault("progress_cache", TtlCache(ttl))  # type: ignore[no-any-return]


def _unavailable(exc: run_files.StorageUnavailable) -> ApiError:
    retry_after = str(current_app.config["SETTINGS"].retry_after_s)
    return ApiError(503, "storage_unavailable", str(exc), headers={"Retry-After": retry_after})


def _load_progress(uri: str) -> dict[str, Any] | None:
    try:
        data = json.loads(run_files.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # caught mid-write by a store without atomic replace: the next poll will see it
    return data if isinstance(data, dict) else None


@bp.get("/<name>/progress")
def progress(name: str) -> ResponseReturnValue:
    record = _store().require(name)
    uri = record.layout.progress
    try:
        data = _cache().get(uri, lambda: _load_progress(uri))
    except run_files.StorageUnavailable as exc:
        raise _unavailable(exc) from exc
    if data is None:
        raise ApiError(404, "not_found", f"job {name!r} has reported no progress yet ({uri})")
    return jsonify({"name": name, "status": record.status.value, "attempt": record.attempt, "progress": data})


def _tail() -> int:
    raw = request.args.get("tail", str(DEFAULT_TAIL))
    try:
        tail = int(raw)
    except ValueError:
        tail = -1
    if not 0 < tail <= MAX_TAIL:
        raise invalid({"tail": [f"must be an integer from 1 to {MAX_TAIL}"]})
    return tail


def _local_logs(record: JobRecord, tail: int) -> list[dict[str, str]]:
    if not record.cluster_object:
        return []
    files = replica_logs(current_app.config["SETTINGS"].broker, record.namespace, record.cluster_object)
    out = []
    for path in files:
        try:
            data = run_files.read_bytes(str(path), run_files.TAIL_BYTES)
        except FileNotFoundError:
            continue
        out.append({"file": path.name, "text": run_files.tail_lines(data, tail)})
    return out


def _storage_logs(record: JobRecord, tail: int) -> list[dict[str, str]]:
    uris = [u for u in run_files.list_files(record.layout.logs) if u.endswith(".log")]
    out = []
    for uri in uris:
        try:
            data = run_files.read_bytes(uri, run_files.TAIL_BYTES)
        except FileNotFoundError:
            continue
        out.append({"file": PurePosixPath(uri).name, "text": run_files.tail_lines(data, tail)})
    return out


@bp.get("/<name>/logs")
def logs(name: str) -> ResponseReturnValue:
    tail = _tail()
    record = _store().require(name)
    entries, source = _local_logs(record, tail), "local"
    if not entries:
        try:
            entries, source = _storage_logs(record, tail), "storage"
        except run_files.StorageUnavailable as exc:
            raise _unavailable(exc) from exc
    if not entries:
        raise ApiError(404, "not_found", f"job {name!r} has no logs yet")
    return jsonify({"name": name, "attempt": record.attempt, "source": source, "tail": tail, "logs": entries})
