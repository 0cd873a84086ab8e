"""bench scale end to end at toy sizes (its figures are for README, not for tests)."""

from __future__ import annotations

from dask_pipeline.walkforward.benchmark import bench_scale, format_scale_table


def test_bench_scale_small():
    table = bench_scale("small", (1,), repeats=1, memory_workload="small", memory_limit="2GiB", memory_preset="blank",
                        preset="blank")
    assert list(table.runner) == ["local", "nodes", "local, 2GiB/worker"]
    assert table.same_bytes.iloc[:2].tolist() == [True, True]  # worker processes by address: same result files
    memory = table.iloc[-1]
    assert memory.workers_lost == 0 and all(int(m) > 50 for m in memory.peak_rss_mib.split(" / "))
    assert "nodes" in format_scale_table(table)
