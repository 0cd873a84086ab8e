"""Fused numba kernels (``*_nb``): the built-in indicators of a feature set in a few passes.

TA-Lib and the per-indicator kernels in :mod:`dask_pipeline.features.kernels` make one
pass per indicator, each allocating its own output. The engine knows the whole feature
set up front, so :mod:`dask_pipeline.features.fusion` plans it into these passes:

* ``scan_bars_nb`` -- one validation pass over every bar column: infinities, which
  columns hold NaN, and whether their NaN masks agree (which decides what may share a
  pass); ``runs_nb`` then lists the runs of present bars once for every pass;
* ``lags_nb`` / ``ratio_nb`` -- returns, momentum, rate of change (vectorised), and the
  price ratio whose logarithm NumPy takes (its SIMD ``log``; numba's is a scalar call);
* ``chains_nb`` -- every recursion on close in one loop: SMA running sums, EMA, MACD's
  three EMAs, Wilder RSI, OBV, so their dependency chains overlap instead of queueing;
* ``moments_nb`` -- one set of sliding moments per (column, window) emitting SMA, std,
  z-score and Bollinger columns (the block algorithm of ``rolling_moments_nb``);
* ``ranges_nb`` -- true range (ATR, NATR), stochastic %K / %D and the distances to the
  high and low, over cache-sized chunks: rolling highs and lows by doubling
  (``_extreme_into``: branch-free and vectorised), computed once per chunk and window and
  shared by the stochastic and the distances.

Every pass writes float32 straight into its columns of the preallocated F-ordered block,
NaN where the indicator is undefined, so each output value is written once. Kernels take
float64 arrays only (one specialisation each), accumulate in float64 and follow the
per-indicator kernels step for step (same runs, seeding and order of accumulation), so
their values are those kernels' and the NumPy twins' (``tests/features/test_fused.py``).

Loops index run-relative views (``x[s:e]``) rather than ``x[t - lag]``: numba wraps a
possibly negative index, and that check alone stops LLVM from vectorising a loop.

Slot arrays (``p``) are int64: a window or an output column per slot; unused slots have
window 1 and column -1. A feature set with two indicators of one kind (two EMAs) runs a
pass twice ("rounds"); the default set needs one round of each.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dask_pipeline.features.kernels import _CONTRACT, _RESUM
from dask_pipeline.features.moments import _BLOCK, _moments_block, _run_same

# lags_nb kinds
LAG_RET, LAG_MOM, LAG_ROC = 0, 1, 2

# chains_nb slots
(C_SMA_W, C_SMA, C_EMA_W, C_EMA, C_MACD_FAST, C_MACD_SLOW, C_MACD_SIGNAL, C_MACD, C_MACD_SIG, C_MACD_HIST,
 C_RSI_W, C_RSI, C_OBV) = range(13)  # fmt: skip
CHAIN_SLOTS = 13

# ranges_nb slots
(R_ATR_W, R_ATR, R_NATR, R_STOCH_W, R_STOCH_SMOOTH, R_STOCH_D, R_STOCH_K, R_STOCH_DCOL, R_HIGH_W, R_DIST_HIGH,
 R_LOW_W, R_DIST_LOW) = range(12)  # fmt: skip
RANGE_SLOTS = 12

# scan_bars_nb result
SCAN_BAD_COLUMN, SCAN_BAD_ROW, SCAN_HLC_ALIGNED, SCAN_CV_ALIGNED, SCAN_NAN = range(5)

#: Bars per chunk of the doubling table (with its window of history, it stays in L1/L2).
_CHUNK = 2048


@njit(cache=True)
def scan_bars_nb(bars):
    """Validate a ``(5, n)`` block of open, high, low, close, volume in one pass.

    Returns int64 ``[bad column, bad row, hlc aligned, cv aligned, NaN flags]``: the
    first infinite value in column order (-1, -1 when none); whether high, low and close
    are NaN on the same bars; whether close and volume are; bit ``j`` of the flags set
    when column ``j`` holds a NaN.
    """
    n = bars.shape[1]
    o, h, lo, c, v = bars[0], bars[1], bars[2], bars[3], bars[4]
    infinite = False
    hlc_apart = False
    cv_apart = False
    nan_o = nan_h = nan_l = nan_c = nan_v = False
    for i in range(n):
        infinite |= np.isinf(o[i]) | np.isinf(h[i]) | np.isinf(lo[i]) | np.isinf(c[i]) | np.isinf(v[i])
        gap_o, gap_h, gap_l = np.isnan(o[i]), np.isnan(h[i]), np.isnan(lo[i])
        gap_c, gap_v = np.isnan(c[i]), np.isnan(v[i])
        hlc_apart |= (gap_h != gap_c) | (gap_l != gap_c)
        cv_apart |= gap_v != gap_c
        nan_o |= gap_o
        nan_h |= gap_h
        nan_l |= gap_l
        nan_c |= gap_c
        nan_v |= gap_v
    found = np.empty(5, dtype=np.int64)
    found[SCAN_BAD_COLUMN] = -1
    found[SCAN_BAD_ROW] = -1
    found[SCAN_HLC_ALIGNED] = 0 if hlc_apart else 1
    found[SCAN_CV_ALIGNED] = 0 if cv_apart else 1
    found[SCAN_NAN] = nan_o * 1 + nan_h * 2 + nan_l * 4 + nan_c * 8 + nan_v * 16
    if infinite:  # rare: find where, in the order the error names it
        for j in range(bars.shape[0]):
            for i in range(n):
                if np.isinf(bars[j, i]):
                    found[SCAN_BAD_COLUMN] = j
                    found[SCAN_BAD_ROW] = i
                    return found
    return found


@njit(cache=True)
def runs_nb(x):
    """``(k, 2)`` int64 bounds ``[start, end)`` of the maximal runs of non-NaN ``x``."""
    n = x.shape[0]
    bounds = np.empty((n // 2 + 1, 2), dtype=np.int64)
    k = 0
    t = 0
    while t < n:
        while t < n and np.isnan(x[t]):
            t += 1
        if t == n:
            break
        bounds[k, 0] = t
        while t < n and not np.isnan(x[t]):
            t += 1
        bounds[k, 1] = t
        k += 1
    return bounds[:k].copy()


@njit(cache=True)
def _nan_gaps(out, cols, runs, n):
    """NaN in every row of ``cols`` outside ``runs``."""
    start = 0
    for r in range(runs.shape[0] + 1):
        stop = runs[r, 0] if r < runs.shape[0] else n
        for j in range(cols.shape[0]):
            dst = out[start:stop, cols[j]]
            for i in range(dst.shape[0]):
                dst[i] = np.nan
        if r < runs.shape[0]:
            start = runs[r, 1]


# --- lags ---------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def lags_nb(close, kinds, lags, cols, out):
    """Returns (``LAG_RET``), momentum (``LAG_MOM``) and rate of change in percent
    (``LAG_ROC``) over ``lags[j]`` bars into ``out[:, cols[j]]``; NaN where either bar is
    NaN or, for ratios, the divisor is 0. Branch-free, so the loops vectorise."""
    n = close.shape[0]
    for j in range(kinds.shape[0]):
        kind = kinds[j]
        lag = min(lags[j], n)
        dst = out[:, cols[j]]
        for t in range(lag):
            dst[t] = np.nan
        now = close[lag:]
        then = close[: n - lag]
        later = dst[lag:]
        if kind == LAG_MOM:
            for i in range(now.shape[0]):
                later[i] = now[i] - then[i]
        else:
            scale = 100.0 if kind == LAG_ROC else 1.0
            for i in range(now.shape[0]):
                prev = then[i]
                value = (now[i] / prev - 1.0) * scale
                later[i] = value if prev != 0.0 else np.nan


@njit(cache=True, error_model="numpy")
def ratio_nb(close, lag, ratio):
    """``close[t] / close[t - lag]`` into ``ratio`` where it is positive, NaN elsewhere:
    the argument of logret's logarithm (so NumPy's ``log`` never sees 0 or a negative)."""
    n = close.shape[0]
    lag = min(lag, n)
    for t in range(lag):
        ratio[t] = np.nan
    now = close[lag:]
    then = close[: n - lag]
    later = ratio[lag:]
    for i in range(now.shape[0]):
        prev = then[i]
        value = now[i] / prev
        later[i] = value if (prev != 0.0) & (value > 0.0) else np.nan


# --- recursions on close --------------------------------------------------------------


@njit(cache=True, fastmath=_CONTRACT, error_model="numpy")
def chains_nb(close, volume, runs, p, cols, out):
    """SMA, EMA, MACD, RSI and OBV slots of ``p`` over each run of non-NaN close.

    OBV joins only when close and volume are NaN on the same bars (the engine checks):
    then its runs are close's. ``cols`` lists every column the slots write. One body for
    every slot (no per-run helper): numba re-optimises a callee inside each caller, so a
    flat kernel compiles in about half the time.
    """
    _nan_gaps(out, cols, runs, close.shape[0])
    x, v = close, volume
    for r in range(runs.shape[0]):
        s, e = runs[r, 0], runs[r, 1]
        nan = np.nan
        sma_w = p[C_SMA_W]
        sma_col = p[C_SMA]
        ema_w = p[C_EMA_W]
        ema_col = p[C_EMA]
        fast = p[C_MACD_FAST]
        slow = p[C_MACD_SLOW]
        signal = p[C_MACD_SIGNAL]
        macd_col = p[C_MACD]
        rsi_w = p[C_RSI_W]
        rsi_col = p[C_RSI]
        obv_col = p[C_OBV]
        xs = x[s:e]
        vs = v[s:e]
        # Unused slots' views alias some column; their stores are skipped below.
        sma_out = out[s:e, sma_col]
        ema_out = out[s:e, ema_col]
        line_out = out[s:e, macd_col]
        sig_out = out[s:e, p[C_MACD_SIG]]
        hist_out = out[s:e, p[C_MACD_HIST]]
        rsi_out = out[s:e, rsi_col]
        obv_out = out[s:e, obv_col]

        sma_inv = 1.0 / sma_w
        resum = max(_RESUM, sma_w)
        total = 0.0
        since = 0
        ema_k = 2.0 / (ema_w + 1)
        ema_seed = 0.0
        ema = 0.0
        k_fast = 2.0 / (fast + 1)
        k_slow = 2.0 / (slow + 1)
        k_signal = 2.0 / (signal + 1)
        first = slow + signal - 2  # first bar (in the run) all three MACD outputs are reported
        fast_sum = 0.0
        slow_sum = 0.0
        ema_fast = 0.0
        ema_slow = 0.0
        line = 0.0
        seed_sum = 0.0
        sig = 0.0
        rsi_inv = 1.0 / rsi_w
        keep = (rsi_w - 1) * rsi_inv
        gain = 0.0
        loss = 0.0
        level = 0.0

        for k in range(e - s):
            xt = xs[k]
            if sma_col >= 0:
                if k < sma_w:
                    total += xt
                else:
                    since += 1
                    if since == resum:
                        total = 0.0
                        for i in range(k + 1 - sma_w, k + 1):
                            total += xs[i]
                        since = 0
                    else:
                        total += xt - xs[k - sma_w]
                sma_out[k] = total * sma_inv if k >= sma_w - 1 else nan
            if ema_col >= 0:
                if k < ema_w:
                    ema_seed += xt
                    if k == ema_w - 1:
                        ema = ema_seed / ema_w
                else:
                    # TA-Lib's form: exact on flat prices (the EMA of a constant is that constant)
                    ema += ema_k * (xt - ema)
                ema_out[k] = ema if k >= ema_w - 1 else nan
            if macd_col >= 0:
                # Both EMAs start at bar slow - 1 (TA-Lib), the fast one from its last `fast` bars.
                if k < slow:
                    slow_sum += xt
                    if k >= slow - fast:
                        fast_sum += xt
                    if k == slow - 1:
                        ema_fast = fast_sum / fast
                        ema_slow = slow_sum / slow
                else:
                    ema_fast += k_fast * (xt - ema_fast)
                    ema_slow += k_slow * (xt - ema_slow)
                if k >= slow - 1:
                    line = ema_fast - ema_slow
                    if k < first:
                        seed_sum += line
                    elif k == first:
                        sig = (seed_sum + line) / signal
                    else:
                        sig += k_signal * (line - sig)
                ready = k >= first
                line_out[k] = line if ready else nan
                sig_out[k] = sig if ready else nan
                hist_out[k] = line - sig if ready else nan
            if rsi_col >= 0:
                if k >= 1:
                    change = xt - xs[k - 1]
                    up = max(change, 0.0)
                    down = max(-change, 0.0)
                    if k <= rsi_w:
                        gain += up
                        loss += down
                        if k == rsi_w:
                            gain *= rsi_inv
                            loss *= rsi_inv
                    else:
                        gain = gain * keep + up * rsi_inv
                        loss = loss * keep + down * rsi_inv
                moved = gain + loss
                rsi_out[k] = 100.0 * gain / moved if (k >= rsi_w) & (moved != 0.0) else nan
            if obv_col >= 0:
                if k == 0:
                    level = vs[0]
                else:
                    # Branch-free: the direction of a close is as good as random to a branch predictor.
                    level += np.sign(xt - xs[k - 1]) * vs[k]
                obv_out[k] = level


# --- rolling moments ------------------------------------------------------------------


@njit(cache=True, error_model="numpy")  # divisions guarded by selects: lets the loops vectorise
def moments_nb(x, runs, window, cols, nbdevs, out):
    """Rolling mean and population std of ``x`` over ``window``, emitted as columns.

    ``cols``: ``[mean (SMA), std, z-score, %b 1, bandwidth 1, %b 2, ...]`` (-1 for one not
    wanted), one %b / bandwidth pair per entry of ``nbdevs``; ``runs``: the runs of
    non-NaN ``x``. The moments are those of ``rolling_moments_nb`` (same blocks, same
    bound), the derived columns those of ``zscore_nb`` and ``bbands_nb``.
    """
    written = cols[cols >= 0]
    _nan_gaps(out, written, runs, x.shape[0])
    mean_buf = np.empty(_BLOCK)
    std_buf = np.empty(_BLOCK)
    for r in range(runs.shape[0]):
        s, e = runs[r, 0], runs[r, 1]
        head = min(s + window - 1, e)  # the lookback: no full window yet
        for j in range(written.shape[0]):
            dst = out[s:head, written[j]]
            for i in range(dst.shape[0]):
                dst[i] = np.nan
        if e - s < window:
            continue
        same = _run_same(x, s, window)
        t = s + window - 1
        while t < e:
            if t > s + window - 1:
                same = same + 1 if x[t] == x[t - 1] else 0
            stop = min(t + _BLOCK, e)
            same = _moments_block(x, t, stop, window, same, mean_buf, std_buf)
            # The block's columns, each in its own loop so it vectorises.
            m = stop - t
            xs, mean, std = x[t:stop], mean_buf[:m], std_buf[:m]
            if cols[0] >= 0:
                dst = out[t:stop, cols[0]]
                for i in range(m):
                    dst[i] = mean[i]
            if cols[1] >= 0:
                dst = out[t:stop, cols[1]]
                for i in range(m):
                    dst[i] = std[i]
            if cols[2] >= 0:
                dst = out[t:stop, cols[2]]
                for i in range(m):
                    dst[i] = (xs[i] - mean[i]) / std[i] if std[i] > 0.0 else np.nan
            for b in range(nbdevs.shape[0]):
                nbdev = nbdevs[b]
                pctb = out[t:stop, cols[3 + 2 * b]]
                width = out[t:stop, cols[4 + 2 * b]]
                for i in range(m):
                    upper = mean[i] + nbdev * std[i]
                    lower = mean[i] - nbdev * std[i]
                    pctb[i] = (xs[i] - lower) / (upper - lower) if upper != lower else np.nan
                    width[i] = (upper - lower) / mean[i] if mean[i] != 0.0 else np.nan
            t = stop


# --- rolling extremes, true range and what is built on them -----------------------------


@njit(cache=True)
def _extreme_into(src, window, sign, dst, level, spare):
    """``dst[i]`` = the maximum (``sign`` 1.0) or minimum (-1.0) of ``src[i : i + window]``,
    for ``len(src) == len(dst) + window - 1``; ``level`` and ``spare`` hold ``len(src)``.

    A doubling table: level j holds the extreme of 2**j bars from i, built from level
    j - 1 in one vectorised pass; a window's extreme is that of two overlapping
    power-of-two spans. Exact (an extreme is one of the values, and negation is exact)
    and branch-free: O(n log window) in vectorised passes beats a monotone deque's O(n)
    here, whose data-dependent pops mispredict on about every other bar (20x slower).
    """
    m = src.shape[0]
    k = dst.shape[0]
    top = 1
    while top * 2 <= window:
        top *= 2
    if top == 1:  # a window of one bar
        for i in range(k):
            dst[i] = src[i]
        return
    a, b, c = src[: m - 1], src[1:], level[: m - 1]
    for i in range(m - 1):
        c[i] = sign * a[i] if sign * a[i] > sign * b[i] else sign * b[i]
    span = 2
    while span < top:
        size = m - 2 * span + 1
        a, b, c = level[:size], level[span : span + size], spare[:size]
        for i in range(size):
            c[i] = a[i] if a[i] > b[i] else b[i]
        level, spare = spare, level
        span *= 2
    reach = window - top  # the second span starts this far after the first
    a, b = level[:k], level[reach : reach + k]
    for i in range(k):
        dst[i] = sign * (a[i] if a[i] > b[i] else b[i])


@njit(cache=True, error_model="numpy")
def _distance_into(close, extreme, first, dst):
    """close / extreme - 1 from index ``first`` (a full window) on, NaN before it and
    where the extreme is 0."""
    head = min(first, dst.shape[0])
    for i in range(head):
        dst[i] = np.nan
    # Slices, not range(first, n): an index numba cannot prove non-negative stops vectorising.
    c, ext, later = close[head:], extreme[head:], dst[head:]
    for i in range(later.shape[0]):
        later[i] = c[i] / ext[i] - 1.0 if ext[i] != 0.0 else np.nan


@njit(cache=True, fastmath=_CONTRACT, error_model="numpy")
def ranges_nb(high, low, close, runs, p, cols, out):
    """ATR / NATR, stochastic %K / %D, dist_high and dist_low slots of ``p`` over each run
    of bars where high, low and close are all present.

    Each run goes in chunks of ``_CHUNK`` bars: the recursions (ATR, the stochastic's
    SMAs) bar by bar, everything elementwise (rolling extremes, divisions) vectorised over
    the chunk in scratch rows that stay in cache. Rolling highs and lows are computed once
    per chunk and window, shared by the stochastic and the distances when their windows
    agree. The engine fuses these only when the three columns are NaN on the same bars,
    so close's runs (``runs``) are also dist_high's and dist_low's.
    """
    nan = np.nan
    _nan_gaps(out, cols, runs, close.shape[0])
    atr_w = p[R_ATR_W]
    atr_col = p[R_ATR]
    natr_col = p[R_NATR]
    sw = p[R_STOCH_W]
    smooth = p[R_STOCH_SMOOTH]
    d = p[R_STOCH_D]
    k_col = p[R_STOCH_K]
    d_col = p[R_STOCH_DCOL]
    hw = p[R_HIGH_W]
    dh_col = p[R_DIST_HIGH]
    lw = p[R_LOW_W]
    dl_col = p[R_DIST_LOW]
    want_atr = (atr_col >= 0) | (natr_col >= 0)
    want_stoch = k_col >= 0
    own_high = (dh_col >= 0) & ((not want_stoch) | (hw != sw))  # else the stochastic's highs serve
    own_low = (dl_col >= 0) & ((not want_stoch) | (lw != sw))
    bufs = np.empty((8, _CHUNK + max(sw, hw, lw)))
    atr64, fast_k, hh, ll, hx, lx, level, spare = bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], bufs[5], bufs[6], bufs[7]
    if not own_high:
        hx = hh
    if not own_low:
        lx = ll
    k_ring = np.empty(smooth)
    d_ring = np.empty(d)
    atr_inv = 1.0 / atr_w
    keep = (atr_w - 1) * atr_inv
    k_inv = 1.0 / smooth
    d_inv = 1.0 / d

    for r in range(runs.shape[0]):
        s, e = runs[r, 0], runs[r, 1]
        hs, ls, cs = high[s:e], low[s:e], close[s:e]
        atr = 0.0
        k_sum = 0.0
        k_missing = 0
        k_pos = 0
        d_sum = 0.0
        d_missing = 0
        d_pos = 0
        for c0 in range(0, e - s, _CHUNK):
            c1 = min(c0 + _CHUNK, e - s)
            size = c1 - c0
            cc = cs[c0:c1]
            if want_atr:
                for k in range(c0, c1):
                    if k >= 1:
                        prev = cs[k - 1]
                        tr = max(hs[k] - ls[k], abs(hs[k] - prev), abs(ls[k] - prev))
                        if k <= atr_w:
                            atr += tr
                            if k == atr_w:
                                atr *= atr_inv
                        else:
                            atr = atr * keep + tr * atr_inv
                    atr64[k - c0] = atr if k >= atr_w else nan
                if atr_col >= 0:
                    dst = out[s + c0 : s + c1, atr_col]
                    for i in range(size):
                        dst[i] = atr64[i]
                if natr_col >= 0:
                    dst = out[s + c0 : s + c1, natr_col]
                    for i in range(size):
                        dst[i] = 100.0 * atr64[i] / cc[i] if cc[i] != 0.0 else nan
            # Rolling extremes of the windows ending in this chunk, from the first full one.
            if want_stoch:
                first = max(c0, sw - 1)
                if first < c1:
                    _extreme_into(hs[first - sw + 1 : c1], sw, 1.0, hh[first - c0 : size], level, spare)
                    _extreme_into(ls[first - sw + 1 : c1], sw, -1.0, ll[first - c0 : size], level, spare)
                # Fast %K = 100 * (close - lowest low) / (highest high - lowest low): NaN before
                # a full window and for a flat range.
                head = min(first - c0, size)
                for i in range(head):
                    fast_k[i] = nan
                hi, lo_, c_, fk = hh[head:size], ll[head:size], cc[head:], fast_k[head:size]
                for i in range(fk.shape[0]):
                    span = hi[i] - lo_[i]
                    fk[i] = 100.0 * (c_[i] - lo_[i]) / span if span != 0.0 else nan
                k_dst = out[s + c0 : s + c1, k_col]
                d_dst = out[s + c0 : s + c1, d_col]
                for i in range(size):
                    k = c0 + i
                    value = fast_k[i]
                    # %K: SMA of fast %K over `smooth`, NaN while its window holds a NaN (a flat
                    # range or the lookback); %D: SMA of %K over `d`, likewise. Add the new value,
                    # then drop the one leaving, in the order of stoch_nb.
                    old = k_ring[k_pos]
                    if np.isnan(value):
                        k_missing += 1
                    else:
                        k_sum += value
                    if k >= smooth:
                        if np.isnan(old):
                            k_missing -= 1
                        else:
                            k_sum -= old
                    k_ring[k_pos] = value
                    k_pos = k_pos + 1 if k_pos + 1 < smooth else 0
                    slow_k = nan
                    if k_missing == 0 and k >= smooth - 1:
                        slow_k = k_sum * k_inv
                    elif k_missing == smooth:
                        k_sum = 0.0  # a window of only NaNs: restart the sum clean
                    old = d_ring[d_pos]
                    if np.isnan(slow_k):
                        d_missing += 1
                    else:
                        d_sum += slow_k
                    if k >= d:
                        if np.isnan(old):
                            d_missing -= 1
                        else:
                            d_sum -= old
                    d_ring[d_pos] = slow_k
                    d_pos = d_pos + 1 if d_pos + 1 < d else 0
                    both = (d_missing == 0) & (k >= d - 1)
                    k_dst[i] = slow_k if both else nan
                    d_dst[i] = d_sum * d_inv if both else nan
                    if d_missing == d:
                        d_sum = 0.0
            if own_high:
                first = max(c0, hw - 1)
                if first < c1:
                    _extreme_into(hs[first - hw + 1 : c1], hw, 1.0, hx[first - c0 : size], level, spare)
            if own_low:
                first = max(c0, lw - 1)
                if first < c1:
                    _extreme_into(ls[first - lw + 1 : c1], lw, -1.0, lx[first - c0 : size], level, spare)
            # close / extreme - 1: NaN before a full window and where the extreme is 0.
            if dh_col >= 0:
                _distance_into(cc, hx[:size], max(c0, hw - 1) - c0, out[s + c0 : s + c1, dh_col])
            if dl_col >= 0:
                _distance_into(cc, lx[:size], max(c0, lw - 1) - c0, out[s + c0 : s + c1, dl_col])
