"""Windows: bounds, the pre-score against the reference, the filters, and start pivots."""

from __future__ import annotations

import numpy as np
import pytest

from dask_pipeline.waves import WavesConfig
from dask_pipeline.waves.patterns import plan_series
from dask_pipeline.waves.pivots import atr_nb, find_pivots, reversal_amounts
from dask_pipeline.waves.reference import pre_score_components_py
from dask_pipeline.waves.windows import PRE_SCORE_COMPONENTS, window_bounds, window_stats_nb

from .samples import random_walk


def test_bounds_slide_by_the_overlap_and_end_at_the_last_bar():
    ids, first, end = window_bounds(1000, 400, 0.5, 100)
    assert ids.tolist() == [0, 1, 2, 3] and first.tolist() == [0, 200, 400, 600]
    assert end.tolist() == [400, 600, 800, 1000]
    ids, first, end = window_bounds(1050, 400, 0.5, 100)
    assert first.tolist() == [0, 200, 400, 600, 650] and end[-1] == 1050
    ids, first, end = window_bounds(1000, 400, 0.5, 2)  # the most recent, ids kept
    assert ids.tolist() == [2, 3] and first.tolist() == [400, 600]
    assert window_bounds(100, 400, 0.5, 5)[1:] == (np.array([0]), np.array([100]))
    assert window_bounds(1000, 400, 0.0, 100)[1].tolist() == [0, 400, 600]


@pytest.mark.parametrize("mode, threshold", [("atr", 3.0), ("percent", 0.03)])
def test_pre_score_components_match_reference(mode, threshold):
    bars = random_walk(3000, seed=5)
    h, l, c = (bars[x].to_numpy() for x in ("high", "low", "close"))
    atr = atr_nb(h, l, c, 14)
    amount = reversal_amounts(c, atr, mode, threshold)
    pos, price, _ = find_pivots(h, l, c, mode, threshold, 14)
    _, first, end = window_bounds(len(c), 300, 0.25, 100)
    lo, hi, comps = window_stats_nb(h, l, c, amount, pos, price, first, end)
    for w in range(first.size):
        a, b = first[w], end[w]
        inside = price[(pos >= a) & (pos < b)]
        assert hi[w] - lo[w] == inside.size
        expected = pre_score_components_py(list(h[a:b]), list(l[a:b]), list(c[a:b]), list(amount[a:b]), list(inside))
        np.testing.assert_allclose(comps[w], [expected[k] for k in PRE_SCORE_COMPONENTS], rtol=1e-9, atol=1e-12)


def test_filters_and_start_points():
    bars = random_walk(4000, seed=9)
    h, l, c = (bars[x].to_numpy() for x in ("high", "low", "close"))
    every = plan_series(h, l, c, WavesConfig(window_bars=200, pre_score_threshold=0.0, skip_flat_windows=False))
    strict = plan_series(h, l, c, WavesConfig(window_bars=200, pre_score_threshold=0.7))
    assert every.n_windows > strict.n_windows > 0
    assert np.all(strict.pre_score >= 0.7) and set(strict.window) <= set(every.window)
    assert np.all(every.hi - every.lo >= 6)

    spec = WavesConfig(window_bars=200, max_start_points=2, pre_score_threshold=0.0, skip_flat_windows=False)
    plan = plan_series(h, l, c, spec)
    for w in range(plan.n_windows):
        starts = plan.starts[plan.ptr[w] : plan.ptr[w + 1]]
        eligible = np.arange(plan.lo[w], plan.hi[w] - 5)
        lows = sorted((plan.price[j], j) for j in eligible if plan.kind[j] < 0)[:2]
        highs = sorted((-plan.price[j], j) for j in eligible if plan.kind[j] > 0)[:2]
        assert starts.tolist() == sorted(j for _, j in lows + highs)
