"""The look-ahead check: it refuses every kind of leak, and every built-in passes it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_pipeline.features import INDICATORS, IndicatorSpec, LookAheadError, check_lookahead, compute, indicator
from dask_pipeline.features.lookahead import check_run_indicators, cut_points, find_leak
from tests.features.samples import make_bars

N = 300
BARS = make_bars("gappy", N, seed=8)
BENCH = make_bars("normal", N, seed=9)
BUILT_INS = sorted(INDICATORS)


def short_spec(name: str) -> IndicatorSpec:
    """``name`` with its defaults, a long lookback cut to 50 bars so that most of the bars have values."""
    params = INDICATORS[name].params
    return IndicatorSpec(name=name, params={k: min(p.default, max(p.low, 50)) if p.kind is int else p.default
                                            for k, p in params.items()})


@pytest.mark.parametrize("name", BUILT_INS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, N - 1), min_size=1, max_size=4))
def test_every_built_in_is_causal(name, cuts):
    spec = short_spec(name)
    assert compute(BARS, [spec], BENCH).notna().to_numpy().mean() > 0.2  # values to compare, not only NaN
    assert find_leak(BARS, spec, cuts, BENCH) is None


LEAKS = {
    "next_bar": lambda bars: bars["close"].shift(-1) / bars["close"] - 1.0,
    "five_ahead": lambda bars: bars["close"].shift(-5),
    "centred": lambda bars: bars["close"].rolling(5, center=True).mean(),
    "full_zscore": lambda bars: (bars["close"] - bars["close"].mean()) / bars["close"].std(),
    "full_rank": lambda bars: bars["close"].rank(pct=True),
    "week_close": lambda bars: bars["close"].resample("1h").last().reindex(bars.index, method="bfill"),
}


@pytest.mark.parametrize("leak", sorted(LEAKS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(8, N - 1))
def test_each_leak_kind_is_caught_at_the_default_cuts_and_most_random_ones(registry, leak, cut):
    indicator(leak)(LEAKS[leak])
    bars = make_bars("normal", N, seed=3)
    with pytest.raises(LookAheadError, match=rf"indicator '{leak}' looks ahead on ABC: {leak}(_\d+)? at "):
        check_lookahead(bars, leak, symbol="ABC")
    if leak != "week_close":  # an hourly bucket leaks only from cuts inside an hour
        assert find_leak(bars, IndicatorSpec(name=leak), [cut]) is not None


def test_early_extremes_warm_ups_and_gaps_are_caught_at_the_default_cuts(registry):
    # Leaks the last bars and the half do not show: they move only rows near the start or a gap.
    falling = make_bars("normal", 3000, seed=3)
    falling[["open", "high", "low", "close"]] = falling[["open", "high", "low", "close"]].to_numpy() * np.exp(
        -0.01 * np.abs(np.arange(3000) - 40.0))[:, None]  # its highest close lies near bar 40
    gappy = falling.copy()
    gappy.iloc[np.arange(97, 3000, 97), :] = np.nan
    leaks = {
        "max_scaled": (lambda bars: bars["close"] / bars["close"].max(), falling),
        "minmax": (lambda bars: (bars["close"] - bars["close"].min()) / (bars["close"].max() - bars["close"].min()),
                   falling),
        "filled_warm_up": (lambda bars: bars["close"].rolling(50).mean().bfill(), falling),
        "interpolated": (lambda bars: bars["close"].interpolate().pct_change(5), gappy),
    }
    for name, (func, bars) in leaks.items():
        indicator(name)(func)
        with pytest.raises(LookAheadError, match=rf"indicator '{name}' looks ahead"):
            check_lookahead(bars, name)
    assert {2, 4, 512, 1024, 98, 195} <= set(cut_points(3000, gaps=np.flatnonzero(gappy["close"].isna())))


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_built_in_passes_the_default_cuts(name):
    assert check_lookahead(BARS, short_spec(name), BENCH) > 10


def test_the_message_names_row_cut_and_both_values(registry):
    indicator("next_bar")(LEAKS["next_bar"])
    with pytest.raises(LookAheadError) as err:
        check_lookahead(make_bars("normal", N, seed=3), "next_bar", cuts=[100])
    text = str(err.value)
    assert "next_bar at 2024-01-02 01:39 is NaN on the bars up to 2024-01-02 01:39 but " in text
    assert "no shift(-k), centred window or statistic of the whole sample" in text and "\n" not in text


def test_a_causal_user_indicator_passes_and_randomness_is_refused(registry):
    indicator("smooth")(lambda bars, window=4: bars["close"].ewm(span=window).mean())
    indicator("noisy")(lambda bars: bars["close"] * np.random.default_rng().normal(1, 0.01, len(bars)))
    specs = [IndicatorSpec(name="sma"), IndicatorSpec(name="smooth", params={"window": 6})]
    assert check_run_indicators(BARS, specs, "ABC") == ["smooth_6"]  # built-ins are not re-checked per run
    with pytest.raises(LookAheadError, match=r"indicator 'noisy' is not deterministic on ABC"):
        check_lookahead(BARS, "noisy", symbol="ABC")


def test_cut_points():
    cuts = cut_points(1000, seed=4)
    assert cuts == sorted(set(cuts)) and {999, 998, 997, 500} <= set(cuts) and 1 <= min(cuts)
    assert cuts == cut_points(1000, seed=4) and cut_points(1, seed=0) == []
    assert cut_points(3, seed=0) == [1, 2]
