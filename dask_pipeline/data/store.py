"""The bar store: a hive-partitioned Parquet dataset, one part file per symbol.

Layout: ``<root>/symbol=<SYMBOL>/part-0.parquet`` holding ``timestamp`` (UTC, ns) and
``open high low close volume`` as float64, sorted by time, zstd-compressed, in row
groups of about a year of daily bars (21 intraday sessions) with min/max
statistics, so a date-range load skips the row groups outside the range. The symbol
lives only in the directory name (percent-encoded like pyarrow's hive partitioning,
so ``^GSPC`` becomes ``symbol=%5EGSPC``).

Writes are all-or-nothing per call: every frame is validated (and written to a hidden
temp file next to its destination) before any destination file is replaced, each by
``os.replace``. On bad input nothing is left behind: temp files, symbol directories and
a root directory that the call created are removed. A crash between the first and
last replace can leave some symbols updated, never a half-written file.
"""

from __future__ import annotations

import difflib
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dask_pipeline.data.validate import BAR_COLUMNS, bars_error, validate_bars
from dask_pipeline.errors import DataError

PART_FILE = "part-0.parquet"
PARTITION_KEY = "symbol"
DAILY_ROW_GROUP = 252  # a trading year
COMPRESSION = "zstd"

FILE_SCHEMA = pa.schema([("timestamp", pa.timestamp("ns", tz="UTC")), *((c, pa.float64()) for c in BAR_COLUMNS)])
_PARTITIONING = ds.partitioning(pa.schema([(PARTITION_KEY, pa.string())]), flavor="hive")
_TIMESTAMP = FILE_SCHEMA.field("timestamp").type

PathLike = str | os.PathLike


def symbol_dir(root: PathLike, symbol: str) -> Path:
    """The partition directory of ``symbol``: ``<root>/symbol=<SYMBOL>``."""
    return Path(root) / f"{PARTITION_KEY}={quote(symbol, safe='')}"


def store_exists(root: PathLike) -> bool:
    """Whether ``root`` is a directory holding at least one ``symbol=...`` partition."""
    path = Path(root)
    return path.is_dir() and any(p.is_dir() and p.name.startswith(f"{PARTITION_KEY}=") for p in path.iterdir())


def list_symbols(root: PathLike) -> list[str]:
    """The symbols in the store, sorted.

    Raises
    ------
    DataError
        ``root`` does not exist or is not a directory.
    """
    path = _existing_root(root)
    prefix = f"{PARTITION_KEY}="
    return sorted(unquote(p.name[len(prefix):]) for p in path.iterdir() if p.is_dir() and p.name.startswith(prefix))


def write_bars(root: PathLike, symbol: str, bars: pd.DataFrame, *, row_group_size: int | None = None) -> Path:
    """Validate one symbol's bars and write them as ``<root>/symbol=<symbol>/part-0.parquet``.

    Replaces the symbol's existing part file atomically; a naive index is taken as UTC.

    Parameters
    ----------
    row_group_size
        Rows per Parquet row group; default 252 for daily bars, 21 sessions for intraday.

    Returns
    -------
    Path
        The part file written.
    """
    write_dataset(root, {symbol: bars}, row_group_size=row_group_size)
    return symbol_dir(root, symbol) / PART_FILE


def write_dataset(root: PathLike, bars_by_symbol: Mapping[str, pd.DataFrame], *, row_group_size: int | None = None) -> list[str]:
    """Validate every symbol's bars, then write them all (nothing is written if any is invalid).

    Parameters
    ----------
    root
        Store root; created if missing. Symbols already there and not in ``bars_by_symbol`` are kept.
    bars_by_symbol
        ``{symbol: bars}``, bars as in the data contract (float64 or float32, naive index = UTC).

    Returns
    -------
    list of str
        The symbols written, in the mapping's order.
    """
    for symbol, bars in bars_by_symbol.items():
        check_symbol_name(symbol)
        validate_bars(bars, f"bars_by_symbol[{symbol!r}]", symbol)
    return write_validated(root, bars_by_symbol.items(), row_group_size=row_group_size)


def write_validated(
    root: PathLike, items: Iterable[tuple[str, pd.DataFrame]], *, row_group_size: int | None = None
) -> list[str]:
    """Write already validated ``(symbol, bars)`` pairs, all or nothing.

    ``items`` may be a lazy iterable that validates as it goes (as ``import_csv`` does):
    each frame goes to a hidden temp file beside its destination, and only once the
    iterable is exhausted without error are the temp files moved into place. Any
    exception removes every temp file and every directory this call created.
    """
    root = Path(root)
    created: list[Path] = [d for d in (*reversed(root.parents), root) if not d.exists()]
    staged: list[tuple[Path, Path]] = []
    temp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        written: list[str] = []
        seen: set[str] = set()
        for symbol, bars in items:
            check_symbol_name(symbol)
            if symbol in seen:
                raise DataError(f"{root}: symbol {symbol} given twice in one write")
            seen.add(symbol)
            written.append(symbol)
            directory = symbol_dir(root, symbol)
            if not directory.exists():
                directory.mkdir()
                created.append(directory)
            # Hidden (dataset discovery skips dot files), unique, and created with the
            # umask's permissions (mkstemp's 0600 would lock out workers run as another user).
            temp = directory / f".{PART_FILE}.{uuid.uuid4().hex}.tmp"
            with open(temp, "xb") as sink:
                pq.write_table(
                    bars_to_table(bars), sink, compression=COMPRESSION, write_statistics=True,
                    row_group_size=row_group_size or default_row_group_size(bars.index),
                    # Prices are nearly all distinct: dictionaries only cost space;
                    # byte-stream-split doubles compress about 7 % smaller under zstd.
                    use_dictionary=False, use_byte_stream_split=list(BAR_COLUMNS),
                )
            staged.append((temp, directory / PART_FILE))
            temp = None
    except BaseException:
        for path in [temp, *(t for t, _ in staged)]:
            if path is not None:
                path.unlink(missing_ok=True)
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
        raise
    for staged_file, final in staged:
        os.replace(staged_file, final)
    return written


def load_bars(
    root: PathLike,
    symbol: str,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    columns: Iterable[str] | None = None,
    dtype: str | np.dtype = "float32",
) -> pd.DataFrame:
    """Read one symbol's bars, only the requested columns and time range.

    The read goes through ``pyarrow.dataset`` over the symbol's partition with filters
    on ``symbol`` and ``timestamp``, so row groups outside the range are skipped by
    their statistics and other columns are never decoded.

    Parameters
    ----------
    start, end
        Inclusive bounds (naive = UTC), or None for open. An ``end`` with no time of
        day (``"2020-06-30"``, or midnight) covers that whole day, as pandas'
        ``.loc["...":"2020-06-30"]`` does.
    columns
        Subset of ``open high low close volume`` in the order wanted; None for all.
    dtype
        ``"float32"`` (default) or ``"float64"``; the store holds float64.

    Returns
    -------
    DataFrame
        Index ``timestamp`` (UTC), the requested columns; no rows if the range holds none.

    Raises
    ------
    DataError
        Missing root, unknown symbol (with close matches), unknown column, or a part
        file that cannot be read (named).
    """
    wanted = _requested_columns(columns)
    float_type = np.dtype(dtype)
    if float_type.kind != "f":
        raise ValueError(f"dtype must be a float type such as 'float32' or 'float64', got {dtype!r}")
    root = _existing_root(root)
    directory = symbol_dir(root, symbol)
    if not directory.is_dir():
        raise DataError(_unknown_symbol(root, symbol))
    files = _part_files(directory, symbol)

    condition = ds.field(PARTITION_KEY) == symbol
    if start is not None:
        condition &= ds.field("timestamp") >= pa.scalar(_utc(start).value, type=_TIMESTAMP)
    if end is not None:
        condition &= ds.field("timestamp") <= pa.scalar(inclusive_end(end).value, type=_TIMESTAMP)
    try:
        dataset = ds.dataset(str(directory), format="parquet", partitioning=_PARTITIONING, partition_base_dir=str(root))
        _require_columns(dataset.schema, ["timestamp", *wanted], files, symbol)
        table = dataset.to_table(columns=["timestamp", *wanted], filter=condition)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(files, symbol, exc) from None
    return table_to_bars(table, wanted, float_type)


def validate_store(root: PathLike) -> list[dict]:
    """Read and validate every symbol of the store; stop at the first bad one.

    Returns
    -------
    list of dict
        Per symbol, sorted: ``{"symbol", "rows", "first", "last"}`` (timestamps UTC).

    Raises
    ------
    DataError
        The first problem, naming the part file, symbol and row; also an empty store.
    """
    root = _existing_root(root)
    symbols = list_symbols(root)
    if not symbols:
        raise DataError(f"{root}: no symbols (expected {root}/{PARTITION_KEY}=<SYMBOL>/{PART_FILE})")
    summary = []
    for symbol in symbols:
        files = _part_files(symbol_dir(root, symbol), symbol)
        source = str(files[0]) if len(files) == 1 else str(symbol_dir(root, symbol))
        tables = []
        for path in files:
            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                raise _unreadable([path], symbol, exc) from None
            if "timestamp" not in table.column_names:
                raise bars_error(str(path), symbol, f"missing column 'timestamp' (have: {', '.join(table.column_names)})")
            stamp_type = table.schema.field("timestamp").type
            if not pa.types.is_timestamp(stamp_type):
                raise bars_error(str(path), symbol, f"column 'timestamp' has type {stamp_type}, expected a timestamp")
            tables.append(table)
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        extra = [c for c in table.column_names if c != "timestamp"]
        bars = table_to_bars(table, extra, None)
        validate_bars(bars, source, symbol)
        summary.append({"symbol": symbol, "rows": len(bars), "first": bars.index[0], "last": bars.index[-1]})
    return summary


def check_symbol_name(symbol: str) -> None:
    """Raise ``DataError`` unless ``symbol`` can name a partition (non-empty, no spaces or control characters)."""
    printable = isinstance(symbol, str) and all(ch.isprintable() and not ch.isspace() for ch in symbol)
    if not printable or symbol in {"", ".", ".."}:
        raise DataError(f"invalid symbol {symbol!r}: expected a non-empty name without spaces, e.g. 'AAPL' or 'BRK.B'")


def bars_to_table(bars: pd.DataFrame) -> pa.Table:
    """Contract bars as the stored Arrow table: UTC ns ``timestamp`` then float64 columns, no pandas metadata."""
    index = pd.DatetimeIndex(bars.index)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    arrays = [pa.array(index.as_unit("ns"), type=_TIMESTAMP)]
    arrays += [pa.array(pd.to_numeric(bars[c]).to_numpy(dtype=np.float64)) for c in BAR_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=FILE_SCHEMA)


def table_to_bars(table: pa.Table, columns: list[str], dtype: np.dtype | None) -> pd.DataFrame:
    """An Arrow table with ``timestamp`` as contract bars (UTC ns index, sorted); ``dtype`` None keeps the stored type."""
    stamps = table.column("timestamp").to_pandas()
    index = pd.DatetimeIndex(stamps, name="timestamp")
    index = (index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")).as_unit("ns")
    data = {}
    for name in columns:
        values = table.column(name).to_numpy()
        data[name] = values if dtype is None else values.astype(dtype, copy=False)
    bars = pd.DataFrame(data, index=index, columns=list(columns))
    return bars if index.is_monotonic_increasing else bars.sort_index(kind="stable")


def default_row_group_size(index: pd.DatetimeIndex) -> int:
    """252 rows for daily bars; 21 sessions' worth for intraday (e.g. 1638 five-minute bars)."""
    if len(index) == 0:
        return DAILY_ROW_GROUP
    per_day = int(np.ceil(len(index) / max(pd.DatetimeIndex(index).normalize().nunique(), 1)))
    return max(DAILY_ROW_GROUP, 21 * per_day)


def inclusive_end(end: str | pd.Timestamp) -> pd.Timestamp:
    """The last instant an inclusive ``end`` admits: the end of the day if it has no time of day."""
    stamp = _utc(end)
    return stamp + pd.Timedelta(days=1) - pd.Timedelta(1, "ns") if stamp == stamp.normalize() else stamp


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{value!r} is not a timestamp (expected e.g. 2020-01-31)") from exc
    return (stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")).as_unit("ns")


def _existing_root(root: PathLike) -> Path:
    path = Path(root)
    if not path.exists():
        raise DataError(f"{path}: no such data directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory (expected a store root with {PARTITION_KEY}=<SYMBOL>/ folders)")
    return path


def _requested_columns(columns: Iterable[str] | None) -> list[str]:
    wanted = list(BAR_COLUMNS) if columns is None else [columns] if isinstance(columns, str) else list(columns)
    for name in wanted:
        if name not in BAR_COLUMNS:
            raise DataError(f"unknown column {name!r} (bars have: {', '.join(BAR_COLUMNS)})")
    return wanted


def _part_files(directory: Path, symbol: str) -> list[Path]:
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise DataError(f"{directory}: symbol {symbol}: no parquet files (expected {PART_FILE})")
    return files


def _require_columns(schema: pa.Schema, names: list[str], files: list[Path], symbol: str) -> None:
    for name in names:
        if name not in schema.names:
            source = str(files[0]) if len(files) == 1 else str(files[0].parent)
            have = ", ".join(n for n in schema.names if n != PARTITION_KEY)
            raise bars_error(source, symbol, f"missing column '{name}' (have: {have})")


def _unknown_symbol(root: Path, symbol: str) -> str:
    symbols = list_symbols(root)
    by_upper = {s.upper(): s for s in symbols}
    matches = difflib.get_close_matches(symbol.upper(), list(by_upper), n=5, cutoff=0.6)
    if matches:
        hint = f"close matches: {', '.join(by_upper[m] for m in matches)}"
    elif symbols:
        hint = f"no close match among {len(symbols)} symbols, e.g. {', '.join(symbols[:5])}"
    else:
        hint = "the store has no symbols"
    return f"{root}: unknown symbol {symbol!r} ({hint})"


def _unreadable(files: list[Path], symbol: str, exc: BaseException) -> DataError:
    """Name the file that cannot be read: the first whose footer fails, else the first file."""
    bad, reason = files[0], exc
    for path in files:
        try:
            pq.read_metadata(path)
        except (pa.ArrowException, OSError) as footer_exc:
            bad, reason = path, footer_exc
            break
    text = " ".join(str(reason).split()) or type(reason).__name__
    return bars_error(str(bad), symbol, f"unreadable Parquet file ({text})")
