"""Run a config: prepare data, build the graph, compute it on a cluster, write the results."""

from __future__ import annotations

import datetime as dt
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask_pipeline.cluster import connect, describe
from dask_pipeline.config import Config, dump_config, redact
from dask_pipeline.checkpoints import clear as clear_checkpoints
from dask_pipeline.errors import ConfigError, OutputError, ThresholdError
from dask_pipeline.graph import (check_outputs, gpu_workers, resolve_graph, run_notes, run_record, run_stage_records,
                                 stages_of, symbols_of)
from dask_pipeline.monitor import (StageMonitor, check_thresholds, format_table, portfolio_metrics, progress_display,
                                   stage_times, task_dependencies)
from dask_pipeline.preflight import check_workers
from dask_pipeline.report import build_report
from dask_pipeline.results import RunFolder, RunLock, check_replaceable, recover
from dask_pipeline.warmup import kernel_groups, warm_cluster

VERSIONED = ["dask", "distributed", "numpy", "pandas", "pyarrow", "numba", "scikit-learn", "optuna", "pydantic"]


@dataclass
class RunResult:
    """What a run produced: its folder, its output files and its ``run.json`` record."""

    run_dir: Path
    files: list[Path]
    record: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


def run(cfg: Config, client: Any = None, echo: Any = print, progress: bool = False, resume: bool = False,
        graph: Any = None) -> RunResult:
    """Compute ``cfg``'s graph and write its results under ``cfg.run_dir``.

    Parameters
    ----------
    cfg
        A validated config (``load_config``).
    client
        A connected ``distributed.Client``; None starts the cluster ``cfg.cluster`` describes.
    echo
        Where progress lines go (``print``; a no-op for quiet).
    progress
        Show progress per stage while it computes: live bars on a terminal, else a plain
        line through ``echo`` every few seconds.
    resume
        Keep the checkpoints an interrupted run of the same config left, and compute only
        what is missing; otherwise start clean.
    graph
        The graph to run instead of ``cfg.graph``: a module with ``build(cfg)`` (or
        ``drive``), a ``build(cfg)`` function, or a ``graph:`` value. It gets the same
        machinery as a shipped graph (preflight, stages, progress, run record, report).

    Returns
    -------
    RunResult
    """
    check_run_dir(cfg.run_dir)  # a results folder that cannot be written fails now, not after the computation
    resolved = resolve_graph(cfg.graph if graph is None else graph)
    if graph is not None and resolved.repeatable:
        cfg = cfg.model_copy(update={"graph": resolved.label})  # config.yaml then repeats this run
    with RunLock(cfg.run_dir, describe=f"run {cfg.run_dir.name!r}"):
        for line in recover(cfg.run_dir):
            echo(f"note: {line}")
        check_replaceable(cfg.run_dir)
        prepare_data(cfg, echo)
        if not resume:
            clear_checkpoints(cfg.run_dir / "checkpoints")
        elif cfg.checkpoint_dir.exists():
            echo(f"resuming: {count_checkpoints(cfg.checkpoint_dir)} checkpoints in {cfg.checkpoint_dir}")
        symbols = symbols_of(cfg)  # a missing symbol fails here, before any cluster starts
        preset_note = cfg.model.preset_note()
        if preset_note:
            echo(f"note: {preset_note}")
        check_indicators(cfg, symbols[0], echo)
        if hasattr(resolved.source, "check"):
            resolved.source.check(cfg)  # what the graph can refuse from the config and the store alone
        with run_notes(echo):  # notes the graph gives while it is built or driven: echoed, and in run.json
            if client is not None:
                return _compute_and_write(cfg, resolved, client, echo, progress)
            with connect(cfg.cluster) as own_client:
                return _compute_and_write(cfg, resolved, own_client, echo, progress)


def check_indicators(cfg: Config, symbol: str, echo: Any = print) -> None:
    """The look-ahead check of every user indicator in ``features.indicators``, on ``symbol``'s bars, once per run."""
    from dask_pipeline.data import load_bars
    from dask_pipeline.features.custom import is_user_indicator
    from dask_pipeline.features.lookahead import MAX_BARS, check_run_indicators

    if not any(is_user_indicator(spec.name) for spec in cfg.features.indicators):
        return
    bars = load_bars(cfg.data.root, symbol, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype)
    checked = check_run_indicators(bars, list(cfg.features.indicators), symbol)
    echo(f"look-ahead check: {', '.join(checked)} passed on {symbol} ({min(len(bars), MAX_BARS)} bars)")


def check_run_dir(run_dir: Path) -> None:
    """Raise ``ConfigError`` when ``run_dir`` cannot be created and written: a file in its way, or no permission."""
    import os

    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"'output.dir': {path} is a file, not a folder; results would go to {run_dir}")
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"'output.dir': cannot write in {path} (permission denied); results would go to {run_dir}"
                )
            return


def prepare_data(cfg: Config, echo: Any = print) -> None:
    """Generate the configured synthetic market into ``data.root`` the first time."""
    from dask_pipeline.data import list_symbols, synthesize, write_dataset

    synth = cfg.data.synthetic
    if synth is None or _has_store(cfg.data.root):
        return
    t0 = time.perf_counter()
    bars = synthesize(synth.symbols, synth.start, synth.end, synth.freq, synth.seed)
    write_dataset(cfg.data.root, bars)
    echo(f"generated demo data: {len(list_symbols(cfg.data.root))} symbols in {cfg.data.root} ({time.perf_counter() - t0:.1f} s)")


def _has_store(root: str) -> bool:
    from dask_pipeline.data import store_exists  # a local path or an object store URL

    return store_exists(root)


def _compute_and_write(cfg: Config, resolved: Any, client: Any, echo: Any, progress: bool) -> RunResult:
    """Compute the graph under the monitor, write every result file, then check the thresholds.

    A crossed threshold with ``monitor.fail_on_threshold`` raises ``ThresholdError`` only
    after every file (results, ``stages.json``, ``run.json``, reports) is written: the
    computation itself succeeded, and its record is what explains the failure.
    """
    import tempfile

    from distributed import get_task_stream, performance_report

    cluster = describe(client)
    if cluster["note"]:
        echo(f"note: {cluster['note']}")
    if cluster["dashboard"]:
        echo(f"dashboard: {cluster['dashboard']}")
    echo(f"cluster: {cluster['n_workers']} workers, {cluster['threads']} threads at {cluster['scheduler']}")
    from dask_pipeline.plugins import user_code

    # Same versions everywhere, the data root and the run's user code on every worker.
    check_workers(client, cfg, echo, user_code(cfg, resolved.module))
    graph = resolved.source
    warm_cluster(client, kernel_groups(cfg), echo)  # numba kernels compiled once per machine, before the fan-out
    outputs = None
    if hasattr(graph, "build"):
        with gpu_workers("GPU" in cluster["resources"], "CPU" in cluster["resources"]):
            outputs = graph.build(cfg)

    # The report's libraries (matplotlib: ~1 s) load while this process only waits on the cluster.
    threading.Thread(target=_import_report_libraries, name="import-report", daemon=True).start()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dask-report-") as tmp:
        dask_report = Path(tmp) / "dask-report.html"
        # performance_report reports on the current client, which need not be the default one.
        with client.as_current(), performance_report(filename=str(dask_report)), \
                get_task_stream(client) as stream, StageMonitor(client, progress_display(progress, echo)) as monitor:
            if outputs is None:
                # A driver graph (e.g. tuning) submits its own tasks as results come back.
                values = graph.drive(cfg, client, echo)
            else:
                names = sorted(outputs)
                futures = client.compute([outputs[n] for n in names], retries=cfg.cluster.retries)
                values = dict(zip(names, client.gather(futures), strict=True))
        values = check_outputs(values)  # a user graph's output of the wrong type fails before any write
        wall = time.perf_counter() - t0
        performance = dask_report.read_bytes() if dask_report.is_file() else b""
    if monitor.error:
        echo(f"note: no live progress or worker memory from the scheduler ({monitor.error})")

    stages = stage_times(stream.data, {**monitor.stages, **stages_of(outputs or {})},
                         {**task_dependencies(outputs or {}), **monitor.dependencies}, monitor.samples)
    for stage, extra in run_stage_records().items():  # what the graph counted itself (feature sets reused, ...)
        stages.setdefault(stage, {"tasks": 0, "wall_seconds": 0.0, "compute_seconds": 0.0, "share": 0.0,
                                  "transfer_seconds": 0.0, "transfer_bytes": 0, "peak_worker_memory": None,
                                  "workers": {}}).update(extra)
    crossed = check_thresholds(stages, cfg.monitor, portfolio_metrics(values.get("folds")))
    record = {
        "run": cfg.output.run_name,
        "graph": resolved.label,
        "config_digest": cfg.digest(),
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 3),
        "stages": stages,
        "thresholds": crossed,
        "cluster": cluster,
        "versions": versions(),
        **run_record(),
    }
    run_dir = publish_run(cfg, values, record, performance)
    files = sorted((p for p in run_dir.iterdir() if p.is_file()), key=lambda p: (p.name == "report.html", p.name))
    echo(format_table(stages))
    for item in crossed:
        echo(f"warning: {item['message']}")
    echo(f"results: {run_dir} ({', '.join(f.name for f in files)}) in {wall:.1f} s")
    if crossed and cfg.monitor.fail_on_threshold:
        raise ThresholdError(f"{len(crossed)} monitor threshold(s) crossed, first: {crossed[0]['message']}")
    return RunResult(run_dir, files, record, values)


def publish_run(cfg: Config, values: dict[str, Any], record: dict[str, Any], performance: bytes = b"") -> Path:
    """Write a computed run's files into a staging folder and publish them as one (``results.RunFolder``).

    Every graph output, ``dask-report.html``, ``stages.json``, ``config.yaml``, then ``run.json``
    (``record`` plus the output names and the manifest) and ``report.html``. A failure on
    the way (a full disk, a folder that became read-only) leaves ``cfg.run_dir`` as it was
    and the checkpoints in place for ``--resume``, and is one ``OutputError`` line.
    """
    run_dir = cfg.run_dir
    try:
        with RunFolder(run_dir) as folder:
            written = [folder.write(name, values[name]) for name in sorted(values)]
            record["outputs"] = [p.relative_to(folder.staging).as_posix() for p in written]
            if performance:
                folder.write("dask-report.html", performance)
            folder.write("stages", record["stages"])
            folder.write("config.yaml", dump_config(cfg))
            folder.seal(record, redact)
            build_report(folder.staging)
            folder.publish()
    except OSError as exc:
        kept = " (the checkpoints are kept: rerun with --resume)" if count_checkpoints(cfg.checkpoint_dir) else ""
        raise OutputError(f"{run_dir}: cannot write the results ({exc.strerror or exc}"
                          f"{': ' + exc.filename if exc.filename else ''}); nothing of this run was published and "
                          f"the folder is as it was{kept}") from None
    clear_checkpoints(run_dir / "checkpoints")  # the previous folder's, if any, went with it
    return run_dir


def count_checkpoints(folder: Path) -> int:
    """The checkpoint files in ``folder`` (not its key, not temp files); 0 when it does not exist."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and p.name != "key" and not p.name.startswith("."))


def _import_report_libraries() -> None:
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401


def versions() -> dict[str, str]:
    """Versions of Python, this package and the libraries that decide the results.

    Read from the installed distributions' metadata, not by importing them: an import
    here would run in the middle of a run and is not free (optuna alone takes a second).
    """
    from importlib.metadata import PackageNotFoundError, version

    import dask_pipeline

    found = {"python": platform.python_version(), "dask_pipeline": dask_pipeline.__version__}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
