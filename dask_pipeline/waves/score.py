"""Fibonacci score of impulses and corrections, written once against ``xp`` (numpy or cupy).

A ratio ``x`` is scored against Fibonacci targets ``t`` with a relative tolerance
``tol``: ``closeness = 1 / (1 + min over t of ((x - t) * scale_t)**2)`` with
``scale_t = 1 / (tol * t)`` -- 1 on a target, 0.5 at ``tol * t`` from it, towards 0 far
away (the best target wins; one division, not one per target). Only ``+ - * /`` and
comparisons are used, each one IEEE-rounded, so numpy, cupy and the numba kernel give
bit-identical scores when they apply the same operations in the same order (they do:
``kernels.py`` spells out this module's formulas), and top-k tie-breaks agree.

Impulse sub-scores (signed prices ``q0..q5``, bar positions ``t0..t5``, wave ``k``
length ``len_k = |q_k - q_{k-1}|``, duration ``T_k = t_k - t_{k-1}``):

- ``wave2``: ``len2 / len1`` against 0.5 and 0.618;
- ``wave3``: ``len3 / len1`` against 1.618 and 2.618;
- ``wave4``: ``len4 / len3`` against 0.236 and 0.382;
- ``wave5``: the better of ``len5 / len1`` against 1.0 and ``len5 / (q3 - q0)`` against 0.618;
- ``time``: ``0.5 * closeness(T4 / T2; 1.0, 1.618)`` plus ``0.5 *`` the better of
  ``T5 / T1`` against 1.0 and ``T5 / (t3 - t0)`` against 0.618.

``score = min(1, sum_i w_i * sub_i)`` with the weights normalised to sum to 1, added
in the order above. An ABC correction scores the mean of B's retracement of A
(0.5, 0.618), C's length over A's (1.0, 1.618) and the depth of C into the impulse
(0.382, 0.5, 0.618), all with the ``correction`` tolerance.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from dask_pipeline.waves.spec import WavesConfig

SUBSCORES = ("wave2", "wave3", "wave4", "wave5", "time")

#: (ratio, targets, tolerance key), in the order of ``ScoreParams`` rows.
RATIOS = (
    ("len2/len1", (0.5, 0.618), "wave2"),
    ("len3/len1", (1.618, 2.618), "wave3"),
    ("len4/len3", (0.236, 0.382), "wave4"),
    ("len5/len1", (1.0,), "wave5"),
    ("len5/(q3-q0)", (0.618,), "wave5"),
    ("T4/T2", (1.0, 1.618), "time"),
    ("T5/T1", (1.0,), "time"),
    ("T5/(t3-t0)", (0.618,), "time"),
)

CORRECTION_RATIOS = (
    ("B/A", (0.5, 0.618)),
    ("C/A", (1.0, 1.618)),
    ("depth", (0.382, 0.5, 0.618)),
)

_MAX_TARGETS = 3


class ScoreParams(NamedTuple):
    """Scoring constants as arrays (what the kernels take).

    ``centers[r, j]`` / ``scales[r, j]`` (``1 / (tol * target)``) for the ``counts[r]`` targets
    of ratio ``r`` (``RATIOS`` order); ``weights`` of ``SUBSCORES``, normalised. The
    ``correction_*`` arrays hold the same for ``CORRECTION_RATIOS``.
    """

    centers: np.ndarray
    scales: np.ndarray
    counts: np.ndarray
    weights: np.ndarray
    correction_centers: np.ndarray
    correction_scales: np.ndarray
    correction_counts: np.ndarray


def score_params(spec: WavesConfig) -> ScoreParams:
    """The scoring constants of ``spec``."""
    tol = spec.score_tolerances
    rows = [(targets, getattr(tol, key)) for _, targets, key in RATIOS]
    centers, scales, counts = _tables(rows)
    weights = np.array([getattr(spec.score_weights, s) for s in SUBSCORES], dtype=np.float64)
    c_centers, c_scales, c_counts = _tables([(targets, tol.correction) for _, targets in CORRECTION_RATIOS])
    return ScoreParams(centers, scales, counts, weights / weights.sum(), c_centers, c_scales, c_counts)


def _tables(rows: list[tuple[tuple[float, ...], float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centers = np.ones((len(rows), _MAX_TARGETS), dtype=np.float64)
    scales = np.ones((len(rows), _MAX_TARGETS), dtype=np.float64)
    counts = np.zeros(len(rows), dtype=np.int64)
    for r, (targets, tol) in enumerate(rows):
        for j, target in enumerate(targets):
            centers[r, j] = target
            scales[r, j] = 1.0 / (tol * target)
        counts[r] = len(targets)
    return centers, scales, counts


def closeness(xp: Any, x: Any, centers: np.ndarray, scales: np.ndarray, count: int) -> Any:
    """``1 / (1 + min_j ((x - centers[j]) * scales[j])**2)`` over the first ``count`` targets."""
    nearest = xp.full_like(x, xp.inf)
    for j in range(int(count)):
        z = (x - float(centers[j])) * float(scales[j])
        nearest = xp.minimum(nearest, z * z)
    return 1.0 / (1.0 + nearest)


def impulse_subscores(xp: Any, q: Any, t: Any, params: ScoreParams) -> Any:
    """Sub-scores ``(..., 5)`` (``SUBSCORES`` order) of impulses with signed prices ``q`` and
    bar positions ``t`` (both ``(..., 6)``, float64). Meaningful where the rules hold
    (lengths and durations positive); elsewhere finite garbage, never an error."""
    q0, q1, q2, q3, q4, q5 = (q[..., i] for i in range(6))
    t0, t1, t2, t3, t4, t5 = (t[..., i] for i in range(6))
    one = xp.ones_like(q0)
    len1 = _positive(xp, q1 - q0, one)
    len2 = q1 - q2
    len3 = _positive(xp, q3 - q2, one)
    len4 = q3 - q4
    len5 = q5 - q4
    span13 = _positive(xp, q3 - q0, one)
    dur1 = _positive(xp, t1 - t0, one)
    dur2 = _positive(xp, t2 - t1, one)
    dur4 = t4 - t3
    dur5 = t5 - t4
    dur13 = _positive(xp, t3 - t0, one)
    ratios = (len2 / len1, len3 / len1, len4 / len3, len5 / len1, len5 / span13, dur4 / dur2, dur5 / dur1, dur5 / dur13)
    c = [closeness(xp, x, params.centers[r], params.scales[r], params.counts[r]) for r, x in enumerate(ratios)]
    time = 0.5 * c[5] + 0.5 * xp.maximum(c[6], c[7])
    return xp.stack([c[0], c[1], c[2], xp.maximum(c[3], c[4]), time], axis=-1)


def combine(xp: Any, subscores: Any, weights: np.ndarray) -> Any:
    """``min(1, w0*s0 + w1*s1 + ...)``, added left to right."""
    total = float(weights[0]) * subscores[..., 0]
    for i in range(1, len(SUBSCORES)):
        total = total + float(weights[i]) * subscores[..., i]
    return xp.minimum(total, 1.0)


def correction_score(xp: Any, q0: Any, q5: Any, qa: Any, qb: Any, qc: Any, params: ScoreParams) -> Any:
    """Score of A-B-C corrections after impulses from ``q0`` to ``q5`` (meaningful where valid)."""
    one = xp.ones_like(q0)
    a_len = _positive(xp, q5 - qa, one)
    depth_den = _positive(xp, q5 - q0, one)
    ratios = ((qb - qa) / a_len, (qb - qc) / a_len, (q5 - qc) / depth_den)
    c = [
        closeness(xp, x, params.correction_centers[r], params.correction_scales[r], params.correction_counts[r])
        for r, x in enumerate(ratios)
    ]
    return (c[0] + c[1] + c[2]) / 3.0


def _positive(xp: Any, x: Any, one: Any) -> Any:
    # Denominators are positive wherever the rules hold; elsewhere avoid 0/0 warnings.
    return xp.where(x > 0, x, one)
