import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dask_pipeline.backtest import (
    METRICS,
    PORTFOLIO,
    RULES,
    TRADE_METRICS,
    BacktestConfig,
    backtest,
    metrics,
    portfolio_weights,
    positions,
    simulate,
)
from dask_pipeline.errors import DataError

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def market(n=300, seed=0, symbols=SYMBOLS):
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2020-01-01", periods=n, freq="B", tz="UTC", name="timestamp")
    rets = pd.DataFrame(rng.normal(0.0003, 0.01, size=(n, len(symbols))), index=idx,
                        columns=symbols)
    rets.iloc[0] = np.nan  # first bar has no return
    pred = pd.DataFrame(rng.normal(size=(n, len(symbols))), index=idx, columns=symbols)
    pred.iloc[::17, -1] = np.nan
    return pred, rets


# ---------------------------------------------------------------- pandas twin


def reference_net(weights: pd.DataFrame, returns: pd.DataFrame, cost_rate: float) -> pd.DataFrame:
    held = weights.shift(1).fillna(0.0)
    traded = (weights - held).abs()
    return held * returns.fillna(0.0) - cost_rate * traded


def reference_metrics(r: pd.Series, ppy: float) -> dict:
    equity = (1 + r).cumprod()
    total = equity.iloc[-1] - 1
    cagr = (1 + total) ** (ppy / len(r)) - 1
    std = r.std(ddof=1)
    downside = np.sqrt((r.clip(upper=0) ** 2).mean())
    peak = equity.cummax().clip(lower=1.0)
    mdd = min((equity / peak - 1).min(), 0.0)
    nonzero = r[r != 0]
    return {
        "total_return": total,
        "cagr": cagr,
        "volatility": std * np.sqrt(ppy),
        "sharpe": r.mean() / std * np.sqrt(ppy) if std > 0 else np.nan,
        "sortino": r.mean() / downside * np.sqrt(ppy) if downside > 0 else np.nan,
        "max_drawdown": mdd,
        "calmar": cagr / -mdd if mdd < 0 else np.nan,
        "hit_rate": (nonzero > 0).mean() if len(nonzero) else np.nan,
    }


def reference_positions(pred: pd.DataFrame, cfg: BacktestConfig) -> pd.DataFrame:
    if cfg.rule == "sign":
        return np.sign(pred).fillna(0.0)
    if cfg.rule == "threshold":
        return np.sign(pred).where(pred.abs() > cfg.threshold, 0.0).fillna(0.0)
    out = pd.DataFrame(0.0, index=pred.index, columns=pred.columns)
    for ts, row in pred.iterrows():
        row = row.dropna()
        if len(row) < 2:
            continue
        k = max(1, int(np.floor(cfg.quantile * len(row))))
        ordered = row.sort_values(kind="mergesort").index
        out.loc[ts, ordered[:k]] = -1.0
        out.loc[ts, ordered[-k:]] = 1.0
    return out


def reference_backtest(pos, rets, cfg):
    cost = (cfg.cost_bps + cfg.slippage_bps) / 1e4
    sym = reference_net(pos, rets, cost)
    port = reference_net(portfolio_weights(pos, cfg.rule), rets, cost).sum(axis=1)
    nets = sym.assign(**{PORTFOLIO: port})
    return nets, (1 + nets).cumprod()


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("rule", sorted(RULES))
def test_numba_matches_pandas_twin(rule):
    pred, rets = market()
    cfg = BacktestConfig(rule=rule, threshold=0.5, quantile=0.4, cost_bps=3, slippage_bps=2,
                         periods_per_year=252)
    pos = positions(pred, cfg)
    pd.testing.assert_frame_equal(pos, reference_positions(pred, cfg), check_exact=True)
    equity, table = backtest(pos, rets, cfg)
    nets, ref_equity = reference_backtest(pos, rets, cfg)
    np.testing.assert_allclose(equity.to_numpy(), ref_equity.to_numpy(), rtol=0, atol=1e-9)
    assert list(equity.columns) == [*SYMBOLS, PORTFOLIO] and equity.index.equals(pred.index)
    for name in table.index:
        expected = reference_metrics(nets[name], 252)
        for key in METRICS:
            np.testing.assert_allclose(table.loc[name, key], expected[key], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{name} {key}")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), k=st.integers(1, 6),
       rule=st.sampled_from(sorted(RULES)), quantile=st.floats(0.05, 0.5))
def test_property_twin_agreement(seed, n, k, rule, quantile):
    pred, rets = market(n, seed, SYMBOLS[:k])
    cfg = BacktestConfig(rule=rule, quantile=quantile, threshold=0.3)
    pos = positions(pred, cfg)
    pd.testing.assert_frame_equal(pos, reference_positions(pred, cfg), check_exact=True)
    equity, _ = backtest(pos, rets, cfg)
    _, ref_equity = reference_backtest(pos, rets, cfg)
    np.testing.assert_allclose(equity.to_numpy(), ref_equity.to_numpy(), rtol=0, atol=1e-9)


def test_costs_reduce_returns_by_exactly_turnover_times_bps():
    pred, rets = market(120)
    free = BacktestConfig(rule="sign", cost_bps=0, slippage_bps=0)
    paid = BacktestConfig(rule="sign", cost_bps=4, slippage_bps=1.5)
    pos = positions(pred, free)
    eq0, m0 = backtest(pos, rets, free)
    eq1, m1 = backtest(pos, rets, paid)
    net0 = eq0.pct_change().fillna(eq0.iloc[0] - 1)
    net1 = eq1.pct_change().fillna(eq1.iloc[0] - 1)
    turnover = pos.diff().fillna(pos).abs()
    expected = turnover * 5.5e-4
    np.testing.assert_allclose((net0 - net1)[SYMBOLS].to_numpy(), expected.to_numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose((net0 - net1)[PORTFOLIO], expected.sum(axis=1) / len(SYMBOLS),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(m0["turnover"], m1["turnover"])


def test_position_at_t_earns_the_return_of_t_plus_1():
    idx = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    rets = pd.DataFrame({"X": [np.nan, 0.10, -0.05, 0.02]}, index=idx)
    pos = pd.DataFrame({"X": [0.0, 1.0, 1.0, 0.0]}, index=idx)
    cfg = BacktestConfig(cost_bps=0, slippage_bps=0)
    equity, table = backtest(pos, rets, cfg)
    # long decided at bar 1 -> earns bar 2 (-5%), bar 3 (+2%); bar 1's +10% is not earned
    np.testing.assert_allclose(equity["X"], [1.0, 1.0, 0.95, 0.95 * 1.02])
    assert table.loc["X", "trades"] == 2
    assert table.loc["X", "exposure"] == pytest.approx(0.5)


def test_rank_is_long_short_neutral_with_gross_one():
    pred, _ = market(50, symbols=[f"S{i}" for i in range(10)])
    cfg = BacktestConfig(rule="rank", quantile=0.2)
    pos = positions(pred, cfg)
    w = portfolio_weights(pos, "rank")
    np.testing.assert_allclose(w.sum(axis=1), 0.0, atol=1e-15)
    np.testing.assert_allclose(w.abs().sum(axis=1), 1.0)
    valid = pred.notna()
    k = np.maximum(1, np.floor(0.2 * valid.sum(axis=1))).astype(int)  # 2, or 1 with a NaN
    assert ((pos == 1).sum(axis=1) == k).all() and ((pos == -1).sum(axis=1) == k).all()
    assert set(k) == {1, 2}
    top = pred.where(pos == 1).min(axis=1)
    rest = pred.where((pos == 0) & valid).max(axis=1)
    assert (top > rest).all()


def test_rank_weights_stay_within_gross_one_when_a_held_symbol_has_no_bar():
    # A holds its weight over a day without a bar; B and C share only what it leaves.
    idx = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    pred = pd.DataFrame({"A": [3, np.nan, 3, 3], "B": [2, 2, 2, 2], "C": [1, 1, 1, 1.0]}, index=idx)
    cfg = BacktestConfig(rule="rank", quantile=0.34, cost_bps=0, slippage_bps=0)
    pos = positions(pred, cfg).where(pred.notna())
    w = portfolio_weights(pos, "rank")
    assert w.iloc[0].tolist() == [0.5, 0.0, -0.5]
    assert np.isnan(w.iloc[1, 0]) and w.iloc[1, 1:].tolist() == [0.25, -0.25]  # A's 0.5 carried
    sim = simulate(pos, pd.DataFrame(0.01, index=idx, columns=list("ABC")), cfg)
    np.testing.assert_allclose(sim.held[1:, -1], 1.0)  # it was 1.5 after the gap
    # Random ragged universes: the carried weights never exceed gross 1.
    rng = np.random.default_rng(5)
    for _ in range(20):
        values = rng.normal(size=(60, 6))
        values[rng.random(values.shape) < 0.3] = np.nan
        frame = pd.DataFrame(values, index=pd.date_range("2024-01-01", periods=60, tz="UTC"))
        raw = positions(frame, BacktestConfig(rule="rank", quantile=0.3)).where(frame.notna())
        carried = portfolio_weights(raw, "rank").ffill().fillna(0.0)
        assert (carried.abs().sum(axis=1) <= 1.0 + 1e-12).all()


def test_rank_edge_cases():
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    pred = pd.DataFrame({"A": [1.0, np.nan, 2.0], "B": [np.nan, np.nan, 2.0], "C": [0.5, 3.0, 2.0]},
                        index=idx)
    pos = positions(pred, BacktestConfig(rule="rank", quantile=0.1))
    assert pos.to_numpy().tolist() == [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]


def test_threshold_and_sign_rules():
    idx = pd.date_range("2024-01-01", periods=1, tz="UTC")
    pred = pd.DataFrame([[0.3, -0.05, -0.2, np.nan, 0.0]], index=idx, columns=list("abcde"))
    assert positions(pred, BacktestConfig(rule="sign")).iloc[0].tolist() == [1, -1, -1, 0, 0]
    got = positions(pred, BacktestConfig(rule="threshold", threshold=0.1)).iloc[0].tolist()
    assert got == [1, 0, -1, 0, 0]


def test_metrics_on_a_hand_computed_case():
    r = pd.Series([0.10, -0.20, 0.05, 0.0])
    m = metrics(r, periods_per_year=4)
    equity = 1.1 * 0.8 * 1.05
    assert m["total_return"] == pytest.approx(equity - 1)           # -0.076
    assert m["cagr"] == pytest.approx(equity - 1)                   # 4 bars = 1 year
    mean = -0.0125
    std = np.sqrt(((0.1125**2) + (0.1875**2) + (0.0625**2) + (0.0125**2)) / 3)
    assert m["volatility"] == pytest.approx(std * 2)
    assert m["sharpe"] == pytest.approx(mean / std * 2)
    assert m["sortino"] == pytest.approx(mean / np.sqrt(0.04 / 4) * 2)
    assert m["max_drawdown"] == pytest.approx(0.88 / 1.1 - 1)        # -0.2
    assert m["calmar"] == pytest.approx((equity - 1) / 0.2)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert list(m.index) == list(METRICS)


def test_metrics_degenerate_cases():
    flat = metrics(pd.Series([0.0, 0.0, 0.0]))
    assert flat["total_return"] == 0 and flat["max_drawdown"] == 0
    assert np.isnan(flat[["sharpe", "sortino", "calmar", "hit_rate"]]).all()
    with pytest.raises(DataError):
        metrics(pd.Series([0.1, np.nan]))


def test_backtest_table_shape_and_trade_metrics():
    pred, rets = market(100)
    cfg = BacktestConfig(periods_per_year=252)
    pos = positions(pred, cfg)
    _, table = backtest(pos, rets, cfg)
    assert list(table.columns) == [*METRICS, *TRADE_METRICS, "note"]
    assert list(table.index) == [*SYMBOLS, PORTFOLIO]
    changes = (pos.diff().fillna(pos) != 0).sum()
    assert table.loc[SYMBOLS, "trades"].tolist() == changes.tolist()
    expected_turnover = pos.diff().fillna(pos).abs().mean() * 252
    np.testing.assert_allclose(table.loc[SYMBOLS, "turnover"], expected_turnover)


def test_backtest_alignment_and_validation():
    pred, rets = market(60)
    cfg = BacktestConfig()
    pos = positions(pred, cfg).iloc[10:40]
    equity, _ = backtest(pos, rets[SYMBOLS[::-1]], cfg)  # column order and extra rows ignored
    assert equity.index.equals(pos.index)
    with pytest.raises(DataError, match="skip bars"):
        backtest(pos.iloc[::2], rets, cfg)
    with pytest.raises(DataError, match="no column for symbol AAA"):
        backtest(pos, rets.drop(columns="AAA"), cfg)
    with pytest.raises(DataError, match="infinite"):
        backtest(pos.replace(1.0, np.inf), rets, cfg)


def test_config_validation():
    cfg = BacktestConfig()
    assert (cfg.rule, cfg.threshold, cfg.quantile, cfg.cost_bps, cfg.slippage_bps,
            cfg.periods_per_year) == ("sign", 0.0, 0.2, 1.0, 1.0, None)
    for bad in ({"rule": "momentum"}, {"quantile": 0.6}, {"cost_bps": -1}, {"fees": 1}, {"periods_per_year": 0}):
        with pytest.raises(ValidationError):
            BacktestConfig(**bad)


def test_ragged_symbols_trade_on_their_own_bars_and_the_portfolio_keeps_cash():
    """A weekday symbol beside a 7-day one: it holds its Friday position to Monday, earns the
    Friday-to-Monday return there, has no row on the weekend, and its half of the portfolio
    earns nothing while it has no bar."""
    idx = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC")  # Monday .. Monday
    weekday = np.array([1, 1, 1, 1, 1, 0, 0, 1], dtype=bool)
    r_a = [np.nan, 0.01, -0.02, 0.03, 0.01, np.nan, np.nan, 0.05]  # Monday's is Friday -> Monday
    r_b = [np.nan, 0.02, 0.01, -0.01, 0.02, -0.03, 0.01, 0.02]
    rets = pd.DataFrame({"A": r_a, "B": r_b}, index=idx)
    pos = pd.DataFrame({"A": [1.0, 1, -1, -1, 1, np.nan, np.nan, 0], "B": [1.0] * 8}, index=idx)
    cfg = BacktestConfig(cost_bps=0.5, slippage_bps=0.5)
    equity, table = backtest(pos, rets, cfg, periods_per_year={"A": 252, "B": 365, PORTFOLIO: 365})
    assert equity["A"].isna().tolist() == (~weekday).tolist()  # no equity row where A has no bar
    c = 1e-4
    net_a = np.array([-c, 0.01, -0.02 - 2 * c, -0.03, -0.01 - 2 * c, 0.05 - c])  # held on A's bars only
    np.testing.assert_allclose(equity["A"].dropna(), np.cumprod(1 + net_a), rtol=1e-12)
    net_b = np.array([-c, 0.02, 0.01, -0.01, 0.02, -0.03, 0.01, 0.02])
    full_a = np.zeros(8)
    full_a[weekday] = net_a
    np.testing.assert_allclose(equity[PORTFOLIO], np.cumprod(1 + (full_a + net_b) / 2), rtol=1e-12)
    expected = metrics(pd.Series(net_a), periods_per_year=252)
    for key in METRICS:
        np.testing.assert_allclose(table.loc["A", key], expected[key], rtol=1e-12, err_msg=key)
    assert table.loc["A", "trades"] == 4 and table.loc["A", "exposure"] == pytest.approx(5 / 6)
    assert table.loc["A", "turnover"] == pytest.approx(6 / 6 * 252)  # |1| + |-2| + |2| + |-1| over 6 bars


def test_undefined_metrics_are_nan_with_a_reason():
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    rets = pd.DataFrame({"FLAT": [np.nan, 0.01, 0.02, -0.01, 0.0], "UP": [np.nan, 0.01, 0.02, 0.01, 0.03]}, index=idx)
    pos = pd.DataFrame({"FLAT": 0.0, "UP": 1.0}, index=idx)
    _, table = backtest(pos, rets, BacktestConfig(cost_bps=0, slippage_bps=0), periods_per_year=365)
    assert np.isnan(table.loc["FLAT", ["sharpe", "sortino", "calmar", "hit_rate"]].astype(float)).all()
    assert table.loc["FLAT", "note"] == ("sharpe: zero volatility; sortino: no losing bar; calmar: no drawdown; "
                                         "hit_rate: never in the market")
    assert table.loc["UP", "note"] == "sortino: no losing bar; calmar: no drawdown"
    one = backtest(pos.iloc[:1], rets, BacktestConfig(), periods_per_year=365)[1]
    assert one.loc["UP", "note"].startswith("volatility, sharpe: one bar")


def test_periods_per_year_inferred_per_column_when_not_given():
    idx = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC")
    weekday = idx.day_of_week < 5
    rng = np.random.default_rng(3)
    rets = pd.DataFrame({"A": rng.normal(0, 0.01, 60), "B": rng.normal(0, 0.01, 60)}, index=idx)
    pos = pd.DataFrame({"A": np.where(weekday, 1.0, np.nan), "B": 1.0}, index=idx)
    inferred = backtest(pos, rets, BacktestConfig())[1]
    from dask_pipeline.calendars import infer_calendar

    own = infer_calendar(idx[weekday]).periods_per_year
    given = backtest(pos, rets, BacktestConfig(), periods_per_year={"A": own, "B": 365, PORTFOLIO: 365})[1]
    pd.testing.assert_frame_equal(inferred, given)
