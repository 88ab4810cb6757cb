"""marshmallow schemas: what the API accepts (`TrainingJobRequest`) and what it answers (`TrainingJobStatus`, …).

The same classes validate requests and generate `/openapi.json` (see `api.openapi`), so the description cannot drift
from the behaviour. Every rule refuses with a message under the field's name; nothing here raises anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from api import validators as v
from broker import queue
from broker.jobs import (
    DNS1035_RE,
    DNS1123_LABEL_RE,
    FRAMEWORKS,
    MAX_JOB_NAME,
    TERMINAL,
    JobRecord,
    JobSpec,
    JobStatus,
    default_job_name,
    is_reserved_env,
)
from broker.launch_policy import DEFAULT_ENV_ALLOW, refused_env
from broker.recovery import recovery_view
from broker.settings import BrokerSettings

#: Extra-arg keys that name the trainer's own settings: they would never take effect, and are refused.
FIXED_EXTRA_KEYS = frozenset({"framework", "run_id", "checkpoint_base_uri", "checkpoint_prefix", "dataset_uri",
                              "logs_uri", "config_uri", "model_id", "config_path", "work_dir", "resume", "help"})

_MAX_MAP_ENTRIES = 100
_MAX_TEXT = 4096
_MAPS = ("env", "labels", "annotations", "extra_args")


class Checked(fields.String):
    """A string passed through a `check` function that validates and normalises it (see `api.validators`)."""

    def __init__(self, check: Callable[[str], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return self.check(super()._deserialize(value, attr, data, **kwargs))


class Text(fields.String):
    """A non-empty single-line string without control characters, of bounded length."""

    def __init__(self, max_length: int = 256, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=1, max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if any(ch.isspace() or not ch.isprintable() for ch in text):
            raise ValidationError("must not contain whitespace or control characters")
        return text


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise ValidationError("integers must fit in 64 bits")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("numbers must be finite")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_TEXT or "\x00" in value:
            raise ValidationError(f"strings must be at most {_MAX_TEXT} characters, without NUL")
        return value
    raise ValidationError("must be a string, number, boolean, or a list of those")


class ExtraArg(fields.Field):
    """A scalar (string, number, boolean) or a list of scalars."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list):
            if len(value) > _MAX_MAP_ENTRIES:
                raise ValidationError(f"lists hold at most {_MAX_MAP_ENTRIES} items")
            return [_scalar(item) for item in value]
        return _scalar(value)


def _env_key(key: str) -> str:
    if not v.ENV_NAME_RE.fullmatch(key):
        raise ValidationError("must be a variable name: letters, digits and '_', not starting with a digit")
    if is_reserved_env(key.upper()):
        raise ValidationError("is set by the system and cannot be overridden")
    return key


def _env_value(value: str) -> str:
    if "\x00" in value or len(value) > 32768:
        raise ValidationError("must be at most 32768 characters, without NUL")
    return value


def _few_entries(value: dict[str, Any]) -> None:
    if len(value) > _MAX_MAP_ENTRIES:
        raise ValidationError(f"at most {_MAX_MAP_ENTRIES} entries")


def _map(keys: fields.Field, values: fields.Field) -> fields.Dict:
    return fields.Dict(keys=keys, values=values, validate=_few_entries, metadata={"maxProperties": _MAX_MAP_ENTRIES})


class RecoveryPolicySchema(Schema):
    """`{"max_attempts": 3, "backoff_s": 60}`: attempts in all (the first included), seconds before each new one."""

    max_attempts = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=100))
    backoff_s = fields.Float(validate=validate.Range(min=0, max=86400), allow_nan=False)


class TrainingJobRequestSchema(Schema):
    """The unified training request. Loads into a `broker.jobs.JobSpec` with every default applied."""

    framework = fields.String(required=True, validate=validate.OneOf(FRAMEWORKS))
    model_id = Text(required=True, max_length=512, metadata={"description": "model name or path, e.g. gpt2"})
    run_id = Checked(v.check_run_id, required=True, metadata={"pattern": v.RUN_ID_RE.pattern})
    checkpoint_base_uri = Checked(v.check_storage_uri, required=True, metadata={"example": "s3://bucket/runs"})
    dataset_uri = Checked(v.check_storage_uri, required=True, metadata={"example": "s3://bucket/datasets/x/"})
    image = Checked(v.check_image, metadata={"example": "ghcr.io/deepfinery/trainer:latest"})
    num_nodes = fields.Integer(strict=True, validate=validate.Range(min=1))
    gpus_per_node = fields.Integer(strict=True, validate=validate.Range(min=0))
    cpus_per_node = fields.Integer(strict=True, validate=validate.Range(min=1, max=1024))
    memory_per_node_gb = fields.Integer(strict=True, validate=validate.Range(min=1, max=65536))
    config_path = Text(max_length=1024, allow_none=True)
    resume_from_checkpoint = fields.Boolean()
    extra_args = _map(Checked(v.check_identifier), ExtraArg())
    env = _map(Checked(_env_key), Checked(_env_value))
    labels = _map(Checked(v.check_k8s_key), Checked(v.check_label_value))
    annotations = _map(Checked(v.check_k8s_key), fields.String(validate=validate.Length(max=_MAX_TEXT)))
    namespace = Checked(v.check_namespace, metadata={"pattern": DNS1123_LABEL_RE.pattern, "maxLength": 63})
    job_name = Checked(v.check_job_name, metadata={"pattern": DNS1035_RE.pattern, "maxLength": MAX_JOB_NAME})
    recovery = fields.Nested(RecoveryPolicySchema, metadata={
        "description": "automatic recovery; without it the namespace's default (TRAINER_RECOVERY) applies"})
    queue = Checked(v.check_namespace, metadata={
        "description": "Kueue LocalQueue (admission mode kueue); default: the namespace's (TRAINER_KUEUE_QUEUES)",
        "pattern": DNS1123_LABEL_RE.pattern, "maxLength": 63})

    def __init__(
        self,
        *,
        max_nodes: int = 64,
        max_gpus_per_node: int = 8,
        allowed_namespaces: tuple[str, ...] = (),
        default_namespace: str = "default",
        env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW,
        max_maps_bytes: int = 64 * 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.default_namespace = default_namespace
        self.env_allow = env_allow
        self.max_maps_bytes = max_maps_bytes
        # Configured limits become validators of this instance, so /openapi.json shows them too.
        # marshmallow copies declared fields shallowly: build new validator lists, never append to the shared ones
        # (appending leaked one app's limits into every schema built after it in the same process).
        self._add_validator("num_nodes", validate.Range(max=max_nodes))
        self._add_validator("gpus_per_node", validate.Range(max=max_gpus_per_node))
        if allowed_namespaces:
            self._add_validator("namespace", validate.OneOf(allowed_namespaces))

    def _add_validator(self, name: str, validator: validate.Validator) -> None:
        field = self.fields[name]
        field.validators = [*field.validators, validator]

    @validates_schema
    def _launch_policy(self, data: dict[str, Any], **kwargs: Any) -> None:
        """The env allow-list, extra-arg keys that would shadow the run's own settings, and the maps' total size."""
        errors: dict[str, Any] = {}
        env_errors = {k: [why] for k in data.get("env", {}) if (why := refused_env(k, self.env_allow))}
        if env_errors:
            errors["env"] = env_errors
        fixed = {k: ["names one of the run's own settings; it cannot be set as an extra arg"]
                 for k in data.get("extra_args", {}) if k.lower() in FIXED_EXTRA_KEYS}
        if fixed:
            errors["extra_args"] = fixed
        sizes = {k: len(json.dumps(data[k], ensure_ascii=False).encode()) for k in _MAPS if k in data}
        if sum(sizes.values()) > self.max_maps_bytes:
            biggest = max(sizes, key=lambda k: sizes[k])
            errors[biggest] = [f"env, labels, annotations and extra_args hold {sum(sizes.values())} bytes together, "
                               f"more than the limit of {self.max_maps_bytes} (this one: {sizes[biggest]})"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def to_spec(self, data: dict[str, Any], **kwargs: Any) -> JobSpec:
        data.setdefault("namespace", self.default_namespace)
        data.setdefault("job_name", default_job_name(data["framework"], data["run_id"]))
        if data.get("config_path") is None:
            data.pop("config_path", None)
        if "recovery" in data:
            data["recovery"] = dict(sorted(data["recovery"].items()))
        return JobSpec(**data)


class RecoveryStatusSchema(Schema):
    max_attempts = fields.Integer()
    backoff_s = fields.Float()
    attempts_used = fields.Integer()
    attempts_left = fields.Integer()
    next_attempt_at = fields.String(allow_none=True, metadata={"description": "set during a recovery's backoff"})
    last_failure = fields.String(allow_none=True, metadata={"description": "why the last attempt failed"})


class TrainingJobStatusSchema(Schema):
    """What the API answers about one job."""

    name = fields.String(required=True)
    status = fields.Enum(JobStatus, by_value=True, required=True)
    terminal = fields.Boolean(metadata={"description": "true once the status can change only by a retry"})
    detail = fields.String()
    framework = fields.String()
    run_id = fields.String()
    model_id = fields.String()
    namespace = fields.String()
    attempt = fields.Integer()
    resume_from_checkpoint = fields.Boolean(metadata={"description": "true on every attempt after the first"})
    num_nodes = fields.Integer()
    gpus_per_node = fields.Integer()
    checkpoint_prefix = fields.String()
    cluster_object = fields.String(allow_none=True, metadata={"description": "the PyTorchJob's name once known"})
    created_at = fields.String()
    updated_at = fields.String()
    submitted_at = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    recovery = fields.Nested(RecoveryStatusSchema)
    queue = fields.Dict(allow_none=True, metadata={
        "description": "while waiting_quota: position (1 = next), ahead, ahead_jobs, waiting_for, gpus, jobs, "
                       "resource_quota (builtin) or kueue_queue (kueue); null otherwise"})


#: One instance for every answer: building a schema deep-copies its fields, which cost more than the dump itself
#: when a page of a hundred jobs built one each. Dumping keeps no state on the instance.
_STATUS_SCHEMA = TrainingJobStatusSchema()


def status_view(record: JobRecord, settings: BrokerSettings | None = None) -> dict[str, Any]:
    """The job as `TrainingJobStatus` JSON."""
    view = {
        "name": record.name,
        "status": record.status,
        "terminal": record.status in TERMINAL,
        "detail": record.detail,
        "framework": record.framework,
        "run_id": record.run_id,
        "model_id": record.spec.model_id,
        "namespace": record.namespace,
        "attempt": record.attempt,
        "resume_from_checkpoint": record.resume,
        "num_nodes": record.spec.num_nodes,
        "gpus_per_node": record.spec.gpus_per_node,
        "checkpoint_prefix": record.checkpoint_prefix,
        "cluster_object": record.cluster_object,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "recovery": recovery_view(record, settings or BrokerSettings()),
        "queue": queue.parse(record.queue_info) if record.status == JobStatus.WAITING_QUOTA else None,
    }
    return _STATUS_SCHEMA.dump(view)


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(TrainingJobStatusSchema))
    next_cursor = fields.String(allow_none=True, metadata={"description": "pass as `cursor` for the next page"})


class JobListQuerySchema(Schema):
    """Query parameters of `GET /train`."""

    status = fields.Enum(JobStatus, by_value=True)
    framework = fields.String(validate=validate.OneOf(FRAMEWORKS))
    run_id = Checked(v.check_run_id)
    namespace = Checked(v.check_namespace)
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(validate=validate.Length(min=1, max=512))


class EventSchema(Schema):
    at = fields.String()
    from_ = fields.String(data_key="from", attribute="from", allow_none=True)
    to = fields.String()
    reason = fields.String()
    attempt = fields.Integer()


class JobEventsSchema(Schema):
    name = fields.String()
    events = fields.List(fields.Nested(EventSchema))


class MetricsPointSchema(Schema):
    """One point of a run's metrics series; a metric the run did not log at that step is null."""

    step = fields.Integer(required=True)
    loss = fields.Float(allow_none=True, metadata={"description": "train loss (a bucket's mean when downsampled)"})
    eval_loss = fields.Float(allow_none=True)
    lr = fields.Float(allow_none=True, metadata={"description": "learning rate"})
    tokens_per_s = fields.Float(allow_none=True)
    grad_norm = fields.Float(allow_none=True)
    epoch = fields.Float(allow_none=True)
    elapsed_s = fields.Float(allow_none=True, metadata={"description": "seconds since the attempt started"})


class MetricsSeriesSchema(Schema):
    name = fields.String()
    status = fields.String()
    attempt = fields.Integer()
    max_points = fields.Integer()
    points = fields.List(fields.Nested(MetricsPointSchema))
    total_points = fields.Integer(metadata={"description": "points in the rows read, before downsampling"})
    downsampled = fields.Boolean()
    complete = fields.Boolean(metadata={"description": "false when the file was beyond the byte budget and was "
                                                       "read in windows spread over the run"})
    summary = fields.Dict(allow_none=True, metadata={"description": "the run's closing row: step, loss, "
                                                                    "steps_per_s, train_runtime"})


class ErrorBodySchema(Schema):
    code = fields.String(metadata={"description": "machine-readable, e.g. invalid_request, not_found, conflict"})
    message = fields.String()
    fields_ = fields.Dict(data_key="fields", attribute="fields", metadata={"description": "per-field messages"})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema)
