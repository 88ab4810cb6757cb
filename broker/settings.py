"""The broker's settings, read once from the environment. Every knob the worker, beat and store use lives here."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from broker.errors import SettingsError
from broker.launch_policy import parse_env_allow
from broker.tenants import DEFAULT_TENANT, Tenant, TenantConfigError, implicit_tenant, parse_tenants

__all__ = ["BrokerSettings", "Quota", "SettingsError"]


def _int(env: dict[str, str], key: str, default: int) -> int:
    try:
        return int(env.get(key, default))
    except ValueError as exc:
        raise SettingsError(f"{key} must be an integer, got {env[key]!r}") from exc


def _float(env: dict[str, str], key: str, default: float) -> float:
    try:
        return float(env.get(key, default))
    except ValueError as exc:
        raise SettingsError(f"{key} must be a number, got {env[key]!r}") from exc


def _choice(env: dict[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(key, default)
    if value not in allowed:
        raise SettingsError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _default_backend(env: dict[str, str]) -> str:
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


ADMISSION_MODES = ("builtin", "kueue")


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    """REDIS_URL: job records, events, quota ledger, and the Celery broker and result store."""
    redis_password: str | None = None
    """REDIS_PASSWORD: Redis' password, added to REDIS_URL when that holds none (the kustomize base and
    docker-compose set it from the operator's secrets)."""
    key_prefix: str = "tb:"
    """TRAINER_REDIS_PREFIX: prefix of every key the job store writes."""
    cluster_backend: str = "local"
    """TRAINER_CLUSTER_BACKEND: `kubernetes` or `local` (default: kubernetes when a cluster config exists)."""
    namespace: str = "default"
    """TRAINER_NAMESPACE: namespace of jobs whose request names none."""
    sync_interval_s: float = 10.0
    """TRAINER_SYNC_INTERVAL_S: how often beat syncs cluster status, admits waiting jobs and re-enqueues stale ones."""
    quotas: dict[str, Quota] = dataclasses.field(default_factory=lambda: {"default": Quota(gpus=64, jobs=20)})
    """TRAINER_QUOTAS: JSON `{"default": {"gpus": 64, "jobs": 20}, "<namespace>": {...}}`."""
    submit_max_retries: int = 5
    """TRAINER_SUBMIT_MAX_RETRIES: retries of one cluster call (create, delete, read quota) on a transient error
    (unreachable, timeout, 429, 5xx) before it gives up; the broker's only retry layer (Celery does not retry tasks).
    A submit that gives up fails the job; a cancel stays `cancelling` and the sync sends it again."""
    submit_backoff_s: float = 1.0
    """TRAINER_SUBMIT_BACKOFF_S: first backoff delay; doubles each retry, with jitter (a delay is in [d/2, d]), never
    below the server's Retry-After."""
    submit_backoff_max_s: float = 60.0
    """TRAINER_SUBMIT_BACKOFF_MAX_S: cap on one backoff delay. Worst case of one cluster call: (retries + 1) ×
    TRAINER_KUBE_TIMEOUT_S + the sum of the delays = 211 s with the defaults; a submit task makes at most four such
    calls (844 s)."""
    vanished_grace_cycles: int = 3
    """TRAINER_VANISHED_GRACE_CYCLES: sync cycles a submitted job's object may be missing before it is failed."""
    requeue_after_s: float = 60.0
    """TRAINER_REQUEUE_AFTER_S: a job still `queued` after this long is enqueued again."""
    local_workdir: str = str(Path.home() / ".local" / "state" / "training-broker" / "jobs")
    """TRAINER_LOCAL_WORKDIR: the local backend's jobs (state, replica logs); the worker and the API must share it."""
    local_terminate_grace_s: float = 10.0
    """TRAINER_LOCAL_TERMINATE_GRACE_S: local backend: seconds between SIGTERM and SIGKILL when a job is deleted."""
    job_backoff_limit: int = 3
    """TRAINER_JOB_BACKOFF_LIMIT: the PyTorchJob's `runPolicy.backoffLimit` (pod restarts before it fails)."""
    job_clean_pod_policy: str = "Running"
    """TRAINER_JOB_CLEAN_POD_POLICY: `runPolicy.cleanPodPolicy` — `None`, `Running` or `All`."""
    job_ttl_s: int | None = None
    """TRAINER_JOB_TTL_S: `runPolicy.ttlSecondsAfterFinished`; unset keeps finished objects (history is in Redis)."""
    kubeconfig: str | None = None
    """KUBECONFIG: kubeconfig file(s) of the `kubernetes` backend outside a cluster (default `~/.kube/config`); when
    the file exists the backend defaults to `kubernetes`."""
    kube_request_timeout_s: float = 30.0
    """TRAINER_KUBE_TIMEOUT_S: timeout of one Kubernetes API request (connect + read)."""
    kube_list_page_size: int = 500
    """TRAINER_KUBE_LIST_PAGE_SIZE: `limit` of one LIST page; the sync follows `continue` to the end."""
    visibility_timeout_s: int = 3600
    """TRAINER_VISIBILITY_TIMEOUT_S: Redis transport visibility timeout — an unacknowledged task (its worker died)
    is delivered again after this long. Must exceed the longest task, a submit with all its retries (844 s with the
    defaults; the worker warns at start when it does not)."""
    flower_basic_auth: str | None = None
    """FLOWER_BASIC_AUTH: `user:password[,user2:password2]`; Flower refuses to start without it, or with a user
    or password that is empty, a password shorter than 12 characters, of fewer than 5 distinct characters, equal
    to the user, or a known demo or placeholder value."""
    tenants: dict[str, Tenant] = dataclasses.field(
        default_factory=lambda: {DEFAULT_TENANT: Tenant(DEFAULT_TENANT, configured=False)})
    """TRAINER_TENANTS: JSON tenants by name — namespaces, storage roots, quotas, pod settings (see
    `broker/tenants.py` and docs/DEPLOYMENT.md); unset: one tenant `default`."""
    allowed_namespaces: tuple[str, ...] = ()
    """TRAINER_ALLOWED_NAMESPACES: without TRAINER_TENANTS, comma-separated namespaces requests may use; empty allows
    any valid name."""
    storage_roots: tuple[str, ...] = ()
    """TRAINER_STORAGE_ROOTS: without TRAINER_TENANTS, comma-separated URI prefixes runs may use (empty: any)."""
    env_allow: tuple[str, ...] = parse_env_allow(None)
    """TRAINER_ENV_ALLOW: comma-separated names or patterns (`*`) a request's `env` may set; interpreter, loader,
    shell and system names are refused whatever it says (default: HF/W&B/NCCL/OMP names, `APP_*`, `USER_*`)."""
    local_replica_env: tuple[str, ...] = ()
    """TRAINER_LOCAL_REPLICA_ENV: local backend: comma-separated names or patterns of the worker's environment that
    replicas inherit besides PATH, HOME, locale, PYTHONPATH and HF offline settings (e.g. a development S3's keys)."""
    job_retention_s: int = 7 * 24 * 3600
    """TRAINER_JOB_RETENTION_S: finished jobs (and their events) are removed this long after they finished."""
    recovery: dict[str, Recovery] = dataclasses.field(default_factory=lambda: {"default": Recovery()})
    """TRAINER_RECOVERY: JSON `{"default": {"max_attempts": 1, "backoff_s": 60}, "<namespace>": {...}}` — automatic
    recovery of requests that carry no `recovery` field (1 attempt = no automatic recovery)."""
    admission: str = "builtin"
    """TRAINER_ADMISSION: `builtin` (the broker's own quota and line) or `kueue` (suspended PyTorchJobs that Kueue
    admits)."""
    kueue_queues: dict[str, str] = dataclasses.field(default_factory=lambda: {"default": "default"})
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
    def from_env(cls, environ: dict[str, str] | None = None) -> BrokerSettings:
        env = dict(os.environ if environ is None else environ)
        tenants = _tenants(env)
        return cls(
            redis_url=_with_password(env.get("REDIS_URL", cls.redis_url), env.get("REDIS_PASSWORD")),
            redis_password=env.get("REDIS_PASSWORD") or None,
            key_prefix=env.get("TRAINER_REDIS_PREFIX", cls.key_prefix),
            cluster_backend=env.get("TRAINER_CLUSTER_BACKEND") or _default_backend(env),
            namespace=env.get("TRAINER_NAMESPACE", cls.namespace),
            sync_interval_s=_float(env, "TRAINER_SYNC_INTERVAL_S", cls.sync_interval_s),
            quotas=_quotas(env.get("TRAINER_QUOTAS"), tenants, builtin_default=not env.get("TRAINER_TENANTS")),
            submit_max_retries=_int(env, "TRAINER_SUBMIT_MAX_RETRIES", cls.submit_max_retries),
            submit_backoff_s=_float(env, "TRAINER_SUBMIT_BACKOFF_S", cls.submit_backoff_s),
            submit_backoff_max_s=_float(env, "TRAINER_SUBMIT_BACKOFF_MAX_S", cls.submit_backoff_max_s),
            vanished_grace_cycles=_int(env, "TRAINER_VANISHED_GRACE_CYCLES", cls.vanished_grace_cycles),
            requeue_after_s=_float(env, "TRAINER_REQUEUE_AFTER_S", cls.requeue_after_s),
            local_workdir=env.get("TRAINER_LOCAL_WORKDIR") or cls.local_workdir,
            local_terminate_grace_s=_float(env, "TRAINER_LOCAL_TERMINATE_GRACE_S", cls.local_terminate_grace_s),
            job_backoff_limit=_int(env, "TRAINER_JOB_BACKOFF_LIMIT", cls.job_backoff_limit),
            job_clean_pod_policy=_choice(env, "TRAINER_JOB_CLEAN_POD_POLICY", cls.job_clean_pod_policy,
                                         ("None", "Running", "All")),
            job_ttl_s=_int(env, "TRAINER_JOB_TTL_S", 0) if env.get("TRAINER_JOB_TTL_S") else None,
            kubeconfig=env.get("KUBECONFIG") or None,
            kube_request_timeout_s=_float(env, "TRAINER_KUBE_TIMEOUT_S", cls.kube_request_timeout_s),
            kube_list_page_size=_int(env, "TRAINER_KUBE_LIST_PAGE_SIZE", cls.kube_list_page_size),
            visibility_timeout_s=_int(env, "TRAINER_VISIBILITY_TIMEOUT_S", cls.visibility_timeout_s),
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            recovery=_recovery(env.get("TRAINER_RECOVERY")),
            admission=_choice(env, "TRAINER_ADMISSION", cls.admission, ADMISSION_MODES),
            kueue_queues=_kueue_queues(env.get("TRAINER_KUEUE_QUEUES")),
            tenants=tenants,
            allowed_namespaces=_csv(env.get("TRAINER_ALLOWED_NAMESPACES")),
            storage_roots=_csv(env.get("TRAINER_STORAGE_ROOTS")),
            env_allow=parse_env_allow(env.get("TRAINER_ENV_ALLOW")),
            local_replica_env=_csv(env.get("TRAINER_LOCAL_REPLICA_ENV")),
            job_retention_s=_int(env, "TRAINER_JOB_RETENTION_S", cls.job_retention_s),
        )


def _with_password(url: str, password: str | None) -> str:
    """`url` with `password` in its user info, unless it already holds one (or there is none to add)."""
    parts = urlsplit(url)
    if not password or parts.password is not None or "@" in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


def _tenants(env: dict[str, str]) -> dict[str, Tenant]:
    raw = env.get("TRAINER_TENANTS", "").strip()
    if not raw:
        namespaces, roots = _csv(env.get("TRAINER_ALLOWED_NAMESPACES")), _csv(env.get("TRAINER_STORAGE_ROOTS"))
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


def _recovery(raw: str | None) -> dict[str, Recovery]:
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


def _kueue_queues(raw: str | None) -> dict[str, str]:
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
