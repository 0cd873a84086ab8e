"""Walk-forward study stages: pooled panel -> per-fold fit -> per-fold backtest -> tables.

The walk-forward graph (``graphs/walkforward.py``) composes these; the benchmark's plain
loop calls them directly. Like every stage function they are pure: frames and typed
config sections in, frames out, randomness only from ``seed``.

- **Panel**: the per-symbol features, stacked into one frame indexed by
  ``(timestamp, symbol)`` (sorted), plus ``label`` (``make_label`` over ``label.horizon``)
  and ``next_return`` (``close[t + 1] / close[t] - 1``: what a position taken at the close
  of ``t`` earns). Both are computed on each symbol's full history before any slicing, so
  a slice never shortens a label.
- **Fit** (``train_fold``): training rows = ``fold.symbol_train_mask`` on each symbol's
  own bars (purge and embargo counted in its bars), test rows = ``fold.test_mask`` of the
  symbols that take part in the fold (``plan_folds``: those sitting it out are neither
  predicted nor traded). ``scope: pooled`` fits one model on every training row that
  exists, those of symbols sitting the fold out included; ``per_symbol`` fits one per
  taking part symbol (a symbol without a usable training row gets NaN predictions, i.e.
  flat). Estimators run single-threaded (``threadpool_limits(1)``) wherever the stage
  runs: one per worker process, and a fit in the client or in a plain loop does the same
  work as on a worker.
- **Backtest** (``backtest_fold``): each fold is traded on its own from flat, on the
  union of its symbols' timestamps, each symbol on its own bars
  (``dask_pipeline.backtest``: no row for a symbol where it has no bar; its capital share
  stays in cash while it has none). Positions come from the test-window predictions; a
  symbol's last test bar's position is held to its next bar's close and closed there
  (costs paid), so every test bar's prediction is realised once and no P&L leaks between
  folds. At a bar with no next bar (the symbol delists inside the window, or the data
  end) there is nothing to hold to: the position is flat there. Beside every curve runs
  its **buy-and-hold** benchmark over the same bars: the symbol held long from its first
  test bar to the same closing bar, free of costs (column ``buy_and_hold`` of the
  equity); for the portfolio every taking part symbol long at ``1 / n_symbols`` of
  capital, the sizing of the ``sign`` rule (the equal-weight market of the fold's
  symbols). ``excess_return`` = total return - buy-and-hold's; ``information_ratio`` =
  mean / std (ddof 1) of the per-bar difference, times ``sqrt(periods_per_year)``.
  Annualisation: ``backtest.periods_per_year`` when set, else the fold's
  ``periods_per_year`` (each symbol's calendar, the portfolio's union calendar).
  ``folds`` rows: one per symbol (``status`` ``traded``, or ``sat out`` with the reason
  in ``note``) and ``portfolio``; ``note`` also names each undefined (NaN) metric and why.
  ``n_train`` / ``n_test`` count the symbol's own rows (the portfolio: every training
  row, and its test rows).
- **Aggregate** (``aggregate_folds``): concatenates the folds' frames and sorts every table
  by its key, so the output does not depend on the order in which folds finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from dask_pipeline.backtest import (METRICS, PORTFOLIO, TRADE_METRICS, BacktestConfig, Simulation, curve_periods, measure,
                                    positions, simulate)
from dask_pipeline.calendars import union_of
from dask_pipeline.errors import DataError
from dask_pipeline.folds import Fold
from dask_pipeline.models import LabelConfig, ModelConfig, fit_fold, make_label

LABEL = "label"
NEXT_RETURN = "next_return"
POOLED = "pooled"
BUY_AND_HOLD = "buy_and_hold"
#: The tables ``aggregate_folds`` returns, one result file each.
TABLES = ("folds", "predictions", "equity", "importances")

PREDICTION_COLUMNS = ["fold", "timestamp", "symbol", "prediction", "position", LABEL, NEXT_RETURN]
IMPORTANCE_COLUMNS = ["fold", "model", "feature", "importance", "method"]
EQUITY_COLUMNS = ["fold", "curve", "timestamp", "equity", BUY_AND_HOLD]
#: Per fold and curve, beside the strategy's metrics: the buy-and-hold benchmark's.
BENCHMARK_METRICS = ("buy_and_hold_return", "excess_return", "information_ratio")
TRADED, SAT_OUT = "traded", "sat out"
FOLD_COLUMNS = ["fold", "curve", "status", "train_start", "train_end", "test_start", "test_end", "n_train", "n_test",
                "periods_per_year", *METRICS, *TRADE_METRICS, *BENCHMARK_METRICS, "note"]


@dataclass(frozen=True)
class FoldFit:
    """What ``train_fold`` hands the backtest.

    ``predictions``: one row per test row of each taking part symbol (``fold, timestamp,
    symbol, prediction, label, next_return``); ``importances``: one row per model and
    feature; ``close_at``: per symbol, its first bar after the test window (where its
    positions are closed), absent when it has none (delisted, end of the data);
    ``counts``: per symbol of the panel, its own ``(training rows, test bars)`` in the fold.
    """

    fold: Fold
    predictions: pd.DataFrame
    importances: pd.DataFrame
    close_at: dict[str, pd.Timestamp]
    counts: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class FoldResult:
    """One fold's finished result: the rows it contributes to each output table."""

    fold: Fold
    predictions: pd.DataFrame
    importances: pd.DataFrame
    equity: pd.DataFrame
    metrics: pd.DataFrame


def min_history(features, horizon: int) -> int:
    """The fewest bars a symbol needs to give one row with every feature and a label.

    A lower bound, so it never rejects a usable symbol: the longest integer indicator
    parameter (window, lag, slow period) is that many bars of warm-up, and the label reads
    ``horizon`` bars ahead.
    """
    windows = [v for spec in features.indicators for v in spec.params.values() if isinstance(v, int)]
    return max(windows, default=1) + horizon


def require_history(lengths: dict[str, int], needed: int, data) -> None:
    """Raise ``DataError`` naming the first symbol (in ``lengths``' order) with fewer than ``needed`` bars.

    Parameters
    ----------
    lengths
        Bars per symbol in the run's date range.
    data
        The ``data`` config section: its root, start and end are named in the message.
    """
    short = [s for s, n in lengths.items() if n < needed]
    if not short:
        return
    first = short[0]
    bounds = [f"from data.start {data.start}" if data.start else "", f"to data.end {data.end}" if data.end else ""]
    span = " ".join(b for b in bounds if b)
    more = f" (also short: {', '.join(short[1:6])}{', ...' if len(short) > 6 else ''})" if len(short) > 1 else ""
    if len(short) < len(lengths):
        advice = "leave it out with data.symbols"
    elif span:
        advice = "every symbol is: widen data.start / data.end"
    else:
        advice = "every symbol is: use a longer history or shorter feature windows"
    where = f" {span}" if span else ""
    raise DataError(
        f"{data.root}: symbol {first}: {lengths[first]} bars{where}, too few for the walk-forward, which needs at "
        f"least {needed} (the longest feature window plus label.horizon){more}; {advice}"
    )


def union_index(indexes: Iterable[pd.Index]) -> pd.DatetimeIndex:
    """The sorted union of several symbols' timestamps (what the folds are generated on)."""
    indexes = list(indexes)
    if not indexes:
        raise DataError("no symbols: the walk-forward needs at least one symbol's bars")
    return union_of(indexes)


def assemble_panel(
    symbols: Sequence[str],
    bars: Sequence[pd.DataFrame],
    features: Sequence[pd.DataFrame],
    horizon: int,
    task: str = "regression",
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Stack per-symbol features with their label and next-bar return into one pooled panel.

    Parameters
    ----------
    symbols, bars, features
        Parallel sequences: each symbol's bars (``close`` is used) and its features,
        indexed like the bars.
    horizon, task
        The label (``make_label``).
    start, end
        Keep only rows with ``start <= timestamp <= end`` (None: open).

    Returns
    -------
    pd.DataFrame
        Index ``(timestamp, symbol)``, sorted; the feature columns (dtype kept), then
        ``label`` and ``next_return`` (float64).
    """
    if not (len(symbols) == len(bars) == len(features)):
        raise DataError(f"assemble_panel: {len(symbols)} symbols, {len(bars)} bars, {len(features)} feature frames")
    if not symbols:
        raise DataError("assemble_panel: no symbols")
    columns = list(features[0].columns)
    frames = []
    for symbol, sym_bars, sym_features in zip(symbols, bars, features):
        if list(sym_features.columns) != columns:
            raise DataError(f"symbol {symbol}: feature columns {list(sym_features.columns)} differ from {columns}")
        if not sym_features.index.equals(sym_bars.index):
            raise DataError(f"symbol {symbol}: features are not indexed like its bars")
        if LABEL in columns or NEXT_RETURN in columns:
            raise DataError(f"symbol {symbol}: a feature is named {LABEL!r} or {NEXT_RETURN!r}")
        close = sym_bars["close"].astype(np.float64)
        frame = sym_features.assign(**{LABEL: make_label(close, horizon, task), NEXT_RETURN: make_label(close, 1)})
        if start is not None or end is not None:
            ts = frame.index
            keep = np.ones(len(ts), dtype=bool)
            if start is not None:
                keep &= np.asarray(ts >= start)
            if end is not None:
                keep &= np.asarray(ts <= end)
            frame = frame[keep]
        frame.index = pd.MultiIndex.from_arrays(
            [pd.DatetimeIndex(frame.index, name="timestamp"), pd.Index([symbol] * len(frame), dtype="str")],
            names=["timestamp", "symbol"],
        )
        frames.append(frame)
    return pd.concat(frames).sort_index(kind="stable")


def fit_panel(
    panel: pd.DataFrame, fold: Fold, model: ModelConfig, task: str, seed: int,
    histories: Mapping[str, pd.DatetimeIndex] | None = None,
) -> FoldFit:
    """Fit ``fold``'s model(s) on the panel's training rows and predict its test rows.

    Parameters
    ----------
    panel
        From ``assemble_panel``; for a symbol's closing bar it must reach that symbol's
        first bar after the test window.
    fold
        Training rows: ``Fold.symbol_train_mask`` on each symbol's own bars (purge and
        embargo in its bars). Test rows: the test window's rows of the symbols that take
        part (``Fold.takes_part``).
    model
        ``model.scope`` picks one pooled model (trained on every training row, those of
        symbols sitting the fold out included) or one per taking part symbol.
    task, seed
        As ``fit_fold`` takes them (``seed`` is the config's; the fold and symbol enter it there).
    histories
        Each symbol's whole timestamp index, when the panel is a slice of it: the embargo
        after an earlier test window is counted on the whole history. None: the panel's rows.

    Returns
    -------
    FoldFit
    """
    ts = panel.index.get_level_values("timestamp")
    names = panel.index.get_level_values("symbol")
    feature_names = [c for c in panel.columns if c not in (LABEL, NEXT_RETURN)]
    by_symbol = _positions_by_symbol(names)
    train_rows = np.zeros(len(panel), dtype=bool)
    test_rows = np.zeros(len(panel), dtype=bool)
    closes: dict[str, pd.Timestamp] = {}
    counts = {}
    for symbol, rows in by_symbol.items():
        own = ts[rows]
        whole = own if histories is None else pd.DatetimeIndex(histories[symbol])
        offset = int(whole.searchsorted(own[0])) if len(own) else 0
        train_rows[rows] = fold.symbol_train_mask(whole)[offset : offset + len(rows)]
        in_test = fold.test_mask(own)
        counts[symbol] = (int(train_rows[rows].sum()), int(in_test.sum()))
        if fold.takes_part(symbol) and in_test.any():
            test_rows[rows] = in_test
            later = own[own > fold.test_end]
            if len(later):
                closes[symbol] = later[0]
    train, test = panel[train_rows], panel[test_rows]
    if test.empty:
        raise DataError(f"fold {fold.index}: no test rows between {fold.test_start} and {fold.test_end}")

    predictions = np.full(len(test), np.nan)
    importances = []
    # Workers are single-threaded processes: an estimator's own thread pool would
    # oversubscribe the cores, and outside a worker would make the same fit cost differently.
    with threadpool_limits(limits=1):
        if model.scope == POOLED:
            pred, imp = fit_fold(
                train[feature_names], train[LABEL], test[feature_names], test[LABEL],
                model, task, seed, fold.index, feature_names=feature_names,
            )
            predictions[:] = pred
            importances.append(_importance_rows(fold.index, POOLED, imp))
        else:
            train_symbols = train.index.get_level_values("symbol")
            test_symbols = test.index.get_level_values("symbol")
            for symbol in sorted(set(test_symbols)):
                sym_train = train[train_symbols == symbol]
                if not np.isfinite(sym_train[[*feature_names, LABEL]].to_numpy(dtype=np.float64)).all(axis=1).any():
                    continue  # no history to learn from: flat in this fold
                rows = np.asarray(test_symbols == symbol)
                sym_test = test[rows]
                pred, imp = fit_fold(
                    sym_train[feature_names], sym_train[LABEL], sym_test[feature_names], sym_test[LABEL],
                    model, task, seed, fold.index, feature_names=feature_names, symbol=symbol,
                )
                predictions[rows] = pred
                importances.append(_importance_rows(fold.index, symbol, imp))

    frame = pd.DataFrame({
        "fold": np.full(len(test), fold.index, dtype=np.int64),
        "timestamp": test.index.get_level_values("timestamp"),
        "symbol": test.index.get_level_values("symbol"),
        "prediction": predictions,
        LABEL: test[LABEL].to_numpy(dtype=np.float64),
        NEXT_RETURN: test[NEXT_RETURN].to_numpy(dtype=np.float64),
    })
    imp_frame = pd.concat(importances, ignore_index=True) if importances else _empty(IMPORTANCE_COLUMNS)
    return FoldFit(fold, frame, imp_frame, closes, counts)


def train_fold(
    fold: Fold,
    symbols: Sequence[str],
    bars: Sequence[pd.DataFrame],
    features: Sequence[pd.DataFrame],
    label: LabelConfig,
    model: ModelConfig,
    seed: int,
) -> FoldFit:
    """One fold end to end up to predictions: assemble the rows it needs, fit, predict.

    Parameters
    ----------
    fold
        From ``plan_folds`` (or ``make_folds`` on the union of the symbols' timestamps).
    symbols, bars, features
        Every symbol's bars and features (the whole history: the fold picks its rows).
    label, model, seed
        The config's ``label`` and ``model`` sections and ``seed``.

    Returns
    -------
    FoldFit
    """
    # The panel reaches each taking part symbol's first bar after the test window, where
    # its positions are closed.
    after = [b.index[i] for s, b in zip(symbols, bars)
             if fold.takes_part(s) and (i := b.index.searchsorted(fold.test_end, side="right")) < len(b)]
    end = max(after) if after else None
    panel = assemble_panel(symbols, bars, features, label.horizon, label.task, start=fold.train_start, end=end)
    histories = {s: b.index for s, b in zip(symbols, bars)}
    return fit_panel(panel, fold, model, label.task, seed, histories)


def backtest_fold(fit: FoldFit, cfg: BacktestConfig) -> FoldResult:
    """Trade one fold's predictions from flat (see the module docstring) and measure it.

    Returns
    -------
    FoldResult
        ``predictions`` gain the ``position`` column; ``equity`` is long
        (``fold, curve, timestamp, equity, buy_and_hold``), one row per bar of each taking
        part symbol and per row of the portfolio; ``metrics`` has one row per symbol (those
        sitting out marked ``sat out``) and ``portfolio``.
    """
    fold, pred = fit.fold, fit.predictions
    rows = _trading_rows(pred, fit.close_at)
    wide = {c: rows.pivot(index="timestamp", columns="symbol", values=c) for c in ("prediction", NEXT_RETURN, "ret", "bar")}
    present = wide["bar"].notna()
    # A position needs a next bar to be held to: none at a symbol's last bar (delisting, end of data).
    holdable = np.isfinite(wide[NEXT_RETURN])
    pos = positions(wide["prediction"].where(holdable), cfg).where(present)
    strategy = simulate(pos, wide["ret"], cfg)
    hold = simulate(pd.DataFrame(1.0, index=pos.index, columns=pos.columns).where(holdable, 0.0).where(present),
                    wide["ret"], cfg.model_copy(update={"rule": "sign"}), costs=False)
    periods = _annualisation(strategy, fold, cfg)
    table = _with_benchmark(measure(strategy, periods), strategy, hold, periods)

    at = pos.index.get_indexer(pred["timestamp"])
    cols = pos.columns.get_indexer(pred["symbol"])
    predictions = pred.assign(position=pos.to_numpy()[at, cols])[PREDICTION_COLUMNS]

    equity = _long_equity(strategy, hold, fold.index)
    # Symbols sitting the fold out keep the plan's figure; the traded curves' are the ones used.
    metrics = _fold_table(table, fit, {**fold.annualisation(), **periods})
    return FoldResult(fold, predictions, fit.importances, equity, metrics)


def aggregate_folds(results: Sequence[FoldResult]) -> dict[str, pd.DataFrame]:
    """Every fold's rows in one table per output, sorted by key (never by finishing order).

    Returns
    -------
    dict
        ``folds`` (by fold, symbols then ``portfolio``), ``predictions`` (by fold,
        timestamp, symbol), ``equity`` (by fold, curve, timestamp), ``importances`` (by
        fold, model, feature); each with a fresh 0..n-1 index.
    """
    if not results:
        raise DataError("aggregate_folds: no fold results")
    def stacked(part: str, keys: list[str]) -> pd.DataFrame:
        return _sorted(pd.concat([getattr(r, part) for r in results], ignore_index=True), keys)

    folds = stacked("metrics", ["fold", "curve"])
    folds = _sorted(folds.assign(_last=folds["curve"] == PORTFOLIO), ["fold", "_last", "curve"]).drop(columns="_last")
    return {
        "folds": folds,
        "predictions": stacked("predictions", ["fold", "timestamp", "symbol"]),
        "equity": stacked("equity", ["fold", "curve", "timestamp"]),
        "importances": stacked("importances", ["fold", "model", "feature"]),
    }


def table(tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    """One table of ``aggregate_folds``' result (one graph output each)."""
    return tables[name]


def _importance_rows(fold: int, model: str, importances: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        "fold": np.full(len(importances), fold, dtype=np.int64),
        "model": pd.Series([model] * len(importances), dtype="str"),
        "feature": pd.Series(importances.index, dtype="str"),
        "importance": importances.to_numpy(dtype=np.float64),
        "method": pd.Series([importances.attrs.get("method", "")] * len(importances), dtype="str"),
    })


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "fold" else "str") for c in columns})


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if frame.duplicated(keys).any():
        dup = frame[frame.duplicated(keys)].iloc[0]
        raise DataError(f"duplicate rows for {dict(dup[keys])}")
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _positions_by_symbol(names: pd.Index) -> dict[str, np.ndarray]:
    """Row positions of each symbol in a stacked panel, in the panel's order (increasing time)."""
    codes, uniques = pd.factorize(np.asarray(names), sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {str(u): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniques)}


def _trading_rows(pred: pd.DataFrame, close_at: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
    """Each symbol's bars in the fold, long: its test rows, then its closing bar (no prediction).

    ``ret`` on a row is the symbol's return from its previous row (NaN on its first):
    the previous row's ``next_return``, so every return is read on the symbol's own bars.
    """
    closing = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(list(close_at.values()), name="timestamp"),
        "symbol": pd.Series(list(close_at.keys()), dtype="str"),
        "prediction": np.nan, NEXT_RETURN: np.nan,
    })
    rows = pd.concat([pred[["timestamp", "symbol", "prediction", NEXT_RETURN]], closing], ignore_index=True)
    rows = rows.sort_values(["symbol", "timestamp"], kind="stable", ignore_index=True)
    rows["ret"] = rows.groupby("symbol", sort=False)[NEXT_RETURN].shift(1)
    rows["bar"] = 1.0
    return rows


def _annualisation(sim: Simulation, fold: Fold, cfg: BacktestConfig) -> dict[str, float]:
    """Periods per year of every curve: the config's, else the fold's plan, else each curve's own bars."""
    given = cfg.periods_per_year or fold.annualisation()
    return {name: curve_periods(given, name, sim.index[sim.bars[:, j]]) for j, name in enumerate(sim.columns)}


def _with_benchmark(table: pd.DataFrame, strategy: Simulation, hold: Simulation,
                    periods: Mapping[str, float]) -> pd.DataFrame:
    """Add the buy-and-hold return, the excess return over it and the information ratio to ``table``."""
    held = measure(hold, periods)["total_return"]
    ratios, notes = [], []
    for name in table.index:
        excess = strategy.returns(name) - hold.returns(name)
        ppy = periods.get(name, np.nan)
        std = excess.std(ddof=1) if len(excess) > 1 else np.nan
        if not np.isfinite(ppy) or not np.isfinite(std) or std == 0:
            ratios.append(np.nan)
            why = "one bar" if len(excess) < 2 else "tracks buy-and-hold exactly" if std == 0 else "no annualisation"
            notes.append(f"information_ratio: {why}")
        else:
            ratios.append(excess.mean() / std * np.sqrt(ppy))
            notes.append("")
    table = table.assign(buy_and_hold_return=held, excess_return=table["total_return"] - held,
                         information_ratio=ratios)
    table["note"] = ["; ".join(n for n in pair if n) for pair in zip(table["note"], notes)]
    return table


def _long_equity(strategy: Simulation, hold: Simulation, fold: int) -> pd.DataFrame:
    """Equity long (``EQUITY_COLUMNS``): one row per bar of each curve, never where a symbol has none."""
    ours, theirs = strategy.equity(), hold.equity()
    keep = strategy.bars.ravel()
    n, k = ours.shape
    return pd.DataFrame({
        "fold": np.full(int(keep.sum()), fold, dtype=np.int64),
        "curve": pd.Series(np.tile(np.asarray(ours.columns, dtype=object), n)[keep], dtype="str"),
        "timestamp": ours.index.repeat(k)[keep],
        "equity": ours.to_numpy().ravel()[keep],
        BUY_AND_HOLD: theirs.to_numpy().ravel()[keep],
    })


def _fold_table(table: pd.DataFrame, fit: FoldFit, periods: Mapping[str, float]) -> pd.DataFrame:
    """``FOLD_COLUMNS``: the traded curves' metrics, and a row for each symbol sitting the fold out."""
    fold = fit.fold
    out = table.reset_index()
    out["status"] = TRADED
    if fold.sat_out:
        sat = pd.DataFrame({"curve": [s for s, _ in fold.sat_out], "status": SAT_OUT,
                            "note": [why for _, why in fold.sat_out]})
        out = pd.concat([out, sat], ignore_index=True)
    out["trades"] = out["trades"].fillna(0).astype(np.int64)
    out["periods_per_year"] = [float(periods.get(c, np.nan)) for c in out["curve"]]
    pooled = sum(n for n, _ in fit.counts.values())
    out["n_train"] = np.array([pooled if c == PORTFOLIO else fit.counts.get(c, (0, 0))[0] for c in out["curve"]],
                              dtype=np.int64)
    portfolio_rows = fit.predictions["timestamp"].nunique()
    out["n_test"] = np.array([portfolio_rows if c == PORTFOLIO else fit.counts.get(c, (0, 0))[1]
                              for c in out["curve"]], dtype=np.int64)
    for key in ("train_start", "train_end", "test_start", "test_end"):
        out[key] = getattr(fold, key)
    out["fold"] = np.int64(fold.index)
    for key in ("curve", "status", "note"):
        out[key] = out[key].astype("str")
    return out[FOLD_COLUMNS]
