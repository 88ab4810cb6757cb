"""Tenants: who may run what, where, and how their pods run. Pure configuration, shared by the API and the broker.

`TRAINER_TENANTS` (JSON, not secret; the tokens live apart, in the API's `TRAINER_TENANT_TOKENS`):

    {"team-a": {"namespaces": ["team-a"], "storage_roots": ["s3://team-a-runs", "s3://datasets/team-a"],
                "quotas": {"team-a": {"gpus": 16, "jobs": 4}}, "max_jobs": 2000,
                "allow_root": false, "run_as_user": 10001, "service_account": "team-a-trainer"}}

- `namespaces`: where the tenant's jobs may run (required). A request for another one is 403.
- `storage_roots`: URI prefixes (`s3://bucket[/prefix]`, `/abs/path`, `file:///abs/path`) that `checkpoint_base_uri`
  and `dataset_uri` must lie in, segment by segment (required). `/progress` and `/logs` read only inside the job's
  own prefix under them.
- `quotas`: per namespace of the tenant; a namespace without a quota (here or in `TRAINER_QUOTAS`) admits nothing.
- `max_jobs`: job records the tenant may hold (finished ones count until the retention removes them).
- Pods: restricted by default (`runAsNonRoot`, no privilege escalation, every capability dropped, the runtime's
  seccomp profile, no Kubernetes API token). `allow_root: true` lifts only `runAsNonRoot` for images that must run
  as root; `service_account` names the pod's service account (cloud identity such as IRSA or Workload Identity),
  its API token still not mounted.

Without `TRAINER_TENANTS` the deployment is one tenant, `default`, with `TRAINER_ALLOWED_NAMESPACES` (empty: any)
and `TRAINER_STORAGE_ROOTS` (empty: any) — what a single-token deployment always did.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

DEFAULT_TENANT = "default"
DEFAULT_MAX_JOBS = 10_000


class TenantConfigError(ValueError):
    """`TRAINER_TENANTS` holds something the broker cannot use."""


@dataclasses.dataclass(frozen=True)
class TenantQuota:
    gpus: int
    jobs: int


@dataclasses.dataclass(frozen=True)
class Tenant:
    name: str
    namespaces: tuple[str, ...] = ()
    """Empty means any namespace (the implicit single tenant only)."""
    storage_roots: tuple[str, ...] = ()
    """Empty means any location (the implicit single tenant only)."""
    quotas: dict[str, TenantQuota] = dataclasses.field(default_factory=dict)
    max_jobs: int = DEFAULT_MAX_JOBS
    allow_root: bool = False
    run_as_user: int | None = None
    service_account: str | None = None
    configured: bool = True
    """False for the implicit tenant of a deployment without `TRAINER_TENANTS`."""

    def allows_namespace(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def allows_uri(self, uri: str) -> bool:
        return not self.storage_roots or any(within(uri, root) for root in self.storage_roots)


def within(uri: str, root: str) -> bool:
    """True when `uri` is `root` or lies under it, segment by segment (`s3://b/team` does not hold `s3://b/teamx`).

    Both are compared as given after removing a trailing `/`: the API normalises request URIs and refuses `..`."""
    uri, root = _plain(uri.rstrip("/")), _plain(root.rstrip("/"))
    return uri == root or uri.startswith(root + "/")


def _plain(uri: str) -> str:
    return uri.removeprefix("file://") if uri.startswith("file:///") else uri


def parse_tenants(raw: str) -> dict[str, Tenant]:
    """`TRAINER_TENANTS` as tenants by name. Raises TenantConfigError naming what is wrong."""
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise TenantConfigError(f"TRAINER_TENANTS is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise TenantConfigError("TRAINER_TENANTS must be a JSON object of tenants by name")
    tenants = {name: _tenant(str(name), spec) for name, spec in data.items()}
    owner: dict[str, str] = {}
    for tenant in tenants.values():
        for namespace in tenant.quotas:
            if namespace in owner:
                raise TenantConfigError(f"namespace {namespace!r} has a quota in tenants {owner[namespace]!r} and "
                                        f"{tenant.name!r}: a namespace's quota belongs to one tenant")
            owner[namespace] = tenant.name
    return tenants


def _strings(spec: dict[str, Any], key: str, tenant: str) -> tuple[str, ...]:
    values = spec.get(key)
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise TenantConfigError(f"tenant {tenant!r}: {key} must be a non-empty list of strings")
    return tuple(values)


def _tenant(name: str, spec: Any) -> Tenant:
    if not isinstance(spec, dict):
        raise TenantConfigError(f"tenant {name!r} must be a JSON object")
    unknown = set(spec) - ({f.name for f in dataclasses.fields(Tenant)} - {"name", "configured"})
    if unknown:
        raise TenantConfigError(f"tenant {name!r}: unknown keys {sorted(unknown)}")
    namespaces = _strings(spec, "namespaces", name)
    roots = _strings(spec, "storage_roots", name)
    if any(not r.startswith(("s3://", "/", "file:///")) or "/../" in f"{r}/" for r in roots):
        raise TenantConfigError(f"tenant {name!r}: storage_roots must be s3://, /absolute or file:/// URIs")
    try:
        quotas = {ns: TenantQuota(int(q["gpus"]), int(q["jobs"])) for ns, q in (spec.get("quotas") or {}).items()}
        max_jobs = int(spec.get("max_jobs", DEFAULT_MAX_JOBS))
        run_as_user = None if spec.get("run_as_user") is None else int(spec["run_as_user"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise TenantConfigError(f"tenant {name!r}: quotas/max_jobs/run_as_user are not valid: {exc}") from exc
    outside = set(quotas) - set(namespaces)
    if outside:
        raise TenantConfigError(f"tenant {name!r}: quotas for namespaces it may not use: {sorted(outside)}")
    account = spec.get("service_account")
    if account is not None and not isinstance(account, str):
        raise TenantConfigError(f"tenant {name!r}: service_account must be a string")
    return Tenant(name, namespaces, roots, quotas, max_jobs, bool(spec.get("allow_root", False)), run_as_user,
                  account or None)


def implicit_tenant(namespaces: tuple[str, ...], storage_roots: tuple[str, ...]) -> Tenant:
    """The one tenant of a deployment without `TRAINER_TENANTS`."""
    return Tenant(DEFAULT_TENANT, namespaces, storage_roots, configured=False)


def pod_security(tenant: Tenant | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec fields, container securityContext) for a tenant's training pods. Restricted unless relaxed."""
    tenant = tenant or Tenant(DEFAULT_TENANT)
    pod_context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    container: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                 "privileged": False}
    if not tenant.allow_root:
        pod_context["runAsNonRoot"] = True
        container["runAsNonRoot"] = True
    if tenant.run_as_user is not None:
        pod_context["runAsUser"] = tenant.run_as_user
    pod: dict[str, Any] = {"automountServiceAccountToken": False, "securityContext": pod_context}
    if tenant.service_account:
        pod["serviceAccountName"] = tenant.service_account
    return pod, container
