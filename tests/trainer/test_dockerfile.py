"""trainer/Dockerfile, checked statically (no Docker here): a CUDA PyTorch base with the pinned torch, the trainer's
own requirements without swapping torch (NeMo's pinned ones instead behind `WITH_NEMO`), a non-root user, and a
WORKDIR where the rendered `torchrun ... train.py` finds its script. The shell steps that touch the requirements
files run here for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

from broker.render import ENTRYPOINT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "trainer" / "Dockerfile"
REQUIREMENTS = ROOT / "trainer" / "requirements.txt"
NEMO_REQUIREMENTS = ROOT / "trainer" / "requirements-nemo.txt"
IMAGE_REQUIREMENTS = "/tmp/trainer-requirements.txt"
IMAGE_NEMO_REQUIREMENTS = "/tmp/trainer-requirements-nemo.txt"


def commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def instructions(name: str) -> list[dockerfile.Command]:
    return [c for c in commands() if c.cmd == name]


def runs() -> list[str]:
    return [" ".join(c.value) for c in instructions("RUN")]


def arg_default(name: str) -> str:
    for command in instructions("ARG"):
        key, _, default = command.value[0].partition("=")
        if key == name:
            return default
    raise AssertionError(f"no ARG {name}")


def torch_pin() -> str:
    (pin,) = re.findall(r"^torch==(\S+)", REQUIREMENTS.read_text(), flags=re.M)
    return str(pin)


def run_step(script: str, tmp_path: Path, with_nemo: str = "0") -> subprocess.CompletedProcess[str]:
    """A RUN step against this repository's requirements files, with this venv's python standing in for the image's
    and the build argument `WITH_NEMO` in the environment."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    if not (shim / "python").exists():
        (shim / "python").symlink_to(sys.executable)
    # The checkout itself may live under /tmp (CI clones anywhere): map /tmp/ before inserting its path.
    files = {IMAGE_NEMO_REQUIREMENTS: NEMO_REQUIREMENTS, IMAGE_REQUIREMENTS: REQUIREMENTS}
    for n, image in enumerate(files):
        script = script.replace(image, f"@{n}@")
    script = script.replace("/tmp/", f"{tmp_path}/")
    for n, repo in enumerate(files.values()):
        script = script.replace(f"@{n}@", str(repo))
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run([bash, "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{shim}:/usr/bin:/bin", "WITH_NEMO": with_nemo})


def test_the_base_is_a_cuda_pytorch_image_of_the_pinned_torch() -> None:
    (base,) = [c.value[0] for c in instructions("FROM")]
    assert base == "${BASE_IMAGE}"
    image = arg_default("BASE_IMAGE")
    assert image.startswith("pytorch/pytorch:") and "-cuda" in image
    assert image.split(":")[1].split("-")[0] == torch_pin()


@pytest.mark.parametrize("with_nemo, requirements", [("0", REQUIREMENTS), ("1", NEMO_REQUIREMENTS)])
def test_the_requirements_it_copies_exist_and_lose_only_the_torch_line(with_nemo: str, requirements: Path,
                                                                       tmp_path: Path) -> None:
    copies = {c.value[0]: c.value[-1] for c in instructions("COPY")}
    assert copies["trainer/requirements.txt"] == IMAGE_REQUIREMENTS and REQUIREMENTS.is_file()
    assert copies["trainer/requirements-nemo.txt"] == IMAGE_NEMO_REQUIREMENTS and NEMO_REQUIREMENTS.is_file()
    (install,) = [r for r in runs() if "pip install" in r and IMAGE_REQUIREMENTS in r]
    filtered_name = re.search(r'"\$\{requirements\}" > (/tmp/\S+\.txt)', install)
    assert filtered_name and f"-r {filtered_name.group(1)}" in install and "-c /tmp/constraints.txt" in install
    # The steps that pick the file (WITH_NEMO) and drop its torch line, run for real.
    steps = [part.strip() for part in install.split("&&")]
    picking = [part for part in steps if part.startswith(("requirements=", "if [", "grep"))][:3]
    assert picking[-1].startswith("grep"), steps
    result = run_step(" && ".join(picking), tmp_path, with_nemo)
    assert result.returncode == 0, result.stderr
    kept = (tmp_path / Path(filtered_name.group(1)).name).read_text().splitlines()
    expected = [ln for ln in requirements.read_text().splitlines() if not ln.startswith("torch==")]
    assert kept == expected
    assert {"transformers", "lightning", "boto3", "accelerate"} <= {ln.split("==")[0] for ln in kept}
    assert "torch.version.cuda" in install  # the build fails if pip swapped the CUDA build


@pytest.mark.parametrize("installed, ok", [("pinned", True), ("pinned+cu128", True), ("0.0.1", False)])
def test_the_build_refuses_a_base_whose_torch_is_not_the_pinned_one(installed: str, ok: bool,
                                                                    tmp_path: Path) -> None:
    (check,) = [r for r in runs() if "torch.__version__" in r and "pinned" in r]
    version = installed.replace("pinned", torch_pin())
    script = check.replace("python -c 'import torch; print(torch.__version__)'", f"echo {version}")
    assert (run_step(script, tmp_path).returncode == 0) is ok


def test_nemo_is_an_optional_build_argument_installing_its_pinned_requirements() -> None:
    assert arg_default("WITH_NEMO") == "0"
    (install,) = [r for r in runs() if IMAGE_NEMO_REQUIREMENTS in r]
    assert f'if [ "${{WITH_NEMO}}" = "1" ]; then requirements={IMAGE_NEMO_REQUIREMENTS}; fi' in install
    # The import the nemo runner makes, checked in the image once NeMo is in.
    assert install.endswith('if [ "${WITH_NEMO}" = "1" ]; then python -c \'from nemo.utils.exp_manager import '
                            "exp_manager'; fi")
    pins = NEMO_REQUIREMENTS.read_text().splitlines()
    assert "nemo_toolkit[core,common-only]==3.0.0" in pins and any(p.startswith("lightning==2.4.0") for p in pins)
    assert "nemo" not in " ".join(r for r in runs() if r != install)  # nothing installed beside the pinned file


def test_it_runs_as_a_non_root_user() -> None:
    users = [c.value[0] for c in instructions("USER")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "useradd" in " ".join(runs()) and "10001" in users[-1]


def test_the_rendered_torchrun_command_finds_train_py_in_the_workdir() -> None:
    workdirs = [c.value[0] for c in instructions("WORKDIR")]
    (copy,) = [c for c in instructions("COPY") if c.value[0] == "trainer/"]
    landing = Path(workdirs[workdirs.index("/app")]) / copy.value[1]  # COPY resolves against the WORKDIR then
    assert Path(workdirs[-1]) == landing
    assert (ROOT / "trainer" / ENTRYPOINT).is_file()  # the PyTorchJob runs `torchrun ... train.py`
    env = dict(zip(*[iter(v for c in instructions("ENV") for v in c.value)] * 2, strict=True))
    assert env["PYTHONPATH"] == str(landing.parent)  # `import trainer` from the script's folder
    (cmd,) = instructions("CMD")
    assert list(cmd.value) == ["python", ENTRYPOINT, "--help"]
