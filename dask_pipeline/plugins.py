"""User code on every worker: a Dask worker plugin that imports it, now and on workers that join later.

A run's user code reaches workers in one of two ways:

- **By name**: ``plugins:`` modules, a dotted ``graph:`` module and the module of a
  ``model.name`` class path. Tasks refer to their functions and classes by reference, so
  every worker must import them: the plugin imports them in ``setup``. They must be
  installed there (``pip install`` of the user's package: recommended) or uploaded with
  Dask's own mechanisms (``distributed.diagnostics.plugin.UploadFile`` /
  ``UploadDirectory`` registered before the run, or ``Client.upload_file``).
- **By value**: indicators registered from ``__main__`` (a notebook, a script) or from a
  ``graph:`` file, which no worker can import by name. The plugin carries their registry
  entries pickled by value (cloudpickle) and registers them on the worker.

The plugin is registered with the scheduler (``Client.register_plugin``), which hands it
to every worker that connects afterwards: a worker that joins mid-run imports the same
code before it takes a task. ``setup`` never raises: it records what failed, and the
preflight (``dask_pipeline.preflight.check_user_code``) reads every worker's record and
fails the run with one line naming each worker and module. It also compares the code
identity of every user indicator with the client's: a worker with another version of
the user's package installed would compute other features.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

PLUGIN_NAME = "dask-pipeline-user-code"


@dataclass(frozen=True)
class UserCode:
    """What a run needs on every worker: modules by name (with the config key that named each)
    and indicators by value."""

    modules: tuple[tuple[str, str], ...] = ()
    by_value: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.modules or self.by_value)


def user_code(cfg: Any, graph_module: str | None = None) -> UserCode:
    """The user code of a run of ``cfg`` whose graph must be imported as ``graph_module`` (None: it need not).

    Modules: ``plugins`` in order, the graph module, the module of a ``model.name`` class
    path. By value: every user indicator registered from ``__main__`` or a ``graph:`` file.
    """
    from dask_pipeline.features.custom import user_indicators
    from dask_pipeline.models import is_class_path
    from dask_pipeline.usercode import FILE_MODULE_PREFIX

    modules: list[tuple[str, str]] = [(name, "plugins") for name in cfg.plugins]
    if graph_module is not None:
        modules.append((graph_module, "graph"))
    if is_class_path(cfg.model.name):
        modules.append((cfg.model.name.rpartition(".")[0], "model.name"))
    unique = tuple(dict.fromkeys(modules))
    by_value = {name: entry for name, entry in sorted(user_indicators().items())
                if _owner(entry) == "__main__" or _owner(entry).startswith(FILE_MODULE_PREFIX)}
    return UserCode(unique, by_value)


class UserCodePlugin(WorkerPlugin):
    """Imports a run's user modules and registers its by-value indicators on a worker; records failures.

    Parameters
    ----------
    modules
        ``(module, config key)`` pairs, imported in order.
    by_value
        cloudpickle bytes of ``{indicator name: registry entry}``.
    """

    idempotent = False  # a new run's code replaces the last one's

    def __init__(self, modules: tuple[tuple[str, str], ...], by_value: bytes):
        self.modules = modules
        self.by_value = by_value
        self.failures: dict[str, str] = {}
        self.identities: dict[str, str] = {}

    def setup(self, worker: Any = None) -> None:
        """Import and register; never raise (the preflight reports what failed, per worker)."""
        import cloudpickle

        from dask_pipeline.features import engine
        from dask_pipeline.features.custom import user_indicators

        failures: dict[str, str] = {}
        for module, key in self.modules:
            try:
                importlib.import_module(module)
            except (Exception, SystemExit) as exc:
                failures[module] = f"{key}: {_one_line(exc)}"
        if self.by_value:
            try:
                for name, entry in cloudpickle.loads(self.by_value).items():
                    engine.register(name, entry)
            except Exception as exc:
                failures["indicators defined in __main__ or a graph file"] = f"by value: {_one_line(exc)}"
        self.failures = failures
        self.identities = {name: entry.code for name, entry in user_indicators().items()}


def install(client: Any, code: UserCode) -> None:
    """Register ``code`` as the worker plugin on ``client``'s scheduler (every worker, now and later)."""
    import cloudpickle

    plugin = UserCodePlugin(code.modules, cloudpickle.dumps(code.by_value) if code.by_value else b"")
    client.register_plugin(plugin, name=PLUGIN_NAME)


def worker_state(dask_worker: Any) -> dict[str, Any] | None:
    """This worker's record of the plugin (``client.run``): ``{"failures": ..., "identities": ...}``, or None."""
    plugin = dask_worker.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return None
    return {"failures": dict(plugin.failures), "identities": dict(plugin.identities)}


def _owner(entry: Any) -> str:
    return getattr(getattr(entry.compute, "func", None), "__module__", "") or ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
