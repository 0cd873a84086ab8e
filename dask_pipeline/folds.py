"""Walk-forward folds: rolling or expanding training windows, purge and embargo.

A fold trains on bars before its test window and is tested on the window. Window sizes
are bar counts (``504``) or calendar spans (``"2Y"``, ``"6M"``, ``"30D"``, ``"4W"``).

Placement, in bars of the ``index`` the folds are generated on:

- The first test window starts right after the first training window: at bar ``train``
  (bar counts) or at the first bar on or after ``index[0] + train`` (calendar span).
- Each next test window starts ``step`` later (default: ``test``, so test windows tile the
  data). A calendar step is counted from the first test start (``start + k * step``), so
  month ends do not drift.
- A test window holds ``test`` bars, or the bars in ``[start, start + test)`` for a span.
  The last window is clipped at the end of the data, and generation stops after the first
  window that reaches it: with ``step == test`` every bar after the first training window
  is tested exactly once. A calendar window without any bar (a hole in the data) is skipped.
- Training, ``rolling``: the ``train`` bars (or the span) right before the test start;
  ``expanding``: every bar from ``index[0]`` to the test start.

Leakage controls, both in bars:

- ``purge``: the last ``purge`` bars before the test start are dropped from training.
  A label over ``h`` bars at row ``t`` reads the close at ``t + h``; with ``purge >= h`` no
  training label reads a bar of the test window. So every training bar precedes every
  test bar by more than ``purge`` bars.
- ``embargo``: the ``embargo`` bars right after each test window are dropped from the
  training set of every later fold whose training range covers them (features of those
  bars are computed from the test window's bars). This matters where training ranges run
  over earlier test windows: expanding mode, and rolling mode with ``train > step``.
  Embargoed bars leave holes inside ``[train_start, train_end]``; ``Fold.train_mask``
  applies them.

For several symbols, generate the folds once on the union of their timestamps and select
each symbol's rows with ``train_mask`` / ``test_mask`` (timestamp-based, so they work on
any index, including a stacked multi-symbol one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dask_pipeline.errors import ConfigError, DataError
from dask_pipeline.schema import Section

_SPAN = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$", re.IGNORECASE)
_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}


@dataclass(frozen=True)
class Size:
    """A window size: ``count`` bars (``unit`` None) or ``count`` calendar ``unit``s."""

    count: int
    unit: str | None = None

    @property
    def is_bars(self) -> bool:
        """True for a bar count, False for a calendar span."""
        return self.unit is None

    def offset(self, times: int = 1) -> pd.DateOffset:
        """The calendar offset of ``times`` spans (built in one piece so months never drift)."""
        return pd.DateOffset(**{_UNITS[self.unit]: self.count * times})

    def __str__(self) -> str:
        return str(self.count) if self.is_bars else f"{self.count}{self.unit.upper()}"


def parse_size(value: int | str) -> Size:
    """``504`` or ``"504"`` -> 504 bars; ``"2Y"``, ``"6M"``, ``"30D"``, ``"4W"`` -> a calendar span.

    Raises
    ------
    ValueError
        When the value is neither a positive bar count nor a span like ``"6M"``.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"expected a bar count or a span like '6M', got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 1:
            raise ValueError(f"expected a positive bar count, got {value}")
        return Size(int(value))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_size(int(text))
        match = _SPAN.match(text)
        if match and int(match.group(1)) >= 1:
            return Size(int(match.group(1)), match.group(2).lower())
    raise ValueError(
        f"expected a positive bar count or a calendar span like '2Y', '6M', '30D', '4W', "
        f"got {value!r}"
    )


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold; timestamps are inclusive bounds.

    ``embargoed`` lists inclusive ``(start, end)`` ranges inside ``[train_start, train_end]``
    that are not training rows. ``n_train`` / ``n_test`` count bars of the index the folds
    were generated on.
    """

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    n_train: int
    n_test: int
    embargoed: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = ()

    def train_mask(self, timestamps) -> np.ndarray:
        """Boolean mask of the training rows among ``timestamps`` (any DatetimeIndex-like)."""
        ts = pd.DatetimeIndex(timestamps)
        mask = np.asarray((ts >= self.train_start) & (ts <= self.train_end))
        for start, end in self.embargoed:
            mask &= ~np.asarray((ts >= start) & (ts <= end))
        return mask

    def test_mask(self, timestamps) -> np.ndarray:
        """Boolean mask of the test rows among ``timestamps``."""
        ts = pd.DatetimeIndex(timestamps)
        return np.asarray((ts >= self.test_start) & (ts <= self.test_end))


class FoldsConfig(Section):
    """``folds`` section: walk-forward layout (defaults: daily bars, 2y train, 6m test)."""

    mode: Literal["rolling", "expanding"] = "rolling"
    train: int | str = 504
    test: int | str = 126
    step: int | str | None = None
    purge: int | None = Field(default=None, ge=0)
    embargo: int = Field(default=0, ge=0)

    @field_validator("train", "test", "step")
    @classmethod
    def _size(cls, value):
        if value is None:
            return value
        size = parse_size(value)
        return size.count if size.is_bars else str(size)


def walk_forward(
    index: pd.DatetimeIndex,
    train: int | str,
    test: int | str,
    step: int | str | None = None,
    mode: str = "rolling",
    purge: int = 0,
    embargo: int = 0,
) -> list[Fold]:
    """Walk-forward folds over ``index`` (see the module docstring for the exact layout).

    Parameters
    ----------
    index : pd.DatetimeIndex
        Strictly increasing, unique timestamps (one symbol's, or the union of several).
    train, test : int or str
        Window sizes: bars, or calendar spans ``"2Y"``, ``"6M"``, ``"30D"``, ``"4W"``.
    step : int or str, optional
        Distance between consecutive test starts; defaults to ``test``.
    mode : {"rolling", "expanding"}
    purge : int
        Training bars dropped right before each test window (>= the label horizon).
    embargo : int
        Bars right after each test window dropped from later training sets.

    Returns
    -------
    list[Fold]
        In time order, ``Fold.index`` 0, 1, ...

    Raises
    ------
    ConfigError
        Bad sizes, mode, purge or embargo.
    DataError
        Bad index, or too little data for one fold (the message states the numbers).
    """
    train_size = _size(train, "train")
    test_size = _size(test, "test")
    step_size = test_size if step is None else _size(step, "step")
    if mode not in ("rolling", "expanding"):
        raise ConfigError(f"folds.mode: expected 'rolling' or 'expanding', got {mode!r}")
    for key, value in (("purge", purge), ("embargo", embargo)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"folds.{key}: expected a bar count >= 0, got {value!r}")
    if train_size.is_bars and purge >= train_size.count:
        raise ConfigError(
            f"folds.purge={purge} leaves no training bars of train {train_size.count}"
        )
    idx = _checked_index(index)
    n = len(idx)

    first = _first_test_start(idx, train_size)
    _require_one_fold(idx, first, train_size, test_size)

    anchor = idx[0] + train_size.offset() if not train_size.is_bars else idx[first]
    folds: list[Fold] = []
    test_ends: list[int] = []
    previous_start = -1
    k = -1
    while True:
        k += 1
        if step_size.is_bars:
            start = first + k * step_size.count
            nominal = idx[start] if start < n else None
        else:
            nominal = anchor + step_size.offset(k)
            start = int(idx.searchsorted(nominal, side="left"))
        if start >= n:
            break
        if start <= previous_start:  # a calendar step shorter than the bar spacing
            continue
        previous_start = start
        if test_size.is_bars:
            end = min(start + test_size.count, n)
        else:
            end = int(idx.searchsorted(nominal + test_size.offset(), side="left"))
            if end <= start:
                continue
        train_rows = _train_rows(idx, start, nominal, train_size, mode, purge, embargo, test_ends)
        if len(train_rows) == 0:
            raise DataError(
                f"fold {len(folds)} (test from {idx[start]}): no training bars left after "
                f"purge {purge} and embargo {embargo}"
            )
        folds.append(_make_fold(len(folds), idx, train_rows, start, end))
        test_ends.append(end)
        if end >= n:
            break
    return folds


def make_folds(index: pd.DatetimeIndex, cfg: FoldsConfig, horizon: int) -> list[Fold]:
    """Folds from the ``folds`` config section; ``purge`` unset means the label ``horizon``.

    Raises
    ------
    ConfigError
        When ``folds.purge`` is set below the label horizon (training labels would read
        test bars).
    """
    purge = horizon if cfg.purge is None else cfg.purge
    if purge < horizon:
        raise ConfigError(
            f"folds.purge={purge} is below label.horizon={horizon}: training labels would "
            f"read bars of the test window"
        )
    return walk_forward(
        index, cfg.train, cfg.test, cfg.step, mode=cfg.mode, purge=purge, embargo=cfg.embargo
    )


def folds_from_dates(
    index: pd.DatetimeIndex,
    start_date,
    end_date,
    fold_length: int | str,
    step_size: int | str,
    mode: str = "rolling",
    purge: int = 0,
    embargo: int = 0,
) -> list[Fold]:
    """Folds in the prototype's terms: train ``fold_length``, then test and step ``step_size``.

    Equivalent to ``walk_forward(index[start_date:end_date], train=fold_length,
    test=step_size, step=step_size, ...)``, dates inclusive.
    """
    idx = _checked_index(index)
    lo, hi = pd.Timestamp(start_date), pd.Timestamp(end_date)
    if idx.tz is not None:
        lo = lo.tz_localize(idx.tz) if lo.tz is None else lo
        hi = hi.tz_localize(idx.tz) if hi.tz is None else hi
    if hi < lo:
        raise ConfigError(f"end_date {hi} is before start_date {lo}")
    window = idx[(idx >= lo) & (idx <= hi)]
    return walk_forward(
        window, fold_length, step_size, step_size, mode=mode, purge=purge, embargo=embargo
    )


def folds_frame(folds: list[Fold]) -> pd.DataFrame:
    """One row per fold (for ``folds.parquet``): bounds, bar counts, embargoed bar ranges."""
    return pd.DataFrame(
        {
            "fold": [f.index for f in folds],
            "train_start": [f.train_start for f in folds],
            "train_end": [f.train_end for f in folds],
            "test_start": [f.test_start for f in folds],
            "test_end": [f.test_end for f in folds],
            "n_train": [f.n_train for f in folds],
            "n_test": [f.n_test for f in folds],
            "n_embargo_ranges": [len(f.embargoed) for f in folds],
        }
    )


def _size(value, key: str) -> Size:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"folds.{key}: {exc}") from None


def _checked_index(index) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"folds need a DatetimeIndex, got {type(index).__name__}")
    if len(index) and not index.is_monotonic_increasing:
        raise DataError("folds need increasing timestamps; the index is not sorted")
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise DataError(f"folds need unique timestamps; {dup} repeats")
    return index


def _first_test_start(idx: pd.DatetimeIndex, train: Size) -> int:
    if train.is_bars:
        return train.count
    if len(idx) == 0:
        return 0
    return int(idx.searchsorted(idx[0] + train.offset(), side="left"))


def _require_one_fold(idx: pd.DatetimeIndex, first: int, train: Size, test: Size) -> None:
    """DataError unless the first fold has its full training window and a test window."""
    hint = "; shorten folds.train or folds.test, or widen data.start / data.end"
    n = len(idx)
    if n == 0:
        raise DataError(f"need bars for train {train} + test {test}, the index is empty{hint}")
    if train.is_bars and test.is_bars:
        if n < train.count + test.count:
            raise DataError(
                f"need {train.count + test.count} bars for train {train.count} + "
                f"test {test.count}, have {n}{hint}"
            )
        return
    have = f"have {n} bars from {idx[0]} to {idx[-1]}"
    if test.is_bars:
        if first + test.count > n:
            raise DataError(
                f"need {first + test.count} bars for train {train} ({first} bars) + "
                f"test {test.count}, {have}{hint}"
            )
        return
    if first >= n:
        need = (
            f"more than {train.count} bars" if train.is_bars
            else f"data past {idx[0] + train.offset()}"
        )
        raise DataError(f"need {need} for train {train} + test {test}, {have}{hint}")


def _train_rows(idx, start, nominal, train: Size, mode, purge, embargo, test_ends) -> np.ndarray:
    """Positions of the training bars for a test window starting at position ``start``."""
    if mode == "expanding":
        lo = 0
    elif train.is_bars:
        lo = max(start - train.count, 0)
    else:
        lo = int(idx.searchsorted(nominal - train.offset(), side="left"))
    hi = start - purge
    if hi <= lo:
        return np.empty(0, dtype=np.int64)
    keep = np.ones(hi - lo, dtype=bool)
    for end in test_ends:
        a, b = max(end, lo), min(end + embargo, hi)
        if a < b:
            keep[a - lo : b - lo] = False
    return np.arange(lo, hi)[keep]


def _make_fold(number: int, idx, rows: np.ndarray, start: int, end: int) -> Fold:
    holes = []
    gaps = np.flatnonzero(np.diff(rows) > 1)
    for g in gaps:
        holes.append((idx[rows[g] + 1], idx[rows[g + 1] - 1]))
    return Fold(
        index=number,
        train_start=idx[rows[0]],
        train_end=idx[rows[-1]],
        test_start=idx[start],
        test_end=idx[end - 1],
        n_train=len(rows),
        n_test=end - start,
        embargoed=tuple(holes),
    )
