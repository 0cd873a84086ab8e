"""Numba kernels of the feature stage (``*_nb``): float64 arrays and scalars in.

Kernels accumulate in float64 and return float32 features; the few that feed other
kernels (``rolling_moments_nb``) return float64. What each computes, its lookback and
the missing-bar rule are defined by the NumPy twins in
:mod:`dask_pipeline.features.reference`; this module only makes them fast.

A bar is *valid* for a kernel when none of its inputs is NaN. ``_next_run`` walks the
maximal runs of valid bars and the windowed and recursive kernels compute run by run,
so a gap resets windows and recursions alike (lag kernels read two bars and need no
runs).

The rolling-moment kernels (std, z-score, Bollinger, correlation, beta) are in
:mod:`dask_pipeline.features.moments`, with their error bounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_RESUM = 1024  # running sums are re-added from scratch at least this often (bars)
# Recursive kernels (EMA, Wilder) carry a multiply-add per bar on a dependency chain;
# letting LLVM fuse it into an FMA (more accurate, not less) shortens the chain.
_CONTRACT = {"contract"}


@njit(cache=True)
def _nan32(n):
    return np.full(n, np.nan, dtype=np.float32)


@njit(cache=True)
def _nan64(n):
    return np.full(n, np.nan, dtype=np.float64)


@njit(cache=True)
def _next_run1(x, start):
    """Bounds ``(s, e)`` of the next run of non-NaN ``x`` at or after ``start``; ``s == n`` if none."""
    n = x.shape[0]
    s = start
    while s < n and np.isnan(x[s]):
        s += 1
    e = s
    while e < n and not np.isnan(x[e]):
        e += 1
    return s, e


@njit(cache=True)
def _next_run(valid, start):
    """Bounds ``(s, e)`` of the next run of ``valid`` bars at or after ``start``; ``s == n`` if none."""
    n = valid.shape[0]
    s = start
    while s < n and not valid[s]:
        s += 1
    e = s
    while e < n and valid[e]:
        e += 1
    return s, e


@njit(cache=True)
def _valid2(a, b):
    valid = np.empty(a.shape[0], dtype=np.bool_)
    for i in range(a.shape[0]):
        valid[i] = not (np.isnan(a[i]) or np.isnan(b[i]))
    return valid


@njit(cache=True)
def _valid3(a, b, c):
    valid = np.empty(a.shape[0], dtype=np.bool_)
    for i in range(a.shape[0]):
        valid[i] = not (np.isnan(a[i]) or np.isnan(b[i]) or np.isnan(c[i]))
    return valid


@njit(cache=True)
def _window_sum(x, end, window):
    total = 0.0
    for i in range(end - window, end):
        total += x[i]
    return total


@njit(cache=True)
def _lagged_ratio(x, lag):
    """x[t] / x[t - lag] in float64; NaN where either bar is NaN or the divisor is 0."""
    n = x.shape[0]
    out = _nan64(n)
    for t in range(lag, n):
        prev = x[t - lag]
        if prev != 0.0:
            out[t] = x[t] / prev  # NaN in either operand stays NaN
    return out


@njit(cache=True)
def first_infinite_nb(x):
    """Index of the first +-inf in ``x``, or -1 (input validation in one cheap pass)."""
    for i in range(x.shape[0]):
        if np.isinf(x[i]):
            return i
    return -1


# --- lag kernels --------------------------------------------------------------------


@njit(cache=True)
def ret_nb(close, lag):
    """Simple return over ``lag`` bars."""
    return (_lagged_ratio(close, lag) - 1.0).astype(np.float32)


@njit(cache=True)
def logret_nb(close, lag):
    """Log return over ``lag`` bars (NaN unless the price ratio is positive)."""
    n = close.shape[0]
    out = _nan32(n)
    for t in range(lag, n):
        prev = close[t - lag]
        if prev != 0.0:
            ratio = close[t] / prev
            if ratio > 0.0:
                out[t] = np.log(ratio)
    return out


@njit(cache=True)
def mom_nb(close, lag):
    """Momentum: close[t] - close[t - lag]."""
    n = close.shape[0]
    out = _nan32(n)
    for t in range(lag, n):
        out[t] = close[t] - close[t - lag]
    return out


@njit(cache=True)
def roc_nb(close, lag):
    """Rate of change in percent."""
    return ((_lagged_ratio(close, lag) - 1.0) * 100.0).astype(np.float32)


# --- moving averages ----------------------------------------------------------------


@njit(cache=True)
def _sma_run(x, s, e, window, out):
    if e - s < window:
        return
    inv = 1.0 / window
    resum = max(_RESUM, window)
    total = _window_sum(x, s + window, window)
    out[s + window - 1] = total * inv
    since = 0
    for t in range(s + window, e):
        since += 1
        if since == resum:
            total = _window_sum(x, t + 1, window)
            since = 0
        else:
            total += x[t] - x[t - window]
        out[t] = total * inv


@njit(cache=True)
def sma_nb(x, window):
    """Simple moving average."""
    n = x.shape[0]
    out = _nan32(n)
    s, e = _next_run1(x, 0)
    while s < n:
        _sma_run(x, s, e, window, out)
        s, e = _next_run1(x, e)
    return out


@njit(cache=True)
def _wma_run(x, s, e, window, out):
    if e - s < window:
        return
    inv = 2.0 / (window * (window + 1.0))
    resum = max(_RESUM, window)
    since = resum  # forces the exact sums at the first full window
    plain = 0.0
    weighted = 0.0
    for t in range(s + window - 1, e):
        if since == resum:
            plain = 0.0
            weighted = 0.0
            for j in range(window):
                v = x[t - window + 1 + j]
                plain += v
                weighted += (j + 1) * v
            since = 0
        else:
            # Every weight drops by one (subtract the old plain sum), the new bar gets `window`.
            weighted += window * x[t] - plain
            plain += x[t] - x[t - window]
        since += 1
        out[t] = weighted * inv


@njit(cache=True)
def wma_nb(x, window):
    """Linearly weighted moving average (weights 1..window, newest heaviest)."""
    n = x.shape[0]
    out = _nan32(n)
    s, e = _next_run1(x, 0)
    while s < n:
        _wma_run(x, s, e, window, out)
        s, e = _next_run1(x, e)
    return out


@njit(cache=True, fastmath=_CONTRACT)
def ema_nb(x, window):
    """Exponential moving average, SMA-seeded, restarting after a gap."""
    n = x.shape[0]
    out = _nan32(n)
    k = 2.0 / (window + 1)
    s, e = _next_run1(x, 0)
    while s < n:
        if e - s >= window:
            ema = _window_sum(x, s + window, window) / window
            out[s + window - 1] = ema
            for t in range(s + window, e):
                # TA-Lib's form: exact on flat prices (the EMA of a constant is that constant)
                ema += k * (x[t] - ema)
                out[t] = ema
        s, e = _next_run1(x, e)
    return out


# --- rolling extremes ---------------------------------------------------------------


@njit(cache=True)
def _rolling_extreme(x, valid, window, sign):
    """Rolling max (sign=1) or min (sign=-1) over each run of valid bars, NaN elsewhere.

    van Herk / Gil-Werman: cut each run into blocks of ``window`` bars, take running
    extremes forward (``ahead``) and backward (``behind``) within each block; a window
    spans at most two blocks, so its extreme is max(behind[first], ahead[last]).
    Branch-free and O(1) per bar whatever the data.
    """
    n = x.shape[0]
    ahead = np.empty(n)
    behind = np.empty(n)
    out = _nan64(n)
    s, e = _next_run(valid, 0)
    while s < n:
        for b0 in range(s, e, window):
            b1 = min(b0 + window, e)
            best = sign * x[b0]
            for i in range(b0, b1):
                best = max(best, sign * x[i])
                ahead[i] = best
            best = sign * x[b1 - 1]
            for i in range(b1 - 1, b0 - 1, -1):
                best = max(best, sign * x[i])
                behind[i] = best
        for t in range(s + window - 1, e):
            out[t] = sign * max(behind[t - window + 1], ahead[t])
        s, e = _next_run(valid, e)
    return out


@njit(cache=True)
def _distance(close, extreme):
    out = _nan32(close.shape[0])
    for t in range(close.shape[0]):
        if extreme[t] != 0.0:
            out[t] = close[t] / extreme[t] - 1.0
    return out


@njit(cache=True)
def dist_high_nb(close, high, window):
    """close / highest high of the window - 1."""
    return _distance(close, _rolling_extreme(high, _valid2(close, high), window, 1.0))


@njit(cache=True)
def dist_low_nb(close, low, window):
    """close / lowest low of the window - 1."""
    return _distance(close, _rolling_extreme(low, _valid2(close, low), window, -1.0))


@njit(cache=True)
def _fast_k(high, low, close, window):
    """100 * (close - lowest low) / (highest high - lowest low); NaN for a flat range."""
    n = close.shape[0]
    valid = _valid3(high, low, close)
    highest = _rolling_extreme(high, valid, window, 1.0)
    lowest = _rolling_extreme(low, valid, window, -1.0)
    out = _nan64(n)
    for t in range(n):
        span = highest[t] - lowest[t]
        if span != 0.0:
            out[t] = 100.0 * (close[t] - lowest[t]) / span
    return out


@njit(cache=True)
def stoch_nb(high, low, close, window, smooth, d):
    """Stochastic %K (fast %K smoothed over ``smooth``) and %D (SMA of %K over ``d``)."""
    n = close.shape[0]
    fast_k = _fast_k(high, low, close, window)
    slow_k = _nan64(n)
    k_out = _nan32(n)
    d_out = _nan32(n)
    # Both SMAs in one pass: sums of the non-NaN values, and counts of NaNs, per window.
    k_inv = 1.0 / smooth
    d_inv = 1.0 / d
    k_sum = 0.0
    k_missing = 0
    d_sum = 0.0
    d_missing = 0
    for t in range(n):
        if np.isnan(fast_k[t]):
            k_missing += 1
        else:
            k_sum += fast_k[t]
        if t >= smooth:
            if np.isnan(fast_k[t - smooth]):
                k_missing -= 1
            else:
                k_sum -= fast_k[t - smooth]
        if k_missing == 0 and t >= smooth - 1:
            slow_k[t] = k_sum * k_inv
        elif k_missing == smooth:
            k_sum = 0.0  # a window of only NaNs: restart the sum clean
        if np.isnan(slow_k[t]):
            d_missing += 1
        else:
            d_sum += slow_k[t]
        if t >= d:
            if np.isnan(slow_k[t - d]):
                d_missing -= 1
            else:
                d_sum -= slow_k[t - d]
        if d_missing == 0 and t >= d - 1:
            k_out[t] = slow_k[t]
            d_out[t] = d_sum * d_inv
        elif d_missing == d:
            d_sum = 0.0
    return k_out, d_out


# --- recursive indicators -----------------------------------------------------------


@njit(cache=True, fastmath=_CONTRACT)
def _rsi_run(x, s, e, window, out):
    if e - s <= window:
        return
    inv = 1.0 / window
    keep = (window - 1) * inv
    gain = 0.0
    loss = 0.0
    for t in range(s + 1, s + window + 1):
        change = x[t] - x[t - 1]
        gain += max(change, 0.0)
        loss += max(-change, 0.0)
    gain *= inv
    loss *= inv
    for t in range(s + window, e):
        if t > s + window:
            change = x[t] - x[t - 1]
            gain = gain * keep + max(change, 0.0) * inv
            loss = loss * keep + max(-change, 0.0) * inv
        total = gain + loss
        if total != 0.0:
            out[t] = 100.0 * gain / total


@njit(cache=True)
def rsi_nb(close, window):
    """Relative strength index, Wilder smoothing; NaN when prices do not move."""
    n = close.shape[0]
    out = _nan32(n)
    s, e = _next_run1(close, 0)
    while s < n:
        _rsi_run(close, s, e, window, out)
        s, e = _next_run1(close, e)
    return out


@njit(cache=True, fastmath=_CONTRACT)
def _macd_run(x, s, e, fast, slow, signal, line_out, signal_out, hist_out):
    seed = s + slow - 1  # both EMAs start here (TA-Lib): the fast one from its last `fast` bars
    first = seed + signal - 1  # first bar all three outputs are reported
    if first >= e:
        return
    k_fast = 2.0 / (fast + 1)
    k_slow = 2.0 / (slow + 1)
    k_signal = 2.0 / (signal + 1)
    ema_fast = _window_sum(x, seed + 1, fast) / fast
    ema_slow = _window_sum(x, seed + 1, slow) / slow
    seed_sum = 0.0  # the signal's SMA seed: sum of the first `signal` MACD values
    sig = 0.0
    for t in range(seed, e):
        if t > seed:
            ema_fast += k_fast * (x[t] - ema_fast)
            ema_slow += k_slow * (x[t] - ema_slow)
        line = ema_fast - ema_slow
        if t < first:
            seed_sum += line
            continue
        if t == first:
            sig = (seed_sum + line) / signal
        else:
            sig += k_signal * (line - sig)
        line_out[t] = line
        signal_out[t] = sig
        hist_out[t] = line - sig


@njit(cache=True)
def macd_nb(close, fast, slow, signal):
    """MACD line, signal and histogram with TA-Lib's seeding and lookback."""
    n = close.shape[0]
    line_out = _nan32(n)
    signal_out = _nan32(n)
    hist_out = _nan32(n)
    s, e = _next_run1(close, 0)
    while s < n:
        _macd_run(close, s, e, fast, slow, signal, line_out, signal_out, hist_out)
        s, e = _next_run1(close, e)
    return line_out, signal_out, hist_out


@njit(cache=True, fastmath=_CONTRACT)
def _atr_run(high, low, close, s, e, window, out):
    if e - s <= window:
        return
    inv = 1.0 / window
    keep = (window - 1) * inv
    atr = 0.0
    for t in range(s + 1, s + window + 1):
        prev = close[t - 1]
        atr += max(high[t] - low[t], abs(high[t] - prev), abs(low[t] - prev))
    atr *= inv
    out[s + window] = atr
    for t in range(s + window + 1, e):
        prev = close[t - 1]
        tr = max(high[t] - low[t], abs(high[t] - prev), abs(low[t] - prev))
        atr = atr * keep + tr * inv
        out[t] = atr


@njit(cache=True)
def wilder_atr_nb(high, low, close, window):
    """Average true range as float64 (shared by ATR and NATR): Wilder smoothing seeded
    with the SMA of the first ``window`` true ranges, restarting after a gap."""
    n = close.shape[0]
    out = _nan64(n)
    valid = _valid3(high, low, close)
    s, e = _next_run(valid, 0)
    while s < n:
        _atr_run(high, low, close, s, e, window, out)
        s, e = _next_run(valid, e)
    return out


@njit(cache=True)
def natr_nb(atr, close):
    """ATR in percent of close, from :func:`wilder_atr_nb`; NaN where close is 0."""
    n = close.shape[0]
    out = _nan32(n)
    for t in range(n):
        if close[t] != 0.0:
            out[t] = 100.0 * atr[t] / close[t]
    return out


@njit(cache=True)
def obv_nb(close, volume):
    """On-balance volume, restarting from the first bar's volume after a gap."""
    n = close.shape[0]
    out = _nan32(n)
    valid = _valid2(close, volume)
    s, e = _next_run(valid, 0)
    while s < n:
        level = volume[s]
        out[s] = level
        for t in range(s + 1, e):
            # Branch-free: the direction of a close is as good as random to a branch predictor.
            direction = np.sign(close[t] - close[t - 1])
            level += direction * volume[t]
            out[t] = level
        s, e = _next_run(valid, e)
    return out
