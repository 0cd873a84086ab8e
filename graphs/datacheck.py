"""Per symbol: load the bars, summarise them; one table over the universe."""

from dask_pipeline.data import load_bars
from dask_pipeline.graph import symbols_of, task
from dask_pipeline.summary import combine_summaries, summarize_bars


def build(cfg):
    """``summary``: rows, first/last timestamp, log-return mean and vol, max drawdown per symbol."""
    rows = []
    for symbol in symbols_of(cfg):
        bars = task(load_bars, cfg.data.root, symbol, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype, name=f"load-{symbol}")
        rows.append(task(summarize_bars, bars, symbol, name=f"summary-{symbol}"))
    return {"summary": task(combine_summaries, rows, name="summary-all", stage="summary")}
