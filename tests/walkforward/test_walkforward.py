"""Walk-forward stage functions: panel, per-fold fit, per-fold backtest, aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_pipeline.backtest import BacktestConfig
from dask_pipeline.data import synthesize
from dask_pipeline.errors import DataError
from dask_pipeline.folds import FoldsConfig, make_folds
from dask_pipeline.models import LabelConfig, ModelConfig, make_label
from dask_pipeline.walkforward import (
    FOLD_COLUMNS,
    PREDICTION_COLUMNS,
    TABLES,
    aggregate_folds,
    assemble_panel,
    backtest_fold,
    fit_panel,
    train_fold,
    union_index,
)

HORIZON = 5


def causal_features(bars: pd.DataFrame) -> pd.DataFrame:
    """A few float32 features of bars at times <= t (stand-ins for the feature engine)."""
    close = bars["close"].astype(np.float64)
    ret = close.pct_change()
    return pd.DataFrame(
        {
            "ret_1": ret,
            "ret_5": close.pct_change(5),
            "std_10": ret.rolling(10).std(),
            "sma_ratio_20": close / close.rolling(20).mean() - 1,
        },
        index=bars.index,
    ).astype(np.float32)


@pytest.fixture(scope="module")
def market():
    bars = synthesize(3, "2020-01-01", "2021-12-31", "1D", seed=5)
    symbols = sorted(bars)
    bars = [bars[s].astype(np.float32) for s in symbols]
    return symbols, bars, [causal_features(b) for b in bars]


@pytest.fixture(scope="module")
def folds(market):
    _, bars, _ = market
    return make_folds(union_index(b.index for b in bars), FoldsConfig(train=252, test=60), HORIZON)


def run_folds(market, folds, model=ModelConfig(name="random_forest", preset="blank"), cfg=BacktestConfig()):
    symbols, bars, features = market
    return [backtest_fold(train_fold(f, symbols, bars, features, LabelConfig(horizon=HORIZON), model, 7), cfg) for f in folds]


def test_union_index_is_sorted_unique_union():
    a = pd.date_range("2020-01-01", periods=3, freq="D", tz="UTC")
    b = pd.date_range("2020-01-02", periods=3, freq="D", tz="UTC")
    union = union_index([b, a])
    assert list(union) == list(pd.date_range("2020-01-01", periods=4, freq="D", tz="UTC"))
    assert union.name == "timestamp"
    with pytest.raises(DataError):
        union_index([])


def test_panel_stacks_features_label_and_next_return(market):
    symbols, bars, features = market
    panel = assemble_panel(symbols, bars, features, HORIZON)
    assert panel.index.names == ["timestamp", "symbol"] and panel.index.is_monotonic_increasing
    assert len(panel) == sum(len(b) for b in bars)
    assert list(panel.columns) == [*features[0].columns, "label", "next_return"]
    assert (panel.dtypes.iloc[:4] == np.float32).all()
    rows = panel.xs(symbols[1], level="symbol")
    close = bars[1]["close"].astype(np.float64)
    np.testing.assert_array_equal(rows["label"], make_label(close, HORIZON))
    np.testing.assert_array_equal(rows["next_return"], close.shift(-1) / close - 1)


def test_panel_slice_keeps_labels_that_read_past_it(market):
    symbols, bars, features = market
    full = assemble_panel(symbols, bars, features, HORIZON)
    start, end = bars[0].index[100], bars[0].index[200]
    part = assemble_panel(symbols, bars, features, HORIZON, start=start, end=end)
    ts = part.index.get_level_values("timestamp")
    assert ts.min() == start and ts.max() == end
    pd.testing.assert_frame_equal(part, full.loc[(slice(start, end), slice(None)), :])
    assert part["label"].notna().all()  # the last rows' labels read bars after ``end``


def test_panel_rejects_mismatched_inputs(market):
    symbols, bars, features = market
    with pytest.raises(DataError, match="differ"):
        assemble_panel(symbols, bars, [features[0], features[1].iloc[:, :2], features[2]], HORIZON)
    with pytest.raises(DataError, match="not indexed like its bars"):
        assemble_panel(symbols, bars, [features[0], features[1].iloc[1:], features[2]], HORIZON)


def test_pooled_fit_predicts_every_test_row_once(market, folds):
    symbols, bars, features = market
    fold = folds[1]
    fit = train_fold(fold, symbols, bars, features, LabelConfig(horizon=HORIZON), ModelConfig(preset="blank"), 0)
    pred = fit.predictions
    assert len(pred) == fold.n_test * len(symbols)
    assert pred["timestamp"].min() == fold.test_start and pred["timestamp"].max() == fold.test_end
    assert np.isfinite(pred["prediction"]).all()
    assert list(fit.importances["model"].unique()) == ["pooled"]
    assert list(fit.importances["feature"]) == list(features[0].columns)
    assert fit.close_at == dict.fromkeys(symbols, bars[0].index[bars[0].index.get_loc(fold.test_end) + 1])


def test_training_never_reads_the_test_window(market, folds):
    """Rewriting every bar from the test start on leaves the fitted model unchanged (purge works)."""
    symbols, bars, features = market
    fold = folds[0]
    model = ModelConfig(name="random_forest", preset="fast")  # impurity importances: the model itself
    label = LabelConfig(horizon=HORIZON)
    rng = np.random.default_rng(0)
    changed = []
    for b in bars:
        b = b.copy()
        later = b.index >= fold.test_start
        b.loc[later, "close"] *= rng.uniform(0.5, 1.5, later.sum()).astype(np.float32)
        changed.append(b)
    before = train_fold(fold, symbols, bars, features, label, model, 0)
    after = train_fold(fold, symbols, changed, [causal_features(b) for b in changed], label, model, 0)
    pd.testing.assert_frame_equal(before.importances, after.importances)


def test_per_symbol_scope_fits_one_model_per_symbol(market, folds):
    symbols, bars, features = market
    model = ModelConfig(name="random_forest", preset="blank", scope="per_symbol")
    label = LabelConfig(horizon=HORIZON)
    fit = train_fold(folds[0], symbols, bars, features, label, model, 0)
    assert sorted(fit.importances["model"].unique()) == symbols
    pooled = train_fold(folds[0], symbols, bars, features, label, model.model_copy(update={"scope": "pooled"}), 0)
    assert not np.array_equal(fit.predictions["prediction"], pooled.predictions["prediction"])


def test_per_symbol_without_history_is_flat(market, folds):
    symbols, bars, features = market
    late = bars[2].copy()
    late.loc[late.index < folds[0].test_start, "close"] = np.nan  # listed at the test start
    model = ModelConfig(name="ridge", preset="blank", scope="per_symbol")
    fit = fit_panel(
        assemble_panel(symbols, [bars[0], bars[1], late], features, HORIZON), folds[0], model, "regression", 0
    )
    by_symbol = fit.predictions.groupby("symbol")["prediction"]
    assert by_symbol.count()[symbols[2]] == 0 and by_symbol.count()[symbols[0]] == folds[0].n_test
    assert symbols[2] not in set(fit.importances["model"])


def test_fit_is_bitwise_deterministic(market, folds):
    symbols, bars, features = market
    args = (folds[2], symbols, bars, features, LabelConfig(horizon=HORIZON), ModelConfig(preset="fast"), 3)
    a, b = train_fold(*args), train_fold(*args)
    pd.testing.assert_frame_equal(a.predictions, b.predictions, check_exact=True)
    pd.testing.assert_frame_equal(a.importances, b.importances, check_exact=True)


def test_backtest_fold_realises_every_test_bar(market, folds):
    [result] = run_folds(market, folds[:1])
    fold, pred = result.fold, result.predictions
    assert list(pred.columns) == PREDICTION_COLUMNS
    np.testing.assert_array_equal(pred["position"], np.sign(pred["prediction"]))
    eq = result.equity
    assert set(eq["curve"]) == {*pred["symbol"], "portfolio"}
    one = eq[eq["curve"] == pred["symbol"].iloc[0]]
    assert len(one) == fold.n_test + 1  # closed on the bar after the test window
    # Per symbol: each bar's position earns its next_return, entering and closing cost 2 bps.
    sym = pred[pred["symbol"] == pred["symbol"].iloc[0]]
    w = sym["position"].to_numpy()
    traded = np.abs(np.diff(np.concatenate([[0.0], w, [0.0]])))
    net = np.concatenate([[0.0], w * sym["next_return"].to_numpy()]) - traded * 2e-4
    assert one["equity"].iloc[-1] == pytest.approx(np.prod(1 + net), rel=1e-12)
    metrics = result.metrics
    assert list(metrics.columns) == FOLD_COLUMNS and list(metrics["curve"])[-1] == "portfolio"
    assert (metrics["test_start"] == fold.test_start).all()


def test_last_fold_ends_with_the_data(market, folds):
    [result] = run_folds(market, folds[-1:])
    one = result.equity[result.equity["curve"] == "portfolio"]
    assert len(one) == folds[-1].n_test and one["timestamp"].iloc[-1] == folds[-1].test_end


def test_rank_rule_positions(market, folds):
    [result] = run_folds(market, folds[:1], cfg=BacktestConfig(rule="rank", quantile=0.34))
    per_bar = result.predictions.groupby("timestamp")["position"]
    assert (per_bar.sum() == 0).all() and (per_bar.apply(lambda s: s.abs().sum()) == 2).all()


def test_aggregate_sorts_by_key_whatever_the_order(market, folds):
    results = run_folds(market, folds)
    forward = aggregate_folds(results)
    shuffled = aggregate_folds([results[i] for i in np.random.default_rng(1).permutation(len(results))])
    assert sorted(forward) == sorted(TABLES)
    for name in TABLES:
        pd.testing.assert_frame_equal(forward[name], shuffled[name], check_exact=True)
    folds_table = forward["folds"]
    assert list(folds_table["fold"].unique()) == list(range(len(folds)))
    assert (folds_table.groupby("fold")["curve"].last() == "portfolio").all()
    pred = forward["predictions"]
    assert pred.set_index(["fold", "timestamp", "symbol"]).index.is_monotonic_increasing
    assert forward["equity"].set_index(["fold", "curve", "timestamp"]).index.is_monotonic_increasing
    with pytest.raises(DataError, match="duplicate"):
        aggregate_folds([results[0], results[0]])


# ------------------------------------------------- real-shaped data: ragged histories, mixed calendars

from dask_pipeline.folds import plan_folds  # noqa: E402
from dask_pipeline.walkforward import BUY_AND_HOLD, SAT_OUT  # noqa: E402
from tests.data import realistic  # noqa: E402


@pytest.fixture(scope="module")
def ragged():
    """The realistic universe, its folds, and every fold's result (blank ridge models: fast)."""
    universe = realistic.universe()
    symbols = list(universe)
    bars = [universe[s].astype(np.float32) for s in symbols]
    features = [causal_features(b) for b in bars]
    plan = plan_folds({s: b.index for s, b in zip(symbols, bars)}, FoldsConfig(**realistic.FOLDS), HORIZON)
    model = ModelConfig(name="ridge", preset="blank")
    results = [backtest_fold(train_fold(f, symbols, bars, features, LabelConfig(horizon=HORIZON), model, 1),
                             BacktestConfig()) for f in plan.folds]
    return universe, plan, results


def test_no_row_where_a_symbol_has_no_bar(ragged):
    universe, _, results = ragged
    tables = aggregate_folds(results)
    for name, column in (("predictions", "symbol"), ("equity", "curve")):
        frame = tables[name]
        for symbol, rows in frame[frame[column] != "portfolio"].groupby(column):
            assert pd.DatetimeIndex(rows["timestamp"]).isin(universe[symbol].index).all(), (name, symbol)
    weekend = pd.DatetimeIndex(tables["equity"].query("curve == 'ACME'")["timestamp"]).day_of_week >= 5
    assert not weekend.any()


def test_buy_and_hold_is_the_product_of_the_symbols_returns(ragged):
    universe, plan, results = ragged
    close = {s: b["close"].astype(np.float32).astype(np.float64) for s, b in universe.items()}
    for result in results[1:3]:
        fold, eq = result.fold, result.equity
        for symbol in fold.symbols:
            rows = eq[eq["curve"] == symbol]
            first, last = rows["timestamp"].iloc[0], rows["timestamp"].iloc[-1]
            assert first == close[symbol][fold.test_start:].index[0]
            # Held from the first test bar's close to the closing bar's (or the last bar, delisted).
            expected = close[symbol][last] / close[symbol][first]
            assert rows[BUY_AND_HOLD].iloc[-1] == pytest.approx(expected, rel=1e-12)
            ratios = close[symbol][rows["timestamp"]].pct_change().fillna(0).to_numpy()
            np.testing.assert_allclose(rows[BUY_AND_HOLD], np.cumprod(1 + ratios), rtol=1e-12)
        # The portfolio's benchmark: every taking part symbol long at 1/n, cash where it has no bar.
        port = eq[eq["curve"] == "portfolio"].set_index("timestamp")[BUY_AND_HOLD]
        gross = port / port.shift(1).fillna(1.0) - 1
        legs = [eq[eq["curve"] == s].set_index("timestamp")[BUY_AND_HOLD] for s in fold.symbols]
        legs = [(leg / leg.shift(1).fillna(1.0) - 1).reindex(port.index, fill_value=0.0) for leg in legs]
        np.testing.assert_allclose(gross, sum(legs) / len(fold.symbols), atol=1e-12)


def test_delisted_symbol_trades_until_its_last_bar_then_sits_out(ragged):
    universe, plan, results = ragged
    last = universe["GONE"].index[-1]
    fold2 = results[2]
    gone = fold2.predictions[fold2.predictions["symbol"] == "GONE"]
    assert gone["timestamp"].iloc[-1] == last and gone["position"].iloc[-1] == 0.0  # no next bar to hold to
    assert gone["position"].iloc[:-1].abs().sum() > 0
    table = aggregate_folds(results)["folds"]
    row = table[(table["fold"] == 3) & (table["curve"] == "GONE")].iloc[0]
    assert row["status"] == SAT_OUT and row["note"] == "no bars in the test window (its last bar is 2021-03-15)"
    assert np.isnan(row["sharpe"]) and row["trades"] == 0 and row["n_test"] == 0


def test_fold_table_annualises_each_curve_on_its_calendar(ragged):
    _, plan, results = ragged
    table = aggregate_folds(results)["folds"]
    assert list(table.columns) == FOLD_COLUMNS
    fold3 = table[table["fold"] == 3].set_index("curve")
    planned = plan.folds[3].annualisation()
    assert fold3["periods_per_year"].to_dict() == {k: float(v) for k, v in planned.items()}
    equity = results[3].equity
    for curve in ("ACME", "EURUSD", "portfolio"):
        rows = equity[equity["curve"] == curve]
        ours = rows["equity"] / rows["equity"].shift(1).fillna(1.0) - 1
        held = rows[BUY_AND_HOLD] / rows[BUY_AND_HOLD].shift(1).fillna(1.0) - 1
        excess = (ours - held).to_numpy()
        ppy = planned[curve]
        assert fold3.loc[curve, "information_ratio"] == pytest.approx(
            excess.mean() / excess.std(ddof=1) * np.sqrt(ppy), rel=1e-9)
        assert fold3.loc[curve, "excess_return"] == pytest.approx(
            rows["equity"].iloc[-1] - rows[BUY_AND_HOLD].iloc[-1], rel=1e-9)
        sharpe = ours.mean() / ours.std(ddof=1) * np.sqrt(ppy)
        assert fold3.loc[curve, "sharpe"] == pytest.approx(sharpe, rel=1e-9)
    # The pooled model trained on every row that exists: EURUSD's hours too, though it sat fold 2 out.
    fold2 = table[table["fold"] == 2].set_index("curve")
    assert fold2.loc["EURUSD", "status"] == SAT_OUT and fold2.loc["EURUSD", "n_train"] > 3000
    assert fold2.loc["portfolio", "n_train"] == fold2.loc[fold2.index != "portfolio", "n_train"].sum()
