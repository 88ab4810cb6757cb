"""The Dockerfiles parse, lint clean, copy files that exist and are not .dockerignored, and the service image holds
every module and distribution the four service commands import."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import dockerfile
import pytest
from packaging.requirements import Requirement

from tests.kit import support
from tests.kit.support import ROOT

DOCKERFILES = ("Dockerfile", "trainer/Dockerfile")


def _commands(path: str) -> tuple[dockerfile.Command, ...]:
    assert (ROOT / path).is_file(), f"{path} is missing"
    return dockerfile.parse_file(str(ROOT / path))


def _ignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not supported by this check"
    return patterns


def _ignored(relative: str) -> bool:
    """Docker's rule: a path is excluded when it or one of its parents matches a pattern."""
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in _ignore_patterns():
        for candidate in candidates:
            bare = pattern.removeprefix("**/")
            if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(Path(candidate).name, bare):
                return True
    return False


def _copy_sources(path: str) -> list[str]:
    sources = []
    for command in _commands(path):
        if command.cmd in {"COPY", "ADD"} and not any(f.startswith("--from") for f in command.flags):
            sources += list(command.value[:-1])
    return sources


@pytest.mark.parametrize("path", DOCKERFILES)
def test_every_copied_path_exists_in_the_build_context_and_is_not_dockerignored(path: str) -> None:
    sources = _copy_sources(path)
    assert sources, f"{path} copies nothing"
    for source in sources:
        matches = list(ROOT.glob(source.rstrip("/")))
        assert matches, f"{path}: COPY {source} matches nothing in the build context (the repository root)"
        for match in matches:
            relative = str(match.relative_to(ROOT))
            assert not _ignored(relative), f"{path}: COPY {source} is excluded by .dockerignore"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_passes(path: str) -> None:
    _commands(path)
    result = subprocess.run([str(support.VENV_BIN / "hadolint"), "--no-color", str(ROOT / path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_context_leaves_out_what_never_belongs_in_an_image() -> None:
    for path in (".git", ".venv", "node_modules", ".demo", "tests", "api/__pycache__"):
        assert _ignored(path), f"{path} would be sent to the Docker daemon"
    for path in ("api/app.py", "broker/celery_app.py", "requirements.txt", "trainer/train.py",
                 "trainer/requirements.txt"):
        assert not _ignored(path), f"{path} is needed by an image"


def test_the_service_image_is_slim_non_root_and_installs_only_requirements_txt() -> None:
    commands = _commands("Dockerfile")
    (base,) = [c.value[0] for c in commands if c.cmd == "FROM"]
    assert base == "python:3.11-slim"
    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    assert "torch" not in runs and "trainer/requirements.txt" not in runs
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_the_default_command_is_the_api_command_the_manifests_run() -> None:
    (cmd,) = [c for c in _commands("Dockerfile") if c.cmd == "CMD"]
    assert cmd.json, "CMD must be an exec-form JSON array (signals reach gunicorn)"
    api = support.obj("Deployment", "training-api")
    assert list(cmd.value) == support.pod_spec(api)["containers"][0]["command"]
    assert cmd.value[-1] == support.API_APP_SPEC


_IMPORT_PROBE = """
import json, sys
sys.path[:0] = sys.argv[1:]
import api.app
api.app.create_app()
import broker.celery_app, broker.tasks, broker.backends.kubernetes
import flower.command, gunicorn.app.wsgiapp
print(json.dumps(sorted({m.split(".")[0] for m in list(sys.modules) if not m.startswith("_")})))
"""


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _requirement_closure(path: Path) -> set[str]:
    """Every distribution pip installs for a requirements file (resolved against this venv's metadata)."""
    todo = [Requirement(line.split("#")[0].strip()) for line in path.read_text().splitlines()
            if line.split("#")[0].strip()]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if _normalize(req.name) in seen:
            continue
        seen.add(_normalize(req.name))
        for raw in metadata.requires(req.name) or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(sub)
    return seen


def _image_site_packages(target: Path) -> Path:
    """A site-packages holding only what `pip install -r requirements.txt` installs (symlinks into this venv)."""
    wanted = _requirement_closure(ROOT / "requirements.txt")
    target.mkdir()
    for dist in metadata.distributions():
        if _normalize(dist.metadata["Name"]) not in wanted:
            continue
        for top in {f.parts[0] for f in dist.files or [] if not f.parts[0].startswith("..")}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (target / top).exists():
                (target / top).symlink_to(source)
    return target


def test_the_service_image_holds_every_module_the_services_import(tmp_path: Path) -> None:
    """Import what the four commands import with only requirements.txt's distributions and the copied packages."""
    site = _image_site_packages(tmp_path / "site-packages")
    env = {"TRAINER_API_TOKEN": "kit", "REDIS_URL": "redis://127.0.0.1:1/0", "TRAINER_CLUSTER_BACKEND": "kubernetes"}
    out = subprocess.run([sys.executable, "-S", "-E", "-c", _IMPORT_PROBE, str(ROOT), str(site)], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"the service image would miss a module (add it to requirements.txt):\n{out.stderr}"
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    copied = {s.rstrip("/").split("/")[0] for s in _copy_sources("Dockerfile")}
    first_party = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    missing = (modules & first_party) - copied
    assert not missing, f"the services import {sorted(missing)}, which the Dockerfile does not copy"
