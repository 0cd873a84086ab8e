"""Graph wiring: stage functions become named, annotated ``dask.delayed`` tasks.

Keys read like the pipeline: ``<name>-<token>`` where ``name`` is ``load-AAPL``,
``features-AAPL``, ``fold-03-fit``... and ``token`` is 8 hex digits of
``dask.base.tokenize`` over the function and its inputs. The dashboard strips the
token (``key_split``), so it shows the name; the token makes a key unique to its inputs,
so two runs or two trials sharing a cluster never mistake each other's results. Each
task also carries a ``stage`` annotation (load, features, fit, ...) that monitoring and
``run.json`` group by.

A graph module may also have ``check(cfg)``, which the runner calls before any cluster
starts (what can be refused from the config and the store alone), and may tell the user
things while it is built or driven: ``note(...)`` prints a ``note:`` line and lands in
``run.json``'s ``notes``, ``record(key, value)`` lands in ``run.json``, and
``record_stage(stage, values)`` joins that stage's row of ``stages.json``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask
from dask.base import tokenize
from dask.delayed import Delayed, delayed

from dask_pipeline.errors import ConfigError


_GPU_WORKERS: contextvars.ContextVar[bool] = contextvars.ContextVar("gpu_workers", default=False)
_CPU_WORKERS: contextvars.ContextVar[bool] = contextvars.ContextVar("cpu_workers", default=False)


@contextlib.contextmanager
def gpu_workers(present: bool, cpu_workers: bool = False) -> Iterator[None]:
    """Build graphs knowing whether the cluster has GPU workers (the runner sets this), and
    whether it also has CPU workers (resource ``CPU``) to keep the other stages off them."""
    token = _GPU_WORKERS.set(present)
    cpu_token = _CPU_WORKERS.set(cpu_workers)
    try:
        yield
    finally:
        _GPU_WORKERS.reset(token)
        _CPU_WORKERS.reset(cpu_token)


def gpu_workers_present() -> bool:
    """Whether the graph being built runs on a cluster with GPU workers (``gpu_workers``)."""
    return _GPU_WORKERS.get()


def task(
    func: Callable[..., Any], *args: Any, name: str, stage: str | None = None, gpu: bool = False, **kwargs: Any
) -> Delayed:
    """Wrap ``func(*args, **kwargs)`` as a pure delayed task with a readable key.

    Parameters
    ----------
    name
        The readable part of the key, e.g. ``load-AAPL``.
    stage
        The stage it belongs to; defaults to the first word of ``name``.
    gpu
        A stage that runs best on a GPU: it asks for the ``GPU`` resource when the
        cluster has GPU workers (``gpu_workers``), and runs anywhere otherwise. On a
        cluster with GPU and CPU workers every other task asks for ``CPU``, so CPU work
        never queues on a GPU worker's single thread ahead of the GPU stages.
    """
    token = tokenize(func, args, kwargs)[:8]
    annotations: dict[str, Any] = {"stage": stage or name.split("-", 1)[0]}
    if gpu and _GPU_WORKERS.get():
        annotations["resources"] = {"GPU": 1}
    elif _GPU_WORKERS.get() and _CPU_WORKERS.get():
        annotations["resources"] = {"CPU": 1}
    with dask.annotate(**annotations):
        return delayed(func, pure=True)(*args, dask_key_name=f"{name}-{token}", **kwargs)


def checkpointed(value: Delayed, path: str | Path, name: str) -> Delayed:
    """Save ``value`` to ``path`` when it is computed; if ``path`` already exists, load it instead.

    The runner clears a run's checkpoints unless it resumes (``--resume``) and refuses to
    start when it cannot, so an existing checkpoint is one this config computed: its folder
    is keyed by the config digest. Checkpoints are authenticated with the folder's key
    (``dask_pipeline.checkpoints``): a damaged, truncated or planted file is refused, naming
    it, and nothing in it runs. A loaded checkpoint has no dependencies, so nothing upstream
    of it is recomputed. Checkpoints are written by the worker that computed them (temp
    file + rename): a multi-node resume needs the run folder on a filesystem every worker shares.
    """
    from dask_pipeline.checkpoints import folder_key
    from dask_pipeline.results import inside

    path = Path(path)
    inside(path.parent, path.name, "checkpoint")  # a plain file name in its folder
    key = folder_key(path.parent)
    stage = name.split("-", 1)[0]
    if path.exists():
        return task(load_checkpoint, str(path), key, name=f"{name}-resume", stage=stage)
    return task(save_checkpoint, value, str(path), key, name=f"{name}-checkpoint", stage=stage)


def save_checkpoint(value: Any, path: str, key: bytes) -> Any:
    """Write ``value`` to ``path`` authenticated with ``key`` and pass it on (``checkpoints.save``)."""
    from dask_pipeline.checkpoints import save

    return save(value, path, key)


def load_checkpoint(path: str, key: bytes) -> Any:
    """The value ``save_checkpoint`` wrote, once it verifies (``checkpoints.load``)."""
    from dask_pipeline.checkpoints import load

    return load(path, key)


def stages_of(graph: dict[str, Delayed]) -> dict[str, str]:
    """Map every key in the graph's outputs to its ``stage`` annotation."""
    import dask.highlevelgraph

    stages: dict[str, str] = {}
    for value in graph.values():
        hlg = value.__dask_graph__()
        if not isinstance(hlg, dask.highlevelgraph.HighLevelGraph):
            continue
        for layer in hlg.layers.values():
            annotation = (layer.annotations or {}).get("stage")
            if annotation is None:
                continue
            for key in layer:
                # Merged layers keep annotations as a callable of the key.
                stage = annotation(key) if callable(annotation) else annotation
                if isinstance(stage, str):
                    stages[str(key)] = stage
    return stages


def symbols_of(cfg: Any) -> list[str]:
    """The run's symbols: ``data.symbols`` or every symbol in the store, in order.

    Raises ``DataError`` before anything is computed when the store holds no symbol, or a
    requested symbol or the ``features.benchmark`` symbol is not in it.
    """
    import difflib

    from dask_pipeline.data import list_symbols
    from dask_pipeline.errors import DataError

    stored = list_symbols(cfg.data.root)
    if not stored:
        raise DataError(f"{cfg.data.root}: the store holds no symbols (expected symbol=<SYMBOL>/ folders of Parquet "
                        "files; `dask-pipeline data import` or data.synthetic makes them)")
    requested = [("data.symbols", s) for s in cfg.data.symbols or ()]
    if cfg.features.benchmark is not None:
        requested.append(("features.benchmark", cfg.features.benchmark))
    for key, symbol in requested:
        if symbol not in stored:
            close = difflib.get_close_matches(symbol, stored, n=3)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            raise DataError(f"'{key}': {symbol!r} is not in the store {cfg.data.root}{hint}")
    return list(cfg.data.symbols) if cfg.data.symbols else stored


def features_tasks(cfg: Any, symbols: list[str] | None = None) -> dict[str, tuple[Delayed, Delayed]]:
    """Per symbol, its ``load-<S>`` bars task and its ``features-<S>`` task.

    Features go through the content-addressed cache unless ``features.cache`` is false.
    Every later stage depends on these keys, so each symbol is loaded and featurised once
    per graph and shared by reference. The benchmark symbol (``features.benchmark``) is
    loaded once and fed to every symbol's features. Keys are content-addressed: two
    configs with equal ``data`` and ``features`` sections (two trials of a study that need
    the same feature set) name the same tasks. ``symbols``: the run's symbols when the
    caller has them (``symbols_of``), saving a listing of the store.
    """
    symbols = symbols_of(cfg) if symbols is None else symbols  # also checks that the benchmark is in the store
    benchmark = cfg.features.benchmark
    wanted = symbols if benchmark is None or benchmark in symbols else [*symbols, benchmark]
    loads = {s: load_task(cfg.data, s) for s in wanted}
    bench = loads[benchmark] if benchmark is not None else None
    return {
        s: (loads[s], task(cached_features, loads[s], cfg.features, bench, symbol=s, name=f"features-{s}"))
        for s in symbols
    }


def load_task(data: Any, symbol: str) -> Delayed:
    """The ``load-<S>`` task of ``symbol``'s bars under the ``data`` section (one key per symbol and section)."""
    from dask_pipeline.data import load_bars

    return task(load_bars, data.root, symbol, data.start, data.end, dtype=data.dtype, name=f"load-{symbol}")


#: The topic of the scheduler's event log where ``features-<S>`` tasks say whether they
#: computed their features or read them from the cache: ``{"key": ..., "source": "computed" | "disk"}``.
FEATURE_EVENTS = "dask-pipeline-features"


def cached_features(bars: Any, features: Any, benchmark: Any, *, symbol: str) -> Any:
    """A ``features-<S>`` task: ``compute_cached``, telling the scheduler's event log
    (``FEATURE_EVENTS``) whether it computed the frame or read it from the cache, so a
    study can count feature work without a second look at the files. Outside a worker
    (the synchronous scheduler) nobody is told."""
    from dask_pipeline.features.cache import compute_or_read

    frame, source = compute_or_read(bars, features, benchmark, symbol=symbol)
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return frame
    worker.log_event(FEATURE_EVENTS, {"key": str(worker.get_current_task()), "source": source})
    return frame


@functools.cache
def _graph_names() -> tuple[str, ...]:
    import dask_pipeline.graphs

    return tuple(sorted(m.name for m in pkgutil.iter_modules(dask_pipeline.graphs.__path__)))


def graph_names() -> list[str]:
    """The graphs shipped in ``graphs/`` (listed once per process: every config validation asks)."""
    return list(_graph_names())


def load_graph(name: str, key: str | None = "graph") -> Any:
    """The graph module ``name`` names: a shipped graph, a dotted module, or a ``.py`` file.

    A graph module has ``build(cfg) -> dict[str, Delayed]`` (a static graph the runner
    computes), or ``drive(cfg, client, echo) -> dict[str, value]`` (a driver that submits
    tasks as earlier results come back, like an Optuna study). Each output becomes a file.

    A dotted module (``mylab.graphs.momentum``) is imported by name, here and on every
    worker (its functions are pickled by reference). A file (``graphs/mine.py``, relative
    to the current directory) is loaded under a name of its own and pickled by value:
    its functions travel with the tasks and the file need not exist on the workers.

    Raises ``ConfigError`` naming ``key`` for an unknown graph (with the closest name), a
    module that cannot be imported, a file that does not exist, or a module with neither
    ``build`` nor ``drive``.
    """
    from dask_pipeline.usercode import import_file, import_module, is_dotted, is_file_path

    prefix = f"'{key}': " if key else ""
    if is_file_path(name):
        module = import_file(name, key)
    elif is_dotted(name):
        module = import_module(name, key)
    elif name in graph_names():
        return importlib.import_module(f"dask_pipeline.graphs.{name}")
    else:
        import difflib

        close = difflib.get_close_matches(name, graph_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        named = f" {name!r}" if key else ""  # a validator's message gets the value appended
        raise ConfigError(f"{prefix}unknown graph{named}{hint}; known: {', '.join(graph_names())}, "
                          "or a dotted module (mylab.graphs.momentum) or a .py file")
    if not callable(getattr(module, "build", None)) and not callable(getattr(module, "drive", None)):
        raise ConfigError(f"{prefix}{_module_label(module)} has neither build(cfg) nor drive(cfg, client, echo); "
                          "a graph module defines build(cfg) -> dict of delayed outputs")
    return module


@dataclass(frozen=True)
class Graph:
    """A graph resolved for a run: what has ``build`` or ``drive``, and how ``run.json`` names it.

    ``label`` is what ``graph:`` would say to load it again (a shipped name, a dotted module,
    a file path), or ``module.function`` for a build function given in Python; ``repeatable``
    says whether ``graph: <label>`` in the written config.yaml loads it again.
    """

    source: Any
    label: str
    repeatable: bool
    module: str | None  # a module workers must import by name (None: shipped, a file, or __main__)


def resolve_graph(graph: Any) -> Graph:
    """A run's graph from what ``dask_pipeline.run(cfg, graph=...)`` or ``graph:`` gives.

    Parameters
    ----------
    graph
        A ``graph:`` value (shipped name, dotted module, ``.py`` path), a module with
        ``build`` or ``drive``, or a ``build(cfg)`` function.
    """
    import types

    from dask_pipeline.usercode import FILE_MODULE_PREFIX

    if isinstance(graph, str):
        module = load_graph(graph)
        shipped = module.__name__.startswith("dask_pipeline.graphs.")
        by_name = not shipped and not module.__name__.startswith(FILE_MODULE_PREFIX)
        label = str(Path(graph).expanduser().resolve()) if module.__name__.startswith(FILE_MODULE_PREFIX) else graph
        return Graph(module, label, True, module.__name__ if by_name else None)
    if isinstance(graph, types.ModuleType):
        if not callable(getattr(graph, "build", None)) and not callable(getattr(graph, "drive", None)):
            raise ConfigError(f"graph=: {_module_label(graph)} has neither build(cfg) nor drive(cfg, client, echo)")
        if graph.__name__.startswith(FILE_MODULE_PREFIX):
            return Graph(graph, str(graph.__file__), True, None)
        if graph.__name__.startswith("dask_pipeline.graphs."):
            return Graph(graph, graph.__name__.rpartition(".")[2], True, None)
        main = graph.__name__ == "__main__"
        return Graph(graph, graph.__name__, not main, None if main else graph.__name__)
    if callable(graph):
        owner = getattr(graph, "__module__", None) or "__main__"
        label = f"{owner}.{getattr(graph, '__qualname__', type(graph).__name__)}"
        by_name = owner != "__main__" and not owner.startswith(FILE_MODULE_PREFIX)
        return Graph(SimpleNamespace(build=graph), label, False, owner if by_name else None)
    raise ConfigError(f"graph=: expected a graph name, a module with build(cfg), or a build(cfg) function; "
                      f"got {type(graph).__name__}")


def check_outputs(values: dict[str, Any]) -> dict[str, Any]:
    """A graph's computed outputs, checked before anything is written: one file each.

    A name is a file name or a relative path inside the run folder (``plots/history.png``,
    as ``results.write_output`` takes it). A Series becomes a one-column DataFrame; anything
    that is not a DataFrame, dict, list, str or bytes is an ``ExtensionError`` naming the
    output, so a run never writes some files and then fails on another.
    """
    import pandas as pd

    from dask_pipeline.errors import ExtensionError, OutputError
    from dask_pipeline.results import inside

    checked: dict[str, Any] = {}
    for name, value in values.items():
        try:
            inside(Path("run"), name if isinstance(name, str) else "", "graph output")
        except OutputError:
            raise ExtensionError(f"graph output {name!r}: names become file names in the run folder; use a plain "
                                 "name such as 'signals' or a relative path such as 'plots/signals.png'") from None
        if isinstance(value, pd.Series):
            value = value.to_frame(value.name if value.name is not None else name)
        if isinstance(value, pd.DataFrame):
            odd = [c for c in value.columns if not isinstance(c, str)]
            if odd:
                raise ExtensionError(f"graph output {name!r}: column names must be text for Parquet, got "
                                     f"{', '.join(map(repr, odd[:5]))}")
        elif not isinstance(value, dict | list | str | bytes):
            raise ExtensionError(f"graph output {name!r} is a {type(value).__name__}; expected a DataFrame "
                                 "(written as Parquet), a Series, a dict or list (JSON), a str (text) or bytes")
        checked[name] = value
    return checked


def _module_label(module: Any) -> str:
    from dask_pipeline.usercode import FILE_MODULE_PREFIX

    name = getattr(module, "__name__", "?")
    return f"{module.__file__}" if name.startswith(FILE_MODULE_PREFIX) else f"module {name}"


# ----------------------------------------------------------------- notes and checks


@dataclass
class RunNotes:
    """What graphs tell the user while they are built or driven: ``note`` lines and ``run.json`` entries."""

    echo: Callable[..., Any]
    lines: list[str] = field(default_factory=list)
    entries: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The ``run.json`` entries: ``notes`` (the lines) and every ``record``-ed key."""
        return {"notes": list(self.lines), **self.entries}


_NOTES: contextvars.ContextVar[RunNotes | None] = contextvars.ContextVar("run_notes", default=None)


@contextlib.contextmanager
def run_notes(echo: Callable[..., Any] = print) -> Iterator[RunNotes]:
    """Collect ``note`` and ``record`` calls made while a run builds or drives its graph (the runner sets this)."""
    notes = RunNotes(echo)
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def run_record() -> dict[str, Any]:
    """The current run's notes and recorded entries for ``run.json`` (empty outside ``run_notes``)."""
    notes = _NOTES.get()
    return {} if notes is None else notes.record()


def run_stage_records() -> dict[str, dict[str, Any]]:
    """Per stage, what the current run's graph added to its ``stages.json`` row (``record_stage``)."""
    notes = _NOTES.get()
    return {} if notes is None else {stage: dict(values) for stage, values in notes.stages.items()}


def record_stage(stage: str, values: dict[str, Any]) -> None:
    """Add ``values`` (JSON-able counts, e.g. feature sets computed and reused) to the run's
    ``stages.json`` row of ``stage``; outside a run, nothing."""
    notes = _NOTES.get()
    if notes is not None:
        notes.stages.setdefault(stage, {}).update(values)


def note(message: str) -> None:
    """Tell the user one thing about the run (a dropped window, a symbol sitting out): a ``note: ...`` line
    now, and the ``notes`` list of ``run.json``. Outside a run (a graph built by hand) nobody is told."""
    notes = _NOTES.get()
    if notes is not None and message not in notes.lines:
        notes.lines.append(message)
        notes.echo(f"note: {message}")


def record(key: str, value: Any) -> None:
    """Keep ``value`` (JSON-able) under ``key`` in the run's ``run.json``; outside a run, nothing."""
    notes = _NOTES.get()
    if notes is not None:
        notes.entries[key] = value


def fold_plan(cfg: Any) -> Any:
    """The run's walk-forward folds over every symbol's own calendar (``dask_pipeline.folds.plan_folds``).

    Reads only each symbol's timestamps (the ``close`` column) on the client. Raises
    ``DataError`` naming a symbol too short for one row of features and label, or too
    little data for one fold; ``ConfigError`` for bar counts over mixed calendars.
    """
    from dask_pipeline.data import load_bars
    from dask_pipeline.folds import plan_folds
    from dask_pipeline.walkforward import min_history, require_history

    data = cfg.data
    # data.dtype: prices beyond float32 range load (and lay out) only as float64.
    stamps = {s: load_bars(data.root, s, data.start, data.end, columns=["close"], dtype=data.dtype).index
              for s in symbols_of(cfg)}
    require_history({s: len(i) for s, i in stamps.items()}, min_history(cfg.features, cfg.label.horizon), data)
    return plan_folds(stamps, cfg.folds, cfg.label.horizon, cfg.backtest.periods_per_year)


def tell_plan(plan: Any) -> None:
    """``note`` the plan's notes and ``record`` its calendars (each symbol's, the portfolio's per fold)."""
    for line in plan.notes:
        note(line)
    used = {s: p for f in plan.folds for s, p in f.periods_per_year}
    record("calendars", {
        s: {"bars": c.bars, "first": c.first.isoformat(), "last": c.last.isoformat(), "bar": c.describe(),
            "periods_per_year": used.get(s, c.periods_per_year)}
        for s, c in plan.calendars.items()
    })
    record("portfolio_periods_per_year", {str(f.index): dict(f.periods_per_year).get("portfolio") for f in plan.folds})


def require_volume(cfg: Any, key: str = "features.indicators", advice: str | None = None) -> None:
    """Raise ``ConfigError`` when an indicator that needs volume meets a symbol without any (price-only bars).

    Reads the ``volume`` column of each symbol, and only when the feature set has such an
    indicator (``obv``, ``volume_z``). ``key`` is the config key the message names, and
    ``advice`` what it suggests in place of leaving the indicators out of the list.
    """
    from dask_pipeline.data import load_bars
    from dask_pipeline.features.engine import INDICATORS

    needy = [f"{s.name}" for s in cfg.features.indicators if INDICATORS[s.name].needs_volume]
    if not needy:
        return
    data = cfg.data
    for symbol in symbols_of(cfg):
        volume = load_bars(data.root, symbol, data.start, data.end, columns=["volume"], dtype="float64")["volume"]
        if len(volume) and volume.isna().all():
            advice = advice or "leave them out of features.indicators (the default set has them)"
            raise ConfigError(
                f"'{key}': {', '.join(sorted(set(needy)))} need{'s' if len(set(needy)) == 1 else ''} "
                f"volume, and symbol {symbol} in "
                f"{data.root} has none (price-only bars); {advice} or leave {symbol} out with data.symbols"
            )
