"""bench_features on a tiny workload: the table's shape, and baselines that compute what we do."""

from __future__ import annotations

import numpy as np

from dask_pipeline.features.benchmark import (bench_features, format_features_table, pandas_features,
                                              synthetic_bars, talib_features)
from dask_pipeline.features import compute


def test_bench_features_table():
    result = bench_features(n_symbols=2, n_bars=300, repeats=1, exactness_bars=5_000)
    assert list(result.implementation) == ["dask-pipeline", "pandas", "dask-pipeline", "TA-Lib"]
    assert (result.bar_features_per_s > 0).all()
    assert result.ours_speedup.iloc[0] == 1.0
    exactness = result.attrs["std_exactness"].set_index("implementation").max_rel_error
    assert exactness["dask-pipeline"] < 1e-6
    text = format_features_table(result)
    assert "TA-Lib subset" in text and "drifting" in text


def test_baselines_compute_the_same_features():
    bars = synthetic_bars(1, 2000, seed=5)[0]
    ours = compute(bars)
    for baseline in (pandas_features(bars), talib_features(bars)):
        for column in baseline:
            a = ours[column].to_numpy(np.float64)
            b = baseline[column].to_numpy(np.float64)
            assert np.array_equal(np.isnan(a), np.isnan(b)), column
            ok = ~np.isnan(b)
            np.testing.assert_allclose(a[ok], b[ok], rtol=1e-4, atol=1e-6 * np.abs(b[ok]).max(), err_msg=column)
