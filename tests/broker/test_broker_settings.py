"""The broker settings this issue added: PyTorchJob run policy, Kubernetes client, visibility timeout, Flower."""

from __future__ import annotations

import pytest

from broker.settings import BrokerSettings, SettingsError


def test_defaults_keep_finished_objects_and_need_flower_credentials() -> None:
    settings = BrokerSettings.from_env({})
    assert settings.job_ttl_s is None and settings.job_clean_pod_policy == "Running"
    assert settings.flower_basic_auth is None and settings.visibility_timeout_s == 3600


def test_values_come_from_the_environment() -> None:
    settings = BrokerSettings.from_env({
        "TRAINER_JOB_BACKOFF_LIMIT": "1", "TRAINER_JOB_CLEAN_POD_POLICY": "All", "TRAINER_JOB_TTL_S": "600",
        "TRAINER_KUBE_TIMEOUT_S": "5", "TRAINER_KUBE_LIST_PAGE_SIZE": "50", "TRAINER_VISIBILITY_TIMEOUT_S": "7200",
        "FLOWER_BASIC_AUTH": "ops:pw",
    })
    assert (settings.job_backoff_limit, settings.job_clean_pod_policy, settings.job_ttl_s) == (1, "All", 600)
    assert (settings.kube_request_timeout_s, settings.kube_list_page_size) == (5.0, 50)
    assert settings.visibility_timeout_s == 7200 and settings.flower_basic_auth == "ops:pw"


def test_a_clean_pod_policy_the_operator_does_not_know_is_refused() -> None:
    with pytest.raises(SettingsError, match="TRAINER_JOB_CLEAN_POD_POLICY"):
        BrokerSettings.from_env({"TRAINER_JOB_CLEAN_POD_POLICY": "Sometimes"})


def test_the_default_visibility_timeout_outlasts_the_longest_task() -> None:
    settings = BrokerSettings()
    assert settings.worst_case_call_s == 6 * 30 + (1 + 2 + 4 + 8 + 16)  # as the settings' docs state: 211 s
    assert settings.worst_case_task_s == 4 * 211
    assert settings.visibility_timeout_s > settings.worst_case_task_s
