"""bench tune end to end at toy sizes (its figures are for README, not for tests)."""

from __future__ import annotations

from distributed import Client, LocalCluster

from dask_pipeline.tuning.benchmark import bench_tune, bench_tune_features, format_tune_table


def test_bench_tune_small():
    table = bench_tune(trials_overhead=6, resume_trials=30, wf_trials=2, workers=1, repeats=1, preset="blank")
    assert len(table) == 9
    assert (table["value"] > 0).all()
    assert table["others_cores"].iloc[:-1].notna().all()
    text = format_tune_table(table)
    assert "resume: open a 30-trial study" in text
    # Both sides drew the same parameter sets and got the same values.
    assert "same trials and values" in text and "DIFFER" not in text


def test_bench_tune_features_small():
    # One in-process worker: the row's machinery at toy size, not its figures.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        table = bench_tune_features(trials=3, windows=2, workers=1, workload="small", preset="blank", client=client)
    text = format_tune_table(table)
    counts = [int(v) for v in table.loc[table["unit"] == "count", "value"]]
    assert counts[0] == 3 * 5  # every trial computes its own set for each of the 5 symbols
    assert counts[1] in (5, 10) and f"= {counts[1] // 5} sets x 5 symbols = {counts[1]}" in text
    assert "same trials and values" in text and "DIFFER" not in text
    assert (table["value"] > 0).all()
