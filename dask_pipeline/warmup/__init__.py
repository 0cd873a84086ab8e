"""Compile the numba kernels once per machine, before any worker needs them.

numba compiles a kernel on its first call in each process. With ``cache=True`` it also
writes the machine code to a cache (``__pycache__`` beside the source, or
``NUMBA_CACHE_DIR``) that later processes load in milliseconds. Without a warm cache,
every worker process of a first run compiles every kernel it touches, all at once: on a
32-worker node the same kernels are compiled 32 times, and a user's first run is the
slow one.

So a run first warms the kernel groups its graph needs (:func:`kernel_groups`) with
:func:`warm_cluster`: on each machine, one task per group, spread over that machine's
workers so the groups compile in parallel, each into the shared cache; only then does
the graph fan out, and every worker loads what it needs. A group that is already warm
on a machine (a marker file beside numba's cache, keyed by the package's sources, numba,
Python and the CPU) costs one round trip. ``dask-pipeline warmup`` does the same for
images and cluster nodes ahead of time (:func:`warm_processes`).

:func:`configure_cache` makes sure numba has somewhere to write when the package
directory is read-only (a system-wide install, a container image): it points
``NUMBA_CACHE_DIR`` at a user or temporary directory, for this process and the worker
processes it starts.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent

#: The fused feature passes compile in three independent groups, so they can compile in parallel.
FEATURE_GROUPS = ("features-close", "features-moments", "features-ranges")


# --- where numba caches -------------------------------------------------------------


def _writable(path: Path) -> bool:
    """Whether files can be created in ``path`` (made if missing)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            return True
    except OSError:
        return False


def cache_location(package_dir: Path = PACKAGE_DIR, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where numba should cache compiled kernels: None for numba's own choice (beside the
    sources, when that is writable), else a writable directory to use as ``NUMBA_CACHE_DIR``.

    An explicit ``NUMBA_CACHE_DIR`` wins; without one, a read-only package directory falls
    back to ``$XDG_CACHE_HOME/dask-pipeline/numba`` (``~/.cache``), then to the temp directory.
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return Path(environ["NUMBA_CACHE_DIR"])
    if _writable(package_dir / "__pycache__"):
        return None
    home = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".cache")
    for candidate in (Path(home) / "dask-pipeline" / "numba",
                      Path(tempfile.gettempdir()) / f"dask-pipeline-{_user()}" / "numba"):
        if _writable(candidate):
            return candidate
    return None


def _user() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else os.environ.get("USERNAME", "user")


def configure_cache() -> Path | None:
    """Set ``NUMBA_CACHE_DIR`` when numba could not cache beside the sources (see
    :func:`cache_location`); worker processes started afterwards inherit it.

    Call before numba compiles or loads anything in this process: numba reads the
    variable when a kernel module is imported.
    """
    location = cache_location()
    if location is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(location)
    return location


def cache_root() -> Path:
    """The directory this process's numba cache lives under (its markers go there too)."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    return Path(configured) if configured else PACKAGE_DIR / "__pycache__"


# --- what to compile ----------------------------------------------------------------


def _bars(n: int = 600, gap: bool = True) -> Any:
    """A small random walk of OHLCV bars (float32, as loaded), with one missing bar so the
    passes that look for runs of present bars compile too."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.004, (2, n))) * close
    bars = pd.DataFrame(
        {"open": close, "high": close + spread[0], "low": close - spread[1], "close": close,
         "volume": rng.integers(100, 10_000, n).astype(np.float64)},
        index=pd.date_range("2024-01-02", periods=n, freq="D", tz="UTC", name="timestamp"),
    ).astype(np.float32)
    if gap:
        bars.iloc[n // 2] = np.nan
    return bars


def _features(*names: str) -> Callable[[], None]:
    """The fused pass(es) of these indicators through ``compute``: also the validation scan."""

    def warm() -> None:
        from dask_pipeline.features import IndicatorSpec, compute

        compute(_bars(), [IndicatorSpec(name=name) for name in names])

    return warm


def _fused_pass(*names: str) -> Callable[[], None]:
    """The fused pass(es) of these indicators alone, on bars without gaps: the groups
    compiling beside ``features-close`` (on another worker) do not compile its scan again."""

    def warm() -> None:
        import numpy as np

        from dask_pipeline.features import engine, fusion

        bars = _bars(gap=False)
        block = np.asarray(bars[list(engine.BAR_COLUMNS)].to_numpy().T, dtype=np.float64, order="C")
        items, first = [], 0
        for name in names:
            items.append(fusion.Item(name, engine.resolve_params(name, {}), first))
            first += len(engine.INDICATORS[name].outputs)
        out = engine.feature_block(len(bars), first)
        fusion.run(fusion.schedule(items, True, True), block, out, 0)

    return warm


#: The shipped indicators without a fused pass: their own per-indicator kernels.
UNFUSED = ("wma", "corr", "beta")


def _indicator_kernels(*names: str) -> Callable[[], None]:
    """The per-indicator kernels of these shipped indicators: their registry functions."""

    def warm() -> None:
        from dask_pipeline.features.engine import _FUSABLE, INDICATORS, BarArrays, _bar_arrays

        columns = _bar_arrays(_bars(), "warmup")
        arrays = BarArrays(columns, columns["close"][::-1].copy())
        for name in names:
            indicator = INDICATORS[name]
            if name in _FUSABLE and indicator is not _FUSABLE[name]:
                continue  # replaced by a user's: not ours to run ahead
            indicator.compute(arrays, **{key: p.default for key, p in indicator.params.items()})

    return warm


def _backtest(*rules: str) -> Callable[[], None]:
    def warm() -> None:
        import numpy as np
        import pandas as pd

        from dask_pipeline.backtest import BacktestConfig, backtest, positions

        returns = _bars(300, gap=False)["close"].pct_change().fillna(0.0)
        pred = pd.DataFrame({"A": returns, "B": -returns, "C": np.roll(returns, 3)})
        for rule in rules:
            cfg = BacktestConfig(rule=rule)
            backtest(positions(pred, cfg), pred, cfg)

    return warm


def _waves() -> None:
    from dask_pipeline.waves import WavesConfig, scan

    scan(_bars(3000, gap=False), WavesConfig(backend="numba"))


#: Group name -> a function calling every kernel of the group once on small inputs.
KERNEL_GROUPS: dict[str, Callable[[], None]] = {
    "features-close": _features("ret", "logret", "mom", "roc", "sma", "ema", "macd", "rsi", "obv"),
    "features-moments": _fused_pass("std", "zscore", "bbands", "volume_z"),
    "features-ranges": _fused_pass("atr", "natr", "stoch", "dist_high", "dist_low"),
    "features-indicators": _indicator_kernels(*UNFUSED),
    # What bars whose columns are missing on different bars fall back to (warmed by the command only).
    "features-generic": _indicator_kernels("ret", "logret", "mom", "roc", "sma", "ema", "std", "zscore", "rsi",
                                           "macd", "bbands", "atr", "natr", "stoch", "dist_high", "dist_low",
                                           "volume_z", "obv"),
    "backtest": _backtest("sign", "threshold"),
    # The rank rule's kernel sorts (numba's mergesort): a group of its own, compiled only when used.
    "backtest-rank": _backtest("rank"),
    "waves": _waves,
}


def kernel_groups(cfg: Any) -> list[str]:
    """The kernel groups a run of ``cfg`` calls: its features (and the per-indicator
    kernels of ``wma``, ``corr``, ``beta`` when it has them), backtest and wave scan."""
    features = list(FEATURE_GROUPS)
    if any(spec.name in UNFUSED for spec in cfg.features.indicators):
        features.append("features-indicators")
    backtest = ["backtest"]
    if cfg.backtest.rule == "rank" or "backtest.rule" in cfg.tune.space:
        backtest.append("backtest-rank")
    by_graph = {
        "walkforward": [*features, *backtest],
        "tune": [*features, *backtest],
        "wavescan": ["waves"],
        "research": [*features, *backtest, "waves"],
        "datacheck": [],
    }
    # A user's graph may call any stage: warm the shipped stages' kernels.
    return by_graph.get(cfg.graph, [*features, *backtest, "waves"])


# --- warming ------------------------------------------------------------------------


def _fingerprint() -> str:
    """What a compiled kernel depends on: the package's sources (path, size, mtime, as
    numba's own cache index), numba, Python and the CPU numba compiles for.

    The package's absolute location too: numba files its cache by the sources' absolute
    folder, so two identical installs sharing a fallback cache directory share no kernels,
    and must not share a marker either (the second would report warm with nothing cached).
    """
    import llvmlite.binding
    import numba

    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{PACKAGE_DIR}|{numba.__version__}|{sys.version}|{platform.machine()}|".encode())
    digest.update(llvmlite.binding.get_host_cpu_name().encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(PACKAGE_DIR)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _marker(group: str) -> Path:
    return cache_root() / f"dask-pipeline-warm-{group}-{_fingerprint()}"


def warm(group: str, force: bool = False) -> dict[str, Any]:
    """Compile (or load from numba's cache) the kernels of ``group`` in this process.

    Returns
    -------
    dict
        ``group``, ``host``, ``seconds`` spent, ``ran`` (False when the group's marker says
        this machine is already warm), and ``kernels``: (kernel, seconds) of every kernel
        numba compiled rather than loaded, the slowest first (a kernel's own time, its
        callees' excluded); ``error`` when the group raised (no marker is written).
    """
    marker = _marker(group)
    found = {"group": group, "host": socket.gethostname(), "seconds": 0.0, "ran": False, "kernels": []}
    if marker.exists() and not force:
        return found
    timer = _compile_timer()
    from numba.core import event

    start = time.perf_counter()
    try:
        with event.install_listener("numba:compile", timer):
            KERNEL_GROUPS[group]()
    except Exception as exc:  # noqa: BLE001 - ahead-of-time only: the run meets any real error itself
        found.update(error=f"{type(exc).__name__}: {exc}")
        return found
    found.update(seconds=time.perf_counter() - start, ran=True, kernels=timer.kernels())
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache: numba could not write either; the next run warms again
        pass
    return found


def _compile_timer() -> Any:
    """A numba event listener timing each kernel this thread compiles, its own time only
    (nested compiles of its callees are subtracted); other threads' compiles (a worker
    with several threads) are not this group's."""
    import threading

    from numba.core import event

    class CompileTimer(event.Listener):
        def __init__(self) -> None:
            self.thread = threading.get_ident()
            self.stack: list[list[Any]] = []
            self.own: dict[str, float] = {}

        def on_start(self, record: Any) -> None:
            if threading.get_ident() == self.thread:
                function = record.data["dispatcher"].py_func
                self.stack.append([f"{function.__module__}.{function.__qualname__}", time.perf_counter(), 0.0])

        def on_end(self, record: Any) -> None:
            if threading.get_ident() != self.thread or not self.stack:
                return
            name, began, nested = self.stack.pop()
            spent = time.perf_counter() - began
            self.own[name] = self.own.get(name, 0.0) + spent - nested
            if self.stack:
                self.stack[-1][2] += spent

        def kernels(self) -> list[tuple[str, float]]:
            return sorted(self.own.items(), key=lambda item: -item[1])

    return CompileTimer()


#: Rough compile seconds of each group (``dask-pipeline bench first-run``), to balance groups over processes.
_COST = {"features-generic": 9.0, "waves": 9.0, "features-indicators": 4.0, "features-close": 3.0,
         "features-ranges": 3.0, "features-moments": 2.5, "backtest-rank": 1.7, "backtest": 0.6}


def _by_cost(groups: Sequence[str]) -> list[str]:
    return sorted(groups, key=lambda group: -_COST.get(group, 1.0))


def warm_processes(groups: Sequence[str], processes: int | None = None, force: bool = False) -> list[dict[str, Any]]:
    """Warm ``groups`` in parallel processes on this machine (``dask-pipeline warmup``),
    the costliest first: a process that finishes takes the next group."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    if not groups:
        return []
    configure_cache()  # the processes inherit NUMBA_CACHE_DIR
    ordered = _by_cost(groups)
    processes = max(1, min(processes or os.cpu_count() or 1, len(ordered)))
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        done = {r["group"]: r for r in pool.map(warm, ordered, [force] * len(ordered))}
    return [done[group] for group in groups]


def warm_cluster(client: Any, groups: Sequence[str], echo: Callable[..., Any] = print) -> list[dict[str, Any]]:
    """Warm ``groups`` on every machine of the cluster before a graph fans out.

    Per machine (workers grouped by host), one task per group, the costliest first, each
    on the least loaded of that machine's workers, so the groups compile in parallel into
    the machine's cache. Says in one line what it compiled, if anything; a warm cluster
    costs a round trip. (Compiling on this machine while a local cluster starts was
    slower: on a small machine it delays the workers' start, which the run waits for.)
    """
    if not groups:
        return []
    start = time.perf_counter()
    workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) else \
        client.scheduler_info()["workers"]
    hosts: dict[str, list[str]] = {}
    for address, info in sorted(workers.items()):
        hosts.setdefault(str(info.get("host") or address), []).append(address)
    futures = []
    for host, addresses in hosts.items():
        load = dict.fromkeys(addresses, 0.0)
        for group in _by_cost(groups):
            worker = min(load, key=load.__getitem__)
            load[worker] += _COST.get(group, 1.0)
            # Loosely placed: a worker lost now hands its groups to another rather than hanging the run.
            futures.append(client.submit(warm, group, key=f"warmup-{group}-{host}-{time.time_ns()}", workers=[worker],
                                         allow_other_workers=True, pure=False))
    results = client.gather(futures)
    for failed in {r["group"]: r["error"] for r in results if r.get("error")}.items():
        echo("note: could not compile %s ahead (%s); the workers compile it when they need it" % failed)
    ran = sorted({r["group"] for r in results if r["ran"] and r["kernels"]})
    if ran:
        machines = f"{len(hosts)} machine" + ("s" if len(hosts) != 1 else "")
        echo(f"compiled numba kernels once for {machines} in {time.perf_counter() - start:.1f} s "
             f"({', '.join(ran)}); later runs load them from the cache")
    return results


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters
