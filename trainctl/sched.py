"""`trainctl queue` and `trainctl submit --dry-run`: where jobs stand in line, and what a request would do.

    trainctl queue [--namespace NS] [--json]   GET /queue
    trainctl submit FILE --dry-run [--json]    POST /train?dry_run=true (stores and enqueues nothing)

The dry run prints the cluster's verdict and the admission's, and exits 0 when the cluster accepts the object, 1
when it refuses it (its status and message are printed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from trainctl.client import Client, DryRun, Queue


def queue_lines(body: Queue) -> list[str]:
    jobs = body.get("jobs") or []
    lines = [f"namespace {body.get('namespace')} ({body.get('admission')} admission): {len(jobs)} waiting"]
    for job in jobs:
        info = job.get("queue") or {}
        place = f"#{info['position']}" if info.get("position") else "-"
        why = info.get("waiting_for") or "?"
        if why in ("gpus", "resource_quota", "over_limit", "line") and info.get("gpus"):
            gpus = info["gpus"]
            why += f" (needs {gpus['requested']} GPUs, {gpus['free']} of {gpus['limit']} free)"
        elif why == "jobs" and info.get("jobs"):
            why += f" ({info['jobs']['running']} of {info['jobs']['limit']} running)"
        elif why == "kueue":
            why += f" (LocalQueue {info.get('kueue_queue')})"
        lines.append(f"{place:>4}  {job['name']}  ahead={info.get('ahead')}  waiting for {why}")
    return lines


def show_queue(client: Client, namespace: str | None, as_json: bool, out: TextIO) -> int:
    body = client.queue(namespace)
    if as_json:
        print(json.dumps(body, indent=2), file=out)
    else:
        for line in queue_lines(body):
            print(line, file=out)
    return 0


def dry_run_lines(body: DryRun) -> list[str]:
    cluster, admission = body["cluster"], body["admission"]
    verdict = "accepts" if cluster["accepted"] else f"refuses ({cluster['status']} {cluster['reason']})"
    lines = [f"{body['job_name']}: dry run, nothing stored", f"cluster: {verdict}: {cluster['message']}",
             f"admission: {admission['verdict']}: {admission.get('detail', '')}"]
    existing = body.get("existing")
    if existing:
        lines.append(f"existing job: {existing['name']} is {existing['status']}")
    return lines


def show_dry_run(client: Client, request: Mapping[str, Any], as_json: bool, out: TextIO) -> int:
    body = client.submit(request, dry_run=True)
    if as_json:
        print(json.dumps(body, indent=2), file=out)
    else:
        for line in dry_run_lines(body):
            print(line, file=out)
    return 0 if body.get("valid") else 1
