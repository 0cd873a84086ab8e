"""The plain-Python reference of the wave scan: slow, literal, written to be read.

Every backend is tested against these functions: the zigzag, the pre-score, the rules,
the scores, and a brute-force scan that enumerates every candidate of a window in the
documented order (``candidates.py``), checks every rule and scores what passes. No
NumPy in the arithmetic: Python floats are IEEE doubles, and the formulas apply the
same operations in the same order as ``score.py``, so scores match bit for bit.
(NumPy only packs the brute-force results into the backends' ``TopK``.)
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from dask_pipeline.waves.candidates import TopK
from dask_pipeline.waves.rules import CORRECTION_RULES, IMPULSE_RULES
from dask_pipeline.waves.score import SUBSCORES, ScoreParams
from dask_pipeline.waves.windows import Plan


def atr_py(high: list[float], low: list[float], close: list[float], period: int) -> list[float]:
    """Wilder ATR from bar 0: the running mean of true ranges for ``period`` bars, then Wilder."""
    out: list[float] = []
    total = 0.0
    for i in range(len(high)):
        if i == 0:
            true_range = high[0] - low[0]
        else:
            true_range = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        if i < period:
            total += true_range
            out.append(total / (i + 1))
        else:
            out.append(out[-1] + (true_range - out[-1]) / period)
    return out


def pivots_py(
    high: list[float], low: list[float], close: list[float], mode: str, threshold: float, atr_period: int
) -> list[tuple[int, float, int]]:
    """Zigzag pivots ``(bar, price, kind)`` with kind +1 for a high, -1 for a low."""
    atr = atr_py(high, low, close, atr_period)

    def reversal(extreme: float, i: int) -> float:
        return threshold * extreme if mode == "percent" else threshold * atr[i]

    pivots: list[tuple[int, float, int]] = []
    direction = 0  # 0: not known yet, +1: rising (tracking a high), -1: falling (tracking a low)
    top, top_bar = high[0], 0
    bottom, bottom_bar = low[0], 0
    extreme, extreme_bar = 0.0, 0
    for i in range(len(high)):
        if direction == 0:
            if high[i] > top:
                top, top_bar = high[i], i
            if low[i] < bottom:
                bottom, bottom_bar = low[i], i
            if bottom_bar < top_bar and top - bottom >= reversal(bottom, i):
                pivots.append((bottom_bar, bottom, -1))
                direction, extreme, extreme_bar = 1, top, top_bar
            elif top_bar < bottom_bar and top - bottom >= reversal(top, i):
                pivots.append((top_bar, top, 1))
                direction, extreme, extreme_bar = -1, bottom, bottom_bar
        elif direction == 1:
            if high[i] > extreme:
                extreme, extreme_bar = high[i], i
            elif extreme - low[i] >= reversal(extreme, i):
                pivots.append((extreme_bar, extreme, 1))
                direction, extreme, extreme_bar = -1, low[i], i
        else:
            if low[i] < extreme:
                extreme, extreme_bar = low[i], i
            elif high[i] - extreme >= reversal(extreme, i):
                pivots.append((extreme_bar, extreme, -1))
                direction, extreme, extreme_bar = 1, high[i], i
    if direction != 0:
        pivots.append((extreme_bar, extreme, direction))
    return pivots


def broken_impulse_rules(q: list[float]) -> list[str]:
    """The impulse rules that signed prices ``q0..q5`` break (``rules.IMPULSE_RULES`` order)."""
    q0, q1, q2, q3, q4, q5 = q
    wave1, wave3, wave5 = q1 - q0, q3 - q2, q5 - q4
    holds = {
        "alternation": q1 > q0 and q2 < q1 and q3 > q2 and q4 < q3 and q5 > q4,
        "wave2_retrace": q2 > q0,
        "wave3_shortest": not (wave3 < wave1 and wave3 < wave5),
        "wave4_overlap": q4 > q1,
        "progress": q3 > q1 and q5 > q3,
    }
    return [rule for rule in IMPULSE_RULES if not holds[rule]]


def broken_correction_rules(q0: float, q5: float, qa: float, qb: float, qc: float) -> list[str]:
    """The correction rules that A, B, C ends ``qa qb qc`` after an impulse ``q0 -> q5`` break."""
    holds = {
        "alternation": qa < q5 and qb > qa and qc < qb,
        "b_within": qb < q5,
        "c_beyond_a": qc < qa,
        "above_start": qc > q0,
    }
    return [rule for rule in CORRECTION_RULES if not holds[rule]]


def closeness_py(x: float, targets: list[float], scales: list[float]) -> float:
    """How close ``x`` is to the nearest target: ``1 / (1 + ((x - t) * scale)**2)``, ``scale = 1 / (tol * t)``."""
    nearest = math.inf
    for target, scale in zip(targets, scales):
        z = (x - target) * scale
        nearest = min(nearest, z * z)
    return 1.0 / (1.0 + nearest)


def impulse_score_py(q: list[float], t: list[float], params: ScoreParams) -> tuple[dict[str, float], float]:
    """Sub-scores (by name) and score of one valid impulse: signed prices and bar positions."""

    def near(row: int, x: float) -> float:
        count = int(params.counts[row])
        centers = [float(c) for c in params.centers[row][:count]]
        return closeness_py(x, centers, [float(s) for s in params.scales[row][:count]])

    wave1, wave2, wave3, wave4, wave5 = q[1] - q[0], q[1] - q[2], q[3] - q[2], q[3] - q[4], q[5] - q[4]
    time1, time2, time4, time5 = t[1] - t[0], t[2] - t[1], t[4] - t[3], t[5] - t[4]
    subscores = {
        "wave2": near(0, wave2 / wave1),
        "wave3": near(1, wave3 / wave1),
        "wave4": near(2, wave4 / wave3),
        "wave5": max(near(3, wave5 / wave1), near(4, wave5 / (q[3] - q[0]))),
        "time": 0.5 * near(5, time4 / time2) + 0.5 * max(near(6, time5 / time1), near(7, time5 / (t[3] - t[0]))),
    }
    total = float(params.weights[0]) * subscores[SUBSCORES[0]]
    for i in range(1, len(SUBSCORES)):
        total = total + float(params.weights[i]) * subscores[SUBSCORES[i]]
    return subscores, min(total, 1.0)


def correction_score_py(q0: float, q5: float, qa: float, qb: float, qc: float, params: ScoreParams) -> float:
    """Score of one valid A-B-C correction after an impulse ``q0 -> q5``."""

    def near(row: int, x: float) -> float:
        count = int(params.correction_counts[row])
        centers = [float(c) for c in params.correction_centers[row][:count]]
        return closeness_py(x, centers, [float(s) for s in params.correction_scales[row][:count]])

    wave_a = q5 - qa
    return (near(0, (qb - qa) / wave_a) + near(1, (qb - qc) / wave_a) + near(2, (q5 - qc) / (q5 - q0))) / 3.0


def window_candidates_py(starts: list[int], last: int, up_to: int, cap: int) -> list[tuple[int, list[int]]]:
    """Every candidate of one window, ``(ordinal, pivot ids)``, in enumeration order, capped."""
    candidates: list[tuple[int, list[int]]] = []
    for start in starts:
        for skips in itertools.product(range(up_to), repeat=5):
            ids = [start]
            for k in skips:
                ids.append(ids[-1] + 2 * k + 1)
            if ids[-1] <= last:
                if len(candidates) == cap:
                    return candidates
                candidates.append((len(candidates), ids))
    return candidates


def scan_window_py(
    price: list[float], pos: list[int], kind: list[int], starts: list[int], last: int,
    up_to: int, cap: int, k: int, params: ScoreParams,
) -> tuple[list[tuple[float, int, list[int], dict[str, float]]], int]:  # fmt: skip
    """Brute force over one window: ``(top-k as (score, ordinal, pivot ids, sub-scores), candidates)``."""
    scored = []
    candidates = window_candidates_py(starts, last, up_to, cap)
    for ordinal, ids in candidates:
        sign = -kind[ids[0]]  # a low starts a bullish impulse
        q = [sign * price[i] for i in ids]
        if broken_impulse_rules(q):
            continue
        subscores, score = impulse_score_py(q, [float(pos[i]) for i in ids], params)
        scored.append((score, ordinal, ids, subscores))
    scored.sort(key=lambda row: (-row[0], row[1]))
    return scored[:k], len(candidates)


def pre_score_components_py(
    high: list[float], low: list[float], close: list[float], amount: list[float], pivot_prices: list[float]
) -> dict[str, float]:
    """The four pre-score components of one window (``windows.py``), given its pivots' prices."""
    n = len(high)
    span = max(high) - min(low)
    mean_amount = sum(amount) / n
    out = {"pivots": min(1.0, len(pivot_prices) / 12.0), "range": 0.0, "volatility": 0.0, "trend": 0.0}
    if mean_amount > 0:
        out["range"] = min(1.0, span / (4.0 * mean_amount))
        if len(pivot_prices) >= 2:
            swings = [abs(b - a) for a, b in zip(pivot_prices, pivot_prices[1:])]
            out["volatility"] = min(1.0, sum(swings) / len(swings) / (2.0 * mean_amount))
    if span > 0 and n > 1:
        x_mean = (n - 1) / 2.0
        c_mean = sum(close) / n
        slope = sum((i - x_mean) * (c - c_mean) for i, c in enumerate(close)) / sum((i - x_mean) ** 2 for i in range(n))
        out["trend"] = min(1.0, abs(slope) * (n - 1) / span)
    return out



def top_candidates_py(
    plan: Plan, up_to: int, cap: int, k: int, params: ScoreParams, windows: list[int] | None = None
) -> TopK:
    """Brute-force top-k of the plan's windows (all, or those listed) in the backends' ``TopK`` form."""
    price, pos, kind = plan.price.tolist(), plan.pos.tolist(), plan.kind.tolist()
    windows = list(range(plan.n_windows)) if windows is None else windows
    rows = []
    n_candidates = np.zeros(plan.n_windows, dtype=np.int64)
    for w in windows:
        starts = plan.starts[plan.ptr[w] : plan.ptr[w + 1]].tolist()
        top, n_candidates[w] = scan_window_py(price, pos, kind, starts, int(plan.hi[w]) - 1, up_to, cap, k, params)
        rows += [(w, ordinal, ids, [sub[name] for name in SUBSCORES], score) for score, ordinal, ids, sub in top]
    return TopK(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.int64).reshape(-1, 6),
        np.array([r[3] for r in rows], dtype=np.float64).reshape(-1, 5),
        np.array([r[4] for r in rows], dtype=np.float64),
        n_candidates,
    )
