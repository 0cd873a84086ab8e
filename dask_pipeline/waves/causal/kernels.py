"""Numba kernel of the causal wave features: the best confirmed impulse at every bar.

One sweep over the bars. When a pivot is confirmed, the candidates ending at it -- the
only new ones, since every other pivot of theirs was confirmed before -- are enumerated
backwards from it (the end of wave 4, then of wave 3, ... the start of wave 1), each
inequality of the hard rules checked as soon as its pivots are chosen, so a broken
prefix drops its whole subtree; the valid ones are scored once with the scan's own
arithmetic (``waves.kernels.impulse_subscores_nb`` and ``score.combine``'s order: bit
for bit the scan's scores) and stored. The best stays the best until its start leaves
the lookback, new candidates being compared with it as they arrive; only then are the
stored candidates still inside the lookback searched again. When the store fills up,
candidates whose start has left the lookback (they never count again) are dropped
before it grows, so memory follows the candidates inside the lookback, not the history.
``reference.causal_best_py`` defines the result; the tests hold this kernel to it at
every bar.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dask_pipeline.waves.kernels import impulse_subscores_nb


@njit(cache=True)
def _better(score, ids, i, j):
    """Candidate ``i`` ranks before ``j``: a higher score, ties to the smaller pivot ids
    (lexicographic: the scan's candidate order inside a window)."""
    if score[i] != score[j]:
        return score[i] > score[j]
    for c in range(6):
        if ids[i, c] != ids[j, c]:
            return ids[i, c] < ids[j, c]
    return False


@njit(cache=True)
def _store(ids, score, m, a0, a1, a2, a3, a4, a5, value):
    """Append one candidate (the caller made room); returns the new count."""
    ids[m, 0] = a0
    ids[m, 1] = a1
    ids[m, 2] = a2
    ids[m, 3] = a3
    ids[m, 4] = a4
    ids[m, 5] = a5
    score[m] = value
    return m + 1


@njit(cache=True)
def _room(ids, score, m, cur, lo, cut, pos, keep_all):
    """Make room for one more candidate: drop those whose start is at or before bar ``cut``
    (unless ``keep_all``), and double the arrays if still more than half full.

    Returns ``(ids, score, m, cur, lo)``: ``cur`` (the current best's row) renumbered, and
    ``lo`` 0 after a drop (the rows before it ended before an earlier cut: all dropped).
    """
    if m < score.shape[0]:
        return ids, score, m, cur, lo
    if not keep_all:
        lo = 0
        kept = 0
        for i in range(m):
            if pos[ids[i, 0]] > cut:
                if i == cur:
                    cur = kept
                ids[kept] = ids[i]
                score[kept] = score[i]
                kept += 1
        m = kept
    if 2 * m > score.shape[0]:
        grown_ids = np.empty((2 * score.shape[0], 6), dtype=np.int64)
        grown_ids[:m] = ids[:m]
        grown_score = np.empty(2 * score.shape[0], dtype=np.float64)
        grown_score[:m] = score[:m]
        ids, score = grown_ids, grown_score
    return ids, score, m, cur, lo


@njit(cache=True)
def _add_ending_at(a5, cut, pos, price, kind, up_to, centers, scales, counts, weights, ids, score, m, cur, lo, sub,
                   keep_all):  # fmt: skip
    """Score and store every valid impulse whose wave 5 ends at pivot ``a5`` and whose
    pivots all lie after bar ``cut``; returns the store, its new count, how many were
    added, and ``cur``/``lo`` as ``_room`` left them."""
    added = 0
    sign = 1.0 * kind[a5]  # wave 5 ends at a high in a bullish impulse (+1), at a low in a bearish one
    q5 = sign * price[a5]
    t5 = float(pos[a5])
    for k5 in range(up_to):
        a4 = a5 - 2 * k5 - 1
        if a4 < 4 or pos[a4] <= cut:
            break  # earlier choices only reach further back
        q4 = sign * price[a4]
        if not q5 > q4:
            continue
        for k4 in range(up_to):
            a3 = a4 - 2 * k4 - 1
            if a3 < 3 or pos[a3] <= cut:
                break
            q3 = sign * price[a3]
            if not (q3 > q4 and q5 > q3):
                continue
            for k3 in range(up_to):
                a2 = a3 - 2 * k3 - 1
                if a2 < 2 or pos[a2] <= cut:
                    break
                q2 = sign * price[a2]
                if not q2 < q3:
                    continue
                for k2 in range(up_to):
                    a1 = a2 - 2 * k2 - 1
                    if a1 < 1 or pos[a1] <= cut:
                        break
                    q1 = sign * price[a1]
                    if not (q1 > q2 and q3 > q1 and q4 > q1):
                        continue
                    for k1 in range(up_to):
                        a0 = a1 - 2 * k1 - 1
                        if a0 < 0 or pos[a0] <= cut:
                            break
                        q0 = sign * price[a0]
                        if not (q0 < q1 and q2 > q0):
                            continue
                        if (q3 - q2 < q1 - q0) and (q3 - q2 < q5 - q4):
                            continue  # wave 3 is the shortest
                        impulse_subscores_nb(
                            q0, q1, q2, q3, q4, q5,
                            float(pos[a0]), float(pos[a1]), float(pos[a2]), float(pos[a3]), float(pos[a4]), t5,
                            centers, scales, counts, sub,
                        )  # fmt: skip
                        total = weights[0] * sub[0]
                        for i in range(1, 5):
                            total = total + weights[i] * sub[i]
                        ids, score, m, cur, lo = _room(ids, score, m, cur, lo, cut, pos, keep_all)
                        m = _store(ids, score, m, a0, a1, a2, a3, a4, a5, min(total, 1.0))
                        added += 1
    return ids, score, m, added, cur, lo


@njit(cache=True)
def causal_best_nb(pos, price, kind, confirm, n_bars, lookback, up_to, centers, scales, counts, weights, keep_all):
    """The best confirmed impulse at every bar.

    Parameters
    ----------
    pos, price, kind, confirm
        The zigzag's pivots (``pivots.zigzag_confirmed_nb``): bar, price, +1 high / -1 low,
        and the bar that confirmed each (``n_bars`` for the running extreme: never).
    n_bars
        Bars of the series.
    lookback
        A candidate counts at bar ``t`` while its start lies after ``t - lookback``.
    up_to
        Each wave ends at one of the next ``up_to`` pivots of its kind.
    centers, scales, counts, weights
        ``score.ScoreParams``.
    keep_all
        Keep every valid candidate of the history (else only those still inside the lookback).

    Returns
    -------
    (best_ids, best_score, ids, score, n_scored)
        Per bar, the best impulse's 6 pivot ids (start, ends of waves 1-5; -1 where none)
        and score (0 where none); the stored candidates ``ids`` ``(m, 6)`` and ``score``
        in order of confirmation (all of them with ``keep_all``); how many were scored.
    """
    n_piv = pos.shape[0]
    ids = np.empty((64, 6), dtype=np.int64)
    score = np.empty(64, dtype=np.float64)
    sub = np.empty(5, dtype=np.float64)
    best_ids = np.full((n_bars, 6), -1, dtype=np.int64)
    best_score = np.zeros(n_bars, dtype=np.float64)
    m = 0
    n_scored = 0
    cur = -1  # the best candidate inside the lookback
    lo = 0  # candidates before ``lo`` end before the lookback: never needed again
    nxt = 0  # the next pivot to be confirmed
    for t in range(n_bars):
        cut = t - lookback
        if cur >= 0 and pos[ids[cur, 0]] <= cut:
            cur = -1
            while lo < m and pos[ids[lo, 5]] <= cut:
                lo += 1
            for i in range(lo, m):
                if pos[ids[i, 0]] > cut and (cur < 0 or _better(score, ids, i, cur)):
                    cur = i
        while nxt < n_piv and confirm[nxt] <= t:
            ids, score, m, added, cur, lo = _add_ending_at(nxt, cut, pos, price, kind, up_to, centers, scales,
                                                           counts, weights, ids, score, m, cur, lo, sub,
                                                           keep_all)  # fmt: skip
            n_scored += added
            for i in range(m - added, m):
                if cur < 0 or _better(score, ids, i, cur):
                    cur = i
            nxt += 1
        if cur >= 0:
            best_ids[t] = ids[cur]
            best_score[t] = score[cur]
    return best_ids, best_score, ids[:m].copy(), score[:m].copy(), n_scored
