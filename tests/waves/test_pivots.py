"""Zigzag pivots: the numba kernel agrees with the plain-Python reference and finds hand-built swings."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_pipeline.waves.pivots import HIGH, LOW, atr_nb, find_pivots
from dask_pipeline.waves.reference import atr_py, pivots_py

from .samples import TEXTBOOK, TEXTBOOK_BARS, leg_bars, random_walk


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 400),
    mode=st.sampled_from(["percent", "atr"]),
    threshold=st.floats(0.005, 4.0),
    period=st.integers(1, 30),
)
def test_kernel_matches_reference(seed, n, mode, threshold, period):
    bars = random_walk(n, seed)
    if mode == "percent":
        threshold = threshold / 40.0
    h, l, c = (bars[x].to_numpy() for x in ("high", "low", "close"))
    np.testing.assert_array_equal(atr_nb(h, l, c, period), atr_py(list(h), list(l), list(c), period))
    pos, price, kind = find_pivots(h, l, c, mode, threshold, period)
    expected = pivots_py(list(h), list(l), list(c), mode, threshold, period)
    assert list(zip(pos.tolist(), price.tolist(), kind.tolist())) == expected
    # Alternating swings, in time order, at the bar's high or low.
    assert np.all(np.diff(pos) > 0) and np.all(kind[1:] == -kind[:-1])
    np.testing.assert_array_equal(price, np.where(kind == HIGH, h[pos], l[pos]))


def test_straight_legs_give_their_vertices():
    bars = leg_bars(TEXTBOOK, TEXTBOOK_BARS)
    pos, price, kind = find_pivots(bars["high"], bars["low"], bars["close"])
    assert pos.tolist() == np.cumsum([0, *TEXTBOOK_BARS]).tolist()
    assert price.tolist() == TEXTBOOK
    assert kind.tolist() == [LOW, HIGH, LOW, HIGH, LOW, HIGH]


def test_percent_threshold_needs_the_full_move():
    # 100 -> 104.9 -> 100 is under 5%: no swing; 100 -> 105 -> 99 is one.
    flat = leg_bars([100.0, 104.9, 100.0], 10)
    assert find_pivots(flat["high"], flat["low"], flat["close"], "percent", 0.05)[0].size == 0
    swing = leg_bars([100.0, 105.0, 99.0], 10)
    pos, price, kind = find_pivots(swing["high"], swing["low"], swing["close"], "percent", 0.05)
    assert pos.tolist() == [0, 10, 20] and kind.tolist() == [LOW, HIGH, LOW]


def test_no_bars_no_pivots():
    empty = np.zeros(0)
    assert all(a.size == 0 for a in find_pivots(empty, empty, empty))
