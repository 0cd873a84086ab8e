"""Backtest: predictions -> positions -> net returns (costs) -> equity and metrics.

Frames are wide: index = the union of the symbols' timestamps, columns = symbols. A
symbol without a bar on a row has NaN there: it holds its last position until its next
bar, earns nothing and trades nothing on that row, and gets no equity row for it.

Timing (no look-ahead): the position decided at a symbol's bar ``t`` (from the
prediction at ``t``, which sees data up to ``t``) is held from the close of ``t`` to the
close of that symbol's next bar ``t'``::

    gross[t'] = w[t] * ret[t']           ret[t'] = close[t'] / close[t] - 1
    net[t']   = gross[t'] - |w[t'] - w[t]| * (cost_bps + slippage_bps) / 1e4

with ``w = 0`` before the first bar: the first bar pays for entering. A NaN return counts
as 0 (no price, no P&L).

Positions are per-symbol, in units of that symbol's own capital, from a rule in
``RULES``: ``sign`` (+1 / -1 / 0), ``threshold`` (sign where ``|pred| > threshold``, else
0), ``rank`` (per timestamp across the symbols with a prediction there: +1 for the top
``floor(quantile * n)`` (at least 1), -1 for as many at the bottom, 0 else; fewer than 2
predictions -> flat; ties go by column order). A NaN prediction is flat.

Curves:

- per symbol: that symbol traded alone at its unit position, net of its own costs, on
  its own bars only;
- portfolio: weights from the positions, net of costs on the weights' turnover, on every
  row. ``sign`` / ``threshold``: ``w = pos / n_symbols`` for every symbol of the frame, so
  the portfolio return is exactly the equal-weight sum of the per-symbol net returns
  divided by ``n_symbols``: a symbol without a bar, not listed yet or delisted leaves its
  share in cash (never redistributed to the others). ``rank``: ``w = pos / sum|pos|``
  over the symbols with a bar on that row: long 0.5 and short 0.5 of capital, gross 1,
  net 0 (symbols on calendars that share no timestamp are never ranked together). A
  symbol without a bar on a row holds the weight of its last bar (it cannot trade), and
  the symbols with a bar share only what that leaves of gross 1 (cash for the rest): a
  weekday stock's weekend weight is not levered up by the crypto ranked that day.

Metrics (one row per symbol and ``portfolio``), from net returns ``r`` over the ``n`` bars
of that curve, annualised with that curve's ``ppy`` (``periods_per_year``: the config's,
or each calendar's own, ``dask_pipeline.calendars``): ``total_return`` = prod(1 + r) - 1;
``cagr`` = (1 + total)^(ppy / n) - 1; ``volatility`` = std(r, ddof=1) * sqrt(ppy);
``sharpe`` = mean / std * sqrt(ppy); ``sortino`` = mean / sqrt(mean(min(r, 0)^2)) *
sqrt(ppy); ``max_drawdown`` = the most negative equity / running peak - 1 (equity starts
at 1; reported <= 0); ``calmar`` = cagr / |max_drawdown|; ``hit_rate`` = share of bars with
r > 0 among bars with r != 0. From positions: ``trades`` = bars where the position
(weight) changes; ``turnover`` = mean sum|w[t] - w[t - 1]| per bar, times ppy
(annualised); ``exposure`` = mean gross position held over a bar, sum|w[t - 1]| (time in
market for a single symbol). A ratio whose denominator is 0 is NaN, never a warning, and
the ``note`` column says which metric is undefined and why (``"sharpe: zero
volatility"``, ``"sortino: no losing bar"``, ``"calmar: no drawdown"``...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numba import njit
from pydantic import Field

from dask_pipeline.calendars import infer_calendar
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
    periods_per_year: int | None = Field(default=None, gt=0)  # None: each calendar's own


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
    pd.DataFrame of float64, same labels (0 where there is no prediction).
    """
    pred = _wide(predictions, "predictions")
    values = RULES[cfg.rule].positions(pred.to_numpy(dtype=np.float64), cfg)
    return pd.DataFrame(values, index=pred.index, columns=pred.columns)


def portfolio_weights(positions: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Portfolio weights from unit positions, by the rule's weighting (module docstring).

    NaN (no bar) stays NaN. ``gross``: on a row where every symbol has a bar, the weights
    are the positions over their gross; a symbol without a bar keeps the weight it took
    at its last bar, and the symbols with a bar share what is left of gross 1.
    """
    pos = _wide(positions, "positions").astype(np.float64)
    if RULES[rule].weighting == "symbols":
        return pos / pos.shape[1]
    values = pos.to_numpy()
    bars = ~np.isnan(values)
    gross = np.abs(np.where(bars, values, 0.0)).sum(axis=1)
    weights = values / np.where(gross > 0, gross, 1.0)[:, None]
    partial = np.flatnonzero(bars.any(axis=1) & ~bars.all(axis=1))
    if partial.size:
        rows = np.arange(values.shape[0])[:, None]
        # last[t, j]: the row of symbol j's last bar before row t (-1 before its first).
        last = np.maximum.accumulate(np.where(bars, rows, -1), axis=0)
        last = np.vstack([np.full((1, values.shape[1]), -1), last[:-1]])
        for t in partial:  # in order: a carried weight is final when a later row reads it
            away = np.flatnonzero(~bars[t])
            held = last[t, away]
            carried = np.abs(weights[held[held >= 0], away[held >= 0]]).sum()
            weights[t, bars[t]] *= max(0.0, 1.0 - carried)
    return pd.DataFrame(weights, index=pos.index, columns=pos.columns)


@dataclass(frozen=True)
class Simulation:
    """What unit positions did, bar by bar, on a wide (possibly ragged) frame.

    Columns are the symbols then ``portfolio``; ``bars[t, j]`` says symbol ``j`` has a bar
    on row ``t`` (the portfolio has every row). ``net``, ``turnover`` and ``held`` (gross
    position held over the bar) are NaN where a symbol has no bar; ``trades`` counts
    position changes per column (for the portfolio: weight changes of every symbol).
    """

    index: pd.DatetimeIndex
    columns: list[str]
    bars: np.ndarray
    net: np.ndarray
    turnover: np.ndarray
    held: np.ndarray
    trades: np.ndarray

    def equity(self) -> pd.DataFrame:
        """Cumulative net equity per column from 1 before its first bar; NaN where it has no bar."""
        grown = np.cumprod(1.0 + np.where(np.isnan(self.net), 0.0, self.net), axis=0)
        return pd.DataFrame(np.where(np.isnan(self.net), np.nan, grown), index=self.index, columns=self.columns)

    def returns(self, column: str) -> np.ndarray:
        """The net returns of one column on its own bars only."""
        j = self.columns.index(column)
        return self.net[~np.isnan(self.net[:, j]), j]


def simulate(positions: pd.DataFrame, returns: pd.DataFrame, cfg: BacktestConfig, costs: bool = True) -> Simulation:
    """Trade unit positions against per-bar returns (module docstring: timing, costs, weights).

    Parameters
    ----------
    positions : pd.DataFrame
        One row per bar of the union calendar; NaN where the symbol has no bar (it holds
        its last position until its next bar), 0 for flat.
    returns : pd.DataFrame
        Each symbol's simple return from its previous bar, on its bars; must hold every
        timestamp and symbol of ``positions`` (extra rows and columns are ignored).
    cfg : BacktestConfig
        Rule (portfolio weighting) and costs.
    costs : bool
        False trades for free (the buy-and-hold benchmark).
    """
    pos = _wide(positions, "positions").astype(np.float64)
    values = pos.to_numpy()
    if np.isinf(values).any():
        raise DataError("positions: infinite values; use 0 for flat and NaN where a symbol has no bar")
    ret = _aligned_returns(returns, pos)
    cost_rate = (cfg.cost_bps + cfg.slippage_bps) / 1e4 if costs else 0.0
    r = ret.to_numpy(dtype=np.float64)
    bars = ~np.isnan(values)
    # A symbol without a bar keeps its position to its next bar: no trade, no return until then.
    r = np.where(bars, r, np.nan)
    held_pos = _carried(values)
    sym_net, sym_turn = net_returns_nb(held_pos, r, cost_rate)
    w = _carried(portfolio_weights(pos, cfg.rule).to_numpy())
    w_net, w_turn = net_returns_nb(w, r, cost_rate)

    previous = np.vstack([np.zeros((1, values.shape[1])), held_pos[:-1]])
    previous_w = np.vstack([np.zeros((1, values.shape[1])), w[:-1]])
    net = np.column_stack([np.where(bars, sym_net, np.nan), w_net.sum(axis=1)])
    turnover = np.column_stack([np.where(bars, sym_turn, np.nan), w_turn.sum(axis=1)])
    held = np.column_stack([np.where(bars, np.abs(previous), np.nan), np.abs(previous_w).sum(axis=1)])
    trades = np.append((bars & (sym_turn > 0)).sum(axis=0), int((w_turn > 0).sum()))
    all_bars = np.column_stack([bars, np.ones(len(values), dtype=bool)])
    return Simulation(pos.index, [*pos.columns, PORTFOLIO], all_bars, net, turnover, held, trades)


def measure(sim: Simulation, periods_per_year: int | Mapping[str, int] | None = None) -> pd.DataFrame:
    """``METRICS`` and ``TRADE_METRICS`` of every column of ``sim``, each over its own bars, and a ``note``.

    Parameters
    ----------
    periods_per_year
        One figure for every column, a ``{column: figure}`` mapping, or None to infer each
        column's from its own bars (``dask_pipeline.calendars``).

    Returns
    -------
    pd.DataFrame
        Index ``curve`` (symbols, ``portfolio``); ``note`` names each undefined (NaN)
        metric and why (``"sharpe: zero volatility; calmar: no drawdown"``), else "".
    """
    rows, notes = [], []
    for j, name in enumerate(sim.columns):
        own = sim.bars[:, j]
        ppy = curve_periods(periods_per_year, name, sim.index[own])
        r = np.ascontiguousarray(sim.net[own, j])
        stats = metrics_nb(r, float(ppy))
        turn, held = sim.turnover[own, j], sim.held[own, j]
        n = len(r)
        rows.append([*stats, int(sim.trades[j]), turn.mean() * ppy if n else np.nan, held.mean() if n else np.nan])
        notes.append(undefined_metrics(stats, n))
    table = pd.DataFrame(rows, index=pd.Index(sim.columns, name="curve"), columns=[*METRICS, *TRADE_METRICS])
    table["trades"] = table["trades"].astype(np.int64)
    table["note"] = pd.Series(notes, index=table.index, dtype="str")
    return table


def backtest(
    positions: pd.DataFrame, returns: pd.DataFrame, cfg: BacktestConfig,
    periods_per_year: int | Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Equity curves and metrics of unit positions against simple returns.

    Parameters
    ----------
    positions : pd.DataFrame
        From ``positions``: one row per bar of the union calendar (contiguous bars of
        ``returns``), 0 for flat, NaN where a symbol has no bar.
    returns : pd.DataFrame
        Each symbol's return from its previous bar on row ``t`` (``close[t] / close[t-1] - 1``
        on its own bars); must hold every timestamp and symbol of ``positions``.
    cfg : BacktestConfig
    periods_per_year
        Overrides ``cfg.periods_per_year`` (one figure or one per column); when both are
        None each column's is inferred from its own bars.

    Returns
    -------
    equity : pd.DataFrame
        Cumulative net equity (starting from 1 before the first bar), one column per
        symbol plus ``"portfolio"``; NaN where a symbol has no bar.
    metrics : pd.DataFrame
        Index symbols plus ``"portfolio"``; columns ``METRICS + TRADE_METRICS`` and ``note``.
    """
    sim = simulate(positions, returns, cfg)
    return sim.equity(), measure(sim, periods_per_year if periods_per_year is not None else cfg.periods_per_year)


def undefined_metrics(stats: np.ndarray, n: int) -> str:
    """Which of ``metrics_nb``'s ``stats`` (over ``n`` bars) are undefined, and why: ``""`` when none."""
    if n == 0:
        return "no bars"
    value = dict(zip(METRICS, stats))
    reasons = []
    if n == 1:
        reasons.append("volatility, sharpe: one bar")
    elif np.isnan(value["sharpe"]):
        reasons.append("sharpe: zero volatility" if np.isfinite(value["volatility"]) else "sharpe: no annualisation")
    if np.isnan(value["sortino"]):
        reasons.append("sortino: no losing bar")
    if np.isnan(value["calmar"]):
        reasons.append("calmar: no drawdown")
    if np.isnan(value["hit_rate"]):
        reasons.append("hit_rate: never in the market")
    return "; ".join(reasons)


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


def _carried(values: np.ndarray) -> np.ndarray:
    """NaN cells (no bar) take the column's last value before them, 0 before its first bar."""
    frame = pd.DataFrame(values)
    return np.ascontiguousarray(frame.ffill().fillna(0.0).to_numpy(dtype=np.float64))


def curve_periods(periods_per_year: int | Mapping[str, int] | None, column: str, own: pd.DatetimeIndex) -> float:
    """The annualisation figure of one column: given, looked up, or inferred from its own bars."""
    if isinstance(periods_per_year, Mapping):
        if column in periods_per_year:
            return float(periods_per_year[column])
    elif periods_per_year is not None:
        return float(periods_per_year)
    if len(own) < 2:
        return np.nan
    return float(infer_calendar(own, column).periods_per_year)
