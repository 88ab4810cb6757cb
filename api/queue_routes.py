"""`GET /queue?namespace=…`: the jobs waiting for quota in a namespace, first in line first.

Builtin admission: the order of the broker's FIFO line (`broker.quota`), each job with the `queue` object the last
sync cycle stored (position, jobs ahead, what it waits for). Kueue admission: the jobs waiting for Kueue in the order
they were created; Kueue orders its own line, so they carry no position.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import Schema, fields

from api import validators as v
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
def queue() -> ResponseReturnValue:
    settings = current_app.config["SETTINGS"].broker
    namespace = QueueQuerySchema().load(request.args.to_dict()).get("namespace") or settings.namespace
    store: JobStore = current_app.extensions["job_store"]
    if kueue.enabled(settings):
        names = store.names_in(JobStatus.WAITING_QUOTA)
    else:
        quota: QuotaLedger = current_app.extensions["quota"]
        names = quota.line(namespace)
    waiting = [r for r in store.load(names) if r.status == JobStatus.WAITING_QUOTA and r.namespace == namespace]
    return jsonify({"namespace": namespace, "admission": settings.admission,
                    "jobs": [status_view(r, settings) for r in waiting]})
