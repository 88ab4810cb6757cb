"""scripts/build_and_deploy.sh is shellcheck-clean, explains itself, builds both images from Dockerfiles that exist,
and applies manifests in which every service container runs the image it just pushed."""

from __future__ import annotations

import os
import shlex
import subprocess

import yaml

from tests.kit import support
from tests.kit.support import ROOT

SCRIPT = ROOT / "scripts" / "build_and_deploy.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{support.VENV_BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


def test_shellcheck_finds_nothing() -> None:
    result = subprocess.run([str(support.VENV_BIN / "shellcheck"), str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_it_is_strict_and_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_help_prints_usage_and_wrong_arguments_exit_2() -> None:
    shown = _run("--help")
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: scripts/build_and_deploy.sh")
    for args in ((), ("only-registry",), ("--bogus", "r", "t")):
        wrong = _run(*args)
        assert wrong.returncode == 2 and "Usage:" in wrong.stderr, args


def test_dry_run_builds_and_pushes_both_images_and_pins_them_in_the_applied_manifests() -> None:
    result = _run("--dry-run", "registry.example.com/acme/", "1.2.3")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]
    builds = {c[c.index("-t") + 1]: c[c.index("-f") + 1] for c in commands if c[1] == "build"}
    assert builds == {"registry.example.com/acme/training-broker:1.2.3": str(ROOT / "Dockerfile"),
                      "registry.example.com/acme/trainer:1.2.3": str(ROOT / "trainer" / "Dockerfile")}
    for dockerfile in builds.values():
        assert os.path.isfile(dockerfile), f"{dockerfile} does not exist"
    assert sorted(c[2] for c in commands if c[1] == "push") == sorted(builds)
    assert any(c[1:3] == ["apply", "-k"] for c in commands)
    manifest = result.stdout.split("\n+ kubectl apply", 1)[0]
    docs = [d for d in yaml.safe_load_all("\n".join(ln for ln in manifest.splitlines() if not ln.startswith("+ ")))
            if d]
    images = {c["image"] for d in docs if d["kind"] in {"Deployment", "StatefulSet"}
              for c in d["spec"]["template"]["spec"]["containers"] if "redis" not in c["image"]}
    assert images == {"registry.example.com/acme/training-broker:1.2.3"}
    assert len(docs) == len(support.rendered())
