"""The run config: flags, env fallbacks, extra args typing, and exit status 2 with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.config import ConfigError, parse_config

BASE = ["--framework", "hf", "--run-id", "r1", "--checkpoint-base-uri", "s3://b/runs",
        "--dataset-uri", "s3://d/x.jsonl", "--model-id", "gpt2"]


def test_prefix_logs_and_config_default_to_the_normalized_layout() -> None:
    config = parse_config(BASE, {})
    assert config.checkpoint_prefix == "s3://b/runs/r1/framework=hf"
    assert config.checkpoints_uri == "s3://b/runs/r1/framework=hf/checkpoints"
    assert config.logs_uri == "s3://b/runs/r1/framework=hf/logs"
    assert config.config_uri == "s3://b/runs/r1/framework=hf/config"
    assert config.resume is False


def test_every_setting_falls_back_to_its_environment_variable_and_flags_win() -> None:
    env = {"FRAMEWORK": "meta", "RUN_ID": "env-run", "CHECKPOINT_BASE_URI": "/tmp/runs", "DATASET_URI": "/d",
           "MODEL_ID": "/m", "CHECKPOINT_PREFIX": "/tmp/runs/flag-run/framework=meta/p",
           "LOGS_URI": "/tmp/runs/flag-run/framework=meta/p/l", "CONFIG_URI": "/tmp/runs/flag-run/framework=meta/p/c",
           "RESUME_FROM_CHECKPOINT": "true"}
    config = parse_config(["--run-id", "flag-run"], env)
    prefix = "/tmp/runs/flag-run/framework=meta/p"
    assert (config.framework, config.run_id, config.checkpoint_prefix) == ("meta", "flag-run", prefix)
    assert (config.logs_uri, config.config_uri, config.resume) == (f"{prefix}/l", f"{prefix}/c", True)


def test_extra_flags_merge_over_the_json_and_are_typed() -> None:
    env = {"TRAINING_EXTRA_ARGS_JSON": json.dumps({"max_steps": 50, "lr": 3e-5, "batch_size": 4, "custom": 1})}
    config = parse_config([*BASE, "--max-steps", "20", "--save-steps=10", "--eval_steps", "none", "--flag"], env)
    t = config.training
    assert (t.max_steps, t.save_steps, t.lr, t.batch_size, t.eval_steps) == (20, 10, 3e-5, 4, None)
    assert config.extra == {"custom": 1, "flag": "true"}


def test_the_rendered_command_shape_keeps_json_types_when_flags_repeat_them() -> None:
    """broker/render.py passes every scalar extra arg twice: typed in the JSON and as `--key value` strings."""
    extra = {"max_steps": 20, "lr": 0.001, "use_flash": True, "tag": "v1", "layers": [1, 2]}
    argv = [*BASE, "--resume", "--layers_note", "x", "--lr", "0.001", "--max_steps", "20", "--tag", "v1",
            "--use_flash", "true"]
    config = parse_config(argv, {"TRAINING_EXTRA_ARGS_JSON": json.dumps(extra), "CONFIG_PATH": "/cfg/a.yaml"})
    assert (config.training.max_steps, config.training.lr, config.resume) == (20, 0.001, True)
    assert config.extra == {"use_flash": True, "tag": "v1", "layers": [1, 2], "layers_note": "x"}
    assert config.config_path == "/cfg/a.yaml"


def test_all_problems_are_named_in_one_error() -> None:
    env = {"TRAINING_EXTRA_ARGS_JSON": '{"lr": "fast", "batch_size": 0}'}
    with pytest.raises(ConfigError) as err:
        parse_config(["--framework", "jax"], env)
    message = str(err.value)
    for needle in ("--run-id (RUN_ID)", "--model-id (MODEL_ID)", "framework must be one of", "lr must be a number",
                   "batch_size must be >= 1"):
        assert needle in message
    assert "\n" not in message


def test_invalid_json_and_resume_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="TRAINING_EXTRA_ARGS_JSON is not valid JSON"):
        parse_config(BASE, {"TRAINING_EXTRA_ARGS_JSON": "{nope"})
    with pytest.raises(ConfigError, match="RESUME_FROM_CHECKPOINT must be true or false"):
        parse_config(BASE, {"RESUME_FROM_CHECKPOINT": "maybe"})


def test_the_entrypoint_exits_2_with_one_line_naming_the_missing_settings() -> None:
    result = subprocess.run([sys.executable, "-m", "trainer", "--framework", "hf", "--lr", "x"],
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--run-id (RUN_ID)" in lines[0] and "lr must be a number" in lines[0]


def test_help_and_config_errors_do_not_import_heavy_libraries() -> None:
    code = ("import sys; from trainer.train import main\n"
            "try:\n    main(['--framework', 'hf'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'lightning', 'boto3') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_no_trainer_module_shadows_an_installed_top_level_module() -> None:
    """`torchrun ... trainer/train.py` puts trainer/ first on sys.path, so e.g. a `trainer/datasets.py` would hide
    the real `datasets` package from every library in the process."""
    import importlib.util
    from pathlib import Path

    import trainer

    package = Path(trainer.__file__).parent
    names = [p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")] + ["runners"]
    shadowed = [name for name in names if importlib.util.find_spec(name) is not None]
    assert shadowed == []


def test_the_trainer_never_imports_the_api_or_the_broker() -> None:
    """It ships alone in the trainer image."""
    import ast
    from pathlib import Path

    import trainer

    offenders = []
    for path in Path(trainer.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("api", "broker")]
    assert offenders == []
