"""Causal wave state: the kernel equals its plain definition at every bar, and every pattern it
reports is one the full-hindsight scan finds on the same pivots with the same score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_pipeline.errors import DataError
from dask_pipeline.waves import WavesConfig
from dask_pipeline.waves.backends import BACKENDS
from dask_pipeline.waves.causal import causal_waves, scan_best
from dask_pipeline.waves.causal.reference import causal_best_py
from dask_pipeline.waves.patterns import plan_series
from dask_pipeline.waves.rules import impulse_valid
from dask_pipeline.waves.score import combine, impulse_subscores, score_params
from dask_pipeline.waves.windows import Plan

from .samples import leg_bars, random_walk, textbook_story

PARAMS = score_params(WavesConfig())
#: Pivot settings: (mode, threshold, atr_period), from many pivots per lookback to few.
PIVOTS = [("atr", 1.5, 14), ("atr", 3.0, 5), ("percent", 0.02, 14), ("percent", 0.05, 14)]


def _prices(bars) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(bars[c].to_numpy(np.float64, copy=True) for c in ("high", "low", "close"))


def stepped(seed: int, n: int):
    """About ``n`` bars of 5-bar straight legs moving 1-4 points: many impulses tie in score."""
    rng = np.random.default_rng(seed)
    moves = rng.integers(1, 5, max(1, n // 5)) * np.resize([1.0, -1.0], max(1, n // 5))
    return leg_bars([100.0, *(100.0 + np.cumsum(moves))], 5)


def _state(prices, pivots, lookback, up_to, **options):
    mode, threshold, atr_period = pivots
    return causal_waves(*prices, mode=mode, threshold=threshold, atr_period=atr_period, lookback=lookback,
                        up_to=up_to, **options)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 250),
    ties=st.booleans(),
    pivots=st.sampled_from(PIVOTS),
    lookback=st.integers(6, 250),
    up_to=st.integers(1, 3),
)
def test_kernel_equals_its_definition_at_every_bar(seed, n, ties, pivots, lookback, up_to):
    prices = _prices(stepped(seed, n) if ties else random_walk(n, seed))
    state = _state(prices, pivots, lookback, up_to)  # drops candidates that left the lookback
    everything = _state(prices, pivots, lookback, up_to, keep_candidates=True)
    assert everything.candidates.shape[0] == everything.n_scored == state.n_scored
    np.testing.assert_array_equal(everything.pivots, state.pivots)
    np.testing.assert_array_equal(everything.score, state.score)
    expected = causal_best_py(*(list(p) for p in prices), *pivots, lookback, up_to, PARAMS)
    for t, (known, best) in enumerate(expected):
        # What bar t knows is the start of the whole series' zigzag, confirmed by t, same ids.
        k = len(known)
        assert list(zip(state.pos[:k].tolist(), state.price[:k].tolist(), state.kind[:k].tolist())) == known
        assert (state.confirm[:k] <= t).all() and (k == state.pos.size or state.confirm[k] > t)
        if best is None:
            assert not state.found[t] and state.pivots[t].tolist() == [-1] * 6
            assert state.score[t] == 0.0 and state.direction[t] == 0 and state.position[t] == lookback
        else:
            score, ids = best
            assert state.score[t] == score and state.pivots[t].tolist() == ids  # exactly: same arithmetic
            assert state.direction[t] == -known[ids[0]][2]
            assert state.position[t] == t - known[ids[5]][0]


@pytest.mark.parametrize("pivots", PIVOTS[::2])
def test_every_reported_pattern_is_a_scan_candidate_scored_identically(pivots):
    """Each best, at each bar it is reported: its last pivot is confirmed by then, its start
    is inside the lookback, and the hindsight scan's pivots, rules, score and kernel agree."""
    mode, threshold, atr_period = pivots
    lookback, up_to = 300, 3
    prices = _prices(random_walk(3000, seed=3))
    state = _state(prices, pivots, lookback, up_to)
    spec = WavesConfig(
        pivot_mode=mode, pivot_threshold=threshold, atr_period=atr_period, up_to=up_to, window_bars=lookback,
        top_k_per_window=1000, max_combinations=2**40,
    )  # fmt: skip
    plan = plan_series(*prices, spec)  # the full scan's pivots, running extreme included
    for name in ("pos", "price", "kind"):
        np.testing.assert_array_equal(getattr(state, name), getattr(plan, name))

    bars = np.flatnonzero(state.found)
    assert bars.size > 1000, "the series should hold patterns for most bars"
    ids = state.pivots[bars]
    assert (state.confirm[ids[:, 5]] <= bars).all() and (state.pos[ids[:, 0]] > bars - lookback).all()
    steps = np.diff(ids, axis=1)
    assert (steps % 2 == 1).all() and (steps <= 2 * up_to - 1).all()

    ids, first = np.unique(state.pivots[bars], axis=0, return_index=True)
    score = state.score[bars[first]]
    q = -plan.kind[ids[:, :1]] * plan.price[ids]
    assert impulse_valid(np, q).all()
    expected = combine(np, impulse_subscores(np, q, plan.pos[ids].astype(np.float64), PARAMS), PARAMS.weights)
    np.testing.assert_array_equal(score, expected)
    for one, value in zip(ids, score):  # the scan's numba kernel, on a window starting at the pattern's start
        a0, a5 = int(one[0]), int(one[5])
        window = Plan(plan.pos, plan.price, plan.kind, *(np.array([v]) for v in (0, plan.pos[a0], plan.pos[a5] + 1, a0,
                      a5 + 1)), np.array([1.0]), np.array([a0]), np.array([0, 1]))  # fmt: skip
        top = BACKENDS["numba"].top_candidates(window, spec, PARAMS)
        assert value in top.score[(top.pivots == one).all(axis=1)]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    pivots=st.sampled_from(PIVOTS),
    lookback=st.sampled_from([40, 150, 500]),
    up_to=st.integers(1, 3),
    cuts=st.lists(st.integers(1, 1500), min_size=1, max_size=4),
)
def test_at_each_bar_the_best_is_the_scans_best_over_the_confirmed_pivots(seed, pivots, lookback, up_to, cuts):
    """``causal_waves`` at bar t (run on the whole series) equals ``scan_best`` run on the bars up
    to t: the scan's top candidate in one window of ``lookback`` bars over the pivots
    confirmed by t, every pivot a start, no filter, no cap."""
    prices = _prices(random_walk(1500, seed))
    state = _state(prices, pivots, lookback, up_to)
    mode, threshold, atr_period = pivots
    for cut in cuts:
        for backend in ("numba", "numpy"):
            found = scan_best(*(p[:cut] for p in prices), mode=mode, threshold=threshold, atr_period=atr_period,
                              lookback=lookback, up_to=up_to, backend=backend)  # fmt: skip
            if found is None:
                assert not state.found[cut - 1]
            else:
                assert (state.score[cut - 1], state.pivots[cut - 1].tolist()) == (found[0], found[1].tolist())


@pytest.mark.parametrize("direction, sign", [("up", 1), ("down", -1)])
def test_the_textbook_impulse_appears_when_its_top_is_confirmed(direction, sign):
    bars, times, _ = textbook_story(direction)
    state = causal_waves(*_prices(bars))
    where = bars.index.get_indexer(times[:6])
    ids = np.searchsorted(state.pos, where)
    assert state.pos[ids].tolist() == where.tolist()
    shown = np.flatnonzero((state.pivots == ids).all(axis=1))
    confirmed = state.confirm[ids[5]]
    assert confirmed > where[5] and shown[0] == confirmed  # not one bar sooner
    assert state.score[confirmed] == pytest.approx(1.0, abs=1e-9)
    assert (state.direction[shown] == sign).all()
    assert state.position[shown].tolist() == (shown - where[5]).tolist()


def test_ties_go_to_the_earlier_impulse_as_in_the_scan():
    # Two impulses with the same integer moves and durations: bit-identical scores.
    bars = leg_bars([100.0, 120, 110, 140, 130, 150, 140, 210, 200, 220, 210, 240, 230, 250, 240], 10)
    prices = _prices(bars)
    first, second = list(range(6)), list(range(8, 14))
    for lookback, expected in ((1000, first), (141 - 10, second)):  # at the last bar the first starts 141 bars back
        state = causal_waves(*prices, lookback=lookback, keep_candidates=True)
        alive = state.pos[state.candidates[:, 0]] > len(bars) - 1 - lookback
        tied = alive & (state.candidate_score == state.score[-1])
        assert state.candidates[tied].tolist() == ([first, second] if expected == first else [second])
        assert state.pivots[-1].tolist() == expected
        score, ids = scan_best(*prices, lookback=lookback)
        assert (score, ids.tolist()) == (state.score[-1], expected)


def test_short_series_and_bad_prices():
    for n in (0, 1, 7):
        state = causal_waves(*_prices(random_walk(n, 0)), lookback=50)
        assert state.score.tolist() == [0.0] * n and state.position.tolist() == [50] * n
    high, low, close = _prices(random_walk(30, 0))
    low[12] = np.inf
    with pytest.raises(DataError, match="row 12: low is inf"):
        causal_waves(high, low, close)
