"""bench_features on tiny shapes: the table's shape, and baselines that compute what we do."""

from __future__ import annotations

import numpy as np

from dask_pipeline.features import compute
from dask_pipeline.features.benchmark import (bench_features, format_features_table, market_bars, pandas_features,
                                              talib_features)


def test_bench_features_table():
    result = bench_features([(2, 300), (1, 400)], repeats=1, exactness_bars=5_000)
    assert list(result.implementation) == ["dask-pipeline", "pandas", "dask-pipeline", "TA-Lib"] * 2
    assert list(result["shape"].unique()) == ["2 x 300", "1 x 400"]
    assert (result.bar_features_per_s > 0).all() and (result.gb_per_s > 0).all()
    assert (result[result.implementation == "dask-pipeline"].ours_speedup == 1.0).all()
    exactness = result.attrs["std_exactness"].set_index("implementation").max_rel_error
    assert exactness["dask-pipeline"] < 1e-6
    assert result.attrs["copy_gb_per_s"] > 0
    text = format_features_table(result)
    assert "TA-Lib subset" in text and "drifting" in text and "GB/s" in text


def test_market_bars_shapes():
    daily, = market_bars(1, 500)
    minutes, = market_bars(1, 12_000)
    assert len(daily) == 500 and len(minutes) == 12_000
    assert set(daily.dtypes) == {np.dtype(np.float32)}
    assert (daily.index[1:] - daily.index[:-1]).min().days >= 1
    assert (minutes.index[1] - minutes.index[0]).seconds == 60


def test_baselines_compute_the_same_features():
    bars = market_bars(1, 2000)[0]
    ours = compute(bars)
    for baseline in (pandas_features(bars), talib_features(bars)):
        for column in baseline:
            a = ours[column].to_numpy(np.float64)
            b = baseline[column].to_numpy(np.float64)
            assert np.array_equal(np.isnan(a), np.isnan(b)), column
            ok = ~np.isnan(b)
            np.testing.assert_allclose(a[ok], b[ok], rtol=1e-4, atol=1e-6 * np.abs(b[ok]).max(), err_msg=column)
