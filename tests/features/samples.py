"""Bar generators for the feature tests: ordinary, heavy-tailed, drifting, gappy, flat."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bars_from_close(close: np.ndarray, seed: int = 0, start: str = "2024-01-02") -> pd.DataFrame:
    """OHLCV bars (float64, UTC minute index) around a close path."""
    rng = np.random.default_rng(seed)
    n = len(close)
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.004, (2, n)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + spread[0]),
            "low": np.minimum(open_, close) * (1.0 - spread[1]),
            "close": close,
            "volume": rng.integers(0, 5_000, n).astype(np.float64),
        },
        index=pd.date_range(start, periods=n, freq="min", tz="UTC", name="timestamp"),
    )


def make_bars(kind: str = "normal", n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Synthetic bars of one kind.

    normal:   geometric random walk, 1% per bar
    heavy:    Student-t (3 dof) returns, 1% scale: jumps of 10-20% happen
    drifting: random walk drifting from 100 down to 0.03
    gappy:    normal, with whole-bar NaN runs (1, 3 and 7 bars) far apart
    flat:     normal, with a 60-bar stretch of constant prices and zero volume
    """
    rng = np.random.default_rng(seed)
    if kind == "heavy":
        steps = 0.01 * rng.standard_t(3, n)
    elif kind == "drifting":
        steps = rng.normal(0.0, 0.01, n)
        steps += (np.log(0.03 / 100.0) - steps.sum()) / n
    else:
        steps = rng.normal(0.0, 0.01, n)
    bars = bars_from_close(100.0 * np.exp(np.cumsum(steps)), seed)
    if kind == "gappy":
        for start, length in ((n // 4, 1), (n // 2, 3), (3 * n // 4, 7)):
            bars.iloc[start : start + length] = np.nan
    elif kind == "flat":
        start = n // 3
        level = bars.close.iloc[start]
        bars.iloc[start : start + 60, :4] = level
        bars.iloc[start : start + 60, 4] = 0.0
    return bars


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
