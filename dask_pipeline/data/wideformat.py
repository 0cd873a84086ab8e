"""A wide Parquet table of closes: one column per symbol, one row per timestamp.

What a pandas user holds after ``prices.pivot(columns="symbol", values="close")`` or a
vendor's close matrix. The time is the index the file was saved with (pandas metadata) or
a column named ``timestamp``/``datetime``/``date``/``time``; every other column is one
symbol (its name upper-cased), numbers only. A NaN cell means that symbol has no bar at
that time (not listed yet, delisted, a holiday of its exchange): the symbols keep their
own calendars. Each bar has ``open = high = low = close`` and no volume (price-only).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dask_pipeline.data.longformat import TIME_COLUMNS, header_key
from dask_pipeline.data.timestamps import TimeFormat, parse_timestamps, to_utc
from dask_pipeline.data.validate import BAR_COLUMNS, bars_error, first_row_problem, row_label
from dask_pipeline.errors import DataError


def wide_bars(path: str | os.PathLike, fmt: TimeFormat = TimeFormat(), shown: str | None = None) -> dict[str, pd.DataFrame]:
    """Price-only bars per symbol from a wide Parquet file of closes.

    Raises
    ------
    DataError
        No time index or column, a column that is not numbers, a bad close (file,
        symbol and row named), or a symbol without a single close.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    shown = shown or str(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{shown}: unreadable Parquet file ({' '.join(str(exc).split())})") from None
    rows = np.arange(1, len(frame) + 1)
    index = _times(frame, shown, fmt, rows)
    if isinstance(frame.index, pd.DatetimeIndex):
        values = frame
    else:
        values = frame.drop(columns=[next(c for c in frame.columns if header_key(c) in TIME_COLUMNS)])
    if values.shape[1] == 0:
        raise DataError(f"{shown}: no symbol columns beside the time")
    out: dict[str, pd.DataFrame] = {}
    for column in values.columns:
        symbol = str(column).strip().upper()
        series = values[column]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            raise DataError(f"{shown}: symbol {symbol}: column '{column}' holds {series.dtype} values, expected closes "
                            "(numbers; NaN where the symbol has no bar)")
        if symbol in out:
            raise DataError(f"{shown}: symbol {symbol}: two columns name it")
        close = series.to_numpy(dtype=np.float64, na_value=np.nan)
        have = ~np.isnan(close)
        if not have.any():
            raise DataError(f"{shown}: symbol {symbol}: no closes (every cell is empty)")
        bars = pd.DataFrame({name: close[have] for name in BAR_COLUMNS[:4]}, index=index[have])
        bars["volume"] = np.nan
        found = first_row_problem(bars, rows[have])
        if found is not None:
            p, problem = found
            raise bars_error(shown, symbol, problem, row=row_label(bars.index, p, rows[have]))
        out[symbol] = bars
    return out


def is_wide(columns) -> bool:
    """Whether a Parquet table with these columns is a wide table of closes (no ``close``, no symbol column)."""
    keys = {header_key(c) for c in columns}
    return "close" not in keys and not keys & {"symbol", "ticker"}


def _times(frame: pd.DataFrame, shown: str, fmt: TimeFormat, rows: np.ndarray) -> pd.DatetimeIndex:
    """The table's timestamps as a UTC index: its saved ``DatetimeIndex`` or its time column."""
    def fail(p: int, problem: str) -> DataError:
        return DataError(f"{shown}: row {rows[p]}: {problem}")

    if isinstance(frame.index, pd.DatetimeIndex):
        values = pd.Series(frame.index)
        label = frame.index.name or "the index"
    else:
        column = next((c for c in frame.columns if header_key(c) in TIME_COLUMNS), None)
        if column is None:
            raise DataError(f"{shown}: no time: a wide table of closes needs a DatetimeIndex or a column named one of "
                            f"{', '.join(TIME_COLUMNS)} (have: {', '.join(map(str, frame.columns))})")
        values, label = frame[column], str(column)
    if pd.api.types.is_datetime64_any_dtype(values):
        missing = values.isna().to_numpy()
        if missing.any():
            raise fail(int(np.argmax(missing)), f"'{label}' is empty")
        return to_utc(pd.DatetimeIndex(values, name="timestamp"), fmt.tz, values.astype(str), fail)
    return parse_timestamps(values.reset_index(drop=True), fmt, shown, label, "(all)", rows)
