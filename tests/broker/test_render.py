"""The rendered PyTorchJob: what the Training Operator and train.py receive, valid against the real CRD."""

from __future__ import annotations

import json

import pytest

from broker.render import command, render_pytorchjob
from broker.settings import BrokerSettings
from tests.support.jobs import make_record
from tests.support.pytorchjob_rules import pytorchjob_problems, validate_pytorchjob

SETTINGS = BrokerSettings()


def container(obj: dict, kind: str = "Master") -> dict:
    return obj["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"]["containers"][0]


def env_of(obj: dict, kind: str = "Master") -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(obj, kind)["env"]}


def test_one_node_job_has_a_master_only_and_validates() -> None:
    record = make_record("run-1", gpus_per_node=8, num_nodes=1)
    obj = render_pytorchjob(record, SETTINGS)
    validate_pytorchjob(obj)
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert list(replicas) == ["Master"]
    assert replicas["Master"]["replicas"] == 1
    assert obj["spec"]["nprocPerNode"] == "8"
    assert obj["metadata"]["name"] == "hf-run-1"
    assert obj["metadata"]["namespace"] == "ml"
    assert container(obj)["name"] == "pytorch"
    assert container(obj)["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "8"}


def test_four_node_job_has_three_workers_running_the_same_container() -> None:
    record = make_record("run-4", gpus_per_node=4, num_nodes=4)
    obj = render_pytorchjob(record, SETTINGS)
    validate_pytorchjob(obj)
    replicas = obj["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] == 3
    assert container(obj, "Worker") == container(obj, "Master")
    argv = container(obj)["command"]
    assert argv[:6] == ["torchrun", "--nnodes", "4", "--nproc_per_node", "4", "train.py"]
    assert env_of(obj)["NUM_NODES"] == "4" and env_of(obj)["GPUS_PER_NODE"] == "4"


def test_the_argv_is_the_trainer_contract_and_no_shell() -> None:
    record = make_record("run-1", extra_args={"max_steps": 20, "lr": 0.001, "bf16": True, "layers": [1, 2]})
    argv = command(record)
    flags = argv[argv.index("train.py") + 1:]
    assert flags == [
        "--framework", "hf", "--run-id", "run-1", "--checkpoint-base-uri", "s3://runs/base",
        "--checkpoint-prefix", "s3://runs/base/run-1/framework=hf", "--dataset-uri", "s3://data/train.jsonl",
        "--logs-uri", "s3://runs/base/run-1/framework=hf/logs",
        "--config-uri", "s3://runs/base/run-1/framework=hf/config", "--model-id", "tiny-gpt2",
        "--", "--bf16=true", "--lr=0.001", "--max_steps=20",
    ]
    assert not any(word in ("sh", "bash", "-c") for word in argv)


def test_extra_args_travel_typed_in_json_and_lists_only_there() -> None:
    extra = {"max_steps": 20, "layers": [1, 2], "opts": {"a": 1}, "framework": "evil"}
    obj = render_pytorchjob(make_record(extra_args=extra), SETTINGS)
    assert json.loads(env_of(obj)["TRAINING_EXTRA_ARGS_JSON"]) == extra
    argv = container(obj)["command"]
    assert "--layers" not in argv and "--opts" not in argv
    assert argv.count("--framework") == 1 and "evil" not in argv


def test_cpu_job_runs_one_process_per_node_and_requests_no_gpu() -> None:
    obj = render_pytorchjob(make_record(gpus_per_node=0, num_nodes=2), SETTINGS)
    validate_pytorchjob(obj)
    assert obj["spec"]["nprocPerNode"] == "1"
    assert "nvidia.com/gpu" not in container(obj)["resources"]["requests"]


def test_env_carries_the_run_layout_and_user_env_without_overriding_reserved_names() -> None:
    record = make_record(env={"HF_HOME": "/cache", "RUN_ID": "hijack", "PET_NNODES": "9"}, config_path="c.yaml")
    env = env_of(render_pytorchjob(record, SETTINGS))
    assert env["RUN_ID"] == "run-1" and env["HF_HOME"] == "/cache" and "PET_NNODES" not in env
    assert env["CHECKPOINT_PREFIX"] == "s3://runs/base/run-1/framework=hf"
    assert env["LOGS_URI"].endswith("/logs") and env["CONFIG_URI"].endswith("/config")
    assert env["CONFIG_PATH"] == "c.yaml" and env["RESUME_FROM_CHECKPOINT"] == "false"


def test_each_attempt_is_a_distinct_object_traceable_to_job_and_attempt() -> None:
    first = render_pytorchjob(make_record("Run_A.1"), SETTINGS)
    second = render_pytorchjob(make_record("Run_A.1", attempt=2), SETTINGS)
    validate_pytorchjob(second)
    assert first["metadata"]["name"] != second["metadata"]["name"]
    labels, notes = second["metadata"]["labels"], second["metadata"]["annotations"]
    assert labels["training-broker.io/job"] == first["metadata"]["name"]
    assert labels["training-broker.io/attempt"] == "2"
    assert labels["app.kubernetes.io/managed-by"] == "training-broker"
    assert labels["training-broker.io/framework"] == "hf"
    assert notes["training-broker.io/run-id"] == "Run_A.1"
    assert notes["training-broker.io/spec-hash"] == make_record("Run_A.1").spec_hash
    assert "--resume" in container(second)["command"]
    assert env_of(second)["RESUME_FROM_CHECKPOINT"] == "true"


def test_long_odd_run_ids_still_give_valid_names_and_labels() -> None:
    run_id = "Über/Run " * 12
    obj = render_pytorchjob(make_record(run_id, attempt=12), SETTINGS)
    validate_pytorchjob(obj)


def test_user_labels_pass_through_but_cannot_take_over_the_system_labels() -> None:
    record = make_record(labels={"kueue.x-k8s.io/queue-name": "team-a", "training-broker.io/job": "x"},
                         annotations={"owner": "ana"})
    meta = render_pytorchjob(record, SETTINGS)["metadata"]
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert meta["labels"]["training-broker.io/job"] == "hf-run-1"
    assert meta["annotations"]["owner"] == "ana"


def test_run_policy_comes_from_settings() -> None:
    settings = BrokerSettings(job_backoff_limit=1, job_clean_pod_policy="All", job_ttl_s=600)
    policy = render_pytorchjob(make_record(), settings)["spec"]["runPolicy"]
    assert policy == {"backoffLimit": 1, "cleanPodPolicy": "All", "ttlSecondsAfterFinished": 600}


def test_rendering_is_pure() -> None:
    assert render_pytorchjob(make_record(), SETTINGS) == render_pytorchjob(make_record(), SETTINGS)


@pytest.mark.parametrize(
    "breaks",
    [
        lambda o: o["spec"]["pytorchReplicaSpecs"]["Master"].pop("replicas"),
        lambda o: o["spec"]["pytorchReplicaSpecs"].update(Chief=o["spec"]["pytorchReplicaSpecs"]["Master"]),
        lambda o: o["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0].update(name="x"),
        lambda o: o["metadata"].update(name="Bad_Name"),
        lambda o: o["spec"].update(nprocPerNode=8),
        lambda o: o["spec"]["runPolicy"].update(backofLimit=3),
        lambda o: o["metadata"]["labels"].update({"a": "not valid!"}),
    ],
)
def test_the_validator_catches_what_a_cluster_refuses(breaks) -> None:  # type: ignore[no-untyped-def]
    obj = render_pytorchjob(make_record(), SETTINGS)
    breaks(obj)
    assert pytorchjob_problems(obj)


def test_the_whole_one_node_object() -> None:
    record = make_record("run-1", gpus_per_node=1, extra_args={"max_steps": 5})
    container = {
        "name": "pytorch",
        "image": "registry.example/trainer:1.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["torchrun", "--nnodes", "1", "--nproc_per_node", "1", "train.py", "--framework", "hf",
                    "--run-id", "run-1", "--checkpoint-base-uri", "s3://runs/base",
                    "--checkpoint-prefix", "s3://runs/base/run-1/framework=hf",
                    "--dataset-uri", "s3://data/train.jsonl", "--logs-uri", "s3://runs/base/run-1/framework=hf/logs",
                    "--config-uri", "s3://runs/base/run-1/framework=hf/config", "--model-id", "tiny-gpt2",
                    "--", "--max_steps=5"],
        "env": [{"name": k, "value": v} for k, v in {
            "FRAMEWORK": "hf", "RUN_ID": "run-1", "MODEL_ID": "tiny-gpt2", "NUM_NODES": "1", "GPUS_PER_NODE": "1",
            "CHECKPOINT_BASE_URI": "s3://runs/base", "CHECKPOINT_PREFIX": "s3://runs/base/run-1/framework=hf",
            "DATASET_URI": "s3://data/train.jsonl", "LOGS_URI": "s3://runs/base/run-1/framework=hf/logs",
            "CONFIG_URI": "s3://runs/base/run-1/framework=hf/config", "RESUME_FROM_CHECKPOINT": "false",
            "TRAINING_EXTRA_ARGS_JSON": '{"max_steps":5}', "TRAINER_ATTEMPT": "1"}.items()],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
                      "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "privileged": False,
                            "runAsNonRoot": True},
    }
    labels = {"training-broker.io/job": "hf-run-1", "training-broker.io/attempt": "1",
              "app.kubernetes.io/managed-by": "training-broker", "training-broker.io/run-id": "run-1",
              "training-broker.io/framework": "hf"}
    assert render_pytorchjob(record, SETTINGS) == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": "hf-run-1", "namespace": "ml", "labels": labels,
            "annotations": {"training-broker.io/spec-hash": record.spec_hash, "training-broker.io/run-id": "run-1",
                            "training-broker.io/attempt": "1", "training-broker.io/job": "hf-run-1"},
        },
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {"backoffLimit": 3, "cleanPodPolicy": "Running"},
            "pytorchReplicaSpecs": {"Master": {
                "replicas": 1, "restartPolicy": "OnFailure",
                "template": {"metadata": {"labels": labels}, "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}, "runAsNonRoot": True},
                    "containers": [container], "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]}},
            }},
        },
    }
