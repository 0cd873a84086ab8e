"""``scan``: bars in, Elliott-wave patterns out (one row per reported pattern).

Steps: zigzag pivots of the whole series -> windows, pre-scored and filtered -> each
window's top-k candidate impulses (the backend) -> per symbol: a pattern found in
several overlapping windows is reported once, in its first window -> the symbol's top-k
by ``(-score, window, candidate)`` -> the best ABC correction after each one when
``scan_pattern_types`` includes ``corrections``. Rows are sorted by window, then score
(best first), then candidate index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.errors import DataError
from dask_pipeline.waves.backends import get_backend
from dask_pipeline.waves.candidates import TopK, best_corrections
from dask_pipeline.waves.pivots import PIVOT_MODES, atr_nb, reversal_amounts, zigzag_nb
from dask_pipeline.waves.score import SUBSCORES, ScoreParams, score_params
from dask_pipeline.waves.spec import WavesConfig
from dask_pipeline.waves.windows import Plan, plan_windows

_PRICE_COLUMNS = ("high", "low", "close")


def scan(
    bars: pd.DataFrame, spec: WavesConfig | None = None, backend: str | None = None, symbol: str | None = None
) -> pd.DataFrame:
    """Scan one symbol's bars for Elliott-wave impulses (and ABC corrections when asked).

    Parameters
    ----------
    bars
        Bars with ``high``, ``low``, ``close`` and a ``DatetimeIndex`` (the data contract);
        a naive index is read as UTC (the pattern timestamps come back in UTC).
    spec
        The ``waves`` config section; defaults when None.
    backend
        ``auto``, ``numba``, ``numpy``, ``cupy`` or ``cuda``; None uses ``spec.backend``
        (``auto``: cuda, then cupy, when a GPU is visible, else numba). Every backend gives
        the same rows.
    symbol
        Written to a ``symbol`` column; defaults to ``bars.attrs["symbol"]`` if set,
        else there is no such column.

    Returns
    -------
    DataFrame
        One row per pattern: ``symbol``, ``direction`` (up/down), ``window``,
        ``window_start``, ``window_end``, ``pre_score``, ``candidate`` (index in the
        window's enumeration), pivot timestamps ``t0``..``t5`` and prices ``p0``..``p5``,
        sub-scores ``wave2_score``..``time_score`` and ``score`` in [0, 1]; with
        corrections also ``t6``..``t8``, ``p6``..``p8`` (A, B, C ends; NaT/NaN when
        none is valid) and ``correction_score``.
    """
    spec = WavesConfig() if spec is None else spec
    symbol = symbol if symbol is not None else bars.attrs.get("symbol")
    high, low, close = _prices(bars, symbol)
    if bars.index.tz is None:
        bars = bars.set_axis(bars.index.tz_localize("UTC"))
    chosen = get_backend(backend or spec.backend)
    plan = plan_series(high, low, close, spec)
    params = score_params(spec)
    return _patterns(bars, plan, chosen.top_candidates(plan, spec, params), symbol, spec, chosen.xp, params)


def scan_many(
    frames: Sequence[pd.DataFrame],
    spec: WavesConfig | None = None,
    backend: str | None = None,
    symbols: Sequence[str | None] | None = None,
) -> list[pd.DataFrame]:
    """``scan`` over several symbols' bars: the same frames, one per symbol.

    The ``cuda`` backend scores every window of every symbol in one kernel launch; the
    others take the symbols one after another.
    """
    spec = WavesConfig() if spec is None else spec
    names = [None] * len(frames) if symbols is None else list(symbols)
    chosen = get_backend(backend or spec.backend)
    if not hasattr(chosen, "top_candidates_many"):
        return [scan(bars, spec, chosen.name, name) for bars, name in zip(frames, names)]
    names = [name if name is not None else bars.attrs.get("symbol") for bars, name in zip(frames, names)]
    params = score_params(spec)
    plans = [plan_series(*_prices(bars, name), spec) for bars, name in zip(frames, names)]
    tops = chosen.top_candidates_many(plans, spec, params)
    return [_patterns(bars, plan, top, name, spec, chosen.xp, params)
            for bars, plan, top, name in zip(frames, plans, tops, names)]  # fmt: skip


def _patterns(
    bars: pd.DataFrame, plan: Plan, top: TopK, symbol: str | None, spec: WavesConfig, xp: Any, params: ScoreParams
) -> pd.DataFrame:
    """One symbol's pattern rows from its windows' top-k: per-symbol top-k, then corrections."""
    top = per_symbol(top, spec.top_k_per_symbol)
    frame = _frame(bars.index, plan, top, symbol)
    if spec.corrections:
        ids, score = best_corrections(xp, plan, top.pivots, spec.up_to, params)
        found = ids >= 0
        for j, name in enumerate(("6", "7", "8")):
            at = np.where(found[:, j], plan.pos[np.maximum(ids[:, j], 0)], 0)
            frame[f"t{name}"] = pd.Series(bars.index[at], index=frame.index).where(found[:, j])
            frame[f"p{name}"] = np.where(found[:, j], plan.price[np.maximum(ids[:, j], 0)], np.nan)
        frame["correction_score"] = score
    return frame


def plan_series(high: np.ndarray, low: np.ndarray, close: np.ndarray, spec: WavesConfig) -> Plan:
    """Pivots and scan windows of one series (float64 prices)."""
    atr = atr_nb(high, low, close, spec.atr_period)
    pivots = zigzag_nb(high, low, atr, PIVOT_MODES[spec.pivot_mode], float(spec.pivot_threshold))
    amount = reversal_amounts(close, atr, spec.pivot_mode, spec.pivot_threshold)
    return plan_windows(high, low, close, amount, pivots, spec)


def per_symbol(top: TopK, k: int) -> TopK:
    """Drop repeats of a pattern from later windows, keep the best ``k`` by (-score, window, ordinal)."""
    _, first = np.unique(top.pivots, axis=0, return_index=True)
    first = np.sort(first)  # rows are in window order, so the first of each pattern is its first window
    best = first[np.lexsort((top.ordinal[first], top.window[first], -top.score[first]))][:k]
    rows = best[np.lexsort((top.ordinal[best], -top.score[best], top.window[best]))]
    return TopK(
        top.window[rows], top.ordinal[rows], top.pivots[rows], top.subscores[rows], top.score[rows], top.n_candidates
    )


def combine_scans(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One table of every symbol's patterns, sorted by symbol, window, score (best first), candidate."""
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("symbol", "window", "score", "candidate") if c in table.columns]
    ascending = [c != "score" for c in keys]
    return table.sort_values(keys, ascending=ascending, kind="mergesort", ignore_index=True)


def _prices(bars: pd.DataFrame, symbol: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    who = f"symbol {symbol}: " if symbol else ""
    missing = [c for c in _PRICE_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"{who}bars lack column(s) {', '.join(missing)}; the wave scan needs high, low, close")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise DataError(f"{who}bars need a DatetimeIndex named timestamp, got {type(bars.index).__name__}")
    arrays = tuple(np.ascontiguousarray(bars[c].to_numpy(dtype=np.float64)) for c in _PRICE_COLUMNS)
    for name, values in zip(_PRICE_COLUMNS, arrays):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = bad[0]
            raise DataError(f"{who}row {row} ({bars.index[row]}): {name} is {values[row]}; expected a finite price")
    return arrays


def _frame(index: pd.DatetimeIndex, plan: Plan, top: TopK, symbol: str | None) -> pd.DataFrame:
    columns: dict[str, object] = {}
    if symbol is not None:
        columns["symbol"] = np.full(top.score.shape[0], symbol, dtype=object)
    columns["direction"] = np.where(plan.kind[top.pivots[:, 0]] < 0, "up", "down").astype(object)
    columns["window"] = plan.window[top.window]
    columns["window_start"] = index[plan.first[top.window]]
    columns["window_end"] = index[plan.end[top.window] - 1]
    columns["pre_score"] = plan.pre_score[top.window]
    columns["candidate"] = top.ordinal
    for j in range(6):
        columns[f"t{j}"] = index[plan.pos[top.pivots[:, j]]]
    for j in range(6):
        columns[f"p{j}"] = plan.price[top.pivots[:, j]]
    for j, name in enumerate(SUBSCORES):
        columns[f"{name}_score"] = top.subscores[:, j]
    columns["score"] = top.score
    return pd.DataFrame(columns)
