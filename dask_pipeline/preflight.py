"""Checks run once the client is connected, before anything is computed: are the workers fit for the run?

Workers on other machines need the same code and the same data. Two checks, one round
trip each (they run on every run, so they stay cheap):

1. **Versions** (``Client.get_versions``: installed-distribution metadata of the client,
   the scheduler and every worker).

   - Must match this client, else ``ClusterError`` listing every mismatch: ``dask``,
     ``distributed`` and Python (major.minor) on the scheduler and every worker,
     ``dask-pipeline`` on every worker. Tasks are functions of this package and of dask
     pickled here and run there: other code there means other results, or a failure deep
     inside a task; another Python minor version cannot load pickled functions at all.
     The scheduler needs no dask-pipeline (the monitor's plugin is sent by value).
   - Should match, else a warning: ``numpy``, ``pandas``, ``pyarrow``, ``numba``,
     ``scikit-learn``. They decide the numbers, so results may differ from a run on this
     machine, but the run works; a heterogeneous cluster mid-upgrade can still be used.

2. **Data**: every worker lists ``data.root`` and must find every symbol the run reads.
   A local root must be the same path on every machine (a shared filesystem); an
   object store URL needs the storage library and credentials on every worker. Every
   graph reads the store, so this check always runs.

3. **User code** (only when the run has some: ``plugins``, a user graph module, an
   estimator by class path, indicators defined in a notebook or graph file): installs
   the worker plugin that imports it on every worker (``dask_pipeline.plugins``), then
   reads each worker's record. A module that a worker cannot import fails the run with
   one line naming the worker and the module; so does a user indicator whose code on a
   worker differs from the client's, and a graph module the scheduler cannot import (it
   unpickles the task graph, so it needs the functions of a graph imported by name).

Workers that join after the check (adaptive scaling, queued SLURM jobs) are not checked;
they do import the user code when they join (the plugin is the scheduler's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dask_pipeline.errors import ClusterError, DaskPipelineError

#: Distribution name -> where it must match: "all" (scheduler and workers) or "workers".
REQUIRED = {"dask": "all", "distributed": "all", "python": "all", "dask-pipeline": "workers"}
#: Distributions whose mismatch on a worker is a warning: they decide the numbers.
ADVISED = ("numpy", "pandas", "pyarrow", "numba", "scikit-learn")

HINT = "see cluster/README.md, 'Data on several machines'"
_SHOWN_ADDRESSES = 5


def check_workers(client: Any, cfg: Any, echo: Callable[..., Any] = print, code: Any = None) -> list[str]:
    """Check the connected cluster's versions and data access for ``cfg``; raise on what would break the run.

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    cfg
        The run's ``Config`` (``data.root``, ``data.symbols``, ``features.benchmark``).
    echo
        Where warnings go, as ``warning: ...`` lines.
    code
        The run's ``plugins.UserCode``: installed on every worker and checked there.

    Returns
    -------
    list of str
        The warnings echoed (mismatched versions of the libraries in ``ADVISED``).

    Raises
    ------
    ClusterError
        One line listing every version mismatch of ``REQUIRED``, or every worker that
        cannot list the data root or lacks a symbol of the run.
    """
    # "python" is not a distribution: get_versions reports it by itself.
    report = client.get_versions(packages=[name for name in (*REQUIRED, *ADVISED) if name != "python"])
    if not report.get("workers"):
        return []
    errors, warnings = version_mismatches(report, f"the scheduler {client.scheduler.address}")
    if errors:
        raise ClusterError(
            f"the cluster runs other versions than this client: {'; '.join(errors)}; install the same "
            f"versions on every machine (one environment, or the same pinned requirements), {HINT}"
        )
    for line in warnings:
        echo(f"warning: {line}")
    if code:
        check_user_code(client, code)

    from dask_pipeline.graph import symbols_of

    wanted = sorted({*symbols_of(cfg), *([cfg.features.benchmark] if cfg.features.benchmark else [])})
    problems = client.run(store_problem, cfg.data.root, wanted, on_error="return")
    # The headline names the root; each worker's own message need not repeat it.
    blind = _group({address: _problem_text(p).removeprefix(f"{cfg.data.root}: ")
                    for address, p in problems.items() if p is not None})
    if blind:
        n_blind = sum(len(addresses) for addresses in blind.values())
        listed = "; ".join(f"{_addresses(addresses)}: {problem}" for problem, addresses in blind.items())
        raise ClusterError(
            f"{n_blind} of {len(problems)} workers cannot read the data root {cfg.data.root}: {listed}; "
            "put the store on a filesystem every worker mounts at the same path, or use an object store "
            f"URL (s3://bucket/prefix) with credentials in every worker's environment, {HINT}"
        )
    return warnings


def check_user_code(client: Any, code: Any) -> None:
    """Install ``code`` (a ``plugins.UserCode``) on every worker; raise unless every worker imported it alike.

    Raises
    ------
    ClusterError
        One line per distinct failure, naming the workers (address and name) and the
        module; or the workers whose user indicators are other code than the client's.
    """
    from dask_pipeline.features.custom import user_indicators
    from dask_pipeline.plugins import install, worker_state

    install(client, code)
    states = client.run(worker_state, on_error="return")
    # The scheduler unpickles the task graph: the functions of a graph module imported by
    # name must import there too (plugins and estimators only travel as names).
    graph_modules = [module for module, key in code.modules if key == "graph"]
    on_scheduler = client.run_on_scheduler(_import_problems(), graph_modules) if graph_modules else {}
    names = {address: info.get("name") for address, info in client.scheduler_info()["workers"].items()}

    def worker(address: str) -> str:
        name = names.get(address)
        return f"{address} ({name})" if name is not None and str(name) != address else address

    failures: dict[str, list[str]] = {}
    for module, problem in on_scheduler.items():
        failures.setdefault(f"{module} (graph: {problem})", []).append(f"the scheduler {client.scheduler.address}")
    for address, state in sorted(states.items()):
        if not isinstance(state, dict):  # the plugin never ran there, or reading its record failed
            failures.setdefault(f"the user-code plugin: {_problem_text(state)}", []).append(worker(address))
            continue
        for module, problem in sorted(state["failures"].items()):
            failures.setdefault(f"{module} ({problem})", []).append(worker(address))
    if failures:
        listed = "; ".join(f"{_addresses(addresses)} cannot import {what}" for what, addresses in failures.items())
        raise ClusterError(
            f"user code is missing: {listed}; install it on every worker (pip install your package there; a graph "
            "module on the scheduler too), or upload it with Dask's UploadFile/UploadDirectory plugins "
            "(README, 'Extending dask-pipeline')"
        )
    here = {name: entry.code for name, entry in user_indicators().items()}
    other: dict[str, list[str]] = {}
    for address, state in sorted(states.items()):
        for name, identity in here.items():
            if state["identities"].get(name, identity) != identity:
                other.setdefault(name, []).append(worker(address))
    if other:
        listed = "; ".join(f"indicator {name!r} on {_addresses(addresses)}" for name, addresses in other.items())
        raise ClusterError(f"workers run other code than this client for user indicators: {listed}; install "
                           "the same version of the package that defines them on every machine")


def _import_problems() -> Callable[[list[str]], dict[str, str]]:
    """A function giving ``{module: "Error: text"}`` for the modules a process cannot import.

    Made here as a nested function so that cloudpickle sends it by value: the scheduler it
    runs on need not have dask-pipeline installed.
    """
    def problems(modules: list[str]) -> dict[str, str]:
        import importlib

        found = {}
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:
                found[module] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return found

    return problems


def version_mismatches(report: dict[str, Any], scheduler_name: str = "the scheduler") -> tuple[list[str], list[str]]:
    """The required and the advised version mismatches of a ``Client.get_versions`` report, one text each.

    Returns
    -------
    (list of str, list of str)
        ``["dask-pipeline 0.1.0 here, 0.0.0 on tcp://10.0.0.7:4012", ...]`` for ``REQUIRED``,
        and one warning line for ``ADVISED`` (empty when everything matches).
    """
    here = _packages(report["client"])
    scheduler = _packages(report["scheduler"])
    workers = {address: _packages(info) for address, info in sorted(report["workers"].items())}
    errors = []
    for name, where in REQUIRED.items():
        elsewhere = {address: found.get(name) for address, found in workers.items()}
        if where == "all":
            elsewhere = {scheduler_name: scheduler.get(name), **elsewhere}
        line = _mismatch(name, here.get(name), elsewhere)
        if line:
            errors.append(line)
    advised = [line for name in ADVISED
               if (line := _mismatch(name, here.get(name), {a: found.get(name) for a, found in workers.items()}))]
    warnings = [f"workers run other versions of libraries that decide the numbers, results may differ "
                f"from a run on this machine: {'; '.join(advised)}"] if advised else []
    return errors, warnings


def store_problem(root: str, symbols: list[str]) -> str | None:
    """What keeps this process from reading the run's data: None when it can list ``root`` and finds ``symbols``.

    Runs on every worker (``client.run``).
    """
    from dask_pipeline.data import list_symbols

    try:
        stored = set(list_symbols(root))
    except DaskPipelineError as exc:
        return str(exc)
    missing = [s for s in symbols if s not in stored]
    if missing:
        shown = ", ".join(missing[:_SHOWN_ADDRESSES]) + (f" and {len(missing) - _SHOWN_ADDRESSES} more"
                                                         if len(missing) > _SHOWN_ADDRESSES else "")
        return f"the store there lacks {shown} (another copy of the store?)"
    return None


def _packages(info: dict[str, Any] | None) -> dict[str, str | None]:
    packages = dict((info or {}).get("packages") or {})
    python = packages.get("python")
    # Patch releases load each other's pickles; minor releases do not.
    packages["python"] = ".".join(str(python).split(".")[:2]) if python else None
    return packages


def _mismatch(name: str, here: str | None, elsewhere: dict[str, str | None]) -> str:
    """``"dask 2026.8.0 here, 2026.7.1 on tcp://a, tcp://b"``, or "" when every version is ``here``."""
    by_version: dict[str, list[str]] = {}
    for address, version in elsewhere.items():
        if version != here:
            by_version.setdefault(version or "not installed", []).append(address)
    if not by_version:
        return ""
    there = ", ".join(f"{version} on {_addresses(addresses)}" for version, addresses in sorted(by_version.items()))
    return f"{name} {here or 'not installed'} here, {there}"


def _addresses(addresses: list[str]) -> str:
    shown = ", ".join(addresses[:_SHOWN_ADDRESSES])
    more = len(addresses) - _SHOWN_ADDRESSES
    return f"{shown} and {more} more" if more > 0 else shown


def _group(problems: dict[str, str]) -> dict[str, list[str]]:
    """``{address: problem}`` as ``{problem: [addresses]}``, so 32 workers of one node make one entry."""
    grouped: dict[str, list[str]] = {}
    for address, problem in sorted(problems.items()):
        grouped.setdefault(problem, []).append(address)
    return grouped


def _problem_text(problem: Any) -> str:
    # client.run(on_error="return") hands back the exception a worker raised (e.g. an import error).
    if isinstance(problem, BaseException):
        text = " ".join(str(problem).split())
        return f"the check failed there ({type(problem).__name__}{': ' + text if text else ''})"
    return str(problem)
