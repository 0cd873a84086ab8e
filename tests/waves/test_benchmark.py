"""The waves benchmark runs end to end on a tiny workload and formats its table."""

from __future__ import annotations

from dask_pipeline.waves.backends import gpu_available
from dask_pipeline.waves.benchmark import COLUMNS, bench_waves, format_waves_table


def test_tiny_benchmark_has_every_implementation():
    table = bench_waves(
        windows=6, window_bars=150, reference_windows=2, sp500_symbols=10, sp500_windows=4, measure_symbols=1, repeats=1
    )
    assert list(table.columns) == COLUMNS
    impls = ["reference (plain Python)", "numpy", "numba", *(["cupy"] if gpu_available() else [])]
    symbol = table[table["workload"].str.startswith("1 symbol")]
    assert list(symbol["implementation"]) == impls
    assert symbol["candidates"].nunique() == 1 and (symbol["candidates"] > 0).all()
    assert (symbol["candidates_per_s"] > 0).all() and symbol["note"].iloc[0].startswith("extrapolated from 2 of ")
    sp500 = table[table["workload"].str.startswith("sp500")]
    assert "numba" in set(sp500["implementation"]) and (sp500["scan_s"] > 0).all()
    text = format_waves_table(table)
    assert text.splitlines()[0].startswith("| workload | implementation |") and len(text.splitlines()) == len(table) + 2
