"""Scan windows: bounds, the pre-score that skips hopeless windows, and start pivots.

Windows of ``window_bars`` bars start every ``step = round(window_bars * (1 - overlap))``
bars from the first bar; when the last one stops short of the last bar, one more window
ends exactly at it. A series shorter than a window is one window. Window ids count these
windows from 0; only the most recent ``max_windows`` are kept (ids unchanged).

A window holds the pivots whose bar lies inside it. Its pre-score is the weighted mean
of four components in [0, 1], all measured in the window's mean reversal amount ``R``
(the price move that confirms a pivot), so they mean the same on any bar frequency:

- ``pivots``: ``min(1, n_pivots / 12)``;
- ``range``: ``min(1, (max high - min low) / (4 R))``;
- ``volatility``: ``min(1, mean |pivot-to-pivot move| / (2 R))``;
- ``trend``: ``min(1, |OLS slope of close| * (bars - 1) / (max high - min low))``.

A window is scanned when it has at least 6 pivots, its pre-score reaches
``pre_score_threshold`` and, with ``skip_flat_windows``, its trend reaches ``flat_trend``.

Start pivots of a scanned window: among the pivots with at least 5 more after them in
the window, the ``max_start_points`` lowest lows (bullish starts; ties: earlier first)
and the ``max_start_points`` highest highs (bearish starts), merged in time order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dask_pipeline.waves.spec import IMPULSE_PIVOTS, WavesConfig

#: Pre-score component order in arrays.
PRE_SCORE_COMPONENTS = ("pivots", "range", "volatility", "trend")


def window_bounds(
    n_bars: int, window_bars: int, overlap: float, max_windows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, first_bar, end_bar)`` of the kept windows (end exclusive), oldest first."""
    if n_bars == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if n_bars <= window_bars:
        starts = np.array([0], dtype=np.int64)
    else:
        step = max(1, int(window_bars * (1.0 - overlap) + 0.5))
        starts = np.arange(0, n_bars - window_bars + 1, step, dtype=np.int64)
        if starts[-1] + window_bars < n_bars:
            starts = np.append(starts, n_bars - window_bars)
    ids = np.arange(starts.shape[0], dtype=np.int64)[-max_windows:]
    starts = starts[-max_windows:]
    ends = np.minimum(starts + window_bars, n_bars)
    return ids, starts, ends


@njit(cache=True)
def window_stats_nb(high, low, close, amount, piv_pos, piv_price, first, end):
    """Per window: pivot range ``[lo, hi)`` and the four pre-score components (see module doc)."""
    nw = first.shape[0]
    lo = np.searchsorted(piv_pos, first)
    hi = np.searchsorted(piv_pos, end)
    comps = np.zeros((nw, 4), dtype=np.float64)
    for w in range(nw):
        a = first[w]
        b = end[w]
        length = b - a
        top = high[a]
        bottom = low[a]
        r_sum = 0.0
        c_sum = 0.0
        for i in range(a, b):
            if high[i] > top:
                top = high[i]
            if low[i] < bottom:
                bottom = low[i]
            r_sum += amount[i]
            c_sum += close[i]
        r_mean = r_sum / length
        span = top - bottom
        n_piv = hi[w] - lo[w]
        comps[w, 0] = min(1.0, n_piv / 12.0)
        if r_mean > 0.0:
            comps[w, 1] = min(1.0, span / (4.0 * r_mean))
            if n_piv >= 2:
                swing = 0.0
                for j in range(lo[w], hi[w] - 1):
                    swing += abs(piv_price[j + 1] - piv_price[j])
                comps[w, 2] = min(1.0, swing / (n_piv - 1) / (2.0 * r_mean))
        if span > 0.0 and length > 1:
            x_mean = (length - 1) / 2.0
            c_mean = c_sum / length
            sxy = 0.0
            sxx = 0.0
            for i in range(a, b):
                dx = (i - a) - x_mean
                sxy += dx * (close[i] - c_mean)
                sxx += dx * dx
            comps[w, 3] = min(1.0, abs(sxy / sxx) * (length - 1) / span)
    return lo, hi, comps


@njit(cache=True)
def start_points_nb(piv_price, piv_kind, lo, hi, max_starts):
    """Start pivots of each window (see module doc): flat pivot ids and per-window offsets."""
    nw = lo.shape[0]
    ptr = np.zeros(nw + 1, dtype=np.int64)
    out = np.empty(nw * 2 * max_starts, dtype=np.int64)
    n = 0
    for w in range(nw):
        ptr[w] = n
        last_start = hi[w] - 6  # a start needs 5 more pivots in the window
        width = last_start - lo[w] + 1
        if width <= 0:
            continue
        chosen = np.zeros(width, dtype=np.bool_)
        for want in (-1, 1):  # bullish starts at lows, bearish at highs
            for _ in range(max_starts):
                best = -1
                for j in range(lo[w], last_start + 1):
                    if piv_kind[j] != want or chosen[j - lo[w]]:
                        continue
                    # lows: lowest first; highs: highest first; ties: earlier first
                    if best < 0 or want * piv_price[j] > want * piv_price[best]:
                        best = j
                if best < 0:
                    break
                chosen[best - lo[w]] = True
        for j in range(width):
            if chosen[j]:
                out[n] = lo[w] + j
                n += 1
    ptr[nw] = n
    return out[:n].copy(), ptr


@dataclass(frozen=True)
class Plan:
    """The work of one symbol's scan, shared by every backend.

    Pivots (``pos``, ``price``, ``kind``) of the whole series; per scanned window its id,
    bars ``[first, end)``, pivots ``[lo, hi)``, pre-score, and start pivots
    ``starts[ptr[w]:ptr[w + 1]]`` (pivot ids in time order).
    """

    pos: np.ndarray
    price: np.ndarray
    kind: np.ndarray
    window: np.ndarray
    first: np.ndarray
    end: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    pre_score: np.ndarray
    starts: np.ndarray
    ptr: np.ndarray

    @property
    def n_windows(self) -> int:
        """Scanned windows."""
        return int(self.window.shape[0])


def plan_windows(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    amount: np.ndarray,
    pivots: tuple[np.ndarray, np.ndarray, np.ndarray],
    spec: WavesConfig,
) -> Plan:
    """Lay out, pre-score and filter the windows of one series; pick their start pivots."""
    pos, price, kind = pivots
    ids, first, end = window_bounds(high.shape[0], spec.window_bars, spec.window_overlap_ratio, spec.max_windows)
    lo, hi, comps = window_stats_nb(high, low, close, amount, pos, price, first, end)
    weights = np.array([getattr(spec.pre_score_weights, c) for c in PRE_SCORE_COMPONENTS], dtype=np.float64)
    pre_score = comps @ (weights / weights.sum())
    keep = (hi - lo >= IMPULSE_PIVOTS) & (pre_score >= spec.pre_score_threshold)
    if spec.skip_flat_windows:
        keep &= comps[:, 3] >= spec.flat_trend
    starts, ptr = start_points_nb(price, kind, lo[keep], hi[keep], spec.max_start_points)
    return Plan(pos, price, kind, ids[keep], first[keep], end[keep], lo[keep], hi[keep], pre_score[keep], starts, ptr)
