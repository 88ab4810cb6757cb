"""Fuzzed bodies: schemathesis (its own virtualenv, `make fuzz-venv`) generates requests from the API's
`/openapi.json`, and hypothesis mutates one field of a valid request at a time into any JSON value. No answer may be
a 5xx; every 4xx for a mutated field must be JSON naming that field (or the request is accepted)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import REPO_ROOT
from devstack.s3 import S3Server
from reliability.load import HEADERS, job_body
from reliability.stack import TOKEN, Stack
from reliability.table import Row

FUZZ_BIN = REPO_ROOT / ".venv-fuzz" / "bin" / "schemathesis"
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=80))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                     max_size=4), max_leaves=8)
FIELDS = sorted(job_body("x", 0)) + ["extra_args", "env", "labels", "annotations", "resume_from_checkpoint"]


def hypothesis_run(url: str, examples: int, problems: list[str]) -> int:
    sent = 0

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(field=st.sampled_from(FIELDS), value=JSON, i=st.integers(0, 10**6))
    def one(field: str, value: Any, i: int) -> None:
        nonlocal sent
        body = job_body("fuzz", i)
        body[field] = value
        answer = requests.post(f"{url}/train", data=json.dumps(body), headers=HEADERS, timeout=15)
        sent += 1
        if answer.status_code >= 500:
            problems.append(f"{answer.status_code} for {field}={value!r}")
        elif answer.status_code >= 400:
            try:
                error = answer.json()["error"]
            except (ValueError, KeyError, TypeError):
                problems.append(f"{answer.status_code} without a JSON error for {field}={value!r}")
                return
            named = field in (error.get("fields") or {}) or field in error.get("message", "")
            if answer.status_code == 400 and not named:
                problems.append(f"400 for {field}={value!r} does not name {field}: {error}")

    one()
    return sent


def schemathesis_run(url: str, seconds: int, log: Path, problems: list[str]) -> str:
    if not FUZZ_BIN.exists():
        problems.append("schemathesis is not installed: run `make fuzz-venv`")
        return "not run"
    argv = [str(FUZZ_BIN), "run", f"{url}/openapi.json", "-H", f"X-TRAINER-TOKEN: {TOKEN}",
            "--checks", "not_a_server_error", "--max-time", str(seconds)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        problems.append(f"schemathesis found failures (exit {done.returncode}); see {log}")
    summary = [line.strip() for line in done.stdout.splitlines() if "generated" in line.lower() or "passed" in line]
    return summary[-1] if summary else f"exit {done.returncode}"


#: Requests the full run must send in all (the issue's 10,000: schemathesis' generated cases plus hypothesis' bodies).
FULL_REQUESTS = 10_000


def generated(summary: str) -> int:
    """The cases schemathesis generated, from its summary line ("4708 generated, 4708 passed"); 0 when absent."""
    found = re.search(r"(\d+) generated", summary)
    return int(found.group(1)) if found else 0


def run(workdir: Path, quick: bool) -> Row:
    # Full: schemathesis generated ~20 cases a second here (4,708 in 240 s), so 480 s and 3,000 hypothesis bodies
    # make more than FULL_REQUESTS; the run checks that they did.
    examples, seconds = (300, 45) if quick else (3000, 480)
    start = time.monotonic()
    row = Row("fuzzed bodies", f"schemathesis {seconds} s + hypothesis {examples} mutated bodies")
    s3 = S3Server().start()  # progress and logs routes read the run's storage: a real S3 endpoint over HTTP
    try:
        s3.client().create_bucket(Bucket="reliability")
        with Stack(workdir / "fuzz", env=s3.env()) as stack:
            stack.start_api()
            stack.start_worker()  # a dry run is answered by a worker (render + the cluster's dryRun=All)
            sent = hypothesis_run(stack.api_url, examples, row.problems)
            summary = schemathesis_run(stack.api_url, seconds, stack.workdir / "schemathesis.log", row.problems)
    finally:
        s3.stop()
    row.faults = "—"
    row.notes.append(f"hypothesis sent {sent} bodies; schemathesis: {summary}")
    total = sent + generated(summary)
    row.notes.append(f"{total} requests in all")
    if not quick and total < FULL_REQUESTS:
        row.problems.append(f"{total} requests sent, fewer than the full run's {FULL_REQUESTS}")
    row.elapsed_s = time.monotonic() - start
    return row
