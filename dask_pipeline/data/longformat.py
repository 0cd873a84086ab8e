"""Tables of bars as vendors hand them out: one symbol per table, or many in the long format.

``table_bars`` reads any such table (from a CSV file, a Parquet file or a Parquet
dataset) into contract bars per symbol:

- Headers are matched ignoring case, spaces, ``_`` and ``-`` (``Adj Close`` = ``adj_close``).
  Required: ``open high low close`` and a time column: the first present of ``timestamp``,
  ``datetime``, ``date``, ``time``; separate ``date`` and ``time`` columns are joined; with
  none of them, an unnamed first column (what ``DataFrame.to_csv()`` writes for the index,
  or the index a Parquet file was saved with) is the time column.
- ``volume`` is optional: without it the bars are price-only (volume NaN; ``obv`` and
  ``volume_z`` refuse them). Empty volume cells are missing volume.
- ``adj close`` present: open, high, low and close are multiplied by ``adj_close / close``
  row by row; volume is left as traded.
- **Long format**: a ``symbol`` (or ``ticker``) column names each row's symbol:
  ``timestamp, symbol, open, high, low, close[, volume]``. Without one, the table is one
  symbol (the caller names it, e.g. from the file name).
- Other columns are ignored. Timestamps: ``dask_pipeline.data.timestamps``.

Every error names the file, the symbol and the row of the file (1 = the first data row).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd

from dask_pipeline.data.timestamps import TimeFormat, parse_timestamps, symbol_groups
from dask_pipeline.data.validate import (BAR_COLUMNS, PRICE_COLUMNS, bars_error, first_row_problem, format_value,
                                         row_label)
from dask_pipeline.errors import DataError

TIME_COLUMNS = ("timestamp", "datetime", "date", "time")
SYMBOL_COLUMNS = ("symbol", "ticker")
ADJ_CLOSE = "adjclose"
_MEANINGFUL = (*BAR_COLUMNS, *TIME_COLUMNS, *SYMBOL_COLUMNS, ADJ_CLOSE)


def header_key(header: object) -> str:
    """A header as matched: lower case, without spaces, ``_``, ``-`` and tabs."""
    return "".join(ch for ch in str(header).strip().lower() if ch not in " _-\t")


def is_long(columns) -> bool:
    """Whether a table with these headers is in the long format (it has a symbol column)."""
    return any(header_key(c) in SYMBOL_COLUMNS for c in columns)


def table_bars(
    raw: pd.DataFrame, source: str, fmt: TimeFormat = TimeFormat(), symbol: str | None = None,
    rows: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """Contract bars (float64, UTC index) per symbol from one table of bars.

    Parameters
    ----------
    raw
        The table: text cells (a CSV read as strings) or typed columns (Parquet).
    source
        The file, named in errors.
    fmt
        How to read timestamp text.
    symbol
        The table's one symbol when it has no symbol column; None requires one.
    rows
        Each table row's row number in the file (default 1, 2, ...).

    Returns
    -------
    dict
        ``{symbol: bars}`` in order of first appearance.

    Raises
    ------
    DataError
        One line naming the file, symbol, row and problem.
    """
    named = symbol or "?"
    by_key = _columns(raw, source, named)
    have = ", ".join(str(c).strip() for c in raw.columns)
    time_key = next((k for k in TIME_COLUMNS if k in by_key), None)
    unnamed = _unnamed_first(raw)
    if time_key is None and unnamed is None:
        raise bars_error(source, named, f"missing time column, one of: {', '.join(TIME_COLUMNS)} (have: {have})")
    for name in PRICE_COLUMNS:
        if name not in by_key:
            raise bars_error(source, named, f"missing column '{name}' (have: {have})")
    symbol_key = next((k for k in SYMBOL_COLUMNS if k in by_key), None)
    if symbol_key is None and symbol is None:
        raise bars_error(source, named, f"no symbol column ({', '.join(SYMBOL_COLUMNS)}) (have: {have})")
    if raw.empty:
        raise bars_error(source, named, "no rows (header only)")
    rows = np.arange(1, len(raw) + 1) if rows is None else np.asarray(rows)

    if symbol_key is not None:
        names = raw[by_key[symbol_key]]
        empty = names.isna().to_numpy() | (names.astype(str).str.strip() == "").to_numpy()
        if empty.any():
            p = int(np.argmax(empty))
            raise DataError(f"{source}: row {rows[p]}: column '{by_key[symbol_key]}' is empty")
        symbols = names.astype(str).str.strip().str.upper().to_numpy()
    else:
        symbols = np.full(len(raw), symbol, dtype=object)

    column = by_key[time_key] if time_key is not None else unnamed
    index = _time_index(raw, by_key, time_key, column, source, symbols if symbol_key else named, rows, fmt)
    text = pd.DataFrame({name: raw[by_key[name]].to_numpy() if name in by_key else np.nan for name in BAR_COLUMNS},
                        index=index)
    out: dict[str, pd.DataFrame] = {}
    for name, positions in symbol_groups(symbols).items():
        part = text.iloc[positions]
        found = first_row_problem(part, rows[positions])
        if found is not None:
            p, problem = found
            raise bars_error(source, name, problem, row=row_label(part.index, p, rows[positions]))
        bars = part.apply(pd.to_numeric).astype(np.float64)
        if ADJ_CLOSE in by_key:
            factor = _adjustment(raw[by_key[ADJ_CLOSE]].iloc[positions], bars["close"], by_key[ADJ_CLOSE], source, name,
                                 rows[positions])
            for price in PRICE_COLUMNS:
                bars[price] = bars[price] * factor
        out[name] = bars
    return out


def parquet_bars(path: str | os.PathLike, fmt: TimeFormat = TimeFormat(), symbol: str | None = None,
                 shown: str | None = None) -> dict[str, pd.DataFrame]:
    """Bars per symbol from one Parquet file in the long format (or of one ``symbol``).

    A ``DatetimeIndex`` the file was saved with (pandas metadata) is its time column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    shown = shown or str(path)
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{shown}: unreadable Parquet file ({' '.join(str(exc).split())})") from None
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.reset_index(names=frame.index.name or "timestamp")
    if symbol is None and not is_long(frame.columns):
        raise DataError(f"{shown}: no symbol column ({', '.join(SYMBOL_COLUMNS)}): a Parquet file of bars is in the "
                        f"long format (timestamp, symbol, open, high, low, close[, volume]), or a wide table of closes "
                        f"(have: {', '.join(map(str, frame.columns))})")
    return table_bars(frame.reset_index(drop=True), shown, fmt, symbol)


def dataset_bars(root: str | os.PathLike, fmt: TimeFormat = TimeFormat()) -> dict[str, pd.DataFrame]:
    """Bars per symbol from a Parquet dataset: every ``*.parquet`` under ``root`` in the long format.

    A hive partition folder ``symbol=XYZ`` names the symbol of a file without a symbol
    column. A symbol's rows may span several files (partitions by year, say): they are
    put in time order; a timestamp given twice is refused naming both files.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*.parquet")
                   if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root}: no *.parquet files under this directory")
    pieces: dict[str, list[tuple[pd.DataFrame, str]]] = {}
    for path in files:
        partition = next((part.split("=", 1)[1] for part in path.relative_to(root).parts[:-1]
                          if header_key(part.split("=", 1)[0]) in SYMBOL_COLUMNS and "=" in part), None)
        name = unquote(partition).upper() if partition is not None else None
        for symbol, bars in parquet_bars(path, fmt, None if _has_symbol_column(path) else name).items():
            pieces.setdefault(symbol, []).append((bars, str(path)))
    out = {}
    for symbol, parts in pieces.items():
        frame = pd.concat([b for b, _ in parts]).sort_index(kind="stable")
        if not frame.index.is_unique:
            stamp = frame.index[frame.index.duplicated()][0]
            where = [f for b, f in parts if stamp in b.index]
            raise DataError(f"{where[-1]}: symbol {symbol}: timestamp {stamp.isoformat()} is also in {where[0]}")
        out[symbol] = frame
    return out


def _has_symbol_column(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return is_long(pq.read_schema(path).names)
    except Exception:  # unreadable: parquet_bars names the file
        return False


def _columns(raw: pd.DataFrame, source: str, symbol: str) -> dict[str, object]:
    """Header key -> the column as named in the table; two headers meaning one column are refused."""
    by_key: dict[str, object] = {}
    for original in raw.columns:
        key = header_key(original)
        if key in by_key and key in _MEANINGFUL:
            raise bars_error(source, symbol, f"columns '{by_key[key]}' and '{original}' both mean '{key}'")
        by_key.setdefault(key, original)
    return by_key


def _unnamed_first(raw: pd.DataFrame) -> object | None:
    """The first column when it has no name (``DataFrame.to_csv()``'s index column), else None."""
    if len(raw.columns) == 0:
        return None
    first = raw.columns[0]
    text = str(first).strip()
    return first if text == "" or text.startswith("Unnamed: 0") or first is None else None


def _time_index(raw, by_key, time_key, column, source, symbols, rows, fmt: TimeFormat) -> pd.DatetimeIndex:
    if time_key == "date" and "time" in by_key:
        label = f"{by_key['date']}' + '{by_key['time']}"
        text = raw[by_key["date"]].astype(str).str.strip() + " " + raw[by_key["time"]].astype(str).str.strip()
        text = text.where(raw[by_key["date"]].notna() & raw[by_key["time"]].notna())
        return parse_timestamps(text, fmt, source, label, symbols, rows)
    values = raw[column]
    label = str(column) if time_key is not None else "the unnamed first column"
    if pd.api.types.is_datetime64_any_dtype(values):
        return parse_timestamps(values, fmt, source, label, symbols, rows)
    try:
        return parse_timestamps(values, fmt, source, label, symbols, rows)
    except DataError:
        if time_key is None:  # an unnamed column that is not timestamps: say what was looked for
            have = ", ".join(str(c).strip() for c in raw.columns)
            symbol = symbols if isinstance(symbols, str) else symbols[0]
            raise bars_error(source, symbol, f"missing time column, one of: {', '.join(TIME_COLUMNS)}, or an unnamed "
                                             f"first column of timestamps (have: {have})") from None
        raise


def _adjustment(adj_text: pd.Series, close: pd.Series, column: str, source: str, symbol: str,
                rows: np.ndarray) -> np.ndarray:
    """Per-row ``adj_close / close``; a cell that is not a positive finite ratio is an error naming its row."""
    adj = pd.to_numeric(adj_text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    non_numeric = np.isnan(adj) & adj_text.notna().to_numpy()
    close_values = close.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = adj / close_values
    bad = non_numeric | ~np.isfinite(factor) | (factor <= 0)
    if bad.any():
        p = int(np.argmax(bad))
        if non_numeric[p]:
            problem = f"column '{column}' has non-numeric value {str(adj_text.iloc[p]).strip()!r}"
        elif not np.isfinite(adj[p]):
            problem = f"column '{column}' is {format_value(adj[p])}"
        else:
            problem = (f"cannot adjust: {column} {format_value(adj[p])} / close {format_value(close_values[p])} "
                       "is not a positive ratio")
        raise bars_error(source, symbol, problem, row=row_label(close.index, p, rows))
    return factor
