"""Benchmarks behind ``dask-pipeline bench``.

``bench_features`` times the feature engine against two baselines on the same synthetic
bars: a plain pandas implementation of the default feature set (rolling / ewm / shift,
written below) and TA-Lib on the indicators it provides. Throughput is bar-features per
second: bars x feature columns / seconds, the median of ``repeats`` timed passes over
all symbols, on one core with the JIT warm. Every implementation returns the same thing:
one float32 DataFrame per symbol.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

#: Default-set indicators TA-Lib computes directly (the like-for-like comparison).
TALIB_SHARED = (
    "ret", "logret", "sma", "ema", "std", "mom", "roc", "rsi", "macd", "bbands",
    "atr", "natr", "stoch", "dist_high", "dist_low", "obv",
)  # fmt: skip


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


# --- baseline 1: pandas -------------------------------------------------------------


def _seeded_ewm(values: pd.Series, alpha: float, seed_end: int, period: int) -> pd.Series:
    """EMA with smoothing ``alpha`` started at ``seed_end`` from the mean of the ``period``
    values ending there (TA-Lib seeding): earlier rows are blanked, the seed row replaced."""
    seeded = values.copy()
    if seed_end >= len(values):
        return seeded * np.nan
    seeded.iloc[:seed_end] = np.nan
    seeded.iloc[seed_end] = values.iloc[seed_end - period + 1 : seed_end + 1].mean()
    return seeded.ewm(alpha=alpha, adjust=False).mean()


def pandas_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The default feature set written with pandas rolling / ewm / shift (no gaps handled)."""
    close, high, low, volume = (bars[c].astype(np.float64) for c in ("close", "high", "low", "volume"))
    out = {}
    out["ret_1"] = close / close.shift(1) - 1.0
    out["logret_1"] = np.log(close / close.shift(1))
    out["sma_20"] = close.rolling(20).mean()
    out["ema_12"] = _seeded_ewm(close, 2.0 / 13.0, 11, 12)
    mean20, std20 = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    out["std_20"] = std20
    out["zscore_20"] = (close - mean20) / std20
    out["mom_10"] = close - close.shift(10)
    out["roc_10"] = (close / close.shift(10) - 1.0) * 100.0
    change = close.diff()
    gain = _seeded_ewm(change.clip(lower=0.0), 1.0 / 14.0, 14, 14)
    loss = _seeded_ewm(-change.clip(upper=0.0), 1.0 / 14.0, 14, 14)
    out["rsi_14"] = 100.0 * gain / (gain + loss)
    fast = _seeded_ewm(close, 2.0 / 13.0, 25, 12)
    slow = _seeded_ewm(close, 2.0 / 27.0, 25, 26)
    line = fast - slow
    signal = _seeded_ewm(line, 2.0 / 10.0, 33, 9)
    out["macd_12_26_9"] = line.where(signal.notna())
    out["macd_signal_12_26_9"] = signal
    out["macd_hist_12_26_9"] = line - signal
    upper, lower = mean20 + 2.0 * std20, mean20 - 2.0 * std20
    out["bb_pctb_20_2"] = (close - lower) / (upper - lower)
    out["bb_width_20_2"] = (upper - lower) / mean20
    prev = close.shift(1)
    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    true_range.iloc[0] = np.nan
    atr = _seeded_ewm(true_range, 1.0 / 14.0, 14, 14)
    out["atr_14"] = atr
    out["natr_14"] = 100.0 * atr / close
    highest, lowest = high.rolling(14).max(), low.rolling(14).min()
    slow_k = (100.0 * (close - lowest) / (highest - lowest)).rolling(3).mean()
    slow_d = slow_k.rolling(3).mean()
    out["stoch_k_14_3_3"] = slow_k.where(slow_d.notna())
    out["stoch_d_14_3_3"] = slow_d
    out["dist_high_20"] = close / high.rolling(20).max() - 1.0
    out["dist_low_20"] = close / low.rolling(20).min() - 1.0
    out["volume_z_20"] = (volume - volume.rolling(20).mean()) / volume.rolling(20).std(ddof=0)
    obv = (np.sign(change) * volume).fillna(0.0).cumsum() + volume.iloc[0]
    out["obv"] = obv
    return pd.DataFrame(out).astype(np.float32)


# --- baseline 2: TA-Lib -------------------------------------------------------------


def talib_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The TA-Lib-shared part of the default set, from TA-Lib calls (plus the arithmetic
    turning BBANDS into %b / bandwidth and MAX / MIN into distances)."""
    import talib

    close, high, low, volume = (
        np.ascontiguousarray(bars[c].to_numpy(), dtype=np.float64)
        for c in ("close", "high", "low", "volume")
    )
    cols = {}
    ratio = talib.ROCR(close, 1)
    cols["ret_1"] = ratio - 1.0
    cols["logret_1"] = np.log(ratio)
    cols["sma_20"] = talib.SMA(close, 20)
    cols["ema_12"] = talib.EMA(close, 12)
    cols["std_20"] = talib.STDDEV(close, 20)
    cols["mom_10"] = talib.MOM(close, 10)
    cols["roc_10"] = talib.ROC(close, 10)
    cols["rsi_14"] = talib.RSI(close, 14)
    line, signal, hist = talib.MACD(close, 12, 26, 9)
    cols["macd_12_26_9"], cols["macd_signal_12_26_9"], cols["macd_hist_12_26_9"] = line, signal, hist
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0)
    cols["bb_pctb_20_2"] = (close - lower) / (upper - lower)
    cols["bb_width_20_2"] = (upper - lower) / middle
    cols["atr_14"] = talib.ATR(high, low, close, 14)
    cols["natr_14"] = talib.NATR(high, low, close, 14)
    cols["stoch_k_14_3_3"], cols["stoch_d_14_3_3"] = talib.STOCH(high, low, close, 14, 3, 0, 3, 0)
    cols["dist_high_20"] = close / talib.MAX(high, 20) - 1.0
    cols["dist_low_20"] = close / talib.MIN(low, 20) - 1.0
    cols["obv"] = talib.OBV(close, volume)
    out = np.empty((len(close), len(cols)), dtype=np.float32, order="F")
    for j, values in enumerate(cols.values()):
        out[:, j] = values
    return pd.DataFrame(out, index=bars.index, columns=list(cols), copy=False)


# --- timing -------------------------------------------------------------------------


def _median_seconds(
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


def std_exactness(n_bars: int = 10_000_000, window: int = 20, seed: int = 0) -> pd.DataFrame:
    """Max relative error of rolling std vs a two-pass computation on a random walk
    drifting from 100 to 0.03 over ``n_bars`` bars: ours and pandas."""
    from numpy.lib.stride_tricks import sliding_window_view

    from dask_pipeline.features import kernels

    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.002, n_bars)
    steps += (np.log(0.03 / 100.0) - steps.sum()) / n_bars  # end at 0.03 exactly
    close = 100.0 * np.exp(np.cumsum(steps))
    ours = kernels.rolling_moments_nb(close, window)[1].astype(np.float32)
    theirs = pd.Series(close).rolling(window).std(ddof=0).to_numpy()
    worst = {"dask-pipeline": 0.0, "pandas": 0.0}
    chunk = 1_000_000
    for start in range(0, n_bars - window + 1, chunk):
        stop = min(start + chunk, n_bars - window + 1)
        exact = sliding_window_view(close[start : stop + window - 1], window).std(axis=1)
        end = slice(start + window - 1, stop + window - 1)
        for name, values in (("dask-pipeline", ours[end]), ("pandas", theirs[end])):
            worst[name] = max(worst[name], float(np.max(np.abs(values - exact) / exact)))
    return pd.DataFrame(
        {
            "implementation": list(worst),
            "bars": n_bars,
            "window": window,
            "max_rel_error": list(worst.values()),
        }
    )


def bench_features(
    n_symbols: int = 100,
    n_bars: int = 5000,
    repeats: int = 5,
    exactness_bars: int = 10_000_000,
) -> pd.DataFrame:
    """Feature throughput of the engine, pandas and TA-Lib (bar-features per second).

    Parameters
    ----------
    n_symbols, n_bars
        Synthetic minute bars per run: ``n_symbols`` frames of ``n_bars`` bars.
    repeats
        Timed passes over all symbols; the median is reported.
    exactness_bars
        Length of the drifting series of the rolling-std exactness check (0 skips it);
        its table is in ``result.attrs["std_exactness"]``.

    Returns
    -------
    DataFrame
        One row per (implementation, feature set): features, seconds, bar-features/s
        and ``ours_speedup`` (our throughput on that set over this row's).
    """
    from dask_pipeline.features import compute, feature_columns
    from dask_pipeline.features.spec import DEFAULT_INDICATORS

    frames = synthetic_bars(n_symbols, n_bars)
    shared = [spec for spec in DEFAULT_INDICATORS if spec.name in TALIB_SHARED]
    runs = [
        ("dask-pipeline", "default", len(feature_columns(None)), lambda b: compute(b)),
        ("pandas", "default", len(feature_columns(None)), pandas_features),
        ("dask-pipeline", "TA-Lib subset", len(feature_columns(shared)), lambda b: compute(b, shared)),
        ("TA-Lib", "TA-Lib subset", len(feature_columns(shared)), talib_features),
    ]
    rows = []
    seconds_each = _median_seconds([run for *_, run in runs], frames, repeats)
    for (implementation, feature_set, n_features, _), seconds in zip(runs, seconds_each):
        rows.append(
            {
                "implementation": implementation,
                "feature_set": feature_set,
                "features": n_features,
                "bars": n_symbols * n_bars,
                "seconds": seconds,
                "bar_features_per_s": n_symbols * n_bars * n_features / seconds,
            }
        )
    result = pd.DataFrame(rows)
    ours = result[result.implementation == "dask-pipeline"].set_index("feature_set")["bar_features_per_s"]
    result["ours_speedup"] = ours.loc[result.feature_set].to_numpy() / result.bar_features_per_s
    if exactness_bars:
        result.attrs["std_exactness"] = std_exactness(exactness_bars)
    return result


def format_table(df: pd.DataFrame) -> str:
    """A plain-text table of :func:`bench_features`' result (and its exactness check)."""
    shown = df.assign(
        seconds=df.seconds.map("{:.3f}".format),
        bar_features_per_s=df.bar_features_per_s.map("{:,.0f}".format),
        ours_speedup=df.ours_speedup.map("{:.1f}x".format),
    )
    text = shown.to_string(index=False)
    exactness = df.attrs.get("std_exactness")
    if exactness is not None:
        shown = exactness.assign(max_rel_error=exactness.max_rel_error.map("{:.2e}".format))
        text += (
            "\n\nrolling std on a random walk drifting 100 -> 0.03, vs two-pass:\n"
            + shown.to_string(index=False)
        )
    return text


# --- walk-forward: Dask cluster vs a plain loop ----------------------------------------


def walkforward_loop(cfg) -> dict[str, pd.DataFrame]:
    """The walk-forward graph's work as a plain sequential loop over the same stage
    functions, in this process, without Dask (the benchmark's baseline)."""
    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute
    from dask_pipeline.folds import make_folds
    from dask_pipeline.graph import symbols_of
    from dask_pipeline.walkforward import aggregate_folds, backtest_fold, train_fold, union_index

    symbols = symbols_of(cfg)
    bars = [load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype) for s in symbols]
    benchmark = None
    if cfg.features.benchmark is not None:
        benchmark = load_bars(cfg.data.root, cfg.features.benchmark, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype)
    features = [compute(b, cfg.features, benchmark, symbol=s) for s, b in zip(symbols, bars)]
    folds = make_folds(union_index(b.index for b in bars), cfg.folds, cfg.label.horizon)
    results = [
        backtest_fold(train_fold(fold, symbols, bars, features, cfg.label, cfg.model, cfg.seed), cfg.backtest)
        for fold in folds
    ]
    return aggregate_folds(results)


def _warm_worker() -> None:
    """Load every numba kernel the walk-forward uses (JIT cache) and the model libraries."""
    from dask_pipeline.backtest import BacktestConfig, backtest, positions
    from dask_pipeline.features import compute

    bars = synthetic_bars(1, 300)[0]
    compute(bars)
    for rule in ("sign", "rank"):
        cfg = BacktestConfig(rule=rule)
        pred = pd.DataFrame({"A": bars["close"].diff(), "B": -bars["close"].diff()}).fillna(0.0)
        backtest(positions(pred, cfg), pred, cfg)
    import sklearn.ensemble  # noqa: F401 (the first import costs a second on a fresh worker)


def bench_walkforward(workload: str, workers: list[int], repeats: int = 3) -> pd.DataFrame:
    """Wall time of one walk-forward run of ``configs/workloads/<workload>.yaml``: a plain
    loop over the stage functions, and a local cluster of each size in ``workers``.

    Each runner is run once untimed (``first_run_s``: JIT caches, imports), then timed
    ``repeats`` times. Each cluster is started once (``startup_s``: start-up plus loading
    every worker's numba kernels) and closed before the next starts. A Dask run is what
    ``dask-pipeline run`` does once connected: build the graph (the client reads the closes
    to lay out the folds), compute it, write the results. The plain loop calls the same
    stage functions in this process (``walkforward_loop``) and writes the same files.

    Returns
    -------
    DataFrame
        One row per runner (``plain loop``, then ``dask`` per worker count): ``workers``,
        ``startup_s``, ``first_run_s``, ``median_s`` and ``min_s`` of the timed runs,
        ``others_cores`` (median cores other programs kept busy during the timed runs:
        the numbers are clean only near 0), ``speedup`` (the 1-worker cluster's median over
        this row's, when measured) and ``vs_loop`` (this row's median over the loop's).
    """
    import tempfile
    from pathlib import Path

    from threadpoolctl import threadpool_limits

    from dask_pipeline.cluster import connect
    from dask_pipeline.config import REPO_CONFIGS, ClusterConfig, load_config
    from dask_pipeline.errors import ConfigError
    from dask_pipeline.results import write_output
    from dask_pipeline.runner import prepare_data, run, versions

    path = REPO_CONFIGS / "workloads" / f"{workload}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown workload {workload!r}; known: {', '.join(known)}")
    # run() imports these for run.json; a first import inside run() can pin that run's
    # result futures in a stored traceback, and the next run would reuse them.
    versions()
    with tempfile.TemporaryDirectory(prefix="bench-walkforward-") as tmp:
        # The feature cache would turn the graph's feature tasks into file reads that the
        # loop does not do: both compute the features.
        cfg = load_config(path, ["features.cache=false", f"output.dir={tmp}", "cluster.dashboard=false"])
        prepare_data(cfg, echo=lambda *a: None)

        def loop_once() -> None:
            # One BLAS/OpenMP thread, as in a worker.
            with threadpool_limits(limits=1):
                for name, value in walkforward_loop(cfg).items():
                    write_output(Path(tmp) / "loop", name, value)

        def dask_once(client) -> Callable[[], None]:
            def once() -> None:
                run(cfg, client=client, echo=lambda *a: None)
                _wait_until_forgotten(client)

            return once

        # The loop runs first, with no cluster alive: a client's event-loop thread in this
        # process would take the GIL from it.
        startup = {("plain loop", 0): float("nan")}
        first = {("plain loop", 0): _timed(loop_once)[0]}
        times = {("plain loop", 0): [_timed(loop_once) for _ in range(repeats)]}
        for n in workers:
            start = time.perf_counter()
            with connect(ClusterConfig(n_workers=n, dashboard=False)) as client:
                client.wait_for_workers(n)
                client.run(_warm_worker)
                startup[("dask", n)] = time.perf_counter() - start
                once = dask_once(client)
                first[("dask", n)] = _timed(once)[0]
                times[("dask", n)] = [_timed(once) for _ in range(repeats)]
    table = pd.DataFrame(
        [
            {
                "runner": runner,
                "workers": n,
                "startup_s": startup[(runner, n)],
                "first_run_s": first[(runner, n)],
                "median_s": statistics.median(wall for wall, _ in runs),
                "min_s": min(wall for wall, _ in runs),
                "others_cores": statistics.median(others for _, others in runs),
            }
            for (runner, n), runs in times.items()
        ]
    )
    one = table[(table.runner == "dask") & (table.workers == 1)]["median_s"]
    table["speedup"] = one.iloc[0] / table["median_s"] if len(one) else float("nan")
    table["vs_loop"] = table["median_s"] / table["median_s"].iloc[0]
    table.attrs.update(workload=workload, repeats=repeats)
    return table


def _wait_until_forgotten(client, timeout: float = 30) -> None:
    """Block until the scheduler has released every result of the last run: the next run
    has the same keys, and results still held would be reused instead of recomputed."""
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler still holds results of the previous run")
        time.sleep(0.01)


def _timed(func: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds of ``func()``, and how many cores other programs kept busy meanwhile:
    the machine's CPU time less this process's and its children's (the workers), per second.
    The benchmark's numbers only mean something when that is near 0."""
    import psutil

    me = psutil.Process()
    ours = [me, *me.children(recursive=True)]
    busy, own = _machine_cpu(), _cpu(ours)
    start = time.perf_counter()
    func()
    wall = time.perf_counter() - start
    others = (_machine_cpu() - busy) - (_cpu(ours) - own)
    return wall, max(others, 0.0) / wall


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


def format_walkforward_table(df: pd.DataFrame) -> str:
    """A plain-text table of :func:`bench_walkforward`' result."""
    shown = df.assign(
        workers=[("-" if r == "plain loop" else str(w)) for r, w in zip(df.runner, df.workers)],
        startup_s=df.startup_s.map(lambda s: "-" if s != s else f"{s:.2f}"),
        first_run_s=df.first_run_s.map("{:.2f}".format),
        median_s=df.median_s.map("{:.2f}".format),
        min_s=df.min_s.map("{:.2f}".format),
        others_cores=df.others_cores.map("{:.2f}".format),
        speedup=df.speedup.map(lambda s: "-" if s != s else f"{s:.2f}x"),
        vs_loop=df.vs_loop.map("{:.2f}".format),
    )
    title = f"walk-forward, workload {df.attrs.get('workload', '?')}, median of {df.attrs.get('repeats', '?')} runs"
    return title + "\n" + shown.to_string(index=False)


# --------------------------------------------------------------------------- tune

#: The search of ``bench tune``: three continuous hist_gbm / backtest parameters (no duplicates).
TUNE_SPACE = {
    "model.params.learning_rate": {"float": [0.02, 0.3], "log": True},
    "model.params.l2_regularization": {"float": [0.0, 1.0]},
    "backtest.threshold": {"float": [0.0, 0.002]},
}
#: Trials in flight while the driver's overhead is measured: enough that the driver, not a
#: fold's round trip, sets the pace.
OVERHEAD_CONCURRENCY = 16


def _no_objective(*args) -> dict[str, float]:
    """A fold task that does nothing: what is left of a trial is the driver's own cost."""
    from dask_pipeline.tuning import TUNABLE_METRICS

    return {name: 0.0 for name in TUNABLE_METRICS}


def bench_tune(trials_overhead: int = 1000, resume_trials: int = 10_000, wf_trials: int = 32,
               workers: int = 2, repeats: int = 3, *, preset: str = "balanced") -> pd.DataFrame:
    """The figures of ``dask-pipeline bench tune`` on ``configs/workloads/small.yaml`` (4 folds).

    1. Driver overhead per trial: the real ``StudyDriver`` (ask, tell, default journal
       storage, median pruner, Dask dispatch of every fold) over ``trials_overhead``
       trials whose fold task returns at once, 16 trials in flight, on a local cluster of
       ``workers``; wall seconds per trial. Two component rows say where it goes: the same
       storage calls without Dask, and the same fold tasks through Dask without Optuna.
       Random sampler; TPE (whose ask grows with the study) on its own row at a fifth of
       the trials. Each is the median of ``repeats`` fresh studies, repeats interleaved.
    2. Resume: ``open_study`` on a journal file holding ``resume_trials`` finished trials
       (written beforehand, untimed); median of ``repeats``.
    3. ``wf_trials`` real walk-forward trials (model preset ``preset``), random sampler
       with one seed so both sides evaluate the same parameter sets (checked), no pruner:
       the Dask driver on ``workers`` single-threaded workers, against
       ``optuna.Study.optimize(n_jobs=1)`` calling ``tuning.evaluate_fold`` for every fold
       in this process (features computed once, untimed; sklearn keeps its own threads).
       One timed run each, after a warm-up.

    Returns
    -------
    DataFrame
        One row per figure: ``measure``, ``value``, ``unit``, ``target`` and
        ``others_cores`` (cores other programs kept busy meanwhile; clean near 0).
    """
    import tempfile

    from dask_pipeline import tuning
    from dask_pipeline.cluster import connect
    from dask_pipeline.config import REPO_CONFIGS, ClusterConfig, load_config
    from dask_pipeline.runner import prepare_data

    path = REPO_CONFIGS / "workloads" / "small.yaml"
    rows = []
    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:

        def tune_cfg(name: str, n_trials: int, sampler: str, pruner: str, model_preset: str = "fast",
                     concurrency: int = workers):
            return load_config(path, [
                "graph=tune", f"preset={model_preset}", "features.cache=false", f"output.dir={tmp}",
                f"output.run_name={name}", f"tune.n_trials={n_trials}", f"tune.sampler={sampler}",
                f"tune.pruner={pruner}", f"tune.concurrency={concurrency}", "tune.seed=5",
                f"tune.space={TUNE_SPACE}",
            ])

        prepare_data(tune_cfg("data", 1, "random", "none"), echo=quiet)

        class Dispatch(tuning.StudyDriver):
            evaluate = staticmethod(_no_objective)

        with connect(ClusterConfig(n_workers=workers, dashboard=False)) as client:
            client.wait_for_workers(workers)
            client.run(_warm_worker)
            n_tpe = max(1, trials_overhead // 5)
            # per repeat: (wall s, driver-thread CPU s, others' cores) per trial
            timings: dict[str, list[tuple[float, float, float]]] = {"random": [], "storage": [], "dispatch": [],
                                                                     "tpe": []}
            lines: list[float] = []
            writes: list[float] = []
            for r in range(repeats):
                for what in timings:
                    sampler = "tpe" if what == "tpe" else "random"
                    n = n_tpe if what == "tpe" else trials_overhead
                    cfg = tune_cfg(f"overhead-{what}-{r}", n, sampler, "median", concurrency=OVERHEAD_CONCURRENCY)
                    study, state = tuning.open_study(cfg, quiet)
                    inputs = tuning.share_inputs(cfg, client)
                    client.gather(inputs.features)
                    journal = study._storage._backend
                    commits = journal.commits
                    with tuning._optuna_quiet():
                        driver = Dispatch(study, state, cfg, client, inputs, quiet)
                        work = {"storage": lambda: _storage_calls(driver),
                                "dispatch": lambda: _dispatch_calls(driver)}.get(what, driver.run)
                        cpu = time.thread_time()
                        wall, others = _timed(work)
                        cpu = time.thread_time() - cpu
                    timings[what].append((wall / n, cpu / n, others))
                    if what == "random":
                        with open(cfg.run_dir / "study.journal", "rb") as f:
                            lines.append(sum(1 for _ in f) / n)
                        writes.append((journal.commits - commits) / n)
                        n_folds = len(driver._layout(cfg))
            shape = f"{n_folds} folds each, {OVERHEAD_CONCURRENCY} in flight"
            measures = {
                ("random", 1): (f"driver overhead per trial: its own CPU for ask, tell, storage and dispatch "
                                f"(random sampler, {trials_overhead:,} trials, {shape})", "<= 5 ms"),
                ("random", 0): ("  wall time per trial, Dask's scheduling round trips included", ""),
                ("storage", 0): (f"  part: its storage calls alone, no Dask ({statistics.median(lines):.0f} journal "
                                 f"lines a trial, {statistics.median(writes):.2f} fsynced writes a trial in the run)",
                                 ""),
                ("dispatch", 0): (f"  part: its {n_folds} no-op fold tasks a trial through Dask alone, no Optuna "
                                  "(wall)", ""),
                ("tpe", 1): (f"driver overhead per trial: its own CPU (TPE sampler, {n_tpe:,} trials, {shape})", ""),
            }
            for (what, which), (measure, target) in measures.items():
                rows.append({"measure": measure, "value": statistics.median(t[which] for t in timings[what]) * 1e3,
                             "unit": "ms", "target": target,
                             "others_cores": statistics.median(t[2] for t in timings[what])})

            cfg = tune_cfg("resume", resume_trials, "random", "none")
            _fill_study(cfg, resume_trials)
            loads = [_timed(lambda: tuning.open_study(cfg, quiet)) for _ in range(repeats)]
            rows.append({"measure": f"resume: open a {resume_trials:,}-trial study (journal file)",
                         "value": statistics.median(w for w, _ in loads), "unit": "s", "target": "<= 2 s",
                         "others_cores": statistics.median(o for _, o in loads)})

            cfg = tune_cfg("dask", wf_trials, "random", "none", model_preset=preset)

            def dask_study() -> None:
                study, state = tuning.open_study(cfg, quiet)
                inputs = tuning.share_inputs(cfg, client)
                tuning.run_study(study, state, cfg, client, inputs, quiet)

            dask_wall, dask_others = _timed(dask_study)
            dask_values = _values(tuning.open_study(cfg, quiet)[0])

        # The in-process baseline runs with no cluster alive (its event loop would take the GIL).
        plain_cfg = tune_cfg("plain", wf_trials, "random", "none", model_preset=preset)
        objective = _plain_objective(plain_cfg)
        objective(None)  # warm: JIT caches, sklearn imports
        holder: dict[str, Any] = {}
        plain_wall, plain_others = _timed(lambda: holder.setdefault("study", _plain_study(plain_cfg, objective)))
        same = dask_values == _values(holder["study"])
    rows.append({"measure": f"{wf_trials} walk-forward trials ({preset} preset), plain study.optimize(n_jobs=1)",
                 "value": plain_wall, "unit": "s", "target": "", "others_cores": plain_others})
    rows.append({"measure": f"{wf_trials} walk-forward trials ({preset} preset), dask driver on {workers} workers",
                 "value": dask_wall, "unit": "s", "target": "", "others_cores": dask_others})
    rows.append({"measure": "speedup of the dask driver" + (", same trials and values" if same else
                                                            " (trial values DIFFER)"),
                 "value": plain_wall / dask_wall, "unit": "x", "target": f">= 1.8x on {workers} cores",
                 "others_cores": float("nan")})
    table = pd.DataFrame(rows)
    table.attrs["note"] = (
        "Walk-forward trials: random sampler with one seed on both sides, so both evaluate the same "
        f"{wf_trials} parameter sets in the same order whatever order the cluster finishes them in; no pruner; "
        f"space {', '.join(TUNE_SPACE)}. One timed run each."
    )
    return table


def _storage_calls(driver) -> None:
    """The driver's storage traffic for its ``n_trials`` trials, without Dask or a config:
    ask and the driver attribute; per fold a report and a pruning check; the fold values and
    tell. One storage group per step, as the driver has when each fold comes back on its own
    (it has fewer when several come back together)."""
    from dask_pipeline import tuning

    n_folds = len(driver._layout(driver.cfg))
    zeros = _no_objective()
    study = driver.study
    for _ in range(driver.tune.n_trials):
        with tuning.storage_group(study):
            trial = study.ask(driver.distributions)
            trial.set_user_attr("driver", driver.identity)
        for k in range(n_folds):
            with tuning.storage_group(study):
                trial.report(0.0, step=k)
                if k + 1 < n_folds:
                    trial.should_prune()
                else:
                    trial.set_user_attr("folds", {"n": n_folds, **{m: [zeros[m]] * n_folds for m in driver.metrics}})
                    study.tell(trial, 0.0)


def _dispatch_calls(driver) -> None:
    """The driver's Dask traffic for its ``n_trials`` trials, without Optuna: each trial's
    no-op fold tasks, with the fold task's arguments, one after the other, ``concurrency``
    trials at once, results fetched in the background as the driver does."""
    from distributed import as_completed

    c, inputs = driver.cfg, driver.inputs
    folds = driver._layout(c)
    completed = as_completed(loop=driver.client.loop, with_results=True, raise_errors=False)
    where: dict[str, tuple[int, int]] = {}

    def submit(number: int, k: int) -> None:
        key = f"dispatch-{number:04d}-fold-{k:02d}"
        where[key] = (number, k)
        completed.add(driver.client.submit(_no_objective, folds[k], inputs.symbols, inputs.bars, inputs.features,
                                           c.label, c.model, c.backtest, c.seed, key=key))

    started = live = 0
    while True:
        while live < driver.concurrency and started < driver.tune.n_trials:
            submit(started, 0)
            started, live = started + 1, live + 1
        if completed.is_empty():
            break
        future, _ = next(completed)
        number, k = where.pop(future.key)
        if k + 1 < len(folds):
            submit(number, k + 1)
        else:
            live -= 1


def _plain_objective(cfg) -> Callable[[Any], float]:
    """The walk-forward objective for plain ``study.optimize``: ``tuning.evaluate_fold`` over
    every fold in this process, on bars and features computed once; ``objective(None)`` runs
    the config's own parameters (a warm-up)."""
    from dask_pipeline import tuning
    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute
    from dask_pipeline.folds import make_folds
    from dask_pipeline.graph import symbols_of
    from dask_pipeline.walkforward import union_index

    symbols = symbols_of(cfg)
    bars = [load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype) for s in symbols]
    features = [compute(b, cfg.features) for b in bars]
    index = union_index(b.index for b in bars)
    distributions = {p: cfg.tune.space[p].distribution() for p in sorted(cfg.tune.space)}
    aggregate = tuning.AGGREGATES[cfg.tune.aggregate]
    metric = cfg.tune.metrics[0]

    def objective(trial) -> float:
        # The driver's ask draws the parameters in this (sorted) order, so one seed gives the same sets.
        params = {} if trial is None else {p: _suggest(trial, p, d) for p, d in distributions.items()}
        c = tuning.apply_params(cfg, params)
        folds = make_folds(index, c.folds, c.label.horizon)
        return aggregate([tuning.evaluate_fold(f, symbols, bars, features, c.label, c.model, c.backtest, c.seed)[metric]
                          for f in folds])

    return objective


def _suggest(trial, name: str, distribution) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (what ``study.ask`` does with a fixed one)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


def _plain_study(cfg, objective: Callable[[Any], float]) -> Any:
    """``cfg``'s trials through plain ``optuna.Study.optimize(n_jobs=1)``, in memory, seeded as
    ``open_study`` seeds a fresh study."""
    import optuna

    from dask_pipeline import tuning

    sampler = tuning.SAMPLERS[cfg.tune.sampler](cfg.tune, _sampler_seed(cfg))
    study = optuna.create_study(directions=cfg.tune.directions, sampler=sampler)
    with tuning._optuna_quiet():
        study.optimize(objective, n_trials=cfg.tune.n_trials, n_jobs=1)
    return study


def _sampler_seed(cfg) -> int:
    # What open_study seeds a fresh study's sampler with, so both sides draw the same sets.
    return int(np.random.SeedSequence([cfg.tune.seed, 0]).generate_state(1)[0])


def _values(study) -> list[tuple]:
    """(params, value) of the complete trials, in order of their parameters."""
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    return sorted((tuple(sorted(t.params.items())), round(t.value, 12)) for t in done)


def _fill_study(cfg, n: int) -> None:
    """Write ``n`` finished trials into the config's study (through its real storage), shaped
    like the driver's: parameters, the driver attribute, one report and one value per fold."""
    import optuna

    from dask_pipeline import tuning

    study, _ = tuning.open_study(cfg, lambda *a: None)
    distributions = {p: cfg.tune.space[p].distribution() for p in sorted(cfg.tune.space)}
    identity = tuning.driver_identity()
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(n):
        params = {p: float(d.low + (d.high - d.low) * rng.random()) for p, d in distributions.items()}
        folds = rng.normal(size=4).tolist()
        trials.append(optuna.trial.create_trial(
            params=params, distributions=distributions, value=float(np.mean(folds)),
            intermediate_values={k: float(np.mean(folds[: k + 1])) for k in range(4)},
            user_attrs={"driver": identity, "folds": {"n": 4, "sharpe": folds}},
        ))
    study.add_trials(trials)


def format_tune_table(df: pd.DataFrame) -> str:
    """The bench-tune table as text (with its note on how the trials were drawn)."""
    shown = df.assign(
        value=[f"{v:,.3f} {u}" for v, u in zip(df["value"], df["unit"])],
        others_cores=df.others_cores.map(lambda x: "" if x != x else f"{x:.2f}"),
    )[["measure", "value", "target", "others_cores"]]
    text = shown.to_string(index=False, justify="left")
    note = df.attrs.get("note")
    return text + ("\n" + note if note else "")


# --------------------------------------------------------------------------- scale


def bench_scale(workload: str = "large", workers: tuple[int, ...] = (1, 2), repeats: int = 3,
                memory_workload: str = "sp500", memory_limit: str = "1GiB", memory_preset: str = "fast"
                ) -> pd.DataFrame:
    """The figures of ``dask-pipeline bench scale``.

    For each worker count, the walk-forward of ``configs/workloads/<workload>.yaml`` on a
    ``local`` cluster (a LocalCluster in this process) and on ``nodes``: a separate
    ``dask scheduler`` process and that many ``dask worker`` processes, each with its own
    local and temp directory, reached by address as workers on other machines would be
    (on one machine here, so the difference is the extra hops, not the network). Median
    and minimum of ``repeats`` timed runs after one warm-up; ``same_bytes`` says whether
    the result files equal the first row's.

    Then the ``memory_workload`` walk-forward (model preset ``memory_preset``) on
    ``max(workers)`` local workers of ``memory_limit`` each: wall time, each worker's
    peak resident memory (sampled every 0.2 s), the most any worker had spilled to disk,
    and whether every worker lived to the end.

    Returns
    -------
    DataFrame
        One row per measurement: ``workload``, ``runner``, ``workers``, ``median_s``,
        ``min_s``, ``others_cores``, ``same_bytes``, ``speedup`` (over the local
        1-worker median), and for the memory row ``peak_rss_mib`` (per worker, "a / b"),
        ``spilled_mib`` and ``workers_lost``.
    """
    import tempfile
    from pathlib import Path

    from dask_pipeline.cluster import connect
    from dask_pipeline.config import REPO_CONFIGS, ClusterConfig, load_config
    from dask_pipeline.runner import prepare_data, run, versions

    versions()  # see bench_walkforward: imported once, before any run
    rows = []
    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        cfg = load_config(REPO_CONFIGS / "workloads" / f"{workload}.yaml",
                          ["features.cache=false", f"output.dir={tmp}", "cluster.dashboard=false"])
        prepare_data(cfg, echo=quiet)
        reference: dict[str, bytes] | None = None
        for n in workers:
            for runner in ("local", "nodes"):
                with (connect(ClusterConfig(n_workers=n, dashboard=False)) if runner == "local"
                      else _process_cluster(n, Path(tmp) / f"nodes-{n}")) as client:
                    client.wait_for_workers(n)
                    client.run(_warm_worker)

                    def once() -> None:
                        run(cfg, client=client, echo=quiet)
                        _wait_until_forgotten(client)

                    once()
                    files = _result_files(cfg.run_dir)
                    reference = files if reference is None else reference
                    times = [_timed(once) for _ in range(repeats)]
                rows.append({"workload": workload, "runner": runner, "workers": n,
                             "median_s": statistics.median(w for w, _ in times), "min_s": min(w for w, _ in times),
                             "others_cores": statistics.median(o for _, o in times),
                             "same_bytes": files == reference})

        mem_cfg = load_config(REPO_CONFIGS / "workloads" / f"{memory_workload}.yaml",
                              ["features.cache=false", f"output.dir={tmp}", "cluster.dashboard=false",
                               f"preset={memory_preset}"])
        prepare_data(mem_cfg, echo=quiet)
        n = max(workers)
        with connect(ClusterConfig(n_workers=n, dashboard=False, memory_limit=memory_limit)) as client:
            client.wait_for_workers(n)
            client.run(_warm_worker)
            with _WorkerMemory(client) as memory:
                wall, others = _timed(lambda: run(mem_cfg, client=client, echo=quiet))
        rows.append({"workload": f"{memory_workload} ({memory_preset} preset)", "runner": f"local, {memory_limit}/worker",
                     "workers": n, "median_s": wall, "min_s": wall, "others_cores": others, "same_bytes": None,
                     "peak_rss_mib": " / ".join(f"{m / 2**20:.0f}" for m in memory.peak_rss),
                     "spilled_mib": memory.spilled / 2**20, "workers_lost": memory.lost})
    table = pd.DataFrame(rows)
    one = table[(table.runner == "local") & (table.workers == 1)]["median_s"]
    table["speedup"] = one.iloc[0] / table["median_s"] if len(one) else float("nan")
    table.attrs.update(repeats=repeats)
    return table


def _result_files(run_dir) -> dict[str, bytes]:
    """A run's result files (not its records of times and cluster) as bytes."""
    records = {"run.json", "stages.json", "dask-report.html", "report.html", "config.yaml"}
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name not in records}


class _WorkerMemory:
    """Samples every worker's resident memory (psutil, by pid) and spilled bytes while active."""

    def __init__(self, client, every: float = 0.2):
        import psutil

        self.client, self.every = client, every
        self.pids = client.run(os.getpid)
        self.procs = {address: psutil.Process(pid) for address, pid in self.pids.items()}
        self.peak = dict.fromkeys(self.pids, 0)
        self.spilled = 0
        self.lost = 0

    def __enter__(self) -> "_WorkerMemory":
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        import psutil

        tick = 0
        while not self._stop.wait(self.every):
            for address, proc in self.procs.items():
                try:
                    self.peak[address] = max(self.peak[address], proc.memory_info().rss)
                except psutil.Error:  # it died: counted at the end
                    pass
            tick += 1
            if tick % 5 == 0:  # once a second: a round trip to every worker
                try:
                    spilled = self.client.run(_spilled_bytes)
                    self.spilled = max([self.spilled, *spilled.values()])
                except Exception:  # a worker going away mid-call: the count below says so
                    pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        alive = set(self.client.scheduler_info()["workers"])
        self.lost = len(set(self.pids) - alive)

    @property
    def peak_rss(self) -> list[int]:
        return [self.peak[a] for a in sorted(self.peak)]


def _spilled_bytes(dask_worker) -> int:
    data = dask_worker.data
    spilled = getattr(data, "spilled_total", None)
    return int(getattr(spilled, "disk", 0) or 0) if spilled is not None else 0


@contextlib.contextmanager
def _process_cluster(n_workers: int, folder, memory_limit: str = "auto"):
    """A ``dask scheduler`` process and ``n_workers`` ``dask worker`` processes on 127.0.0.1,
    each worker with its own local and temp directory; yields a client connected by address."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from distributed import Client

    from dask_pipeline.cluster import WORKER_ENV

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, **WORKER_ENV, "DASK_LOGGING__DISTRIBUTED": "error"}
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("the dask scheduler process did not start")
            time.sleep(0.1)
        for i in range(n_workers):
            local = folder / f"node-{i}"
            local.mkdir(exist_ok=True)
            procs.append(subprocess.Popen(
                [*dask, "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(local), "--name", f"node-{i}", "--resources", "CPU=1",
                 "--memory-limit", memory_limit],
                env={**env, "TMPDIR": str(local)}, cwd=local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=120)
            yield client
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def format_scale_table(df: pd.DataFrame) -> str:
    """The bench-scale table as text."""
    def cell(value, fmt) -> str:
        return "" if value is None or value != value else fmt.format(value)

    shown = pd.DataFrame({
        "workload": df.workload, "runner": df.runner, "workers": df.workers,
        "median_s": [cell(v, "{:.2f}") for v in df.median_s], "min_s": [cell(v, "{:.2f}") for v in df.min_s],
        "speedup": [cell(v, "{:.2f}x") for v in df.speedup],
        "same_bytes": ["" if v is None or v != v else ("yes" if v else "NO") for v in df.same_bytes],
        "others_cores": [cell(v, "{:.2f}") for v in df.others_cores],
    })
    for column, fmt in (("peak_rss_mib", "{}"), ("spilled_mib", "{:.0f}"), ("workers_lost", "{:.0f}")):
        if column in df:
            shown[column] = [cell(v, fmt) if not isinstance(v, str) else v for v in df[column]]
    title = f"scale: walk-forward, median of {df.attrs.get('repeats', '?')} runs (memory row: one run)"
    return title + "\n" + shown.to_string(index=False)
