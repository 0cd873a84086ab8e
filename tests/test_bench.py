"""The benchmarks run end to end at toy sizes (their figures are for README, not for tests)."""

from __future__ import annotations

from dask_pipeline.bench import bench_tune, format_tune_table


def test_bench_tune_small():
    table = bench_tune(trials_overhead=10, resume_trials=50, wf_trials=2, workers=1, repeats=1)
    assert len(table) == 6
    assert (table["value"] > 0).all()
    text = format_tune_table(table)
    assert "resume: open a 50-trial study" in text and "DIFFER" not in text
