"""The Redis job store: job records, their event history and the indexes that list them.

Every state change of every job goes through `JobStore.transition` (or its batch form `transition_many`): one Lua
script that checks the move against `broker.jobs.TRANSITIONS` and the caller's expectations, writes the status and
timestamps, moves the job between index sets and appends the event, atomically. `create` is one Lua script too, so
two identical concurrent submissions create one job. `get_many` loads many records in one round trip.

The key scheme is `broker.keys`'s; the errors are `broker.errors`'s. Redis being down surfaces as
`redis.exceptions.ConnectionError`; callers decide what that means (the API answers 503).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from broker.errors import IllegalTransition, JobConflict, JobNotFound, StaleTransition, StoreError, TooManyJobs
from broker.jobs import TERMINAL, TRANSITIONS, JobRecord, JobStatus, now_iso
from broker.keys import STATUS_ORDER, Keys
from broker.store_scripts import CLAIM_DUE, CREATE, LIST_PAGE, TRANSITION, TRANSITION_AND_DUE, UPDATE

__all__ = ["Change", "IllegalTransition", "JobConflict", "JobNotFound", "JobStore", "StaleTransition", "StoreError",
           "TooManyJobs"]

# --- time and cursors -----------------------------------------------------------------------------------------

_SORT_MAX_MS = 10**13 - 1


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def _sort_key(created_ms: int, name: str) -> str:
    return f"{_SORT_MAX_MS - created_ms:013d}|{name}"


def encode_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key inside an opaque cursor. Raises ValueError for anything the store did not hand out."""
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    head, sep, name = key.partition("|")
    if not (sep and len(head) == 13 and head.isdigit() and name):
        raise ValueError("invalid cursor")
    return key


#: Fields only the store writes; `update` and `transition(**fields)` refuse them.
_PROTECTED = frozenset(
    {"name", "spec", "spec_hash", "status", "created_at", "updated_at", "sort_key", "namespace", "framework", "run_id",
     "tenant"}
)
_TERMINAL_CSV = ",".join(sorted(TERMINAL))
_STATUS_ORDER_CSV = ",".join(STATUS_ORDER)
#: Index members one listing script call examines at most (bounds how long one call holds Redis).
_LIST_BUDGET = 5000


def _sources(target: JobStatus) -> str:
    return ",".join(sorted(src for src, dsts in TRANSITIONS.items() if target in dsts))


def _pairs(raw: Any) -> dict[str, str]:
    """A Lua HGETALL reply (flat list) as a dict."""
    items = list(raw)
    return dict(zip(items[::2], items[1::2], strict=True))


def _flat(fields: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in fields.items():
        out += [key, "" if value is None else str(value)]
    return out


@dataclasses.dataclass(frozen=True)
class Change:
    """One requested transition, for `transition_many`. Same meaning as `JobStore.transition`'s arguments."""

    name: str
    to: JobStatus
    reason: str
    expect_from: frozenset[JobStatus] | None = None
    expect_attempt: int | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: When given, the same step adds the job to `recovery:due` at this epoch ms (only if the move is made).
    due_ms: int | None = None


class JobStore:
    """Job records, events and indexes in Redis. `redis_client` must use `decode_responses=True`."""

    def __init__(self, redis_client: redis.Redis, prefix: str = "tb:") -> None:
        if not redis_client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("JobStore needs a Redis client created with decode_responses=True")
        self.redis = redis_client
        self.keys = Keys(prefix)
        self._create = redis_client.register_script(CREATE)
        self._transition = redis_client.register_script(TRANSITION)
        self._transition_and_due = redis_client.register_script(TRANSITION_AND_DUE)
        self._claim_due = redis_client.register_script(CLAIM_DUE)
        self._update = redis_client.register_script(UPDATE)
        self._list_page = redis_client.register_script(LIST_PAGE)

    # --- create and read ---------------------------------------------------------------------------------------

    def create(self, record: JobRecord, max_jobs: int | None = None) -> tuple[JobRecord, bool]:
        """Store a new `queued` job, atomically. Returns `(record, True)` when created, `(existing, False)` when a
        job of that name exists with the same spec hash; raises `JobConflict(existing)` when its spec differs.

        Status, timestamps and spec hash of `record` are set here; the first event is `created` (→ queued).
        Raises `TooManyJobs` when the record's tenant already holds `max_jobs` records.
        """
        epoch = time.time()
        now, now_ms = now_iso(epoch), _ms(epoch)
        record = dataclasses.replace(
            record,
            status=JobStatus.QUEUED,
            created_at=now,
            updated_at=now,
            enqueued_at=now,
            detail=record.detail or "queued",
            spec_hash=record.spec_hash or record.spec.spec_hash(),
        )
        sort_key = _sort_key(now_ms, record.name)
        fields = record.to_redis() | {
            "sort_key": sort_key,
            "namespace": record.namespace,
            "framework": record.framework,
            "run_id": record.run_id,
            "tenant": record.owner,
        }
        event = {"at": now, "from": None, "to": "queued", "reason": "created", "attempt": record.attempt}
        k = self.keys
        keys = [
            k.job(record.name),
            k.events(record.name),
            k.index(),
            k.status_index(JobStatus.QUEUED),
            k.index("framework", record.framework),
            k.index("run_id", record.run_id),
            k.index("namespace", record.namespace),
            k.entered(JobStatus.QUEUED),
            k.index("tenant", record.owner),
        ]
        cap = -1 if max_jobs is None else max_jobs
        args: list[Any] = [record.spec_hash, sort_key, now_ms, json.dumps(event), record.name, cap, *_flat(fields)]
        outcome, raw = self._create(keys=keys, args=args)
        if outcome == "created":
            return dataclasses.replace(record, tenant=record.owner), True
        if outcome == "full":
            raise TooManyJobs(record.owner, cap)
        existing = JobRecord.from_redis(_pairs(raw))
        if outcome == "exists":
            return existing, False
        raise JobConflict(existing)

    def get(self, name: str) -> JobRecord | None:
        raw = self.redis.hgetall(self.keys.job(name))
        return JobRecord.from_redis(raw) if raw else None  # type: ignore[arg-type]

    def get_many(self, names: Iterable[str]) -> list[JobRecord | None]:
        """The records of `names` in one round trip, in order (None where a job does not exist)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.job(name))
        return [JobRecord.from_redis(raw) if raw else None for raw in pipe.execute()]

    def status_many(self, names: Iterable[str]) -> list[tuple[JobStatus, int] | None]:
        """`(status, attempt)` of `names` in one round trip, in order (None where a job does not exist), without
        reading or parsing whole records (what the sync's quota reconciliation needs, for every held reservation)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.keys.job(name), "status", "attempt")
        return [(JobStatus(status), int(attempt or 1)) if status else None for status, attempt in pipe.execute()]

    def load(self, names: Iterable[str]) -> list[JobRecord]:
        """The records of `names` that exist, in one round trip."""
        return [record for record in self.get_many(names) if record is not None]

    def require(self, name: str) -> JobRecord:
        record = self.get(name)
        if record is None:
            raise JobNotFound(name)
        return record

    def events(self, name: str) -> list[dict[str, Any]]:
        """The job's transitions, oldest first: `{at, from, to, reason, attempt}` each."""
        return [json.loads(item) for item in self.redis.lrange(self.keys.events(name), 0, -1)]  # type: ignore[union-attr]

    # --- state changes -----------------------------------------------------------------------------------------

    def transition(
        self,
        name: str,
        to: JobStatus | str,
        *,
        reason: str,
        expect_from: Iterable[JobStatus | str] | None = None,
        expect_attempt: int | None = None,
        due_ms: int | None = None,
        **fields: Any,
    ) -> JobRecord:
        """Move job `name` to `to`, atomically, and append the event. The one way any status changes.

        The move must be in `TRANSITIONS`; when given, the current status must be in `expect_from` and the current
        attempt equal `expect_attempt`. `detail` becomes `reason` unless given in `fields`; other `fields` (such as
        `cluster_object`) are written too. Timestamps follow the target: `submitted_at`, `started_at` (first
        `running` only), `finished_at` (terminal), `enqueued_at` (`queued`, `waiting_quota`). A retry (`failed` or
        `cancelled` → `queued`) increments `attempt` and clears the previous attempt's timestamps and object.

        With `due_ms`, the same atomic step puts the job into `recovery:due` at that time (an automatic recovery's
        backoff, `broker.recovery`), and only when the move is made.

        Raises JobNotFound, IllegalTransition (not in the state machine) or StaleTransition (expectation not met).
        """
        change = Change(name, JobStatus(to), reason, _statuses(expect_from), expect_attempt, fields, due_ms)
        result = self._run_transition(change, self.redis)
        return self._transition_result(change, result)

    def transition_many(self, changes: Sequence[Change]) -> list[JobRecord | StoreError]:
        """Apply many transitions in one pipeline (one round trip); each is atomic on its own.

        Returns, per change in order, the new record or the `StoreError` that refused it.
        """
        if not changes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for change in changes:
            self._run_transition(change, pipe)
        results = pipe.execute()
        out: list[JobRecord | StoreError] = []
        for change, result in zip(changes, results, strict=True):
            try:
                out.append(self._transition_result(change, result))
            except StoreError as exc:
                out.append(exc)
        return out

    def update(self, name: str, **fields: Any) -> JobRecord:
        """Write non-status fields (such as `detail` while waiting for quota) without a transition or an event."""
        refused = _PROTECTED.intersection(fields) | ({"enqueued_at", "attempt"} & fields.keys())
        if refused:
            raise ValueError(f"update cannot write {sorted(refused)}; use transition")
        if not fields:
            return self.require(name)
        result = self._update(keys=[self.keys.job(name)], args=[now_iso(), *_flat(fields)])
        if result[0] == "missing":
            raise JobNotFound(name)
        return JobRecord.from_redis(_pairs(result[1]))

    def _run_transition(self, change: Change, client: Any) -> Any:
        refused = _PROTECTED.intersection(change.fields)
        if refused:
            raise ValueError(f"transition cannot write {sorted(refused)}")
        to = JobStatus(change.to)
        epoch = time.time()
        fields = dict(change.fields)
        detail = fields.pop("detail", None)
        args = [
            change.name,
            to.value,
            now_iso(epoch),
            _ms(epoch),
            change.reason,
            _sources(to),
            "*" if change.expect_from is None else ",".join(sorted(JobStatus(s) for s in change.expect_from)),
            "" if change.expect_attempt is None else change.expect_attempt,
            _TERMINAL_CSV,
            _STATUS_ORDER_CSV,
            *_flat(fields),
        ]
        if detail is not None:
            args += ["detail", str(detail)]
        keys = [self.keys.job(change.name), self.keys.events(change.name), *self.keys.status_keys(), self.keys.finished]
        if change.due_ms is not None:
            return self._transition_and_due(keys=[*keys, self.keys.recovery_due], args=[*args, change.due_ms],
                                            client=client)
        return self._transition(keys=keys, args=args, client=client)

    @staticmethod
    def _transition_result(change: Change, result: Any) -> JobRecord:
        if isinstance(result, Exception):
            raise result
        outcome = result[0]
        if outcome == "ok":
            return JobRecord.from_redis(_pairs(result[1]))
        if outcome == "missing":
            raise JobNotFound(change.name)
        current, attempt = JobStatus(result[1]), int(result[2])
        if outcome == "illegal":
            raise IllegalTransition(change.name, current, change.to, attempt)
        why = f"job {change.name!r} is {current} (attempt {attempt}), not as expected for the move to {change.to}"
        raise StaleTransition(change.name, current, change.to, attempt, why)

    # --- listing and the broker's queries ----------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        framework: str | None = None,
        run_id: str | None = None,
        namespace: str | None = None,
        tenant: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first (by creation time, then name), filtered; returns `(page, next_cursor or None)`.

        The filters' index sets are intersected inside Redis (the smallest one scanned, the others probed), so only
        the records of the page are read, whatever the number of filters. Raises ValueError for a cursor this
        store did not hand out.
        """
        given = {"status": status, "framework": framework, "run_id": run_id, "namespace": namespace, "tenant": tenant}
        wanted = {k: str(v) for k, v in given.items() if v is not None}
        limit = max(1, limit)
        indexes = [self.keys.index(kind, value) for kind, value in wanted.items()] or [self.keys.index()]
        start = "(" + decode_cursor(cursor) if cursor else "-"
        keys: list[str] = []
        while len(keys) <= limit:
            found, resume = self._list_page(keys=indexes, args=[start, limit + 1 - len(keys), _LIST_BUDGET])
            keys.extend(found)
            if not resume:
                break
            start = "(" + resume
        shown = keys[:limit]
        records = self.get_many(key.partition("|")[2] for key in shown)
        page = [rec for rec in records if rec is not None and _matches(rec, wanted)]
        more = len(keys) > limit
        return page, encode_cursor(shown[-1]) if more else None

    def names_in(self, *statuses: JobStatus | str) -> list[str]:
        """Names of jobs in any of `statuses`, in the order they entered it (FIFO: for `waiting_quota` that is the
        order of `enqueued_at`)."""
        pipe = self.redis.pipeline(transaction=False)
        for status in statuses:
            pipe.zrange(self.keys.entered(status), 0, -1, withscores=True)
        entries = [(score, name) for result in pipe.execute() for name, score in result]
        return [name for _, name in sorted(entries)]

    def by_namespace(self, *statuses: JobStatus | str) -> dict[str, list[str]]:
        """Names of jobs in any of `statuses`, grouped by namespace (one LIST per namespace for the status sync)."""
        names = self.names_in(*statuses)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.keys.job(name), "namespace")
        grouped: dict[str, list[str]] = {}
        for name, namespace in zip(names, pipe.execute(), strict=True):
            if namespace is not None:
                grouped.setdefault(namespace, []).append(name)
        return grouped

    def stale_queued(self, older_than_s: float) -> list[str]:
        """Jobs `queued` for more than `older_than_s` (or since their last `mark_requeued`), oldest first."""
        cutoff = _ms(time.time() - older_than_s)
        return list(self.redis.zrangebyscore(self.keys.entered(JobStatus.QUEUED), "-inf", cutoff))  # type: ignore[arg-type]

    def mark_requeued(self, names: Iterable[str]) -> None:
        """Restart the staleness clock of queued jobs just re-enqueued, so each is re-sent at most once per
        `older_than_s`. Their `enqueued_at` stays; `names_in(QUEUED)` orders them by this clock from now on."""
        now_ms = _ms(time.time())
        mapping = {name: now_ms for name in names}
        if mapping:
            self.redis.zadd(self.keys.entered(JobStatus.QUEUED), mapping, xx=True)

    def claim_due(self, now_ms: int | None = None) -> list[str]:
        """Take the names whose recovery backoff is over out of `recovery:due`, atomically: each name goes to one
        caller only, however many race."""
        due = _ms(time.time()) if now_ms is None else now_ms
        return list(self._claim_due(keys=[self.keys.recovery_due], args=[due]))

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (for metrics)."""
        pipe = self.redis.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(self.keys.status_index(status))
        return {status.value: int(n) for status, n in zip(JobStatus, pipe.execute(), strict=True)}


def _statuses(values: Iterable[JobStatus | str] | None) -> frozenset[JobStatus] | None:
    return None if values is None else frozenset(JobStatus(v) for v in values)


def _matches(record: JobRecord, wanted: dict[str, str]) -> bool:
    actual = {"status": record.status.value, "framework": record.framework, "run_id": record.run_id,
              "namespace": record.namespace, "tenant": record.owner}
    return all(actual[key] == value for key, value in wanted.items())
