"""Market data: the Parquet bar store, CSV import, validation and a synthetic market.

Bars (the data contract): one DataFrame per symbol, ``DatetimeIndex`` named
``timestamp`` (UTC, unique, strictly increasing), columns ``open high low close volume``
(volume NaN where missing: price-only bars); float64 on disk, float32 when loaded unless
asked otherwise.
"""

from dask_pipeline.data.csvimport import import_bars, import_csv, read_csv_bars
from dask_pipeline.data.store import list_symbols, load_bars, store_exists, validate_store, write_bars, write_dataset
from dask_pipeline.data.synth import bar_calendar, synthesize
from dask_pipeline.data.timestamps import TimeFormat
from dask_pipeline.data.validate import BAR_COLUMNS, validate_bars

__all__ = [
    "BAR_COLUMNS",
    "TimeFormat",
    "bar_calendar",
    "import_bars",
    "import_csv",
    "list_symbols",
    "load_bars",
    "read_csv_bars",
    "store_exists",
    "synthesize",
    "validate_bars",
    "validate_store",
    "write_bars",
    "write_dataset",
]
