"""``dask-pipeline bench features``: the fused feature passes against pandas and TA-Lib.

``bench_features`` times the feature engine against two baselines on the same bars, on
two shapes (one long series of minute bars; a wide universe of daily bars): a plain
pandas implementation of the default feature set (rolling / ewm / shift, written below)
and TA-Lib on the 16 indicators it provides (20 columns). Throughput is bar-features per
second (bars x feature columns / seconds) beside the effective memory bandwidth (bar
frames read plus feature frames written, per second), the median of ``repeats``
interleaved passes over all symbols, on one core with the JIT warm. Every implementation
returns the same thing: one float32 DataFrame per symbol.
"""

from __future__ import annotations


import numpy as np
import pandas as pd

from dask_pipeline.bench import median_seconds, synthetic_bars  # noqa: F401  (synthetic_bars: the tests' bars)


#: Default-set indicators TA-Lib computes directly (the like-for-like comparison).
TALIB_SHARED = (
    "ret", "logret", "sma", "ema", "std", "mom", "roc", "rsi", "macd", "bbands",
    "atr", "natr", "stoch", "dist_high", "dist_low", "obv",
)  # fmt: skip




def _seeded_ewm(values: pd.Series, alpha: float, seed_end: int, period: int) -> pd.Series:
    """EMA with smoothing ``alpha`` started at ``seed_end`` from the mean of the ``period``
    values ending there (TA-Lib seeding): earlier rows are blanked, the seed row replaced."""
    seeded = values.copy()
    if seed_end >= len(values):
        return seeded * np.nan
    seeded.iloc[:seed_end] = np.nan
    seeded.iloc[seed_end] = values.iloc[seed_end - period + 1 : seed_end + 1].mean()
    return seeded.ewm(alpha=alpha, adjust=False).mean()


def pandas_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The default feature set written with pandas rolling / ewm / shift (no gaps handled)."""
    close, high, low, volume = (bars[c].astype(np.float64) for c in ("close", "high", "low", "volume"))
    out = {}
    out["ret_1"] = close / close.shift(1) - 1.0
    out["logret_1"] = np.log(close / close.shift(1))
    out["sma_20"] = close.rolling(20).mean()
    out["ema_12"] = _seeded_ewm(close, 2.0 / 13.0, 11, 12)
    mean20, std20 = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    out["std_20"] = std20
    out["zscore_20"] = (close - mean20) / std20
    out["mom_10"] = close - close.shift(10)
    out["roc_10"] = (close / close.shift(10) - 1.0) * 100.0
    change = close.diff()
    gain = _seeded_ewm(change.clip(lower=0.0), 1.0 / 14.0, 14, 14)
    loss = _seeded_ewm(-change.clip(upper=0.0), 1.0 / 14.0, 14, 14)
    out["rsi_14"] = 100.0 * gain / (gain + loss)
    fast = _seeded_ewm(close, 2.0 / 13.0, 25, 12)
    slow = _seeded_ewm(close, 2.0 / 27.0, 25, 26)
    line = fast - slow
    signal = _seeded_ewm(line, 2.0 / 10.0, 33, 9)
    out["macd_12_26_9"] = line.where(signal.notna())
    out["macd_signal_12_26_9"] = signal
    out["macd_hist_12_26_9"] = line - signal
    upper, lower = mean20 + 2.0 * std20, mean20 - 2.0 * std20
    out["bb_pctb_20_2"] = (close - lower) / (upper - lower)
    out["bb_width_20_2"] = (upper - lower) / mean20
    prev = close.shift(1)
    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    true_range.iloc[0] = np.nan
    atr = _seeded_ewm(true_range, 1.0 / 14.0, 14, 14)
    out["atr_14"] = atr
    out["natr_14"] = 100.0 * atr / close
    highest, lowest = high.rolling(14).max(), low.rolling(14).min()
    slow_k = (100.0 * (close - lowest) / (highest - lowest)).rolling(3).mean()
    slow_d = slow_k.rolling(3).mean()
    out["stoch_k_14_3_3"] = slow_k.where(slow_d.notna())
    out["stoch_d_14_3_3"] = slow_d
    out["dist_high_20"] = close / high.rolling(20).max() - 1.0
    out["dist_low_20"] = close / low.rolling(20).min() - 1.0
    out["volume_z_20"] = (volume - volume.rolling(20).mean()) / volume.rolling(20).std(ddof=0)
    obv = (np.sign(change) * volume).fillna(0.0).cumsum() + volume.iloc[0]
    out["obv"] = obv
    return pd.DataFrame(out).astype(np.float32)


def talib_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The TA-Lib-shared part of the default set, from TA-Lib calls (plus the arithmetic
    turning BBANDS into %b / bandwidth and MAX / MIN into distances)."""
    import talib

    close, high, low, volume = (
        np.ascontiguousarray(bars[c].to_numpy(), dtype=np.float64)
        for c in ("close", "high", "low", "volume")
    )
    cols = {}
    ratio = talib.ROCR(close, 1)
    cols["ret_1"] = ratio - 1.0
    cols["logret_1"] = np.log(ratio)
    cols["sma_20"] = talib.SMA(close, 20)
    cols["ema_12"] = talib.EMA(close, 12)
    cols["std_20"] = talib.STDDEV(close, 20)
    cols["mom_10"] = talib.MOM(close, 10)
    cols["roc_10"] = talib.ROC(close, 10)
    cols["rsi_14"] = talib.RSI(close, 14)
    line, signal, hist = talib.MACD(close, 12, 26, 9)
    cols["macd_12_26_9"], cols["macd_signal_12_26_9"], cols["macd_hist_12_26_9"] = line, signal, hist
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0)
    cols["bb_pctb_20_2"] = (close - lower) / (upper - lower)
    cols["bb_width_20_2"] = (upper - lower) / middle
    cols["atr_14"] = talib.ATR(high, low, close, 14)
    cols["natr_14"] = talib.NATR(high, low, close, 14)
    cols["stoch_k_14_3_3"], cols["stoch_d_14_3_3"] = talib.STOCH(high, low, close, 14, 3, 0, 3, 0)
    cols["dist_high_20"] = close / talib.MAX(high, 20) - 1.0
    cols["dist_low_20"] = close / talib.MIN(low, 20) - 1.0
    cols["obv"] = talib.OBV(close, volume)
    out = np.empty((len(close), len(cols)), dtype=np.float32, order="F")
    for j, values in enumerate(cols.values()):
        out[:, j] = values
    return pd.DataFrame(out, index=bars.index, columns=list(cols), copy=False)


def std_exactness(n_bars: int = 10_000_000, window: int = 20, seed: int = 0) -> pd.DataFrame:
    """Max relative error of rolling std vs a two-pass computation on a random walk
    drifting from 100 to 0.03 over ``n_bars`` bars: ours and pandas."""
    from numpy.lib.stride_tricks import sliding_window_view

    from dask_pipeline.features import moments

    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.002, n_bars)
    steps += (np.log(0.03 / 100.0) - steps.sum()) / n_bars  # end at 0.03 exactly
    close = 100.0 * np.exp(np.cumsum(steps))
    ours = moments.rolling_moments_nb(close, window)[1].astype(np.float32)
    theirs = pd.Series(close).rolling(window).std(ddof=0).to_numpy()
    worst = {"dask-pipeline": 0.0, "pandas": 0.0}
    chunk = 1_000_000
    for start in range(0, n_bars - window + 1, chunk):
        stop = min(start + chunk, n_bars - window + 1)
        exact = sliding_window_view(close[start : stop + window - 1], window).std(axis=1)
        end = slice(start + window - 1, stop + window - 1)
        for name, values in (("dask-pipeline", ours[end]), ("pandas", theirs[end])):
            worst[name] = max(worst[name], float(np.max(np.abs(values - exact) / exact)))
    return pd.DataFrame(
        {
            "implementation": list(worst),
            "bars": n_bars,
            "window": window,
            "max_rel_error": list(worst.values()),
        }
    )


def market_bars(n_symbols: int, n_bars: int, seed: int = 7) -> list[pd.DataFrame]:
    """``n_symbols`` frames of ``n_bars`` float32 bars (the loaded dtype) from the project's
    synthetic market (regimes, GARCH volatility, jumps, session gaps; ``data.synthesize``):
    one-minute bars when a series is longer than 40 years of daily bars could be, else
    daily bars. Plain random walks flatter every implementation (few new highs and lows,
    steady volatility), so the benchmark uses these."""
    from dask_pipeline.data import synthesize

    minutes = n_bars > 10_000
    days = -(-n_bars // 390) + 2 if minutes else n_bars + 2
    start = pd.Timestamp("2001-01-02")
    end = start + pd.offsets.BDay(days)
    universe = synthesize(n_symbols, start.date(), end.date(), "1min" if minutes else "1D", seed)
    return [bars.iloc[:n_bars].astype(np.float32) for bars in universe.values()]


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """This machine's memory bandwidth as NumPy sees it: bytes read + written per second
    copying a ``n_bytes`` array (the ceiling for a pass that streams bars in and features out)."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    best = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * n_bytes / best


def _seconds(func) -> float:
    import time

    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def bench_features(
    shapes: list[tuple[int, int]] = ((1, 859_200), (100, 5_000)),
    repeats: int = 5,
    exactness_bars: int = 10_000_000,
) -> pd.DataFrame:
    """Throughput of the fused feature passes against pandas and TA-Lib, per shape.

    Every implementation turns each float32 bar frame into one float32 feature frame, on
    one core with the JIT warm; seconds are the median of ``repeats`` interleaved passes
    over all frames (``median_seconds``).

    Parameters
    ----------
    shapes
        ``(symbols, bars)`` pairs, each from :func:`market_bars`.
    repeats
        Timed passes per implementation.
    exactness_bars
        Length of the drifting series of the rolling-std exactness check (0 skips it);
        its table is in ``result.attrs["std_exactness"]``.

    Returns
    -------
    DataFrame
        One row per (shape, implementation, feature set): ``columns``, ``seconds``,
        ``bar_features_per_s`` (bars x columns / seconds), ``gb_per_s`` (effective memory
        bandwidth: the float32 bar frames read plus the float32 feature frames written,
        per second) and ``ours_speedup`` (our throughput on that set over this row's).
        ``result.attrs["copy_gb_per_s"]`` is the machine's copy bandwidth for scale.
    """
    from dask_pipeline.features import compute, feature_columns
    from dask_pipeline.features.spec import DEFAULT_INDICATORS

    shared = [spec for spec in DEFAULT_INDICATORS if spec.name in TALIB_SHARED]
    n_default, n_shared = len(feature_columns(None)), len(feature_columns(shared))
    runs = [
        ("dask-pipeline", "default", n_default, lambda b: compute(b)),
        ("pandas", "default", n_default, pandas_features),
        ("dask-pipeline", "TA-Lib subset", n_shared, lambda b: compute(b, shared)),
        ("TA-Lib", "TA-Lib subset", n_shared, talib_features),
    ]
    rows = []
    for n_symbols, n_bars in shapes:
        frames = market_bars(n_symbols, n_bars)
        bars = n_symbols * n_bars
        read = sum(frame.to_numpy().nbytes for frame in frames)
        for (implementation, feature_set, n_columns, _), seconds in zip(
            runs, median_seconds([run for *_, run in runs], frames, repeats)
        ):
            rows.append({
                "shape": f"{n_symbols} x {n_bars:,}",
                "implementation": implementation,
                "feature_set": feature_set,
                "columns": n_columns,
                "seconds": seconds,
                "bar_features_per_s": bars * n_columns / seconds,
                "gb_per_s": (read + bars * n_columns * 4) / seconds / 1e9,
            })
    result = pd.DataFrame(rows)
    ours = result[result.implementation == "dask-pipeline"].set_index(["shape", "feature_set"])["bar_features_per_s"]
    result["ours_speedup"] = [
        ours.loc[(shape, feature_set)] / speed
        for shape, feature_set, speed in zip(result["shape"], result.feature_set, result.bar_features_per_s)
    ]
    result.attrs["copy_gb_per_s"] = copy_bandwidth() / 1e9
    if exactness_bars:
        result.attrs["std_exactness"] = std_exactness(exactness_bars)
    return result


def format_features_table(df: pd.DataFrame) -> str:
    """A plain-text table per shape of :func:`bench_features`' result (and its exactness check)."""
    shown = df.assign(
        seconds=df.seconds.map("{:.4f}".format),
        bar_features_per_s=df.bar_features_per_s.map(lambda v: f"{v / 1e6:,.1f} M"),
        gb_per_s=df.gb_per_s.map("{:.2f}".format),
        ours_speedup=df.ours_speedup.map("{:.2f}x".format),
    )
    text = shown.to_string(index=False)
    if "copy_gb_per_s" in df.attrs:
        text += f"\n\nthis machine copies {df.attrs['copy_gb_per_s']:.1f} GB/s (read + written) with NumPy"
    exactness = df.attrs.get("std_exactness")
    if exactness is not None:
        shown = exactness.assign(max_rel_error=exactness.max_rel_error.map("{:.2e}".format))
        text += (
            "\n\nrolling std on a random walk drifting 100 -> 0.03, vs two-pass:\n"
            + shown.to_string(index=False)
        )
    return text
