"""Elliott waves as features that never look ahead: the best impulse known at each bar.

The scan (``waves.scan``) looks at a whole history with hindsight: its last pivot is the
running extreme, which later bars may still move, and an impulse ending at a pivot is
visible there before price has confirmed that pivot. This module asks, at every bar
``t``, only what a trader knew at the close of ``t``:

- **Pivots**: the scan's zigzag (``pivots.py``; ATR multiple or percent of price) over
  bars ``0..t``. A pivot is *confirmed* at the bar where price has reversed from it by
  the threshold (where the zigzag records it); the running extreme is not a pivot yet.
  The zigzag never revises a confirmed pivot, so the pivots confirmed by ``t`` are the
  first ones of every later bar's list and keep their ids.
- **Candidates**: the scan's impulses (``candidates.py``) over the confirmed pivots whose
  bars lie in the last ``lookback`` bars (bar ``> t - lookback``): six pivots, start and
  ends of waves 1-5, each wave ending ``2k + 1`` pivots after the previous one
  (``k < up_to``); bullish from a low, bearish from a high. Every such pivot may start
  one (the scan's ``max_start_points``, ``max_combinations`` and window pre-score are
  scan-time economies; here each new pivot adds only the few candidates ending at it).
- **Rules and score**: the scan's hard rules (``rules.py``) and Fibonacci score
  (``score.py``, default weights and tolerances), bit for bit the scan's numbers.
- **Best**: the highest score, ties to the smaller pivot ids (the scan's candidate order).

So a pattern appears at the bar that confirms its last pivot (wave 5's end), never
sooner, and stays until its start leaves the lookback or a better one is confirmed. At
the last bar the best equals the scan's top candidate of one window of ``lookback`` bars
ending there, planned over the same confirmed pivots with every pivot a start and no
filter or cap (the tests check this, and that every pattern reported at any bar is a
candidate the scan scores identically on the same pivots).

Features (float32, one value per bar): ``score`` of the best (0 when there is none),
``direction`` (+1 bullish, -1 bearish, 0 none) and ``position``: bars since the end of its
wave 5 (its last pivot), which is at least the bars that pivot took to be confirmed and
below ``lookback``; ``lookback`` itself when there is none. Bars with a missing (NaN)
high, low or close are skipped as if absent (the zigzag and the ATR run over the present
bars, ``position`` counts present bars) and their features are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dask_pipeline.errors import DataError
from dask_pipeline.waves.backends import get_backend
from dask_pipeline.waves.causal.kernels import causal_best_nb
from dask_pipeline.waves.pivots import PIVOT_MODES, atr_nb, reversal_amounts, zigzag_confirmed_nb
from dask_pipeline.waves.score import score_params
from dask_pipeline.waves.spec import WavesConfig
from dask_pipeline.waves.windows import plan_windows


@dataclass(frozen=True)
class CausalWaves:
    """The causal wave state of one gap-free series of ``n`` bars.

    ``pos``, ``price``, ``kind``, ``confirm``: the zigzag's pivots of the whole series (bar,
    price, +1 high / -1 low, confirming bar; ``n`` for the running extreme, never confirmed).
    Per bar, the best impulse's ``pivots`` ``(n, 6)`` (ids: start, ends of waves 1-5; -1
    where none), ``score`` (0 where none), ``direction`` (+1, -1, 0) and ``position`` (bars
    since its wave 5 ended; the lookback where none). ``n_scored``: valid impulses scored
    over the history; with ``keep_candidates``, all of them in ``candidates`` ``(m, 6)`` and
    ``candidate_score`` in order of confirmation (else None).
    """

    pos: np.ndarray
    price: np.ndarray
    kind: np.ndarray
    confirm: np.ndarray
    pivots: np.ndarray
    score: np.ndarray
    direction: np.ndarray
    position: np.ndarray
    n_scored: int
    candidates: np.ndarray | None = None
    candidate_score: np.ndarray | None = None

    @property
    def found(self) -> np.ndarray:
        """Per bar, whether there is a best impulse."""
        return self.pivots[:, 0] >= 0


def causal_waves(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    mode: str = "atr",
    threshold: float = 3.0,
    atr_period: int = 14,
    lookback: int = 500,
    up_to: int = 3,
    keep_candidates: bool = False,
) -> CausalWaves:
    """The best confirmed impulse at every bar of a gap-free series (see the module doc).

    Parameters
    ----------
    high, low, close
        Finite bar prices (any float dtype; computed in float64).
    mode, threshold, atr_period
        The zigzag: ``"atr"`` with an ATR multiple, or ``"percent"`` with a fraction of price.
    lookback
        Bars in which all six pivots of a counted impulse lie (the scan's ``window_bars``).
    up_to
        Each wave ends at one of the next ``up_to`` pivots of its kind (the scan's ``up_to``).
    keep_candidates
        Return every valid impulse of the history too (memory grows with the history;
        without, it follows the impulses inside the lookback).

    Returns
    -------
    CausalWaves

    Raises
    ------
    DataError
        A non-finite price (the row and column named).
    """
    if mode not in PIVOT_MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(PIVOT_MODES)}")
    arrays = []
    for name, values in (("high", high), ("low", low), ("close", close)):
        values = np.ascontiguousarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(f"row {bad[0]}: {name} is {values[bad[0]]}; the wave features need finite prices")
        arrays.append(values)
    high, low, close = arrays
    n = high.shape[0]
    params = score_params(WavesConfig())
    atr = atr_nb(high, low, close, int(atr_period))
    pos, price, kind, confirm = zigzag_confirmed_nb(high, low, atr, PIVOT_MODES[mode], float(threshold))
    pivots, score, ids, candidate_score, n_scored = causal_best_nb(
        pos, price, kind, confirm, n, int(lookback), int(up_to),
        params.centers, params.scales, params.counts, params.weights, bool(keep_candidates),
    )  # fmt: skip
    found = pivots[:, 0] >= 0
    end = pivots[found, 5]
    direction = np.zeros(n, dtype=np.int8)
    direction[found] = kind[end]
    position = np.full(n, int(lookback), dtype=np.int64)
    position[found] = np.flatnonzero(found) - pos[end]
    kept = (ids, candidate_score) if keep_candidates else (None, None)
    return CausalWaves(pos, price, kind, confirm, pivots, score, direction, position, int(n_scored), *kept)


def wave_features(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    mode: str,
    threshold: float,
    atr_period: int,
    lookback: int,
    up_to: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, direction, position)`` as float32 columns, NaN on bars missing a price.

    Rows whose high, low or close is NaN are left out before ``causal_waves`` runs on the
    others (as if those bars did not exist) and get NaN in every column.
    """
    high, low, close = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    present = ~(np.isnan(high) | np.isnan(low) | np.isnan(close))
    state = causal_waves(
        high[present], low[present], close[present],
        mode=mode, threshold=threshold, atr_period=atr_period, lookback=lookback, up_to=up_to,
    )  # fmt: skip
    out = []
    for values in (state.score, state.direction, state.position):
        column = np.full(high.shape[0], np.nan, dtype=np.float32)
        column[present] = values
        out.append(column)
    return out[0], out[1], out[2]


def scan_best(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    mode: str = "atr",
    threshold: float = 3.0,
    atr_period: int = 14,
    lookback: int = 500,
    up_to: int = 3,
    backend: str = "numba",
) -> tuple[float, np.ndarray] | None:
    """The full scan's best impulse at the last bar, over the pivots confirmed by then.

    What ``causal_waves`` must report at the last bar, computed by the scan's own
    machinery: its zigzag less the running extreme, one window of ``lookback`` bars
    ending at the last bar (``window_bars=lookback``, ``max_windows=1``), every pivot a
    start (``max_start_points`` = all), no pre-score or flatness filter, no
    ``max_combinations`` cap, top 1 by the backend (ties to the lower candidate index).

    Returns
    -------
    (score, pivot ids) or None
        Pivot ids index the zigzag of the whole series (as ``CausalWaves.pos``).
    """
    high, low, close = (np.ascontiguousarray(a, dtype=np.float64) for a in (high, low, close))
    atr = atr_nb(high, low, close, int(atr_period))
    pos, price, kind, confirm = zigzag_confirmed_nb(high, low, atr, PIVOT_MODES[mode], float(threshold))
    known = confirm < high.shape[0]
    spec = WavesConfig(
        window_bars=lookback, max_windows=1, pivot_mode=mode, pivot_threshold=threshold, atr_period=atr_period,
        skip_flat_windows=False, pre_score_threshold=0.0, up_to=up_to, max_start_points=max(1, int(known.sum())),
        max_combinations=2**62, top_k_per_window=1,
    )  # fmt: skip
    amount = reversal_amounts(close, atr, mode, threshold)
    plan = plan_windows(high, low, close, amount, (pos[known], price[known], kind[known]), spec)
    top = get_backend(backend).top_candidates(plan, spec, score_params(spec))
    if not top.score.shape[0]:
        return None
    return float(top.score[0]), top.pivots[0]
