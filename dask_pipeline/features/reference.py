"""Plain-NumPy twins of the numba kernels: the readable definition of every indicator.

Each ``*_ref`` function computes one indicator from bar columns, written for clarity,
not speed (windowed statistics via ``sliding_window_view``, recursive ones as Python
loops). Its twin is the kernel of the same name in :mod:`dask_pipeline.features.kernels`
(rolling moments: :mod:`dask_pipeline.features.moments`), or the kernels the engine chains
for it where indicators share a pass: ``std_ref``, ``zscore_ref`` and ``bbands_ref`` <-
``rolling_moments_nb`` (+ ``zscore_nb`` / ``bbands_nb``); ``atr_ref`` and ``natr_ref`` <-
``wilder_atr_nb`` (+ ``natr_nb``).
The tests hold every kernel to its twin.

Definitions follow TA-Lib: population standard deviation, SMA-seeded EMA, Wilder
smoothing for RSI and ATR, TA-Lib's lookbacks (NaN before them) and TA-Lib's MACD
seeding. Where TA-Lib writes 0 for 0/0 (RSI of flat prices, stochastic of a flat
range, ROC from a zero price) we write NaN, so undefined stays undefined.

Missing bars (NaN in any input column an indicator reads) follow one rule:

* windowed indicators (SMA, WMA, std, z-score, Bollinger, rolling high/low,
  stochastic, correlation, beta) are NaN while any bar of their window is missing,
  and recover once the window is whole again;
* lag indicators (returns, momentum, ROC) read two bars and are NaN when either is;
* recursive indicators (EMA, RSI, ATR, NATR, MACD, OBV) cannot step over a missing
  bar: they restart after it and reseed exactly as at the start of a series.

So on every gap-free stretch each indicator equals TA-Lib run on that stretch alone,
and lag indicators equal TA-Lib everywhere. TA-Lib itself skips leading NaNs but not
interior ones: an interior NaN makes every later SMA/EMA/MACD/ATR/STOCH value NaN, and
RSI and CORREL write 0 ever after; so on gappy data we equal TA-Lib wherever TA-Lib
still has genuine values, and keep producing values where it has none.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

F32 = np.float32


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


def _valid(*columns) -> np.ndarray:
    """True where no input column is NaN (the bar is present for this indicator)."""
    ok = np.ones(len(columns[0]), dtype=bool)
    for col in columns:
        ok &= ~np.isnan(col)
    return ok


def _segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of consecutive valid bars."""
    edges = np.diff(np.concatenate([[False], valid, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist()))


def _windowed(values: np.ndarray, window: int, stat) -> np.ndarray:
    """``stat`` of each full window ending at t (NaN before; NaN windows stay NaN)."""
    out = _nan(len(values))
    if len(values) >= window:
        out[window - 1 :] = stat(sliding_window_view(values, window))
    return out


def _mask(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """NaN wherever the window ending at t holds a missing bar."""
    missing = _windowed((~valid).astype(np.float64), window, lambda w: w.max(axis=1))
    return np.where(missing == 0.0, values, np.nan)


def _pstd(windows: np.ndarray) -> np.ndarray:
    """Population std of each window (two-pass); exactly 0 for a window of equal values,
    where NumPy's mean-then-deviations can leave rounding residue of ~1e-16."""
    constant = windows.max(axis=1) == windows.min(axis=1)
    return np.where(constant, 0.0, windows.std(axis=1))


def _pvar(windows: np.ndarray) -> np.ndarray:
    constant = windows.max(axis=1) == windows.min(axis=1)
    return np.where(constant, 0.0, windows.var(axis=1))


def _divide(num, den) -> np.ndarray:
    """num / den, NaN where den is 0 (never inf)."""
    num, den = np.broadcast_arrays(_f64(num), _f64(den))
    out = _nan(len(num))
    ok = den != 0.0
    out[ok] = num[ok] / den[ok]
    return out


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """x shifted forward by ``lag`` bars (x[t - lag] at t), NaN for the first ``lag``."""
    out = _nan(len(x))
    if lag < len(x):
        out[lag:] = x[: len(x) - lag]
    return out


# --- lag indicators -----------------------------------------------------------------


def ret_ref(close, lag):
    """Simple return over ``lag`` bars: close[t] / close[t - lag] - 1."""
    x = _f64(close)
    return (_divide(x, _lagged(x, lag)) - 1.0).astype(F32)


def logret_ref(close, lag):
    """Log return over ``lag`` bars: log(close[t] / close[t - lag]); NaN unless the ratio > 0."""
    ratio = _divide(_f64(close), _lagged(_f64(close), lag))
    out = _nan(len(ratio))
    ok = ratio > 0.0
    out[ok] = np.log(ratio[ok])
    return out.astype(F32)


def mom_ref(close, lag):
    """Momentum (TA-Lib MOM): close[t] - close[t - lag]."""
    x = _f64(close)
    return (x - _lagged(x, lag)).astype(F32)


def roc_ref(close, lag):
    """Rate of change in percent (TA-Lib ROC): (close[t] / close[t - lag] - 1) * 100."""
    x = _f64(close)
    return ((_divide(x, _lagged(x, lag)) - 1.0) * 100.0).astype(F32)


# --- windowed indicators ------------------------------------------------------------


def sma_ref(x, window):
    """Simple moving average (TA-Lib SMA)."""
    return _windowed(_f64(x), window, lambda w: w.mean(axis=1)).astype(F32)


def wma_ref(x, window):
    """Linearly weighted moving average, weights 1..window, newest heaviest (TA-Lib WMA)."""
    weights = np.arange(1, window + 1, dtype=np.float64)
    return _windowed(_f64(x), window, lambda w: w @ weights / weights.sum()).astype(F32)


def std_ref(x, window):
    """Population standard deviation, two-pass per window (TA-Lib STDDEV, nbdev=1)."""
    return _windowed(_f64(x), window, _pstd).astype(F32)


def zscore_ref(x, window):
    """(x - rolling mean) / rolling population std; NaN where the std is 0."""
    x = _f64(x)
    mean = _windowed(x, window, lambda w: w.mean(axis=1))
    std = _windowed(x, window, _pstd)
    return _divide(x - mean, std).astype(F32)


def bbands_ref(close, window, nbdev):
    """Bollinger %b and bandwidth around SMA +- nbdev * population std (TA-Lib BBANDS).

    %b = (close - lower) / (upper - lower), bandwidth = (upper - lower) / middle.
    """
    x = _f64(close)
    middle = _windowed(x, window, lambda w: w.mean(axis=1))
    std = _windowed(x, window, _pstd)
    upper = middle + nbdev * std
    lower = middle - nbdev * std
    return (
        _divide(x - lower, upper - lower).astype(F32),
        _divide(upper - lower, middle).astype(F32),
    )


def dist_high_ref(close, high, window):
    """close / (highest high of the window) - 1 (<= 0 on clean bars)."""
    c, h = _f64(close), _f64(high)
    valid = _valid(c, h)
    highest = _mask(_windowed(h, window, lambda w: w.max(axis=1)), valid, window)
    return (_divide(c, highest) - 1.0).astype(F32)


def dist_low_ref(close, low, window):
    """close / (lowest low of the window) - 1 (>= 0 on clean bars)."""
    c, lo = _f64(close), _f64(low)
    valid = _valid(c, lo)
    lowest = _mask(_windowed(lo, window, lambda w: w.min(axis=1)), valid, window)
    return (_divide(c, lowest) - 1.0).astype(F32)


def stoch_ref(high, low, close, window, smooth, d):
    """Stochastic oscillator (TA-Lib STOCH with SMA smoothing).

    fast %K = 100 * (close - lowest low) / (highest high - lowest low) over ``window``;
    %K = SMA(fast %K, smooth); %D = SMA(%K, d). As in TA-Lib both outputs share one
    lookback: %K is reported only where %D is. A flat range (high == low over the
    window) gives NaN, where TA-Lib writes 0.
    """
    h, lo, c = _f64(high), _f64(low), _f64(close)
    valid = _valid(h, lo, c)
    highest = _mask(_windowed(h, window, lambda w: w.max(axis=1)), valid, window)
    lowest = _mask(_windowed(lo, window, lambda w: w.min(axis=1)), valid, window)
    fast_k = 100.0 * _divide(c - lowest, highest - lowest)
    slow_k = _windowed(fast_k, smooth, lambda w: w.mean(axis=1))
    slow_d = _windowed(slow_k, d, lambda w: w.mean(axis=1))
    slow_k = np.where(np.isnan(slow_d), np.nan, slow_k)
    return slow_k.astype(F32), slow_d.astype(F32)


def _comoments(close, bench_close, window):
    """Windowed covariance and variances of one-bar simple returns."""
    r = _divide(_f64(close), _lagged(_f64(close), 1)) - 1.0
    b = _divide(_f64(bench_close), _lagged(_f64(bench_close), 1)) - 1.0
    r_mean = _windowed(r, window, lambda w: w.mean(axis=1))
    b_mean = _windowed(b, window, lambda w: w.mean(axis=1))
    pairs = np.stack([r, b], axis=1)
    cov = _nan(len(r))
    if len(r) >= window:
        wins = sliding_window_view(pairs, window, axis=0)  # (n - window + 1, 2, window)
        dr = wins[:, 0, :] - r_mean[window - 1 :, None]
        db = wins[:, 1, :] - b_mean[window - 1 :, None]
        constant = (np.ptp(wins[:, 0, :], axis=1) == 0) | (np.ptp(wins[:, 1, :], axis=1) == 0)
        cov[window - 1 :] = np.where(constant, 0.0, (dr * db).mean(axis=1))
    var_r = _windowed(r, window, _pvar)
    var_b = _windowed(b, window, _pvar)
    return cov, var_r, var_b


def corr_ref(close, bench_close, window):
    """Rolling Pearson correlation of one-bar returns with the benchmark's (TA-Lib CORREL on returns)."""
    cov, var_r, var_b = _comoments(close, bench_close, window)
    return _divide(cov, np.sqrt(var_r * var_b)).astype(F32)


def beta_ref(close, bench_close, window):
    """Rolling beta of one-bar returns on the benchmark's: cov / var(benchmark) (TA-Lib BETA(bench, close))."""
    cov, _, var_b = _comoments(close, bench_close, window)
    return _divide(cov, var_b).astype(F32)


# --- recursive indicators: computed per gap-free segment ----------------------------


def _sma_seeded_ema(x: np.ndarray, period: int, seed_end: int) -> np.ndarray:
    """EMA with k = 2 / (period + 1), seeded at ``seed_end`` with the SMA of the
    ``period`` values ending there (TA-Lib's default seeding), NaN before it."""
    out = _nan(len(x))
    if seed_end >= len(x):
        return out
    k = 2.0 / (period + 1)
    ema = x[seed_end - period + 1 : seed_end + 1].mean()
    out[seed_end] = ema
    for t in range(seed_end + 1, len(x)):
        ema = (x[t] - ema) * k + ema
        out[t] = ema
    return out


def ema_ref(x, window):
    """Exponential moving average, SMA-seeded (TA-Lib EMA); restarts after a gap."""
    x = _f64(x)
    out = _nan(len(x))
    for s, e in _segments(_valid(x)):
        out[s:e] = _sma_seeded_ema(x[s:e], window, window - 1)
    return out.astype(F32)


def rsi_ref(close, window):
    """Relative strength index with Wilder smoothing (TA-Lib RSI); NaN when prices do not move."""
    x = _f64(close)
    out = _nan(len(x))
    for s, e in _segments(_valid(x)):
        seg = x[s:e]
        if len(seg) <= window:
            continue
        change = np.diff(seg)
        gain = change[:window].clip(min=0).sum() / window
        loss = -change[:window].clip(max=0).sum() / window
        for t in range(window, len(seg)):
            if t > window:
                gain = (gain * (window - 1) + max(change[t - 1], 0.0)) / window
                loss = (loss * (window - 1) - min(change[t - 1], 0.0)) / window
            total = gain + loss
            out[s + t] = 100.0 * gain / total if total != 0.0 else np.nan
    return out.astype(F32)


def macd_ref(close, fast, slow, signal):
    """MACD line, signal and histogram (TA-Lib MACD).

    As in TA-Lib, both EMAs are first reported at bar ``slow - 1``, the fast one
    seeded there with the SMA of its last ``fast`` values (not at bar ``fast - 1``);
    the signal is the SMA-seeded EMA of the line; all three are reported from
    ``slow + signal - 2`` on.
    """
    x = _f64(close)
    line_out, signal_out = _nan(len(x)), _nan(len(x))
    for s, e in _segments(_valid(x)):
        seg = x[s:e]
        line = _sma_seeded_ema(seg, fast, slow - 1) - _sma_seeded_ema(seg, slow, slow - 1)
        if len(seg) < slow:
            continue
        sig = _nan(len(seg))
        sig[slow - 1 :] = _sma_seeded_ema(line[slow - 1 :], signal, signal - 1)
        line[np.isnan(sig)] = np.nan
        line_out[s:e], signal_out[s:e] = line, sig
    return line_out.astype(F32), signal_out.astype(F32), (line_out - signal_out).astype(F32)


def _true_range(high, low, close) -> np.ndarray:
    """max(high - low, |high - previous close|, |low - previous close|), NaN at bar 0."""
    prev = _lagged(close, 1)
    return np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))


def _atr(high, low, close, window) -> np.ndarray:
    h, lo, c = _f64(high), _f64(low), _f64(close)
    out = _nan(len(c))
    for s, e in _segments(_valid(h, lo, c)):
        tr = _true_range(h[s:e], lo[s:e], c[s:e])
        if len(tr) <= window:
            continue
        atr = tr[1 : window + 1].mean()
        out[s + window] = atr
        for t in range(window + 1, len(tr)):
            atr = (atr * (window - 1) + tr[t]) / window
            out[s + t] = atr
    return out


def atr_ref(high, low, close, window):
    """Average true range with Wilder smoothing (TA-Lib ATR), seeded with the SMA of
    the first ``window`` true ranges."""
    return _atr(high, low, close, window).astype(F32)


def natr_ref(high, low, close, window):
    """ATR as a percent of close (TA-Lib NATR)."""
    return (100.0 * _divide(_atr(high, low, close, window), _f64(close))).astype(F32)


def obv_ref(close, volume):
    """On-balance volume (TA-Lib OBV): starts at the first bar's volume, adds volume on
    up-closes, subtracts it on down-closes; restarts after a gap."""
    c, v = _f64(close), _f64(volume)
    out = _nan(len(c))
    for s, e in _segments(_valid(c, v)):
        level = v[s]
        out[s] = level
        for t in range(s + 1, e):
            if c[t] > c[t - 1]:
                level += v[t]
            elif c[t] < c[t - 1]:
                level -= v[t]
            out[t] = level
    return out.astype(F32)


def rolling_moments_ref(x, window):
    """Rolling mean and population std (float64), two-pass per window."""
    x = _f64(x)
    return (
        _windowed(x, window, lambda w: w.mean(axis=1)),
        _windowed(x, window, _pstd),
    )
