"""Timestamps from the text vendors and pandas write: formats, day-first dates, local time zones.

``parse_timestamps`` turns a column of timestamp text into the contract's UTC index:

- **Explicit format** (``TimeFormat.date_format``, ``--date-format``): every cell must match
  it (``strftime`` codes, e.g. ``%d/%m/%Y %H:%M``).
- **Year first** (``2020-01-02``, ``2020/01/02 09:30``, ISO 8601 with ``T`` and offsets):
  always year-month-day; ``dayfirst`` does not apply (pandas would otherwise read
  ``2020-01-02`` day-first as 1 February).
- **Day or month first** (``02/01/2020``, ``2.1.20 09:30``): read both ways, each strictly.
  When only one reading parses every cell, it is the one (``13/01/2020`` somewhere in the
  file settles it). When both do and they differ, the file is refused as **ambiguous**,
  naming the first cell that reads two ways and how to choose (``--dayfirst`` or
  ``--date-format``); ``TimeFormat.dayfirst`` reads day-first without asking.
- Anything else (``Jan 2, 2020``...) as pandas reads it.

Time zones: a cell with a UTC offset (``+01:00``, ``Z``) is converted to UTC. A naive cell is
UTC, or with ``TimeFormat.tz`` (``--tz Europe/London``) local time of that zone: in the
autumn hour that repeats, bars in time order tell the first pass from the second; a local
time that does not exist (the spring gap) or a repeated one that the bars around it do not
settle is refused with its row. Errors are ``DataError``: file, symbol, row, the cell.
"""

from __future__ import annotations

import re
import warnings
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dask_pipeline.errors import DataError

_DAY_OR_MONTH_FIRST = re.compile(r"^(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)(.*)$")
_YEAR_FIRST = re.compile(r"^\d{4}[./-]\d{1,2}[./-]\d{1,2}")
# A UTC offset ends a time of day ('09:30+01:00', '09:30:00Z'); '15-06-2020' ends in a year, not one.
_OFFSET = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})$")


@dataclass(frozen=True)
class TimeFormat:
    """How to read timestamp text: a ``strftime`` format, day-first dates, the zone of naive times.

    Raises
    ------
    DataError
        An unknown time zone name.
    """

    date_format: str | None = None
    dayfirst: bool = False
    tz: str | None = None

    def __post_init__(self) -> None:
        if self.tz is not None:
            try:
                zoneinfo.ZoneInfo(self.tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                import difflib

                close = difflib.get_close_matches(self.tz, zoneinfo.available_timezones(), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else " (an IANA name such as 'America/New_York')"
                raise DataError(f"--tz {self.tz!r}: unknown time zone{hint}") from None


def parse_timestamps(
    text: pd.Series, fmt: TimeFormat, where: str, column: str, symbols: str | np.ndarray, rows: np.ndarray | None = None
) -> pd.DatetimeIndex:
    """The cells of ``text`` as a UTC ``DatetimeIndex`` (ns), or a ``DataError`` naming the first bad one.

    Parameters
    ----------
    text
        Timestamp cells (strings; NaN for an empty cell), or a column of timestamps (from
        Parquet), which is only converted to UTC.
    fmt
        How to read them.
    where
        The file, first word of an error.
    column
        The column's name as the file spells it.
    symbols
        The symbol of every cell (long files), or one symbol for all.
    rows
        Each cell's row number in the file (default: 1, 2, ...).
    """
    rows = np.arange(1, len(text) + 1) if rows is None else np.asarray(rows)

    def fail(position: int, problem: str) -> DataError:
        symbol = symbols if isinstance(symbols, str) else symbols[position]
        return DataError(f"{where}: symbol {symbol}, row {rows[position]}: {problem}")

    missing = text.isna().to_numpy()
    if missing.any():
        raise fail(int(np.argmax(missing)), f"column '{column}' is empty")
    if pd.api.types.is_datetime64_any_dtype(text):  # a Parquet column of timestamps: nothing to parse
        return to_utc(pd.DatetimeIndex(text, name="timestamp"), fmt.tz, text.astype(str), fail, symbols)
    cells = text.astype(str).str.strip()
    utc = bool(cells.str.contains(_OFFSET).any())
    if fmt.date_format is not None:
        stamps = _strict(cells, fmt.date_format, utc)
        bad = stamps.isna().to_numpy()
        if bad.any():
            p = int(np.argmax(bad))
            raise fail(p, f"column '{column}' has {cells.iloc[p]!r}, which does not match --date-format "
                          f"{fmt.date_format!r}")
    else:
        stamps = _guessed(cells, fmt.dayfirst, utc, fail, column)
    return to_utc(pd.DatetimeIndex(stamps, name="timestamp"), fmt.tz, cells, fail, symbols)


def _guessed(cells: pd.Series, dayfirst: bool, utc: bool, fail, column: str) -> pd.Series:
    """Cells without an explicit format: year first, day or month first (ambiguity refused), or pandas'."""
    first = cells.iloc[0]
    match = _DAY_OR_MONTH_FIRST.match(first)
    if match is None or _YEAR_FIRST.match(first):
        stamps = _pandas(cells, utc)
    else:
        day_first, month_first = _formats(match)
        by_day = _strict(cells, day_first, utc) if day_first else _pandas(cells, utc, dayfirst=True)
        if dayfirst:
            stamps = by_day
        else:
            by_month = _strict(cells, month_first, utc) if month_first else _pandas(cells, utc, dayfirst=False)
            day_ok, month_ok = by_day.notna().all(), by_month.notna().all()
            if day_ok and month_ok and not by_day.equals(by_month):
                p = int(np.argmax((by_day != by_month).to_numpy()))
                raise fail(p, f"column '{column}': dates are ambiguous: {cells.iloc[p]!r} reads as "
                              f"{by_day.iloc[p]:%d %B %Y} day-first and {by_month.iloc[p]:%d %B %Y} month-first, "
                              "and so does every date of the file; say which with --dayfirst (day/month/year) or "
                              f"--date-format '{month_first or '%m/%d/%Y'}' (month/day/year)")
            if month_ok or day_ok:
                stamps = by_month if month_ok else by_day
            else:  # report the reading that gets further into the file
                stamps = max((by_month, by_day), key=lambda s: int(np.argmax(s.isna().to_numpy())))
    bad = stamps.isna().to_numpy()
    if bad.any():
        p = int(np.argmax(bad))
        raise fail(p, f"column '{column}' has unparseable timestamp {cells.iloc[p]!r}")
    return stamps


def _formats(match: re.Match) -> tuple[str | None, str | None]:
    """The day-first and month-first ``strftime`` formats of a cell like ``02/01/2020 09:30``."""
    sep, year, rest = match.group(2), match.group(4), match.group(5)
    year_code = "%Y" if len(year) == 4 else "%y"
    time_code = ""
    if rest:
        # The time part as pandas reads it after an ISO date ('2000-01-01 09:30' -> ' %H:%M').
        guessed = pd.tseries.api.guess_datetime_format("2000-01-01" + rest)
        if guessed is None or not guessed.startswith("%Y-%m-%d"):
            return None, None
        time_code = guessed[len("%Y-%m-%d"):]
    return f"%d{sep}%m{sep}{year_code}{time_code}", f"%m{sep}%d{sep}{year_code}{time_code}"


def _strict(cells: pd.Series, fmt: str, utc: bool) -> pd.Series:
    """Every cell in exactly ``fmt``; NaT where one does not match."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.to_datetime(cells, format=fmt, errors="coerce", utc=utc)


def _pandas(cells: pd.Series, utc: bool, dayfirst: bool = False) -> pd.Series:
    """pandas' reading: the first cell's layout for all, else cell by cell (mixed ISO layouts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.to_datetime(cells, utc=utc, dayfirst=dayfirst)
        except (ValueError, TypeError, OverflowError):
            return pd.to_datetime(cells, utc=utc, dayfirst=dayfirst, format="mixed", errors="coerce")


def to_utc(stamps: pd.DatetimeIndex, tz: str | None, cells: pd.Series, fail,
           symbols: str | np.ndarray | None = None) -> pd.DatetimeIndex:
    """Aware stamps converted to UTC; naive ones read as ``tz`` local time (or UTC), DST-checked.

    ``cells`` are shown in errors; ``fail(position, problem)`` makes the ``DataError``.
    ``symbols`` (one per stamp) localises each symbol's stamps on their own: the hour a
    fall-back repeats is told apart by the order of one symbol's bars, and a file sorted
    by time interleaves every symbol's.
    """
    if stamps.tz is not None:
        return stamps.tz_convert("UTC").as_unit("ns")
    if tz is None:
        return stamps.tz_localize("UTC").as_unit("ns")
    groups = symbol_groups(symbols) if symbols is not None and not isinstance(symbols, str) else {}
    if len(groups) > 1:
        out = np.empty(len(stamps), dtype="datetime64[ns]")
        for where in groups.values():
            part = _localized(stamps[where], tz, cells.iloc[where], lambda p, problem: fail(where[p], problem))
            out[where] = part.tz_localize(None).to_numpy()
        return pd.DatetimeIndex(out, name=stamps.name).tz_localize("UTC")
    return _localized(stamps, tz, cells, fail)


def symbol_groups(symbols: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions of each symbol, in order of first appearance."""
    codes, uniques = pd.factorize(np.asarray(symbols))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return {str(u): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniques)}


def _localized(stamps: pd.DatetimeIndex, tz: str, cells: pd.Series, fail) -> pd.DatetimeIndex:
    """Naive local ``tz`` stamps in UTC (ns); a time the clocks skipped or repeated ambiguously is ``fail``."""
    try:
        local = stamps.tz_localize(tz, ambiguous="infer", nonexistent="raise")
    except Exception:  # pytz/pandas raise several types for one cause: find the row ourselves
        gap = stamps.tz_localize(tz, ambiguous=np.zeros(len(stamps), dtype=bool), nonexistent="NaT").isna()
        if gap.any():
            p = int(np.argmax(gap))
            raise fail(p, f"local time {cells.iloc[p]!r} does not exist in {tz} (the clocks went forward "
                          "then); is the file really in that zone?") from None
        repeated = stamps.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").isna()
        p = int(np.argmax(repeated))
        raise fail(p, f"local time {cells.iloc[p]!r} happens twice in {tz} (the clocks went back) and the bars "
                      "around it do not say which; give timestamps with their UTC offset") from None
    return local.tz_convert("UTC").as_unit("ns")
