"""Job records for the broker's tests, built the way the API builds them (a `JobSpec` with defaults applied)."""

from __future__ import annotations

import dataclasses
from typing import Any

from broker.jobs import JobRecord, JobSpec, default_job_name


def make_spec(run_id: str = "run-1", **overrides: Any) -> JobSpec:
    framework = overrides.pop("framework", "hf")
    base = JobSpec(
        framework=framework,
        model_id="tiny-gpt2",
        run_id=run_id,
        checkpoint_base_uri="s3://runs/base",
        dataset_uri="s3://data/train.jsonl",
        namespace="ml",
        job_name=default_job_name(framework, run_id),
        image="registry.example/trainer:1.0",
        gpus_per_node=0,
        cpus_per_node=2,
        memory_per_node_gb=4,
    )
    return dataclasses.replace(base, **overrides)


def make_record(run_id: str = "run-1", attempt: int = 1, **overrides: Any) -> JobRecord:
    spec = make_spec(run_id, **overrides)
    return JobRecord(name=spec.job_name, spec=spec, attempt=attempt, spec_hash=spec.spec_hash())
