"""Every numba kernel against its NumPy twin, and rolling std exactness on drifting series.

Twin tolerance: identical NaN placement, and float32 values within 2 ulps of the twin's
(the twin computes the same float64 quantity by a different route -- e.g. two-pass std
instead of sliding updates, ``mean()`` instead of running sums -- then rounds to float32;
in practice they are equal), or within 1e-13 of the input's scale for values that are
differences cancelling to ~0 (MACD of flat prices: float64 rounding residue, not a
value). Float64 intermediates (rolling moments): 1e-9 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from dask_pipeline.features import kernels as K
from dask_pipeline.features import moments as M
from dask_pipeline.features import reference as R
from tests.features.samples import make_bars


def assert_twin(kernel_out, ref_out, what: str, scale: float = 1.0, max_ulp: float = 2.0) -> None:
    a = np.asarray(kernel_out)
    b = np.asarray(ref_out)
    assert a.dtype == np.float32 and b.dtype == np.float32, what
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{what}: NaN placement differs"
    ok = ~np.isnan(b)
    ulp = np.maximum(np.spacing(np.abs(b[ok])), 1e-13 * max(scale, 1.0) / max_ulp)
    worst = np.max(np.abs(a[ok].astype(np.float64) - b[ok]) / ulp, initial=0.0)
    assert worst <= max_ulp, f"{what}: {worst:.1f} ulps from the twin"


def _inputs(bars: pd.DataFrame):
    return tuple(bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume"))


def twin_pairs(bars: pd.DataFrame, bench: pd.DataFrame, w: int):
    """(name, kernel output, twin output) for every public kernel, windows around ``w``."""
    _, h, lo, c, v = _inputs(bars)
    b = bench["close"].to_numpy(dtype=np.float64)
    mean, std = M.rolling_moments_nb(c, w)
    vmean, vstd = M.rolling_moments_nb(v, w)
    atr = K.wilder_atr_nb(h, lo, c, w)
    pairs = [
        ("ret_nb", K.ret_nb(c, 3), R.ret_ref(c, 3)),
        ("logret_nb", K.logret_nb(c, 1), R.logret_ref(c, 1)),
        ("mom_nb", K.mom_nb(c, w), R.mom_ref(c, w)),
        ("roc_nb", K.roc_nb(c, w), R.roc_ref(c, w)),
        ("sma_nb", K.sma_nb(c, w), R.sma_ref(c, w)),
        ("wma_nb", K.wma_nb(c, w), R.wma_ref(c, w)),
        ("ema_nb", K.ema_nb(c, w), R.ema_ref(c, w)),
        ("rolling_moments_nb std", std.astype(np.float32), R.std_ref(c, w)),
        ("zscore_nb", M.zscore_nb(c, mean, std), R.zscore_ref(c, w)),
        ("zscore_nb volume", M.zscore_nb(v, vmean, vstd), R.zscore_ref(v, w)),
        ("rsi_nb", K.rsi_nb(c, w), R.rsi_ref(c, w)),
        ("wilder_atr_nb", atr.astype(np.float32), R.atr_ref(h, lo, c, w)),
        ("natr_nb", K.natr_nb(atr, c), R.natr_ref(h, lo, c, w)),
        ("dist_high_nb", K.dist_high_nb(c, h, w), R.dist_high_ref(c, h, w)),
        ("dist_low_nb", K.dist_low_nb(c, lo, w), R.dist_low_ref(c, lo, w)),
        ("obv_nb", K.obv_nb(c, v), R.obv_ref(c, v)),
        ("corr_nb", M.corr_nb(c, b, w), R.corr_ref(c, b, w)),
        ("beta_nb", M.beta_nb(c, b, w), R.beta_ref(c, b, w)),
    ]
    for name, ours, theirs in [
        ("bbands_nb", M.bbands_nb(c, mean, std, 2.0), R.bbands_ref(c, w, 2.0)),
        ("macd_nb", K.macd_nb(c, max(2, w // 2), w + 1, 5), R.macd_ref(c, max(2, w // 2), w + 1, 5)),
        ("stoch_nb", K.stoch_nb(h, lo, c, w, 3, 2), R.stoch_ref(h, lo, c, w, 3, 2)),
    ]:
        pairs += [(f"{name}[{i}]", a, r) for i, (a, r) in enumerate(zip(ours, theirs))]
    return pairs


@pytest.mark.parametrize("kind", ["normal", "heavy", "drifting", "gappy", "flat"])
@pytest.mark.parametrize("window", [2, 14])
def test_kernels_equal_their_twins(kind, window):
    bars = make_bars(kind, 1500, seed=7)
    bench = make_bars("gappy", 1500, seed=8)
    scale = float(np.nanmax(np.abs(bars.to_numpy())))
    for name, ours, theirs in twin_pairs(bars, bench, window):
        assert_twin(ours, theirs, f"{kind}/w={window}/{name}", scale)


def test_rolling_moments_equal_two_pass_in_float64():
    for kind in ("normal", "drifting", "gappy", "flat"):
        x = make_bars(kind, 3000, seed=3)["close"].to_numpy()
        mean, std = M.rolling_moments_nb(x, 20)
        ref_mean, ref_std = R.rolling_moments_ref(x, 20)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-12, equal_nan=True, err_msg=kind)
        np.testing.assert_allclose(std, ref_std, rtol=1e-9, atol=0, equal_nan=True, err_msg=kind)


def test_short_and_empty_inputs():
    for n in (0, 1, 3):
        x = np.linspace(1.0, 2.0, n)
        for name, ours, theirs in twin_pairs(
            pd.DataFrame({k: x for k in ("open", "high", "low", "close", "volume")}),
            pd.DataFrame({"close": x}),
            5,
        ):
            assert len(ours) == n, name
            if name not in ("obv_nb", "logret_nb"):  # lookback 0 and 1; the rest need 3+ bars
                assert np.isnan(ours).all(), name
            assert_twin(ours, theirs, f"n={n}/{name}")


def test_first_infinite():
    assert K.first_infinite_nb(np.array([1.0, np.nan, 2.0])) == -1
    assert K.first_infinite_nb(np.array([1.0, np.nan, -np.inf, np.inf])) == 2


finite_or_nan = st.one_of(
    # prices in cents in a narrow band (real prices are quoted on a tick grid; values a
    # few float64 ulps apart have a std below what any float64 method resolves)
    st.integers(100, 200).map(lambda cents: cents / 100.0),
    st.sampled_from([1.5, 1.5, 1.5, np.nan]),  # ties and gaps are likely
)
# Runs of repeated values up to 30 long, up to ~450 bars: flat windows, gaps, and runs
# that start and end across the moments kernel's 64-bar blocks.
runs = st.lists(st.tuples(finite_or_nan, st.integers(1, 30)), min_size=0, max_size=15)


@settings(max_examples=40, deadline=None)
@given(pieces=runs, window=st.integers(2, 8))
def test_twins_on_arbitrary_series(pieces, window):
    """Ties, flat stretches, NaNs anywhere, windows longer than the data."""
    x = np.repeat([v for v, _ in pieces], [k for _, k in pieces]).astype(np.float64)
    jitter = np.sin(np.arange(len(x)))  # so high/low/bench differ from close
    frame = pd.DataFrame(
        {"open": x, "high": x * 1.01 + 0.01 * jitter**2, "low": x * 0.99, "close": x, "volume": x}
    )
    bench = pd.DataFrame({"close": x[::-1] + 0.1 * jitter})
    for name, ours, theirs in twin_pairs(frame, bench, window):
        assert_twin(ours, theirs, f"{name} w={window} pieces={pieces}", scale=2.0)


def test_flat_steps_across_blocks():
    """A staircase: every window is flat or holds one step, at every block offset."""
    x = np.repeat(np.arange(60.0), 7) + 100.0
    for window in (2, 5, 7, 20):
        mean, std = M.rolling_moments_nb(x, window)
        ref_mean, ref_std = R.rolling_moments_ref(x, window)
        np.testing.assert_allclose(std, ref_std, rtol=1e-9, atol=1e-12, equal_nan=True)
        assert np.array_equal(std == 0.0, ref_std == 0.0)
        assert_twin(M.zscore_nb(x, mean, std), R.zscore_ref(x, window), f"w={window}")


def drifting_walk(n: int, seed: int = 0) -> np.ndarray:
    """A random walk (0.2% a bar) drifting from 100 down to 0.03."""
    steps = np.random.default_rng(seed).normal(0.0, 0.002, n)
    steps += (np.log(0.03 / 100.0) - steps.sum()) / n
    return 100.0 * np.exp(np.cumsum(steps))


def test_rolling_std_stays_exact_on_a_long_drifting_walk():
    x = drifting_walk(200_000)
    assert x[0] > 99 and abs(x[-1] - 0.03) < 1e-9
    exact = sliding_window_view(x, 20).std(axis=1)
    ours = M.rolling_moments_nb(x, 20)[1][19:]
    pandas = pd.Series(x).rolling(20).std(ddof=0).to_numpy()[19:]
    assert np.max(np.abs(ours - exact) / exact) < 1e-6
    assert np.max(np.abs(ours.astype(np.float32) - exact) / exact) < 1e-6  # as stored
    # pandas' running sums are far off on this series: the test would catch them
    assert np.max(np.abs(pandas - exact) / exact) > 1e-3


def test_rolling_std_exact_after_a_huge_spike_leaves_the_window():
    """A 1e6 outlier dominates the moments for `window` bars; once it leaves, the std of
    a tiny-variance window must not carry its rounding residue (the block bound catches it)."""
    x = 1.0 + 1e-7 * np.random.default_rng(1).standard_normal(500)
    x[200] = 1e6
    exact = sliding_window_view(x, 20).std(axis=1)
    ours = M.rolling_moments_nb(x, 20)[1][19:]
    np.testing.assert_allclose(ours, exact, rtol=1e-6)
    flat = np.full(300, 3.0)
    flat[100] = 1e9
    assert (M.rolling_moments_nb(flat, 20)[1][120:] == 0.0).all()
