"""Numba CPU backend: enumerate candidate impulses on the fly, keep a top-k per window.

Same candidates, order and scores as the ``xp`` path (``candidates.py``), without ever
materialising a candidate. Waves are chosen one at a time in nested loops; as soon as
the pivots chosen so far break a rule (every rule is a conjunction of inequalities, and
each inequality is checked as soon as its pivots are known), the whole subtree is
rejected and the candidate counter jumps by the number of candidates in it that fit the
window (``completion_counts_nb``), so candidate indices and the ``max_combinations`` cap
match the brute-force enumeration exactly. The score formulas spell out ``score.py``
operation by operation, so scores are bit-identical. A valid candidate's score is summed
term by term and abandoned once even perfect remaining sub-scores could not lift it above
the window's k-th best (it could not have been kept); the sub-scores of waves 2-4 are
reused by candidates that share those pivots.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BOUND_SLACK = 1e-9  # far above the rounding of a few products and sums of numbers <= 1


@njit(cache=True)
def completion_counts_nb(up_to, max_budget):
    """``table[r, b]``: tuples of ``r`` wave offsets ``2k+1`` (``k < up_to``) summing to at most ``b``."""
    table = np.zeros((6, max_budget + 1), dtype=np.int64)
    for b in range(max_budget + 1):
        table[0, b] = 1
    for r in range(1, 6):
        for b in range(max_budget + 1):
            total = 0
            for k in range(up_to):
                step = 2 * k + 1
                if step > b:
                    break
                total += table[r - 1, b - step]
            table[r, b] = total
    return table


@njit(cache=True, inline="always")
def _closeness(x, centers, scales, counts, r):
    nearest = np.inf
    for j in range(counts[r]):
        z = (x - centers[r, j]) * scales[r, j]
        z2 = z * z
        if z2 < nearest:
            nearest = z2
    return 1.0 / (1.0 + nearest)


# One function per sub-score, used by the kernel and by ``impulse_subscores_nb`` alike; the
# operations and their order are those of ``score.impulse_subscores``.
@njit(cache=True, inline="always")
def _wave2_nb(q0, q1, q2, centers, scales, counts):
    return _closeness((q1 - q2) / (q1 - q0), centers, scales, counts, 0)


@njit(cache=True, inline="always")
def _wave3_nb(q0, q1, q2, q3, centers, scales, counts):
    return _closeness((q3 - q2) / (q1 - q0), centers, scales, counts, 1)


@njit(cache=True, inline="always")
def _wave4_nb(q2, q3, q4, centers, scales, counts):
    return _closeness((q3 - q4) / (q3 - q2), centers, scales, counts, 2)


@njit(cache=True, inline="always")
def _wave5_nb(q0, q1, q3, q4, q5, centers, scales, counts):
    len5 = q5 - q4
    c3 = _closeness(len5 / (q1 - q0), centers, scales, counts, 3)
    c4 = _closeness(len5 / (q3 - q0), centers, scales, counts, 4)
    return max(c3, c4)


@njit(cache=True, inline="always")
def _time_nb(t0, t1, t2, t3, t4, t5, centers, scales, counts):
    c5 = _closeness((t4 - t3) / (t2 - t1), centers, scales, counts, 5)
    c6 = _closeness((t5 - t4) / (t1 - t0), centers, scales, counts, 6)
    c7 = _closeness((t5 - t4) / (t3 - t0), centers, scales, counts, 7)
    return 0.5 * c5 + 0.5 * max(c6, c7)


@njit(cache=True)
def impulse_subscores_nb(q0, q1, q2, q3, q4, q5, t0, t1, t2, t3, t4, t5, centers, scales, counts, out):
    """Sub-scores of one valid impulse into ``out[0:5]`` (``score.impulse_subscores``, scalar form)."""
    out[0] = _wave2_nb(q0, q1, q2, centers, scales, counts)
    out[1] = _wave3_nb(q0, q1, q2, q3, centers, scales, counts)
    out[2] = _wave4_nb(q2, q3, q4, centers, scales, counts)
    out[3] = _wave5_nb(q0, q1, q3, q4, q5, centers, scales, counts)
    out[4] = _time_nb(t0, t1, t2, t3, t4, t5, centers, scales, counts)


@njit(cache=True)
def _offer(top_score, top_ord, top_pid, top_sub, n_top, k, score, ordinal, pid, sub):
    """Insert into a window's top-k, kept sorted by (-score, ordinal); returns the new size.

    Candidates arrive in increasing ordinal, so an equal score never displaces one already kept.
    """
    if n_top == k and not score > top_score[k - 1]:
        return n_top
    i = n_top if n_top < k else k - 1
    while i > 0 and score > top_score[i - 1]:
        top_score[i] = top_score[i - 1]
        top_ord[i] = top_ord[i - 1]
        top_pid[i, :] = top_pid[i - 1, :]
        top_sub[i, :] = top_sub[i - 1, :]
        i -= 1
    top_score[i] = score
    top_ord[i] = ordinal
    top_pid[i, :] = pid
    top_sub[i, :] = sub
    return min(n_top + 1, k)


@njit(cache=True)
def scan_windows_nb(pos, price, kind, lo, hi, starts, ptr, up_to, cap, k, centers, scales, counts, weights):
    """Top-k impulses of each window.

    Parameters
    ----------
    pos, price, kind
        The series' pivots (bar positions, prices, +1 high / -1 low).
    lo, hi
        Each window's pivots ``[lo, hi)``.
    starts, ptr
        Start pivots of window ``w``: ``starts[ptr[w]:ptr[w + 1]]``, in time order.
    up_to, cap, k
        Ends per wave, ``max_combinations``, ``top_k_per_window``.
    centers, scales, counts, weights
        ``score.ScoreParams``.

    Returns
    -------
    (n_top, ordinal, pivots, subscores, score, n_candidates)
        Per window: how many kept (``n_top[w]``), and for each kept candidate, best first,
        its index in the window's enumeration, its 6 pivot ids, 5 sub-scores and score;
        ``n_candidates[w]`` candidates were enumerated (at most ``cap``).
    """
    nw = lo.shape[0]
    widest = 0
    for w in range(nw):
        widest = max(widest, hi[w] - lo[w])
    table = completion_counts_nb(up_to, widest)
    out_n = np.zeros(nw, dtype=np.int64)
    out_ord = np.zeros((nw, k), dtype=np.int64)
    out_pid = np.zeros((nw, k, 6), dtype=np.int64)
    out_sub = np.zeros((nw, k, 5), dtype=np.float64)
    out_score = np.zeros((nw, k), dtype=np.float64)
    out_cand = np.zeros(nw, dtype=np.int64)
    pid = np.zeros(6, dtype=np.int64)
    sub = np.zeros(5, dtype=np.float64)
    rest = np.zeros(6, dtype=np.float64)  # rest[i]: the weights of sub-scores i and later
    for i in range(4, -1, -1):
        rest[i] = rest[i + 1] + weights[i]
    for w in range(nw):
        last = hi[w] - 1
        top_score = out_score[w]
        top_ord = out_ord[w]
        top_pid = out_pid[w]
        top_sub = out_sub[w]
        n_top = 0
        o = 0  # index of the next candidate in the window's enumeration
        done = False
        for si in range(ptr[w], ptr[w + 1]):
            if done:
                break
            a0 = starts[si]
            sign = -1.0 * kind[a0]  # a low starts a bullish impulse (+1), a high a bearish one (-1)
            q0 = sign * price[a0]
            t0 = float(pos[a0])
            for k1 in range(up_to):
                a1 = a0 + 2 * k1 + 1
                if a1 + 4 > last or done:
                    break
                q1 = sign * price[a1]
                if not q1 > q0:
                    o += table[4, last - a1]
                    done = o >= cap
                    continue
                t1 = float(pos[a1])
                for k2 in range(up_to):
                    a2 = a1 + 2 * k2 + 1
                    if a2 + 3 > last or done:
                        break
                    q2 = sign * price[a2]
                    if not (q2 < q1 and q2 > q0):
                        o += table[3, last - a2]
                        done = o >= cap
                        continue
                    have = 0  # sub-scores computed for this prefix
                    t2 = float(pos[a2])
                    for k3 in range(up_to):
                        a3 = a2 + 2 * k3 + 1
                        if a3 + 2 > last or done:
                            break
                        q3 = sign * price[a3]
                        if not (q3 > q2 and q3 > q1):
                            o += table[2, last - a3]
                            done = o >= cap
                            continue
                        have = min(have, 1)
                        t3 = float(pos[a3])
                        for k4 in range(up_to):
                            a4 = a3 + 2 * k4 + 1
                            if a4 + 1 > last or done:
                                break
                            q4 = sign * price[a4]
                            if not (q4 < q3 and q4 > q1):
                                o += table[1, last - a4]
                                done = o >= cap
                                continue
                            have = min(have, 2)
                            t4 = float(pos[a4])
                            for k5 in range(up_to):
                                a5 = a4 + 2 * k5 + 1
                                if a5 > last:
                                    break
                                if o >= cap:
                                    done = True
                                    break
                                ordinal = o
                                o += 1
                                q5 = sign * price[a5]
                                if not (q5 > q4 and q5 > q3):
                                    continue
                                if (q3 - q2 < q1 - q0) and (q3 - q2 < q5 - q4):
                                    continue  # wave 3 is the shortest
                                # The score, summed in score.combine's order; sub-scores of waves 2-4
                                # are kept while their pivots are (``have``). After each term the score
                                # is at most the sum so far plus the weights to come (sub-scores are
                                # <= 1): a candidate that cannot beat the k-th best stops there.
                                floor = top_score[k - 1] if n_top == k else -np.inf
                                if have < 1:
                                    sub[0] = _wave2_nb(q0, q1, q2, centers, scales, counts)
                                    have = 1
                                total = weights[0] * sub[0]
                                if total + rest[1] + _BOUND_SLACK <= floor:
                                    continue
                                if have < 2:
                                    sub[1] = _wave3_nb(q0, q1, q2, q3, centers, scales, counts)
                                    have = 2
                                total = total + weights[1] * sub[1]
                                if total + rest[2] + _BOUND_SLACK <= floor:
                                    continue
                                if have < 3:
                                    sub[2] = _wave4_nb(q2, q3, q4, centers, scales, counts)
                                    have = 3
                                total = total + weights[2] * sub[2]
                                if total + rest[3] + _BOUND_SLACK <= floor:
                                    continue
                                sub[3] = _wave5_nb(q0, q1, q3, q4, q5, centers, scales, counts)
                                total = total + weights[3] * sub[3]
                                if total + rest[4] + _BOUND_SLACK <= floor:
                                    continue
                                t5 = float(pos[a5])
                                sub[4] = _time_nb(t0, t1, t2, t3, t4, t5, centers, scales, counts)
                                score = min(total + weights[4] * sub[4], 1.0)
                                if not score > floor:
                                    continue
                                pid[0] = a0
                                pid[1] = a1
                                pid[2] = a2
                                pid[3] = a3
                                pid[4] = a4
                                pid[5] = a5
                                n_top = _offer(top_score, top_ord, top_pid, top_sub, n_top, k, score, ordinal, pid, sub)
        out_n[w] = n_top
        out_cand[w] = min(o, cap)
    return out_n, out_ord, out_pid, out_sub, out_score, out_cand
