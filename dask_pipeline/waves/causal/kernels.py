"""Numba kernel of the causal wave features: the best confirmed impulse at every bar.

One sweep over the bars. When a pivot is confirmed, the candidates ending at it -- the
only new ones, since every other pivot of theirs was confirmed before -- are enumerated
backwards from it (the end of wave 4, then of wave 3, ... the start of wave 1), each
inequality of the hard rules checked as soon as its pivots are chosen, so a broken
prefix drops its whole subtree; the valid ones are scored once with the scan's own
arithmetic (``waves.kernels.impulse_subscores_nb`` and ``score.combine``'s order: bit
for bit the scan's scores).

Which of them can still be the best later? A candidate leaves the lookback when its start
does. So one that ranks below another already known whose start is no earlier can never
be the best again: whenever it counts, the other counts too. The kernel keeps only the
candidates no other dominates that way -- the *front*: ordered by start, each ranking
below every one before it (a sliding-window maximum whose entries arrive out of order).
The best at a bar is the front's first entry once those whose start has left the
lookback are dropped. The front holds at most one candidate per start pivot, so memory
and the work per candidate follow the pivots inside the lookback, not the history.
``reference.causal_best_py`` defines the result; the tests hold this kernel to it at
every bar.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dask_pipeline.waves.kernels import impulse_subscores_nb


@njit(cache=True)
def _ranks_before(score_a, ids_a, score_b, ids_b):
    """Candidate ``a`` ranks before ``b``: a higher score, ties to the smaller pivot ids
    (lexicographic: the scan's candidate order inside a window)."""
    if score_a != score_b:
        return score_a > score_b
    for c in range(6):
        if ids_a[c] != ids_b[c]:
            return ids_a[c] < ids_b[c]
    return False


@njit(cache=True)
def _admit(front_ids, front_score, k, cand, value, pos):
    """Put a new candidate into the front of ``k`` entries (see the module doc); returns the new size.

    Entries are ordered by start bar, strictly increasing, each ranking below the ones
    before it. The new one is dropped if the first entry starting no earlier ranks before
    it; otherwise it goes in at its start, and the entries before it that rank below it,
    and one with the same start, are dropped (it dominates them).
    """
    p = pos[cand[0]]
    lo, j = 0, k  # binary search: j is the first entry starting at or after p
    while lo < j:
        mid = (lo + j) // 2
        if pos[front_ids[mid, 0]] < p:
            lo = mid + 1
        else:
            j = mid
    if j < k and _ranks_before(front_score[j], front_ids[j], value, cand):
        return k
    r = j  # the first entry kept after the new one
    if r < k and pos[front_ids[r, 0]] == p:
        r += 1
    i = j  # the new one's place: after the entries that rank before it
    while i > 0 and _ranks_before(value, cand, front_score[i - 1], front_ids[i - 1]):
        i -= 1
    tail = k - r
    if i + 1 < r:
        for s in range(tail):  # shift left, front to back
            front_ids[i + 1 + s] = front_ids[r + s]
            front_score[i + 1 + s] = front_score[r + s]
    elif i + 1 > r:
        for s in range(tail - 1, -1, -1):  # shift right, back to front
            front_ids[i + 1 + s] = front_ids[r + s]
            front_score[i + 1 + s] = front_score[r + s]
    front_ids[i] = cand
    front_score[i] = value
    return i + 1 + tail


@njit(cache=True)
def _keep(all_ids, all_score, m, cand, value):
    """Append to the record of every candidate, doubling it when full; returns it and the new count."""
    if m == all_score.shape[0]:
        grown_ids = np.empty((2 * m, 6), dtype=np.int64)
        grown_ids[:m] = all_ids
        grown_score = np.empty(2 * m, dtype=np.float64)
        grown_score[:m] = all_score
        all_ids, all_score = grown_ids, grown_score
    all_ids[m] = cand
    all_score[m] = value
    return all_ids, all_score, m + 1


@njit(cache=True)
def _add_ending_at(a5, cut, pos, price, kind, up_to, centers, scales, counts, weights, front_ids, front_score, k,
                   keep_all, all_ids, all_score, m):  # fmt: skip
    """Score every valid impulse whose wave 5 ends at pivot ``a5`` and whose pivots all lie
    after bar ``cut``, admit each to the front (and the record with ``keep_all``).

    Returns ``(k, all_ids, all_score, m, scored)``: the front's size, the record and its
    count, and how many were scored.
    """
    cand = np.empty(6, dtype=np.int64)
    sub = np.empty(5, dtype=np.float64)
    scored = 0
    cand[5] = a5
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
                        value = min(total, 1.0)
                        cand[0] = a0
                        cand[1] = a1
                        cand[2] = a2
                        cand[3] = a3
                        cand[4] = a4
                        k = _admit(front_ids, front_score, k, cand, value, pos)
                        if keep_all:
                            all_ids, all_score, m = _keep(all_ids, all_score, m, cand, value)
                        scored += 1
    return k, all_ids, all_score, m, scored


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
        Also return every valid candidate of the history.

    Returns
    -------
    (best_ids, best_score, ids, score, n_scored)
        Per bar, the best impulse's 6 pivot ids (start, ends of waves 1-5; -1 where none)
        and score (0 where none); with ``keep_all`` every valid candidate ``ids`` ``(m, 6)``
        and ``score`` in order of confirmation (else empty); how many were scored.
    """
    n_piv = pos.shape[0]
    front_ids = np.empty((n_piv + 1, 6), dtype=np.int64)  # at most one entry per start pivot
    front_score = np.empty(n_piv + 1, dtype=np.float64)
    all_ids = np.empty((64, 6), dtype=np.int64)
    all_score = np.empty(64, dtype=np.float64)
    best_ids = np.full((n_bars, 6), -1, dtype=np.int64)
    best_score = np.zeros(n_bars, dtype=np.float64)
    k = 0
    m = 0
    n_scored = 0
    nxt = 0  # the next pivot to be confirmed
    for t in range(n_bars):
        cut = t - lookback
        gone = 0
        while gone < k and pos[front_ids[gone, 0]] <= cut:
            gone += 1
        if gone:
            for s in range(k - gone):
                front_ids[s] = front_ids[gone + s]
                front_score[s] = front_score[gone + s]
            k -= gone
        while nxt < n_piv and confirm[nxt] <= t:
            k, all_ids, all_score, m, scored = _add_ending_at(
                nxt, cut, pos, price, kind, up_to, centers, scales, counts, weights, front_ids, front_score, k,
                keep_all, all_ids, all_score, m,
            )  # fmt: skip
            n_scored += scored
            nxt += 1
        if k:
            best_ids[t] = front_ids[0]
            best_score[t] = front_score[0]
    return best_ids, best_score, all_ids[:m].copy(), all_score[:m].copy(), n_scored
