"""The run configuration: flags with environment fallbacks, merged into one typed, frozen `RunConfig`.

The PyTorchJob renders `train.py --framework F --run-id R ... [--key value ...]` and also injects the same settings as
environment variables (`FRAMEWORK`, `RUN_ID`, ..., `TRAINING_EXTRA_ARGS_JSON`). A flag wins over its variable; extra
`--key value` flags win over the JSON. Every problem is collected and raised as ONE `ConfigError` whose message names
all the bad settings, so `train.py` can exit with status 2 and one clear line.

No heavy imports here: `python -m trainer --help` and config errors must be fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FRAMEWORKS = ("hf", "nemo", "meta")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SHARDINGS = ("auto", "fsdp", "ddp", "none")

# (flag dest, environment variable) for the settings the PyTorchJob passes both ways.
_ENV_FALLBACKS = {
    "framework": "FRAMEWORK",
    "run_id": "RUN_ID",
    "checkpoint_base_uri": "CHECKPOINT_BASE_URI",
    "checkpoint_prefix": "CHECKPOINT_PREFIX",
    "dataset_uri": "DATASET_URI",
    "logs_uri": "LOGS_URI",
    "config_uri": "CONFIG_URI",
    "model_id": "MODEL_ID",
    "config_path": "CONFIG_PATH",
    "work_dir": "TRAINER_WORK_DIR",
}
_REQUIRED = ("framework", "run_id", "checkpoint_base_uri", "dataset_uri", "model_id")
_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def now_iso() -> str:
    """The system's one timestamp format (the broker's too): UTC with milliseconds, e.g. `2026-11-29T04:36:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ConfigError(ValueError):
    """Missing or invalid settings; the message is one line naming every bad setting."""


@dataclass(frozen=True)
class TrainingParams:
    """Training knobs from `extra_args` (`TRAINING_EXTRA_ARGS_JSON` and extra `--key value` flags).

    `max_steps` (when > 0) wins over `num_epochs`. `eval_steps=None` evaluates at every `save_steps`; 0 disables
    evaluation. `precision="auto"` means bf16 (or fp16) on GPU and fp32 on CPU. `keep_checkpoints=None` keeps all.
    `sharding`: `auto` (FSDP when the run has more than one process), `fsdp`, `ddp` or `none` (one process).
    `activation_checkpointing` recomputes each block's activations in backward; `compile` runs `torch.compile` on
    each block (meta runner); `async_save` writes and uploads checkpoints beside training after a staging copy.
    `dataset_streaming` reads the shards as a stream split across the ranks (no cache, no eval split; needs
    `max_steps`), for datasets larger than a node's disk (see `trainer.data.stream`).
    """

    max_steps: int = -1
    num_epochs: float = 1.0
    lr: float = 5e-5
    batch_size: int = 8
    gradient_accumulation: int = 1
    save_steps: int = 500
    eval_steps: int | None = None
    logging_steps: int = 10
    warmup_steps: int = 0
    weight_decay: float = 0.0
    precision: str = "auto"
    block_size: int = 128
    eval_fraction: float = 0.1
    dataset_text_field: str = "text"
    keep_checkpoints: int | None = None
    seed: int = 42
    max_grad_norm: float = 1.0
    sharding: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    async_save: bool = True
    dataset_streaming: bool = False


@dataclass(frozen=True)
class RunConfig:
    """One run's resolved settings. URIs are `s3://bucket/key`, `file://path` or plain local paths.

    `checkpoint_prefix` defaults to `<checkpoint_base_uri>/<run_id>/framework=<framework>`; `logs_uri` and
    `config_uri` default to `<prefix>/logs` and `<prefix>/config`; checkpoints always live at `<prefix>/checkpoints`.
    `config_path` is the request's optional framework config file (e.g. a NeMo YAML), passed through as given.
    `work_dir` is local scratch space shared by the ranks of one node ("" = chosen by `trainer.context`).
    `extra` holds extra args this trainer does not know (kept and recorded, never silently dropped from run.json).
    """

    framework: str
    run_id: str
    checkpoint_base_uri: str
    dataset_uri: str
    model_id: str
    checkpoint_prefix: str
    logs_uri: str
    config_uri: str
    resume: bool = False
    config_path: str = ""
    work_dir: str = ""
    training: TrainingParams = field(default_factory=TrainingParams)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def checkpoints_uri(self) -> str:
        return join_uri(self.checkpoint_prefix, "checkpoints")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what `config/run.json` records)."""
        data = dataclasses.asdict(self)
        data["extra"] = dict(self.extra)
        data["checkpoints_uri"] = self.checkpoints_uri
        return data


def join_uri(base: str, *parts: str) -> str:
    """Join URI segments with single slashes (works for s3://, file:// and local paths)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> RunConfig:
    """Parse flags (falling back to `environ`) into a `RunConfig`.

    Raises `ConfigError` with one line naming every missing or invalid setting. `--help` exits 0 through argparse.
    Everything after a `--` is an extra arg (`--key=value` or `--key value`), never one of the fixed flags.
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    own, extra_tokens = split_options(tokens)
    args, unknown = build_parser().parse_known_args(own)
    unknown = [*unknown, *extra_tokens]
    errors: list[str] = []
    values = {dest: getattr(args, dest) or environ.get(env, "") for dest, env in _ENV_FALLBACKS.items()}
    missing = [f"--{d.replace('_', '-')} ({_ENV_FALLBACKS[d]})" for d in _REQUIRED if not values[d]]
    if missing:
        errors.append("missing " + ", ".join(missing))
    if values["framework"] and values["framework"] not in FRAMEWORKS:
        errors.append(f"framework must be one of {', '.join(FRAMEWORKS)} (got {values['framework']!r})")
    resume = args.resume or _parse_resume(environ.get("RESUME_FROM_CHECKPOINT", ""), errors)
    extra = _merge_extra(environ.get("TRAINING_EXTRA_ARGS_JSON", ""), unknown, errors)
    training, leftovers = _training_params(extra, errors)
    if errors:
        raise ConfigError("; ".join(errors))
    own_prefix = join_uri(values["checkpoint_base_uri"], values["run_id"], f"framework={values['framework']}")
    prefix = values["checkpoint_prefix"] or own_prefix
    errors.extend(_contained(values, own_prefix, prefix))
    if errors:
        raise ConfigError("; ".join(errors))
    return RunConfig(
        framework=values["framework"],
        run_id=values["run_id"],
        checkpoint_base_uri=values["checkpoint_base_uri"],
        dataset_uri=values["dataset_uri"],
        model_id=values["model_id"],
        checkpoint_prefix=prefix,
        logs_uri=values["logs_uri"] or join_uri(prefix, "logs"),
        config_uri=values["config_uri"] or join_uri(prefix, "config"),
        resume=resume,
        config_path=values["config_path"],
        work_dir=values["work_dir"],
        training=training,
        extra=leftovers,
    )


END_OF_OPTIONS = "--"
#: Keys an extra arg may never take: they name the run's own settings, which come only from the fixed flags.
_FIXED_KEYS = frozenset({*_ENV_FALLBACKS, "resume", "help"})


def split_options(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the trainer's own options, the extra args after the first `--`)."""
    if END_OF_OPTIONS in tokens:
        at = list(tokens).index(END_OF_OPTIONS)
        return list(tokens[:at]), list(tokens[at + 1 :])
    return list(tokens), []


def _has_dot_segment(uri: str) -> bool:
    path = uri.split("://", 1)[-1]
    return any(part in (".", "..") for part in path.split("/"))


def _within(uri: str, root: str) -> bool:
    uri, root = uri.rstrip("/"), root.rstrip("/")
    return uri == root or uri.startswith(root + "/")


def _contained(values: Mapping[str, str], own_prefix: str, prefix: str) -> list[str]:
    """The run writes only under its own prefix, and its scratch space is an absolute path without `..`."""
    errors = []
    run_id = values["run_id"]
    if run_id in (".", "..") or "/" in run_id or "\\" in run_id:
        errors.append(f"run_id must not be '.', '..' or hold a path separator (got {run_id!r})")
    for key in ("checkpoint_base_uri", "checkpoint_prefix", "logs_uri", "config_uri", "dataset_uri"):
        if values[key] and _has_dot_segment(values[key]):
            errors.append(f"{key} must not hold '.' or '..' segments (got {values[key]!r})")
    if not _within(prefix, own_prefix):
        errors.append(f"checkpoint_prefix {prefix!r} is outside the run's own prefix {own_prefix!r}")
    for key in ("logs_uri", "config_uri"):
        if values[key] and not _within(values[key], prefix):
            errors.append(f"{key} {values[key]!r} is outside the run's prefix {prefix!r}")
    work_dir = values["work_dir"]
    if work_dir and (not work_dir.startswith("/") or _has_dot_segment(work_dir)):
        errors.append(f"work_dir must be an absolute path without '..' (got {work_dir!r})")
    return errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        allow_abbrev=False,
        description="Train one run (hf | nemo | meta) under the normalized checkpoint/log/config layout. "
        "Every flag falls back to its environment variable; extra `--key value` flags (e.g. --max-steps 100, "
        "--lr 3e-5) merge over TRAINING_EXTRA_ARGS_JSON.",
    )
    for dest, env in _ENV_FALLBACKS.items():
        parser.add_argument(f"--{dest.replace('_', '-')}", dest=dest, default="", metavar=env, help=f"env {env}")
    parser.add_argument("--resume", action="store_true", help="resume from the latest complete checkpoint "
                        "(env RESUME_FROM_CHECKPOINT=true)")
    return parser


def _parse_resume(raw: str, errors: list[str]) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        errors.append(f"RESUME_FROM_CHECKPOINT must be true or false (got {raw!r})")
    return False


def _merge_extra(raw_json: str, unknown: Sequence[str], errors: list[str]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if raw_json.strip():
        try:
            loaded = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            errors.append(f"TRAINING_EXTRA_ARGS_JSON is not valid JSON ({exc.msg} at char {exc.pos})")
            loaded = {}
        if not isinstance(loaded, dict):
            errors.append("TRAINING_EXTRA_ARGS_JSON must be a JSON object")
            loaded = {}
        extra.update({str(k).replace("-", "_"): v for k, v in loaded.items()})
    for key, value in _parse_extra_flags(unknown, errors).items():
        if key in _FIXED_KEYS:
            errors.append(f"extra arg {key!r} names one of the run's own settings; it cannot be overridden")
            continue
        # The renderer passes scalars both ways; keep the JSON's typed value when the flag only repeats it.
        if not (key in extra and _render(extra[key]) == value):
            extra[key] = value
    return extra


def _render(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _parse_extra_flags(tokens: Sequence[str], errors: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and bare `--flag` (true). Values stay strings; typing happens later."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            errors.append(f"unexpected argument {token!r}")
            i += 1
            continue
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


def _training_params(extra: Mapping[str, Any], errors: list[str]) -> tuple[TrainingParams, dict[str, Any]]:
    """Type the known keys (strings from flags, JSON values as given); return the params and the unknown keys."""
    known = {f.name: f for f in dataclasses.fields(TrainingParams)}
    aliases = {"num_train_epochs": "num_epochs", "epochs": "num_epochs", "learning_rate": "lr",
               "gradient_accumulation_steps": "gradient_accumulation", "seq_len": "block_size",
               "max_seq_length": "block_size"}
    typed: dict[str, Any] = {}
    leftovers: dict[str, Any] = {}
    for raw_key, value in extra.items():
        key = aliases.get(raw_key, raw_key)
        if key not in known:
            leftovers[raw_key] = value
            continue
        try:
            typed[key] = _coerce(value, str(known[key].type))
        except (TypeError, ValueError):
            errors.append(f"{raw_key} must be {_describe(str(known[key].type))} (got {value!r})")
    params = TrainingParams(**typed)
    errors.extend(_validate(params))
    return params, leftovers


def _coerce(value: Any, type_name: str) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if "None" in type_name:
            return None
        raise ValueError("null")
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE - {""} or text in _FALSE - {""}:
            return text in _TRUE
        raise ValueError("not a boolean")
    if type_name.startswith("int"):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("not an integer")
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    if type_name.startswith("float"):
        if isinstance(value, bool):
            raise ValueError("not a number")
        return float(value)
    return str(value)


def _describe(type_name: str) -> str:
    if type_name == "bool":
        return "true or false"
    base = "an integer" if type_name.startswith("int") else "a number" if type_name.startswith("float") else "a string"
    return base + (" or null" if "None" in type_name else "")


def _validate(p: TrainingParams) -> list[str]:
    errors = []
    if p.max_steps <= 0 and p.num_epochs <= 0:
        errors.append("set max_steps > 0 or num_epochs > 0")
    for name in ("batch_size", "gradient_accumulation", "save_steps", "logging_steps", "block_size"):
        if getattr(p, name) < 1:
            errors.append(f"{name} must be >= 1 (got {getattr(p, name)})")
    for name in ("warmup_steps",):
        if getattr(p, name) < 0:
            errors.append(f"{name} must be >= 0")
    if p.eval_steps is not None and p.eval_steps < 0:
        errors.append("eval_steps must be >= 0 (0 disables evaluation)")
    if not 0 < p.eval_fraction < 1:
        errors.append(f"eval_fraction must be between 0 and 1 (got {p.eval_fraction})")
    if p.lr <= 0:
        errors.append(f"lr must be > 0 (got {p.lr})")
    if p.precision not in PRECISIONS:
        errors.append(f"precision must be one of {', '.join(PRECISIONS)} (got {p.precision!r})")
    if p.sharding not in SHARDINGS:
        errors.append(f"sharding must be one of {', '.join(SHARDINGS)} (got {p.sharding!r})")
    if p.keep_checkpoints is not None and p.keep_checkpoints < 1:
        errors.append("keep_checkpoints must be >= 1 (the newest complete checkpoint is always kept)")
    if p.dataset_streaming and p.max_steps <= 0:
        errors.append("dataset_streaming needs max_steps > 0 (a stream's length is unknown)")
    if not p.dataset_text_field:
        errors.append("dataset_text_field must not be empty")
    return errors
