"""The broker's settings, read once from the environment. Every knob the worker, beat and store use lives here."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import NoDecode

from broker.envsettings import Csv, EnvSettings, Integer, OptionalText, csv, from_text, whole_number
from broker.errors import SettingsError
from broker.launch_policy import parse_env_allow
from broker.tenants import DEFAULT_TENANT, Tenant, TenantConfigError, implicit_tenant, parse_tenants

__all__ = ["BrokerSettings", "Quota", "SettingsError"]


def _default_backend(env: Mapping[str, str]) -> str:
    """`kubernetes` when a cluster configuration is found, else the embedded `local` backend."""
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
    kubeconfig = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return "kubernetes" if in_cluster or Path(kubeconfig).is_file() else "local"


@dataclasses.dataclass(frozen=True)
class Quota:
    gpus: int
    jobs: int


@dataclasses.dataclass(frozen=True)
class Recovery:
    """Automatic recovery: `max_attempts` in all (the first included; 1 = none), `backoff_s` before each new one."""

    max_attempts: int = 1
    backoff_s: float = 60.0


AdmissionMode = Literal["builtin", "kueue"]
ADMISSION_MODES: tuple[str, ...] = typing.get_args(AdmissionMode)


_WORKDIR = str(Path.home() / ".local" / "state" / "training-broker" / "jobs")


def _ttl(raw: str) -> int | None:
    """Unset or empty keeps finished objects."""
    return whole_number(raw) if raw else None


def _with_password(url: str, password: str | None) -> str:
    """`url` with `password` in its user info, unless it already holds one (or there is none to add)."""
    parts = urlsplit(url)
    if not password or parts.password is not None or "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))


def _tenants(env: Mapping[str, str]) -> dict[str, Tenant]:
    raw = env.get("TRAINER_TENANTS", "").strip()
    if not raw:
        namespaces, roots = csv(env.get("TRAINER_ALLOWED_NAMESPACES", "")), csv(env.get("TRAINER_STORAGE_ROOTS", ""))
        return {DEFAULT_TENANT: implicit_tenant(namespaces, roots)}
    try:
        return parse_tenants(raw)
    except TenantConfigError as exc:
        raise SettingsError(str(exc)) from exc


def _quotas(raw: str | None, tenants: dict[str, Tenant], *, builtin_default: bool = True) -> dict[str, Quota]:
    """Namespace quotas: `TRAINER_QUOTAS`, then each tenant's own. The built-in `default` (64 GPUs, 20 jobs) exists
    only for a deployment without tenants; with tenants an unlisted namespace admits nothing."""
    quotas = {"default": Quota(gpus=64, jobs=20)} if builtin_default else {}
    try:
        data: Any = json.loads(raw) if raw else {}
        for namespace, limits in data.items():
            quotas[namespace] = Quota(gpus=int(limits["gpus"]), jobs=int(limits["jobs"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        example = '{"default": {"gpus": 64, "jobs": 20}}'
        raise SettingsError(f"TRAINER_QUOTAS must be JSON like {example}: {exc}") from exc
    for tenant in tenants.values():
        quotas.update({ns: Quota(gpus=q.gpus, jobs=q.jobs) for ns, q in tenant.quotas.items()})
    return quotas


def _recovery(raw: str) -> dict[str, Recovery]:
    policies = {"default": Recovery()}
    if not raw:
        return policies
    try:
        data: Any = json.loads(raw)
        for namespace, policy in data.items():
            parsed = Recovery(max_attempts=int(policy.get("max_attempts", 1)),
                              backoff_s=float(policy.get("backoff_s", Recovery.backoff_s)))
            if parsed.max_attempts < 1 or parsed.backoff_s < 0:
                raise ValueError("max_attempts must be at least 1 and backoff_s not negative")
            policies[namespace] = parsed
    except (ValueError, TypeError, AttributeError) as exc:
        example = '{"default": {"max_attempts": 3, "backoff_s": 60}}'
        raise SettingsError(f"TRAINER_RECOVERY must be JSON like {example}: {exc}") from exc
    return policies


def _kueue_queues(raw: str) -> dict[str, str]:
    queues = {"default": "default"}
    if not raw:
        return queues
    try:
        data: Any = json.loads(raw)
        for namespace, queue in data.items():
            if not isinstance(queue, str) or not queue:
                raise ValueError(f"the queue of {namespace!r} must be a non-empty string")
            queues[namespace] = queue
    except (ValueError, TypeError, AttributeError) as exc:
        raise SettingsError(f'TRAINER_KUEUE_QUEUES must be JSON like {{"default": "user-queue"}}: {exc}') from exc
    return queues


class BrokerSettings(EnvSettings):
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    """REDIS_URL: job records, events, quota ledger, and the Celery broker and result store."""
    redis_password: OptionalText = Field(None, validation_alias="REDIS_PASSWORD")
    """REDIS_PASSWORD: Redis' password, added to REDIS_URL when that holds none (the kustomize base and
    docker-compose set it from the operator's secrets)."""
    key_prefix: str = Field("tb:", validation_alias="TRAINER_REDIS_PREFIX")
    """TRAINER_REDIS_PREFIX: prefix of every key the job store writes."""
    cluster_backend: str = Field("local", validation_alias="TRAINER_CLUSTER_BACKEND")
    """TRAINER_CLUSTER_BACKEND: `kubernetes` or `local` (default: kubernetes when a cluster config exists)."""
    namespace: str = Field("default", validation_alias="TRAINER_NAMESPACE")
    """TRAINER_NAMESPACE: namespace of jobs whose request names none."""
    sync_interval_s: float = Field(10.0, validation_alias="TRAINER_SYNC_INTERVAL_S")
    """TRAINER_SYNC_INTERVAL_S: how often beat syncs cluster status, admits waiting jobs and re-enqueues stale ones."""
    quotas: Annotated[dict[str, Quota], NoDecode] = Field(
        default_factory=lambda: {"default": Quota(gpus=64, jobs=20)}, validation_alias="TRAINER_QUOTAS")
    """TRAINER_QUOTAS: JSON `{"default": {"gpus": 64, "jobs": 20}, "<namespace>": {...}}`."""
    submit_max_retries: Integer = Field(5, validation_alias="TRAINER_SUBMIT_MAX_RETRIES")
    """TRAINER_SUBMIT_MAX_RETRIES: retries of one cluster call (create, delete, read quota) on a transient error
    (unreachable, timeout, 429, 5xx) before it gives up; the broker's only retry layer (Celery does not retry tasks).
    A submit that gives up fails the job; a cancel stays `cancelling` and the sync sends it again."""
    submit_backoff_s: float = Field(1.0, validation_alias="TRAINER_SUBMIT_BACKOFF_S")
    """TRAINER_SUBMIT_BACKOFF_S: first backoff delay; doubles each retry, with jitter (a delay is in [d/2, d]), never
    below the server's Retry-After."""
    submit_backoff_max_s: float = Field(60.0, validation_alias="TRAINER_SUBMIT_BACKOFF_MAX_S")
    """TRAINER_SUBMIT_BACKOFF_MAX_S: cap on one backoff delay. Worst case of one cluster call: (retries + 1) ×
    TRAINER_KUBE_TIMEOUT_S + the sum of the delays = 211 s with the defaults; a submit task makes at most four such
    calls (844 s)."""
    vanished_grace_cycles: Integer = Field(3, validation_alias="TRAINER_VANISHED_GRACE_CYCLES")
    """TRAINER_VANISHED_GRACE_CYCLES: sync cycles a submitted job's object may be missing before it is failed."""
    requeue_after_s: float = Field(60.0, validation_alias="TRAINER_REQUEUE_AFTER_S")
    """TRAINER_REQUEUE_AFTER_S: a job still `queued` after this long is enqueued again."""
    local_workdir: Annotated[str, NoDecode, from_text(lambda raw: raw or _WORKDIR)] = Field(
        _WORKDIR, validation_alias="TRAINER_LOCAL_WORKDIR")
    """TRAINER_LOCAL_WORKDIR: the local backend's jobs (state, replica logs); the worker and the API must share it."""
    local_terminate_grace_s: float = Field(10.0, validation_alias="TRAINER_LOCAL_TERMINATE_GRACE_S")
    """TRAINER_LOCAL_TERMINATE_GRACE_S: local backend: seconds between SIGTERM and SIGKILL when a job is deleted."""
    job_backoff_limit: Integer = Field(3, validation_alias="TRAINER_JOB_BACKOFF_LIMIT")
    """TRAINER_JOB_BACKOFF_LIMIT: the PyTorchJob's `runPolicy.backoffLimit` (pod restarts before it fails)."""
    job_clean_pod_policy: Literal["None", "Running", "All"] = Field(
        "Running", validation_alias="TRAINER_JOB_CLEAN_POD_POLICY")
    """TRAINER_JOB_CLEAN_POD_POLICY: `runPolicy.cleanPodPolicy` — `None`, `Running` or `All`."""
    job_ttl_s: Annotated[int | None, NoDecode, from_text(_ttl)] = Field(
        None, validation_alias="TRAINER_JOB_TTL_S")
    """TRAINER_JOB_TTL_S: `runPolicy.ttlSecondsAfterFinished`; unset keeps finished objects (history is in Redis)."""
    kubeconfig: OptionalText = Field(None, validation_alias="KUBECONFIG")
    """KUBECONFIG: kubeconfig file(s) of the `kubernetes` backend outside a cluster (default `~/.kube/config`); when
    the file exists the backend defaults to `kubernetes`."""
    kube_request_timeout_s: float = Field(30.0, validation_alias="TRAINER_KUBE_TIMEOUT_S")
    """TRAINER_KUBE_TIMEOUT_S: timeout of one Kubernetes API request (connect + read)."""
    kube_list_page_size: Integer = Field(500, validation_alias="TRAINER_KUBE_LIST_PAGE_SIZE")
    """TRAINER_KUBE_LIST_PAGE_SIZE: `limit` of one LIST page; the sync follows `continue` to the end."""
    visibility_timeout_s: Integer = Field(3600, validation_alias="TRAINER_VISIBILITY_TIMEOUT_S")
    """TRAINER_VISIBILITY_TIMEOUT_S: Redis transport visibility timeout — an unacknowledged task (its worker died)
    is delivered again after this long. Must exceed the longest task, a submit with all its retries (844 s with the
    defaults; the worker warns at start when it does not)."""
    flower_basic_auth: OptionalText = Field(None, validation_alias="FLOWER_BASIC_AUTH")
    """FLOWER_BASIC_AUTH: `user:password[,user2:password2]`; Flower refuses to start without it, or with a user
    or password that is empty, a password shorter than 12 characters, of fewer than 5 distinct characters, equal
    to the user, or a known demo or placeholder value."""
    tenants: Annotated[dict[str, Tenant], NoDecode] = Field(
        default_factory=lambda: {DEFAULT_TENANT: Tenant(DEFAULT_TENANT, configured=False)},
        validation_alias="TRAINER_TENANTS")
    """TRAINER_TENANTS: JSON tenants by name — namespaces, storage roots, quotas, pod settings (see
    `broker/tenants.py` and docs/DEPLOYMENT.md); unset: one tenant `default`."""
    allowed_namespaces: Csv = Field((), validation_alias="TRAINER_ALLOWED_NAMESPACES")
    """TRAINER_ALLOWED_NAMESPACES: without TRAINER_TENANTS, comma-separated namespaces requests may use; empty allows
    any valid name."""
    storage_roots: Csv = Field((), validation_alias="TRAINER_STORAGE_ROOTS")
    """TRAINER_STORAGE_ROOTS: without TRAINER_TENANTS, comma-separated URI prefixes runs may use (empty: any)."""
    env_allow: Annotated[tuple[str, ...], NoDecode, from_text(parse_env_allow)] = Field(
        parse_env_allow(None), validation_alias="TRAINER_ENV_ALLOW")
    """TRAINER_ENV_ALLOW: comma-separated names or patterns (`*`) a request's `env` may set; interpreter, loader,
    shell and system names are refused whatever it says (default: HF/W&B/NCCL/OMP names, `APP_*`, `USER_*`)."""
    local_replica_env: Csv = Field((), validation_alias="TRAINER_LOCAL_REPLICA_ENV")
    """TRAINER_LOCAL_REPLICA_ENV: local backend: comma-separated names or patterns of the worker's environment that
    replicas inherit besides PATH, HOME, locale, PYTHONPATH and HF offline settings (e.g. a development S3's keys)."""
    job_retention_s: Integer = Field(7 * 24 * 3600, validation_alias="TRAINER_JOB_RETENTION_S")
    """TRAINER_JOB_RETENTION_S: finished jobs (and their events) are removed this long after they finished."""
    recovery: Annotated[dict[str, Recovery], NoDecode, from_text(_recovery)] = Field(
        default_factory=lambda: {"default": Recovery()}, validation_alias="TRAINER_RECOVERY")
    """TRAINER_RECOVERY: JSON `{"default": {"max_attempts": 1, "backoff_s": 60}, "<namespace>": {...}}` — automatic
    recovery of requests that carry no `recovery` field (1 attempt = no automatic recovery)."""
    admission: AdmissionMode = Field("builtin", validation_alias="TRAINER_ADMISSION")
    """TRAINER_ADMISSION: `builtin` (the broker's own quota and line) or `kueue` (suspended PyTorchJobs that Kueue
    admits)."""
    kueue_queues: Annotated[dict[str, str], NoDecode, from_text(_kueue_queues)] = Field(
        default_factory=lambda: {"default": "default"}, validation_alias="TRAINER_KUEUE_QUEUES")
    """TRAINER_KUEUE_QUEUES: JSON `{"default": "default", "<namespace>": "<LocalQueue>"}` — the Kueue LocalQueue of
    requests that name no `queue`."""

    def quota_for(self, namespace: str) -> Quota:
        """The namespace's quota; a namespace without one (and no explicit `default`) admits nothing."""
        return self.quotas.get(namespace) or self.quotas.get("default") or Quota(gpus=0, jobs=0)

    @property
    def tenants_configured(self) -> bool:
        """Tenants come from `TRAINER_TENANTS` (not the implicit single tenant)."""
        return any(t.configured for t in self.tenants.values())

    def has_quota(self, namespace: str) -> bool:
        return namespace in self.quotas or "default" in self.quotas

    def recovery_for(self, namespace: str) -> Recovery:
        return self.recovery.get(namespace) or self.recovery["default"]

    def kueue_queue_for(self, namespace: str) -> str:
        return self.kueue_queues.get(namespace) or self.kueue_queues["default"]

    @property
    def worst_case_call_s(self) -> float:
        """The longest one retried cluster call can take: every try times out, every delay is its ceiling (a
        Retry-After above the cap adds its excess)."""
        delays = sum(min(self.submit_backoff_max_s, self.submit_backoff_s * 2**i)
                     for i in range(self.submit_max_retries))
        return (self.submit_max_retries + 1) * self.kube_request_timeout_s + delays

    @property
    def worst_case_task_s(self) -> float:
        """The longest task: a submit reads the ResourceQuota, deletes the previous attempt's object, creates its
        own and, when cancelled meanwhile, deletes it: four retried calls."""
        return 4 * self.worst_case_call_s

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerSettings:
        """The settings `environ` (default `os.environ`) sets; the Redis URL, backend, tenants and quotas are
        derived from several variables."""
        env = dict(os.environ if environ is None else environ)
        tenants = _tenants(env)
        url = env.get("REDIS_URL", cls.model_fields["redis_url"].default)
        return cls.read_env(
            env,
            redis_url=_with_password(url, env.get("REDIS_PASSWORD")),
            cluster_backend=env.get("TRAINER_CLUSTER_BACKEND") or _default_backend(env),
            quotas=_quotas(env.get("TRAINER_QUOTAS"), tenants, builtin_default=not env.get("TRAINER_TENANTS")),
            tenants=tenants,
        )
