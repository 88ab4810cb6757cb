"""Dry run: validate a request against the cluster and preview its admission, storing and enqueueing nothing.

The API never calls the cluster and a task takes a short argument only, so the API parks the validated spec and the
submitting tenant under `p dryrun:<token>` (JSON `{"spec", "tenant"}`, a short TTL) and sends
`broker.dry_run(token)`; this logic renders the PyTorchJob exactly as the submission would (attempt 1, the
tenant's pod settings, Kueue's label and suspension in `kueue` mode), asks the cluster to validate it without
storing it (`dryRun=All`), computes the admission verdict read-only, and pushes the answer to
`p dryrun:<token>:answer`, where the API is waiting for it. The answer:

    {"object": {...}, "cluster": {"accepted": true|false|null, "status": 201|422|403|..., "reason", "message"},
     "admission": {"verdict": "would_start" | "would_wait", "queue": {...} | null, "detail": "..."}}

`accepted` is null when the cluster could not be asked (unreachable after the retries).
"""

from __future__ import annotations

import json
from typing import Any

from broker import kueue
from broker.admission import cluster_gpus_free
from broker.backends.errors import ClusterError, TransientClusterError
from broker.context import BrokerContext
from broker.jobs import JobRecord, JobSpec
from broker.queue import preview
from broker.render import render_pytorchjob

ANSWER_TTL_S = 120


def dry_run(ctx: BrokerContext, token: str) -> str:
    """Answer the dry run parked under `token`. Returns `answered` or `skipped: <why>`."""
    request, answer_key = ctx.keys.dry_run_request(token), ctx.keys.dry_run_answer(token)
    raw = ctx.redis.get(request)
    if raw is None:
        return "skipped: the request expired"
    parked = json.loads(raw)  # type: ignore[arg-type]
    spec = JobSpec.from_dict(parked["spec"])
    answer = evaluate(ctx, spec, str(parked.get("tenant") or ""))
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.rpush(answer_key, json.dumps(answer))
    pipe.expire(answer_key, ANSWER_TTL_S)
    pipe.delete(request)
    pipe.execute()
    return "answered"


def evaluate(ctx: BrokerContext, spec: JobSpec, tenant: str = "") -> dict[str, Any]:
    """The verdicts on `spec` as `tenant` would submit it (its pod settings are rendered in)."""
    record = JobRecord(name=spec.job_name, spec=spec, spec_hash=spec.spec_hash(), tenant=tenant)
    job = kueue.apply(render_pytorchjob(record, ctx.settings), record, ctx.settings)
    cluster: dict[str, Any]
    try:
        checked = ctx.with_retries(lambda: ctx.backend.validate(job), f"dry-run PyTorchJob {record.object_name()}")
        cluster = {"accepted": True, "status": 201, "reason": "", "message": "the cluster accepts the object"}
        job = checked or job
    except TransientClusterError as exc:
        cluster = {"accepted": None, "status": exc.status, "reason": type(exc).__name__, "message": str(exc)}
    except ClusterError as exc:
        cluster = {"accepted": False, "status": exc.status, "reason": type(exc).__name__, "message": str(exc)}
    return {"object": job, "cluster": cluster, "admission": _admission(ctx, spec)}


def _admission(ctx: BrokerContext, spec: JobSpec) -> dict[str, Any]:
    if kueue.enabled(ctx.settings):
        queue = kueue.queue_for(spec, ctx.settings)
        return {"verdict": "would_wait", "detail": f"would be created suspended and wait for Kueue admission in "
                f"{queue}", "queue": {"admission": "kueue", "namespace": spec.namespace, "kueue_queue": queue,
                                      "position": None, "ahead": None, "waiting_for": "kueue"}}
    limit = ctx.settings.quota_for(spec.namespace)
    try:
        free = cluster_gpus_free(ctx, spec.namespace) if spec.total_gpus > 0 else None
    except ClusterError:
        free = None
    verdict = preview(ctx.redis, ctx.keys, spec.namespace, spec.total_gpus, limit, free)
    if verdict["verdict"] == "would_start":
        verdict["detail"] = (f"would start now: {spec.total_gpus} GPUs fit the quota of namespace {spec.namespace} "
                             f"and no job waits ahead")
    else:
        info = verdict["queue"]
        verdict["detail"] = (f"would wait at position {info['position']} in namespace {spec.namespace}, "
                             f"for {info['waiting_for']}")
    return verdict
