"""The look-ahead check: a feature at time t may depend on bars at times <= t only.

A causal indicator computed on a prefix of the bars gives, on every row of that prefix,
the values it gives on the whole history: adding future bars never changes the past.
``check_lookahead`` computes an indicator on the bars and on truncated prefixes of them
and refuses, in one ``LookAheadError`` line naming the indicator, any whose past values
move. That catches the three usual leaks: a negative shift (``shift(-1)`` reads the next
bar: the prefix's last rows lose their value), a centred window (``rolling(center=True)``
reads half a window ahead: the rows before the cut change), a statistic of the whole
sample (normalising by the full history's mean, rank or max: the rows change on every
prefix that ends before the statistic settles), a back-filled warm-up (``bfill``: the
first rows read bars up to a window ahead) and interpolation across a gap (the gap's
rows read the bar after it).

Prefixes (``cut_points``): the bars minus their last one, two and three bars (a leak of
one bar shows there first), their first half, the powers of two below it (early
prefixes: an early extreme, a warm-up), the bar after each of the first gaps in the
closes, and ``random_cuts`` cut points drawn uniformly, with a seed fixed by the
indicator spec so a run's verdict is reproducible. The check reads at most ``MAX_BARS``
bars, so it costs a few dozen computations of one symbol. It checks the run's first
symbol's bars: a leak that those bars do not exercise (an extreme that never moves) can
pass; the bars decide, not the code.

Values are compared as stored (float32) with NaN equal to NaN: a causal computation
gives bit-identical past values whatever follows them. To allow code whose summation
order depends on the array length (FFT convolutions, blocked reductions), a difference
up to ``TOLERANCE`` times the largest absolute value of that column passes; every leak
above moves values by orders of magnitude more. An indicator that returns other values
for the same bars twice is refused as not deterministic.

The runner checks every user indicator a run's ``features.indicators`` names, once per
run, on the run's first symbol, before any cluster starts. Built-ins pass the same check
(a property test over random cut points).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.calendars import when
from dask_pipeline.errors import ExtensionError
from dask_pipeline.features import engine
from dask_pipeline.features.spec import IndicatorSpec

MAX_BARS = 5000
TOLERANCE = 1e-6
RANDOM_CUTS = 6
MAX_GAP_CUTS = 8


class LookAheadError(ExtensionError):
    """An indicator's past values change when later bars are added (or it is not deterministic)."""


@dataclass(frozen=True)
class Leak:
    """Where a prefix disagrees with the full history: the first differing row of the first failing cut."""

    cut: int          # the prefix holds bars [0, cut)
    row: int
    column: str
    full: float       # value at ``row`` computed on all the bars
    prefix: float     # value at ``row`` computed on the prefix


def cut_points(n_bars: int, seed: int = 0, random_cuts: int = RANDOM_CUTS,
               gaps: np.ndarray | None = None) -> list[int]:
    """Prefix lengths to check for ``n_bars`` bars; sorted, unique.

    The last bars, the half, the powers of two below it (a statistic of the whole sample
    whose extreme lies early, a back-filled warm-up), just after the first ``MAX_GAP_CUTS``
    bars of ``gaps`` (rows without a close: interpolation across a gap reads the bar
    after it), and random cuts.
    """
    if n_bars < 2:
        return []
    rng = np.random.default_rng(seed)
    cuts = {n_bars - 1, n_bars - 2, n_bars - 3, n_bars // 2}
    power = 2
    while power < n_bars // 2:
        cuts.add(power)
        power *= 2
    if gaps is not None:
        cuts.update(int(g) + 1 for g in np.asarray(gaps)[:MAX_GAP_CUTS])
    cuts.update(int(c) for c in rng.integers(1, n_bars, size=random_cuts))
    return sorted(c for c in cuts if 1 <= c < n_bars)


def find_leak(bars: pd.DataFrame, spec: IndicatorSpec, cuts: list[int],
              benchmark: pd.DataFrame | None = None) -> Leak | None:
    """The first cut whose prefix changes a value of ``spec`` computed on all of ``bars``; None if none does."""
    full = engine.compute(bars, [spec], benchmark)
    scale = _scale(full)
    for cut in sorted(cuts):
        prefix = engine.compute(bars.iloc[:cut], [spec], benchmark)
        leak = _first_difference(full.iloc[:cut], prefix, scale, cut)
        if leak is not None:
            return leak
    return None


def check_lookahead(
    bars: pd.DataFrame, spec: IndicatorSpec | str, benchmark: pd.DataFrame | None = None, *,
    symbol: str | None = None, cuts: list[int] | None = None, max_bars: int = MAX_BARS,
) -> int:
    """Refuse ``spec`` if its values at t depend on bars after t.

    Parameters
    ----------
    bars
        One symbol's bars; only the first ``max_bars`` are used.
    spec
        The indicator and its parameters (a bare name means its defaults).
    benchmark
        The benchmark's bars, for indicators that read it.
    symbol
        Named in the error.
    cuts
        Prefix lengths to check; default ``cut_points`` seeded by the spec.

    Returns
    -------
    int
        How many prefixes were checked.

    Raises
    ------
    LookAheadError
        One line naming the indicator, the row whose value moved and the cut that moved it.
    """
    if isinstance(spec, str):
        spec = IndicatorSpec(name=spec)
    bars = bars.iloc[:max_bars]
    if cuts is None:
        gaps = np.flatnonzero(bars["close"].isna().to_numpy()) if "close" in bars else None
        cuts = cut_points(len(bars), seed=zlib.crc32(repr((spec.name, spec.params)).encode()), gaps=gaps)
    label = _label(spec)
    where = f" on {symbol}" if symbol else ""
    first = engine.compute(bars, [spec], benchmark)
    again = engine.compute(bars, [spec], benchmark)
    moved = _first_difference(first, again, _scale(first), len(bars))
    if moved is not None:
        raise LookAheadError(
            f"indicator {label} is not deterministic{where}: computed twice on the same {len(bars)} bars, "
            f"{moved.column} at {when(bars.index[moved.row])} was {_text(moved.full)} then {_text(moved.prefix)}; "
            "seed any randomness from the bars or the parameters")
    leak = find_leak(bars, spec, cuts, benchmark)
    if leak is not None:
        raise LookAheadError(
            f"indicator {label} looks ahead{where}: {leak.column} at {when(bars.index[leak.row])} is "
            f"{_text(leak.prefix)} on the bars up to {when(bars.index[leak.cut - 1])} but {_text(leak.full)} once "
            "later bars are added; a feature at t may read bars at t or before only (no shift(-k), centred "
            "window or statistic of the whole sample)")
    return len(cuts)


def check_run_indicators(bars: pd.DataFrame, specs: list[IndicatorSpec], symbol: str) -> list[str]:
    """``check_lookahead`` for every user indicator among ``specs``; returns the columns checked."""
    from dask_pipeline.features.custom import is_user_indicator

    checked: list[str] = []
    for spec in specs:
        if is_user_indicator(spec.name):
            check_lookahead(bars, spec, symbol=symbol)
            checked.extend(spec.columns)
    return checked


def _scale(frame: pd.DataFrame) -> np.ndarray:
    values = np.abs(frame.to_numpy(dtype=np.float64))
    values[~np.isfinite(values)] = 0.0
    return values.max(axis=0, initial=0.0)


def _first_difference(full: pd.DataFrame, other: pd.DataFrame, scale: np.ndarray, cut: int) -> Leak | None:
    a = full.to_numpy(dtype=np.float64)
    b = other.to_numpy(dtype=np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    with np.errstate(invalid="ignore"):
        moved = (nan_a != nan_b) | (~nan_a & ~nan_b & (np.abs(a - b) > TOLERANCE * scale))
    rows, cols = np.nonzero(moved)
    if rows.size == 0:
        return None
    first = int(np.argmin(rows))
    row, col = int(rows[first]), int(cols[first])
    return Leak(cut, row, str(full.columns[col]), float(a[row, col]), float(b[row, col]))


def _label(spec: IndicatorSpec) -> str:
    params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
    return f"{spec.name!r}" + (f" ({params})" if params else "")


def _text(value: Any) -> str:
    return "NaN" if np.isnan(value) else f"{value:.6g}"
