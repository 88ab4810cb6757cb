"""The repository stands alone: the PyTorchJob CRD the tests validate against is the vendored upstream file its
README names, and nothing the project runs reads a path outside the checkout."""

from __future__ import annotations

import hashlib
import re
import subprocess

from tests.kit import support
from tests.support import pytorchjob_rules

CRD_DIR = support.ROOT / "k8s" / "crds"


def test_the_vendored_crd_is_the_upstream_file_its_readme_records() -> None:
    readme = (CRD_DIR / "README.md").read_text()
    recorded = re.search(r"sha256 \| `([0-9a-f]{64})`", readme)
    assert recorded, "k8s/crds/README.md must record the CRD's sha256"
    digest = hashlib.sha256((CRD_DIR / pytorchjob_rules.CRD_FILE).read_bytes()).hexdigest()
    assert digest == recorded.group(1)
    assert "4445c12aa62e4345b0c2c6ac9b215a70eca46ed7" in readme and "kubeflow/trainer" in readme


def test_the_emulator_and_the_rules_load_the_vendored_crd(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TRAINER_CRD_PATH", raising=False)
    assert pytorchjob_rules.crd_path() == CRD_DIR / pytorchjob_rules.CRD_FILE
    assert pytorchjob_rules.crd_schema()["properties"]["spec"]["properties"]["pytorchReplicaSpecs"]


def test_no_tracked_file_reads_beside_the_checkout() -> None:
    found = subprocess.run(
        ["git", "grep", "-nE", r"\.\./shared|parent / \"shared\"|parents\[[0-9]\] / \"shared\"", "--", ":!*.md",
         ":!tests/kit/test_crd.py"],
        cwd=support.ROOT, capture_output=True, text=True,
    )
    assert found.stdout == "", found.stdout
