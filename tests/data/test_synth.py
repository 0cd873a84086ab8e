"""The synthetic market: determinism, calendar, and the stylised facts it promises."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from dask_pipeline.data import BAR_COLUMNS, bar_calendar, synthesize, validate_bars, write_dataset


def log_returns(bars: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return np.log(pd.DataFrame({s: b["close"] for s, b in bars.items()})).diff().dropna()


def part_bytes(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def universe() -> dict[str, pd.DataFrame]:
    """30 symbols x 10 years of daily bars: enough for the statistical properties to show."""
    return synthesize(30, "2010-01-01", "2019-12-31", seed=3)


def test_same_seed_gives_identical_parquet_bytes_and_another_seed_differs(tmp_path):
    write_dataset(tmp_path / "a", synthesize(3, "2020-01-01", "2021-06-30", seed=42))
    write_dataset(tmp_path / "b", synthesize(3, "2020-01-01", "2021-06-30", seed=42))
    write_dataset(tmp_path / "c", synthesize(3, "2020-01-01", "2021-06-30", seed=43))
    a, b, c = (part_bytes(tmp_path / x) for x in "abc")
    assert list(a) == ["symbol=SYN000/part-0.parquet", "symbol=SYN001/part-0.parquet", "symbol=SYN002/part-0.parquet"]
    assert a == b
    assert all(a[k] != c[k] for k in a)


def test_a_symbol_depends_on_its_name_not_on_the_other_symbols():
    three = synthesize(3, "2020-01-01", "2020-12-31", seed=9)
    alone = synthesize(["SYN002"], "2020-01-01", "2020-12-31", seed=9)
    reordered = synthesize(["ZZZ", "SYN002", "AAA"], "2020-01-01", "2020-12-31", seed=9)
    pd.testing.assert_frame_equal(alone["SYN002"], three["SYN002"])
    pd.testing.assert_frame_equal(reordered["SYN002"], three["SYN002"])
    assert list(reordered) == ["ZZZ", "SYN002", "AAA"]
    assert not np.allclose(three["SYN000"]["close"], three["SYN001"]["close"])


def test_a_later_end_keeps_every_earlier_bar():
    short = synthesize(2, "2020-01-01", "2020-06-30", "1h", seed=1)
    long = synthesize(2, "2020-01-01", "2021-06-30", "1h", seed=1)
    for symbol, bars in short.items():
        pd.testing.assert_frame_equal(long[symbol].loc[: bars.index[-1]], bars)


def test_bars_follow_the_contract_and_ohlc_is_consistent(universe):
    for symbol, bars in universe.items():
        validate_bars(bars, "synth", symbol)
        assert list(bars.columns) == list(BAR_COLUMNS)
        assert bars.index.name == "timestamp" and str(bars.index.tz) == "UTC"
        assert bars.index.is_unique and bars.index.is_monotonic_increasing
        assert (bars.dtypes == np.float64).all()
        o, h, lo, c, v = (bars[k].to_numpy() for k in BAR_COLUMNS)
        assert (lo > 0).all() and (v > 0).all()
        assert (lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
        assert (h > lo).mean() > 0.99  # real ranges, not degenerate bars
        assert np.array_equal(v, np.round(v))


def test_daily_calendar_is_business_days_at_midnight_utc():
    bars = synthesize(1, "2021-01-01", "2021-12-31", seed=0)["SYN000"]
    index = bars.index
    assert index[0] == pd.Timestamp("2021-01-01", tz="UTC") and index[-1] == pd.Timestamp("2021-12-31", tz="UTC")
    assert len(index) == 261 and index.day_of_week.max() == 4
    assert (index == index.normalize()).all()
    assert index.equals(pd.bdate_range("2021-01-01", "2021-12-31", tz="UTC"))


@pytest.mark.parametrize(("freq", "per_day", "last_bar"), [("5min", 78, "15:55"), ("1h", 7, "15:30")])
def test_intraday_sessions_are_fixed_0930_to_1600_utc_on_business_days(freq, per_day, last_bar):
    index, bars_per_day = bar_calendar("2021-03-01", "2021-03-12", freq)
    assert bars_per_day == per_day and len(index) == 10 * per_day
    assert index.day_of_week.max() == 4 and str(index.tz) == "UTC"
    times = pd.Series(index.strftime("%H:%M"))
    assert times.min() == "09:30" and times.max() == last_bar
    assert (pd.Series(index.date).value_counts() == per_day).all()
    # an end with a time of day cuts the last session there
    cut, _ = bar_calendar("2021-03-01", "2021-03-12 12:00", freq)
    assert cut[-1] <= pd.Timestamp("2021-03-12 12:00", tz="UTC") < cut[-1] + pd.Timedelta(freq)


def test_intraday_bars_open_at_the_previous_close_within_a_session():
    bars = synthesize(1, "2021-03-01", "2021-03-05", "5min", seed=2)["SYN000"]
    same_day = bars.index.normalize()[1:] == bars.index.normalize()[:-1]
    np.testing.assert_allclose(bars["open"].to_numpy()[1:][same_day], bars["close"].to_numpy()[:-1][same_day], rtol=1e-12)
    assert not np.allclose(bars["open"].to_numpy()[1:][~same_day], bars["close"].to_numpy()[:-1][~same_day])


def test_absolute_returns_cluster(universe):
    absolute = log_returns(universe).abs()
    for lag in range(1, 6):
        mean_acf = np.mean([absolute[s].autocorr(lag) for s in absolute])
        assert mean_acf > 0.05, f"lag {lag}: {mean_acf:.3f}"


def test_returns_share_a_market_factor(universe):
    corr = log_returns(universe).corr().to_numpy()
    pairwise = corr[np.triu_indices_from(corr, k=1)]
    assert pairwise.mean() > 0.1
    assert pairwise.std() > 0.02  # betas differ per symbol


def test_returns_have_fat_tails_from_jumps_and_garch(universe):
    assert log_returns(universe).kurt().median() > 0.5


def test_volume_rises_with_absolute_return(universe):
    returns = log_returns(universe)
    corrs = [np.corrcoef(returns[s].abs(), universe[s]["volume"].iloc[1:])[0, 1] for s in returns]
    assert min(corrs) > 0.2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        synthesize(["A", "A"], "2020-01-01", "2020-02-01")
    with pytest.raises(ValueError, match="freq 'weekly'"):
        synthesize(1, "2020-01-01", "2020-02-01", freq="weekly")
    with pytest.raises(ValueError, match="no business-day bars"):
        synthesize(1, "2020-01-04", "2020-01-05")


def test_500_symbols_of_ten_years_take_seconds():
    t0 = time.perf_counter()
    bars = synthesize(500, "2014-01-01", "2023-08-31", seed=0)
    elapsed = time.perf_counter() - t0
    assert len(bars) == 500 and len(bars["SYN499"]) >= 2520
    assert elapsed < 10, f"{elapsed:.1f} s"
