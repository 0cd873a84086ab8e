"""The whole study in one graph: data summary, walk-forward, and the Elliott-wave scan.

The three share their ``load-<S>`` tasks (same function and inputs, so the same keys):
each symbol is read once, and the scheduler interleaves the CPU-heavy folds with the
wave scans (on the GPU worker of a ``local-cuda`` cluster).
"""

from dask_pipeline.graphs import datacheck, walkforward, wavescan

check = walkforward.check


def build(cfg):
    """``summary``, ``folds``, ``predictions``, ``equity``, ``importances`` and ``waves``."""
    return {**datacheck.build(cfg), **walkforward.build(cfg), **wavescan.build(cfg)}
