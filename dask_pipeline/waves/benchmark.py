"""``dask-pipeline bench waves``: candidates scored per second, per backend, on one core.

Workload ``symbol``: one synthetic symbol (5-minute bars, ``data.synthesize``) with
``windows`` windows of ``window_bars`` bars, overlap 0.5, every window scanned (the
pre-score filters are off: the worst case). Each implementation scores the same
candidates of the same plan; ``candidates/s`` is candidates evaluated (enumerated
and checked, whether or not they pass the rules) per second of scoring, ``scan_s`` the
whole ``scan`` (pivots, windows, scoring, table); backends report the best of
``repeats`` runs. The plain-Python reference runs once over every window, or over
``reference_windows`` windows spread evenly and extrapolated by candidate count (said
in ``note``). numba runs single-threaded with the JIT warm; cupy and cuda are timed only
where a GPU is visible (``backends`` may name them explicitly: cuda then also runs under
numba's CUDA simulator, which times nothing real but walks the same code), with the device
synchronised; their first call (kernel compilation, device set-up) is not timed.

Workload ``sp500``: ``sp500_symbols`` symbols x ``sp500_windows`` windows with the
default filters on (a real scan): ``scan`` is timed on ``measure_symbols`` symbols and
extrapolated to the universe, one core (or one GPU), one symbol at a time as the
``waves-<S>`` tasks run; ``cuda`` also in one launch over all the measured symbols
(``scan_many``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from dask_pipeline.waves.backends import BACKENDS, cuda_available, cuda_status, gpu_available
from dask_pipeline.waves.patterns import plan_series, scan, scan_many
from dask_pipeline.waves.reference import top_candidates_py
from dask_pipeline.waves.score import score_params
from dask_pipeline.waves.spec import WavesConfig

COLUMNS = [
    "workload", "implementation", "windows", "candidates", "scoring_s",
    "candidates_per_s", "scan_s", "vs_reference", "note",
]  # fmt: skip


def bench_bars(n_symbols: int, n_bars: int, seed: int = 0) -> list[pd.DataFrame]:
    """``n_symbols`` synthetic series of ``n_bars`` 5-minute bars (float32, as loaded)."""
    from dask_pipeline.data import bar_calendar, synthesize

    per_day = bar_calendar("2000-01-03", "2000-01-03", "5min")[1]
    end = pd.Timestamp("2000-01-03") + pd.offsets.BDay(int(n_bars / per_day) + 2)
    bars = synthesize(n_symbols, "2000-01-03", end.date(), "5min", seed=seed)
    return [frame.iloc[:n_bars].astype(np.float32) for frame in bars.values()]


def bench_waves(
    windows: int = 500,
    window_bars: int = 500,
    reference_windows: int | None = None,
    sp500_symbols: int = 500,
    sp500_windows: int = 2000,
    measure_symbols: int = 2,
    repeats: int = 3,
    seed: int = 0,
    backends: list[str] | None = None,
) -> pd.DataFrame:
    """Time the reference, numpy, numba (and cupy, cuda with a GPU) on the ``symbol`` and ``sp500`` workloads.

    Parameters
    ----------
    backends
        The backends to time (default: numpy, numba, and cupy and cuda where a GPU is visible).

    Returns
    -------
    DataFrame
        One row per (workload, implementation): ``COLUMNS``.
    """
    import numba

    numba.set_num_threads(1)
    if backends is None:
        backends = ["numpy", "numba", *(["cupy"] if gpu_available() else []), *(["cuda"] if cuda_available() else [])]
    step = max(1, int(window_bars * 0.5 + 0.5))
    spec = WavesConfig(
        window_bars=window_bars, window_overlap_ratio=0.5, max_windows=windows,
        pre_score_threshold=0.0, skip_flat_windows=False,
    )  # fmt: skip
    (bars,) = bench_bars(1, window_bars + (windows - 1) * step, seed)
    prices = [bars[c].to_numpy(np.float64) for c in ("high", "low", "close")]
    plan = plan_series(*prices, spec)
    params = score_params(spec)
    rows = []

    if reference_windows is None or reference_windows >= plan.n_windows:
        subset = list(range(plan.n_windows))
    else:  # evenly spread: windows differ in how many candidates pass the rules
        subset = sorted({int(w) for w in np.linspace(0, plan.n_windows - 1, reference_windows).round()})
    started = time.perf_counter()
    ref = top_candidates_py(plan, spec.up_to, spec.max_combinations, spec.top_k_per_window, params, subset)
    ref_seconds = time.perf_counter() - started
    ref_rate = ref.n_candidates[subset].sum() / ref_seconds
    total = None
    for name in backends:
        backend = BACKENDS[name]
        backend.top_candidates(plan, spec, params)  # JIT, device warm-up
        seconds = _best_of(lambda: backend.top_candidates(plan, spec, params), repeats if name != "numpy" else 1, name)
        total = int(backend.top_candidates(plan, spec, params).n_candidates.sum())
        scan_seconds = _best_of(lambda: scan(bars, spec, backend=name), repeats if name != "numpy" else 1, name)
        rows.append([name, total, seconds, scan_seconds, _device_note(name)])
    ref_total_seconds = total / ref_rate
    note = (
        f"measured on all {plan.n_windows} windows"
        if len(subset) == plan.n_windows
        else f"extrapolated from {len(subset)} of {plan.n_windows} windows ({ref_seconds:.2f} s measured)"
    )
    rows.insert(0, ["reference (plain Python)", total, ref_total_seconds, np.nan, note])
    workload = f"1 symbol x {plan.n_windows} windows of {window_bars} bars"
    table = [
        [workload, impl, plan.n_windows, cands, sec, cands / sec, scan_s, ref_total_seconds / sec, note]
        for impl, cands, sec, scan_s, note in rows
    ]

    n_bars = window_bars + (sp500_windows - 1) * step
    universe = bench_bars(measure_symbols, n_bars, seed + 1)
    full = WavesConfig(window_bars=window_bars, max_windows=sp500_windows)
    runs = [(b, b, False) for b in backends if b != "numpy"]
    runs += [("cuda, all symbols in one launch", "cuda", True)] if "cuda" in backends else []
    for label, name, batched in runs:
        scan(universe[0].iloc[: window_bars * 4], full, backend=name)  # warm-up
        started = time.perf_counter()
        if batched:
            found = scan_many(universe, full, backend=name)
        else:
            found = [scan(frame, full, backend=name) for frame in universe]
        _synchronize(name)
        seconds = (time.perf_counter() - started) / measure_symbols * sp500_symbols
        table.append([
            f"sp500: {sp500_symbols} symbols x {sp500_windows} windows", label, sp500_symbols * sp500_windows,
            np.nan, np.nan, np.nan, seconds, np.nan,
            f"extrapolated from {measure_symbols} symbols ({sum(map(len, found))} patterns), " + _device_note(name),
        ])  # fmt: skip
    return pd.DataFrame(table, columns=COLUMNS)


def _device_note(backend: str) -> str:
    if backend in ("cupy", "cuda"):
        if backend == "cuda" and cuda_status() == "simulator":
            return "CUDA simulator on the CPU: walks the code, times nothing real"
        return "1 GPU"
    return "1 core, warm JIT" if backend == "numba" else "1 core"


def format_waves_table(table: pd.DataFrame) -> str:
    """The benchmark as a Markdown table (the README's Benchmarks section)."""
    head = "| workload | implementation | candidates | candidates/s | scoring s | scan s | vs reference | note |"
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.workload} | {row.implementation} | {_num(row.candidates, '{:,.0f}')} | "
            f"{_num(row.candidates_per_s, '{:,.0f}')} | {_num(row.scoring_s, '{:.4g}')} | "
            f"{_num(row.scan_s, '{:.4g}')} | "
            f"{_num(row.vs_reference, '{:,.0f}x')} | {row.note} |"
        )
    return "\n".join(lines)


def _num(value: Any, fmt: str) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else fmt.format(value)


def _best_of(func: Callable[[], Any], repeats: int, backend: str) -> float:
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        func()
        _synchronize(backend)
        times.append(time.perf_counter() - started)
    return min(times)


def _synchronize(backend: str) -> None:
    if backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()
    elif backend == "cuda":
        from numba import cuda

        cuda.synchronize()
