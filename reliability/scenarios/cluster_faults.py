"""Cluster faults: 30 % of Kubernetes calls answer 429 (with Retry-After), 500, 503, time out or drop the
connection (before or after the server acted). Each job must be created exactly once; the measured gap after a
429 must be at least its Retry-After; no job may fail while it had retries left."""

from __future__ import annotations

from pathlib import Path

from reliability.checks import census
from reliability.scenarios.common import Clock, fill, orphans, post, wait_settled
from reliability.stack import Stack
from reliability.table import Row
from tests.support.k8s_chaos import Chaos

RETRY_AFTER_S = 1.0
MAX_RETRIES = 8


SURE_429 = 3


def retry_gaps(stack: Stack) -> tuple[int, float | None]:
    """How many retries followed a 429 on a create, and the smallest `gap − Retry-After` among them (seconds;
    the gap runs from the moment the emulator started writing the 429 — before which no client can have read it —
    to the moment the next create of that object arrived)."""
    by_object: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    for entry in list(stack.emulator.requests):
        if entry.verb == "create":
            by_object.setdefault((entry.namespace, entry.name), []).append(entry)
    margins = []
    for entries in by_object.values():
        for first, second in zip(entries, entries[1:], strict=False):
            if first.code == 429 and first.sent is not None:
                margins.append(second.at - first.sent - RETRY_AFTER_S)
    return len(margins), min(margins) if margins else None


def failed_with_retries_left(stack: Stack, names: list[str]) -> list[str]:
    """Failed jobs whose last MAX_RETRIES + 1 creates were not all faulted by the emulator."""
    from reliability.checks import records

    failed = [r for r in records(stack, names).values() if r.status == "failed"]
    creates: dict[str, list] = {}  # type: ignore[type-arg]
    for entry in list(stack.emulator.requests):
        if entry.verb == "create":
            creates.setdefault(entry.name, []).append(entry)
    out = []
    for record in failed:
        tries = creates.get(record.object_name(), [])[-(MAX_RETRIES + 1):]
        if len(tries) < MAX_RETRIES + 1 or any(t.fault is None for t in tries):
            out.append(f"{record.name} failed after {len(tries)} creates ({record.detail})")
    return out


def run(workdir: Path, quick: bool) -> Row:
    n = 40 if quick else 300
    clock = Clock()
    row = Row("cluster faults", f"{n} jobs, 30 % of Kubernetes calls faulted")
    env = {"TRAINER_KUBE_TIMEOUT_S": "1", "TRAINER_SUBMIT_MAX_RETRIES": str(MAX_RETRIES),
           "TRAINER_SUBMIT_BACKOFF_S": "0.05", "TRAINER_SUBMIT_BACKOFF_MAX_S": "0.5"}
    with Stack(workdir / "cluster-faults", env=env) as stack:
        chaos = Chaos(0.3, retry_after_s=RETRY_AFTER_S, timeout_s=1.5, seed=14)
        stack.emulator.chaos = chaos
        # Which calls the random faults hit depends on timing; the first creates answer 429 for certain, so every
        # run measures the gap after a Retry-After (the random ones add to it).
        stack.emulator.fail_next(SURE_429, 429, retry_after=RETRY_AFTER_S, verbs=("create",))
        stack.start_api()
        stack.start_worker(concurrency=4)
        stack.start_beat()
        load = post(stack, "faults", n)
        names = list(load.accepted.values())
        settle_s = wait_settled(stack, names, 120 if quick else 600)
        chaos.enabled = False
        count = census(stack, names)
        fill(row, load, count, settle_s)
        row.faults = (f"{chaos.total() + SURE_429} ({SURE_429} first creates 429, then "
                      f"{', '.join(f'{k}×{v}' for k, v in sorted(chaos.injected.items()))})")
        gaps, margin = retry_gaps(stack)
        row.notes.append(f"{gaps} retries after a 429 measured; smallest gap − Retry-After = "
                         + ("n/a" if margin is None else f"{margin * 1000:.0f} ms"))
        if margin is not None and margin < 0:
            row.problems.append(f"a retry came {-margin * 1000:.0f} ms before the 429's Retry-After had passed")
        if gaps == 0:
            row.problems.append("no 429 was followed by a retry: the Retry-After check measured nothing")
        row.problems += failed_with_retries_left(stack, names)
        row.problems += orphans(stack)
    row.elapsed_s = clock.elapsed()
    return row
