"""The guides say what the code does: USAGE's curl routes, trainctl commands and request bodies are real,
DEPLOYMENT's object table and RBAC are the rendered manifests, PERFORMANCE describes every benchmark in bench/."""

from __future__ import annotations

import json
import re
import subprocess

from api.schemas import TrainingJobRequestSchema
from devstack.samples import SAMPLE_REQUEST_FILE, sample_request
from tests.kit import support
from tests.kit.test_postman import COLLECTION, served_routes

DOCS = support.ROOT / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text()


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _shell_commands(text: str) -> list[str]:
    """Each shell command of the bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in _code_blocks(text, "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def test_usage_curl_commands_call_routes_the_api_serves() -> None:
    routes = served_routes()
    curls = [c for c in _shell_commands(_read("USAGE.md")) if c.startswith("curl ")]
    assert len(curls) >= 10
    for command in curls:
        match = re.search(r'"\$TRAINER_BASE_URL(/[^"?]*)', command)
        assert match, command
        path = re.sub(r"/\$JOB", "/{name}", match[1])
        method = "POST" if " -X POST " in command or " -d " in command else "GET"
        assert (method, path) in routes, f"{method} {path} is not served: {command}"


def test_usage_trainctl_commands_exist() -> None:
    help_text = subprocess.run([str(support.VENV_BIN / "trainctl"), "--help"], capture_output=True, text=True,
                               check=True).stdout
    available = set(re.search(r"\{([a-z,]+)\}", help_text)[1].split(","))  # type: ignore[index]
    used = {c.split()[1] for c in _shell_commands(_read("USAGE.md")) if c.startswith("trainctl ")}
    assert used and used <= available
    assert available <= used, f"USAGE.md does not show {sorted(available - used)}"


def test_usage_request_bodies_are_valid_requests() -> None:
    bodies = [json.loads(b) for b in _code_blocks(_read("USAGE.md"), "json")]
    requests = [b for b in bodies if "framework" in b]
    assert len(requests) >= 2
    for body in requests:
        TrainingJobRequestSchema().load(body)


def test_api_spec_example_is_the_sample_request_file() -> None:
    text = _read("API_SPEC.md")
    assert str(SAMPLE_REQUEST_FILE.relative_to(DOCS)) in text
    examples = [json.loads(b) for b in _code_blocks(text, "json") if '"run_id"' in b]
    assert sample_request() in examples
    TrainingJobRequestSchema().load(sample_request())


def test_usage_names_the_collection_and_its_variables() -> None:
    text = _read("USAGE.md")
    assert str(COLLECTION.relative_to(support.ROOT)) in text
    variables = {v["key"] for v in json.loads(COLLECTION.read_text())["variable"]}
    for name in ("trainer_base_url", "trainer_api_token", "run_id"):
        assert name in variables and name in text


def test_deployment_lists_every_rendered_object_and_nothing_else() -> None:
    rows = re.findall(r"^\| (\w+) \| `([a-z0-9-]+)` \|", _read("DEPLOYMENT.md"), re.M)
    documented = {(kind, name) for kind, name in rows if kind[0].isupper()}
    rendered = set()
    for o in support.rendered():
        name = o["metadata"]["name"]
        if o["kind"] in {"ConfigMap", "Secret"}:
            name = name.rsplit("-", 1)[0]  # the generators' content-hash suffix
        rendered.add((o["kind"], name))
    assert documented == rendered


def test_deployment_names_every_file_of_k8s_and_every_compose_service() -> None:
    text = _read("DEPLOYMENT.md")
    for path in sorted((support.ROOT / "k8s").iterdir()):
        assert f"`{path.name}`" in text, path.name
    for service in support.compose()["services"]:
        assert f"| `{service}` |" in text, service


def test_deployment_states_the_rbac_the_role_grants() -> None:
    text = _read("DEPLOYMENT.md")
    for rule in support.obj("Role", "training-broker")["rules"]:
        for resource in rule["resources"]:
            line = next(ln for ln in text.splitlines() if ln.startswith("- ") and f"`{resource}`" in ln)
            stated = set(re.findall(r"`(get|list|create|delete|patch|update|watch)`", line))
            assert stated == set(rule["verbs"]), resource


def test_deployment_shows_the_commands_the_manifests_run() -> None:
    text = _read("DEPLOYMENT.md")
    for _, container in support.service_containers():
        argv = container["command"]
        shown = " ".join(f'"{a}"' if "(" in a else a for a in argv)
        assert f"`{shown}`" in text, shown


def test_performance_describes_every_benchmark() -> None:
    text = _read("PERFORMANCE.md")
    benches = {str(p.relative_to(support.ROOT)) for p in (support.ROOT / "bench").rglob("*.py")
               if p.name != "__init__.py"}
    named = set(re.findall(r"bench/[\w/.-]+\.py", text)) - {"bench/<name>.py"}
    assert benches <= named, f"describe {sorted(benches - named)} in docs/PERFORMANCE.md"
    assert named <= benches, f"docs/PERFORMANCE.md names missing files {sorted(named - benches)}"


def test_no_credential_is_shipped_by_the_kit_the_guides_or_the_collection() -> None:
    """The operator creates every secret: compose demands each one, the kustomize base holds no Secret, the guides
    give the command that generates them, and the collection's token is left for the user to set."""
    for name, service in support.compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key in support.SECRET_NAMES or key == "REDISCLI_AUTH":
                assert re.fullmatch(r"\$\{(\w+):\?[^}]+\}", str(value)), (name, key, value)
    assert not [o for o in support.base() if o["kind"] == "Secret"]
    tracked = subprocess.run(["git", "ls-files", "k8s", ".env"], cwd=support.ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert "k8s/secret.env" not in tracked and ".env" not in tracked
    ignored = subprocess.run(["git", "check-ignore", "k8s/secret.env", ".env"], cwd=support.ROOT,
                             capture_output=True, text=True)
    assert ignored.stdout.split() == ["k8s/secret.env", ".env"], "the operator's secret files must be git-ignored"
    deployment = _read("DEPLOYMENT.md")
    assert "openssl rand" in deployment and "--secrets" in deployment and "kubectl -n training-broker create secret" \
        in deployment
    collection = {v["key"]: v["value"] for v in json.loads(COLLECTION.read_text())["variable"]}
    assert collection["trainer_api_token"] == ""
