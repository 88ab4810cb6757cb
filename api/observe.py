"""`GET /train/<name>/progress`, `/metrics` and `/logs`: what the trainer reports, read on demand.

Neither is on the status path: `GET /train/<name>` reads Redis only, these read the run's storage (or the local
backend's replica logs) when asked. Progress is `<checkpoint prefix>/logs/progress.json` as the trainer writes it
(step, total_steps, loss, state, updated_at), cached in-process for a few seconds (`PROGRESS_CACHE_S` in the Flask
config, default 3) so a poller per job does not become a storage request per poll. Metrics are the series of
`<checkpoint prefix>/logs/metrics.jsonl`, bounded in bytes read and points answered (api/run_metrics.py), cached the
same way. Logs are the local backend's
replica logs (`master-0.log`, `worker-0.log`, …) when the job ran locally and they are still there, else the files
of the run's `logs/` prefix; `tail` (default 200, at most 10000) limits the lines returned per file.

Both read only inside the job's own prefix (`<checkpoint_base_uri>/<run_id>/framework=<f>`, which the API checked
against the tenant's storage roots at submit) or the local backend's folder of that job; a local file that resolves
elsewhere (a symbolic link) is never read. Reads are bounded: `progress.json` at most `TRAINER_PROGRESS_MAX_BYTES`
(one ranged read; larger → 422), each log's last `run_files.TAIL_BYTES` read from its end, at most `MAX_LOG_FILES`.

Unknown job (or another tenant's) or nothing written yet → 404; storage that does not answer → 503 with
`Retry-After` and a message without the store's address. Authentication and the error body are the API's own (the
blueprint is registered in `api.app.BLUEPRINTS`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, Schema, fields, validate

from api import run_metrics, tenants
from api.apidoc import documented
from api.errors import ApiError
from broker import run_files
from broker.backends import replica_logs
from broker.jobs import JobRecord
from broker.store import JobStore

bp = Blueprint("observe", __name__, url_prefix="/train")
log = logging.getLogger(__name__)

DEFAULT_TAIL, MAX_TAIL = 200, 10_000
MAX_LOG_FILES = 32
DEFAULT_CACHE_S = 3.0
_CACHE_SIZE = 1024
#: Series cached at once (each up to `run_metrics.MAX_POINTS` points).
_METRICS_CACHE_SIZE = 64


class TtlCache:
    """A small thread-safe cache of loaded values (and of misses) for `ttl_s` seconds."""

    def __init__(self, ttl_s: float, max_items: int = _CACHE_SIZE) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
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
            if len(self._items) >= self.max_items:
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
                while len(self._items) >= self.max_items:  # all still fresh: drop the oldest
                    del self._items[next(iter(self._items))]
            self._items[key] = (now + self.ttl_s, value)
        return value


def _store() -> JobStore:
    return current_app.extensions["job_store"]  # type: ignore[no-any-return]


def _cache(name: str = "progress_cache", max_items: int = _CACHE_SIZE) -> TtlCache:
    ttl = float(current_app.config.get("PROGRESS_CACHE_S", DEFAULT_CACHE_S))
    return current_app.extensions.setdefault(name, TtlCache(ttl, max_items))  # type: ignore[no-any-return]


def _unavailable(exc: run_files.StorageUnavailable) -> ApiError:
    log.warning("run storage unavailable: %s", exc)
    retry_after = str(current_app.config["SETTINGS"].retry_after_s)
    return ApiError(503, "storage_unavailable", "the run's storage did not answer; retry later",
                    headers={"Retry-After": retry_after})


def _visible(name: str) -> JobRecord:
    return tenants.visible(_store().get(name), name)


def _load_progress(uri: str, root: str, max_bytes: int) -> dict[str, Any] | str | None:
    """The parsed progress, None when absent (or caught mid-write), or a message when it may not be read."""
    try:
        data = json.loads(run_files.read_bounded(uri, max_bytes, root))
    except (FileNotFoundError, run_files.Outside):
        return None
    except run_files.TooLarge as exc:
        return f"progress.json holds more than {exc.limit} bytes; it is not read"
    except ValueError:
        return None  # caught mid-write by a store without atomic replace: the next poll will see it
    return data if isinstance(data, dict) else None


@bp.get("/<name>/progress")
@documented("Training progress (logs/progress.json)", {
    200: "the last reported progress", 404: "no such job, or no progress yet",
    422: "progress.json larger than the limit"})
def progress(name: str) -> ResponseReturnValue:
    record = _visible(name)
    layout = record.layout
    root = layout.prefix
    uri = layout.progress
    limit = current_app.config["SETTINGS"].progress_max_bytes
    try:
        data = _cache().get(uri, lambda: _load_progress(uri, root, limit))
    except run_files.StorageUnavailable as exc:
        raise _unavailable(exc) from exc
    if data is None:
        raise ApiError(404, "not_found", f"job {name!r} has reported no progress yet")
    if isinstance(data, str):
        raise ApiError(422, "progress_too_large", data)
    return jsonify({"name": name, "status": record.status.value, "attempt": record.attempt, "progress": data})


def _bounded(default: int, maximum: int) -> fields.Integer:
    """A query integer from 1 to `maximum`; anything else is refused with the same message."""
    message = f"must be an integer from 1 to {maximum}"
    return fields.Integer(load_default=default, validate=validate.Range(min=1, max=maximum, error=message),
                          error_messages={"invalid": message})


class MetricsQuerySchema(Schema):
    """Query parameters of `GET /train/<name>/metrics`."""

    class Meta:
        unknown = EXCLUDE

    max_points = _bounded(run_metrics.DEFAULT_POINTS, run_metrics.MAX_POINTS)


class LogsQuerySchema(Schema):
    """Query parameters of `GET /train/<name>/logs`."""

    class Meta:
        unknown = EXCLUDE

    tail = _bounded(DEFAULT_TAIL, MAX_TAIL)


@bp.get("/<name>/metrics")
@documented("The run's metrics series (logs/metrics.jsonl): loss, eval loss, lr, tokens/s by step", {
    200: ("the series, at most max_points points", "MetricsSeries"), 400: "invalid max_points",
    404: "no such job, or no metrics yet"}, query=MetricsQuerySchema)
def metrics_series(name: str) -> ResponseReturnValue:
    max_points: int = MetricsQuerySchema().load(request.args.to_dict())["max_points"]
    record = _visible(name)
    root = record.layout.prefix
    uri = f"{record.layout.logs}/metrics.jsonl"
    max_bytes = int(current_app.config.get("METRICS_MAX_BYTES", run_metrics.DEFAULT_MAX_BYTES))
    try:
        data = _cache("metrics_cache", _METRICS_CACHE_SIZE).get(
            f"{uri}\n{max_points}", lambda: run_metrics.series(uri, max_points, max_bytes, root=root))
    except run_files.StorageUnavailable as exc:
        raise _unavailable(exc) from exc
    if data is None:
        raise ApiError(404, "not_found", f"job {name!r} has logged no metrics yet ({uri})")
    return jsonify({"name": name, "status": record.status.value, "attempt": record.attempt,
                    "max_points": max_points, **data})


def _local_logs(record: JobRecord, tail: int) -> list[dict[str, str]]:
    if not record.cluster_object:
        return []
    broker = current_app.config["SETTINGS"].broker
    files = replica_logs(broker, record.namespace, record.cluster_object)
    directory = Path(broker.local_workdir).resolve() / record.namespace / record.cluster_object
    out = []
    for path in files[:MAX_LOG_FILES]:
        try:
            data = run_files.read_bytes(str(path), run_files.TAIL_BYTES, root=str(directory))
        except (FileNotFoundError, run_files.Outside):
            continue
        out.append({"file": path.name, "text": run_files.tail_lines(data, tail)})
    return out


def _storage_logs(record: JobRecord, tail: int) -> list[dict[str, str]]:
    root = record.layout.logs
    uris = [u for u in run_files.list_files(root) if u.endswith(".log")][:MAX_LOG_FILES]
    out = []
    for uri in uris:
        try:
            data = run_files.read_bytes(uri, run_files.TAIL_BYTES, root=root)
        except (FileNotFoundError, run_files.Outside):
            continue
        out.append({"file": PurePosixPath(uri).name, "text": run_files.tail_lines(data, tail)})
    return out


@bp.get("/<name>/logs")
@documented("The trainer's log, last `tail` lines per file", {
    200: "log files and their last lines", 400: "invalid tail", 404: "no such job, or no logs yet"},
    query=LogsQuerySchema)
def logs(name: str) -> ResponseReturnValue:
    tail: int = LogsQuerySchema().load(request.args.to_dict())["tail"]
    record = _visible(name)
    entries, source = _local_logs(record, tail), "local"
    if not entries:
        try:
            entries, source = _storage_logs(record, tail), "storage"
        except run_files.StorageUnavailable as exc:
            raise _unavailable(exc) from exc
    if not entries:
        raise ApiError(404, "not_found", f"job {name!r} has no logs yet")
    return jsonify({"name": name, "attempt": record.attempt, "source": source, "tail": tail, "logs": entries})
