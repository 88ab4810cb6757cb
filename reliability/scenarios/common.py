"""What the broker scenarios share: posting a load, waiting for it to settle, counting, filling the row."""

from __future__ import annotations

import time
from typing import Any

from broker.render import JOB_LABEL
from reliability.checks import Census, records, unsettled
from reliability.load import LoadResult, job_body, post_all
from reliability.stack import Stack, settle
from reliability.table import Row


def post(stack: Stack, tag: str, n: int, **kwargs: Any) -> LoadResult:
    return post_all(stack.api_url, [job_body(tag, i) for i in range(n)], **kwargs)


def wait_settled(stack: Stack, names: list[str], timeout: float) -> float | None:
    return settle(lambda: not unsettled(stack, names), timeout)


def fill(row: Row, load: LoadResult, count: Census, settle_s: float | None) -> Row:
    row.accepted, row.exactly_once, row.duplicates = count.accepted, count.exactly_once, count.duplicates
    row.lost, row.stuck, row.settle_s = count.lost, count.stuck, settle_s
    row.problems += count.problems
    if load.refused:
        row.problems.append(f"{len(load.refused)} bodies never accepted (answers: {dict(load.answers)})")
    row.notes.append("answers " + ", ".join(f"{k}×{v}" for k, v in sorted(load.answers.items()))
                     + f"; final statuses {dict(count.by_status)}")
    return row


def orphans(stack: Stack) -> list[str]:
    """Objects on the cluster that no job tracks (a job failed or cancelled whose object was created after all)."""
    objects = stack.emulator.objects()
    names = [(o["metadata"].get("labels") or {}).get(JOB_LABEL, "") for o in objects]
    found = records(stack, [n for n in names if n])
    out = []
    for obj, name in zip(objects, names, strict=True):
        record = found.get(name)
        if record is None:
            continue
        if record.object_name() != obj["metadata"]["name"] or not record.submitted_at:
            out.append(f"{obj['metadata']['name']} is on the cluster, its job is {record.status} ({record.detail})")
    return out


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
