"""`trainctl queue` and `trainctl submit --dry-run`: where jobs stand in line, and what a request would do.

    trainctl queue [--namespace NS] [--json]   GET /queue
    trainctl submit FILE --dry-run [--json]    POST /train?dry_run=true (stores and enqueues nothing)

The dry run prints the cluster's verdict and the admission's, and exits 0 when the cluster accepts the object, 1
when it refuses it (its status and message are printed).
"""

from __future__ import annotations

import json
from typing import Any, TextIO

import requests


def queue_lines(body: dict[str, Any]) -> list[str]:
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


def cmd_queue(client: Any, args: Any, out: TextIO) -> int:
    body = client.get("/queue", namespace=args.namespace)
    if args.json:
        print(json.dumps(body, indent=2), file=out)
    else:
        for line in queue_lines(body):
            print(line, file=out)
    return 0


def dry_run(client: Any, request_body: Any, as_json: bool, out: TextIO) -> int:
    """POST the request with `dry_run=true`; a 422 from the cluster is an answer here, not an error."""
    from api.cli import EXIT_UNREACHABLE, CliError, describe_error

    url = f"{client.base_url}/train"
    try:
        response: requests.Response = client.session.post(url, params={"dry_run": "true"}, json=request_body,
                                                          timeout=max(client.timeout_s, 45.0))
    except requests.RequestException as exc:
        raise CliError(f"cannot reach the API at {client.base_url}: {exc}", EXIT_UNREACHABLE) from exc
    body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else None
    if response.status_code not in (200, 422) or not isinstance(body, dict) or "cluster" not in body:
        raise CliError(describe_error(response))
    if as_json:
        print(json.dumps(body, indent=2), file=out)
    else:
        cluster, admission = body["cluster"], body["admission"]
        verdict = "accepts" if cluster["accepted"] else f"refuses ({cluster['status']} {cluster['reason']})"
        print(f"{body['job_name']}: dry run, nothing stored", file=out)
        print(f"cluster: {verdict}: {cluster['message']}", file=out)
        print(f"admission: {admission['verdict']}: {admission.get('detail', '')}", file=out)
        if body.get("existing"):
            print(f"existing job: {body['existing']['name']} is {body['existing']['status']}", file=out)
    return 0 if body["valid"] else 1
