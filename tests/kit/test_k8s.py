"""The kustomize base renders, every object validates against the Kubernetes schemas, and it holds what
docs/DEPLOYMENT.md describes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.kit import support
from tests.kit.support import obj, pod_spec, rendered

# The kubectl client here is 1.32; validate against it and the newest schemas the package ships.
K8S_VERSIONS = ("1.32.0", kubernetes_validate.utils.latest_version())


def _label(o: dict[str, Any]) -> str:
    return f"{o['kind']}/{o['metadata']['name']}"


def test_kustomize_renders_every_kind_the_deployment_needs() -> None:
    kinds = sorted({o["kind"] for o in rendered()})
    assert kinds == sorted({"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Service",
                            "Deployment", "StatefulSet", "NetworkPolicy"})
    namespaced = [o for o in rendered() if o["kind"] != "Namespace"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {obj("Namespace", "training-broker")["metadata"]["name"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_validates_against_the_kubernetes_schema(version: str) -> None:
    for o in rendered():
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{_label(o)} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_redis_is_a_statefulset_with_a_volume_aof_and_noeviction() -> None:
    redis = obj("StatefulSet", "redis")
    container = pod_spec(redis)["containers"][0]
    argv = container["command"] + container.get("args", [])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    data_dir = argv[argv.index("--dir") + 1]
    claims = {c["metadata"]["name"] for c in redis["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[data_dir] in claims, "Redis must write its AOF to the persistent volume"
    service = obj("Service", "redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]
    assert redis["spec"]["serviceName"] == "redis"


def test_api_is_a_loadbalancer_on_8080_with_readiness_and_liveness_probes() -> None:
    api = obj("Deployment", "training-api")
    container = pod_spec(api)["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names[container["readinessProbe"]["httpGet"]["port"]] == 8080
    assert "0.0.0.0:8080" in container["command"]
    service = obj("Service", "training-api")
    assert service["spec"]["type"] == "LoadBalancer"
    assert [(p["port"], port_names[p["targetPort"]]) for p in service["spec"]["ports"]] == [(8080, 8080)]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()


def test_exactly_one_beat_replaced_with_recreate() -> None:
    beats = [w for w in support.workloads()
             if any(c["command"][:4] == support.ROLE_PREFIX["beat"] for c in pod_spec(w)["containers"])]
    assert len(beats) == 1, "exactly one Deployment may run celery beat"
    beat = beats[0]
    assert beat["kind"] == "Deployment"
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_flower_needs_basic_auth_and_is_only_reachable_inside_the_cluster() -> None:
    flower = obj("Deployment", "flower")
    container = pod_spec(flower)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == obj(
        "Secret", env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"])["metadata"]["name"]
    assert ":" in support.container_env(container)["FLOWER_BASIC_AUTH"]
    service = obj("Service", "flower")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthcheck"  # Flower serves it without auth


def test_secrets_hold_the_api_token_and_flower_credentials_and_the_configmap_holds_no_secret() -> None:
    (secret,) = support.objects("Secret")
    assert set(secret["data"]) == {"TRAINER_API_TOKEN", "FLOWER_BASIC_AUTH", "REDIS_PASSWORD"}
    (config,) = support.objects("ConfigMap")
    assert not {k for k in config["data"] if "TOKEN" in k or "PASSWORD" in k or "SECRET" in k or "AUTH" in k}


def test_only_the_broker_has_a_service_account_token() -> None:
    for workload in support.workloads():
        spec = pod_spec(workload)
        roles = {support.container_role(c["command"]) for c in spec["containers"]
                 if c["image"].rsplit(":", 1)[0].endswith(support.SERVICE_IMAGE_NAME)}
        if roles & {"worker", "beat"}:
            assert spec["serviceAccountName"] == obj("ServiceAccount", "training-broker")["metadata"]["name"]
        else:
            assert spec.get("automountServiceAccountToken") is False, _label(workload)


def test_every_pod_runs_non_root_on_a_read_only_root_with_a_writable_tmp() -> None:
    for workload in support.workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, _label(workload)
        assert spec["securityContext"]["runAsUser"] > 0, _label(workload)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, _label(workload)
            assert context["allowPrivilegeEscalation"] is False, _label(workload)
            assert context["capabilities"]["drop"] == ["ALL"], _label(workload)
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{_label(workload)} needs an emptyDir on /tmp"


def test_rbac_binds_the_role_to_the_broker_service_account() -> None:
    binding = obj("RoleBinding", "training-broker")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": obj("Role", "training-broker")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "training-broker",
                                    "namespace": binding["metadata"]["namespace"]}]


def test_the_role_grants_exactly_pytorchjobs_and_resourcequotas() -> None:
    rules = {(g, r): sorted(rule["verbs"]) for rule in obj("Role", "training-broker")["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("kubeflow.org", "pytorchjobs"): sorted(["get", "list", "create", "delete"]),
                     ("", "resourcequotas"): ["list"]}


def test_jobs_go_to_the_namespace_where_the_role_is_bound() -> None:
    for _, container in support.service_containers():
        env = support.container_env(container)
        if support.container_role(container["command"]) in {"worker", "beat"}:
            assert env["TRAINER_NAMESPACE"] == obj("Role", "training-broker")["metadata"]["namespace"]


def test_only_the_services_reach_redis() -> None:
    policy = obj("NetworkPolicy", "redis-only-from-services")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    allowed = set(source["podSelector"]["matchExpressions"][0]["values"])
    pods = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            for d in support.objects("Deployment")}
    assert allowed == pods and rule["ports"] == [{"protocol": "TCP", "port": 6379}]
