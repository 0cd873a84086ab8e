"""The benchmarks run end to end at toy sizes (their figures are for README, not for tests)."""

from __future__ import annotations

from dask_pipeline.bench import bench_tune, format_tune_table


def test_bench_tune_small():
    table = bench_tune(trials_overhead=6, resume_trials=30, wf_trials=2, workers=1, repeats=1, preset="blank")
    assert len(table) == 9
    assert (table["value"] > 0).all()
    assert table["others_cores"].iloc[:-1].notna().all()
    text = format_tune_table(table)
    assert "resume: open a 30-trial study" in text
    # Both sides drew the same parameter sets and got the same values.
    assert "same trials and values" in text and "DIFFER" not in text


def test_bench_scale_small():
    from dask_pipeline.bench import bench_scale, format_scale_table

    table = bench_scale("small", (1,), repeats=1, memory_workload="small", memory_limit="2GiB", memory_preset="blank")
    assert list(table.runner) == ["local", "nodes", "local, 2GiB/worker"]
    assert table.same_bytes.iloc[:2].tolist() == [True, True]  # worker processes by address: same result files
    memory = table.iloc[-1]
    assert memory.workers_lost == 0 and all(int(m) > 50 for m in memory.peak_rss_mib.split(" / "))
    assert "nodes" in format_scale_table(table)
