"""Elliott-wave scan: per symbol load the bars and scan them for impulses; one table of patterns."""

from dask_pipeline.data import load_bars
from dask_pipeline.graph import symbols_of, task
from dask_pipeline.waves import combine_scans, scan


def build(cfg):
    """``waves``: every symbol's patterns (``dask_pipeline.waves.scan``), sorted by symbol, window, score."""
    data = cfg.data
    bars = {
        s: task(load_bars, data.root, s, data.start, data.end, dtype=data.dtype, name=f"load-{s}")
        for s in symbols_of(cfg)
    }
    return {"waves": waves_table(cfg, bars)}


def waves_table(cfg, bars):
    """One ``waves-<S>`` task per symbol over its bars task (GPU-hinted), and their table.

    ``bars`` maps symbol -> bars task; the research graph passes the ``load-<S>`` tasks it
    already has (same keys as above), so each symbol is loaded once.
    """
    scans = [task(scan, b, cfg.waves, symbol=s, name=f"waves-{s}", gpu=True) for s, b in bars.items()]
    return task(combine_scans, scans, name="waves-all", stage="waves")
