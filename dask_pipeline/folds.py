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

``walk_forward`` lays folds on one index. ``plan_folds`` lays them for a universe of
symbols with ragged histories and their own calendars:

- **Folds are spans of time shared by every symbol**: a pooled model and the portfolio
  need one test window for all (per-symbol windows would let one symbol's training rows
  come from another's test window). They are laid on the union of the symbols'
  timestamps. ``train/test/step`` as calendar spans (``"2Y"``, ``"6M"``) work for any
  universe. As bar counts they count bars of the universe's one calendar, so every
  symbol must have the same calendar (same bar spacing, bars per year within 15 %: the
  holidays of two exchanges differ, a weekday stock and a 7-day crypto series do not
  share one); a mixed universe is refused with a ``ConfigError`` asking for spans.
- ``purge`` and ``embargo`` count each symbol's own bars (``Fold.symbol_train_mask``):
  a label over ``h`` bars of an hourly series reads ``h`` hours ahead, of a daily one
  ``h`` days, and ``purge >= h`` holds on every calendar.
- **Who takes part.** A symbol takes part in a fold when it has at least one bar in the
  test window and, in the fold's (rolling) training window, at least ``MIN_HISTORY`` of
  the bars its own calendar gives that stretch of time. Otherwise it sits the fold out
  (``Fold.sat_out`` says why): not listed yet, delisted, or too short a history. A
  symbol that delists inside a test window trades until its last bar. Pooled models
  still train on every training row that exists, those of symbols sitting out included
  (a delisted symbol's past is data too: no survivorship bias).
- **Short last window.** The last test window is clipped at the end of the data; when
  it is shorter than ``min_test`` (default: half of ``test``; bars, or time for a span)
  it is dropped and ``FoldPlan.notes`` says so. A fold in which no symbol takes part is
  skipped the same way. Folds are numbered 0.. after both.
- **Annualisation.** ``Fold.periods_per_year`` holds each symbol's figure
  (inferred from its whole history, ``dask_pipeline.calendars``, unless the config sets
  one) and the portfolio's: that of the union of its symbols' timestamps over the span
  all of them trade.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from dask_pipeline.calendars import Calendar, alike, describe_calendars, infer_calendar, union_of, when
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
    were generated on. ``purge``, ``embargo`` and ``embargo_after`` (the ends of earlier
    test windows) let ``symbol_train_mask`` apply them on any one symbol's own bars.

    From ``plan_folds``: ``symbols`` take part, ``sat_out`` holds ``(symbol, why)`` for the
    others, ``periods_per_year`` holds ``(symbol, figure)`` for every symbol and
    ``("portfolio", figure)``. Empty when the folds were laid on one index alone: then
    every symbol given takes part.
    """

    index: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    n_train: int
    n_test: int
    embargoed: tuple[tuple[pd.Timestamp, pd.Timestamp], ...] = ()
    purge: int = 0
    embargo: int = 0
    embargo_after: tuple[pd.Timestamp, ...] = ()
    symbols: tuple[str, ...] = ()
    sat_out: tuple[tuple[str, str], ...] = ()
    periods_per_year: tuple[tuple[str, int], ...] = ()

    def train_mask(self, timestamps) -> np.ndarray:
        """Boolean mask of the training rows among ``timestamps`` (any DatetimeIndex-like)."""
        ts = pd.DatetimeIndex(timestamps)
        mask = np.asarray((ts >= self.train_start) & (ts <= self.train_end))
        for start, end in self.embargoed:
            mask &= ~np.asarray((ts >= start) & (ts <= end))
        return mask

    def symbol_train_mask(self, timestamps) -> np.ndarray:
        """Training rows among one symbol's own increasing ``timestamps``, purge and embargo in its bars.

        Its bars from ``train_start`` to before ``test_start``, less its last ``purge`` bars
        before ``test_start`` and its first ``embargo`` bars after each earlier test
        window. On the index the folds were laid on this equals ``train_mask``.
        """
        ts = pd.DatetimeIndex(timestamps)
        mask = np.zeros(len(ts), dtype=bool)
        lo = int(ts.searchsorted(self.train_start, side="left"))
        hi = int(ts.searchsorted(self.test_start, side="left")) - self.purge
        if hi > lo:
            mask[lo:hi] = True
        for end in self.embargo_after:
            after = int(ts.searchsorted(end, side="right"))
            mask[after : after + self.embargo] = False
        return mask

    def test_mask(self, timestamps) -> np.ndarray:
        """Boolean mask of the test rows among ``timestamps``."""
        ts = pd.DatetimeIndex(timestamps)
        return np.asarray((ts >= self.test_start) & (ts <= self.test_end))

    def takes_part(self, symbol: str) -> bool:
        """Whether ``symbol`` is traded in this fold (always, for folds laid on one index)."""
        return not self.symbols or symbol in self.symbols

    def annualisation(self) -> dict[str, int]:
        """``periods_per_year`` as a dict (empty for folds laid on one index)."""
        return dict(self.periods_per_year)


class FoldsConfig(Section):
    """``folds`` section: walk-forward layout (defaults: daily bars, 2y train, 6m test).

    ``min_test``: the shortest last test window kept (bars or a span); default half of ``test``.
    """

    mode: Literal["rolling", "expanding"] = "rolling"
    train: int | str = 504
    test: int | str = 126
    step: int | str | None = None
    purge: int | None = Field(default=None, ge=0)
    embargo: int = Field(default=0, ge=0)
    min_test: int | str | None = None

    @field_validator("train", "test", "step", "min_test")
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
        earlier = tuple(idx[e - 1] for e in test_ends) if embargo else ()
        folds.append(_make_fold(len(folds), idx, train_rows, start, end, purge, embargo, earlier))
        test_ends.append(end)
        if end >= n:
            break
    return folds


def make_folds(index: pd.DatetimeIndex, cfg: FoldsConfig, horizon: int) -> list[Fold]:
    """Folds on one index from the ``folds`` config section; ``purge`` unset means the label ``horizon``.

    A last test window shorter than ``folds.min_test`` is dropped (``plan_folds`` also says so).

    Raises
    ------
    ConfigError
        When ``folds.purge`` is set below the label horizon (training labels would read
        test bars).
    """
    return _laid_out(index, cfg, horizon)[0]


#: The share of the bars its calendar gives a fold's training window that a symbol needs
#: there to take part in the fold (a few missing days are data holes, months are a late listing).
MIN_HISTORY = 0.9


@dataclass(frozen=True)
class FoldPlan:
    """``plan_folds``' result: the folds, each symbol's calendar and timestamps, and what was dropped or skipped."""

    folds: list[Fold]
    calendars: dict[str, Calendar]
    notes: list[str]
    stamps: dict[str, pd.DatetimeIndex]


def plan_folds(
    stamps: Mapping[str, pd.DatetimeIndex], cfg: FoldsConfig, horizon: int, periods_per_year: int | None = None
) -> FoldPlan:
    """Folds for a universe of symbols with ragged histories (see the module docstring).

    Parameters
    ----------
    stamps
        Each symbol's own timestamps over the run's date range, in the run's symbol order.
    cfg, horizon
        The ``folds`` section and ``label.horizon`` (the default purge).
    periods_per_year
        ``backtest.periods_per_year`` when the config sets it (then every symbol and the
        portfolio use it); None infers each symbol's from its calendar.

    Returns
    -------
    FoldPlan

    Raises
    ------
    ConfigError
        Bar counts over symbols whose calendars differ; bad sizes.
    DataError
        Too little data for one fold, or no symbol with enough history in any fold.
    """
    from dask_pipeline.backtest import PORTFOLIO

    calendars = {s: infer_calendar(ix, f"symbol {s}") for s, ix in stamps.items()}
    counts = [f"folds.{k}={getattr(cfg, k)}" for k in ("train", "test", "step", "min_test")
              if getattr(cfg, k) is not None and parse_size(getattr(cfg, k)).is_bars]
    if counts and not alike(calendars.values()):
        raise ConfigError(
            f"{', '.join(counts)} count bars, but the symbols' calendars differ ({describe_calendars(calendars)}): "
            "give folds.train, folds.test and folds.step as calendar spans such as '2Y', '6M', '30D'"
        )
    union = union_of(stamps.values())
    folds, notes = _laid_out(union, cfg, horizon)
    train = parse_size(cfg.train)
    portfolio: dict[tuple[str, ...], int] = {}
    planned: list[Fold] = []
    for fold in folds:
        history_start = _history_start(union, fold, train)
        taking, sat_out = [], []
        for symbol, index in stamps.items():
            why = _sits_out(index, calendars[symbol], fold, history_start)
            if why is None:
                taking.append(symbol)
            else:
                sat_out.append((symbol, why))
        if not taking:
            notes.append(f"folds: skipped the test window from {when(fold.test_start)}: no symbol has enough "
                         f"history before it")
            continue
        key = tuple(taking)
        if key not in portfolio:
            portfolio[key] = periods_per_year or _union_calendar({s: stamps[s] for s in taking}).periods_per_year
        figures = [(s, periods_per_year or calendars[s].periods_per_year) for s in stamps]
        planned.append(replace(fold, index=len(planned), symbols=key, sat_out=tuple(sat_out),
                               periods_per_year=(*figures, (PORTFOLIO, portfolio[key]))))
    if not planned:
        raise DataError(f"no fold has a symbol with at least {MIN_HISTORY:.0%} of its training window's bars; "
                        "shorten folds.train, or widen data.start / data.end")
    never = [s for s in stamps if not any(s in f.symbols for f in planned)]
    if never:
        shown = ", ".join(never[:6]) + (", ..." if len(never) > 6 else "")
        notes.append(f"folds: {shown} sit{'s' if len(never) == 1 else ''} out every fold (too little history "
                     "in each training window, or no bars in any test window)")
    return FoldPlan(planned, calendars, notes, dict(stamps))


def _union_calendar(stamps: Mapping[str, pd.DatetimeIndex]) -> Calendar:
    """The calendar of the union of the symbols' timestamps while all of them trade.

    Over the whole sample a union of ragged histories would average, say, years of daily
    bars with the months an hourly series joined them; the span they share is what the
    portfolio of those symbols trades on (and for one symbol, its own calendar).
    """
    first = max(ix[0] for ix in stamps.values())
    last = min(ix[-1] for ix in stamps.values())
    union = union_of(stamps.values())
    shared = union[(union >= first) & (union <= last)] if first < last else union
    return infer_calendar(shared if len(shared) > 1 else union, "portfolio")


def _laid_out(index: pd.DatetimeIndex, cfg: FoldsConfig, horizon: int) -> tuple[list[Fold], list[str]]:
    """``walk_forward`` with the config's purge default, less a last test window shorter than ``min_test``."""
    purge = horizon if cfg.purge is None else cfg.purge
    if purge < horizon:
        raise ConfigError(
            f"folds.purge={purge} is below label.horizon={horizon}: training labels would "
            f"read bars of the test window"
        )
    folds = walk_forward(
        index, cfg.train, cfg.test, cfg.step, mode=cfg.mode, purge=purge, embargo=cfg.embargo
    )
    last = folds[-1]
    test = _size(cfg.test, "test")
    minimum = None if cfg.min_test is None else _size(cfg.min_test, "min_test")
    if last.test_end != index[-1] or not _too_short(index, last, test, minimum):
        return folds, []
    shown = str(minimum) if minimum is not None else f"half of folds.test {test}"
    window = f"the last test window, {when(last.test_start)} to {when(last.test_end)} ({last.n_test} bars)"
    if len(folds) == 1:
        raise DataError(f"{window} is shorter than folds.min_test ({shown}) and is the only one; shorten "
                        "folds.train or folds.test, lower folds.min_test, or widen data.start / data.end")
    return folds[:-1], [f"folds: dropped {window}: shorter than folds.min_test ({shown})"]


def _too_short(index: pd.DatetimeIndex, fold: Fold, test: Size, minimum: Size | None) -> bool:
    """Whether the (clipped) last test window is shorter than ``minimum`` (None: half of ``test``)."""
    if minimum is None:
        if test.is_bars:
            return fold.n_test < max(1, test.count // 2)
        # Time covered, the last bar's own period included, against half the nominal span.
        covered = fold.test_end + _spacing(index) - fold.test_start
        return covered < ((fold.test_start + test.offset()) - fold.test_start) / 2
    if minimum.is_bars:
        return fold.n_test < minimum.count
    return fold.test_start + minimum.offset() > fold.test_end + _spacing(index)


def _spacing(index: pd.DatetimeIndex) -> pd.Timedelta:
    if len(index) < 2:
        return pd.Timedelta(0)
    return pd.Timedelta(int(np.median(np.diff(index.as_unit("ns").asi8))), unit="ns")


def _history_start(union: pd.DatetimeIndex, fold: Fold, train: Size) -> pd.Timestamp:
    """Start of the fold's rolling training window (also in expanding mode: the history a symbol needs)."""
    if train.is_bars:
        return union[max(int(union.searchsorted(fold.test_start)) - train.count, 0)]
    return fold.test_start - train.offset()


def _sits_out(index: pd.DatetimeIndex, calendar: Calendar, fold: Fold, history_start: pd.Timestamp) -> str | None:
    """Why a symbol with these bars sits the fold out, or None when it takes part."""
    first_test = int(index.searchsorted(fold.test_start, side="left"))
    if int(index.searchsorted(fold.test_end, side="right")) <= first_test:
        if index[-1] < fold.test_start:
            return f"no bars in the test window (its last bar is {when(index[-1])})"
        if index[0] > fold.test_end:
            return f"no bars in the test window (its first bar is {when(index[0])})"
        return "no bars in the test window"
    have = first_test - int(index.searchsorted(history_start, side="left"))
    need = calendar.expected_bars(fold.test_start - history_start)
    if have < MIN_HISTORY * need:
        return (f"too little history: {have} of about {need:.0f} bars in the training window from "
                f"{when(history_start)}")
    return None


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


def _make_fold(number: int, idx, rows: np.ndarray, start: int, end: int, purge: int, embargo: int,
               earlier: tuple[pd.Timestamp, ...]) -> Fold:
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
        purge=purge,
        embargo=embargo,
        embargo_after=earlier,
    )
