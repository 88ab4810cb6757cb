"""`GET /queue?namespace=…`: the jobs waiting for quota in a namespace, first in line first.

Builtin admission: the order of the broker's FIFO line (`broker.quota`), each job with the `queue` object the last
sync cycle stored (position, jobs ahead, what it waits for). Kueue admission: the jobs waiting for Kueue in the order
they were created; Kueue orders its own line, so they carry no position.

A tenant asks only about a namespace it may use (another is 403 naming `namespace`, as a submit there would be) and
sees only its own jobs in the line; a job ahead of its own that it may not see counts in `position` and `ahead` but
is not named in `ahead_jobs`. The operator sees every job.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields

from api import tenants
from api import validators as v
from api.apidoc import documented
from api.errors import ApiError
from api.schemas import Checked, TrainingJobStatusSchema, status_view
from broker import kueue
from broker.jobs import JobStatus
from broker.quota import QuotaLedger
from broker.store import JobStore

bp = Blueprint("queue", __name__)


class QueueQuerySchema(Schema):
    """Query parameters of `GET /queue`."""

    namespace = Checked(v.check_namespace, metadata={"description": "default: TRAINER_NAMESPACE"})


class QueueSchema(Schema):
    namespace = fields.String()
    admission = fields.String(metadata={"description": "builtin or kueue"})
    jobs = fields.List(fields.Nested(TrainingJobStatusSchema), metadata={"description": "first in line first"})


@bp.get("/queue")
@documented("The jobs waiting for quota in a namespace, first in line first",
            {200: ("the line", "Queue"), 400: "invalid query"}, query=QueueQuerySchema)
def queue() -> ResponseReturnValue:
    settings = current_app.config["SETTINGS"].broker
    namespace = QueueQuerySchema().load(request.args.to_dict()).get("namespace") or settings.namespace
    who = tenants.caller()
    if not who.operator and (who.tenant is None or not who.tenant.allows_namespace(namespace)):
        allowed = ", ".join(who.tenant.namespaces) if who.tenant is not None else "none"
        raise ApiError(403, "forbidden", "the request uses namespaces or storage this tenant may not use",
                       {"namespace": [f"namespace {namespace!r} is not one this tenant may use: {allowed}"]})
    store: JobStore = current_app.extensions["job_store"]
    if kueue.enabled(settings):
        names = store.names_in(JobStatus.WAITING_QUOTA)
    else:
        quota: QuotaLedger = current_app.extensions["quota"]
        names = quota.line(namespace)
    waiting = [r for r in store.load(names) if r.status == JobStatus.WAITING_QUOTA and r.namespace == namespace
               and who.sees(r)]
    views = [status_view(r, settings) for r in waiting]
    tenants.name_only_visible_ahead(views, who, store.load)
    return jsonify({"namespace": namespace, "admission": settings.admission, "jobs": views})
