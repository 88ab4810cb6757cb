"""The README's configuration tables, generated from the settings code.

Each service setting is a settings field whose docstring reads `ENV_NAME: meaning` (broker/settings.py,
api/settings.py, and trainctl's in trainctl/client.py); the trainer's variables are the flag fallbacks of
trainer/config.py.
`tests/kit/test_readme.py` fails when README.md's tables differ from what this prints; refresh them with

    .venv/bin/python -m tests.kit.config_table --write
"""

from __future__ import annotations

import ast
import sys

from tests.kit import support

BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"
README = support.ROOT / "README.md"

SECTIONS = (
    ("broker/settings.py", "Broker, shared by the API, the worker, beat and Flower"),
    ("api/settings.py", "API only"),
)

# Names the settings read outside a field of their own (detecting the backend), and defaults that are expressions.
EXTRA_ROWS = {
    "KUBERNETES_SERVICE_HOST": ("(set by Kubernetes)", "its presence means in-cluster: the backend defaults to "
                                "`kubernetes`."),
}
DISPLAY_DEFAULTS = {
    "TRAINER_CLUSTER_BACKEND": "`kubernetes` in a cluster or with a kubeconfig, else `local`",
    "TRAINER_QUOTAS": '`{"default": {"gpus": 64, "jobs": 20}}`',
    "TRAINER_LOCAL_WORKDIR": "`~/.local/state/training-broker/jobs`",
    "TRAINER_MAX_BODY_BYTES": "`262144`",
    "TRAINER_BASE_URL": "`http://127.0.0.1:8080`",
    "TRAINER_RECOVERY": '`{"default": {"max_attempts": 1, "backoff_s": 60}}`',
    "TRAINER_KUEUE_QUEUES": '`{"default": "default"}`',
    "TRAINER_TENANTS": "(unset: one tenant `default`)",
    "TRAINER_ENV_ALLOW": "HF, W&B, NCCL, OMP names, `APP_*`, `USER_*`",
    "TRAINER_JOB_RETENTION_S": "`604800` (7 days)",
    "TRAINER_TENANT_TOKENS": "(unset)",
    "TRAINER_MAX_MAPS_BYTES": "`65536`",
    "TRAINER_PROGRESS_MAX_BYTES": "`65536`",
}
# trainctl's own settings (a client on the caller's machine, not a service).
CLI_SETTINGS = "trainctl/client.py"
TRAINER_FLAGS = {"RESUME_FROM_CHECKPOINT": "`--resume`",
                 "TRAINING_EXTRA_ARGS_JSON": "extra `--key=value` tokens after `--`"}


def _display(name: str, source: str) -> str:
    if name in DISPLAY_DEFAULTS:
        return DISPLAY_DEFAULTS[name]
    try:
        value = ast.literal_eval(source)
    except ValueError as exc:
        raise SystemExit(f"{name}: default `{source}` is an expression; add it to DISPLAY_DEFAULTS") from exc
    if value is None or value == ():
        return "(unset)"
    if isinstance(value, bool):
        return "`1`" if value else "(unset)"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def service_table() -> list[str]:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    seen: set[str] = set()
    for path, title in SECTIONS:
        lines.append(f"| **{title}** | | |")
        fields = support.documented_fields(path)
        for name, source, meaning in fields:
            lines.append(f"| `{name}` | {_display(name, source)} | {_cell(meaning)} |")
            seen.add(name)
        read = support.env_names_in(path)
        for name in sorted(read - seen - set(EXTRA_ROWS)):
            raise SystemExit(f"{path} reads {name} but no field docstring says `{name}: meaning`")
        for name in sorted((read & set(EXTRA_ROWS)) - seen):  # a field documents it already: listed once
            default, meaning = EXTRA_ROWS[name]
            lines.append(f"| `{name}` | {default} | {_cell(meaning)} |")
            seen.add(name)
    lines.append("| **trainctl, on the caller's machine** | | |")
    for name, source, meaning in support.documented_fields(CLI_SETTINGS):
        lines.append(f"| `{name}` | {_display(name, source)} | {_cell(meaning)} |")
    lines.append("| **Read by boto3 (S3 for /progress and /logs)** | | |")
    for name, meaning in support.LIBRARY_ENV.items():
        lines.append(f"| `{name}` | (unset) | {_cell(meaning.split(': ', 1)[1])} |")
    return lines


def trainer_table() -> list[str]:
    tree = ast.parse((support.ROOT / "trainer" / "config.py").read_text())
    flags: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_ENV_FALLBACKS"
                                                for t in node.targets):
            for key, value in zip(node.value.keys, node.value.values, strict=True):  # type: ignore[attr-defined]
                flags[ast.literal_eval(value)] = f"`--{ast.literal_eval(key).replace('_', '-')}`"
    flags.update(TRAINER_FLAGS)
    lines = ["| variable | flag |", "| --- | --- |"]
    for name in sorted(support.trainer_env_names()):
        if name not in flags:
            raise SystemExit(f"trainer/config.py reads {name}: add its flag to TRAINER_FLAGS")
        lines.append(f"| `{name}` | {flags[name]} |")
    return lines


def render() -> str:
    return "\n".join([
        BEGIN,
        "",
        "Services (api, worker, beat, flower): every variable their settings objects read.",
        "",
        *service_table(),
        "",
        "Trainer (`train.py`): the broker sets these on every replica of a PyTorchJob; a flag wins over its variable.",
        "",
        *trainer_table(),
        "",
        END,
    ])


def readme_block() -> str:
    text = README.read_text()
    assert BEGIN in text and END in text, f"README.md lacks the {BEGIN} … {END} markers"
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        README.write_text(README.read_text().replace(readme_block(), render()))
        return 0
    print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
