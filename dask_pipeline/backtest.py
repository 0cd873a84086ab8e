"""Backtest: predictions -> positions -> net returns (costs) -> equity and metrics.

Frames are wide: index = timestamps, columns = symbols.

Timing (no look-ahead): the position decided at bar ``t`` (from the prediction at ``t``,
which sees data up to ``t``) is held from the close of ``t`` to the close of ``t + 1``::

    gross[t] = w[t - 1] * ret[t]          ret[t] = close[t] / close[t - 1] - 1
    net[t]   = gross[t] - |w[t] - w[t - 1]| * (cost_bps + slippage_bps) / 1e4

with ``w[-1] = 0``: the first bar pays for entering; nothing is closed at the end (the
last position is marked, not traded). A NaN return counts as 0 (no price, no P&L).

Positions are per-symbol, in units of that symbol's own capital, from a rule in
``RULES``: ``sign`` (+1 / -1 / 0), ``threshold`` (sign where ``|pred| > threshold``, else
0), ``rank`` (per timestamp across symbols with a prediction: +1 for the top
``floor(quantile * n)`` (at least 1), -1 for as many at the bottom, 0 else; fewer than 2
predictions -> flat; ties go by column order). A NaN prediction is flat.

Curves:

- per symbol: that symbol traded alone at its unit position, net of its own costs;
- portfolio: weights from the positions, net of costs on the weights' turnover.
  ``sign`` / ``threshold``: ``w = pos / n_symbols``, so the portfolio return is exactly
  the equal-weight average of the per-symbol net returns. ``rank``: ``w = pos / sum|pos|``
  per timestamp: long 0.5 and short 0.5 of capital, gross 1, net 0.

Metrics (one row per symbol and ``portfolio``), from net returns ``r`` over ``n`` bars:
``total_return`` = prod(1 + r) - 1; ``cagr`` = (1 + total)^(ppy / n) - 1;
``volatility`` = std(r, ddof=1) * sqrt(ppy); ``sharpe`` = mean / std * sqrt(ppy);
``sortino`` = mean / sqrt(mean(min(r, 0)^2)) * sqrt(ppy); ``max_drawdown`` = the most
negative equity / running peak - 1 (equity starts at 1; reported <= 0); ``calmar`` =
cagr / |max_drawdown|; ``hit_rate`` = share of bars with r > 0 among bars with r != 0.
From positions: ``trades`` = bars where the position (weight) changes; ``turnover`` =
mean sum|w[t] - w[t - 1]| per bar, times ppy (annualised); ``exposure`` = mean gross
position held over a bar, sum|w[t - 1]| (time in market for a single symbol). A ratio
whose denominator is 0 is NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numba import njit
from pydantic import Field

from dask_pipeline.errors import DataError
from dask_pipeline.schema import Section

METRICS = (
    "total_return", "cagr", "volatility", "sharpe", "sortino",
    "max_drawdown", "calmar", "hit_rate",
)
TRADE_METRICS = ("trades", "turnover", "exposure")
PORTFOLIO = "portfolio"


class BacktestConfig(Section):
    """``backtest`` section: position rule, its parameters, costs, annualisation."""

    rule: Literal["sign", "threshold", "rank"] = "sign"
    threshold: float = Field(default=0.0, ge=0.0)
    quantile: float = Field(default=0.2, gt=0.0, le=0.5)
    cost_bps: float = Field(default=1.0, ge=0.0)
    slippage_bps: float = Field(default=1.0, ge=0.0)
    periods_per_year: int = Field(default=252, gt=0)


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def rank_positions_nb(pred, quantile):
    """+1 top / -1 bottom ``max(1, floor(quantile * n))`` of each row's finite values."""
    n_rows, n_cols = pred.shape
    out = np.zeros((n_rows, n_cols))
    for t in range(n_rows):
        valid = np.empty(n_cols, dtype=np.int64)
        m = 0
        for j in range(n_cols):
            if np.isfinite(pred[t, j]):
                valid[m] = j
                m += 1
        if m < 2:
            continue
        k = max(1, int(np.floor(quantile * m)))
        values = np.empty(m)
        for i in range(m):
            values[i] = pred[t, valid[i]]
        order = np.argsort(values, kind="mergesort")
        for i in range(k):
            out[t, valid[order[i]]] = -1.0
            out[t, valid[order[m - 1 - i]]] = 1.0
    return out


@njit(cache=True)
def net_returns_nb(weights, returns, cost_rate):
    """Per-column net returns and turnover: ``w[t-1] * r[t] - cost_rate * |w[t] - w[t-1]|``."""
    n_rows, n_cols = weights.shape
    net = np.empty((n_rows, n_cols))
    turnover = np.empty((n_rows, n_cols))
    for j in range(n_cols):
        prev = 0.0
        for t in range(n_rows):
            r = returns[t, j]
            gross = prev * r if np.isfinite(r) else 0.0
            traded = abs(weights[t, j] - prev)
            turnover[t, j] = traded
            net[t, j] = gross - cost_rate * traded
            prev = weights[t, j]
    return net, turnover


@njit(cache=True)
def metrics_nb(r, periods_per_year):
    """The ``METRICS`` of one net-return series, in that order."""
    n = r.shape[0]
    out = np.full(8, np.nan)
    if n == 0:
        return out
    equity = 1.0
    peak = 1.0
    max_dd = 0.0
    total = 0.0
    down = 0.0
    wins = 0
    active = 0
    for t in range(n):
        equity *= 1.0 + r[t]
        if equity > peak:
            peak = equity
        dd = equity / peak - 1.0
        if dd < max_dd:
            max_dd = dd
        total += r[t]
        if r[t] < 0.0:
            down += r[t] * r[t]
        if r[t] != 0.0:
            active += 1
            if r[t] > 0.0:
                wins += 1
    mean = total / n
    total_return = equity - 1.0
    out[0] = total_return
    out[1] = equity ** (periods_per_year / n) - 1.0 if equity > 0.0 else -1.0
    if n > 1:
        ss = 0.0
        for t in range(n):
            ss += (r[t] - mean) ** 2
        std = np.sqrt(ss / (n - 1))
        out[2] = std * np.sqrt(periods_per_year)
        if std > 0.0:
            out[3] = mean / std * np.sqrt(periods_per_year)
    downside = np.sqrt(down / n)
    if downside > 0.0:
        out[4] = mean / downside * np.sqrt(periods_per_year)
    out[5] = max_dd
    if max_dd < 0.0:
        out[6] = out[1] / -max_dd
    if active > 0:
        out[7] = wins / active
    return out


# -------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class PositionRule:
    """A position rule: ``positions(pred, cfg)`` on a (bars, symbols) array, and how the
    portfolio weighs the positions: ``"symbols"`` (pos / n_symbols) or ``"gross"``
    (pos / sum|pos| per bar)."""

    positions: Callable[[np.ndarray, BacktestConfig], np.ndarray]
    weighting: Literal["symbols", "gross"]


def _sign(pred: np.ndarray, cfg: BacktestConfig) -> np.ndarray:
    return np.where(np.isfinite(pred), np.sign(pred), 0.0)


def _threshold(pred: np.ndarray, cfg: BacktestConfig) -> np.ndarray:
    return np.where(np.isfinite(pred) & (np.abs(pred) > cfg.threshold), np.sign(pred), 0.0)


def _rank(pred: np.ndarray, cfg: BacktestConfig) -> np.ndarray:
    return rank_positions_nb(pred, cfg.quantile)


RULES: dict[str, PositionRule] = {
    "sign": PositionRule(_sign, "symbols"),
    "threshold": PositionRule(_threshold, "symbols"),
    "rank": PositionRule(_rank, "gross"),
}


# ------------------------------------------------------------------------- public


def positions(predictions: pd.DataFrame, cfg: BacktestConfig) -> pd.DataFrame:
    """Per-symbol unit positions in [-1, 1] from a wide frame of predictions.

    Parameters
    ----------
    predictions : pd.DataFrame
        Index timestamps (unique, increasing), one column per symbol; NaN = no prediction.
    cfg : BacktestConfig
        ``rule`` picks the entry of ``RULES``.

    Returns
    -------
    pd.DataFrame of float64, same labels.
    """
    pred = _wide(predictions, "predictions")
    values = RULES[cfg.rule].positions(pred.to_numpy(dtype=np.float64), cfg)
    return pd.DataFrame(values, index=pred.index, columns=pred.columns)


def portfolio_weights(positions: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Portfolio weights from unit positions, by the rule's weighting (module docstring)."""
    pos = _wide(positions, "positions").astype(np.float64)
    if RULES[rule].weighting == "symbols":
        return pos / pos.shape[1]
    gross = pos.abs().sum(axis=1)
    return pos.div(gross.where(gross > 0, 1.0), axis=0)


def backtest(
    positions: pd.DataFrame, returns: pd.DataFrame, cfg: BacktestConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Equity curves and metrics of unit positions against simple returns.

    Parameters
    ----------
    positions : pd.DataFrame
        From ``positions``: one row per bar (contiguous bars of ``returns``; fill 0 for flat).
    returns : pd.DataFrame
        Simple returns per bar, ``close[t] / close[t-1] - 1`` on row ``t``; must hold every
        timestamp and symbol of ``positions`` (extra rows and columns are ignored).
    cfg : BacktestConfig

    Returns
    -------
    equity : pd.DataFrame
        Cumulative net equity (starting from 1 before the first bar), one column per
        symbol plus ``"portfolio"``.
    metrics : pd.DataFrame
        Index symbols plus ``"portfolio"``; columns ``METRICS + TRADE_METRICS``.
    """
    pos = _wide(positions, "positions").astype(np.float64)
    if not np.isfinite(pos.to_numpy()).all():
        raise DataError("positions: NaN or infinite values; use 0 for flat")
    ret = _aligned_returns(returns, pos)
    cost_rate = (cfg.cost_bps + cfg.slippage_bps) / 1e4
    r = ret.to_numpy(dtype=np.float64)

    sym_net, sym_turn = net_returns_nb(np.ascontiguousarray(pos.to_numpy()), r, cost_rate)
    w = portfolio_weights(pos, cfg.rule).to_numpy()
    w_net, w_turn = net_returns_nb(np.ascontiguousarray(w), r, cost_rate)
    port_net = w_net.sum(axis=1)

    nets = np.column_stack([sym_net, port_net])
    names = [*pos.columns, PORTFOLIO]
    equity = pd.DataFrame(np.cumprod(1.0 + nets, axis=0), index=pos.index, columns=names)

    held_sym = np.abs(np.vstack([np.zeros((1, pos.shape[1])), pos.to_numpy()[:-1]]))
    held_port = np.abs(np.vstack([np.zeros((1, w.shape[1])), w[:-1]])).sum(axis=1)
    ppy = cfg.periods_per_year
    rows = []
    for j in range(len(names)):
        if j < pos.shape[1]:
            turn, held = sym_turn[:, j], held_sym[:, j]
            trades = int((turn > 0).sum())
        else:
            turn, held = w_turn.sum(axis=1), held_port
            trades = int((w_turn > 0).sum())
        stats = metrics_nb(np.ascontiguousarray(nets[:, j]), float(ppy))
        n = len(turn)
        rows.append([*stats, trades, turn.mean() * ppy if n else np.nan,
                     held.mean() if n else np.nan])
    table = pd.DataFrame(rows, index=pd.Index(names, name="curve"),
                         columns=[*METRICS, *TRADE_METRICS])
    table["trades"] = table["trades"].astype(np.int64)
    return equity, table


def metrics(returns: pd.Series, periods_per_year: int = 252) -> pd.Series:
    """The ``METRICS`` of one series of net returns (see the module docstring)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise DataError(f"metrics: expected one series of returns, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise DataError("metrics: returns contain NaN or infinite values")
    stats = metrics_nb(np.ascontiguousarray(r), float(periods_per_year))
    return pd.Series(stats, index=list(METRICS), name=getattr(returns, "name", None))


def _wide(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{what}: expected a DataFrame (timestamps x symbols), got "
                        f"{type(frame).__name__}")
    if not frame.index.is_unique:
        raise DataError(f"{what}: timestamp {frame.index[frame.index.duplicated()][0]} repeats")
    if not frame.index.is_monotonic_increasing:
        raise DataError(f"{what}: timestamps are not increasing")
    if not frame.columns.is_unique:
        raise DataError(f"{what}: symbol {frame.columns[frame.columns.duplicated()][0]} repeats")
    if frame.shape[1] == 0:
        raise DataError(f"{what}: no symbols")
    return frame


def _aligned_returns(returns: pd.DataFrame, pos: pd.DataFrame) -> pd.DataFrame:
    ret = _wide(returns, "returns")
    missing = pos.columns.difference(ret.columns)
    if len(missing):
        raise DataError(f"returns: no column for symbol {missing[0]}")
    where = ret.index.get_indexer(pos.index)
    if (where < 0).any():
        raise DataError(f"returns: no row for timestamp {pos.index[where < 0][0]}")
    if len(where) > 1 and (np.diff(where) != 1).any():
        gap = int(np.flatnonzero(np.diff(where) != 1)[0])
        raise DataError(
            f"positions skip bars of returns between {pos.index[gap]} and {pos.index[gap + 1]}; "
            f"give a position on every bar (0 for flat)"
        )
    return ret.iloc[where][pos.columns]
