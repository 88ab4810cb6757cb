"""Who is calling, and what that caller may see and do. Tokens map to a tenant (or to the operator).

- `TRAINER_TENANT_TOKENS` (secret): JSON `{"<tenant>": ["token", "next-token"], …}` — several per tenant during a
  rotation. The tenants themselves (namespaces, storage roots, quotas) are `TRAINER_TENANTS` (`broker.tenants`).
- `TRAINER_OPERATOR_TOKEN` (secret, comma-separated): sees, cancels and retries every tenant's jobs; it submits as
  the tenant `default` when there is one.
- `TRAINER_API_TOKEN`: the tokens of the tenant `default` — a deployment without tenants is that one tenant, as
  before.

A tenant sees only its own jobs: another tenant's job answers 404 as if it did not exist, and a job name another
tenant holds answers 409 without any of that job's details. Every token is compared in constant time, always all of
them, whichever matches.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from typing import Any

from flask import current_app, g

from api.errors import ApiError
from broker.errors import JobNotFound
from broker.jobs import JobRecord, JobSpec
from broker.settings import BrokerSettings
from broker.tenants import DEFAULT_TENANT, Tenant


@dataclasses.dataclass(frozen=True)
class Caller:
    """The authenticated caller: a tenant, or the operator (`tenant` is then the one it submits as, if any)."""

    tenant: Tenant | None
    operator: bool = False

    def sees(self, record: JobRecord) -> bool:
        return self.operator or (self.tenant is not None and record.owner == self.tenant.name)

    @property
    def list_filter(self) -> str | None:
        """The tenant to list for (None: every job)."""
        return None if self.operator or self.tenant is None else self.tenant.name


class TokenTable:
    """Tokens → callers. `resolve` compares the given token with every configured one in constant time."""

    def __init__(self, entries: list[tuple[str, Caller]]) -> None:
        self.entries = [(token.encode(), caller) for token, caller in entries]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def resolve(self, given: str) -> Caller | None:
        raw = given.encode("utf-8", "surrogateescape")
        found: Caller | None = None
        for token, caller in self.entries:
            if hmac.compare_digest(raw, token) and found is None:
                found = caller
        return found


def build_tokens(
    broker: BrokerSettings,
    api_tokens: tuple[str, ...],
    tenant_tokens: dict[str, tuple[str, ...]],
    operator_tokens: tuple[str, ...],
) -> TokenTable:
    """The token table; raises ValueError for tokens of a tenant that is not configured, or one token for two."""
    entries: list[tuple[str, Caller]] = []
    by_tenant = {name: list(tokens) for name, tokens in tenant_tokens.items()}
    if api_tokens:
        by_tenant.setdefault(DEFAULT_TENANT, []).extend(api_tokens)
    for name, tokens in by_tenant.items():
        tenant = broker.tenants.get(name)
        if tenant is None:
            source = "TRAINER_API_TOKEN" if name == DEFAULT_TENANT else "TRAINER_TENANT_TOKENS"
            raise ValueError(f"{source} names tenant {name!r}, which TRAINER_TENANTS does not define")
        entries += [(token, Caller(tenant)) for token in tokens]
    operator = Caller(broker.tenants.get(DEFAULT_TENANT), operator=True)
    entries += [(token, operator) for token in operator_tokens]
    seen = [token for token, _ in entries]
    if len(set(seen)) != len(seen):
        raise ValueError("the same token is configured twice (for two tenants, or a tenant and the operator)")
    return TokenTable(entries)


def caller() -> Caller:
    """This request's caller (set by `api.auth`; with authentication disabled, the operator)."""
    found: Caller | None = g.get("caller")
    if found is None:
        broker = current_app.config["SETTINGS"].broker
        return Caller(broker.tenants.get(DEFAULT_TENANT), operator=True)
    return found


def visible(record: JobRecord | None, name: str) -> JobRecord:
    """`record` when this caller may see it; JobNotFound (404) otherwise, as if it did not exist."""
    if record is None or not caller().sees(record):
        raise JobNotFound(name)
    return record


def submitting_tenant() -> Tenant:
    who = caller()
    if who.tenant is None:
        raise ApiError(403, "forbidden", "the operator token submits only where a tenant named 'default' exists; "
                                         "submit with a tenant's token")
    return who.tenant


def check_spec(tenant: Tenant, spec: JobSpec, broker: BrokerSettings, multi_tenant: bool) -> None:
    """403 naming each field the tenant may not use: a namespace outside its set (or without a quota), storage
    outside its roots."""
    fields: dict[str, list[str]] = {}
    if not tenant.allows_namespace(spec.namespace):
        fields["namespace"] = [f"namespace {spec.namespace!r} is not one of tenant {tenant.name!r}'s: "
                               f"{', '.join(tenant.namespaces)}"]
    elif multi_tenant and not broker.has_quota(spec.namespace):
        fields["namespace"] = [f"namespace {spec.namespace!r} has no quota configured; ask the operator"]
    for key in ("checkpoint_base_uri", "dataset_uri"):
        if not tenant.allows_uri(getattr(spec, key)):
            fields[key] = [f"outside the storage roots of tenant {tenant.name!r}: {', '.join(tenant.storage_roots)}"]
    if fields:
        raise ApiError(403, "forbidden", "the request uses namespaces or storage this tenant may not use", fields)


def name_only_visible_ahead(views: list[dict[str, Any]], who: Caller,
                            load: Callable[[list[str]], list[JobRecord]]) -> None:
    """In each view's `queue`, keep in `ahead_jobs` only the jobs `who` may see: where tenants share a namespace,
    another tenant's jobs ahead are counted (`ahead`), never named. One batch load for all the views."""
    if who.operator:
        return
    named = sorted({n for view in views if view.get("queue") for n in view["queue"].get("ahead_jobs", [])})
    if not named:
        return
    visible = {record.name for record in load(named) if who.sees(record)}
    for view in views:
        if view.get("queue") and "ahead_jobs" in view["queue"]:
            view["queue"]["ahead_jobs"] = [n for n in view["queue"]["ahead_jobs"] if n in visible]

