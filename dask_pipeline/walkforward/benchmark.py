"""``dask-pipeline bench walkforward`` and ``bench scale``: the walk-forward on Dask clusters
of several sizes against a plain loop, on worker processes reached by address, and worker
memory under a limit."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable

import pandas as pd

from dask_pipeline.bench import timed, wait_until_forgotten, warm_worker


def walkforward_loop(cfg) -> dict[str, pd.DataFrame]:
    """The walk-forward graph's work as a plain sequential loop over the same stage
    functions, in this process, without Dask (the benchmark's baseline)."""
    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute
    from dask_pipeline.folds import plan_folds
    from dask_pipeline.graph import symbols_of
    from dask_pipeline.walkforward import aggregate_folds, backtest_fold, train_fold

    symbols = symbols_of(cfg)
    bars = [load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype) for s in symbols]
    benchmark = None
    if cfg.features.benchmark is not None:
        benchmark = load_bars(cfg.data.root, cfg.features.benchmark, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype)
    features = [compute(b, cfg.features, benchmark, symbol=s) for s, b in zip(symbols, bars)]
    stamps = {s: b.index for s, b in zip(symbols, bars)}
    folds = plan_folds(stamps, cfg.folds, cfg.label.horizon, cfg.backtest.periods_per_year).folds
    results = [
        backtest_fold(train_fold(fold, symbols, bars, features, cfg.label, cfg.model, cfg.seed), cfg.backtest)
        for fold in folds
    ]
    return aggregate_folds(results)


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
                wait_until_forgotten(client)

            return once

        # The loop runs first, with no cluster alive: a client's event-loop thread in this
        # process would take the GIL from it.
        startup = {("plain loop", 0): float("nan")}
        first = {("plain loop", 0): timed(loop_once)[0]}
        times = {("plain loop", 0): [timed(loop_once) for _ in range(repeats)]}
        for n in workers:
            start = time.perf_counter()
            with connect(ClusterConfig(n_workers=n, dashboard=False)) as client:
                client.wait_for_workers(n)
                client.run(warm_worker)
                startup[("dask", n)] = time.perf_counter() - start
                once = dask_once(client)
                first[("dask", n)] = timed(once)[0]
                times[("dask", n)] = [timed(once) for _ in range(repeats)]
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


def bench_scale(workload: str = "large", workers: tuple[int, ...] = (1, 2), repeats: int = 3,
                memory_workload: str = "sp500", memory_limit: str = "1GiB", memory_preset: str = "fast",
                preset: str | None = None) -> pd.DataFrame:
    """The figures of ``dask-pipeline bench scale``.

    For each worker count, the walk-forward of ``configs/workloads/<workload>.yaml`` on a
    ``local`` cluster (a LocalCluster in this process) and on ``nodes``: a separate
    ``dask scheduler`` process and that many ``dask worker`` processes, each with its own
    local and temp directory, reached by address as workers on other machines would be
    (on one machine here, so the difference is the extra hops, not the network). Median
    and minimum of ``repeats`` timed runs after one warm-up; ``same_bytes`` says whether
    the result files equal the first row's.

    ``preset`` replaces the workload's model preset (the tests run ``blank``).

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
                          ["features.cache=false", f"output.dir={tmp}", "cluster.dashboard=false",
                           *([f"preset={preset}"] if preset else [])])
        prepare_data(cfg, echo=quiet)
        reference: dict[str, bytes] | None = None
        for n in workers:
            for runner in ("local", "nodes"):
                with (connect(ClusterConfig(n_workers=n, dashboard=False)) if runner == "local"
                      else _process_cluster(n, Path(tmp) / f"nodes-{n}")) as client:
                    client.wait_for_workers(n)
                    client.run(warm_worker)

                    def once() -> None:
                        run(cfg, client=client, echo=quiet)
                        wait_until_forgotten(client)

                    once()
                    files = _result_files(cfg.run_dir)
                    reference = files if reference is None else reference
                    times = [timed(once) for _ in range(repeats)]
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
            client.run(warm_worker)
            with _WorkerMemory(client) as memory:
                wall, others = timed(lambda: run(mem_cfg, client=client, echo=quiet))
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

