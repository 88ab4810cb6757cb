"""Each benchmark stays runnable: every module of bench/ is found by `python -m bench`, and each one runs at a
tiny size and returns figures with their baselines (timings are not asserted: they belong to `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import __main__ as runner
from bench import (
    _submit_profile,
    api_bench,
    broker_bench,
    list_bench,
    memory_bench,
    model_scale,
    runner_bench,
    storage_bench,
    sync_bench,
)
from bench.core import Figure


def test_every_benchmark_module_is_discovered() -> None:
    assert {"sync_bench", "list_bench", "memory_bench", "api_bench", "broker_bench", "model_scale", "storage_bench",
            "runner_bench", "data_scale"} <= set(runner.discover())
    assert "_gpu_check" not in runner.discover()  # bench/gpu_check.sh's, for a GPU machine: not in `make bench`


def test_sync_bench_counts_one_list_per_namespace_page_at_a_tiny_size() -> None:
    figures = sync_bench.figures([(12, 1), (12, 3)], per_job_up_to=12)
    calls = {f.name: f.value for f in figures if f.name.endswith("Kubernetes calls")}
    assert calls == {"sync 12 jobs / 1 ns: Kubernetes calls": 1, "sync 12 jobs / 3 ns: Kubernetes calls": 3}
    assert all(f.ok is not False for f in figures if "round trips" in f.name)


def test_list_and_memory_benchmarks_run_at_a_tiny_size() -> None:
    listed = list_bench.figures([3600], repeats=2)
    assert listed[0].baseline and listed[0].ratio is not None
    memory = memory_bench.figures(100)
    assert 500 < memory[0].value < 50_000


def test_the_runner_writes_one_json_line_per_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_bench, "run", lambda quick: memory_bench.figures(50))
    results = tmp_path / "results.jsonl"
    assert runner.main(["--quick", "--only", "memory_bench", "--results", str(results)]) == 0
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 3
    assert {"name", "value", "baseline", "ratio", "commit", "date"} <= lines[0].keys()


def test_figure_targets_read_the_ratio_or_the_value() -> None:
    assert Figure("x", 1.0, baseline=4.0, target=">= 0.5").ok is False
    assert Figure("x", 30.0, target="<= 50", target_on="value").ok is True


@pytest.mark.slow
def test_api_and_broker_benchmarks_run_at_a_tiny_size() -> None:
    api = api_bench.figures(seconds=1.0, processes=2)
    assert all(f.baseline and f.value > 0 for f in api)
    broker = broker_bench.figures(samples=3, load_seconds=1, throughput_jobs=10)
    assert len(broker) == 5 and all(f.value > 0 for f in broker)


def test_the_submit_profile_submits_every_job_and_splits_the_cpu_at_a_tiny_size() -> None:
    cost = _submit_profile.measure(jobs=5, warmup=2, tree=True)
    assert cost.outcomes == {"submitted"}
    assert cost.wall_ms > 0 and cost.logic_cpu_ms > 0  # the other processes' CPU is in 10 ms ticks: 0 at this size
    assert cost.emulator_cpu_ms >= 0 and cost.redis_cpu_ms >= 0 and "submit_job" in cost.tree


@pytest.mark.slow
def test_model_scale_measures_memory_checkpoint_shares_and_save_cost_at_a_tiny_size() -> None:
    """One runner, 1 vs 2 processes under torchrun, the tiny model: every figure is measured from the real runs
    (the 124M targets are checked by `make bench`, not here)."""
    figures = model_scale.figures(True, ["meta"])
    assert [f.name.split(":")[0] for f in figures] == ["meta"] * 4
    rss, anon, shares, save = figures
    assert rss.baseline and rss.value > 50 and rss.ratio is not None and "ranks: " in rss.note
    assert anon.baseline and 0 < anon.value <= rss.value and anon.baseline <= rss.baseline and not anon.target
    assert len(shares.note.split("MB by rank: ")[1].split(";")[0].split(",")) == 2  # both ranks wrote a shard
    assert shares.ok is True  # FSDP: DCP's shards are even, whatever the machine's speed
    assert save.baseline and save.baseline > 0 and "staging" in save.note


def test_storage_bench_uploads_and_counts_the_lookups_requests_at_a_tiny_size() -> None:
    upload, *lookup = storage_bench.figures(upload_mb=20, repeats=1, counts=[3, 40])
    assert upload.baseline and upload.value > 0
    requests = {f.name: f for f in lookup if f.name.endswith("S3 requests")}
    assert set(requests) == {"latest checkpoint of 3: S3 requests", "latest checkpoint of 40: S3 requests"}
    assert all(f.ok is not False for f in requests.values())  # the lookup does not grow with the count


@pytest.mark.slow
def test_runner_bench_runs_both_runners_and_their_baselines_at_a_tiny_size() -> None:
    figures = runner_bench.figures(steps=6, warmup=2, repeats=1)
    assert [f.name.split(" ")[0] for f in figures] == ["meta", "hf"]
    assert all(f.baseline and f.value > 0 for f in figures)
