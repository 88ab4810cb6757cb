"""Every Redis key this system writes, in one place. Nothing else builds a key name.

All keys are under one prefix `p` (`TRAINER_REDIS_PREFIX`, `tb:` by default):

- `p job:<name>` hash: the job record (`JobRecord.to_redis()`) plus `sort_key`, `namespace`, `framework`, `run_id`.
- `p events:<name>` list of JSON events `{at, from, to, reason, attempt}`, oldest first.
- `p idx:all`, `p idx:status:<s>`, `p idx:framework:<f>`, `p idx:run_id:<r>`, `p idx:namespace:<n>`,
  `p idx:tenant:<t>`: sorted sets (score 0, ordered by member) of sort keys `<inverted created ms>|<name>`: ascending
  member order is newest first. A tenant's index also bounds its job count (`max_jobs`).
- `p finished` sorted set: name -> epoch ms when the job last entered a terminal status (retention purge).
- `p entered:<s>` sorted set: name -> epoch ms when the job entered status `s` (FIFO of `waiting_quota`, staleness
  of `queued`).
- `p quota:held:<ns>` hash `<job>#<attempt>` → GPUs reserved; `p quota:line:<ns>` sorted set of waiting jobs by
  when their attempt was queued (ms; after a recovery's backoff); `p quota:need:<ns>` hash job → GPUs it needs;
  `p quota:namespaces` set of the namespaces that ever asked for admission (the ledgers are found without scanning
  the keyspace).
- `p sync:lock` the periodic sync's lock (redis-py's `Lock`); `p sync:recent` set for half an interval when a
  cycle starts; `p sync:missing` hash `<job>#<attempt>` → sync cycles its object was missing; `p sync:nudged` hash
  job → when the sync last re-sent its task.
- `p recovery:due` sorted set: job → epoch ms when its automatic recovery's backoff ends (`broker.recovery`).
- `p dryrun:<token>` string: a dry run's parked request (JSON, short TTL); `p dryrun:<token>:answer` list: the
  broker's answer, which the API pops (`broker.dryrun`).
- `p readyz` a tiny string `/readyz` writes (with a TTL) to prove Redis accepts writes.

Lua scripts receive every key they touch as `KEYS` (the status indexes of a transition as one block per status,
in `STATUS_ORDER`), so no script builds a key name. All keys of one job live on one Redis (not Redis Cluster).
"""

from __future__ import annotations

import dataclasses
import functools

from broker.jobs import JobStatus

#: The order in which a transition script receives the per-status keys.
STATUS_ORDER: tuple[JobStatus, ...] = tuple(JobStatus)


def member(job: str, attempt: int) -> str:
    """`<job>#<attempt>`: one attempt of a job, as quota reservations and the sync's counters name it."""
    return f"{job}#{attempt}"


def parse_member(value: str) -> tuple[str, int]:
    job, _, attempt = value.rpartition("#")
    return job, int(attempt)


@dataclasses.dataclass(frozen=True)
class Keys:
    prefix: str = "tb:"

    def job(self, name: str) -> str:
        return f"{self.prefix}job:{name}"

    def events(self, name: str) -> str:
        return f"{self.prefix}events:{name}"

    def index(self, kind: str | None = None, value: str | None = None) -> str:
        """`idx:all` without arguments, else `idx:<kind>:<value>` (kind: status, framework, run_id, namespace,
        tenant)."""
        return f"{self.prefix}idx:all" if kind is None else f"{self.prefix}idx:{kind}:{value}"

    def status_index(self, status: JobStatus | str) -> str:
        return self.index("status", str(JobStatus(status)))

    def entered(self, status: JobStatus | str) -> str:
        return f"{self.prefix}entered:{JobStatus(status)}"

    def status_keys(self) -> list[str]:
        """Every status index, then every `entered` set, in `STATUS_ORDER`: the transition script's key block."""
        return list(self._status_keys)

    @functools.cached_property
    def _status_keys(self) -> tuple[str, ...]:  # built once: every transition sends it (a sync: thousands)
        return (*(self.status_index(s) for s in STATUS_ORDER), *(self.entered(s) for s in STATUS_ORDER))

    def quota(self, namespace: str) -> tuple[str, str, str]:
        """`(held, line, need)` of a namespace."""
        return (self.quota_key("held", namespace), self.quota_key("line", namespace),
                self.quota_key("need", namespace))

    @property
    def quota_namespaces(self) -> str:
        """The set of namespaces that ever asked for admission."""
        return f"{self.prefix}quota:namespaces"

    def quota_key(self, kind: str, namespace: str) -> str:
        """A namespace's `quota:<kind>:` key (kind: held, line or need)."""
        return f"{self.prefix}quota:{kind}:{namespace}"

    def quota_pattern(self, kind: str) -> str:
        """A SCAN pattern for every namespace's `quota:<kind>:` key (kind: held or line)."""
        return f"{self.prefix}quota:{kind}:*"

    def quota_namespace(self, kind: str, key: str) -> str:
        return key[len(f"{self.prefix}quota:{kind}:"):]

    @property
    def sync_lock(self) -> str:
        return f"{self.prefix}sync:lock"

    @property
    def sync_recent(self) -> str:
        """Set (for half an interval) when a cycle starts: beat's messages that a backlog delivered late skip."""
        return f"{self.prefix}sync:recent"

    @property
    def sync_missing(self) -> str:
        return f"{self.prefix}sync:missing"

    @property
    def sync_nudged(self) -> str:
        return f"{self.prefix}sync:nudged"

    @property
    def recovery_due(self) -> str:
        return f"{self.prefix}recovery:due"

    def dry_run_request(self, token: str) -> str:
        return f"{self.prefix}dryrun:{token}"

    def dry_run_answer(self, token: str) -> str:
        return f"{self.prefix}dryrun:{token}:answer"

    @property
    def finished(self) -> str:
        return f"{self.prefix}finished"

    @property
    def readyz(self) -> str:
        return f"{self.prefix}readyz"
