"""The ``dask-pipeline`` command: run | report | data | bench.

Expected failures (``DaskPipelineError``) print one line on stderr and exit 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from dask_pipeline.errors import DaskPipelineError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (``entry`` is the console script)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from dask_pipeline.warmup import configure_cache

    configure_cache()  # before any kernel module is imported: numba reads it then
    _quiet_libraries()
    from dask_pipeline.redaction import redact

    previous = signal.signal(signal.SIGINT, _interrupt) if _is_main_thread() else None
    try:
        return args.func(args) or 0
    except DaskPipelineError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", "")
        print(f"error: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output left (`| head`): nothing more to say, no traceback; 128 + SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:  # a bug: keep its traceback, without the secrets it may quote
        import traceback

        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: stop the run once, then let it close its cluster in peace.

    Further Ctrl-C while the cluster shuts down are ignored, and the libraries' complaints
    about work cut short (asyncio's "Task exception was never retrieved", workers lost) are
    silenced: the one line the CLI prints says what happened.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("asyncio", "distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    raise KeyboardInterrupt


def entry() -> None:
    """The ``dask-pipeline`` console script: :func:`main`, then a quick exit.

    Once a command has finished (its files written, its cluster closed), the interpreter
    would still spend 1-2 s tearing down every module a run imports. Flush and leave
    instead. A bug's traceback leaves the usual way.
    """
    os._exit(_flush_output(main()))


def _flush_output(code: int) -> int:
    """Flush stdout and stderr before ``os._exit``; the exit status, telling output lost here.

    A command that succeeded but whose last output could not be written did not succeed:
    141 (128 + SIGPIPE, as ``main`` says it) when the reader left (``| head``), else 120
    with one line on stderr, as Python itself exits when its final flush fails (a full
    disk, ``> /dev/full``). A failed command keeps its own status.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:  # closed by the command: nothing of ours left in it
            pass
        except BrokenPipeError:
            if code == 0:
                code = 141
            try:  # the reader is gone: whatever is still buffered goes nowhere, quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
            except (OSError, ValueError):
                pass
        except OSError as exc:
            if code == 0:
                code = 120
                if stream is sys.stdout:
                    try:
                        print(f"error: cannot write standard output ({exc.strerror or exc})", file=sys.stderr)
                        sys.stderr.flush()
                    except (OSError, ValueError):
                        pass
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dask-pipeline", description="Dask-distributed quantitative research pipelines.")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the graph a config names, write results/<run>/")
    run.add_argument("config", help="a YAML config, e.g. configs/quickstart.yaml")
    run.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key by its dotted path, e.g. -o cluster.n_workers=4 (repeatable)")
    run.add_argument("--scheduler", metavar="ADDR", help="use an existing scheduler (tcp://HOST:PORT or tls://...)")
    run.add_argument("--workers", type=int, metavar="N", help="number of local workers (cluster.n_workers)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run of the same config: compute only what is missing")
    run.add_argument("-q", "--quiet", action="store_true", help="print only errors (no progress, no stage table)")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", help="rebuild report.html of a finished run from its result files")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. results/quickstart")
    report.set_defaults(func=_cmd_report)

    data = sub.add_parser("data", help="make, import and check market data").add_subparsers(metavar="ACTION")
    synth = data.add_parser("synth", help="generate a synthetic market as a Parquet store")
    synth.add_argument("--out", required=True, help="store root to create")
    synth.add_argument("--symbols", type=int, default=20)
    synth.add_argument("--start", default="2016-01-01")
    synth.add_argument("--end", default="2023-12-29")
    synth.add_argument("--freq", default="1D", choices=["1D", "1h", "5min"])
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)
    imp = data.add_parser("import", help="import CSV or Parquet bars (one symbol per file, long or wide) into a store")
    imp.add_argument("source", help="a CSV file or a folder of them, a Parquet file (long, one symbol, or wide closes) "
                                    "or a Parquet dataset folder (long)")
    imp.add_argument("--out", required=True, help="store root")
    imp.add_argument("--date-format", metavar="FMT", help="strftime format of the timestamps, e.g. '%%d/%%m/%%Y %%H:%%M'")
    imp.add_argument("--dayfirst", action="store_true", help="read dates like 02/01/2020 day first (2 January)")
    imp.add_argument("--tz", metavar="ZONE", help="time zone of naive timestamps, e.g. America/New_York (default UTC)")
    imp.set_defaults(func=_cmd_import)
    val = data.add_parser("validate", help="check every symbol of a Parquet store")
    val.add_argument("root", help="store root")
    val.set_defaults(func=_cmd_validate)

    warmup = sub.add_parser("warmup", help="compile the numba kernels into the cache (images, cluster nodes)")
    warmup.add_argument("--groups", default="all",
                        help="comma-separated kernel groups (default all): " + ", ".join(_kernel_group_names()))
    warmup.add_argument("--processes", type=int, default=None, help="groups compiled at once (default: cores)")
    warmup.add_argument("--force", action="store_true", help="compile (or load) even where the cache is marked warm")
    warmup.add_argument("--kernels", action="store_true", help="also list each kernel compiled and its seconds")
    warmup.set_defaults(func=_cmd_warmup)

    bench = sub.add_parser("bench", help="benchmarks (see README: Benchmarks)").add_subparsers(metavar="WORKLOAD")
    feats = bench.add_parser("features", help="fused feature passes vs TA-Lib vs pandas on two shapes, with bandwidth")
    feats.add_argument("--shapes", default="1x859200,100x5000",
                       help="comma-separated SYMBOLSxBARS (default: one long minute series, a wide daily universe)")
    feats.add_argument("--repeats", type=int, default=5)
    feats.add_argument("--exactness-bars", type=int, default=10_000_000,
                       help="length of the drifting series of the rolling-std exactness check (0 skips it)")
    feats.set_defaults(func=_cmd_bench_features)
    first = bench.add_parser("first-run", help="the quickstart on a cold cache and empty HOME vs warm: process and run wall")
    first.add_argument("--config", default=None, help="the config to run (default: configs/quickstart.yaml)")
    first.add_argument("--warm-repeats", type=int, default=2)
    first.set_defaults(func=_cmd_bench_first_run)
    wf = bench.add_parser("walkforward", help="walk-forward wall time per worker count vs a plain loop")
    wf.add_argument("--workload", default="medium", choices=["small", "medium", "large", "sp500"])
    wf.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    wf.add_argument("--repeats", type=int, default=3)
    wf.set_defaults(func=_cmd_bench_walkforward)
    waves = bench.add_parser("waves", help="wave scan: reference vs numpy vs numba (vs cupy, cuda), one symbol and sp500")
    waves.add_argument("--windows", type=int, default=500)
    waves.add_argument("--window-bars", type=int, default=500)
    waves.add_argument("--reference-windows", type=int, default=None,
                       help="time the slow reference on this many evenly spaced windows and extrapolate")
    waves.add_argument("--sp500-symbols", type=int, default=500)
    waves.add_argument("--sp500-windows", type=int, default=2000)
    waves.add_argument("--measure-symbols", type=int, default=2, help="symbols actually scanned for the sp500 row")
    waves.add_argument("--repeats", type=int, default=3)
    waves.add_argument("--backends", default=None,
                       help="comma-separated, e.g. numba,cuda (default: numpy,numba, plus cupy,cuda with a GPU)")
    waves.set_defaults(func=_cmd_bench_waves)
    tune = bench.add_parser("tune", help="tune driver overhead per trial, resume time, trials on Dask vs study.optimize")
    tune.add_argument("--overhead-trials", type=int, default=1000)
    tune.add_argument("--resume-trials", type=int, default=10_000)
    tune.add_argument("--trials", type=int, default=32, help="real walk-forward trials on the small workload")
    tune.add_argument("--workers", type=int, default=2)
    tune.add_argument("--repeats", type=int, default=3)
    tune.add_argument("--only", choices=["features"], default=None,
                      help="run only the features row: feature sets shared across trials vs recomputed per trial")
    tune.add_argument("--feature-trials", type=int, default=64, help="trials of the features row")
    tune.add_argument("--feature-windows", type=int, default=8, help="values of features.rsi.window it searches")
    tune.add_argument("--feature-workload", default="medium", choices=["small", "medium", "large"])
    tune.set_defaults(func=_cmd_bench_tune)
    scale = bench.add_parser("scale", help="walk-forward on a local cluster vs worker processes reached by address; "
                                           "worker memory on sp500 under a memory limit")
    scale.add_argument("--workload", default="large", choices=["small", "medium", "large", "sp500"])
    scale.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    scale.add_argument("--repeats", type=int, default=3)
    scale.add_argument("--memory-workload", default="sp500", choices=["small", "medium", "large", "sp500"])
    scale.add_argument("--memory-limit", default="1GiB", help="cluster.memory_limit of each worker for the memory row")
    scale.add_argument("--memory-preset", default="fast", choices=["blank", "fast", "balanced", "quality"])
    scale.set_defaults(func=_cmd_bench_scale)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from dask_pipeline.config import load_config
    from dask_pipeline.runner import run

    overrides = list(args.override)
    if args.scheduler:
        overrides += ["cluster.kind=address", f"cluster.address={args.scheduler}"]
    if args.workers is not None:
        overrides.append(f"cluster.n_workers={args.workers}")
    cfg = load_config(args.config, overrides)
    # What Ctrl-C says: a study keeps its trials in its journal, other graphs their checkpoints.
    args.interrupt_hint = ("; rerun the same command to continue the study (finished trials are kept in its journal)"
                           if cfg.graph == "tune" else
                           "; rerun the same command with --resume to continue (finished work is kept)")
    echo = (lambda *a, **k: None) if args.quiet else _print_redacted
    import dask

    # Workers this run starts load this module first (dask_setup below): Ctrl-C is the CLI's.
    preload = [*dask.config.get("distributed.worker.preload", []), "dask_pipeline.cli"]
    with dask.config.set({"distributed.worker.preload": preload}):
        # Progress per stage: live bars on a terminal, a plain line every few seconds otherwise.
        run(cfg, echo=echo, progress=not args.quiet, resume=args.resume)
    return 0


def dask_setup(worker: object) -> None:
    """Preload of the local workers ``dask-pipeline run`` starts: they ignore Ctrl-C.

    A terminal sends Ctrl-C to every process of the command, workers included; a worker
    that died of it would print its own traceback. The CLI stops the run and closes its
    cluster, which ends the workers.
    """
    if _is_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dask_pipeline.errors import OutputError
    from dask_pipeline.report import build_report
    from dask_pipeline.results import RunLock

    run_dir = Path(args.run_dir)
    # Under the run's lock: a run publishing this folder meanwhile would get the old run's report.
    with RunLock(run_dir, describe="dask-pipeline report"):
        try:
            written = build_report(run_dir)
        except OSError as exc:
            raise OutputError(f"{run_dir}: cannot write the report ({exc.strerror or exc})") from None
    print(f"report: {written}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from dask_pipeline.data import synthesize, write_dataset

    bars = synthesize(args.symbols, args.start, args.end, args.freq, args.seed)
    write_dataset(args.out, bars)
    n = sum(len(b) for b in bars.values())
    print(f"wrote {len(bars)} symbols, {n} bars to {args.out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dask_pipeline.data import TimeFormat, import_bars

    symbols = import_bars(args.source, args.out, TimeFormat(args.date_format, args.dayfirst, args.tz))
    print(f"imported {len(symbols)} symbols into {args.out}: {', '.join(symbols)}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from dask_pipeline.data import validate_store

    rows = validate_store(args.root)
    for row in rows:
        print(f"ok  {row['symbol']:<12} {row['rows']:>8} bars  {row['first']} .. {row['last']}")
    print(f"{len(rows)} symbols valid in {args.root}")
    return 0


def _kernel_group_names() -> list[str]:
    from dask_pipeline.warmup import KERNEL_GROUPS

    return list(KERNEL_GROUPS)


def _cmd_warmup(args: argparse.Namespace) -> int:
    from dask_pipeline.warmup import KERNEL_GROUPS, cache_root, warm_processes

    groups = list(KERNEL_GROUPS) if args.groups == "all" else [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in KERNEL_GROUPS]
    if unknown or not groups:
        raise DaskPipelineError(f"--groups {args.groups!r}: unknown group(s) {', '.join(unknown) or '(none given)'}; "
                                f"valid: all, {', '.join(KERNEL_GROUPS)}")
    for row in warm_processes(groups, args.processes, args.force):
        compiled = len(row["kernels"])
        state = f"compiled {compiled} kernels" if compiled else "loaded from the cache" if row["ran"] else "already warm"
        print(f"{row['group']:<20} {row['seconds']:6.1f} s  {state}")
        if args.kernels:
            for kernel, seconds in row["kernels"]:
                print(f"    {seconds:6.2f} s  {kernel}")
    print(f"numba cache: {cache_root()}")
    return 0


def _cmd_bench_features(args: argparse.Namespace) -> int:
    from dask_pipeline.features.benchmark import bench_features, format_features_table

    try:
        shapes = [tuple(int(n) for n in shape.lower().split("x")) for shape in args.shapes.split(",") if shape.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
        raise DaskPipelineError(f"--shapes {args.shapes!r}: expected SYMBOLSxBARS pairs such as 1x859200,100x5000")
    print(format_features_table(bench_features(shapes, args.repeats, args.exactness_bars)))
    return 0


def _cmd_bench_first_run(args: argparse.Namespace) -> int:
    from dask_pipeline.warmup.benchmark import bench_first_run, format_first_run_table

    print(format_first_run_table(bench_first_run(args.config, args.warm_repeats)))
    return 0


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise DaskPipelineError(f"--workers {text!r}: expected comma-separated counts such as 1,2")
    return counts


def _cmd_bench_walkforward(args: argparse.Namespace) -> int:
    from dask_pipeline.walkforward.benchmark import bench_walkforward, format_walkforward_table

    print(format_walkforward_table(bench_walkforward(args.workload, _worker_counts(args.workers), args.repeats)))
    return 0


def _cmd_bench_scale(args: argparse.Namespace) -> int:
    from dask_pipeline.walkforward.benchmark import bench_scale, format_scale_table

    table = bench_scale(args.workload, tuple(_worker_counts(args.workers)), args.repeats, args.memory_workload,
                        args.memory_limit, args.memory_preset)
    print(format_scale_table(table))
    return 0


def _cmd_bench_waves(args: argparse.Namespace) -> int:
    from dask_pipeline.waves.benchmark import bench_waves, format_waves_table

    backends = None if args.backends is None else [b.strip() for b in args.backends.split(",") if b.strip()]
    if backends is not None:
        from dask_pipeline.waves.backends import get_backend

        for name in backends:
            get_backend(name)  # an unknown or unusable backend: one line, before anything is timed
    table = bench_waves(args.windows, args.window_bars, args.reference_windows, args.sp500_symbols,
                        args.sp500_windows, args.measure_symbols, args.repeats, backends=backends)
    print(format_waves_table(table))
    return 0


def _cmd_bench_tune(args: argparse.Namespace) -> int:
    import pandas as pd

    from dask_pipeline.tuning.benchmark import bench_tune, bench_tune_features, format_tune_table

    tables = [] if args.only == "features" else [
        bench_tune(args.overhead_trials, args.resume_trials, args.trials, args.workers, args.repeats)]
    tables.append(bench_tune_features(args.feature_trials, args.feature_windows, args.workers, args.repeats,
                                      workload=args.feature_workload))
    table = pd.concat(tables, ignore_index=True)
    table.attrs["note"] = "\n".join(t.attrs["note"] for t in tables if t.attrs.get("note"))
    print(format_tune_table(table))
    return 0


def _print_redacted(*args: object, **kwargs: object) -> None:
    """``print``, with passwords in URLs masked (``redact``): every line the CLI prints."""
    from dask_pipeline.redaction import redact

    print(*(redact(str(a)) for a in args), **kwargs)  # type: ignore[call-overload]


class _RedactingFormatter(logging.Formatter):
    """A handler's formatter, with passwords in URLs masked in the message and any traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        from dask_pipeline.redaction import redact

        return redact(self.inner.format(record))


def _quiet_libraries() -> None:
    # The scheduler and workers log every start and stop at INFO; a user wants warnings.
    # A task that raises our own error is reported once, by the CLI, as one line; the
    # workers (child processes, which read this at import) need not log it again.
    # (distributed.sizeof's warnings about deep profile trees are fixed at their cause:
    # monitor.register_nested_sizeof, registered on the client and every worker.)
    os.environ.setdefault("DASK_LOGGING", repr({"distributed": "warning", "distributed.worker": "critical"}))
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Log lines may quote a scheduler or storage URL: mask its password wherever it is printed.
    for name in ("", "distributed"):
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler.formatter, _RedactingFormatter):
                handler.setFormatter(_RedactingFormatter(handler.formatter))


if __name__ == "__main__":
    entry()
