"""A synthetic equity market: bars realistic enough to exercise research code.

Model, per bar (all returns are log returns):

- **Market factor** ``m_t``: a two-state Markov regime (bull: +12 %/yr drift, bear:
  -25 %/yr drift and 1.5x volatility; expected bull spell 2 years, bear spell 6 months)
  on top of GARCH(1,1) volatility (16 %/yr unconditional).
- **Symbol i**: ``r_it = beta_i m_t + alpha_i dt + e_it + J_it``, with beta in [0.4, 1.6],
  idiosyncratic GARCH(1,1) noise ``e`` (15-45 %/yr, its own persistence) and compound
  Poisson jumps ``J`` (1-4 a year, mean -1 %, sd 3-6 %).
- **Bars**: the first bar of each session opens with an overnight gap from the previous
  close; later intraday bars open at the previous close. ``close = open * exp(r)``;
  high/low extend ``max/min(open, close)`` by half-normal wicks scaled by the bar's
  volatility, so ``0 < low <= open, close <= high``. Volume (whole shares, stored as
  floats) is a per-symbol average daily volume, raised by the bar's absolute standardized
  return, with log-normal noise.

Calendar: ``1D`` gives one bar per business day (Mon-Fri, no holidays) stamped at
midnight UTC. Intraday frequencies (``1h``, ``5min``, any step up to 6.5 h) give bars on
business days during a fixed 09:30-16:00 session whose clock is UTC (no daylight saving),
each stamped at its start: ``5min`` has 78 bars a day (09:30 .. 15:55), ``1h`` has 7
(09:30 .. 15:30, the last one half an hour long).

Determinism: every random draw comes from ``numpy.random.SeedSequence(seed)`` with a
fixed spawn key per stream: one key for the market factor, one per symbol *name*. So a
symbol's bars depend only on ``(seed, name, start, end, freq)``, not on which or how many
other symbols were asked for, nor their order; the market factor, shared by all, depends
only on ``(seed, start, end, freq)``. Draws run forward in time, so moving ``end`` later
keeps every earlier bar identical (moving ``start`` changes them all).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from dask_pipeline.data.validate import BAR_COLUMNS

TRADING_DAYS = 252
SESSION_OPEN = pd.Timedelta(hours=9, minutes=30)
SESSION_CLOSE = pd.Timedelta(hours=16)
DAILY_FREQS = {"1D", "D", "1B", "B"}

# Spawn keys (first element) of the independent random streams.
_MARKET_STREAM = 0
_SYMBOL_STREAM = 1

# Market: regime drifts and volatility multipliers (bull, bear), expected spell lengths in days.
_REGIME_DRIFT = np.array([0.12, -0.25])
_REGIME_VOL = np.array([1.0, 1.5])
_REGIME_DAYS = np.array([504.0, 126.0])
_MARKET_VOL = 0.16
_MARKET_GARCH = (0.08, 0.90)


def synthesize(
    symbols: int | list[str],
    start: str | dt.date,
    end: str | dt.date,
    freq: str = "1D",
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Generate a synthetic market: one float64 bars frame per symbol.

    Parameters
    ----------
    symbols
        A count ``n`` (symbols ``SYN000`` .. ``SYN{n-1}``, at least three digits) or a
        list of distinct names.
    start, end
        First and last day, inclusive. An ``end`` with no time of day covers that whole
        day; one with a time of day cuts intraday bars after it.
    freq
        ``"1D"`` (business days) or an intraday step such as ``"1h"`` or ``"5min"``.
    seed
        Seed of every random draw; the same arguments give identical bars.

    Returns
    -------
    dict
        ``{symbol: bars}`` in the order of ``symbols``; bars follow the data contract
        (``DatetimeIndex`` named ``timestamp`` in UTC, columns ``open high low close volume``).
    """
    names = _symbol_names(symbols)
    index, bars_per_day = bar_calendar(start, end, freq)
    n_bars = len(index)
    if n_bars == 0:
        raise ValueError(f"no business-day bars between {start} and {end}")
    dt_bar = 1.0 / (TRADING_DAYS * bars_per_day)
    session_start = np.ones(n_bars, dtype=bool)
    if bars_per_day > 1:
        day = index.normalize().asi8
        session_start[1:] = day[1:] != day[:-1]

    market, market_var = _market_factor(seed, n_bars, dt_bar, bars_per_day)
    params = [_symbol_params(seed, name) for name in names]
    p = {key: np.array([row[key] for row in params]) for key in params[0]}
    shocks = np.stack([_symbol_shocks(seed, name, n_bars) for name in names], axis=1)  # (T, N, 7)

    idio, idio_var = _garch(shocks[:, :, 0], p["idio_vol"] ** 2 * dt_bar, p["garch_a"], p["garch_b"])
    jumps = (shocks[:, :, 6] < p["jump_rate"] * dt_bar) * (-0.01 + p["jump_sd"] * shocks[:, :, 1])
    returns = p["beta"] * market[:, None] + p["alpha"] * dt_bar + idio + jumps
    bar_var = p["beta"] ** 2 * market_var[:, None] + idio_var
    bar_sd = np.sqrt(bar_var)

    # Overnight gaps carry a third of a day's volatility; intraday bars open at the last close.
    gaps = np.where(session_start[:, None], 0.35 * np.sqrt(bar_var * bars_per_day) * shocks[:, :, 2], 0.0)
    log_close = np.log(p["price0"]) + np.cumsum(gaps + returns, axis=0)
    log_open = log_close - returns
    log_high = np.maximum(log_open, log_close) + 0.5 * bar_sd * np.abs(shocks[:, :, 3])
    log_low = np.minimum(log_open, log_close) - 0.5 * bar_sd * np.abs(shocks[:, :, 4])

    unconditional_sd = np.sqrt((p["beta"] * _MARKET_VOL) ** 2 + p["idio_vol"] ** 2) * np.sqrt(dt_bar)
    surprise = np.abs(returns + gaps) / unconditional_sd - np.sqrt(2 / np.pi)
    log_volume = np.log(p["daily_volume"] / bars_per_day) + p["volume_beta"] * surprise + 0.35 * shocks[:, :, 5]
    volume = np.maximum(np.round(np.exp(log_volume)), 1.0)

    columns = dict(zip(BAR_COLUMNS, (np.exp(log_open), np.exp(log_high), np.exp(log_low), np.exp(log_close), volume)))
    # Keep open/close inside [low, high] exactly, whatever exp() rounding does.
    columns["high"] = np.maximum.reduce([columns["high"], columns["open"], columns["close"]])
    columns["low"] = np.minimum.reduce([columns["low"], columns["open"], columns["close"]])
    by_symbol = {name: np.ascontiguousarray(col.T) for name, col in columns.items()}
    return {
        name: pd.DataFrame({col: by_symbol[col][i] for col in BAR_COLUMNS}, index=index)
        for i, name in enumerate(names)
    }


def bar_calendar(start: str | dt.date, end: str | dt.date, freq: str = "1D") -> tuple[pd.DatetimeIndex, int]:
    """The bar timestamps ``synthesize`` uses, and the number of bars per session.

    Returns
    -------
    (DatetimeIndex, int)
        UTC timestamps named ``timestamp`` (nanosecond unit), and bars per day (1 for ``1D``).
    """
    first, last = _utc(start), _utc(end)
    days = pd.bdate_range(first.normalize().tz_localize(None), last.normalize().tz_localize(None))
    if freq in DAILY_FREQS:
        index, per_day = days, 1
    else:
        try:
            step = pd.Timedelta(freq)
        except ValueError as exc:
            raise ValueError(f"freq {freq!r} is neither '1D' nor an intraday step like '1h' or '5min'") from exc
        session = SESSION_CLOSE - SESSION_OPEN
        if not pd.Timedelta(0) < step <= session:
            raise ValueError(f"freq {freq!r}: an intraday step must be positive and at most the 6.5 h session")
        per_day = int(np.ceil(session / step))
        offsets = pd.TimedeltaIndex([SESSION_OPEN + step * k for k in range(per_day)]).to_numpy()
        index = pd.DatetimeIndex((days.to_numpy()[:, None] + offsets[None, :]).ravel())
    index = index.tz_localize("UTC").as_unit("ns").rename("timestamp")
    has_time = last != last.normalize()
    keep = (index >= first) & ((index <= last) if has_time else (index.normalize() <= last))
    # No ``freq`` on the index: bars loaded back from the store carry none either.
    return pd.DatetimeIndex(index[keep], freq=None), per_day


def _utc(value: str | dt.date) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def _symbol_names(symbols: int | list[str]) -> list[str]:
    if isinstance(symbols, (int, np.integer)):
        if symbols < 1:
            raise ValueError(f"symbols must be at least 1, got {symbols}")
        width = max(3, len(str(int(symbols) - 1)))
        return [f"SYN{i:0{width}d}" for i in range(int(symbols))]
    names = [str(s) for s in symbols]
    if not names:
        raise ValueError("symbols is an empty list")
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise ValueError(f"symbols lists {', '.join(dupes)} more than once")
    return names


def _symbol_seeds(seed: int, name: str) -> list[np.random.SeedSequence]:
    """Three independent streams of one symbol: parameters, normal shocks, uniforms."""
    key = (_SYMBOL_STREAM, len(name), *name.encode("utf-8"))
    return np.random.SeedSequence(seed, spawn_key=key).spawn(3)


def _symbol_params(seed: int, name: str) -> dict[str, float]:
    rng = np.random.default_rng(_symbol_seeds(seed, name)[0])
    garch_a = rng.uniform(0.06, 0.12)
    return {
        "beta": rng.uniform(0.4, 1.6),
        "idio_vol": rng.uniform(0.15, 0.45),
        "alpha": rng.normal(0.0, 0.03),
        "garch_a": garch_a,
        "garch_b": min(rng.uniform(0.85, 0.92), 0.985 - garch_a),
        "jump_rate": rng.uniform(1.0, 4.0),
        "jump_sd": rng.uniform(0.03, 0.06),
        "price0": float(np.exp(rng.uniform(np.log(10.0), np.log(300.0)))),
        "daily_volume": float(np.exp(rng.uniform(np.log(2e5), np.log(2e7)))),
        "volume_beta": rng.uniform(0.3, 0.6),
    }


def _symbol_shocks(seed: int, name: str, n_bars: int) -> np.ndarray:
    """(T, 7): idiosyncratic, jump size, gap, high wick, low wick, volume noise (normals); jump draw (uniform)."""
    _, normal_seq, uniform_seq = _symbol_seeds(seed, name)
    normals = np.random.default_rng(normal_seq).standard_normal((n_bars, 6))
    uniforms = np.random.default_rng(uniform_seq).random((n_bars, 1))
    return np.concatenate([normals, uniforms], axis=1)


def _market_factor(seed: int, n_bars: int, dt_bar: float, bars_per_day: int) -> tuple[np.ndarray, np.ndarray]:
    """Market log returns and their conditional variance, both (T,)."""
    normal_seq, uniform_seq = np.random.SeedSequence(seed, spawn_key=(_MARKET_STREAM,)).spawn(2)
    shocks = np.random.default_rng(normal_seq).standard_normal(n_bars)
    uniforms = np.random.default_rng(uniform_seq).random(n_bars)
    switch = 1.0 / (_REGIME_DAYS * bars_per_day)
    stationary_bear = switch[0] / switch.sum()
    regime = np.empty(n_bars, dtype=np.intp)
    state = int(uniforms[0] < stationary_bear)
    regime[0] = state
    for t in range(1, n_bars):
        if uniforms[t] < switch[state]:
            state = 1 - state
        regime[t] = state
    noise, variance = _garch(shocks[:, None], np.array([_MARKET_VOL**2 * dt_bar]), *map(np.array, _MARKET_GARCH))
    scale = _REGIME_VOL[regime]
    returns = _REGIME_DRIFT[regime] * dt_bar + scale * noise[:, 0]
    return returns, scale**2 * variance[:, 0]


def _garch(shocks: np.ndarray, target_var: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) noise and conditional variance over time (axis 0), vectorised across columns.

    Starts at the unconditional variance ``target_var``; ``omega = target_var (1 - a - b)``.
    """
    omega = target_var * (1.0 - a - b)
    noise = np.empty_like(shocks)
    variance = np.empty_like(shocks)
    h = np.broadcast_to(target_var, shocks.shape[1:]).astype(np.float64)
    for t in range(shocks.shape[0]):
        variance[t] = h
        noise[t] = np.sqrt(h) * shocks[t]
        h = omega + a * noise[t] ** 2 + b * h
    return noise, variance
