"""The bar store: a hive-partitioned Parquet dataset, one part file per symbol.

Layout: ``<root>/symbol=<SYMBOL>/part-0.parquet`` holding ``timestamp`` (UTC, ns) and
``open high low close volume`` as float64, sorted by time, zstd-compressed, in row
groups of about a year of daily bars (21 intraday sessions) with min/max
statistics, so a date-range load skips the row groups outside the range. The symbol
lives only in the directory name (percent-encoded like pyarrow's hive partitioning,
so ``^GSPC`` becomes ``symbol=%5EGSPC``).

The root is a local path or an fsspec URL such as ``s3://bucket/bars`` (see
:mod:`dask_pipeline.data.location`); the layout, the reads and the guarantees are the same.

Writes are all-or-nothing per call: every frame is validated and written into a hidden
staging folder of the root (``.import-*``) before any symbol is touched; then a new
symbol's folder is renamed in whole and an existing symbol's part file replaced. On bad
input nothing is left behind: the staging folder and a root directory that the call
created are removed. A crash or a power cut between the first and last move can leave
some symbols updated, never a half-written file nor a ``symbol=X/`` folder without its part
file (a local part file and its folder are fsynced before they move, the folders they move
into after); a killed writer's staging folder is hidden from every reader and removed by a
later write.
On an object store the objects are staged the same way and each is then copied
server-side over its destination and deleted: a PUT or COPY replaces an object
atomically, so readers see the old part file or the new one, never a part of one.
"""

from __future__ import annotations

import difflib
import errno
import os
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from dask_pipeline.data.location import PathLike, StoreLocation, is_url, locate
from dask_pipeline.data.validate import BAR_COLUMNS, bars_error, first_row_problem, row_label, validate_bars
from dask_pipeline.errors import DataError
from dask_pipeline.results import fsync_dir

PART_FILE = "part-0.parquet"
PARTITION_KEY = "symbol"
DAILY_ROW_GROUP = 252  # a trading year
COMPRESSION = "zstd"

FILE_SCHEMA = pa.schema([("timestamp", pa.timestamp("ns", tz="UTC")), *((c, pa.float64()) for c in BAR_COLUMNS)])
_PARTITIONING = ds.partitioning(pa.schema([(PARTITION_KEY, pa.string())]), flavor="hive")
_TIMESTAMP = FILE_SCHEMA.field("timestamp").type
_PREFIX = f"{PARTITION_KEY}="


def partition_name(symbol: str) -> str:
    """The directory name of ``symbol``'s partition: ``symbol=<SYMBOL>``, NFC, percent-encoded.

    Names that differ only in Unicode normalisation (a file name saved as NFD on macOS, the
    same name typed as NFC) are one symbol and one folder.
    """
    return f"{_PREFIX}{quote(unicodedata.normalize('NFC', symbol), safe='')}"


def symbol_dir(root: PathLike, symbol: str) -> str:
    """The partition directory of ``symbol``: ``<root>/symbol=<SYMBOL>`` (a path or a URL, as ``root``)."""
    location = locate(root)
    return location.name_of(location.join(partition_name(symbol)))


def store_exists(root: PathLike) -> bool:
    """Whether ``root`` is a directory holding at least one ``symbol=...`` partition.

    Raises
    ------
    DataError
        The root exists but cannot be read (permissions, an unreachable object store).
    """
    location = locate(root)
    with location.failures("read the data root"):
        return location.kind(location.path) == "directory" and bool(_partitions(location))


def list_symbols(root: PathLike) -> list[str]:
    """The symbols in the store, sorted.

    Raises
    ------
    DataError
        ``root`` does not exist, is not a directory, or cannot be read.
    """
    return _symbols(_existing_root(root))


def write_bars(root: PathLike, symbol: str, bars: pd.DataFrame, *, row_group_size: int | None = None) -> Path | str:
    """Validate one symbol's bars and write them as ``<root>/symbol=<symbol>/part-0.parquet``.

    Replaces the symbol's existing part file atomically; a naive index is taken as UTC.

    Parameters
    ----------
    row_group_size
        Rows per Parquet row group; default 252 for daily bars, 21 sessions for intraday.

    Returns
    -------
    Path or str
        The part file written: a ``Path`` under a local root, a URL under an object store.
    """
    write_dataset(root, {symbol: bars}, row_group_size=row_group_size)
    part = f"{symbol_dir(root, symbol)}/{PART_FILE}"
    return part if is_url(root) else Path(part)


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
    each frame is written into a hidden staging folder of the root (``.import-*``, which no
    reader lists), and only once the iterable is exhausted without error is each symbol
    moved into place: a new symbol's whole ``symbol=X/`` folder in one rename, an existing
    symbol's part file over the old one. Any exception removes the staging folder and every
    directory this call created; a writer killed at any point leaves at most a staging
    folder, which a later write to the store removes.

    Raises
    ------
    DataError
        Invalid input (from ``items``), or a store that cannot be written (named).
    """
    location = locate(root)
    # Object stores have no directories: nothing to create there, nothing to remove.
    created = _missing_directories(location) if location.local else []
    staging = location.join(f"{_STAGING_PREFIX}{uuid.uuid4().hex}")
    held: int | None = None
    staged: list[str] = []
    try:
        with location.failures("write the store"):
            for directory in created:
                os.mkdir(directory)
            if location.local:
                _remove_stale_staging(location)
                os.mkdir(staging)
                held = _hold(staging)
        seen: set[str] = set()
        for symbol, bars in items:
            check_symbol_name(symbol)
            symbol = unicodedata.normalize("NFC", symbol)  # one symbol, whichever form its name came in
            if symbol in seen:
                raise DataError(f"{location.shown}: symbol {symbol} given twice in one write "
                                "(names that differ only in Unicode form, NFC or NFD, are one symbol)")
            seen.add(symbol)
            table = bars_to_table(bars)
            directory = f"{staging}/{partition_name(symbol)}"
            with location.failures("write the store"):
                if location.local:
                    os.mkdir(directory)
                with location.create(f"{directory}/{PART_FILE}") as sink:
                    pq.write_table(
                        table, sink, compression=COMPRESSION, write_statistics=True,
                        row_group_size=row_group_size or default_row_group_size(bars.index),
                        # Prices are nearly all distinct: dictionaries only cost space;
                        # byte-stream-split doubles compress about 7 % smaller under zstd.
                        use_dictionary=False, use_byte_stream_split=list(BAR_COLUMNS),
                    )
                    if location.local:  # an object store has no fsync: a PUT is whole or absent
                        # On disk before it is published: after a power cut the published name
                        # never points at a file whose blocks were not written yet.
                        sink.flush()
                        os.fsync(sink.fileno())
            staged.append(symbol)
        with location.failures("publish the written files"):
            changed = {_publish_symbol(location, staging, symbol) for symbol in staged}
            for directory in sorted(changed - {None}):
                fsync_dir(directory)  # the renames themselves on disk
    except BaseException:
        _remove_staging(location, staging, held)
        held = None
        for directory in reversed(created):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        raise
    _remove_staging(location, staging, held)
    return staged


#: Hidden staging folders of writes in progress (or killed) under a store root.
_STAGING_PREFIX = ".import-"
_STALE_SECONDS = 60


def _publish_symbol(location: StoreLocation, staging: str, symbol: str) -> str | None:
    """Move one staged symbol into the store: its new folder whole, or its part file over the old one.

    Returns the local folder whose entries the move changed (to fsync once all are moved), or None.
    """
    staged_dir = f"{staging}/{partition_name(symbol)}"
    final_dir = location.join(partition_name(symbol))
    if location.local:
        fsync_dir(staged_dir)  # the part file's name, which a folder renamed whole carries
        try:
            os.rename(staged_dir, final_dir)  # a new symbol appears complete, or not at all
            return location.path
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise
        os.replace(f"{staged_dir}/{PART_FILE}", f"{final_dir}/{PART_FILE}")
        for name in os.listdir(final_dir):  # temp files of writes of older versions that were killed
            if name.startswith(f".{PART_FILE}.") and name.endswith(".tmp"):
                os.unlink(f"{final_dir}/{name}")
        return final_dir
    location.publish(f"{staged_dir}/{PART_FILE}", f"{final_dir}/{PART_FILE}")
    return None


def _hold(folder: str) -> int | None:
    """Lock ``folder`` (flock on the directory) while it is written: a live write is never cleaned away."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _remove_stale_staging(location: StoreLocation) -> None:
    """Remove staging folders that killed writers left: unlocked, and older than a minute."""
    import shutil
    import time

    try:
        import fcntl
    except ImportError:
        return
    for name in os.listdir(location.path):
        path = location.join(name)
        if not name.startswith(_STAGING_PREFIX) or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            if time.time() - os.stat(path).st_mtime < _STALE_SECONDS:
                continue  # just made: its writer may not hold its lock yet
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a write in progress
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def _remove_staging(location: StoreLocation, staging: str, held: int | None) -> None:
    """Best-effort removal of this write's staging folder (an error while cleaning must not hide the first one)."""
    import shutil

    if location.local:
        shutil.rmtree(staging, ignore_errors=True)
    else:
        try:
            location.fs.rm(staging, recursive=True)
        except Exception:  # nothing was staged, or the store went away: nothing more to do
            pass
    if held is not None:
        os.close(held)


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
        Missing root, unknown symbol (with close matches), unknown column, a part
        file that cannot be read (named), or loaded bars that break the data contract
        (NaN, duplicate timestamps, high < low, a text column...: file and row named).
    """
    wanted = _requested_columns(columns)
    symbol = unicodedata.normalize("NFC", symbol)  # as partition_name stores it: the partition filter compares it
    float_type = np.dtype(dtype)
    if float_type.kind != "f":
        raise ValueError(f"dtype must be a float type such as 'float32' or 'float64', got {dtype!r}")
    location = _existing_root(root)
    directory = location.join(partition_name(symbol))
    with location.failures("read the data root"):
        found = location.kind(directory)
    if found != "directory":
        raise DataError(_unknown_symbol(location, symbol))
    files = _part_files(location, directory, symbol)

    condition = ds.field(PARTITION_KEY) == symbol
    if start is not None:
        condition &= ds.field("timestamp") >= pa.scalar(_utc(start).value, type=_TIMESTAMP)
    if end is not None:
        condition &= ds.field("timestamp") <= pa.scalar(inclusive_end(end).value, type=_TIMESTAMP)
    filesystem = location.arrow_filesystem()
    try:
        dataset = ds.dataset(files, filesystem=filesystem, format="parquet", partitioning=_PARTITIONING,
                             partition_base_dir=location.path)
        _require_columns(dataset.schema, ["timestamp", *wanted], location, files, symbol)
        table = dataset.to_table(columns=["timestamp", *wanted], filter=condition)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(location, files, symbol, exc) from None
    bars = table_to_bars(table, wanted, float_type)
    found = first_row_problem(bars)
    if found is not None:
        # Bars another tool wrote may break the contract (NaN, duplicates, high < low). Name
        # the file's row as validate_store does, not a position in this date range.
        _validate_symbol(location, filesystem, symbol)
        position, problem = found  # only out of float64 range: inf as float32
        raise bars_error(location.name_of(files[0]), symbol, problem, row=row_label(bars.index, position))
    return bars


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
    location = _existing_root(root)
    symbols = _symbols(location)
    if not symbols:
        shown = location.shown
        raise DataError(f"{shown}: no symbols (expected {shown}/{PARTITION_KEY}=<SYMBOL>/{PART_FILE})")
    filesystem = location.arrow_filesystem()
    return [_validate_symbol(location, filesystem, symbol) for symbol in symbols]


def _validate_symbol(location: StoreLocation, filesystem: object, symbol: str) -> dict:
    """Read every part file of ``symbol`` in full and validate it: ``validate_store``'s row."""
    directory = location.join(partition_name(symbol))
    files = _part_files(location, directory, symbol)
    source = location.name_of(files[0] if len(files) == 1 else directory)
    tables = []
    for path in files:
        try:
            table = pq.read_table(path, filesystem=filesystem)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(location, [path], symbol, exc) from None
        shown = location.name_of(path)
        if "timestamp" not in table.column_names:
            raise bars_error(shown, symbol, f"missing column 'timestamp' (have: {', '.join(table.column_names)})")
        _check_types(table.schema, table.column_names, shown, symbol)
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    extra = [c for c in table.column_names if c != "timestamp"]
    bars = table_to_bars(table, extra, None)
    validate_bars(bars, source, symbol)
    return {"symbol": symbol, "rows": len(bars), "first": bars.index[0], "last": bars.index[-1]}


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
        with np.errstate(over="ignore"):  # a price beyond float32 becomes inf, which load_bars reports
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


def _existing_root(root: PathLike) -> StoreLocation:
    location = locate(root)
    with location.failures("read the data root"):
        found = location.kind(location.path)
    if found is None:
        raise DataError(f"{location.shown}: no such data directory")
    if found != "directory":
        raise DataError(f"{location.shown}: not a directory (expected a store root with {PARTITION_KEY}=<SYMBOL>/ folders)")
    return location


def _symbols(location: StoreLocation) -> list[str]:
    with location.failures("list the data root"):
        names = _partitions(location)
    symbols: dict[str, str] = {}
    for name in sorted(names):
        symbol = unquote(name[len(_PREFIX):])
        twin = symbols.setdefault(unicodedata.normalize("NFC", symbol), name)
        if twin != name:  # written by another tool: one symbol in two Unicode forms
            raise DataError(f"{location.shown}: {twin} and {name} are one symbol in two Unicode forms (NFC, NFD); "
                            "keep one of them")
    return sorted(unquote(name[len(_PREFIX):]) for name in names)


def _partitions(location: StoreLocation) -> list[str]:
    """The names of the ``symbol=...`` directories directly under the root."""
    names = (entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in location.listing(location.path)
             if entry["type"] == "directory")
    return [name for name in names if name.startswith(_PREFIX)]


def _missing_directories(location: StoreLocation) -> list[str]:
    """The local root and those of its parents that do not exist yet, outermost first."""
    missing = []
    path = location.path.rstrip("/") or "/"
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def _requested_columns(columns: Iterable[str] | None) -> list[str]:
    wanted = list(BAR_COLUMNS) if columns is None else [columns] if isinstance(columns, str) else list(columns)
    for name in wanted:
        if name not in BAR_COLUMNS:
            raise DataError(f"unknown column {name!r} (bars have: {', '.join(BAR_COLUMNS)})")
    return wanted


def _part_files(location: StoreLocation, directory: str, symbol: str) -> list[str]:
    with location.failures("list the data root"):
        entries = location.listing(directory)
    files = sorted(
        name for name in (e["name"] for e in entries if e["type"] == "file")
        if name.endswith(".parquet") and not name.rsplit("/", 1)[-1].startswith((".", "_"))
    )
    if not files:
        leftovers = [e["name"].rsplit("/", 1)[-1] for e in entries if e["name"].endswith(".tmp")]
        why = f" (only {leftovers[0]}, a temp file of an interrupted import: rerun the import)" if leftovers else ""
        raise DataError(f"{location.name_of(directory)}: symbol {symbol}: no parquet files (expected {PART_FILE})"
                        f"{why}")
    return files


def _require_columns(schema: pa.Schema, names: list[str], location: StoreLocation, files: list[str], symbol: str) -> None:
    for name in names:
        if name not in schema.names:
            source = location.name_of(files[0] if len(files) == 1 else files[0].rsplit("/", 1)[0])
            have = ", ".join(n for n in schema.names if n != PARTITION_KEY)
            raise bars_error(source, symbol, f"missing column '{name}' (have: {have})")
    _check_types(schema, names, location.name_of(files[0]), symbol)


def _check_types(schema: pa.Schema, names: list[str], source: str, symbol: str) -> None:
    # Files from other tools: text prices or timestamps would load as garbage or fail deep in a task.
    for name in names:
        kind = schema.field(name).type
        if name == "timestamp" and not pa.types.is_timestamp(kind):
            raise bars_error(source, symbol, f"column 'timestamp' has type {kind}, expected a timestamp")
        if name in BAR_COLUMNS and not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise bars_error(source, symbol, f"column '{name}' has type {kind}, expected float64")


def _unknown_symbol(location: StoreLocation, symbol: str) -> str:
    symbols = _symbols(location)
    by_upper = {s.upper(): s for s in symbols}
    matches = difflib.get_close_matches(symbol.upper(), list(by_upper), n=5, cutoff=0.6)
    if matches:
        hint = f"close matches: {', '.join(by_upper[m] for m in matches)}"
    elif symbols:
        hint = f"no close match among {len(symbols)} symbols, e.g. {', '.join(symbols[:5])}"
    else:
        hint = "the store has no symbols"
    return f"{location.shown}: unknown symbol {symbol!r} ({hint})"


def _unreadable(location: StoreLocation, files: list[str], symbol: str, exc: BaseException) -> DataError:
    """Name the file that cannot be read: the first whose footer fails, else the first file."""
    bad, reason = files[0], exc
    filesystem = location.arrow_filesystem()
    for path in files:
        try:
            pq.read_metadata(path, filesystem=filesystem)
        except (pa.ArrowException, OSError) as footer_exc:
            bad, reason = path, footer_exc
            break
    text = " ".join(str(reason).split()) or type(reason).__name__
    return bars_error(location.name_of(bad), symbol, f"unreadable Parquet file ({text})")
