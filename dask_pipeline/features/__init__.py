"""Feature stage: technical indicators (numba kernels), feature engine, scalers, cache.

``compute(bars, spec, benchmark)`` turns one symbol's bars into float32 feature
columns named ``<indicator>_<params>``; ``compute_cached`` does the same through a
content-addressed Parquet cache. Indicators are listed in ``INDICATORS``; user code adds
its own with ``@indicator("name")``, checked for look-ahead by ``check_lookahead``.
"""

from dask_pipeline.features.cache import cache_key, compute_cached
from dask_pipeline.features.custom import indicator
from dask_pipeline.features.engine import INDICATORS, compute, feature_columns
from dask_pipeline.features.scalers import make_scaler
from dask_pipeline.features.lookahead import LookAheadError, check_lookahead
from dask_pipeline.features.spec import DEFAULT_INDICATORS, FeaturesConfig, IndicatorSpec

__all__ = [
    "DEFAULT_INDICATORS",
    "INDICATORS",
    "FeaturesConfig",
    "IndicatorSpec",
    "LookAheadError",
    "cache_key",
    "check_lookahead",
    "compute",
    "compute_cached",
    "feature_columns",
    "indicator",
    "make_scaler",
]
