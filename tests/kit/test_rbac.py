"""The Role grants at least every (group, resource, verb) the broker's Kubernetes adapter calls.

The calls are read from broker/backends/kubernetes.py itself: every `*_namespaced_*` method of the official client it
invokes, with the group and plural it passes, so a new call (a patch, a watch, a status read) fails here until the
Role in k8s/rbac.yaml grants it.
"""

from __future__ import annotations

import ast
import re

from kubernetes import client

from tests.kit import support

ADAPTER = support.ROOT / "broker" / "backends" / "kubernetes.py"
VERBS = {"create": "create", "get": "get", "read": "get", "list": "list", "delete": "delete", "patch": "patch",
         "replace": "update", "watch": "watch"}
_CALL = re.compile(r"(create|get|read|list|delete|patch|replace|watch)_(namespaced|cluster)_(\w+)")


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants, including tuple assignments like `GROUP, VERSION, PLURAL = ...`."""
    found: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (zip(target.elts, node.value.elts, strict=False)
                     if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) else [(target, node.value)])
            for name, value in pairs:
                if isinstance(name, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found[name.id] = value.value
    return found


def _value(node: ast.AST, constants: dict[str, str]) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    raise AssertionError(f"cannot resolve {ast.unparse(node)} in {ADAPTER.name}")


def used_permissions() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every Kubernetes API call the adapter makes."""
    tree = ast.parse(ADAPTER.read_text(), filename=str(ADAPTER))
    constants = _constants(tree)
    used: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        match = _CALL.fullmatch(node.func.attr)
        if not match:
            continue
        assert hasattr(client.CustomObjectsApi, node.func.attr) or hasattr(client.CoreV1Api, node.func.attr), (
            f"{node.func.attr} is not a method of the Kubernetes client")
        verb, _, what = match.groups()
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        if what.startswith("custom_object"):
            group = _value(kwargs.get("group") or node.args[0], constants)
            resource = _value(kwargs.get("plural") or node.args[3], constants)
        else:
            group, resource = "", what.removesuffix("_status").replace("_", "") + "s"
        if what.endswith("_status"):
            resource += "/status"
        used.add((group, resource, VERBS[verb]))
        watch = kwargs.get("watch")
        if isinstance(watch, ast.Constant) and watch.value is True:
            used.add((group, resource, "watch"))
    return used


def granted_permissions() -> set[tuple[str, str, str]]:
    role = support.obj("Role", "training-broker")
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_the_adapter_is_read_as_making_the_calls_the_broker_needs() -> None:
    used = used_permissions()
    assert {("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "list", "delete")} <= used
    assert ("", "resourcequotas", "list") in used


def test_the_role_grants_every_call_the_broker_makes() -> None:
    missing = used_permissions() - granted_permissions()
    assert not missing, f"k8s/rbac.yaml must grant {sorted(missing)} (broker/backends/kubernetes.py uses them)"
