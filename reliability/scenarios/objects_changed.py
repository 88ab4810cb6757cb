"""Objects changed behind the broker: running jobs' PyTorchJobs deleted by hand, relabelled (so they are someone
else's), or their status rewritten by hand; and foreign objects already holding the names of jobs about to be
submitted. Vanished jobs must fail with a clear detail after the grace cycles; relabelled and foreign objects must
never be adopted or deleted; rewritten statuses must reach Redis; untouched jobs must keep running."""

from __future__ import annotations

import copy
from pathlib import Path

from broker.jobs import default_job_name
from broker.render import JOB_LABEL
from reliability.checks import census, records
from reliability.load import job_body, post_all
from reliability.scenarios.common import Clock, fill, post, wait_settled
from reliability.stack import Stack, settle
from reliability.table import Row

GRACE = 3
FOREIGN_LABELS = {"app.kubernetes.io/managed-by": "someone-else", "team": "research"}


def run(workdir: Path, quick: bool) -> Row:
    n = 30 if quick else 100
    part = n // 5
    clock = Clock()
    row = Row("objects changed behind the broker", f"{n} running jobs + {part} names taken by foreign objects")
    with Stack(workdir / "objects-changed", env={"TRAINER_VANISHED_GRACE_CYCLES": str(GRACE)}) as stack:
        stack.start_api()
        stack.start_worker(concurrency=4)
        stack.start_beat()
        load = post(stack, "changed", n)
        names = list(load.accepted.values())
        settle_s = wait_settled(stack, names, 120)
        emu = stack.emulator
        for name in names:
            emu.set_condition("rel", name, "Running")
        settle(lambda: all(r.status == "running" for r in records(stack, names).values()), 60)
        deleted, relabelled, rewritten = names[:part], names[part:2 * part], names[2 * part:3 * part]
        untouched = names[3 * part:]
        for name in deleted:
            emu.remove("rel", name)
        before = {}
        for name in relabelled:
            obj = emu.get("rel", name)
            assert obj is not None
            emu.relabel("rel", name, FOREIGN_LABELS)
            before[name] = emu.get("rel", name)
        for i, name in enumerate(rewritten):
            emu.set_condition("rel", name, "Failed" if i % 2 else "Succeeded", message="rewritten by hand")
        # Foreign objects named like jobs not posted yet: those jobs must fail, the objects stay as they were.
        template = copy.deepcopy(before[relabelled[0]]) if relabelled else None
        foreign_bodies = [job_body("foreign", i) for i in range(part)]
        foreign_names = [default_job_name("meta", b["run_id"]) for b in foreign_bodies]
        if template is not None:
            for name in foreign_names:
                obj = copy.deepcopy(template)
                obj["metadata"] = {"name": name, "namespace": "rel", "labels": dict(FOREIGN_LABELS)}
                emu.put(obj)
        foreign_load = post_all(stack.api_url, foreign_bodies)

        def expected() -> bool:
            found = records(stack, names + foreign_names)
            return (all(found[n].status == "failed" for n in deleted + relabelled + foreign_names if n in found)
                    and all(found[n].status in ("succeeded", "failed") for n in rewritten)
                    and len(found) == len(names) + len(foreign_names))

        changed_settle = settle(expected, 60)
        found = records(stack, names + foreign_names)
        problems = row.problems
        for name in deleted + relabelled:
            detail = found[name].detail
            if found[name].status != "failed" or "vanished" not in detail or f"{GRACE} status syncs" not in detail:
                problems.append(f"{name}: {found[name].status} ({detail}), expected failed: vanished")
        for name in relabelled:
            if emu.get("rel", name) != before[name]:
                problems.append(f"{name}: the relabelled object was changed or deleted")
        for name in foreign_names:
            record, obj = found.get(name), emu.get("rel", name)
            if record is None or record.status != "failed" or "not created by this system" not in record.detail:
                problems.append(f"{name}: {record and record.status} ({record and record.detail}), expected failed")
            if obj is None or (obj["metadata"].get("labels") or {}).get(JOB_LABEL):
                problems.append(f"{name}: the foreign object was deleted or adopted")
        for i, name in enumerate(rewritten):
            want = "failed" if i % 2 else "succeeded"
            if found[name].status != want:
                problems.append(f"{name}: {found[name].status}, expected {want} (status rewritten by hand)")
        for name in untouched:
            if found[name].status != "running":
                problems.append(f"{name}: {found[name].status}, expected running (untouched)")
        deletes = [e for e in emu.requests if e.verb == "delete" and e.name in set(relabelled + foreign_names)]
        if deletes:
            problems.append(f"{len(deletes)} delete requests for objects that are not the broker's")
        count = census(stack, names, allow_failed=True, object_may_vanish=True)
        fill(row, load, count, settle_s)
        row.accepted = f"{count.accepted} + {len(foreign_load.accepted)}"
        row.faults = (f"{len(deleted)} deleted, {len(relabelled)} relabelled, {len(rewritten)} status rewritten, "
                      f"{len(foreign_names)} foreign objects")
        row.settle_s = changed_settle
        row.notes.append(f"grace {GRACE} cycles; vanished and foreign jobs failed with a detail; time to settle "
                         "counted from the changes")
    row.elapsed_s = clock.elapsed()
    return row
