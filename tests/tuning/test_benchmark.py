"""bench tune end to end at toy sizes (its figures are for README, not for tests)."""

from __future__ import annotations

from dask_pipeline.tuning.benchmark import bench_tune, format_tune_table


def test_bench_tune_small():
    table = bench_tune(trials_overhead=6, resume_trials=30, wf_trials=2, workers=1, repeats=1, preset="blank")
    assert len(table) == 9
    assert (table["value"] > 0).all()
    assert table["others_cores"].iloc[:-1].notna().all()
    text = format_tune_table(table)
    assert "resume: open a 30-trial study" in text
    # Both sides drew the same parameter sets and got the same values.
    assert "same trials and values" in text and "DIFFER" not in text
