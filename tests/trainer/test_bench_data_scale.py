"""bench/data_scale.py runs end to end in its tiny mode (so it cannot rot); its targets are checked by running it."""

from __future__ import annotations

import pytest

from bench.data_scale import as_figures, main

pytestmark = pytest.mark.slow


def test_the_quick_bench_measures_every_ratio_and_one_rank_tokenizes() -> None:
    figures = main(["--quick", "--scale", "4"])
    assert figures["ranks_tokenized_2proc"] == 1
    assert figures["runs"]["20x_warm"]["cache_hit"] and figures["runs"]["20x_warm"]["tokenized"] == 0
    assert figures["runs"]["20x"]["tokenized"] == 1
    assert figures["runs"]["20x_stream"]["tokenized"] == 0  # streaming builds no cache
    for key in ("rss_ratio_20x_vs_1x", "anon_ratio_20x_vs_1x", "time_ratio_2proc_vs_1", "time_ratio_warm_vs_cold",
                "throughput_ratio", "stream_rss_ratio_20x_vs_1x", "stream_anon_ratio_20x_vs_1x"):
        assert figures[key] > 0
    for run in figures["runs"].values():  # RSS = anonymous + file-backed (+ shmem) pages, each peak polled apart
        assert 0 < run["peak_anon_mb"] < run["peak_rss_mb"] and 0 < run["peak_file_mb"] < run["peak_rss_mb"]
    # and `make bench` gets them as figures with their targets
    named = {fig.name: fig for fig in as_figures(figures)}
    assert named["data: time to step 1, warm restart vs cold (20x)"].target == "<= 0.3"
    assert named["data: ranks that tokenized, 2 procs"].ok is True
    assert all(fig.value > 0 for fig in named.values())
