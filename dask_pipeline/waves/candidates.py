"""Candidate impulses and their enumeration order; the ``xp`` (numpy / cupy) scorer.

Enumeration order (every backend, and the reference, follows it):

    window (scan order) -> start pivot (time order) -> k1 -> k2 -> k3 -> k4 -> k5

where wave ``j`` ends ``2 * k_j + 1`` pivots after wave ``j - 1`` (``k_j < up_to``; ``k_j``
swings are skipped inside the wave), ``k1`` varies slowest. A combination is a
*candidate* of the window when its last pivot lies in the window; its *ordinal* is its
position among the window's candidates in this order. Only the first
``max_combinations`` candidates of a window are evaluated. The direction follows the
start pivot: a low starts a bullish impulse, a high a bearish one.

Top-k per window keeps the valid candidates with the highest score, ties to the lower
ordinal: the order ``(-score, ordinal)``. Scores are bit-identical across backends
(``score.py``), so the kept candidates are too.

The ``xp`` scorer lays candidates out as rows of (window, start pivot) by ``up_to**5``
skip combinations, ``gpu_batch_size`` candidates per batch; each row's ordinals follow
from the number of candidates in the rows before it (counted, not enumerated), rules
are masks, scores vectorised, and each row's top-k is cut by ``partition``. The few
survivors go to the host, where each window's top-k is taken from its rows' top-ks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_pipeline.waves.kernels import completion_counts_nb
from dask_pipeline.waves.rules import correction_valid, impulse_valid
from dask_pipeline.waves.score import ScoreParams, combine, correction_score, impulse_subscores
from dask_pipeline.waves.windows import Plan


@dataclass(frozen=True)
class TopK:
    """The candidates kept in each window, rows sorted by (window, -score, ordinal).

    ``window`` indexes the plan's scanned windows; ``pivots`` are 6 pivot ids (start,
    ends of waves 1-5); ``n_candidates[w]`` counts the candidates window ``w`` evaluated.
    """

    window: np.ndarray
    ordinal: np.ndarray
    pivots: np.ndarray
    subscores: np.ndarray
    score: np.ndarray
    n_candidates: np.ndarray

    @classmethod
    def select(cls, window, ordinal, pivots, subscores, score, n_candidates, k: int) -> TopK:
        """Sort rows by (window, -score, ordinal) and keep the first ``k`` of each window."""
        order = np.lexsort((ordinal, -score, window))
        sorted_window = window[order]
        rank = np.arange(order.shape[0]) - np.searchsorted(sorted_window, sorted_window, side="left")
        keep = order[rank < k]
        return cls(window[keep], ordinal[keep], pivots[keep], subscores[keep], score[keep], n_candidates)


def skip_offsets(up_to: int) -> np.ndarray:
    """``(up_to**5, 5)`` pivot offsets of the ends of waves 1-5 from the start, in enumeration order."""
    ks = np.indices((up_to,) * 5).reshape(5, -1).T
    return np.cumsum(2 * ks + 1, axis=1).astype(np.int64)


def start_rows(plan: Plan, up_to: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (window, start pivot) row: window index, last pivot id of the window, how many
    candidates the row holds, and the ordinal of its first one (the candidates of the
    window's earlier rows) -- counted with ``completion_counts_nb``, not enumerated."""
    n_starts = np.diff(plan.ptr)
    window = np.repeat(np.arange(plan.n_windows, dtype=np.int64), n_starts)
    last = plan.hi[window] - 1
    widest = int((plan.hi - plan.lo).max()) if plan.n_windows else 0
    per_row = completion_counts_nb(up_to, widest)[5][last - plan.starts]
    before = np.cumsum(per_row) - per_row
    base = before - np.append(before, 0)[plan.ptr[:-1]].repeat(n_starts)
    return window, last, per_row, base


def n_candidates(plan: Plan, up_to: int, cap: int) -> np.ndarray:
    """Candidates each window evaluates (at most ``cap``), without enumerating them."""
    window, _, per_row, _ = start_rows(plan, up_to)
    return np.minimum(np.bincount(window, weights=per_row, minlength=plan.n_windows), cap).astype(np.int64)


def top_candidates_xp(xp: Any, plan: Plan, up_to: int, cap: int, k: int, batch_size: int, params: ScoreParams) -> TopK:
    """Top-k impulses of every window of ``plan``, computed with array module ``xp``."""
    window, last, _, base = start_rows(plan, up_to)
    starts = plan.starts
    offsets = skip_offsets(up_to)
    g = offsets.shape[0]
    rows_per_batch = max(1, batch_size // g)
    price = xp.asarray(plan.price)
    pos = xp.asarray(plan.pos.astype(np.float64))
    sign = xp.asarray(-plan.kind.astype(np.float64))
    offsets_x = xp.asarray(offsets)
    parts: list[tuple[np.ndarray, ...]] = []
    for r0 in range(0, starts.shape[0], rows_per_batch):
        r1 = min(r0 + rows_per_batch, starts.shape[0])
        a0 = xp.asarray(starts[r0:r1])
        ends = a0[:, None, None] + offsets_x[None]  # (rows, g, 5)
        fits = ends[:, :, 4] <= xp.asarray(last[r0:r1])[:, None]
        ordinal = xp.asarray(base[r0:r1])[:, None] + xp.cumsum(fits.astype(xp.int64), axis=1) - 1
        evaluated = fits & (ordinal < cap)
        pid = xp.concatenate([xp.broadcast_to(a0[:, None, None], (r1 - r0, g, 1)), ends], axis=2)
        pid = xp.where(evaluated[:, :, None], pid, a0[:, None, None])
        q = sign[a0][:, None, None] * price[pid]
        valid = evaluated & impulse_valid(xp, q)
        sub = impulse_subscores(xp, q, pos[pid], params)
        score = xp.where(valid, combine(xp, sub, params.weights), -xp.inf)
        take = _row_top_k(xp, score, valid, min(k, g))
        rows, cols = xp.nonzero(take)
        parts.append(
            tuple(
                _to_host(a)
                for a in (rows + r0, ordinal[rows, cols], pid[rows, cols], sub[rows, cols], score[rows, cols])
            )
        )
    if parts:
        row, ordinal, pid, sub, score = (np.concatenate(p) for p in zip(*parts))
    else:
        row, ordinal = np.zeros(0, np.int64), np.zeros(0, np.int64)
        pid, sub, score = np.zeros((0, 6), np.int64), np.zeros((0, 5)), np.zeros(0)
    return TopK.select(window[row], ordinal, pid, sub, score, n_candidates(plan, up_to, cap), k)


def _row_top_k(xp: Any, score: Any, valid: Any, k: int) -> Any:
    """Mask of each row's top ``k`` valid entries by (-score, column); columns are in ordinal order."""
    kth = -xp.partition(-score, k - 1, axis=1)[:, k - 1]
    better = score > kth[:, None]
    tie = valid & (score == kth[:, None])
    room = k - better.sum(axis=1, dtype=xp.int64)
    return valid & (better | (tie & (xp.cumsum(tie.astype(xp.int64), axis=1) <= room[:, None])))


def _to_host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def best_corrections(
    xp: Any, plan: Plan, pivots: np.ndarray, up_to: int, params: ScoreParams
) -> tuple[np.ndarray, np.ndarray]:
    """The best A-B-C correction after each impulse (rows of 6 pivot ids).

    Corrections use every pivot of the series after the impulse, not only the window's;
    each leg ends ``2k + 1`` pivots after the previous one (``k < up_to``), combinations in
    lexicographic order; the best is the highest score, ties to the first.

    Returns
    -------
    (pivots, score)
        ``(n, 3)`` pivot ids of A, B, C ends (-1 where none is valid) and the score (NaN there).
    """
    n = pivots.shape[0]
    ks = np.indices((up_to,) * 3).reshape(3, -1).T
    offsets = xp.asarray(np.cumsum(2 * ks + 1, axis=1).astype(np.int64))
    n_piv = plan.price.shape[0]
    if n == 0 or n_piv == 0:
        return np.full((n, 3), -1, dtype=np.int64), np.full(n, np.nan)
    price = xp.asarray(plan.price)
    sign = xp.asarray(-plan.kind.astype(np.float64))
    p0 = xp.asarray(pivots[:, 0])
    p5 = xp.asarray(pivots[:, 5])
    ends = p5[:, None, None] + offsets[None]  # (n, combos, 3)
    fits = ends[:, :, 2] < n_piv
    ends = xp.where(fits[:, :, None], ends, p5[:, None, None])
    s = sign[p0][:, None]
    q0 = s * price[p0][:, None]
    q5 = s * price[p5][:, None]
    qa, qb, qc = (s * price[ends[:, :, j]] for j in range(3))
    valid = fits & correction_valid(xp, q0, q5, qa, qb, qc)
    score = xp.where(valid, correction_score(xp, q0, q5, qa, qb, qc, params), -xp.inf)
    best = xp.argmax(score, axis=1)
    rows = xp.arange(n)
    found = _to_host(valid[rows, best])
    chosen = _to_host(ends[rows, best])
    best_score = _to_host(score[rows, best])
    return np.where(found[:, None], chosen, -1), np.where(found, best_score, np.nan)
