"""The `/train` blueprint: submit, read, list, events, cancel, retry. Plus the open health blueprint.

Views read and write through the job store only (no cluster call on the request path) and enqueue broker tasks by
name. Cancel and retry are decided by `broker.lifecycle`, as the broker's tasks decide them.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from api import tenants
from api.apidoc import documented
from api.dryrun import DryRunQuerySchema, answer_dry_run
from api.errors import ApiError, invalid
from api.schemas import JobEventsSchema, JobListQuerySchema, status_view
from broker.errors import JobConflict
from broker.jobs import JobRecord
from broker.lifecycle import CancelOutcome, request_cancel, request_retry
from broker.names import CANCEL_TASK, SUBMIT_TASK
from broker.store import JobStore

bp = Blueprint("train", __name__, url_prefix="/train")
health = Blueprint("health", __name__)


def _store() -> JobStore:
    return current_app.extensions["job_store"]  # type: ignore[no-any-return]


def _require(name: str) -> JobRecord:
    """The job, when this caller may see it (another tenant's job is 404, as if it did not exist)."""
    return tenants.visible(_store().get(name), name)


def _enqueue(task_name: str, name: str) -> bool:
    return current_app.extensions["enqueue"](task_name, name)  # type: ignore[no-any-return]


def _views(records: list[JobRecord]) -> list[dict[str, Any]]:
    """The records' status views, as this caller may see them (`tenants.name_only_visible_ahead`)."""
    settings = current_app.config["SETTINGS"].broker
    views = [status_view(record, settings) for record in records]
    tenants.name_only_visible_ahead(views, tenants.caller(), _store().load)
    return views


def _view(record: JobRecord) -> dict[str, Any]:
    return _views([record])[0]


def _job_response(record: JobRecord, status: int) -> ResponseReturnValue:
    return jsonify(_view(record)), status, {"Location": f"/train/{record.name}"}


# --- submission ------------------------------------------------------------------------------------------------


def _json_object() -> dict[str, Any]:
    """The body as a JSON object. 413 beyond the size limit, 400 for anything else."""
    raw = request.get_data(cache=False)  # raises 413 when the Content-Length is beyond the limit
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(raw) >= limit:
        # A chunked body has no length to check up front: Werkzeug stops reading at the limit, so a body that
        # reaches it may go on; read one byte more from the server's own stream to tell.
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot be stored
    except (ValueError, RecursionError, UnicodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return body


def _name_taken(name: str) -> ApiError:
    message = f"the job name {name!r} is taken; choose another job_name or run_id"
    return ApiError(409, "conflict", message, {"job_name": [message]})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_NO_JOB = {404: "no such job"}


@bp.post("")
@documented("Submit a training job (or, with dry_run=true, check it and store nothing)", {
    202: ("accepted and queued", "TrainingJobStatus"),
    200: ("the same request again: the existing job; with dry_run, the rendered object and the verdicts",
          "TrainingJobStatus"),
    400: "invalid request", 409: "same name, different request", 413: "body too large",
    422: "dry_run: the cluster refused the object (cluster_refused)",
    429: "the tenant holds as many jobs as it may (with Retry-After)",
    504: "dry_run: no broker worker answered in time"}, query=DryRunQuerySchema, body="TrainingJobRequest")
def submit() -> ResponseReturnValue:
    """Validate, store (before anything is enqueued), enqueue the submit task. A repeat of the same request
    returns the stored job with 200 and enqueues nothing. `?dry_run=true` stores and enqueues nothing: it answers
    what the cluster and the admission would say (`api.dryrun`)."""
    dry = DryRunQuerySchema().load(request.args.to_dict())["dry_run"]
    spec = current_app.extensions["request_schema"].load(_json_object())
    settings = current_app.config["SETTINGS"]
    tenant = tenants.submitting_tenant()
    tenants.check_spec(tenant, spec, settings.broker, settings.multi_tenant)
    if dry:
        return answer_dry_run(spec, tenant.name)
    try:
        record, created = _store().create(JobRecord(name=spec.job_name, spec=spec, tenant=tenant.name),
                                          max_jobs=tenant.max_jobs)
    except JobConflict as exc:
        if exc.existing.owner != tenant.name:
            raise _name_taken(spec.job_name) from exc
        raise
    if record.owner != tenant.name:
        raise _name_taken(spec.job_name)
    if not created:
        return _job_response(record, 200)
    _enqueue(SUBMIT_TASK, record.name)
    return _job_response(record, 202)


# --- reading ---------------------------------------------------------------------------------------------------


@bp.get("/<name>")
@documented("A job's status", {200: ("the job", "TrainingJobStatus"), **_NO_JOB})
def get_job(name: str) -> ResponseReturnValue:
    return jsonify(_view(_require(name)))


@bp.get("")
@documented("List jobs, newest first", {200: ("a page of jobs", "JobList"), 400: "invalid query"},
            query=JobListQuerySchema)
def list_jobs() -> ResponseReturnValue:
    query = JobListQuerySchema().load(request.args.to_dict())
    try:
        scoped = current_app.config["SETTINGS"].multi_tenant
        records, cursor = _store().list_jobs(**query, tenant=tenants.caller().list_filter if scoped else None)
    except ValueError as exc:
        raise invalid({"cursor": [str(exc)]}) from exc
    return jsonify({"jobs": _views(list(records)), "next_cursor": cursor})


@bp.get("/<name>/events")
@documented("A job's status history", {200: ("events", "JobEvents"), **_NO_JOB})
def job_events(name: str) -> ResponseReturnValue:
    store = _store()
    _require(name)
    return jsonify(JobEventsSchema().dump({"name": name, "events": store.events(name)}))


# --- cancel and retry ------------------------------------------------------------------------------------------


@bp.post("/<name>/cancel")
@documented("Cancel a job", {200: ("cancelled at once", "TrainingJobStatus"), 202: ("cancelling", "TrainingJobStatus"),
                             409: "already finished", **_NO_JOB})
def cancel(name: str) -> ResponseReturnValue:
    """`queued`/`waiting_quota` → `cancelled` at once (200); a job that may be on the cluster → `cancelling` and a
    cancel task (202); already `cancelling` → 202 again; terminal → 409. Decided by `broker.lifecycle`."""
    _require(name)  # another tenant's job is 404 before anything is decided
    decision = request_cancel(_store(), current_app.extensions["quota"], name)
    record = decision.record
    if decision.outcome == CancelOutcome.ENDED:
        raise ApiError(409, "invalid_state", f"job {name!r} is already {record.status}",
                       current_status=record.status.value)
    if decision.outcome == CancelOutcome.CANCELLED:
        return _job_response(record, 200)
    if decision.outcome == CancelOutcome.CANCELLING:
        _enqueue(CANCEL_TASK, name)
    return _job_response(record, 202)


@bp.post("/<name>/retry")
@documented("Retry a failed or cancelled job from its latest checkpoint",
            {202: ("queued again", "TrainingJobStatus"), 409: "not failed or cancelled", **_NO_JOB})
def retry(name: str) -> ResponseReturnValue:
    """`failed`/`cancelled` → `queued` with `attempt` + 1, resuming from the latest checkpoint; else 409."""
    _require(name)
    queued = request_retry(_store(), name)
    _enqueue(SUBMIT_TASK, name)
    return _job_response(queued, 202)


# --- open endpoints --------------------------------------------------------------------------------------------


@health.get("/healthz")
@documented("Liveness", {200: "ok"}, open=True)
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers. No dependency is checked."""
    return jsonify({"status": "ok"})


@health.get("/readyz")
@documented("Readiness", {200: "ok"}, open=True)
def readyz() -> ResponseReturnValue:
    """Readiness: Redis accepts a write (a 503 with Retry-After otherwise, through the error handler: unreachable,
    or out of memory — a Redis at `maxmemory` still answers PING but refuses every new job)."""
    store = _store()
    store.redis.set(store.keys.readyz, "1", px=60_000)
    return jsonify({"status": "ready"})


@health.get("/metrics")
@documented("Prometheus metrics", {200: "ok"}, open=True)
def metrics() -> ResponseReturnValue:
    """Prometheus exposition; open like the probes (see api.auth for why)."""
    return current_app.extensions["metrics"].exposition()  # type: ignore[no-any-return]
