"""The API's settings, read once from the environment when the app is created.

Redis and the default namespace come from the broker's settings (`REDIS_URL`, `TRAINER_REDIS_PREFIX`,
`TRAINER_NAMESPACE`), so the API and the broker always agree on where jobs live.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated

from pydantic import BeforeValidator, Field

from broker.envsettings import Csv, EnvSettings, Flag, Integer, NoDecode, from_text, whole_number
from broker.errors import SettingsError
from broker.settings import BrokerSettings


def _tenant_tokens(raw: str) -> dict[str, tuple[str, ...]]:
    if not raw.strip():
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
        raise ValueError(f'TRAINER_TENANT_TOKENS must be JSON like {{"team-a": ["token"]}}: {exc}') from exc
    return out


class ApiSettings(EnvSettings):
    api_tokens: Csv = Field((), validation_alias="TRAINER_API_TOKEN")
    """TRAINER_API_TOKEN: accepted `X-TRAINER-TOKEN` values, comma-separated (several during a rotation)."""
    auth_disabled: Flag = Field(False, validation_alias="TRAINER_AUTH_DISABLED")
    """TRAINER_AUTH_DISABLED: `1` serves without a token. Without it and without a token the API refuses to start."""
    max_nodes: Integer = Field(64, ge=1, validation_alias="TRAINER_MAX_NODES")
    """TRAINER_MAX_NODES: largest `num_nodes` a request may ask for."""
    max_gpus_per_node: Integer = Field(8, ge=0, validation_alias="TRAINER_MAX_GPUS_PER_NODE")
    """TRAINER_MAX_GPUS_PER_NODE: largest `gpus_per_node` a request may ask for."""
    max_body_bytes: Integer = Field(256 * 1024, ge=1024, validation_alias="TRAINER_MAX_BODY_BYTES")
    """TRAINER_MAX_BODY_BYTES: larger request bodies answer 413."""
    retry_after_s: Integer = Field(5, ge=1, validation_alias="TRAINER_RETRY_AFTER_S")
    """TRAINER_RETRY_AFTER_S: the `Retry-After` the API sends with a 503 when Redis is unreachable or full."""
    dry_run_timeout_s: Annotated[float, BeforeValidator(whole_number)] = Field(
        30.0, ge=1, validation_alias="TRAINER_DRY_RUN_TIMEOUT_S")
    """TRAINER_DRY_RUN_TIMEOUT_S: how long `POST /train?dry_run=true` waits for a broker worker's answer."""
    tenant_tokens: Annotated[dict[str, tuple[str, ...]], NoDecode, from_text(_tenant_tokens)] = Field(
        default_factory=dict, validation_alias="TRAINER_TENANT_TOKENS")
    """TRAINER_TENANT_TOKENS: JSON `{"<tenant>": ["token", …]}` — each tenant's tokens (several during a rotation)."""
    operator_tokens: Csv = Field((), validation_alias="TRAINER_OPERATOR_TOKEN")
    """TRAINER_OPERATOR_TOKEN: comma-separated tokens that see, cancel and retry every tenant's jobs."""
    max_maps_bytes: Integer = Field(64 * 1024, ge=1024, validation_alias="TRAINER_MAX_MAPS_BYTES")
    """TRAINER_MAX_MAPS_BYTES: most bytes `env`, `labels`, `annotations` and `extra_args` of one request hold in all."""
    progress_max_bytes: Integer = Field(64 * 1024, ge=1024, validation_alias="TRAINER_PROGRESS_MAX_BYTES")
    """TRAINER_PROGRESS_MAX_BYTES: a `progress.json` larger than this is not read (`/progress` answers 422)."""
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    """The broker's settings (REDIS_URL, TRAINER_REDIS_PREFIX, TRAINER_NAMESPACE, …)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        return cls.read_env(environ).model_copy(update={"broker": BrokerSettings.from_env(environ)})

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
