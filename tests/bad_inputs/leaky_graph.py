"""A user graph file whose module registers an indicator that looks ahead (a centred window).

The walk-forward graph, reused; ``tests/test_bad_inputs.py`` runs it with the indicator in
``features.indicators`` and expects the run to stop at the look-ahead check, before any
cluster starts.
"""

from dask_pipeline.features import indicator
from dask_pipeline.graphs.walkforward import build  # noqa: F401  (the graph this file provides)


@indicator("centred")
def centred(bars, window: int = 5):
    """The mean of the bars around t, later ones included: a leak."""
    return bars["close"].rolling(window, center=True).mean()
