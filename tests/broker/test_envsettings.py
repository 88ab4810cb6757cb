"""The services' one settings mechanism (broker/envsettings.py): variables in, typed fields out, one clear message
naming the variable for a value the type refuses."""

from __future__ import annotations

import pytest

from api.settings import ApiSettings
from broker.settings import BrokerSettings, SettingsError


@pytest.mark.parametrize(("env", "message"), [
    ({"TRAINER_SUBMIT_MAX_RETRIES": "many"}, "TRAINER_SUBMIT_MAX_RETRIES must be an integer, got 'many'"),
    ({"TRAINER_JOB_RETENTION_S": "5.0"}, "TRAINER_JOB_RETENTION_S must be an integer, got '5.0'"),
    ({"TRAINER_SYNC_INTERVAL_S": "soon"}, "TRAINER_SYNC_INTERVAL_S must be a number, got 'soon'"),
    ({"TRAINER_ADMISSION": "fifo"}, "TRAINER_ADMISSION must be one of builtin, kueue, got 'fifo'"),
    ({"TRAINER_JOB_TTL_S": "a day"}, "TRAINER_JOB_TTL_S must be an integer, got 'a day'"),
    ({"TRAINER_RECOVERY": "[1"}, "TRAINER_RECOVERY must be JSON like"),
    ({"TRAINER_KUEUE_QUEUES": '{"ml": ""}'}, "TRAINER_KUEUE_QUEUES must be JSON like"),
    ({"TRAINER_QUOTAS": '{"ml": {"gpus": 1}}'}, "TRAINER_QUOTAS must be JSON like"),
])
def test_a_broker_value_its_type_refuses_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        BrokerSettings.from_env(env)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("env", "message"), [
    ({"TRAINER_MAX_NODES": "0"}, "TRAINER_MAX_NODES must be at least 1, got 0"),
    ({"TRAINER_MAX_BODY_BYTES": "10"}, "TRAINER_MAX_BODY_BYTES must be at least 1024, got 10"),
    ({"TRAINER_DRY_RUN_TIMEOUT_S": "1.5"}, "TRAINER_DRY_RUN_TIMEOUT_S must be an integer, got '1.5'"),
    ({"TRAINER_DRY_RUN_TIMEOUT_S": "0"}, "TRAINER_DRY_RUN_TIMEOUT_S must be at least 1, got 0"),
    ({"TRAINER_TENANT_TOKENS": "[]"}, 'TRAINER_TENANT_TOKENS must be JSON like {"team-a": ["token"]}: not an object'),
    ({"TRAINER_MAX_NODES": "x", "REDIS_URL": "redis://h/0"}, "TRAINER_MAX_NODES must be an integer, got 'x'"),
])
def test_an_api_value_its_type_refuses_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ApiSettings.from_env(env)
    assert str(caught.value) == message


def test_values_are_typed_and_empty_means_unset_where_it_did() -> None:
    settings = ApiSettings.from_env({
        "TRAINER_API_TOKEN": " a, ,b ", "TRAINER_AUTH_DISABLED": " Yes ", "TRAINER_DRY_RUN_TIMEOUT_S": "7",
        "TRAINER_TENANT_TOKENS": '{"team-a": [" t "]}', "TRAINER_ALLOWED_NAMESPACES": "ml, cv",
        "KUBECONFIG": "", "TRAINER_LOCAL_WORKDIR": "", "TRAINER_JOB_TTL_S": "", "REDIS_PASSWORD": "p w",
        "TRAINER_REDIS_PREFIX": "", "TRAINER_ENV_ALLOW": "app_*",
    })
    assert (settings.api_tokens, settings.auth_disabled, settings.dry_run_timeout_s) == (("a", "b"), True, 7.0)
    assert settings.tenant_tokens == {"team-a": ("t",)}
    broker = settings.broker
    assert broker.allowed_namespaces == ("ml", "cv") and broker.tenants["default"].namespaces == ("ml", "cv")
    assert broker.kubeconfig is None and broker.job_ttl_s is None and broker.key_prefix == ""
    assert broker.local_workdir == BrokerSettings().local_workdir
    assert broker.redis_url == "redis://:p%20w@127.0.0.1:6379/0" and broker.redis_password == "p w"
    assert broker.env_allow == ("APP_*",)
    assert not ApiSettings.from_env({"TRAINER_AUTH_DISABLED": "maybe"}).auth_disabled


def test_keywords_give_the_defaults_and_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_NAMESPACE", "from-the-environment")
    monkeypatch.setenv("TRAINER_MAX_NODES", "3")
    assert BrokerSettings().namespace == "default" and ApiSettings().max_nodes == 64
    assert BrokerSettings(namespace="ml").namespace == "ml"
    assert BrokerSettings.from_env().namespace == "from-the-environment"
    assert ApiSettings.from_env().max_nodes == 3


def test_a_field_whose_docstring_names_another_variable_is_refused() -> None:
    from pydantic import Field

    from broker.envsettings import EnvSettings

    with pytest.raises(TypeError, match="docstring must start with `TRAINER_READ: `"):
        class Drifted(EnvSettings):
            value: int = Field(1, validation_alias="TRAINER_READ")
            """TRAINER_DOCUMENTED: the README would name a variable nothing reads."""
