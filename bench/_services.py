"""Processes the API and broker benchmarks start: gunicorn (the API or the bare baseline app), a Celery worker that
also serves the no-op baseline task, and a load generator of several processes on loopback."""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devstack import Service, celery_argv
from devstack.commands import worker_options
from devstack.gunicorn import serve

#: The gunicorn settings both the API and its baseline run under: the image's (Dockerfile `CMD`, compose, k8s).
GUNICORN_ARGS = ["--workers", "2", "--threads", "4", "--access-logfile", "-"]


@contextmanager
def gunicorn(app: str, env: dict[str, str], ready_path: str) -> Iterator[int]:
    """`gunicorn <GUNICORN_ARGS> <app>` on a free loopback port, ready when `ready_path` answers under 500; yields
    the port."""
    log = Path(tempfile.mkdtemp(prefix="tb-bench-")) / "gunicorn.log"
    with serve({**os.environ, **env}, log, *GUNICORN_ARGS, app=app, ready_path=ready_path, below=500) as served:
        yield served.port


@contextmanager
def celery_worker(env: dict[str, str], concurrency: int = 2) -> Iterator[Service]:
    """`celery -A broker.celery_app worker -c N -I bench._noop`: the broker's worker, plus the no-op task."""
    log = Path(tempfile.mkdtemp(prefix="tb-bench-")) / "worker.log"
    options = worker_options(f"bench-{os.getpid()}@%h", concurrency, "warning")
    service = Service("worker", celery_argv("worker", *options, "-I", "bench._noop"), {**os.environ, **env}, log)
    try:
        yield service.start()
    finally:
        service.stop(20)


def _load_worker(port: int, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str],
                 seconds: float, tag: str, queue: Any) -> None:
    """One load process: sequential requests, a new connection each (gunicorn's sync workers close it after every
    response), for `seconds`. Each POST body gets a unique `run_id`. Puts (ok, errors) on the queue."""
    ok = errors = 0
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        payload = None
        if body is not None:
            payload = json.dumps({**body, "run_id": f"{body.get('run_id', 'r')}_{tag}_{i}"})
        i += 1
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, path, body=payload, headers={**headers, "Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            conn.close()
            if reply.status < 300:
                ok += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
    queue.put((ok, errors))


def requests_per_second(port: int, method: str, path: str, *, body: dict[str, Any] | None = None,
                        headers: dict[str, str] | None = None, seconds: float = 5.0,
                        processes: int = 4) -> tuple[float, int]:
    """Successful requests per second from `processes` load processes over `seconds`; and the error count."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(port, method, path, body, headers or {}, seconds,
                                                      f"{os.getpid()}_{n}_{time.monotonic_ns()}", queue))
             for n in range(processes)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    ok = sum(r[0] for r in results)
    return ok / seconds, sum(r[1] for r in results)
