"""``dask-pipeline data import``: CSV and Parquet files into the bar store, all or nothing.

What it reads (``import_bars``):

- **CSV files**, one file or every ``*.csv`` directly in a folder. A file without a
  ``symbol``/``ticker`` column holds one symbol, named by the file's stem upper-cased
  (``brk.b.csv`` -> ``BRK.B``); with one it is in the long format
  (``timestamp, symbol, open, high, low, close[, volume]``) and may hold many.
- **A Parquet file**: the long format (a symbol column), one symbol's bars (``open high
  low close`` and no symbol column: named by the stem), or a wide table of closes (one
  column per symbol, ``dask_pipeline.data.wideformat``).
- **A Parquet dataset**: a folder of ``*.parquet`` files (any depth; ``symbol=XYZ``
  partition folders name a file's symbol) in the long format.

Columns, time columns (an unnamed first column included), adjusted closes and optional
volume: ``dask_pipeline.data.longformat``; timestamp text (formats, day-first dates and
refused ambiguity, ``--tz`` local times): ``dask_pipeline.data.timestamps``. Rows are
numbered from 1 at the first line after the header (blank lines skipped) and every error
names the file, the symbol and the row. All or nothing: every file is read and validated
before any symbol of the store is replaced; a symbol that two files (or two parts of one
import) both give is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from dask_pipeline.data.longformat import TIME_COLUMNS, dataset_bars, is_long, parquet_bars, table_bars
from dask_pipeline.data.store import check_symbol_name, write_validated
from dask_pipeline.data.timestamps import TimeFormat
from dask_pipeline.data.validate import bars_error
from dask_pipeline.data.wideformat import is_wide, wide_bars
from dask_pipeline.errors import DataError

__all__ = ["TIME_COLUMNS", "csv_files", "import_bars", "import_csv", "read_csv_bars", "symbol_of"]

PARQUET_SUFFIXES = (".parquet", ".pq")


def import_bars(source: str | os.PathLike, out_root: str | os.PathLike, fmt: TimeFormat = TimeFormat()) -> list[str]:
    """Import CSV or Parquet bars (see the module docstring) into the store at ``out_root``.

    Symbols already in the store and not imported are kept; imported ones are replaced.

    Returns
    -------
    list of str
        The symbols imported, sorted.

    Raises
    ------
    DataError
        One line naming the file, symbol, row and problem; the store is left as it was.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir() and not _csvs_in(path) and any(path.rglob("*.parquet")):
        return _write(out_root, ((s, b, str(path)) for s, b in dataset_bars(path, fmt).items()))
    if path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES:
        return _write(out_root, _parquet_items(path, fmt))
    return import_csv(path, out_root, fmt)


def import_csv(path: str | os.PathLike, out_root: str | os.PathLike, fmt: TimeFormat = TimeFormat()) -> list[str]:
    """Import one CSV file, or every ``*.csv`` in a directory, into the store at ``out_root``.

    All or nothing: every file is parsed and validated before any symbol is replaced in
    the store; if any file is bad, the first error (in file order) is raised and the
    store is left as it was.

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
    stems = [symbol_of(f) for f in files]
    for stem, file in zip(stems, files):
        twins = [str(f) for f, s in zip(files, stems) if s == stem]
        if len(twins) > 1:
            raise DataError(f"{twins[1]}: symbol {stem} also comes from {twins[0]}")
    return _write(out_root, (item for f in files for item in _csv_items(f, fmt)))


def csv_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is a file, else the ``*.csv`` files directly in it (any case), sorted by symbol."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    files = _csvs_in(path)
    if not files:
        raise DataError(f"{path}: no *.csv files in this directory (nor *.parquet files under it)")
    return files


def symbol_of(path: str | os.PathLike) -> str:
    """The symbol a one-symbol file holds: its stem, upper-cased."""
    return Path(path).stem.strip().upper()


def read_csv_bars(path: str | os.PathLike, symbol: str | None = None, fmt: TimeFormat = TimeFormat()) -> pd.DataFrame:
    """Parse and validate one CSV file of one symbol as contract bars (float64, UTC index).

    Parameters
    ----------
    symbol
        Named in errors; default ``symbol_of(path)``.
    fmt
        How to read the timestamps (``--date-format``, ``--dayfirst``, ``--tz``).

    Raises
    ------
    DataError
        One line naming the file, symbol, row and problem.
    """
    symbol = symbol or symbol_of(path)
    return table_bars(_read_csv(path, symbol), str(path), fmt, symbol)[symbol]


def _csv_items(file: Path, fmt: TimeFormat) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """``(symbol, bars, file)`` of one CSV file: its one symbol, or each symbol of a long file."""
    stem = symbol_of(file)
    raw = _read_csv(file, stem)
    if is_long(raw.columns):
        yield from ((s, b, str(file)) for s, b in table_bars(raw, str(file), fmt).items())
        return
    try:
        check_symbol_name(stem)
    except DataError as exc:
        raise DataError(f"{file}: {exc}; the symbol is the file name's stem, rename the file") from None
    yield stem, table_bars(raw, str(file), fmt, stem)[stem], str(file)


def _parquet_items(path: Path, fmt: TimeFormat) -> Iterator[tuple[str, pd.DataFrame, str]]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception:  # unreadable: the readers below name the file and the cause
        names = ["symbol"]
    if is_wide([n for n in names if n != "__index_level_0__"]):
        bars = wide_bars(path, fmt)
    else:
        bars = parquet_bars(path, fmt, None if is_long(names) else symbol_of(path))
    yield from ((s, b, str(path)) for s, b in bars.items())


def _write(out_root: str | os.PathLike, items) -> list[str]:
    """Write ``(symbol, bars, source)`` items all or nothing; a symbol from two sources is refused."""
    seen: dict[str, str] = {}

    def checked():
        for symbol, bars, source in items:
            try:
                check_symbol_name(symbol)
            except DataError as exc:
                raise DataError(f"{source}: {exc}") from None
            if symbol in seen:
                also = "" if seen[symbol] == source else f" also comes from {seen[symbol]}"
                raise DataError(f"{source}: symbol {symbol}{also or ' appears twice'}")
            seen[symbol] = source
            yield symbol, bars

    return sorted(write_validated(out_root, checked()))


def _csvs_in(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith(".")),
        key=lambda p: (symbol_of(p), p.name),
    )


def _read_csv(path: str | os.PathLike, symbol: str) -> pd.DataFrame:
    """The file as text cells (the header row, then data rows), or a ``DataError`` saying why it is not a CSV."""
    source = str(path)
    try:
        raw = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise bars_error(source, symbol, "no rows (empty file)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise bars_error(source, symbol, f"cannot parse as CSV ({' '.join(str(exc).split())})") from None
    headers = [str(c).strip() for c in raw.columns]
    other = next((d for d in (";", "\t", "|") if len(headers) == 1 and d in headers[0]), None)
    if other is not None:
        raise bars_error(source, symbol, f"the header is one column {headers[0]!r}: fields must be separated "
                                         f"by commas, this file looks {other!r}-separated")
    fields = _unterminated_last_line_fields(path)
    if fields is not None and fields < len(raw.columns) and len(raw):
        raise bars_error(source, symbol, f"the last line has {fields} of {len(raw.columns)} fields and no line end: "
                                         "the file is cut short (an interrupted download or copy?)", row=str(len(raw)))
    return raw


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
