"""Content-addressed cache of computed features, one Parquet file per key.

The key hashes everything the features are a function of: the bars as the kernels see
them (timestamps and float64 OHLCV), the resolved indicator list (with the code identity
of each user indicator, so an edited indicator never hits values of its old code), the benchmark close
aligned to the bars (only when an indicator reads it) and ``dask_pipeline.__version__``.
Any change of data, spec or version is a miss; the same inputs hit and compute nothing.
Files are written to a temporary name in the cache directory and renamed into place, so
concurrent writers of one key never leave a partial file: the last rename wins, and
every rename installs a complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

import dask_pipeline
from dask_pipeline.features import engine
from dask_pipeline.results import write_parquet

_SALT = b"dask-pipeline/features/v1"


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
    enabled = getattr(spec, "cache", True)
    directory = cache_dir if cache_dir is not None else getattr(spec, "cache_dir", None)
    if not enabled or directory is None:
        return engine.compute(bars, spec, benchmark, symbol=symbol)

    path = Path(directory) / f"{cache_key(bars, spec, benchmark, symbol=symbol)}.parquet"
    cached = _read(path, engine.feature_columns(spec), len(bars))
    if cached is not None:
        cached.index = bars.index
        return cached
    features = engine.compute(bars, spec, benchmark, symbol=symbol)
    write_parquet(path, features)
    return features


def _read(path: Path, columns: list[str], n_rows: int) -> pd.DataFrame | None:
    """The cached frame at ``path``; None when absent or not what this key must hold."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError):  # absent, or damaged by something else: recompute, replace
        return None
    if list(frame.columns) != columns or len(frame) != n_rows:
        return None
    return frame
