"""Bar calendars: how often a symbol trades, inferred from its own timestamps.

Every symbol keeps its own bars: a weekday stock has no weekend bars, a 7-day crypto
series has them, an hourly FX series trades around the clock five days a week. Two
figures describe a calendar:

- **bar spacing**: the median distance between consecutive bars (1 day for daily bars
  whatever the weekends and holidays, 1 hour for hourly bars);
- **periods per year**: bars per 365 days, measured over the whole history::

      periods_per_year = round(n_bars * 365 days / (last - first + spacing))

  (``+ spacing``: ``n`` bars cover ``n`` periods, the last one included). A 7-day daily
  series gives exactly 365, an hourly one around the clock 8760, weekday bars without
  holidays 261 (5/7 of 365), with an exchange's nine or ten holidays 251-252, hourly bars
  24x5 about 6257. Gaps in the data (a halt, a missing month) lower the figure, as they
  lower the number of bars a year of that symbol really has.

Annualised metrics use ``sqrt(periods_per_year)`` and ``periods_per_year / n`` of the
series they describe: each symbol its own calendar, the portfolio the union of its
symbols' timestamps over the span they all trade (``dask_pipeline.folds.plan_folds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.errors import DataError

YEAR = pd.Timedelta(days=365)
#: Calendars whose spacing is equal and whose periods per year are within this ratio
#: count as one calendar (exchanges differ by a few holidays; weekday vs 7-day is 1.45).
ALIKE_RATIO = 1.15


@dataclass(frozen=True)
class Calendar:
    """A symbol's calendar as its bars show it (see the module docstring)."""

    bars: int
    first: pd.Timestamp
    last: pd.Timestamp
    spacing: pd.Timedelta
    periods_per_year: int

    def describe(self) -> str:
        """``"daily bars, 252 a year"``, ``"1h bars, 6257 a year"``."""
        return f"{bar_size(self.spacing)} bars, {self.periods_per_year} a year"

    def expected_bars(self, span: pd.Timedelta) -> float:
        """How many bars this calendar gives a stretch of time ``span`` long."""
        return self.periods_per_year * (span / YEAR)


def infer_calendar(index: pd.DatetimeIndex, what: str = "bars") -> Calendar:
    """The calendar of one symbol's (or one portfolio's) strictly increasing timestamps.

    Raises
    ------
    DataError
        Fewer than two timestamps: no spacing to measure (``what`` names the series).
    """
    index = pd.DatetimeIndex(index)
    if len(index) < 2:
        raise DataError(f"{what}: {len(index)} bar(s), too few to infer a calendar (set backtest.periods_per_year)")
    ticks = index.as_unit("ns").asi8
    steps = np.diff(ticks)
    spacing = pd.Timedelta(int(np.median(steps)), unit="ns")
    covered = pd.Timedelta(int(ticks[-1] - ticks[0]), unit="ns") + spacing
    return Calendar(len(index), index[0], index[-1], spacing, max(1, int(round(len(index) * (YEAR / covered)))))


def alike(calendars: Iterable[Calendar]) -> bool:
    """Whether the calendars are one calendar: equal spacing, periods per year within ``ALIKE_RATIO``."""
    calendars = list(calendars)
    if len(calendars) < 2:
        return True
    spacing = {c.spacing for c in calendars}
    per_year = [c.periods_per_year for c in calendars]
    return len(spacing) == 1 and max(per_year) <= ALIKE_RATIO * min(per_year)


def union_of(indexes: Iterable[pd.Index]) -> pd.DatetimeIndex:
    """The sorted union of several symbols' timestamps, named ``timestamp``."""
    indexes = [pd.DatetimeIndex(i) for i in indexes]
    if not indexes:
        raise DataError("no symbols: the union of their timestamps is empty")
    union = reduce(lambda a, b: a.union(b), indexes[1:], indexes[0])
    return pd.DatetimeIndex(union, name="timestamp")


def describe_calendars(calendars: Mapping[str, Calendar], limit: int = 6) -> str:
    """``"AAPL: daily bars, 252 a year; BTC: daily bars, 365 a year"`` (one symbol per distinct calendar)."""
    seen: dict[tuple, str] = {}
    for symbol, cal in calendars.items():
        seen.setdefault((cal.spacing, cal.periods_per_year), f"{symbol}: {cal.describe()}")
    shown = list(seen.values())
    more = f"; ... ({len(shown) - limit} more)" if len(shown) > limit else ""
    return "; ".join(shown[:limit]) + more


def bar_size(spacing: pd.Timedelta) -> str:
    """``"daily"`` for spacings of 20 hours or more in whole days, else the spacing (``"1h"``, ``"5min"``)."""
    if spacing >= pd.Timedelta(hours=20) and spacing % pd.Timedelta(days=1) == pd.Timedelta(0):
        return "daily" if spacing == pd.Timedelta(days=1) else f"{spacing.days}-day"
    from pandas.tseries.frequencies import to_offset

    text = to_offset(spacing).freqstr
    return text if text[0].isdigit() else f"1{text}"


def when(stamp: Any) -> str:
    """A timestamp as a person reads it: the date, and the time of day when it has one."""
    stamp = pd.Timestamp(stamp)
    return f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else f"{stamp:%Y-%m-%d %H:%M}"
