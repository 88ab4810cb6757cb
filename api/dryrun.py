"""`POST /train?dry_run=true`: validate, render, ask the cluster to validate without storing, preview the admission.

The API never calls the cluster itself: it parks the validated spec in Redis under a random token (short TTL),
sends the broker's `broker.dry_run` task with that token, and waits up to `TRAINER_DRY_RUN_TIMEOUT_S` for the answer
(`broker.dryrun`). No job record is written and no submission is enqueued. Answers:

- 200 `{"dry_run": true, "valid": true, "object", "cluster", "admission", "existing"}` — the cluster accepts it;
- 422 `cluster_refused` — the cluster refused the object (`cluster.status` 422 Invalid, 403 Forbidden, …), with the
  same keys beside `error`;
- 503 `cluster_unreachable` when the broker could not reach the cluster, 504 `dry_run_timeout` when no broker
  worker answered in time.

The caller's tenant is checked first, as for a real submit (a namespace or storage it may not use is 403), and
travels with the spec, so the object is rendered with that tenant's pod settings. `existing` names a stored job of
the same name (`same_request` tells whether a real submit would return it); a name another tenant holds is 409
without its details, as a real submit answers.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from flask import current_app, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, Schema, fields

from api.errors import ApiError
from broker.dryrun import ANSWER_TTL_S
from broker.jobs import JobSpec
from broker.names import DRY_RUN_TASK


class _Flag(fields.Boolean):
    """A query flag: `true`/`1`/`yes` or `false`/`0`/`no`/empty, in any case and with spaces around."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        return bool(super()._deserialize(value.strip().lower() if isinstance(value, str) else value, attr, data,
                                         **kwargs))


class DryRunQuerySchema(Schema):
    """Query parameters of `POST /train`."""

    class Meta:
        unknown = EXCLUDE

    dry_run = _Flag(load_default=False, truthy={"true", "1", "yes"}, falsy={"false", "0", "no", ""},
                    error_messages={"invalid": "must be true or false"},
                    metadata={"description": "validate, render, ask the cluster (dryRun=All), preview admission"})


def answer_dry_run(spec: JobSpec, tenant: str) -> ResponseReturnValue:
    """The dry run's answer for `spec`, submitted by `tenant` (already checked against the tenant's limits)."""
    store = current_app.extensions["job_store"]
    settings = current_app.config["SETTINGS"]
    existing = store.get(spec.job_name)
    if existing is not None and existing.owner != tenant:
        message = f"the job name {spec.job_name!r} is taken; choose another job_name or run_id"
        raise ApiError(409, "conflict", message, {"job_name": [message]})
    token = secrets.token_hex(16)
    request_key = store.keys.dry_run_request(token)
    store.redis.set(request_key, json.dumps({"spec": spec.to_dict(), "tenant": tenant}), ex=ANSWER_TTL_S)
    if not current_app.extensions["enqueue"](DRY_RUN_TASK, token):
        store.redis.delete(request_key)
        raise ApiError(503, "broker_unavailable", "the dry run could not be sent to the broker; try again",
                       headers={"Retry-After": str(settings.retry_after_s)})
    answer = _wait(store.redis, store.keys.dry_run_answer(token), settings.dry_run_timeout_s)
    if answer is None:
        store.redis.delete(request_key)
        raise ApiError(504, "dry_run_timeout",
                       f"no broker worker answered the dry run within {settings.dry_run_timeout_s:g}s")
    body = {"dry_run": True, "valid": answer["cluster"]["accepted"] is True, "job_name": spec.job_name,
            "namespace": spec.namespace, **answer,
            "existing": None if existing is None else {
                "name": existing.name, "status": existing.status.value,
                "same_request": existing.spec_hash == spec.spec_hash()}}
    cluster = answer["cluster"]
    if cluster["accepted"] is True:
        return jsonify(body), 200
    if cluster["accepted"] is None:
        raise ApiError(503, "cluster_unreachable", f"the cluster could not be asked: {cluster['message']}",
                       headers={"Retry-After": str(settings.retry_after_s)})
    error = {"code": "cluster_refused", "message": f"the cluster refused the PyTorchJob: {cluster['message']}",
             "fields": {}, "cluster_status": cluster["status"]}
    return jsonify({"error": error, **body}), 422


def _wait(client: Any, key: str, timeout_s: float) -> dict[str, Any] | None:
    """The answer pushed to `key`, waiting in short blocking pops (the client's socket timeout is a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        popped = client.blpop([key], timeout=max(min(left, 1.0), 0.01))
        if popped:
            client.delete(key)
            return json.loads(popped[1])  # type: ignore[no-any-return]
