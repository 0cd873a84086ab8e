"""Numba rolling-moment kernels of the feature stage: std, z-score, Bollinger, correlation, beta.

Rolling moments avoid running sums of ``x`` and ``x**2``: those lose every digit once a
series drifts far from where the sums started (pandas is 60% off on a random walk from
100 down to 0.03). They use sliding Welford updates, which work on deviations from the
window mean, and keep a bound on the rounding error those updates can have accumulated:
``rolling_moments_nb`` restarts from an exact two-pass value every ``_BLOCK`` bars and
redoes a block two-pass bar by bar when its bound exceeds ``_MOMENT_TOL`` of the block's
smallest second moment (a huge value leaving the window); the correlation kernels track
the bound bar by bar and recompute when it is crossed. A window of equal values is
detected exactly, so flat prices have a std of exactly 0 (and a z-score of NaN), not
rounding noise. Conventions (float64 in, float32 features out, runs of valid bars) are
those of :mod:`dask_pipeline.features.kernels`; the fused moments pass
(:mod:`dask_pipeline.features.fused`) uses the same blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dask_pipeline.features.kernels import _nan32, _nan64, _next_run1, _next_run, _valid2, _window_sum, _lagged_ratio

_EPS = 2.0**-53  # unit roundoff of float64
_MOMENT_TOL = 1e-8  # allowed relative error of a window's second moment (std: 5e-9)
_BLOCK = 64  # sliding moment updates restart from an exact two-pass value this often


@njit(cache=True)
def _exact_moments(x, end, window):
    """Mean and second moment of x[end - window:end]: corrected two-pass, exact zero
    for a window of equal values."""
    first = x[end - window]
    total = 0.0
    constant = True
    for i in range(end - window, end):
        total += x[i]
        constant &= x[i] == first
    if constant:
        return first, 0.0
    mean = total / window
    dev_sum = 0.0
    m2 = 0.0
    for i in range(end - window, end):
        d = x[i] - mean
        dev_sum += d
        m2 += d * d
    mean += dev_sum / window
    return mean, max(m2 - dev_sum * dev_sum / window, 0.0)


@njit(cache=True)
def _moments_block(x, t, stop, window, same, mean_buf, std_buf):
    """Mean and population std of the windows ending at ``t .. stop - 1`` (at most
    ``_BLOCK`` of them, all inside one run) into ``mean_buf`` / ``std_buf[: stop - t]``.

    ``same`` counts the bars equal to their predecessor back from ``t`` (inclusive);
    returns it counted up to ``stop - 1``. Shared by :func:`rolling_moments_nb` and the
    fused moments pass, so both compute the same float64 values.
    """
    inv = 1.0 / window
    k = stop - t
    mean, m2 = _exact_moments(x, t + 1, window)
    mean_buf[0] = mean
    std_buf[0] = m2 * inv  # variances until the square roots at the end, in one vectorised loop
    hi = m2
    lo = np.inf  # smallest second moment of a non-constant window in the block
    if m2 > 0.0:
        lo = m2
    level = abs(mean)
    # Views, not x[u - window]: numba cannot prove that index non-negative, and its check costs.
    new, old, prev = x[t + 1 : stop], x[t + 1 - window : stop - window], x[t : stop - 1]
    for i in range(k - 1):
        x_new = new[i]
        x_old = old[i]
        same = same + 1 if x_new == prev[i] else 0
        if same >= window - 1:
            mean = x_new
            m2 = 0.0
        else:
            dx = x_new - x_old
            new_mean = mean + dx * inv
            m2 += dx * ((x_new - new_mean) + (x_old - mean))
            mean = new_mean
            hi = max(hi, m2)
            lo = min(lo, m2)
        mean_buf[i + 1] = mean
        std_buf[i + 1] = max(m2, 0.0) * inv
    # Rounding bound of the block's sliding updates: each step errs by at most
    # ~16 eps * hi (deviations are bounded by sqrt(hi)) plus the effect of the
    # mean's own drift from the exact value it started the block with.
    root = np.sqrt(hi)
    reach = level + k * 2.2 * root * inv
    bound = _EPS * (2.0 * window * hi + k * (16.0 * hi + 4.4 * root * k * reach))
    if bound > _MOMENT_TOL * lo:
        for u in range(t + 1, stop):
            mean, m2 = _exact_moments(x, u + 1, window)
            mean_buf[u - t] = mean
            std_buf[u - t] = m2 * inv
    for i in range(k):
        std_buf[i] = np.sqrt(std_buf[i])
    return same


@njit(cache=True)
def _run_same(x, s, window):
    """Bars equal to their predecessor, counted back from the first full window's last
    bar: the window ending at t is constant when this reaches window - 1, and then its
    moments are exact (m2 = 0)."""
    same = 0
    for t in range(s + 1, s + window):
        same = same + 1 if x[t] == x[t - 1] else 0
    return same


@njit(cache=True)
def _moments_run(x, s, e, window, mean_out, std_out, mean_buf, std_buf):
    if e - s < window:
        return
    same = _run_same(x, s, window)
    t = s + window - 1
    while t < e:
        if t > s + window - 1:  # a block start after the first also extends the count
            same = same + 1 if x[t] == x[t - 1] else 0
        stop = min(t + _BLOCK, e)
        same = _moments_block(x, t, stop, window, same, mean_buf, std_buf)
        mean_out[t:stop] = mean_buf[: stop - t]
        std_out[t:stop] = std_buf[: stop - t]
        t = stop


@njit(cache=True)
def rolling_moments_nb(x, window):
    """Rolling mean and population std as float64 (shared by std, z-score, Bollinger).

    Exact to ~1e-8 relative in the variance on any series: sliding Welford updates,
    restarted two-pass every ``_BLOCK`` bars, with a rounding bound checked per block.
    """
    n = x.shape[0]
    mean_out = _nan64(n)
    std_out = _nan64(n)
    mean_buf = np.empty(_BLOCK)
    std_buf = np.empty(_BLOCK)
    s, e = _next_run1(x, 0)
    while s < n:
        _moments_run(x, s, e, window, mean_out, std_out, mean_buf, std_buf)
        s, e = _next_run1(x, e)
    return mean_out, std_out


@njit(cache=True)
def zscore_nb(x, mean, std):
    """(x - mean) / std from :func:`rolling_moments_nb`; NaN where the std is 0."""
    n = x.shape[0]
    out = _nan32(n)
    for t in range(n):
        if std[t] > 0.0:
            out[t] = (x[t] - mean[t]) / std[t]
    return out


@njit(cache=True)
def bbands_nb(close, mean, std, nbdev):
    """Bollinger %b and bandwidth from :func:`rolling_moments_nb`."""
    n = close.shape[0]
    pctb = _nan32(n)
    width = _nan32(n)
    for t in range(n):
        upper = mean[t] + nbdev * std[t]
        lower = mean[t] - nbdev * std[t]
        if upper != lower:
            pctb[t] = (close[t] - lower) / (upper - lower)
        if mean[t] != 0.0:
            width[t] = (upper - lower) / mean[t]
    return pctb, width


@njit(cache=True)
def _exact_comoments(r, b, end, window):
    """Means and second (co)moments of r and b over [end - window, end), corrected two-pass."""
    mr = _window_sum(r, end, window) / window
    mb = _window_sum(b, end, window) / window
    sr = 0.0
    sb = 0.0
    crr = 0.0
    cbb = 0.0
    crb = 0.0
    for i in range(end - window, end):
        dr = r[i] - mr
        db = b[i] - mb
        sr += dr
        sb += db
        crr += dr * dr
        cbb += db * db
        crb += dr * db
    mr += sr / window
    mb += sb / window
    crr = max(crr - sr * sr / window, 0.0)
    cbb = max(cbb - sb * sb / window, 0.0)
    crb -= sr * sb / window
    return mr, mb, crr, cbb, crb


@njit(cache=True)
def _exact_error(crr, cbb, window):
    """Rounding bounds of freshly recomputed (two-pass) second moments."""
    scale = 2.0 * window * _EPS
    return scale * crr, scale * cbb, scale * np.sqrt(crr * cbb)


@njit(cache=True)
def _comoments_run(r, b, s, e, window, want_corr, out):
    if e - s < window:
        return
    same_r = 0
    same_b = 0
    for t in range(s + 1, s + window):
        same_r = same_r + 1 if r[t] == r[t - 1] else 0
        same_b = same_b + 1 if b[t] == b[t - 1] else 0
    mr, mb, crr, cbb, crb = _exact_comoments(r, b, s + window, window)
    err_r, err_b, err_rb = _exact_error(crr, cbb, window)
    err_mr = err_mb = 0.0
    for t in range(s + window - 1, e):
        if t >= s + window:
            rn, ro, bn, bo = r[t], r[t - window], b[t], b[t - window]
            same_r = same_r + 1 if rn == r[t - 1] else 0
            same_b = same_b + 1 if bn == b[t - 1] else 0
            dr = rn - ro
            db = bn - bo
            new_mr = mr + dr / window
            new_mb = mb + db / window
            ar = rn - new_mr
            br = ro - mr
            ab = bn - new_mb
            bb = bo - mb
            crr += dr * (ar + br)
            cbb += db * (ab + bb)
            crb += dr * ab + db * br
            err_mr += _EPS * (abs(new_mr) + abs(dr) / window)
            err_mb += _EPS * (abs(new_mb) + abs(db) / window)
            err_r += _EPS * (3.0 * abs(dr) * (abs(ar) + abs(br)) + abs(crr)) + 2.0 * abs(dr) * err_mr
            err_b += _EPS * (3.0 * abs(db) * (abs(ab) + abs(bb)) + abs(cbb)) + 2.0 * abs(db) * err_mb
            err_rb += (
                _EPS * (3.0 * (abs(dr * ab) + abs(db * br)) + abs(crb))
                + abs(dr) * err_mb
                + abs(db) * err_mr
            )
            mr = new_mr
            mb = new_mb
            if (
                err_r > _MOMENT_TOL * crr
                or err_b > _MOMENT_TOL * cbb
                or err_rb * err_rb > _MOMENT_TOL * _MOMENT_TOL * crr * cbb
            ):
                mr, mb, crr, cbb, crb = _exact_comoments(r, b, t + 1, window)
                err_r, err_b, err_rb = _exact_error(crr, cbb, window)
                err_mr = err_mb = 0.0
        # A constant window has exactly zero (co)variance; rounding must not invent one.
        if same_r >= window - 1:
            mr, crr, crb, err_r, err_rb, err_mr = r[t], 0.0, 0.0, 0.0, 0.0, 0.0
        if same_b >= window - 1:
            mb, cbb, crb, err_b, err_rb, err_mb = b[t], 0.0, 0.0, 0.0, 0.0, 0.0
        if want_corr:
            if crr > 0.0 and cbb > 0.0:
                out[t] = crb / np.sqrt(crr * cbb)
        elif cbb > 0.0:
            out[t] = crb / cbb


@njit(cache=True)
def _return_comoments(close, bench_close, window, want_corr):
    n = close.shape[0]
    out = _nan32(n)
    r = _lagged_ratio(close, 1) - 1.0
    b = _lagged_ratio(bench_close, 1) - 1.0
    valid = _valid2(r, b)
    s, e = _next_run(valid, 0)
    while s < n:
        _comoments_run(r, b, s, e, window, want_corr, out)
        s, e = _next_run(valid, e)
    return out


@njit(cache=True)
def corr_nb(close, bench_close, window):
    """Rolling correlation of one-bar returns with the benchmark's."""
    return _return_comoments(close, bench_close, window, True)


@njit(cache=True)
def beta_nb(close, bench_close, window):
    """Rolling beta of one-bar returns on the benchmark's: cov / var(benchmark)."""
    return _return_comoments(close, bench_close, window, False)
