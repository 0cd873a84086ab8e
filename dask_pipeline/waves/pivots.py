"""Swing pivots: an O(n) zigzag over highs and lows (numba).

The zigzag alternates between swing lows and swing highs. It follows the running
extreme of the current swing and confirms it as a pivot once price has moved the
reversal amount against it: ``pct * extreme`` with ``mode="percent"``, ``mult * ATR``
(Wilder ATR of ``atr_period`` bars at the reversing bar) with ``mode="atr"``. Before the
first pivot the direction is open: the first swing to reach the reversal amount from
the running low (rising) or high (falling) sets it. The last running extreme is
reported too, unconfirmed, so a wave still in progress can end an impulse.
``zigzag_confirmed_nb`` also says at which bar each pivot was confirmed (the bar whose
reversal appended it): what a causal reader of the series knows by then.

Highs are pivot highs at ``high[i]``, lows at ``low[i]``. On ties the earlier bar wins
(a swing extends only on a strictly new extreme). ``reference.pivots_py`` is the
plain-Python twin this module is tested against.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Pivot kinds.
HIGH = 1
LOW = -1

#: Pivot threshold modes as the kernel codes them.
PIVOT_MODES = {"percent": 0, "atr": 1}


@njit(cache=True)
def atr_nb(high, low, close, period):
    """Wilder ATR, defined from bar 0: the mean true range until ``period`` bars, then Wilder."""
    n = high.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    acc = high[0] - low[0]
    out[0] = acc
    for i in range(1, n):
        tr = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        if i < period:
            acc += tr
            out[i] = acc / (i + 1)
        else:
            out[i] = out[i - 1] + (tr - out[i - 1]) / period
    return out


@njit(cache=True)
def _amount(mode, threshold, extreme, atr_i):
    if mode == 0:
        return threshold * extreme
    return threshold * atr_i


@njit(cache=True)
def zigzag_nb(high, low, atr, mode, threshold):
    """Pivot bar positions, prices and kinds (``HIGH``/``LOW``), alternating, in time order."""
    pos, price, kind, _ = zigzag_confirmed_nb(high, low, atr, mode, threshold)
    return pos, price, kind


@njit(cache=True)
def zigzag_confirmed_nb(high, low, atr, mode, threshold):
    """``zigzag_nb``'s pivots and the bar at which each was confirmed (price reversed from
    it by the threshold there); the last, running extreme has ``n`` (not confirmed)."""
    n = high.shape[0]
    pos = np.empty(n + 1, dtype=np.int64)
    price = np.empty(n + 1, dtype=np.float64)
    kind = np.empty(n + 1, dtype=np.int8)
    confirm = np.empty(n + 1, dtype=np.int64)
    m = 0
    if n == 0:
        return pos[:0], price[:0], kind[:0], confirm[:0]
    direction = 0
    hmax = high[0]
    hidx = 0
    lmin = low[0]
    lidx = 0
    ext = 0.0
    eidx = 0
    for i in range(n):
        if direction == 0:
            if high[i] > hmax:
                hmax = high[i]
                hidx = i
            if low[i] < lmin:
                lmin = low[i]
                lidx = i
            if lidx < hidx and hmax - lmin >= _amount(mode, threshold, lmin, atr[i]):
                pos[m] = lidx
                price[m] = lmin
                kind[m] = -1
                confirm[m] = i
                m += 1
                direction = 1
                ext = hmax
                eidx = hidx
            elif hidx < lidx and hmax - lmin >= _amount(mode, threshold, hmax, atr[i]):
                pos[m] = hidx
                price[m] = hmax
                kind[m] = 1
                confirm[m] = i
                m += 1
                direction = -1
                ext = lmin
                eidx = lidx
        elif direction == 1:
            if high[i] > ext:
                ext = high[i]
                eidx = i
            elif ext - low[i] >= _amount(mode, threshold, ext, atr[i]):
                pos[m] = eidx
                price[m] = ext
                kind[m] = 1
                confirm[m] = i
                m += 1
                direction = -1
                ext = low[i]
                eidx = i
        else:
            if low[i] < ext:
                ext = low[i]
                eidx = i
            elif high[i] - ext >= _amount(mode, threshold, ext, atr[i]):
                pos[m] = eidx
                price[m] = ext
                kind[m] = -1
                confirm[m] = i
                m += 1
                direction = 1
                ext = high[i]
                eidx = i
    if direction != 0:
        pos[m] = eidx
        price[m] = ext
        kind[m] = 1 if direction == 1 else -1
        confirm[m] = n
        m += 1
    return pos[:m].copy(), price[:m].copy(), kind[:m].copy(), confirm[:m].copy()


def find_pivots(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    mode: str = "atr",
    threshold: float = 3.0,
    atr_period: int = 14,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zigzag pivots of one series.

    Parameters
    ----------
    high, low, close
        Bar prices (any float dtype; computed in float64).
    mode, threshold
        ``"percent"`` with a fraction of price (0.05 = 5%), or ``"atr"`` with an ATR multiple.
    atr_period
        Wilder ATR length (``mode="atr"`` only).

    Returns
    -------
    (pos, price, kind)
        Bar positions (int64), prices (float64) and kinds (int8, ``HIGH`` = 1, ``LOW`` = -1),
        alternating, in time order; the last one is the unconfirmed running extreme.
    """
    high = np.ascontiguousarray(high, dtype=np.float64)
    low = np.ascontiguousarray(low, dtype=np.float64)
    close = np.ascontiguousarray(close, dtype=np.float64)
    atr = atr_nb(high, low, close, atr_period)
    return zigzag_nb(high, low, atr, PIVOT_MODES[mode], float(threshold))


def reversal_amounts(close: np.ndarray, atr: np.ndarray, mode: str, threshold: float) -> np.ndarray:
    """Per bar, the price move that reverses a swing (``pct * close`` or ``mult * ATR``)."""
    if mode == "percent":
        return threshold * np.asarray(close, dtype=np.float64)
    return threshold * atr
