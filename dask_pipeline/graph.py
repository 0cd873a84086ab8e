"""Graph wiring: stage functions become named, annotated ``dask.delayed`` tasks.

Keys read like the pipeline: ``<name>-<token>`` where ``name`` is ``load-AAPL``,
``features-AAPL``, ``fold-03-fit``... and ``token`` is 8 hex digits of
``dask.base.tokenize`` over the function and its inputs. The dashboard strips the
token (``key_split``), so it shows the name; the token makes a key unique to its inputs,
so two runs or two trials sharing a cluster never mistake each other's results. Each
task also carries a ``stage`` annotation (load, features, fit, ...) that monitoring and
``run.json`` group by.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
from dask.base import tokenize
from dask.delayed import Delayed, delayed

from dask_pipeline.errors import ConfigError


_GPU_WORKERS: contextvars.ContextVar[bool] = contextvars.ContextVar("gpu_workers", default=False)


@contextlib.contextmanager
def gpu_workers(present: bool) -> Iterator[None]:
    """Build graphs knowing whether the cluster has GPU workers (the runner sets this)."""
    token = _GPU_WORKERS.set(present)
    try:
        yield
    finally:
        _GPU_WORKERS.reset(token)


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
        cluster has GPU workers (``gpu_workers``), and runs anywhere otherwise.
    """
    token = tokenize(func, args, kwargs)[:8]
    annotations: dict[str, Any] = {"stage": stage or name.split("-", 1)[0]}
    if gpu and _GPU_WORKERS.get():
        annotations["resources"] = {"GPU": 1}
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


def features_tasks(cfg: Any) -> dict[str, tuple[Delayed, Delayed]]:
    """Per symbol, its ``load-<S>`` bars task and its ``features-<S>`` task.

    Features go through the content-addressed cache unless ``features.cache`` is false.
    Every later stage depends on these keys, so each symbol is loaded and featurised once
    per graph and shared by reference. The benchmark symbol (``features.benchmark``) is
    loaded once and fed to every symbol's features.
    """
    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute_cached

    symbols = symbols_of(cfg)  # also checks that the benchmark is in the store
    data = cfg.data
    benchmark = cfg.features.benchmark
    wanted = symbols if benchmark is None or benchmark in symbols else [*symbols, benchmark]
    loads = {
        s: task(load_bars, data.root, s, data.start, data.end, dtype=data.dtype, name=f"load-{s}") for s in wanted
    }
    bench = loads[benchmark] if benchmark is not None else None
    return {
        s: (loads[s], task(compute_cached, loads[s], cfg.features, bench, symbol=s, name=f"features-{s}"))
        for s in symbols
    }


@functools.cache
def _graph_names() -> tuple[str, ...]:
    import dask_pipeline.graphs

    return tuple(sorted(m.name for m in pkgutil.iter_modules(dask_pipeline.graphs.__path__)))


def graph_names() -> list[str]:
    """The graphs shipped in ``graphs/`` (listed once per process: every config validation asks)."""
    return list(_graph_names())


def load_graph(name: str) -> Any:
    """The module of the graph named ``name``.

    A graph module has ``build(cfg) -> dict[str, Delayed]`` (a static graph the runner
    computes), or ``drive(cfg, client, echo) -> dict[str, value]`` (a driver that submits
    tasks as earlier results come back, like an Optuna study). Each output becomes a file.
    """
    if name not in graph_names():
        import difflib

        close = difflib.get_close_matches(name, graph_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"'graph': unknown graph {name!r}{hint}; known: {', '.join(graph_names())}")
    return importlib.import_module(f"dask_pipeline.graphs.{name}")
