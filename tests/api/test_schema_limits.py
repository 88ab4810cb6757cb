"""One app's request limits never leak into another schema built in the same process."""

from __future__ import annotations

from api.schemas import TrainingJobRequestSchema

REQUEST = {"framework": "hf", "model_id": "gpt2", "run_id": "r1", "checkpoint_base_uri": "s3://bucket1/runs",
           "dataset_uri": "s3://bucket1/data.jsonl", "gpus_per_node": 8, "num_nodes": 16}


def test_a_schema_with_tight_limits_does_not_tighten_the_next_one() -> None:
    tight = TrainingJobRequestSchema(max_nodes=2, max_gpus_per_node=4, allowed_namespaces=("team-a",))
    assert set(tight.validate(REQUEST)) == {"gpus_per_node", "num_nodes"}
    assert TrainingJobRequestSchema().validate(REQUEST) == {}
