"""Content-addressed cache of computed features, one Parquet file per key.

The key hashes everything the features are a function of: the bars as the kernels see
them (timestamps and float64 OHLCV), the resolved indicator list (with the code identity
of each user indicator, so an edited indicator never hits values of its old code), the benchmark close
aligned to the bars (only when an indicator reads it) and ``dask_pipeline.__version__``.
Any change of data, spec or version is a miss; the same inputs hit and compute nothing.
Files are written to a temporary name in the cache directory and renamed into place, so
concurrent writers of one key never leave a partial file: the last rename wins, and
every rename installs a complete file.

Each file carries the SHA-256 of its values in its Parquet metadata, checked on every
read: a file that another process, a bad disk or a flipped bit changed is not used; it is
logged once (the rewrite makes it good again), recomputed and replaced. A cache folder
that cannot be written (full, read-only) is logged once per folder and the run goes on
uncached: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

import dask_pipeline
from dask_pipeline.features import engine
from dask_pipeline.results import atomic_path

# v2: files carry their content hash (v1 files have none, and are never read again).
_SALT = b"dask-pipeline/features/v2"
_HASH_KEY = b"dask_pipeline.sha256"

log = logging.getLogger(__name__)
_unwritable: set[str] = set()  # cache folders already reported as unwritable in this process


def cache_key(
    bars: pd.DataFrame, spec=None, benchmark: pd.DataFrame | None = None, *, symbol: str | None = None
) -> str:
    """The cache key (32 hex digits) of ``compute(bars, spec, benchmark)``.

    Raises the same DataError/ConfigError as :func:`engine.compute` for bad input.
    """
    where = f"symbol {symbol!r}" if symbol else "bars"
    key = engine._spec_key(spec)
    plan = engine._plan(key)
    columns = engine._bar_arrays(bars, where)
    digest = hashlib.blake2b(_SALT, digest_size=16)
    digest.update(str(dask_pipeline.__version__).encode())
    # A user indicator's code identity joins its entry: editing its code is a miss.
    resolved = [[ind_name, params, *([indicator.code] if indicator.code else [])]
                for (ind_name, _), (indicator, params, _) in zip(key, plan)]
    digest.update(json.dumps(resolved, sort_keys=True).encode())
    digest.update(str(bars.index.tz).encode())
    digest.update(np.ascontiguousarray(bars.index.asi8).tobytes())
    for name in engine.BAR_COLUMNS:
        digest.update(name.encode())
        digest.update(columns[name].tobytes())
    if any(indicator.needs_benchmark for indicator, _, _ in plan) and benchmark is not None:
        digest.update(b"benchmark")
        digest.update(engine._aligned_close(benchmark, bars.index, where).tobytes())
    return digest.hexdigest()


def compute_cached(
    bars: pd.DataFrame,
    spec=None,
    benchmark: pd.DataFrame | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    symbol: str | None = None,
) -> pd.DataFrame:
    """:func:`engine.compute`, through the feature cache.

    Parameters
    ----------
    bars, spec, benchmark, symbol
        As for :func:`dask_pipeline.features.compute`.
    cache_dir : path, optional
        Directory of the cache files. Defaults to ``spec.cache_dir`` when ``spec`` is a
        FeaturesConfig; with neither, or with ``spec.cache`` false, nothing is cached.

    Returns
    -------
    DataFrame
        Identical to ``compute(bars, spec, benchmark)``.
    """
    return compute_or_read(bars, spec, benchmark, cache_dir=cache_dir, symbol=symbol)[0]


def compute_or_read(
    bars: pd.DataFrame,
    spec=None,
    benchmark: pd.DataFrame | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    symbol: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """:func:`compute_cached`, and where its frame came from: ``"disk"`` (a verified cache
    file) or ``"computed"`` (by the kernels: a miss, a damaged file, or no cache)."""
    enabled = getattr(spec, "cache", True)
    directory = cache_dir if cache_dir is not None else getattr(spec, "cache_dir", None)
    if not enabled or directory is None:
        return engine.compute(bars, spec, benchmark, symbol=symbol), "computed"

    path = Path(directory) / f"{cache_key(bars, spec, benchmark, symbol=symbol)}.parquet"
    cached = _read(path, engine.feature_columns(spec), len(bars))
    if cached is not None:
        cached.index = bars.index
        return cached, "disk"
    features = engine.compute(bars, spec, benchmark, symbol=symbol)
    _write(path, features)
    return features, "computed"


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's index and columns: names, dtypes and values, in order."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(pd.DatetimeIndex(frame.index).asi8).tobytes())
    for name in frame.columns:
        values = np.ascontiguousarray(frame[name].to_numpy())
        digest.update(f"{name}\0{values.dtype.str}\0".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def _write(path: Path, features: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(features)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           _HASH_KEY: content_hash(features).encode()})
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError as exc:
        if str(path.parent) not in _unwritable:
            _unwritable.add(str(path.parent))
            log.warning("warning: feature cache %s cannot be written (%s); features are computed without it",
                        path.parent, exc.strerror or exc)


def _read(path: Path, columns: list[str], n_rows: int) -> pd.DataFrame | None:
    """The cached frame at ``path``; None when absent, or when it is not what this key must hold."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # any way a damaged file fails to decode: never the run's problem
        return _damaged(path, f"unreadable: {' '.join(str(exc).split())[:200]}")
    try:
        stored = (table.schema.metadata or {}).get(_HASH_KEY, b"").decode()
        frame = table.to_pandas()
    except Exception as exc:
        return _damaged(path, f"undecodable: {' '.join(str(exc).split())[:200]}")
    if list(frame.columns) != columns or len(frame) != n_rows or stored != content_hash(frame):
        return _damaged(path, "its values do not match the content hash written with them")
    return frame


def _damaged(path: Path, reason: str) -> None:
    # Logged when found; the recomputed file replaces it, so the next read is a plain hit.
    log.warning("warning: feature cache file %s is damaged (%s); recomputed and replaced", path, reason)
    return None
