"""A user graph: trend following filtered by efficiency, backtested with the built-in backtest.

Per symbol the shared ``load-<S>`` and ``features-<S>`` tasks (so it needs ``efficiency``
and ``mom`` in ``features.indicators``), then a position: long when the momentum is up
and the move efficient, short when it is down and efficient, flat otherwise. One
``backtest`` task over all symbols uses ``dask_pipeline.backtest.backtest`` with these
positions. Outputs: ``trend_equity`` (a time-indexed frame: the report draws it) and
``trend_metrics`` (a table).

Run it with ``dask-pipeline run configs/extend.yaml``, or as a file graph on any cluster
(its functions travel with the tasks): ``-o graph=examples/trend.py``.
"""

import numpy as np
import pandas as pd

from dask_pipeline.backtest import backtest
from dask_pipeline.errors import ConfigError
from dask_pipeline.graph import features_tasks, task

THRESHOLD = 0.3  # efficiency above which a move counts as a trend


def build(cfg):
    """``trend_equity`` and ``trend_metrics`` of the efficiency-filtered trend rule."""
    efficiency, momentum = signal_columns(cfg)
    per_symbol = features_tasks(cfg)
    legs = {s: task(trend_leg, bars, feats, efficiency, momentum, name=f"signal-{s}", stage="signal")
            for s, (bars, feats) in per_symbol.items()}
    result = task(run_backtest, legs, cfg.backtest, name="backtest-all", stage="backtest")
    return {"trend_equity": task(pick, result, 0, name="equity", stage="backtest"),
            "trend_metrics": task(pick, result, 1, name="metrics", stage="backtest")}


def signal_columns(cfg):
    """The feature columns of ``efficiency`` and ``mom`` in the config's feature set."""
    columns = [c for spec in cfg.features.indicators for c in spec.columns]
    efficiency = next((c for c in columns if c.startswith("efficiency_")), None)
    momentum = next((c for c in columns if c.startswith("mom_")), None)
    if efficiency is None or momentum is None:
        raise ConfigError("'features.indicators': the trend graph needs efficiency and mom "
                          "(plugins: [examples.indicators])")
    return efficiency, momentum


def trend_leg(bars, features, efficiency, momentum):
    """One symbol's position (decided at each bar's close) and simple return per bar."""
    efficient = features[efficiency] > THRESHOLD
    position = np.sign(features[momentum]).where(efficient, 0.0).fillna(0.0)
    close = bars["close"].astype("float64")
    return pd.DataFrame({"position": position.astype("float64"), "ret": close / close.shift(1) - 1.0})


def run_backtest(legs, backtest_cfg):
    """Equity curves and metrics of every symbol's positions, one portfolio (symbols in sorted order)."""
    symbols = sorted(legs)
    positions = pd.concat({s: legs[s]["position"] for s in symbols}, axis=1).fillna(0.0)
    returns = pd.concat({s: legs[s]["ret"] for s in symbols}, axis=1)
    equity, metrics = backtest(positions, returns, backtest_cfg)
    return equity, metrics.reset_index()


def pick(pair, i):
    """One element of a tuple-valued task."""
    return pair[i]
