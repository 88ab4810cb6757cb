"""The API's settings, read once from the environment when the app is created.

Redis and the default namespace come from the broker's settings (`REDIS_URL`, `TRAINER_REDIS_PREFIX`,
`TRAINER_NAMESPACE`), so the API and the broker always agree on where jobs live.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

from broker.errors import SettingsError
from broker.settings import BrokerSettings


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    try:
        value = int(env.get(key, default))
    except ValueError as exc:
        raise SettingsError(f"{key} must be an integer, got {env[key]!r}") from exc
    if value < minimum:
        raise SettingsError(f"{key} must be at least {minimum}, got {value}")
    return value


def _flag(env: Mapping[str, str], key: str) -> bool:
    return env.get(key, "").strip().lower() in {"1", "true", "yes", "on"}


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    api_tokens: tuple[str, ...] = ()
    """TRAINER_API_TOKEN: accepted `X-TRAINER-TOKEN` values, comma-separated (several during a rotation)."""
    auth_disabled: bool = False
    """TRAINER_AUTH_DISABLED: `1` serves without a token. Without it and without a token the API refuses to start."""
    max_nodes: int = 64
    """TRAINER_MAX_NODES: largest `num_nodes` a request may ask for."""
    max_gpus_per_node: int = 8
    """TRAINER_MAX_GPUS_PER_NODE: largest `gpus_per_node` a request may ask for."""
    max_body_bytes: int = 256 * 1024
    """TRAINER_MAX_BODY_BYTES: larger request bodies answer 413."""
    retry_after_s: int = 5
    """TRAINER_RETRY_AFTER_S: the `Retry-After` the API sends with a 503 when Redis is unreachable or full."""
    dry_run_timeout_s: float = 30.0
    """TRAINER_DRY_RUN_TIMEOUT_S: how long `POST /train?dry_run=true` waits for a broker worker's answer."""
    tenant_tokens: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """TRAINER_TENANT_TOKENS: JSON `{"<tenant>": ["token", …]}` — each tenant's tokens (several during a rotation)."""
    operator_tokens: tuple[str, ...] = ()
    """TRAINER_OPERATOR_TOKEN: comma-separated tokens that see, cancel and retry every tenant's jobs."""
    max_maps_bytes: int = 64 * 1024
    """TRAINER_MAX_MAPS_BYTES: most bytes `env`, `labels`, `annotations` and `extra_args` of one request hold in all."""
    progress_max_bytes: int = 64 * 1024
    """TRAINER_PROGRESS_MAX_BYTES: a `progress.json` larger than this is not read (`/progress` answers 422)."""
    broker: BrokerSettings = dataclasses.field(default_factory=BrokerSettings)
    """The broker's settings (REDIS_URL, TRAINER_REDIS_PREFIX, TRAINER_NAMESPACE, …)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            api_tokens=_csv(env.get("TRAINER_API_TOKEN")),
            auth_disabled=_flag(env, "TRAINER_AUTH_DISABLED"),
            max_nodes=_int(env, "TRAINER_MAX_NODES", cls.max_nodes, minimum=1),
            max_gpus_per_node=_int(env, "TRAINER_MAX_GPUS_PER_NODE", cls.max_gpus_per_node),
            max_body_bytes=_int(env, "TRAINER_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            retry_after_s=_int(env, "TRAINER_RETRY_AFTER_S", cls.retry_after_s, minimum=1),
            dry_run_timeout_s=float(_int(env, "TRAINER_DRY_RUN_TIMEOUT_S", int(cls.dry_run_timeout_s), minimum=1)),
            tenant_tokens=_tenant_tokens(env.get("TRAINER_TENANT_TOKENS")),
            operator_tokens=_csv(env.get("TRAINER_OPERATOR_TOKEN")),
            max_maps_bytes=_int(env, "TRAINER_MAX_MAPS_BYTES", cls.max_maps_bytes, minimum=1024),
            progress_max_bytes=_int(env, "TRAINER_PROGRESS_MAX_BYTES", cls.progress_max_bytes, minimum=1024),
            broker=BrokerSettings.from_env(env),
        )

    @property
    def multi_tenant(self) -> bool:
        """Tenants are configured (`TRAINER_TENANTS`), rather than the implicit single tenant."""
        return self.broker.tenants_configured

    def check(self) -> None:
        """Raise SettingsError when the API must not start: no token and authentication not explicitly disabled."""
        has_tokens = self.api_tokens or self.operator_tokens or any(self.tenant_tokens.values())
        if not has_tokens and not self.auth_disabled:
            raise SettingsError(
                "TRAINER_API_TOKEN is not set: set it (comma-separated for rotation), or TRAINER_TENANT_TOKENS and "
                "TRAINER_OPERATOR_TOKEN, or set TRAINER_AUTH_DISABLED=1 to serve without authentication"
            )


def _tenant_tokens(raw: str | None) -> dict[str, tuple[str, ...]]:
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        out = {}
        for tenant, tokens in data.items():
            if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
                raise ValueError(f"tenant {tenant!r}: a list of non-empty tokens")
            out[str(tenant)] = tuple(t.strip() for t in tokens)
    except ValueError as exc:
        raise SettingsError(f'TRAINER_TENANT_TOKENS must be JSON like {{"team-a": ["token"]}}: {exc}') from exc
    return out
