"""Render one attempt of a job as a `kubeflow.org/v1` PyTorchJob: a pure function of the record and the settings.

Rules (the operator's webhook rules and defaults are in `k8s/crds/README.md`):

- Name: `record.object_name()` — the job name for attempt 1, `<name>-r<attempt>` after; a DNS-1035 label, so every
  attempt has its own object and a redelivered submit of the same attempt hits `409 AlreadyExists` on its own object.
- Replicas: `Master` with `replicas: 1` set explicitly; `Worker` with `num_nodes - 1` replicas, absent for one node.
  Every replica runs the same single container named `pytorch` (the operator injects its env and port into it).
- `spec.nprocPerNode` is `str(gpus_per_node)`; a CPU-only job (`gpus_per_node == 0`) runs ONE process per node
  (`"1"`), because torchrun needs at least one and `"cpu"` would start one process per core.
- Command: an argv list, never a shell. `torchrun --nnodes N --nproc_per_node P train.py --framework … --run-id …
  --checkpoint-base-uri … --checkpoint-prefix … --dataset-uri … --logs-uri … --config-uri … --model-id …
  [--resume] [-- --key=value …]`. Every item (and every env value) is literal: `$` is doubled, so Kubernetes (and
  the local backend) expand no `$(VAR)` from request input. The node rank, master address and master port are NOT
  in the argv: the operator injects `PET_NODE_RANK`, `PET_MASTER_ADDR`, `PET_MASTER_PORT` into the `pytorch`
  container and torchrun reads `PET_*` variables as the defaults of those flags (the local backend injects the same
  variables). No `$(VAR)` expansion is relied on, so the argv means the same on a cluster and locally.
- Extra args: ALL of them travel as JSON in `TRAINING_EXTRA_ARGS_JSON` (typed: lists, dicts, booleans survive).
  Scalars (str, int, float, bool → `true`/`false`) whose key is a plain identifier are also passed, after a `--` that
  ends the trainer's own options, as single `--key=value` tokens so the command line shows them: a value such as
  `--resume` or `--logs-uri=…` stays that key's value. Lists, dicts and null travel only in the JSON. A key that
  would shadow one of the fixed flags travels only in the JSON (the API refuses such keys anyway).
- Env: `FRAMEWORK RUN_ID MODEL_ID NUM_NODES GPUS_PER_NODE CHECKPOINT_BASE_URI CHECKPOINT_PREFIX DATASET_URI LOGS_URI
  CONFIG_URI RESUME_FROM_CHECKPOINT TRAINING_EXTRA_ARGS_JSON TRAINER_ATTEMPT` (+ `CONFIG_PATH` when the request
  names a config), then the request's own env (only names `broker.launch_policy` allows; the API refuses the others
  with a 400).
- Pods: restricted by default (`broker.tenants.pod_security`): `runAsNonRoot`, no privilege escalation, capabilities
  dropped, `RuntimeDefault` seccomp, `automountServiceAccountToken: false`; the tenant may allow root and name a
  service account.
- Resources per replica, requests = limits: `cpu`, `memory` (`<n>Gi`), and `nvidia.com/gpu` when it is > 0. A
  memory-backed `/dev/shm` is mounted (torch data loaders and NCCL need more than the container default).
- Labels: `app.kubernetes.io/managed-by: training-broker`, `training-broker.io/job`, `.../attempt`, `.../run-id`
  (sanitised to a label value), `.../framework`, plus the request's labels (for example a Kueue queue name).
  Annotations: `.../spec-hash`, `.../run-id` (verbatim), `.../attempt`, `.../job`, plus the request's annotations.
- `runPolicy`: `backoffLimit`, `cleanPodPolicy` and, when set, `ttlSecondsAfterFinished` from the settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from broker.jobs import LABEL_PREFIX, MANAGED_BY_LABEL, MANAGED_BY_VALUE, JobRecord
from broker.launch_policy import literal, refused_env
from broker.settings import BrokerSettings
from broker.tenants import pod_security

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"
ENTRYPOINT = "train.py"

JOB_LABEL = f"{LABEL_PREFIX}job"
ATTEMPT_LABEL = f"{LABEL_PREFIX}attempt"
RUN_ID_LABEL = f"{LABEL_PREFIX}run-id"
FRAMEWORK_LABEL = f"{LABEL_PREFIX}framework"
SPEC_HASH_ANNOTATION = f"{LABEL_PREFIX}spec-hash"
RUN_ID_ANNOTATION = f"{LABEL_PREFIX}run-id"
ATTEMPT_ANNOTATION = f"{LABEL_PREFIX}attempt"
JOB_ANNOTATION = f"{LABEL_PREFIX}job"

#: Selects every PyTorchJob this system manages (the status sync LISTs with it).
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"

_FIXED_FLAGS = frozenset(
    {"framework", "run-id", "checkpoint-base-uri", "checkpoint-prefix", "dataset-uri", "logs-uri", "config-uri",
     "model-id", "resume", "work-dir", "config-path", "help"}
)
#: Ends the trainer's own options: everything after it is an extra arg, one `--key=value` token each.
END_OF_OPTIONS = "--"
_FLAG_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def render_pytorchjob(record: JobRecord, settings: BrokerSettings) -> dict[str, Any]:
    """The PyTorchJob for the record's current attempt. Pure: equal inputs give equal objects."""
    spec = record.spec
    replicas: dict[str, Any] = {"Master": _replica_spec(1, record, settings)}
    if spec.num_nodes > 1:
        replicas["Worker"] = _replica_spec(spec.num_nodes - 1, record, settings)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": record.object_name(),
            "namespace": spec.namespace,
            "labels": object_labels(record),
            "annotations": _annotations(record),
        },
        "spec": {
            "nprocPerNode": nproc_per_node(spec.gpus_per_node),
            "runPolicy": _run_policy(settings),
            "pytorchReplicaSpecs": replicas,
        },
    }


def nproc_per_node(gpus_per_node: int) -> str:
    """Processes per node: one per GPU, and one for a CPU-only job."""
    return str(max(gpus_per_node, 1))


def attempt_selector(job_name: str, attempt: int) -> dict[str, str]:
    """The labels that tie an object to one attempt of one job (used to recognise our own object on 409)."""
    return {JOB_LABEL: job_name, ATTEMPT_LABEL: str(attempt), MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def object_labels(record: JobRecord) -> dict[str, str]:
    user = {k: v for k, v in record.spec.labels.items() if not k.startswith(LABEL_PREFIX) and k != MANAGED_BY_LABEL}
    own = attempt_selector(record.name, record.attempt) | {
        RUN_ID_LABEL: label_value(record.run_id),
        FRAMEWORK_LABEL: record.framework,
    }
    return user | own


def label_value(text: str) -> str:
    """`text` as a valid label value (≤ 63 chars of `[A-Za-z0-9_.-]`, alphanumeric at both ends).

    When characters had to change, a short hash keeps different texts apart; the verbatim text is in an annotation.
    """
    clean = _LABEL_VALUE_BAD.sub("-", text).strip("-_.")
    if clean == text and len(clean) <= 63:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = clean[: 63 - len(digest) - 1].strip("-_.")
    return f"{head}-{digest}" if head else digest


def _annotations(record: JobRecord) -> dict[str, str]:
    user = {k: v for k, v in record.spec.annotations.items() if not k.startswith(LABEL_PREFIX)}
    return user | {
        SPEC_HASH_ANNOTATION: record.spec_hash or record.spec.spec_hash(),
        RUN_ID_ANNOTATION: record.run_id,
        ATTEMPT_ANNOTATION: str(record.attempt),
        JOB_ANNOTATION: record.name,
    }


def _run_policy(settings: BrokerSettings) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "backoffLimit": settings.job_backoff_limit,
        "cleanPodPolicy": settings.job_clean_pod_policy,
    }
    if settings.job_ttl_s is not None:
        policy["ttlSecondsAfterFinished"] = settings.job_ttl_s
    return policy


def _replica_spec(replicas: int, record: JobRecord, settings: BrokerSettings) -> dict[str, Any]:
    pod, container_security = pod_security(settings.tenants.get(record.tenant))
    return {
        "replicas": replicas,
        "restartPolicy": "OnFailure",
        "template": {
            "metadata": {"labels": object_labels(record)},
            "spec": {
                **pod,
                "containers": [_container(record, settings, container_security)],
                "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
            },
        },
    }


def _container(record: JobRecord, settings: BrokerSettings, security: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": record.spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command(record),
        "env": [{"name": k, "value": literal(v)} for k, v in env(record, settings.env_allow).items()],
        "resources": _resources(record),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": security,
    }


def _resources(record: JobRecord) -> dict[str, Any]:
    spec = record.spec
    amounts = {"cpu": str(spec.cpus_per_node), "memory": f"{spec.memory_per_node_gb}Gi"}
    if spec.gpus_per_node > 0:
        amounts["nvidia.com/gpu"] = str(spec.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def uris(record: JobRecord) -> dict[str, str]:
    layout = record.layout
    return {"prefix": layout.prefix, "logs": layout.logs, "config": layout.config}


def command(record: JobRecord) -> list[str]:
    """The container's argv: torchrun, then train.py with the fixed flags, `--`, and the scalar extra args.

    Every item is literal (`$` doubled): Kubernetes expands nothing from a request's values."""
    spec, where = record.spec, uris(record)
    argv = ["torchrun", "--nnodes", str(spec.num_nodes), "--nproc_per_node", nproc_per_node(spec.gpus_per_node),
            ENTRYPOINT,
            "--framework", spec.framework,
            "--run-id", spec.run_id,
            "--checkpoint-base-uri", spec.checkpoint_base_uri,
            "--checkpoint-prefix", where["prefix"],
            "--dataset-uri", spec.dataset_uri,
            "--logs-uri", where["logs"],
            "--config-uri", where["config"],
            "--model-id", spec.model_id]
    if record.resume:
        argv.append("--resume")
    return [literal(arg) for arg in argv + extra_argv(spec.extra_args)]


def extra_argv(extra_args: dict[str, Any]) -> list[str]:
    """`--` then one `--key=value` token per scalar extra arg (see the module docstring for what stays JSON-only).

    The value is glued to its key, after the end of the trainer's options: whatever it holds (`--resume`,
    `--logs-uri=…`) it is that key's value, never a flag of its own."""
    argv: list[str] = []
    for key in sorted(extra_args):
        value = extra_args[key]
        if not _FLAG_KEY_RE.match(key) or key.replace("_", "-") in _FIXED_FLAGS:
            continue
        if isinstance(value, bool):
            argv.append(f"--{key}={'true' if value else 'false'}")
        elif isinstance(value, int | float | str):
            argv.append(f"--{key}={value}")
    return [END_OF_OPTIONS, *argv] if argv else []


def env(record: JobRecord, allow: tuple[str, ...] | None = None) -> dict[str, str]:
    """The env of every replica: the system's variables, then the request's own (only names the launch policy
    allows; the API refuses the others with a 400 already)."""
    spec, where = record.spec, uris(record)
    out = {
        "FRAMEWORK": spec.framework,
        "RUN_ID": spec.run_id,
        "MODEL_ID": spec.model_id,
        "NUM_NODES": str(spec.num_nodes),
        "GPUS_PER_NODE": str(spec.gpus_per_node),
        "CHECKPOINT_BASE_URI": spec.checkpoint_base_uri,
        "CHECKPOINT_PREFIX": where["prefix"],
        "DATASET_URI": spec.dataset_uri,
        "LOGS_URI": where["logs"],
        "CONFIG_URI": where["config"],
        "RESUME_FROM_CHECKPOINT": "true" if record.resume else "false",
        "TRAINING_EXTRA_ARGS_JSON": json.dumps(spec.extra_args, sort_keys=True, separators=(",", ":")),
        "TRAINER_ATTEMPT": str(record.attempt),
    }
    if spec.config_path:
        out["CONFIG_PATH"] = spec.config_path
    for key in sorted(spec.env):
        if key not in out and refused_env(key, *(() if allow is None else (allow,))) is None:
            out[key] = str(spec.env[key])
    return out
