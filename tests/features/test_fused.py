"""The fused passes against the NumPy twins, column by column, and fusion's routing.

``compute`` runs built-in indicators through the fused kernels (``features/fused.py``)
whenever the bars allow; every column must equal its twin in ``features/reference.py``
to the tolerance of the per-indicator kernels (``assert_twin``: 2 float32 ulps). The
routing tests check that the fused path is the one exercised, and that what may not be
fused (misaligned NaN masks, an all-NaN volume, a replaced registry entry) takes the
generic path and stays right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_pipeline.errors import DataError
from dask_pipeline.features import compute, engine
from dask_pipeline.features import reference as R
from dask_pipeline.features.engine import INDICATORS, Indicator
from dask_pipeline.features.spec import DEFAULT_INDICATORS, IndicatorSpec
from tests.features.samples import make_bars
from tests.features.test_kernels import assert_twin

TWINS = {
    "ret": lambda h, lo, c, v, p: [R.ret_ref(c, p["lag"])],
    "logret": lambda h, lo, c, v, p: [R.logret_ref(c, p["lag"])],
    "mom": lambda h, lo, c, v, p: [R.mom_ref(c, p["lag"])],
    "roc": lambda h, lo, c, v, p: [R.roc_ref(c, p["lag"])],
    "sma": lambda h, lo, c, v, p: [R.sma_ref(c, p["window"])],
    "ema": lambda h, lo, c, v, p: [R.ema_ref(c, p["window"])],
    "std": lambda h, lo, c, v, p: [R.std_ref(c, p["window"])],
    "zscore": lambda h, lo, c, v, p: [R.zscore_ref(c, p["window"])],
    "volume_z": lambda h, lo, c, v, p: [R.zscore_ref(v, p["window"])],
    "bbands": lambda h, lo, c, v, p: list(R.bbands_ref(c, p["window"], p["nbdev"])),
    "macd": lambda h, lo, c, v, p: list(R.macd_ref(c, p["fast"], p["slow"], p["signal"])),
    "rsi": lambda h, lo, c, v, p: [R.rsi_ref(c, p["window"])],
    "atr": lambda h, lo, c, v, p: [R.atr_ref(h, lo, c, p["window"])],
    "natr": lambda h, lo, c, v, p: [R.natr_ref(h, lo, c, p["window"])],
    "stoch": lambda h, lo, c, v, p: list(R.stoch_ref(h, lo, c, p["window"], p["smooth"], p["d"])),
    "dist_high": lambda h, lo, c, v, p: [R.dist_high_ref(c, h, p["window"])],
    "dist_low": lambda h, lo, c, v, p: [R.dist_low_ref(c, lo, p["window"])],
    "obv": lambda h, lo, c, v, p: [R.obv_ref(c, v)],
}


def spec_around(w: int) -> list[IndicatorSpec]:
    """Every fused indicator with windows around ``w``: two rounds of the chain and range
    passes, an SMA with and one without a moments window, two Bollinger widths on one
    window, and in each of the two range rounds one distance sharing the stochastic's
    rolling extreme and one computing its own."""
    items = [
        ("ret", {"lag": 1}), ("logret", {"lag": 3}), ("mom", {"lag": w}), ("roc", {"lag": w}),
        ("sma", {"window": w}), ("sma", {"window": w + 3}), ("std", {"window": w}), ("zscore", {"window": w}),
        ("bbands", {"window": w, "nbdev": 2.0}), ("bbands", {"window": w, "nbdev": 1.5}),
        ("ema", {"window": w}), ("ema", {"window": w + 5}), ("rsi", {"window": w}),
        ("macd", {"fast": max(2, w // 2), "slow": w + 1, "signal": 5}), ("obv", {}), ("volume_z", {"window": w}),
        ("atr", {"window": w}), ("natr", {"window": w}), ("atr", {"window": w + 2}),
        ("stoch", {"window": w, "smooth": 3, "d": 2}), ("stoch", {"window": w + 1, "smooth": 2, "d": 3}),
        ("dist_high", {"window": w}), ("dist_high", {"window": w + 3}),
        ("dist_low", {"window": w + 4}), ("dist_low", {"window": w + 1}),
    ]  # fmt: skip
    return [IndicatorSpec(name=name, params=params) for name, params in items]


def assert_fused_equals_twins(bars: pd.DataFrame, spec: list[IndicatorSpec], what: str, scale: float = 1.0) -> None:
    out = compute(bars, spec)
    h, lo, c, v = (bars[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close", "volume"))
    for item in spec:
        for column, twin in zip(item.columns, TWINS[item.name](h, lo, c, v, item.params), strict=True):
            assert_twin(out[column].to_numpy(), twin, f"{what}/{column}", scale)


def fused_plan(spec, aligned=(True, True)):
    return engine._schedule(engine._spec_key(spec), aligned)[0]


def test_every_fused_indicator_is_fused():
    """The tests below exercise the fused kernels, not the generic path."""
    spec = spec_around(14)
    plan = fused_plan(spec)
    assert plan.generic == ()
    assert {item.name for item in spec} == set(TWINS)
    assert len(plan.chains) == 2 and len(plan.ranges) == 2  # two rounds each
    default = fused_plan(DEFAULT_INDICATORS)
    assert default.generic == () and default.passes == 6  # lags, logret, chains, 2 moments, ranges


@pytest.mark.parametrize("kind", ["normal", "heavy", "drifting", "gappy", "flat"])
@pytest.mark.parametrize("window", [2, 14])
def test_fused_equals_twins(kind, window):
    bars = make_bars(kind, 1500, seed=7)
    scale = float(np.nanmax(np.abs(bars.to_numpy())))
    assert_fused_equals_twins(bars, spec_around(window), f"{kind}/w={window}", scale)


def test_fused_float32_bars_and_long_runs():
    """float32 bars as loaded, and a series long enough for several chunks of the
    ranges pass and many blocks of the moments pass."""
    bars = make_bars("drifting", 9000, seed=3).astype(np.float32)
    assert_fused_equals_twins(bars, spec_around(20), "float32", scale=100.0)


def test_short_and_empty_inputs():
    bars = make_bars("normal", 40, seed=2)
    for n in (0, 1, 2, 5, 13, 14, 15, 25):
        assert_fused_equals_twins(bars.iloc[:n], spec_around(14), f"n={n}")


finite_or_nan = st.one_of(st.integers(100, 200).map(lambda cents: cents / 100.0), st.sampled_from([1.5, 1.5, np.nan]))
runs = st.lists(st.tuples(finite_or_nan, st.integers(1, 30)), min_size=0, max_size=15)


@settings(max_examples=30, deadline=None)
@given(pieces=runs, window=st.integers(2, 6))
def test_fused_on_arbitrary_series(pieces, window):
    """Ties, flat stretches, NaN runs anywhere, windows longer than the data."""
    x = np.repeat([v for v, _ in pieces], [k for _, k in pieces]).astype(np.float64)
    jitter = np.sin(np.arange(len(x)))
    frame = pd.DataFrame(
        {"open": x, "high": x * 1.01 + 0.01 * jitter**2, "low": x * 0.99, "close": x, "volume": x},
        index=pd.date_range("2024-01-01", periods=len(x), freq="min", tz="UTC"),
    )
    spec = spec_around(window)
    if len(x) and np.isnan(x).all():  # no volume at all: the volume indicators refuse (price-only bars)
        with pytest.raises(DataError, match="need volume, and the bars have none"):
            compute(frame, spec)
        spec = without_volume(spec)
    assert_fused_equals_twins(frame, spec, f"w={window} pieces={pieces}", scale=2.0)


def without_volume(spec: list[IndicatorSpec]) -> list[IndicatorSpec]:
    return [item for item in spec if item.name not in ("obv", "volume_z")]


def test_misaligned_nan_masks_take_the_generic_path():
    """A NaN high alone, or volume missing where close is not: the range pass and OBV may
    not share close's runs, so they are computed one by one, and still equal their twins."""
    bars = make_bars("normal", 600, seed=4)
    bars.iloc[100:103, bars.columns.get_loc("high")] = np.nan
    bars.iloc[300:302, bars.columns.get_loc("volume")] = np.nan
    plan = fused_plan(spec_around(14), (False, False))
    names = [item.name for item in spec_around(14)]
    assert {names[i] for i in plan.generic} == {"atr", "natr", "stoch", "dist_high", "dist_low", "obv"}
    assert_fused_equals_twins(bars, spec_around(14), "misaligned")


def test_price_only_bars_refuse_volume_indicators_and_fuse_the_rest():
    """All-NaN volume (price-only bars): obv and volume_z refuse by name rather than fill
    columns with NaN; every other indicator is fused as usual."""
    bars = make_bars("normal", 400, seed=5)
    bars["volume"] = np.nan
    with pytest.raises(DataError, match="obv.* need volume, and the bars have none"):
        compute(bars)
    assert_fused_equals_twins(bars, without_volume(spec_around(14)), "no volume")
    spec = without_volume(spec_around(3))
    pd.testing.assert_frame_equal(compute(bars.drop(columns="volume"), spec), compute(bars, spec))  # no column at all


def test_a_replaced_builtin_takes_the_generic_path(monkeypatch):
    """Fusion only speeds up the shipped entries: an entry replaced in the registry is
    computed by its own function."""
    marker = np.float32(7.0)
    own = Indicator(lambda b, window: (np.full(len(b.close), marker, dtype=np.float32),), ("sma",),
                    dict(INDICATORS["sma"].params))
    spec = [IndicatorSpec(name="sma"), IndicatorSpec(name="ema")]
    bars = make_bars("normal", 50)
    assert compute(bars, spec)["sma_20"].notna().sum() == 50 - 19  # fused, and its schedule kept
    monkeypatch.setitem(INDICATORS, "sma", own)
    engine._plan.cache_clear()  # what replacing a registry entry does
    try:
        out = compute(bars, spec)
    finally:
        engine._plan.cache_clear()
    assert (out["sma_20"] == marker).all()
    assert out["ema_12"].notna().sum() == 50 - 11
