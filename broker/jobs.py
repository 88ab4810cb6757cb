"""The job model shared by the API and the broker: statuses, legal transitions, the record, derived names.

This module is the one place where the lifecycle lives. The API validates requests into a `JobSpec`; the store
keeps `JobRecord`s and refuses any transition not listed in `TRANSITIONS`; the broker moves jobs along it.
Everything here is pure (no Redis, no Kubernetes) so every part can import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    WAITING_QUOTA = "waiting_quota"
    ADMITTED = "admitted"
    SUBMITTED = "submitted"
    RUNNING = "running"
    RESTARTING = "restarting"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


S = JobStatus
TERMINAL: frozenset[JobStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
#: States in which the job holds (or is about to hold) an object on the cluster.
ON_CLUSTER: frozenset[JobStatus] = frozenset({S.SUBMITTED, S.RUNNING, S.RESTARTING, S.SUSPENDED})
#: States a cancel finishes at once, because no object can exist yet.
CANCEL_AT_ONCE: frozenset[JobStatus] = frozenset({S.QUEUED, S.WAITING_QUOTA})
RETRYABLE: frozenset[JobStatus] = frozenset({S.FAILED, S.CANCELLED})

_CLUSTER_PROGRESS = {S.RUNNING, S.RESTARTING, S.SUSPENDED, S.SUCCEEDED, S.FAILED, S.CANCELLING}

#: from-state -> the states it may move to. Anything else is an illegal transition.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.QUEUED: frozenset({S.WAITING_QUOTA, S.ADMITTED, S.FAILED, S.CANCELLED}),
    # waiting_quota -> a cluster state: in Kueue mode the object exists while it waits (suspended) and moves on
    # when Kueue admits it; a cancel then goes through the broker (`cancelling`), which deletes the object.
    S.WAITING_QUOTA: frozenset({S.ADMITTED, S.QUEUED, S.FAILED, S.CANCELLED} | _CLUSTER_PROGRESS | {S.SUBMITTED}),
    # admitted -> waiting_quota: the cluster's own ResourceQuota refused what our ledger allowed.
    S.ADMITTED: frozenset({S.SUBMITTED, S.WAITING_QUOTA, S.FAILED, S.CANCELLING}),
    S.SUBMITTED: frozenset(_CLUSTER_PROGRESS),
    S.RUNNING: frozenset(_CLUSTER_PROGRESS - {S.RUNNING}),
    S.RESTARTING: frozenset(_CLUSTER_PROGRESS - {S.RESTARTING}),
    S.SUSPENDED: frozenset(_CLUSTER_PROGRESS - {S.SUSPENDED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),  # retry
    S.CANCELLED: frozenset({S.QUEUED}),  # retry
}


def cancels_at_once(status: JobStatus, cluster_object: str | None) -> bool:
    """A cancel that needs no cluster call: the job waits and no object of it exists (in Kueue mode a waiting job
    has a suspended object, which the broker's cancel deletes)."""
    return status in CANCEL_AT_ONCE and not cluster_object


def now_iso(epoch_s: float | None = None) -> str:
    """The system's one timestamp format: UTC with milliseconds, e.g. `2026-11-29T04:36:00.123Z`."""
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(stamp: str) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp (with or without fractions), None when it is not one."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    except ValueError:
        return None


FRAMEWORKS = ("nemo", "hf", "meta")
DEFAULT_IMAGE = "ghcr.io/deepfinery/trainer:latest"

#: Label and annotation prefix owned by this system; users may not set keys under it.
LABEL_PREFIX = "training-broker.io/"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "training-broker"

#: Environment variables the system sets in every replica; a request's `env` may not override them.
RESERVED_ENV = frozenset(
    {
        "FRAMEWORK",
        "RUN_ID",
        "MODEL_ID",
        "NUM_NODES",
        "GPUS_PER_NODE",
        "CHECKPOINT_BASE_URI",
        "CHECKPOINT_PREFIX",
        "DATASET_URI",
        "LOGS_URI",
        "CONFIG_URI",
        "CONFIG_PATH",
        "RESUME_FROM_CHECKPOINT",
        "TRAINING_EXTRA_ARGS_JSON",
        "TRAINER_ATTEMPT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "TRAINER_WORK_DIR",
    }
)
RESERVED_ENV_PREFIXES = ("MASTER_", "PET_")


def is_reserved_env(key: str) -> bool:
    return key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES)


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A validated `TrainingJobRequest`, with defaults applied. Fields match the request's JSON names."""

    framework: str
    model_id: str
    run_id: str
    checkpoint_base_uri: str
    dataset_uri: str
    namespace: str
    job_name: str
    image: str = DEFAULT_IMAGE
    num_nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_node: int = 8
    memory_per_node_gb: int = 32
    config_path: str | None = None
    resume_from_checkpoint: bool = False
    extra_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    #: `{"max_attempts": n, "backoff_s": s}` from the request; None uses the namespace's default.
    recovery: dict[str, Any] | None = None
    #: Kueue LocalQueue (admission mode `kueue`); None uses the namespace's default.
    queue: str | None = None

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def checkpoint_prefix(self) -> str:
        return run_prefix(self.checkpoint_base_uri, self.run_id, self.framework)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _view(self) -> dict[str, Any]:
        """The fields as a dict without copying their values (for serialising only: `asdict` deep-copies, which
        cost more than the rest of a submission's hashing and storing)."""
        return {f.name: getattr(self, f.name) for f in _SPEC_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(**{k: v for k, v in data.items() if k in _SPEC_NAMES})

    def spec_hash(self) -> str:
        """A stable hash of everything that defines the job; equal requests hash equal. Optional fields left unset
        are not part of it, so adding one never changes the hash of requests that do not use it."""
        data = {k: v for k, v in self._view().items() if not (k in _OPTIONAL_UNHASHED and v is None)}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_SPEC_FIELDS = dataclasses.fields(JobSpec)
_SPEC_NAMES = frozenset(f.name for f in _SPEC_FIELDS)
_OPTIONAL_UNHASHED = frozenset({"recovery", "queue"})


def run_prefix(checkpoint_base_uri: str, run_id: str, framework: str) -> str:
    """`<base>/<run_id>/framework=<framework>`: the run's root, with `checkpoints/ logs/ config/` under it."""
    return f"{checkpoint_base_uri.rstrip('/')}/{run_id}/framework={framework}"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The storage layout of one run, as the broker hands it to the trainer (its flags) and the API reads it."""

    prefix: str

    @property
    def logs(self) -> str:
        return f"{self.prefix}/logs"

    @property
    def config(self) -> str:
        return f"{self.prefix}/config"

    @property
    def progress(self) -> str:
        return f"{self.logs}/progress.json"

    @property
    def failure(self) -> str:
        """The trainer's record of why an attempt failed (`trainer.failure`)."""
        return f"{self.logs}/failure.json"


@dataclasses.dataclass
class JobRecord:
    """What the store keeps per job. `status` and the timestamps change only through the store's transition."""

    name: str
    spec: JobSpec
    status: JobStatus = JobStatus.QUEUED
    detail: str = ""
    attempt: int = 1
    created_at: str = ""
    updated_at: str = ""
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: When the job last entered `queued` or `waiting_quota`: the FIFO order of admission.
    enqueued_at: str = ""
    cluster_object: str | None = None
    spec_hash: str = ""
    #: An automatic recovery's attempt is not submitted before this time (ISO, UTC); empty otherwise.
    not_before: str | None = None
    #: Why the previous attempt failed and whether it was recovered (`broker.recovery`), for the status.
    last_failure: str | None = None
    #: The job's place in its namespace's line while it waits (JSON of `broker.queue.QueueInfo`), else empty.
    queue_info: str | None = None
    #: The tenant that submitted the job ("" on records from before tenants: the implicit tenant `default`).
    tenant: str = ""

    @property
    def owner(self) -> str:
        return self.tenant or "default"

    @property
    def framework(self) -> str:
        return self.spec.framework

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def checkpoint_prefix(self) -> str:
        return self.spec.checkpoint_prefix

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.checkpoint_prefix)

    @property
    def resume(self) -> bool:
        """Attempts after the first always resume from the latest checkpoint."""
        return self.spec.resume_from_checkpoint or self.attempt > 1

    def object_name(self, attempt: int | None = None) -> str:
        return object_name(self.name, self.attempt if attempt is None else attempt)

    def to_redis(self) -> dict[str, str]:
        """Flat string fields for a Redis hash (`spec` as JSON, empty string for None)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "spec":
                out["spec"] = json.dumps(value._view(), sort_keys=True)
            else:
                out[f.name] = "" if value is None else str(value)
        return out

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> JobRecord:
        def opt(key: str) -> str | None:
            return raw.get(key) or None

        return cls(
            name=raw["name"],
            spec=JobSpec.from_dict(json.loads(raw["spec"])),
            status=JobStatus(raw["status"]),
            detail=raw.get("detail", ""),
            attempt=int(raw.get("attempt", "1")),
            created_at=raw.get("created_at", ""),
            updated_at=raw.get("updated_at", ""),
            submitted_at=opt("submitted_at"),
            started_at=opt("started_at"),
            finished_at=opt("finished_at"),
            enqueued_at=raw.get("enqueued_at", ""),
            cluster_object=opt("cluster_object"),
            spec_hash=raw.get("spec_hash", ""),
            not_before=opt("not_before"),
            last_failure=opt("last_failure"),
            queue_info=opt("queue_info"),
            tenant=raw.get("tenant", ""),
        )


# --- names ---------------------------------------------------------------------------------------------------

DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Longest job name: leaves room for the `-r<attempt>` suffix of retried attempts' objects within 63 characters.
MAX_JOB_NAME = 56


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_job_name(framework: str, run_id: str) -> str:
    """A deterministic DNS-1035 name from framework and run id.

    The run id is lower-cased and every run of other characters becomes `-`. When that loses information (case,
    `_`, `.`) or the name would be too long, a short hash of the run id is appended, so two run ids never share a
    name.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    name = f"{framework}-{slug}" if slug else framework
    if slug == run_id and len(name) <= MAX_JOB_NAME:
        return name
    suffix = _short_hash(run_id)
    head = name[: MAX_JOB_NAME - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def object_name(job_name: str, attempt: int) -> str:
    """The PyTorchJob name of one attempt: the job name for the first, `<name>-r<attempt>` after."""
    if attempt <= 1:
        return job_name
    suffix = f"-r{attempt}"
    return f"{job_name[: 63 - len(suffix)].rstrip('-')}{suffix}"
