"""Elliott-wave scan: pivots, candidate impulses, hard rules, Fibonacci scoring.

``scan(bars, spec)`` finds and scores 5-wave impulses (and ABC corrections) in one
symbol's bars (``scan_many`` in several); ``spec`` is the config's ``waves:`` section
(``WavesConfig``). Backends (``backends.BACKENDS``: numba, numpy, cupy, cuda; ``auto``)
return the same patterns and scores.
"""

from dask_pipeline.waves.patterns import combine_scans, scan, scan_many
from dask_pipeline.waves.spec import WavesConfig

__all__ = ["WavesConfig", "combine_scans", "scan", "scan_many"]
