"""Connect to a Dask cluster described by the config's ``cluster:`` section.

``connect(cfg)`` is a context manager yielding a ``distributed.Client``; on exit it closes
only what it started (a scheduler reached by address is left running). Cluster kinds form
one registry, ``CLUSTER_KINDS``: name -> function that starts a cluster and says how.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dask_pipeline.config import ClusterConfig
from dask_pipeline.errors import ClusterError

log = logging.getLogger(__name__)

#: Every worker runs its tasks single-threaded: numerical libraries must not start their
#: own thread pools on top of the worker processes (oversubscription, non-determinism).
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


@dataclass
class Started:
    """What a cluster kind started: the object to close (None for an external scheduler) and the client."""

    cluster: Any
    address: str
    kind: str
    note: str = ""


def connect_local(cfg: ClusterConfig) -> Started:
    """A LocalCluster of single-threaded worker processes (default: one per core)."""
    from distributed import LocalCluster

    n_workers = cfg.n_workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n_workers,
        **_dashboard_options(cfg),
        threads_per_worker=cfg.threads_per_worker,
        processes=True,
        memory_limit=cfg.memory_limit or 0,
        host="127.0.0.1",
        env=WORKER_ENV,
        resources={"CPU": 1},
    )
    return Started(cluster, cluster.scheduler_address, "local")


def _dashboard_options(cfg: ClusterConfig) -> dict[str, Any]:
    # The scheduler always serves HTTP (health, metrics); with the dashboard off it still
    # binds, so keep it on loopback and a free port rather than 0.0.0.0:8787.
    if cfg.dashboard:
        return {"dashboard_address": cfg.dashboard_address}
    return {"scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}


def visible_gpus() -> int:
    """The number of CUDA devices this process can see (0 without CUDA or CuPy)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return 0


def connect_local_cuda(cfg: ClusterConfig) -> Started:
    """One dask-cuda worker per GPU (resource GPU=1) plus CPU workers up to ``n_workers`` in all."""
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        reason = "dask-cuda is not installed (pip install -e '.[gpu]')"
    else:
        reason = "" if visible_gpus() else "no CUDA GPU is visible"
    if reason:
        log.warning("cluster.kind 'local-cuda': %s; falling back to 'local'", reason)
        started = connect_local(cfg)
        started.note = f"local-cuda requested, fell back to local: {reason}"
        return started

    from dask_cuda import LocalCUDACluster
    from distributed import Nanny

    n_gpus = visible_gpus()
    n_total = max(cfg.n_workers or os.cpu_count() or 1, n_gpus)
    cluster = LocalCUDACluster(
        n_workers=n_gpus,
        **_dashboard_options(cfg),
        threads_per_worker=cfg.threads_per_worker,
        memory_limit=cfg.memory_limit or 0,
        host="127.0.0.1",
        resources={"GPU": 1},
    )
    # The CPU workers join the same SpecCluster, so the cluster scales and closes as one.
    for i in range(n_total - n_gpus):
        cluster.worker_spec[f"cpu-{i}"] = {
            "cls": Nanny,
            "options": {
                "nthreads": cfg.threads_per_worker,
                "memory_limit": cfg.memory_limit or 0,
                "resources": {"CPU": 1},
                # CPU workers must not pick the GPU up on their own (backend "auto").
                "env": {**WORKER_ENV, "CUDA_VISIBLE_DEVICES": ""},
                "host": "127.0.0.1",
            },
        }
    cluster.sync(cluster._correct_state)
    return Started(cluster, cluster.scheduler_address, "local-cuda")


def connect_address(cfg: ClusterConfig) -> Started:
    """An existing scheduler, from ``cluster.address`` or ``DASK_SCHEDULER_ADDRESS``."""
    address = cfg.address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        raise ClusterError("cluster.kind 'address' needs cluster.address or DASK_SCHEDULER_ADDRESS (e.g. tcp://10.0.0.5:8786)")
    return Started(None, address, "address")


def _needs_extra(kind: str, module: str, extra: str) -> Callable[[ClusterConfig], Started]:
    def connect_unavailable(cfg: ClusterConfig) -> Started:
        try:
            __import__(module)
        except ImportError:
            raise ClusterError(
                f"cluster.kind '{kind}' needs the '{extra}' extra: pip install -e '.[{extra}]'"
            ) from None
        raise ClusterError(
            f"cluster.kind '{kind}' is not supported by this release yet; start the cluster with the "
            f"scripts in cluster/ and use cluster.kind 'address'"
        )

    return connect_unavailable


CLUSTER_KINDS: dict[str, Callable[[ClusterConfig], Started]] = {
    "local": connect_local,
    "local-cuda": connect_local_cuda,
    "address": connect_address,
    "ssh": _needs_extra("ssh", "asyncssh", "ssh"),
    "slurm": _needs_extra("slurm", "dask_jobqueue", "slurm"),
    "kubernetes": _needs_extra("kubernetes", "dask_kubernetes", "kubernetes"),
}


@contextlib.contextmanager
def connect(cfg: ClusterConfig | None = None, timeout: float = 30) -> Iterator[Any]:
    """Start or reach the cluster ``cfg`` describes and yield a connected ``distributed.Client``.

    Parameters
    ----------
    cfg
        The ``cluster:`` section; defaults to a local cluster.
    timeout
        Seconds to wait for the scheduler and the first worker.

    Returns
    -------
    Iterator[distributed.Client]
        The client; the cluster (if this call started one) closes when the block exits.
    """
    from distributed import Client

    cfg = cfg or ClusterConfig()
    started = CLUSTER_KINDS[cfg.kind](cfg)
    try:
        try:
            client = Client(started.address, timeout=timeout, set_as_default=False)
        except OSError as exc:
            raise ClusterError(f"cannot reach the scheduler at {started.address}: {exc}") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise ClusterError(f"no worker joined the scheduler at {started.address} within {timeout:g} s") from None
            client.pipeline_note = started.note  # type: ignore[attr-defined]
            yield client
    finally:
        if started.cluster is not None:
            started.cluster.close()


def describe(client: Any) -> dict[str, Any]:
    """What the client is connected to: scheduler, dashboard, workers and their resources."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address", client.scheduler.address),
        "dashboard": client.dashboard_link if _serves_dashboard(client.dashboard_link) else None,
        "n_workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory_limit": sum(w.get("memory_limit", 0) or 0 for w in workers.values()),
        "resources": _sum_resources(workers.values()),
        "note": getattr(client, "pipeline_note", ""),
    }


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _serves_dashboard(link: str | None) -> bool:
    """Whether the scheduler's HTTP server answers the dashboard page (it also runs without one)."""
    import urllib.error
    import urllib.request

    if not link:
        return False
    try:
        with urllib.request.urlopen(link, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _sum_resources(workers: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for w in workers:
        for name, amount in (w.get("resources") or {}).items():
            total[name] = total.get(name, 0) + amount
    return dict(sorted(total.items()))
