"""What a real cluster checks before it stores a PyTorchJob, as code: the CRD schema, unknown fields, the
Training Operator's validating webhook and the API server's metadata rules.

The schema is the real CRD's `spec.versions[name=v1].schema.openAPIV3Schema`, loaded (never copied) from
`$TRAINER_CRD_PATH` or the copy vendored at `k8s/crds/kubeflow.org_pytorchjobs.yaml` (provenance in its README).
A real API server silently prunes fields the schema does not know; here they are errors, so a misspelt field fails
a test instead of vanishing on the cluster. Webhook rules: `k8s/crds/README.md`.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = "kubeflow.org_pytorchjobs.yaml"

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NPROC = re.compile(r"^(auto|cpu|gpu|[1-9][0-9]*)$")
MANAGED_BY = {"kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"}


def crd_path() -> Path:
    explicit = os.environ.get("TRAINER_CRD_PATH")
    path = Path(explicit) if explicit else REPO_ROOT / "k8s" / "crds" / CRD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"PyTorchJob CRD not found at {path}; set TRAINER_CRD_PATH")
    return path


@functools.cache
def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(crd_path().read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def pytorchjob_problems(obj: dict[str, Any]) -> list[str]:
    """Every reason a real cluster would refuse `obj` (empty when it would accept it)."""
    problems = [f"{_path(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(obj)]
    problems += _unknown_fields(obj, crd_schema(), "")
    problems += _metadata_problems(obj.get("metadata") or {})
    problems += _webhook_problems(obj.get("spec") or {})
    if obj.get("apiVersion") != "kubeflow.org/v1" or obj.get("kind") != "PyTorchJob":
        problems.append("apiVersion/kind must be kubeflow.org/v1 PyTorchJob")
    return problems


def validate_pytorchjob(obj: dict[str, Any]) -> None:
    """Raise AssertionError listing every problem when a real cluster would refuse `obj`."""
    problems = pytorchjob_problems(obj)
    if problems:
        raise AssertionError("invalid PyTorchJob:\n  " + "\n  ".join(problems))


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(crd_schema(), default=jsonschema.Draft7Validator)
    return cls(crd_schema())


def _path(parts: Any) -> str:
    return "." + ".".join(str(p) for p in parts)


def _unknown_fields(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out: list[str] = []
        for key, item in value.items():
            if props is not None and key in props:
                out += _unknown_fields(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                out += _unknown_fields(item, extra, f"{where}.{key}")
            elif props is not None:
                out.append(f"{where}.{key}: unknown field (a real API server would drop it)")
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [p for i, item in enumerate(value) for p in _unknown_fields(item, schema["items"], f"{where}[{i}]")]
    return []


def _metadata_problems(meta: dict[str, Any]) -> list[str]:
    out: list[str] = []
    name = meta.get("name", "")
    if not (isinstance(name, str) and DNS1035.match(name) and len(name) <= 63):
        out.append(f"metadata.name {name!r} is not a DNS-1035 label")
    for key, value in (meta.get("labels") or {}).items():
        if not _qualified_name(key):
            out.append(f"label key {key!r} is not a qualified name")
        if not (isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63):
            out.append(f"label {key}={value!r}: not a valid label value")
    for key, value in (meta.get("annotations") or {}).items():
        if not _qualified_name(key) or not isinstance(value, str):
            out.append(f"annotation {key!r} is invalid")
    return out


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and not (len(prefix) <= 253 and DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return bool(LABEL_NAME.match(name)) and len(name) <= 63


def _webhook_problems(spec: dict[str, Any]) -> list[str]:
    replicas = spec.get("pytorchReplicaSpecs")
    if not isinstance(replicas, dict) or not replicas:
        return ["spec.pytorchReplicaSpecs is required"]
    out = [f"replica type {k!r} is not Master or Worker" for k in replicas if k not in ("Master", "Worker")]
    master = replicas.get("Master")
    if master is not None and master.get("replicas") != 1:
        out.append("Master.replicas must be set explicitly to 1")
    worker = replicas.get("Worker")
    if worker is not None and worker.get("replicas") is not None and worker["replicas"] < 1:
        out.append("Worker.replicas must be at least 1")
    for kind, replica in replicas.items():
        out += _template_problems(kind, replica or {})
    if "elasticPolicy" in spec and worker is None:
        out.append("elasticPolicy requires a Worker replica spec")
    if "nprocPerNode" in spec and not NPROC.match(str(spec["nprocPerNode"])):
        out.append(f"nprocPerNode {spec['nprocPerNode']!r} is not auto, cpu, gpu or a positive integer")
    managed_by = (spec.get("runPolicy") or {}).get("managedBy")
    if managed_by is not None and managed_by not in MANAGED_BY:
        out.append(f"runPolicy.managedBy {managed_by!r} is not allowed")
    return out


def _template_problems(kind: str, replica: dict[str, Any]) -> list[str]:
    containers = ((replica.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        return [f"{kind}: the pod template needs at least one container"]
    out = [f"{kind}: container {c.get('name')!r} has no image" for c in containers if not c.get("image")]
    if not any(c.get("name") == "pytorch" for c in containers):
        out.append(f"{kind}: one container must be named 'pytorch'")
    return out
