"""The plain-Python definition of the causal wave features: slow, literal, written to be read.

At every bar ``t`` it runs the scan's zigzag (``waves.reference.pivots_py``) on the bars
up to ``t`` only, keeps the pivots confirmed by then (all but the last, running extreme),
enumerates the scan's candidates (``waves.reference.window_candidates_py``) over those
whose bar lies in the last ``lookback`` bars, drops those that break a hard rule
(``broken_impulse_rules``), scores the rest (``impulse_score_py``) and keeps the best:
the highest score, ties to the first in the scan's candidate order. Nothing here can
see a bar after ``t``. ``kernels.causal_best_nb`` is held to it at every bar.
"""

from __future__ import annotations

from dask_pipeline.waves.reference import broken_impulse_rules, impulse_score_py, pivots_py, window_candidates_py
from dask_pipeline.waves.score import ScoreParams

Pivot = tuple[int, float, int]


def confirmed_pivots_py(
    high: list[float], low: list[float], close: list[float], mode: str, threshold: float, atr_period: int
) -> list[Pivot]:
    """Pivots ``(bar, price, kind)`` known at the last of these bars: the zigzag's, less its running extreme."""
    return pivots_py(high, low, close, mode, threshold, atr_period)[:-1]


def best_impulse_py(
    pivots: list[Pivot], first: int, up_to: int, params: ScoreParams
) -> tuple[float, list[int]] | None:
    """The best valid impulse made of ``pivots[first:]``: ``(score, pivot ids)``, or None."""
    last = len(pivots) - 1
    starts = list(range(first, last + 1))
    best = None
    for _, ids in window_candidates_py(starts, last, up_to, len(starts) * up_to**5):
        sign = -pivots[ids[0]][2]  # a low starts a bullish impulse
        q = [sign * pivots[i][1] for i in ids]
        if broken_impulse_rules(q):
            continue
        _, score = impulse_score_py(q, [float(pivots[i][0]) for i in ids], params)
        if best is None or score > best[0]:  # strictly: ties keep the earlier candidate
            best = (score, ids)
    return best


def causal_best_py(
    high: list[float],
    low: list[float],
    close: list[float],
    mode: str,
    threshold: float,
    atr_period: int,
    lookback: int,
    up_to: int,
    params: ScoreParams,
) -> list[tuple[list[Pivot], tuple[float, list[int]] | None]]:
    """At every bar: the pivots confirmed by then, and the best impulse known then.

    The best is ``(score, pivot ids)`` (ids index those pivots) or None; a candidate
    counts when all six of its pivots lie in the last ``lookback`` bars (bar > t - lookback).
    """
    out: list[tuple[list[Pivot], tuple[float, list[int]] | None]] = []
    seen: dict[tuple, tuple[float, list[int]] | None] = {}  # same pivots considered, same answer
    for t in range(len(high)):
        pivots = confirmed_pivots_py(high[: t + 1], low[: t + 1], close[: t + 1], mode, threshold, atr_period)
        first = next((i for i, p in enumerate(pivots) if p[0] > t - lookback), len(pivots))
        key = (first, tuple(pivots[first:]))
        if key not in seen:
            seen[key] = best_impulse_py(pivots, first, up_to, params)
        out.append((pivots, seen[key]))
    return out
