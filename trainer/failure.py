"""`logs/failure.json`: how a run's process ended badly, written where the broker reads it to decide on recovery.

`{"kind", "exit_code", "message", "attempt", "rank", "at"}` beside `logs/progress.json`. Kinds:

- `invalid_input` (exit 2): invalid settings or dataset. Another attempt would fail the same way: the broker does
  not recover it automatically.
- `error` (exit 1): anything else raised in training. Worth another attempt from the latest checkpoint.
- `terminated` (exit 143): SIGTERM (a cancel, a pod deleted or preempted).

A process killed outright (SIGKILL, a node lost) writes nothing; the broker then treats the failure as one another
attempt can fix. `attempt` comes from `TRAINER_ATTEMPT`, which the broker sets on every replica, so a file left by an
earlier attempt is never read as this one's. Rank 0 writes the file, except for `invalid_input`, which any rank does
(a dataset error may surface on one rank only). Writing is best effort: a store that cannot be reached loses the
file, never the exit status.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from trainer.config import now_iso

FAILURE_FILE = "failure.json"
INVALID_INPUT, ERROR, TERMINATED = "invalid_input", "error", "terminated"
EXIT_CODES = {INVALID_INPUT: 2, ERROR: 1, TERMINATED: 143}


def logs_uri_from_env(environ: Mapping[str, str]) -> str:
    """Where the logs go when the settings could not be parsed: `LOGS_URI`, else `<CHECKPOINT_PREFIX>/logs`."""
    if environ.get("LOGS_URI"):
        return environ["LOGS_URI"]
    prefix = environ.get("CHECKPOINT_PREFIX", "")
    return f"{prefix.rstrip('/')}/logs" if prefix else ""


def record_failure(kind: str, message: str, logs_uri: str, environ: Mapping[str, str]) -> bool:
    """Write `logs_uri/failure.json` (see the module docstring). True when written."""
    rank = int(environ.get("RANK") or 0) if (environ.get("RANK") or "0").isdigit() else 0
    if not logs_uri or (rank != 0 and kind != INVALID_INPUT):
        return False
    attempt_raw = environ.get("TRAINER_ATTEMPT", "")
    body = {
        "kind": kind,
        "exit_code": EXIT_CODES[kind],
        "message": message[:2000],
        "attempt": int(attempt_raw) if attempt_raw.isdigit() else None,
        "rank": rank,
        "at": now_iso(),
    }
    try:
        from trainer.storage import storage_for

        uri = f"{logs_uri.rstrip('/')}/{FAILURE_FILE}"
        storage_for(uri).put_bytes((json.dumps(body, sort_keys=True) + "\n").encode(), uri)
    except Exception as exc:  # noqa: BLE001 - best effort: the exit status still tells the operator
        print(f"train.py: could not record the failure kind: {exc}", file=sys.stderr)
        return False
    return True
