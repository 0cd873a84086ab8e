"""Walk-forward study stages: pooled panel -> per-fold fit -> per-fold backtest -> tables.

The walk-forward graph (``graphs/walkforward.py``) composes these; the benchmark's plain
loop calls them directly. Like every stage function they are pure: frames and typed
config sections in, frames out, randomness only from ``seed``.

- **Panel**: the per-symbol features, stacked into one frame indexed by
  ``(timestamp, symbol)`` (sorted), plus ``label`` (``make_label`` over ``label.horizon``)
  and ``next_return`` (``close[t + 1] / close[t] - 1``: what a position taken at the close
  of ``t`` earns). Both are computed on each symbol's full history before any slicing, so
  a slice never shortens a label.
- **Fit** (``train_fold``): training rows = ``fold.train_mask`` (purge and embargo are the
  fold's), test rows = ``fold.test_mask``. ``scope: pooled`` fits one model on every
  symbol's training rows; ``per_symbol`` fits one per symbol (a symbol without a usable
  training row gets NaN predictions, i.e. flat). Estimators run single-threaded
  (``threadpool_limits(1)``) wherever the stage runs: one per worker process, and a fit in
  the client or in a plain loop does the same work as on a worker.
- **Backtest** (``backtest_fold``): each fold is traded on its own from flat. Positions
  come from the test-window predictions; the last test bar's positions are held to the
  next bar's close and closed there (costs paid), so every test bar's prediction is
  realised once and no P&L leaks between folds. The fold's equity therefore has one row
  more than its test window, except for a fold that ends with the data.
- **Aggregate** (``aggregate_folds``): concatenates the folds' frames and sorts every table
  by its key, so the output does not depend on the order in which folds finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from dask_pipeline.backtest import METRICS, PORTFOLIO, TRADE_METRICS, BacktestConfig, backtest, positions
from dask_pipeline.errors import DataError
from dask_pipeline.folds import Fold
from dask_pipeline.models import LabelConfig, ModelConfig, fit_fold, make_label

LABEL = "label"
NEXT_RETURN = "next_return"
POOLED = "pooled"
#: The tables ``aggregate_folds`` returns, one result file each.
TABLES = ("folds", "predictions", "equity", "importances")

PREDICTION_COLUMNS = ["fold", "timestamp", "symbol", "prediction", "position", LABEL, NEXT_RETURN]
IMPORTANCE_COLUMNS = ["fold", "model", "feature", "importance", "method"]
EQUITY_COLUMNS = ["fold", "curve", "timestamp", "equity"]
FOLD_COLUMNS = ["fold", "curve", "train_start", "train_end", "test_start", "test_end", "n_train", "n_test",
                *METRICS, *TRADE_METRICS]


@dataclass(frozen=True)
class FoldFit:
    """What ``train_fold`` hands the backtest.

    ``predictions``: one row per test row (``fold, timestamp, symbol, prediction, label,
    next_return``); ``importances``: one row per model and feature; ``close_at``: the first
    bar after the test window (where its positions are closed), None at the end of the data.
    """

    fold: Fold
    predictions: pd.DataFrame
    importances: pd.DataFrame
    close_at: pd.Timestamp | None


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
    union = reduce(lambda a, b: a.union(b), indexes[1:], pd.DatetimeIndex(indexes[0]))
    return pd.DatetimeIndex(union, name="timestamp")


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


def fit_panel(panel: pd.DataFrame, fold: Fold, model: ModelConfig, task: str, seed: int) -> FoldFit:
    """Fit ``fold``'s model(s) on the panel's training rows and predict its test rows.

    Parameters
    ----------
    panel
        From ``assemble_panel``; it must reach one bar past the test window for ``close_at``.
    fold
        Its masks select the rows.
    model
        ``model.scope`` picks one pooled model or one per symbol.
    task, seed
        As ``fit_fold`` takes them (``seed`` is the config's; the fold and symbol enter it there).

    Returns
    -------
    FoldFit
    """
    ts = panel.index.get_level_values("timestamp")
    feature_names = [c for c in panel.columns if c not in (LABEL, NEXT_RETURN)]
    train = panel[fold.train_mask(ts)]
    test = panel[fold.test_mask(ts)]
    if test.empty:
        raise DataError(f"fold {fold.index}: no test rows between {fold.test_start} and {fold.test_end}")
    after = ts[ts > fold.test_end]
    close_at = after.min() if len(after) else None

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
    return FoldFit(fold, frame, imp_frame, close_at)


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
        From ``make_folds`` on the union of the symbols' timestamps.
    symbols, bars, features
        Every symbol's bars and features (the whole history: the fold picks its rows).
    label, model, seed
        The config's ``label`` and ``model`` sections and ``seed``.

    Returns
    -------
    FoldFit
    """
    # The panel reaches the first bar after the test window, where its positions are closed.
    after = [b.index[i] for b in bars if (i := b.index.searchsorted(fold.test_end, side="right")) < len(b)]
    end = min(after) if after else None
    panel = assemble_panel(symbols, bars, features, label.horizon, label.task, start=fold.train_start, end=end)
    return fit_panel(panel, fold, model, label.task, seed)


def backtest_fold(fit: FoldFit, cfg: BacktestConfig) -> FoldResult:
    """Trade one fold's predictions from flat (see the module docstring) and measure it.

    Returns
    -------
    FoldResult
        ``predictions`` gain the ``position`` column; ``equity`` is long
        (``fold, curve, timestamp, equity``); ``metrics`` has one row per symbol and
        ``portfolio`` with the fold's bounds.
    """
    fold, pred = fit.fold, fit.predictions
    wide = pred.pivot(index="timestamp", columns="symbol", values="prediction")
    nxt = pred.pivot(index="timestamp", columns="symbol", values=NEXT_RETURN)
    pos = positions(wide, cfg)
    index = wide.index
    if fit.close_at is not None:
        index = index.append(pd.DatetimeIndex([fit.close_at]))
    # backtest() pairs row t's return with the position of row t - 1: shift next_return down.
    shifted = np.vstack([np.full((1, nxt.shape[1]), np.nan), nxt.to_numpy(dtype=np.float64)])[: len(index)]
    returns = pd.DataFrame(shifted, index=index, columns=nxt.columns)
    equity, metrics = backtest(pos.reindex(index, fill_value=0.0), returns, cfg)

    rows = pos.index.get_indexer(pred["timestamp"])
    cols = pos.columns.get_indexer(pred["symbol"])
    predictions = pred.assign(position=pos.to_numpy()[rows, cols])[PREDICTION_COLUMNS]

    equity_long = equity.rename_axis(index="timestamp", columns="curve").stack().rename("equity").reset_index()
    equity_long.insert(0, "fold", np.int64(fold.index))

    table = metrics.reset_index()
    bounds = {"fold": fold.index, "train_start": fold.train_start, "train_end": fold.train_end,
              "test_start": fold.test_start, "test_end": fold.test_end, "n_train": fold.n_train, "n_test": fold.n_test}
    for key, value in bounds.items():
        table[key] = value
    table["fold"] = table["fold"].astype(np.int64)
    return FoldResult(fold, predictions, fit.importances, equity_long[EQUITY_COLUMNS], table[FOLD_COLUMNS])


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
