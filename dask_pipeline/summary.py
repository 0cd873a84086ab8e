"""Per-symbol data summaries: what a researcher checks first about a universe."""

from __future__ import annotations

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = ["symbol", "rows", "first", "last", "mean_log_return", "vol_log_return", "max_drawdown"]


def summarize_bars(bars: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """One row: bar count, first/last timestamp, mean and std of log returns, max drawdown of close.

    Returns
    -------
    DataFrame
        Columns ``SUMMARY_COLUMNS``; returns and drawdown computed in float64.
    """
    close = bars["close"].to_numpy(dtype=np.float64)
    log_ret = np.diff(np.log(close)) if len(close) > 1 else np.empty(0)
    drawdown = close / np.maximum.accumulate(close) - 1.0 if len(close) else np.zeros(1)
    return pd.DataFrame(
        {
            "symbol": [symbol],
            "rows": [len(bars)],
            "first": [bars.index[0] if len(bars) else pd.NaT],
            "last": [bars.index[-1] if len(bars) else pd.NaT],
            "mean_log_return": [log_ret.mean() if len(log_ret) else np.nan],
            "vol_log_return": [log_ret.std(ddof=1) if len(log_ret) > 1 else np.nan],
            "max_drawdown": [drawdown.min()],
        }
    )


def combine_summaries(rows: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-symbol summaries, sorted by symbol (independent of completion order)."""
    return pd.concat(rows, ignore_index=True).sort_values("symbol", kind="stable").reset_index(drop=True)
