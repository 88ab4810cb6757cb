"""The command lines of the local services, one place for each (the Makefile's targets start the same ones)."""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack.procs import BIN

API_APP = "api.app:create_app()"
CELERY_APP = "broker.celery_app"


def redis_argv(port: int, data_dir: Path, *, aof: bool = False, databases: int = 16) -> list[str]:
    """`redis-server` on loopback `port`: no snapshots; an append-only file (`everysec`) in `data_dir` with `aof`."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data_dir),
            "--databases", str(databases), *persistence]


def gunicorn_argv(port: int, *options: str, app: str = API_APP) -> list[str]:
    """gunicorn serving `app` (the API by default) on loopback `port`, with `options` before the app."""
    return [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", *options, app]


def celery_argv(command: str, *options: str) -> list[str]:
    """`celery -A broker.celery_app <command> <options>` (`worker`, `beat`, `flower`)."""
    return [str(BIN / "celery"), "-A", CELERY_APP, command, *options]


def worker_options(name: str, concurrency: int = 2, level: str = "info", *, heartbeat: bool = False) -> list[str]:
    """A worker's usual options: its node name, pool size, and no gossip or mingle (one worker needs neither)."""
    options = ["-l", level, "-c", str(concurrency), "-n", name, "--without-gossip", "--without-mingle"]
    return options if heartbeat else [*options, "--without-heartbeat"]


def moto_argv(port: int) -> list[str]:
    """moto's S3 server (`moto_server`) on loopback `port`."""
    return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
