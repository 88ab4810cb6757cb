"""The local backend's files on disk: where a job lives and how its JSON files are read and written.

`workdir/<namespace>/<name>/` holds `object.json` (the object as created), `state.json` (per replica: supervisor
pid, its start time, log and exit file names; the outcome once observed), `<replica>-<i>.log` and `.exit` files;
deleted jobs move to `workdir/<namespace>/.deleted/`. Only file reads and writes here, no processes: the API reads a
local job's replica logs through `log_files` (by way of `broker.backends.replica_logs`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from broker.backends.errors import ClusterError, Invalid

OBJECT_FILE = "object.json"
STATE_FILE = "state.json"
DELETED_DIR = ".deleted"


def job_dir(workdir: Path, namespace: str, name: str) -> Path:
    if "/" in name or "/" in namespace or name.startswith(".") or namespace.startswith("."):
        raise Invalid(f"invalid namespace/name {namespace}/{name}")
    return workdir / namespace / name


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ClusterError(f"corrupt local job file {path}: {exc}") from exc


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def log_files(workdir: Path, namespace: str, name: str) -> list[Path]:
    """The job's replica logs, Master first; empty when the job does not exist."""
    directory = job_dir(workdir, namespace, name)
    state = read_json(directory / STATE_FILE) or {}
    return [directory / r["log"] for r in state.get("replicas", [])]
