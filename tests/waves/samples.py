"""Hand-built series for the wave tests: straight legs between chosen pivots."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: A textbook bullish impulse: wave 2 retraces 0.618 of wave 1, wave 3 is 1.618 x wave 1,
#: wave 4 retraces 0.382 of wave 3, wave 5 equals wave 1; waves 2 and 4 last equally
#: long, wave 5 as long as wave 1.
TEXTBOOK = [100.0, 120.0, 120.0 - 0.618 * 20.0, 0.0, 0.0, 0.0]
TEXTBOOK[3] = TEXTBOOK[2] + 1.618 * 20.0
TEXTBOOK[4] = TEXTBOOK[3] - 0.382 * (TEXTBOOK[3] - TEXTBOOK[2])
TEXTBOOK[5] = TEXTBOOK[4] + 20.0
TEXTBOOK_BARS = [20, 20, 32, 20, 20]  # bars per wave

#: Impulses that break exactly one rule each (and its signed prices as the reference sees them).
BROKEN = {
    "wave2_retrace": [100.0, 120.0, 98.0, 140.0, 127.0, 150.0],
    "wave3_shortest": [100.0, 120.0, 110.0, 125.0, 121.0, 145.0],
    "wave4_overlap": [100.0, 120.0, 108.0, 140.0, 118.0, 150.0],
    "progress": [100.0, 120.0, 108.0, 140.0, 128.0, 138.0],
    # Wave 2 ends above wave 1 (possible only when a wave skips swings): no series of 6 pivots.
    "alternation": [100.0, 110.0, 112.0, 130.0, 115.0, 140.0],
}


def leg_bars(points: list[float], bars: list[int] | int = 20, start: str = "2020-01-01") -> pd.DataFrame:
    """Bars whose closes run in straight lines between ``points`` (``bars[i]`` bars per leg),
    with high = low = close, so the zigzag's pivots are exactly the points."""
    legs = [bars] * (len(points) - 1) if isinstance(bars, int) else list(bars)
    path = [points[0]]
    for a, b, n in zip(points, points[1:], legs):
        path += list(a + (b - a) * np.arange(1, n + 1) / n)
    close = np.array(path)
    close[np.cumsum([0, *legs])] = points  # vertices exactly, not a + (b - a) * n / n
    index = pd.date_range(start, periods=close.size, freq="D", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index)


def vertex_times(bars: pd.DataFrame, legs: list[int]) -> list[pd.Timestamp]:
    """Timestamps of the leg ends of a ``leg_bars`` series."""
    return list(bars.index[np.cumsum([0, *legs])])


def random_walk(n: int, seed: int, vol: float = 0.01) -> pd.DataFrame:
    """Random-walk bars with a high-low range (float64)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    spread = np.abs(rng.normal(0.0, vol / 2, (2, n))) * close
    index = pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": close, "high": close + spread[0], "low": close - spread[1], "close": close, "volume": 1.0}, index=index
    )


def one_window_plan(
    prices: list[float], first_kind: int = -1, positions: list[int] | None = None, starts: list[int] | None = None
):
    """A ``Plan`` of one window holding exactly these pivots (alternating kinds from ``first_kind``)."""
    from dask_pipeline.waves.windows import Plan

    n = len(prices)
    kind = np.array([first_kind * (-1) ** i for i in range(n)], dtype=np.int8)
    pos = np.arange(n, dtype=np.int64) * 10 if positions is None else np.asarray(positions, dtype=np.int64)
    starts = np.array([0] if starts is None else starts, dtype=np.int64)
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    return Plan(
        pos, np.asarray(prices, dtype=np.float64), kind, one(0), one(0), one(int(pos[-1]) + 1), one(0), one(n),
        np.array([1.0]), starts, np.array([0, starts.size], dtype=np.int64),
    )  # fmt: skip


#: Swings leading into the textbook impulse, and an ABC correction after it whose B retraces
#: 0.618 of A, whose C equals A, and which ends 0.382 of the impulse below its top.
PREFIX = [125.0, 110.0, 116.0]
_A = 0.382 * (TEXTBOOK[5] - TEXTBOOK[0]) / 1.382
ABC = [TEXTBOOK[5] - _A, TEXTBOOK[5] - _A + 0.618 * _A, TEXTBOOK[5] - _A + 0.618 * _A - _A]
STORY_LEGS = [15, 15, 15, *TEXTBOOK_BARS, 15, 15, 15]


def textbook_story(direction: str = "up") -> tuple[pd.DataFrame, list[pd.Timestamp], list[float]]:
    """Bars of prefix swings, the textbook impulse and an ABC; the impulse's and ABC's pivot
    times and prices. ``down`` mirrors the prices (``300 - p``): a bearish impulse."""
    points = [*PREFIX, *TEXTBOOK, *ABC]
    if direction == "down":
        points = [300.0 - p for p in points]
    bars = leg_bars(points, STORY_LEGS)
    times = vertex_times(bars, STORY_LEGS)
    return bars, times[3:], points[3:]
