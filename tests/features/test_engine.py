"""compute(): TA-Lib as the oracle, the missing-bar rule, spec forms, bad input, no look-ahead.

Tolerance against TA-Lib: |ours - talib| <= 1e-5 * |talib| + 1e-7 * max|talib column|.
The absolute term only matters for values crossing zero (returns, MACD histogram,
z-scores), where a relative test is meaningless; float32 storage alone gives ~6e-8.
NaN placement must be identical (same lookback).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_pipeline.errors import ConfigError, DataError
from dask_pipeline.features import DEFAULT_INDICATORS, FeaturesConfig, IndicatorSpec, compute
from dask_pipeline.features.engine import INDICATORS, feature_columns
from tests.features.samples import bars_from_close, make_bars, segments

EXTRAS = [
    IndicatorSpec(name="wma", params={"window": 20}),
    IndicatorSpec(name="corr", params={"window": 30}),
    IndicatorSpec(name="beta", params={"window": 30}),
    IndicatorSpec(name="ema", params={"window": 30}),
]
EVERYTHING = list(DEFAULT_INDICATORS) + EXTRAS


def _f64(bars: pd.DataFrame, column: str) -> np.ndarray:
    return bars[column].to_numpy(dtype=np.float64)


def _returns(x: np.ndarray) -> np.ndarray:
    r = np.full(len(x), np.nan)
    r[1:] = x[1:] / x[:-1] - 1.0
    return r


def talib_oracle(bars: pd.DataFrame, bench: pd.DataFrame) -> dict[str, np.ndarray]:
    """TA-Lib's value of every column of EVERYTHING (derived columns by plain arithmetic)."""
    o = {}
    c, h, lo, v = (_f64(bars, k) for k in ("close", "high", "low", "volume"))
    b = bench["close"].reindex(bars.index).to_numpy(dtype=np.float64)
    with np.errstate(all="ignore"):
        o["ret_1"] = talib.ROCR(c, 1) - 1.0
        o["logret_1"] = np.log(talib.ROCR(c, 1))
        o["sma_20"] = talib.SMA(c, 20)
        o["ema_12"] = talib.EMA(c, 12)
        o["ema_30"] = talib.EMA(c, 30)
        o["wma_20"] = talib.WMA(c, 20)
        o["std_20"] = talib.STDDEV(c, 20)
        o["zscore_20"] = (c - talib.SMA(c, 20)) / talib.STDDEV(c, 20)
        o["mom_10"] = talib.MOM(c, 10)
        o["roc_10"] = talib.ROC(c, 10)
        o["rsi_14"] = talib.RSI(c, 14)
        o["macd_12_26_9"], o["macd_signal_12_26_9"], o["macd_hist_12_26_9"] = talib.MACD(c, 12, 26, 9)
        upper, middle, lower = talib.BBANDS(c, 20, 2.0, 2.0)
        o["bb_pctb_20_2"] = (c - lower) / (upper - lower)
        o["bb_width_20_2"] = (upper - lower) / middle
        o["atr_14"] = talib.ATR(h, lo, c, 14)
        o["natr_14"] = talib.NATR(h, lo, c, 14)
        o["stoch_k_14_3_3"], o["stoch_d_14_3_3"] = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
        o["dist_high_20"] = c / talib.MAX(h, 20) - 1.0
        o["dist_low_20"] = c / talib.MIN(lo, 20) - 1.0
        o["volume_z_20"] = (v - talib.SMA(v, 20)) / talib.STDDEV(v, 20)
        o["obv"] = talib.OBV(c, v)
        o["corr_30"] = talib.CORREL(_returns(c), _returns(b), 30)
        o["beta_30"] = talib.BETA(b, c, 30)
    return o


LAG_COLUMNS = {"ret_1", "logret_1", "mom_10", "roc_10"}  # read two bars: compared on the whole series


def assert_close(ours: np.ndarray, theirs: np.ndarray, what: str, rtol: float = 1e-5) -> None:
    ours = np.asarray(ours, dtype=np.float64)
    nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
    if not np.array_equal(nan_ours, nan_theirs):
        first = int(np.flatnonzero(nan_ours != nan_theirs)[0])
        raise AssertionError(
            f"{what}: NaN placement differs first at {first} (ours {ours[first]}, talib {theirs[first]})"
        )
    ok = ~nan_theirs
    if ok.any():
        scale = np.max(np.abs(theirs[ok]))
        np.testing.assert_allclose(ours[ok], theirs[ok], rtol=rtol, atol=1e-7 * scale, err_msg=what)


@pytest.mark.parametrize("kind", ["normal", "heavy", "drifting", "flat32"])
def test_every_talib_indicator_matches_talib(kind, bench_bars):
    bars = make_bars("normal" if kind == "flat32" else kind, 2000, seed=1)
    if kind == "flat32":  # float32 bars, as loaded from the store
        bars = bars.astype(np.float32)
    ours = compute(bars, EVERYTHING, bench_bars)
    oracle = talib_oracle(bars, bench_bars)
    assert set(oracle) == set(ours.columns)
    for column, expected in oracle.items():
        assert_close(ours[column].to_numpy(), expected, f"{kind}/{column}")


def test_synthesized_market_matches_talib():
    from dask_pipeline.data import synthesize

    universe = synthesize(2, "2018-01-01", "2021-12-31", "1D", seed=3)
    bars, bench = universe.values()
    ours = compute(bars, EVERYTHING, bench)
    for column, expected in talib_oracle(bars, bench).items():
        assert_close(ours[column].to_numpy(), expected, f"synthesize/{column}")


@pytest.fixture(scope="module")
def gappy():
    bars = make_bars("gappy", 2000, seed=2)
    bench = make_bars("normal", 2000, seed=98)
    return bars, bench, compute(bars, EVERYTHING, bench)


def test_gappy_each_stretch_equals_talib_on_that_stretch(gappy):
    """The missing-bar rule: windowed and recursive indicators restart after a gap,
    so on each gap-free stretch they equal TA-Lib run on that stretch alone."""
    bars, bench, ours = gappy
    stretches = segments(bars.notna().all(axis=1).to_numpy())
    assert len(stretches) == 4
    for start, end in stretches:
        piece = bars.iloc[start:end]
        for column, expected in talib_oracle(piece, bench).items():
            if column not in LAG_COLUMNS:
                assert_close(ours[column].to_numpy()[start:end], expected, f"[{start}:{end}] {column}")
        assert ours.iloc[start:end].notna().any().all()  # every feature recovers after each gap


def test_gappy_lag_indicators_equal_talib_on_the_whole_series(gappy):
    bars, bench, ours = gappy
    oracle = talib_oracle(bars, bench)
    for column in LAG_COLUMNS:
        assert_close(ours[column].to_numpy(), oracle[column], column)


# After an interior NaN TA-Lib does not produce NaN for these but values that are no
# definition: RSI and CORREL write 0 for ever (their NaN sums fail the zero test), OBV
# skips the bar and carries its level on (ours restarts, as OBV's level is arbitrary).
TALIB_ARTEFACTS_AFTER_GAP = {"rsi_14", "corr_30", "obv"}


def test_gappy_agrees_with_talib_wherever_both_define_a_value(gappy):
    """TA-Lib propagates an interior NaN through its running sums (NaN ever after);
    where it still has genuine values, they are ours."""
    bars, bench, ours = gappy
    first_gap = int(np.flatnonzero(bars.close.isna().to_numpy())[0])
    for column, expected in talib_oracle(bars, bench).items():
        if column in TALIB_ARTEFACTS_AFTER_GAP:
            expected = expected[:first_gap]
        mine = ours[column].to_numpy(dtype=np.float64)[: len(expected)]
        both = ~np.isnan(mine) & ~np.isnan(expected)
        assert both.sum() > 400, column
        np.testing.assert_allclose(
            mine[both], expected[both], rtol=1e-5, atol=1e-7 * np.abs(expected[both]).max(), err_msg=column
        )


def test_benchmark_is_aligned_on_the_symbols_timestamps(bench_bars):
    bars = make_bars("normal", 600, seed=4)
    # The benchmark lacks some of the symbol's bars and has bars the symbol lacks.
    bench = bench_bars.iloc[:600].drop(bench_bars.index[[50, 51, 300]])
    bench = pd.concat([bench, bars_from_close(np.full(5, 100.0), start="2030-01-01")])
    spec = [IndicatorSpec(name="corr", params={"window": 30}), IndicatorSpec(name="beta", params={"window": 30})]
    ours = compute(bars, spec, bench)
    manual = bench_bars.iloc[:600].copy()
    manual.iloc[[50, 51, 300]] = np.nan
    expected = compute(bars, spec, manual)
    pd.testing.assert_frame_equal(ours, expected)
    assert ours["corr_30"].iloc[52:80].isna().all()  # windows over the missing benchmark bars
    assert ours["corr_30"].iloc[82:300].notna().all()


# --- output contract and spec forms -------------------------------------------------


def test_output_contract():
    bars = make_bars("normal", 300)
    out = compute(bars)
    assert out.index is bars.index
    assert list(out.columns) == feature_columns(None)
    assert set(out.dtypes) == {np.dtype(np.float32)}
    assert list(out.columns)[:3] == ["ret_1", "logret_1", "sma_20"]
    assert {"macd_12_26_9", "rsi_14", "atr_14", "std_20", "ema_12"} <= set(out.columns)


def test_spec_forms_agree():
    bars = make_bars("normal", 300)
    default = compute(bars)
    pd.testing.assert_frame_equal(default, compute(bars, FeaturesConfig()))
    pd.testing.assert_frame_equal(default, compute(bars, list(DEFAULT_INDICATORS)))
    only = compute(bars, FeaturesConfig(indicators=[{"sma": {"window": 5}}, "obv"]))
    assert list(only.columns) == ["sma_5", "obv"]


def test_every_registry_entry_runs_with_its_defaults(bench_bars):
    bars = make_bars("normal", 300)
    for name, indicator in INDICATORS.items():
        spec = IndicatorSpec(name=name)
        out = compute(bars, [spec], bench_bars)
        assert list(out.columns) == spec.columns
        assert out.notna().any().all(), name


# --- bad input ----------------------------------------------------------------------


def test_too_few_bars_gives_nan_not_a_crash():
    for n in (0, 1, 5, 25):
        out = compute(make_bars("normal", 300).iloc[:n])
        assert out.shape == (n, len(feature_columns(None)))
    short = compute(make_bars("normal", 25))
    assert short["sma_20"].notna().sum() == 6
    assert short["macd_12_26_9"].isna().all()  # lookback 33


def test_constant_prices_and_zero_volume_are_defined():
    bars = bars_from_close(np.full(200, 42.0))
    bars[["open", "high", "low"]] = 42.0
    bars["volume"] = 0.0
    out = compute(bars)
    assert not np.isinf(out.to_numpy()).any()
    for undefined in ("zscore_20", "rsi_14", "bb_pctb_20_2", "stoch_k_14_3_3", "stoch_d_14_3_3", "volume_z_20"):
        assert out[undefined].isna().all(), undefined
    assert (out["std_20"].dropna() == 0.0).all() and out["std_20"].notna().sum() == 181
    assert (out["bb_width_20_2"].dropna() == 0.0).all()
    assert (out["atr_14"].dropna() == 0.0).all()
    assert (out["obv"] == 0.0).all()
    assert (out["ret_1"].dropna() == 0.0).all()


def test_flat_stretch_inside_a_series():
    bars = make_bars("flat", 600, seed=5)
    out = compute(bars)
    start = 600 // 3
    inside = slice(start + 20, start + 60)  # windows wholly inside the flat stretch
    assert out["std_20"].iloc[inside].eq(0.0).all()
    assert out["zscore_20"].iloc[inside].isna().all()
    assert out["volume_z_20"].iloc[inside].isna().all()
    assert out["zscore_20"].iloc[start + 80 :].notna().all()


def _frame_with(**changes) -> pd.DataFrame:
    bars = make_bars("normal", 50)
    for key, value in changes.items():
        bars[key] = value
    return bars


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: make_bars("normal", 50).drop(columns="close"), "missing bar column(s) close"),
        (lambda: make_bars("normal", 50).drop(columns="volume"), "features volume_z_20, obv need volume"),
        (lambda: make_bars("normal", 50).reset_index(), "index must be a DatetimeIndex"),
        (lambda: make_bars("normal", 50).tz_convert("America/New_York"), "must be UTC"),
        (lambda: make_bars("normal", 50).iloc[[0, 1, 3, 2, 4]], "row 3"),
        (lambda: make_bars("normal", 50).iloc[[0, 1, 1, 2]], "strictly increasing"),
        (lambda: _frame_with(close=["x"] * 50), "column 'close' must be numeric"),
        (lambda: _frame_with(volume=[True] * 50), "column 'volume' must be numeric"),
        (lambda: _frame_with(high=np.r_[np.ones(7), np.inf, np.ones(42)]), "column 'high' is infinite at row 7"),
        (lambda: [1, 2, 3], "expected a DataFrame"),
    ],
)
def test_bad_bars_raise_one_line_data_error(make, message):
    with pytest.raises(DataError) as info:
        compute(make(), symbol="AAPL")
    text = str(info.value)
    assert message in text and "AAPL" in text and "\n" not in text


def test_integer_volume_and_extra_columns_are_accepted():
    bars = _frame_with(volume=np.arange(50))
    assert compute(bars)["obv"].iloc[-1] > 0
    tagged = make_bars("normal", 50).assign(symbol="AAPL", vwap=1.0)
    pd.testing.assert_frame_equal(compute(tagged), compute(make_bars("normal", 50)))


def test_corr_without_benchmark_is_a_config_error():
    with pytest.raises(ConfigError, match="corr_60 need benchmark bars"):
        compute(make_bars("normal", 100), [IndicatorSpec(name="corr")])


def test_bad_spec_is_a_config_error():
    with pytest.raises(ConfigError, match="features spec"):
        compute(make_bars("normal", 100), "sma")
    with pytest.raises(ConfigError, match="already computed"):
        compute(make_bars("normal", 100), [IndicatorSpec(name="sma"), IndicatorSpec(name="sma")])
    with pytest.raises(ConfigError, match="unknown indicator"):
        compute(make_bars("normal", 100), [IndicatorSpec.model_construct(name="smaa", params={})])


# --- no look-ahead ------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    cut=st.integers(0, 299),
    gap=st.booleans(),
)
def test_no_lookahead(seed, cut, gap):
    """Changing any bars after t (symbol and benchmark) never changes a feature at or before t."""
    bars = make_bars("gappy" if gap else "heavy", 300, seed=seed)
    bench = make_bars("normal", 300, seed=seed + 1)
    rng = np.random.default_rng(seed)
    future = slice(cut + 1, None)
    altered, bench_altered = bars.copy(), bench.copy()
    n_future = len(bars) - cut - 1
    altered.iloc[future] = rng.uniform(1.0, 500.0, (n_future, 5))
    if n_future > 3:
        altered.iloc[cut + 2] = np.nan  # a new gap in the future
    bench_altered.iloc[future] = rng.uniform(1.0, 500.0, (n_future, 5))
    before = compute(bars, EVERYTHING, bench).iloc[: cut + 1]
    after = compute(altered, EVERYTHING, bench_altered).iloc[: cut + 1]
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_naive_index_is_read_as_utc_and_volume_may_be_missing():
    bars = make_bars("normal", 300, seed=4)
    aware = compute(bars, EVERYTHING, bars)
    naive = bars.set_axis(bars.index.tz_localize(None))
    got = compute(naive, EVERYTHING, bars)  # a UTC benchmark aligns with naive bars
    assert got.index.equals(naive.index)  # returned on the index as given
    pd.testing.assert_frame_equal(got.set_axis(aware.index), aware)
    price_only = [s for s in EVERYTHING if not INDICATORS[s.name].needs_volume]
    pd.testing.assert_frame_equal(compute(bars.drop(columns="volume"), price_only, bars),
                                  aware[feature_columns(price_only)])
    with pytest.raises(DataError, match=r"symbol 'FX': features volume_z_20, obv need volume, and the bars have none"):
        compute(bars.assign(volume=np.nan), None, symbol="FX")
    assert {n for n, ind in INDICATORS.items() if ind.needs_volume} == {"obv", "volume_z"}
