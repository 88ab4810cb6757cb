"""The API (or another WSGI app) under gunicorn on a free loopback port, for as long as a `with` block runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.commands import API_APP, gunicorn_argv
from devstack.procs import Service, free_port, http_ok


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    service: Service


@contextmanager
def serve(env: Mapping[str, str], log: Path, *options: str, app: str = API_APP, ready_path: str = "/healthz",
          below: int = 300, timeout: float = 60.0) -> Iterator[Served]:
    """`gunicorn <options> <app>`, ready once `GET ready_path` answers under `below`; stopped at the block's end."""
    port = free_port()
    service = Service("gunicorn", gunicorn_argv(port, *options, app=app), env, log).start()
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_ready(lambda: http_ok(f"{url}{ready_path}", timeout=5, below=below), timeout)
        yield Served(url, port, service)
    finally:
        service.stop(20)
