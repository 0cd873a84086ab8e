"""CUDA backend: the numba CPU kernel's scan as a numba-cuda kernel, one thread block per window.

Same candidates, ordinals, scores and top-k as ``kernels.scan_windows_nb`` (and so as the
plain-Python reference), computed in parallel:

- **Layout.** One block per window, of any symbol: a launch takes the windows of many
  symbols at once (their pivots concatenated), and everything stays on the device until the
  top-k comes back. The block first copies its window's pivot prices and bar positions into
  shared memory; every candidate reads them from there.
- **Enumeration on the fly.** The window's candidate space is laid out flat as (start
  pivot, ``k1..k5``) -- ``up_to**5`` skip tuples per start, ``k1`` slowest, the documented
  order (``candidates.py``). Thread ``t`` takes flat indices ``t, t + threads, ...``. A
  tuple is a candidate when its last pivot lies in the window; its ordinal is counted, not
  enumerated: the candidates of the window's earlier start pivots plus, level by level, the
  completions of the earlier sibling prefixes (``completion_counts_nb``). Only ordinals below
  ``max_combinations`` are evaluated. Rules and score live in registers.
- **Top-k per block.** Threads advance in rounds of one candidate each. A round's valid
  candidates that beat the block's current k-th best (by ``(-score, ordinal)``) are
  *contenders*; when there are any (``syncthreads_count``), each contender and each kept entry
  computes its rank in the merged order and writes itself there in a second buffer (ping-pong
  in global memory, so ``top_k_per_window`` may be large). Most rounds have no contender once
  the top-k has filled, and cost one barrier. At the end, the kept entries' pivots and
  sub-scores are recomputed from their flat index (the same functions, so the same bits).

**Bit-identical scores.** The score formulas spell out ``score.py`` operation by operation,
as ``kernels.py`` does. On a GPU the compiler would fuse a product and a following sum into
one fused multiply-add (one rounding instead of two: a last-ulp difference from the CPU);
every product here goes through ``_mul`` -- libdevice's ``dmul_rn``, which is never fused --
and divisions are IEEE-rounded (numba-cuda's default ``fastmath=False``). Under numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) ``_mul`` is a plain Python product, also rounded once.

Windows whose pivots do not fit the shared-memory budget (``max_shared_pivots``, about 2,900
pivots: a window of tens of thousands of bars) are scanned by the CPU kernel instead; the
result is the same.

This module imports ``numba.cuda`` at import time (the simulator swaps the module-level
``cuda`` name), so import it only when the ``cuda`` backend is used.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numba import cuda, float64, int64

from dask_pipeline.waves.kernels import completion_counts_nb

#: Threads per block: enough to keep a multiprocessor busy, few enough that a round's
#: contenders (one per thread) are cheap to rank.
THREADS = 128
#: Dynamic shared memory a block may use without opting in to more (bytes, every CUDA GPU).
SHARED_BYTES = 48 * 1024
#: Sorts after every real candidate: the ordinal of a non-candidate in a round.
_NO_ORDINAL = 1 << 62


def _simulated() -> bool:
    try:
        from numba.cuda.core import config  # numba-cuda
    except ImportError:  # numba's own, deprecated CUDA target
        from numba.core import config
    return bool(config.ENABLE_CUDASIM)


SIMULATED = _simulated()

if SIMULATED:

    def _mul(a, b):
        return a * b

else:
    from numba.cuda import libdevice

    # A product that is never contracted into a fused multiply-add (see the module docstring).
    _mul = libdevice.dmul_rn


def max_shared_pivots(threads: int = THREADS) -> int:
    """The most pivots a window may hold to be scanned on the GPU (prices and positions in shared memory)."""
    return (SHARED_BYTES // 8 - 3 * threads) // 2


@cuda.jit(device=True, inline=True)
def _closeness(x, centers, scales, counts, r):
    nearest = math.inf
    for j in range(counts[r]):
        z = _mul(x - centers[r, j], scales[r, j])
        z2 = _mul(z, z)
        if z2 < nearest:
            nearest = z2
    return 1.0 / (1.0 + nearest)


@cuda.jit(device=True, inline=True)
def _wave2(q0, q1, q2, centers, scales, counts):
    return _closeness((q1 - q2) / (q1 - q0), centers, scales, counts, 0)


@cuda.jit(device=True, inline=True)
def _wave3(q0, q1, q2, q3, centers, scales, counts):
    return _closeness((q3 - q2) / (q1 - q0), centers, scales, counts, 1)


@cuda.jit(device=True, inline=True)
def _wave4(q2, q3, q4, centers, scales, counts):
    return _closeness((q3 - q4) / (q3 - q2), centers, scales, counts, 2)


@cuda.jit(device=True, inline=True)
def _wave5(q0, q1, q3, q4, q5, centers, scales, counts):
    len5 = q5 - q4
    c3 = _closeness(len5 / (q1 - q0), centers, scales, counts, 3)
    c4 = _closeness(len5 / (q3 - q0), centers, scales, counts, 4)
    return max(c3, c4)


@cuda.jit(device=True, inline=True)
def _time(t0, t1, t2, t3, t4, t5, centers, scales, counts):
    c5 = _closeness((t4 - t3) / (t2 - t1), centers, scales, counts, 5)
    c6 = _closeness((t5 - t4) / (t1 - t0), centers, scales, counts, 6)
    c7 = _closeness((t5 - t4) / (t3 - t0), centers, scales, counts, 7)
    return _mul(0.5, c5) + _mul(0.5, max(c6, c7))


@cuda.jit(device=True, inline=True)
def _precedes(score_a, ordinal_a, score_b, ordinal_b):
    """Whether candidate a ranks before b: higher score first, ties to the lower ordinal."""
    return score_a > score_b or (score_a == score_b and ordinal_a < ordinal_b)


@cuda.jit(device=True, inline=True)
def _pivot(starts, s0, s, flat_row, up_to, level):
    """Pivot id ending wave ``level`` (0 = the start) of row ``s``'s skip tuple ``flat_row``."""
    a = starts[s0 + s]
    div = up_to**4
    for _ in range(level):
        k = (flat_row // div) % up_to
        a += 2 * k + 1
        div //= up_to
    return a


@cuda.jit
def scan_windows_cuda(
    price, tpos, kind, lo, hi, starts, ptr, table, up_to, cap, k, centers, scales, counts, weights, width,
    buf_score, buf_ord, buf_flat, out_n, out_ord, out_pid, out_sub, out_score, out_cand,
):  # fmt: skip
    """Top-k impulses of window ``blockIdx.x`` (``kernels.scan_windows_nb``'s outputs, one row per block).

    ``price``/``tpos``/``kind``: every symbol's pivots, concatenated (positions as float64);
    ``lo``/``hi``/``starts``/``ptr``: per window, in those global pivot ids; ``table``:
    ``completion_counts_nb(up_to, >= widest window)``; ``width``: the most pivots of a window
    in this launch (the shared-memory stride); ``buf_*``: ``(2, windows, k)`` scratch.
    """
    w = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    fsh = cuda.shared.array(0, dtype=float64)
    ish = cuda.shared.array(0, dtype=int64)  # the same bytes: int slots after the float ones
    base = lo[w]
    n_piv = hi[w] - base
    last = hi[w] - 1
    for i in range(tid, n_piv, nt):
        fsh[i] = price[base + i]
        fsh[width + i] = tpos[base + i]
    r_score = 2 * width
    r_ord = r_score + nt
    r_flat = r_ord + nt

    s0 = ptr[w]
    n_starts = ptr[w + 1] - s0
    combos = up_to**5
    # Start pivots whose first candidate's ordinal is below the cap; every thread counts alike.
    total = 0
    rows = 0
    for j in range(n_starts):
        if total >= cap:
            break
        total += table[5, last - starts[s0 + j]]
        rows += 1
    if tid == 0:
        out_cand[w] = min(total, cap)
    n_flat = rows * combos

    n_top = 0
    cur = 0
    row = 0  # this thread's current start pivot, and the candidates of the rows before it
    row_base = 0
    cuda.syncthreads()
    for f0 in range(0, n_flat, nt):
        f = f0 + tid
        score = -math.inf
        ordinal = _NO_ORDINAL
        if f < n_flat:
            s = f // combos
            while row < s:
                row_base += table[5, last - starts[s0 + row]]
                row += 1
            c = f - s * combos
            a0 = starts[s0 + s]
            a1 = _pivot(starts, s0, s, c, up_to, 1)
            a2 = _pivot(starts, s0, s, c, up_to, 2)
            a3 = _pivot(starts, s0, s, c, up_to, 3)
            a4 = _pivot(starts, s0, s, c, up_to, 4)
            a5 = _pivot(starts, s0, s, c, up_to, 5)
            if a5 <= last:
                # The ordinal: the row's earlier candidates, plus for each wave the completions
                # of the smaller skips at that wave (its earlier siblings, all inside the window).
                ordinal = row_base
                a = a0
                div = up_to**4
                for level in range(1, 6):
                    kj = (c // div) % up_to
                    div //= up_to
                    for kk in range(kj):
                        ordinal += table[5 - level, last - (a + 2 * kk + 1)]
                    a += 2 * kj + 1
            if ordinal >= cap:
                ordinal = _NO_ORDINAL  # not a candidate of this window, or past the cap
            else:
                sign = -1.0 * kind[a0]
                q0 = _mul(sign, fsh[a0 - base])
                q1 = _mul(sign, fsh[a1 - base])
                q2 = _mul(sign, fsh[a2 - base])
                q3 = _mul(sign, fsh[a3 - base])
                q4 = _mul(sign, fsh[a4 - base])
                q5 = _mul(sign, fsh[a5 - base])
                if (
                    q1 > q0 and q2 < q1 and q2 > q0 and q3 > q2 and q3 > q1 and q4 < q3 and q4 > q1
                    and q5 > q4 and q5 > q3 and not ((q3 - q2 < q1 - q0) and (q3 - q2 < q5 - q4))
                ):  # fmt: skip
                    t0 = fsh[width + a0 - base]
                    t1 = fsh[width + a1 - base]
                    t2 = fsh[width + a2 - base]
                    t3 = fsh[width + a3 - base]
                    t4 = fsh[width + a4 - base]
                    t5 = fsh[width + a5 - base]
                    total_score = _mul(weights[0], _wave2(q0, q1, q2, centers, scales, counts))
                    total_score = total_score + _mul(weights[1], _wave3(q0, q1, q2, q3, centers, scales, counts))
                    total_score = total_score + _mul(weights[2], _wave4(q2, q3, q4, centers, scales, counts))
                    total_score = total_score + _mul(weights[3], _wave5(q0, q1, q3, q4, q5, centers, scales, counts))
                    t_sub = _time(t0, t1, t2, t3, t4, t5, centers, scales, counts)
                    score = min(total_score + _mul(weights[4], t_sub), 1.0)
                else:
                    ordinal = _NO_ORDINAL
        contender = 0
        if ordinal != _NO_ORDINAL:
            if n_top < k:
                contender = 1
            elif _precedes(score, ordinal, buf_score[cur, w, k - 1], buf_ord[cur, w, k - 1]):
                contender = 1
        n_new = cuda.syncthreads_count(contender)
        if n_new == 0:
            continue
        if contender == 0:
            score = -math.inf
            ordinal = _NO_ORDINAL
        fsh[r_score + tid] = score
        ish[r_ord + tid] = ordinal
        ish[r_flat + tid] = f
        cuda.syncthreads()
        nxt = 1 - cur
        if contender == 1:
            # Rank among this round's contenders, plus the kept entries before it (binary search:
            # they are sorted).
            rank = 0
            for j in range(nt):
                if _precedes(fsh[r_score + j], ish[r_ord + j], score, ordinal):
                    rank += 1
            lo_i = 0
            hi_i = n_top
            while lo_i < hi_i:
                mid = (lo_i + hi_i) // 2
                if _precedes(buf_score[cur, w, mid], buf_ord[cur, w, mid], score, ordinal):
                    lo_i = mid + 1
                else:
                    hi_i = mid
            rank += lo_i
            if rank < k:
                buf_score[nxt, w, rank] = score
                buf_ord[nxt, w, rank] = ordinal
                buf_flat[nxt, w, rank] = f
        for j in range(tid, n_top, nt):
            kept_score = buf_score[cur, w, j]
            kept_ord = buf_ord[cur, w, j]
            rank = j
            for i in range(nt):
                if _precedes(fsh[r_score + i], ish[r_ord + i], kept_score, kept_ord):
                    rank += 1
            if rank < k:
                buf_score[nxt, w, rank] = kept_score
                buf_ord[nxt, w, rank] = kept_ord
                buf_flat[nxt, w, rank] = buf_flat[cur, w, j]
        n_top = min(n_top + n_new, k)
        cur = nxt
        cuda.syncthreads()

    # The kept candidates' pivots and sub-scores, recomputed from their flat index.
    for j in range(tid, n_top, nt):
        f = buf_flat[cur, w, j]
        s = f // combos
        c = f - s * combos
        a0 = _pivot(starts, s0, s, c, up_to, 0)
        a1 = _pivot(starts, s0, s, c, up_to, 1)
        a2 = _pivot(starts, s0, s, c, up_to, 2)
        a3 = _pivot(starts, s0, s, c, up_to, 3)
        a4 = _pivot(starts, s0, s, c, up_to, 4)
        a5 = _pivot(starts, s0, s, c, up_to, 5)
        sign = -1.0 * kind[a0]
        q0 = _mul(sign, price[a0])
        q1 = _mul(sign, price[a1])
        q2 = _mul(sign, price[a2])
        q3 = _mul(sign, price[a3])
        q4 = _mul(sign, price[a4])
        q5 = _mul(sign, price[a5])
        out_sub[w, j, 0] = _wave2(q0, q1, q2, centers, scales, counts)
        out_sub[w, j, 1] = _wave3(q0, q1, q2, q3, centers, scales, counts)
        out_sub[w, j, 2] = _wave4(q2, q3, q4, centers, scales, counts)
        out_sub[w, j, 3] = _wave5(q0, q1, q3, q4, q5, centers, scales, counts)
        out_sub[w, j, 4] = _time(tpos[a0], tpos[a1], tpos[a2], tpos[a3], tpos[a4], tpos[a5], centers, scales, counts)
        out_pid[w, j, 0] = a0
        out_pid[w, j, 1] = a1
        out_pid[w, j, 2] = a2
        out_pid[w, j, 3] = a3
        out_pid[w, j, 4] = a4
        out_pid[w, j, 5] = a5
        out_score[w, j] = buf_score[cur, w, j]
        out_ord[w, j] = buf_ord[cur, w, j]
    if tid == 0:
        out_n[w] = n_top


def scan_windows_gpu(pos, price, kind, lo, hi, starts, ptr, up_to, cap, k, centers, scales, counts, weights,
                     threads: int = THREADS):  # fmt: skip
    """``kernels.scan_windows_nb`` on the GPU: the same arguments (host arrays), the same outputs.

    The windows may come from several symbols (pivots concatenated, ids global). One launch,
    one copy in and one copy out. ``threads`` per block (a power of two is not required).
    """
    nw = lo.shape[0]
    out_n = np.zeros(nw, dtype=np.int64)
    out_ord = np.zeros((nw, k), dtype=np.int64)
    out_pid = np.zeros((nw, k, 6), dtype=np.int64)
    out_sub = np.zeros((nw, k, 5), dtype=np.float64)
    out_score = np.zeros((nw, k), dtype=np.float64)
    out_cand = np.zeros(nw, dtype=np.int64)
    if nw == 0:
        return out_n, out_ord, out_pid, out_sub, out_score, out_cand
    width = int((hi - lo).max())
    table = completion_counts_nb(up_to, width)
    d = {
        name: cuda.to_device(np.ascontiguousarray(a))
        for name, a in (
            ("price", price.astype(np.float64)), ("tpos", pos.astype(np.float64)), ("kind", kind.astype(np.float64)),
            ("lo", lo.astype(np.int64)), ("hi", hi.astype(np.int64)), ("starts", starts.astype(np.int64)),
            ("ptr", ptr.astype(np.int64)), ("table", table), ("centers", centers), ("scales", scales),
            ("counts", counts.astype(np.int64)), ("weights", weights),
        )
    }  # fmt: skip
    outs = [cuda.to_device(a) for a in (out_n, out_ord, out_pid, out_sub, out_score, out_cand)]
    bufs = [cuda.device_array((2, nw, k), dtype=t) for t in (np.float64, np.int64, np.int64)]
    shared = (2 * width + 3 * threads) * 8
    with warnings.catch_warnings():
        # numba-cuda's advice on small grids: a symbol with few windows is a small launch by nature.
        warnings.filterwarnings("ignore", message=".*under-utilization.*")
        scan_windows_cuda[nw, threads, 0, shared](
            d["price"], d["tpos"], d["kind"], d["lo"], d["hi"], d["starts"], d["ptr"], d["table"],
            up_to, cap, k, d["centers"], d["scales"], d["counts"], d["weights"], width, *bufs, *outs,
        )  # fmt: skip
    return tuple(o.copy_to_host() for o in outs)
