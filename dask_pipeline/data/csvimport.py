"""CSV files (one per symbol) into the bar store, all or nothing.

Accepted files: a header row, then one row per bar. Header names are matched ignoring
case, surrounding spaces, inner spaces, ``_`` and ``-`` (``Adj Close`` = ``adj_close`` =
``ADJCLOSE``). Required: ``open high low close volume`` and a time column, the first
present of ``timestamp``, ``datetime``, ``date``, ``time``; a file with separate
``date`` and ``time`` columns (and neither of the first two) gets them joined. Other
columns (``dividends``, ``symbol``, an unnamed index...) are ignored.

- Timestamps: naive ones are taken as UTC, ones with an offset are converted to UTC.
- ``adj close`` present: open, high, low and close are multiplied by
  ``adj_close / close`` row by row (so the whole bar is on the adjusted scale and stays
  consistent); volume is left as traded.
- The symbol is the file name's stem upper-cased (``brk.b.csv`` -> ``BRK.B``).
- Rows are numbered from 1 at the first line after the header (blank lines skipped).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from dask_pipeline.data.store import check_symbol_name, write_validated
from dask_pipeline.data.validate import BAR_COLUMNS, PRICE_COLUMNS, bars_error, format_value, row_label, validate_bars
from dask_pipeline.errors import DataError

TIME_COLUMNS = ("timestamp", "datetime", "date", "time")
ADJ_CLOSE = "adjclose"


def import_csv(path: str | os.PathLike, out_root: str | os.PathLike) -> list[str]:
    """Import one CSV file, or every ``*.csv`` in a directory, into the store at ``out_root``.

    All or nothing: every file is parsed and validated before any symbol is replaced in
    the store; if any file is bad, the first error (in symbol order) is raised and
    the store is left as it was. Symbols already in the store and not imported are kept;
    imported ones are replaced.

    Returns
    -------
    list of str
        The symbols imported, sorted.

    Raises
    ------
    DataError
        One line naming the file, symbol, row and problem.
    """
    files = csv_files(path)
    symbols = [symbol_of(f) for f in files]
    for symbol, file in zip(symbols, files):
        try:
            check_symbol_name(symbol)
        except DataError as exc:
            raise DataError(f"{file}: {exc}; the symbol is the file name's stem, rename the file") from None
        twins = [str(f) for f, s in zip(files, symbols) if s == symbol]
        if len(twins) > 1:
            raise DataError(f"{twins[1]}: symbol {symbol} also comes from {twins[0]}")
    return write_validated(out_root, ((s, read_csv_bars(f, s)) for f, s in zip(files, symbols)))


def csv_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is a file, else the ``*.csv`` files directly in it (any case), sorted by symbol."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")),
        key=lambda p: (symbol_of(p), p.name),
    )
    if not files:
        raise DataError(f"{path}: no *.csv files in this directory")
    return files


def symbol_of(path: str | os.PathLike) -> str:
    """The symbol a CSV file holds: its stem, upper-cased."""
    return Path(path).stem.strip().upper()


def read_csv_bars(path: str | os.PathLike, symbol: str | None = None) -> pd.DataFrame:
    """Parse and validate one CSV file as contract bars (float64, UTC index).

    Parameters
    ----------
    symbol
        Named in errors; default ``symbol_of(path)``.

    Raises
    ------
    DataError
        One line naming the file, symbol, row and problem.
    """
    source = str(path)
    symbol = symbol or symbol_of(path)
    try:
        raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise bars_error(source, symbol, "no rows (empty file)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise bars_error(source, symbol, f"cannot parse as CSV ({' '.join(str(exc).split())})") from None

    headers = [str(c).strip() for c in raw.columns]
    by_key: dict[str, str] = {}
    for original, header in zip(raw.columns, headers):
        key = _header_key(header)
        if key in by_key and (key in BAR_COLUMNS or key in TIME_COLUMNS or key == ADJ_CLOSE):
            raise bars_error(source, symbol, f"columns '{by_key[key]}' and '{original}' both mean '{key}'")
        by_key.setdefault(key, original)
    have = ", ".join(headers)
    time_key = next((k for k in TIME_COLUMNS if k in by_key), None)
    other = next((d for d in (";", "\t", "|") if len(headers) == 1 and d in headers[0]), None)
    if other is not None:
        raise bars_error(source, symbol, f"the header is one column {headers[0]!r}: fields must be separated "
                                         f"by commas, this file looks {other!r}-separated")
    if time_key is None:
        raise bars_error(source, symbol, f"missing time column, one of: {', '.join(TIME_COLUMNS)} (have: {have})")
    for name in BAR_COLUMNS:
        if name not in by_key:
            raise bars_error(source, symbol, f"missing column '{name}' (have: {have})")
    if raw.empty:
        raise bars_error(source, symbol, "no rows (header only)")
    fields = _unterminated_last_line_fields(path)
    if fields is not None and fields < len(raw.columns):
        raise bars_error(source, symbol, f"the last line has {fields} of {len(raw.columns)} fields and no line end: "
                                         "the file is cut short (an interrupted download or copy?)", row=str(len(raw)))

    index = _timestamps(raw, by_key, time_key, source, symbol)
    text = pd.DataFrame({name: raw[by_key[name]].to_numpy() for name in BAR_COLUMNS}, index=index)
    validate_bars(text, source, symbol)
    bars = text.apply(pd.to_numeric).astype(np.float64)
    if ADJ_CLOSE in by_key:
        factor = _adjustment(raw[by_key[ADJ_CLOSE]], bars["close"], by_key[ADJ_CLOSE], source, symbol)
        for name in PRICE_COLUMNS:
            bars[name] = bars[name] * factor
    return bars


def _unterminated_last_line_fields(path: str | os.PathLike) -> int | None:
    """The number of comma-separated fields on the last line if the file does not end with a line end, else None.

    pandas pads a short last row with empty cells, which would read as a missing price;
    a last line without a line end that is short names the real cause, a truncated file.
    """
    with open(path, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(max(0, size - 64 * 1024))
        tail = stream.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return None
    return tail.rsplit(b"\n", 1)[-1].count(b",") + 1


def _header_key(header: str) -> str:
    return "".join(ch for ch in header.lower() if ch not in " _-\t")


def _timestamps(raw: pd.DataFrame, by_key: dict[str, str], time_key: str, source: str, symbol: str) -> pd.DatetimeIndex:
    """The time column(s) as a UTC ``DatetimeIndex``; a missing or unparseable cell is an error naming its row."""
    column = by_key[time_key]
    text = raw[column]
    if time_key == "date" and "time" in by_key:
        column = f"{by_key['date']}' + '{by_key['time']}"
        text = raw[by_key["date"]].str.strip() + " " + raw[by_key["time"]].str.strip()
    missing = text.isna().to_numpy()
    if missing.any():
        raise bars_error(source, symbol, f"column '{column}' is empty", row=str(int(np.argmax(missing)) + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            stamps = pd.to_datetime(text.str.strip(), utc=True)
        except (ValueError, TypeError, OverflowError):
            # Mixed layouts parse one by one; what still fails is named by row.
            stamps = pd.to_datetime(text.str.strip(), utc=True, format="mixed", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        position = int(np.argmax(bad))
        raise bars_error(source, symbol, f"column '{column}' has unparseable timestamp {text.iloc[position].strip()!r}",
                         row=str(position + 1))
    return pd.DatetimeIndex(stamps, name="timestamp").as_unit("ns")


def _adjustment(adj_text: pd.Series, close: pd.Series, column: str, source: str, symbol: str) -> np.ndarray:
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
            problem = f"cannot adjust: {column} {format_value(adj[p])} / close {format_value(close_values[p])} is not a positive ratio"
        raise bars_error(source, symbol, problem, row=row_label(close.index, p))
    return factor
