"""Bars checked against the data contract, with one-line errors naming file, symbol and row.

A valid bars frame has a ``DatetimeIndex`` of unique, strictly increasing timestamps and
exactly the columns ``open high low close volume``, every price a finite number, with
``0 < low <= open, close <= high``. Prices must be positive because labels and returns
divide by them. ``volume`` is ``>= 0`` or NaN: missing, for some bars or for all of them
(price-only bars: FX, indices); never infinite. Cells may still be text (a CSV read as
strings): a cell that does not parse as a number is reported as non-numeric.

Rows are named by their 1-based position in the frame as given (for a CSV, the data
row: the first line after the header is row 1) followed by the row's timestamp. When a
frame has several problems, the one on the earliest row is reported.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from dask_pipeline.errors import DataError

#: The bar columns, in their stored order.
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")


def bars_error(source: str, symbol: str, problem: str, row: str | None = None) -> DataError:
    """The ``DataError`` for one problem: ``"<source>: symbol <symbol>[, row <row>]: <problem>"``."""
    where = f"symbol {symbol}" if row is None else f"symbol {symbol}, row {row}"
    return DataError(f"{source}: {where}: {problem}")


def format_value(value: object) -> str:
    """A cell as a user would write it: the shortest repr of a float in its own precision."""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return str(float(value))
        return np.format_float_positional(value, trim="-")
    return str(value)


def validate_bars(bars: pd.DataFrame, source: str, symbol: str) -> None:
    """Raise ``DataError`` unless ``bars`` meets the bars contract.

    Parameters
    ----------
    bars
        One symbol's bars: ``DatetimeIndex`` (naive or tz-aware), columns
        ``open high low close volume`` (numbers, or text that parses as numbers).
    source
        Where the bars came from (a file path), first word of the message.
    symbol
        The symbol, named in the message.

    Raises
    ------
    DataError
        One line: ``"data/AAPL.csv: symbol AAPL, row 17 (2020-01-24T00:00:00+00:00): high 101.2 < low 101.9"``.
    """
    if not isinstance(bars, pd.DataFrame):
        raise bars_error(source, symbol, f"expected a DataFrame of bars, got {type(bars).__name__}")
    columns = [str(c) for c in bars.columns]
    duplicated = [c for i, c in enumerate(columns) if c in columns[:i]]
    if duplicated:
        raise bars_error(source, symbol, f"duplicate column '{duplicated[0]}'")
    for name in BAR_COLUMNS:
        if name not in columns:
            raise bars_error(source, symbol, f"missing column '{name}' (have: {', '.join(columns) or 'none'})")
    extra = [c for c in columns if c not in BAR_COLUMNS]
    if extra:
        raise bars_error(source, symbol, f"unexpected column '{extra[0]}' (bars have exactly: {', '.join(BAR_COLUMNS)})")
    if len(bars) == 0:
        raise bars_error(source, symbol, "no rows")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise bars_error(source, symbol, f"index must be a DatetimeIndex of timestamps, got {type(bars.index).__name__}")

    found = first_row_problem(bars)
    if found is not None:
        position, problem = found
        raise bars_error(source, symbol, problem, row=row_label(bars.index, position))


def row_label(index: pd.Index, position: int, rows: np.ndarray | None = None) -> str:
    """``"17 (2020-01-24T00:00:00+00:00)"``: row number (``rows[position]``, default 1-based) and the timestamp."""
    number = position + 1 if rows is None else rows[position]
    stamp = index[position] if isinstance(index, pd.DatetimeIndex) else None
    return f"{number}" if stamp is None or pd.isna(stamp) else f"{number} ({stamp.isoformat()})"


def first_row_problem(bars: pd.DataFrame, rows: np.ndarray | None = None) -> tuple[int, str] | None:
    """The earliest row with a problem and its description (ties: in the order checked here).

    Checks the bar columns ``bars`` has: the cross-column rules need both of their columns.
    ``rows`` numbers the rows in messages that name another row (default 1, 2, ...).
    """
    # Each check yields (first bad position, message maker); the minimum by (position,
    # check order) wins, so the reported row is the first a user meets in the file.
    checks: list[tuple[int, Callable[[], str]]] = []

    def add(mask: np.ndarray, message: Callable[[int], str]) -> None:
        if mask.any():
            pos = int(np.argmax(mask))
            checks.append((pos, lambda: message(pos)))

    raw = {name: bars[name] for name in BAR_COLUMNS if name in bars.columns}
    values = {}
    for name, column in raw.items():
        numbers = _as_numbers(column)
        add(numbers.isna().to_numpy() & column.notna().to_numpy(),
            lambda p, n=name: f"column '{n}' has non-numeric value {str(raw[n].iloc[p]).strip()!r}")
        values[name] = numbers.to_numpy(dtype=numbers.dtype if numbers.dtype.kind == "f" else np.float64, na_value=np.nan)

    index = bars.index
    add(np.asarray(index.isna()), lambda p: "timestamp is missing")
    for name, column in values.items():
        # Missing volume is NaN (price-only bars); a missing price is an error.
        bad = np.isinf(column) if name == "volume" else ~np.isfinite(column)
        add(bad, lambda p, n=name: f"column '{n}' is {format_value(values[n][p])}")
    for name in PRICE_COLUMNS:
        if name in values:
            x = values[name]
            add(x <= 0, lambda p, n=name, x=x: f"{n} {format_value(x[p])} is not a positive price")

    o, h, lo, c, v = (values.get(n) for n in BAR_COLUMNS)
    if h is not None and lo is not None:
        add(h < lo, lambda p: f"high {format_value(h[p])} < low {format_value(lo[p])}")
        for name, column in (("open", o), ("close", c)):
            if column is not None:
                add((column < lo) | (column > h), lambda p, n=name, x=column:
                    f"{n} {format_value(x[p])} outside [low {format_value(lo[p])}, high {format_value(h[p])}]")
    if v is not None:
        add(v < 0, lambda p: f"volume {format_value(v[p])} < 0")

    valid = ~np.asarray(index.isna())
    number = np.arange(1, len(index) + 1) if rows is None else np.asarray(rows)
    add(np.asarray(index.duplicated()) & valid,
        lambda p: f"duplicate timestamp (same as row {number[int(np.flatnonzero(index[:p] == index[p])[0])]})")
    stamps = index.asi8
    decreasing = np.zeros(len(index), dtype=bool)
    decreasing[1:] = (stamps[1:] < stamps[:-1]) & valid[1:] & valid[:-1]
    add(decreasing, lambda p: f"timestamp is earlier than row {row_label(index, p - 1, number)}; timestamps must increase")

    if not checks:
        return None
    position, message = min(checks, key=lambda item: item[0])
    return position, message()


def _as_numbers(column: pd.Series) -> pd.Series:
    """The column as numbers; cells that do not parse become NaN."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column
    return pd.to_numeric(column, errors="coerce")
