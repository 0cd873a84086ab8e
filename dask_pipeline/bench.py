"""What every benchmark behind ``dask-pipeline bench`` shares: interleaved timing, the CPU
other programs used meanwhile, warmed workers. Each stage's benchmark lives beside the
stage (``features/benchmark.py``, ``walkforward/benchmark.py``, ``tuning/benchmark.py``,
``waves/benchmark.py``) and imports these; ``cli.py`` wires them up (wiring here would
make an import circle with every benchmark).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import numpy as np
import pandas as pd


def synthetic_bars(n_symbols: int, n_bars: int, seed: int = 0) -> list[pd.DataFrame]:
    """Minute bars of geometric random walks (float32, the loaded-data dtype)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-02", periods=n_bars, freq="min", tz="UTC", name="timestamp")
    frames = []
    for _ in range(n_symbols):
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n_bars)))
        open_ = np.concatenate([[100.0], close[:-1]])
        spread = np.abs(rng.normal(0.0, 0.0005, (2, n_bars))) * close
        frames.append(
            pd.DataFrame(
                {
                    "open": open_,
                    "high": np.maximum(open_, close) + spread[0],
                    "low": np.minimum(open_, close) - spread[1],
                    "close": close,
                    "volume": rng.integers(100, 10_000, n_bars).astype(np.float64),
                },
                index=index,
            ).astype(np.float32)
        )
    return frames


def median_seconds(
    runs: list[Callable[[pd.DataFrame], object]], frames: list[pd.DataFrame], repeats: int
) -> list[float]:
    """Median seconds of one pass over ``frames`` for each of ``runs``.

    Passes are interleaved (run 1, run 2, ..., run 1, ...) so that load from elsewhere
    on the machine falls on every implementation alike rather than on one of them.
    """
    for run in runs:
        run(frames[0])  # warm: JIT compilation / cache load, lazy imports
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times):
            start = time.perf_counter()
            for bars in frames:
                run(bars)
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def warm_worker() -> None:
    """Load every numba kernel the walk-forward uses (JIT cache) and the model libraries."""
    from dask_pipeline.warmup import FEATURE_GROUPS, KERNEL_GROUPS

    for group in (*FEATURE_GROUPS, "backtest", "backtest-rank"):
        KERNEL_GROUPS[group]()
    import sklearn.ensemble  # noqa: F401 (the first import costs a second on a fresh worker)


def wait_until_forgotten(client, timeout: float = 30) -> None:
    """Block until the scheduler has released every result of the last run: the next run
    has the same keys, and results still held would be reused instead of recomputed."""
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler still holds results of the previous run")
        time.sleep(0.01)


def timed(func: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds of ``func()``, and how many cores other programs kept busy meanwhile:
    the machine's CPU time less this process's and its children's (the workers, and the
    subprocesses ``func`` started and waited for), per second. The benchmark's numbers
    only mean something when that is near 0."""
    import psutil

    me = psutil.Process()
    ours = [me, *me.children(recursive=True)]
    busy, own, reaped = _machine_cpu(), _cpu(ours), _reaped_cpu()
    start = time.perf_counter()
    func()
    wall = time.perf_counter() - start
    others = (_machine_cpu() - busy) - (_cpu(ours) - own) - (_reaped_cpu() - reaped)
    return wall, max(others, 0.0) / wall


def _reaped_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    t = os.times()
    return t.children_user + t.children_system


def _machine_cpu() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def _cpu(processes) -> float:
    import psutil

    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total
