"""Connect to a Dask cluster described by the config's ``cluster:`` section.

``connect(cfg)`` is a context manager yielding a ``distributed.Client``; on exit it closes
only what it started (a scheduler reached by address is left running). Cluster kinds form
one registry, ``CLUSTER_KINDS``: name -> function that starts a cluster and says how.
The scale-out kinds (``ssh``, ``slurm``, ``kubernetes``) need their extra installed; with
``cluster.tls`` every connection they make or accept is TLS with those certificates.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import shutil
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dask_pipeline.cluster_spec import LOOPBACK_HOSTS, ClusterConfig, TLSConfig
from dask_pipeline.errors import ClusterError
from dask_pipeline.redaction import redact

log = logging.getLogger(__name__)

#: Every worker runs its tasks single-threaded: numerical libraries must not start their
#: own thread pools on top of the worker processes (oversubscription, non-determinism).
#: cluster/worker.sh exports the same variables.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}

@dataclass
class Started:
    """What a cluster kind started: the object to close (None for an external scheduler) and where it listens."""

    cluster: Any
    address: str
    kind: str
    note: str = ""
    #: Seconds to wait for the first worker, when longer than ``connect``'s timeout (queued jobs).
    wait: float = 0


def tls_security(tls: TLSConfig) -> Any:
    """A ``distributed.Security`` requiring TLS with the certificates of ``cluster.tls``.

    The one certificate serves every role, so the same object secures this client and the
    scheduler and workers a kind starts (make-certs.sh signs it for server and client use).
    """
    from distributed import Security

    pair = {"cert": tls.cert, "key": tls.key}
    return Security(
        tls_ca_file=tls.ca_file,
        require_encryption=True,
        **{f"tls_{role}_{part}": path for role in ("client", "scheduler", "worker") for part, path in pair.items()},
    )


def connect_local(cfg: ClusterConfig) -> Started:
    """A LocalCluster of single-threaded worker processes (default: one per core)."""
    from distributed import LocalCluster

    from dask_pipeline.warmup import configure_cache

    configure_cache()  # a read-only install: the worker processes inherit NUMBA_CACHE_DIR
    n_workers = cfg.n_workers or os.cpu_count() or 1
    with _port_fallbacks() as moved:
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
    return Started(cluster, cluster.scheduler_address, "local", note="; ".join(moved))


@contextlib.contextmanager
def _port_fallbacks() -> Iterator[list[str]]:
    """Collect distributed's "Port 8787 is already in use ... on port N instead" warnings
    as notes of ours (one line each) rather than Python's raw UserWarning on stderr; any
    other warning is shown as usual."""
    import re
    import warnings

    moved: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        # Recorded as the filters say: a warning that would not have been shown is not shown.
        warnings.filterwarnings("always", message="Port .* is already in use", category=UserWarning)
        yield moved
    for item in caught:
        found = re.search(r"Port (\d+) is already in use.*?on port (\d+) instead", str(item.message), re.S)
        if found:
            moved.append(f"dashboard port {found[1]} is in use (another dask cluster?), serving it on {found[2]}")
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)


def _dashboard_options(cfg: ClusterConfig) -> dict[str, Any]:
    # The scheduler always serves HTTP (health, metrics); with the dashboard off it still
    # binds, so keep it on loopback and a free port rather than 0.0.0.0:8787.
    if cfg.dashboard:
        return {"dashboard_address": cfg.dashboard_address}
    return {"scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}


def _scheduler_dashboard(cfg: ClusterConfig) -> dict[str, Any]:
    """``_dashboard_options`` as Scheduler keywords, for kinds that take ``scheduler_options``."""
    options = _dashboard_options(cfg)
    return options.get("scheduler_kwargs", options)


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

    from dask_pipeline.warmup import configure_cache

    configure_cache()
    n_gpus = visible_gpus()
    n_total = max(cfg.n_workers or os.cpu_count() or 1, n_gpus)
    with _port_fallbacks() as moved:
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
    return Started(cluster, cluster.scheduler_address, "local-cuda", note="; ".join(moved))


def connect_address(cfg: ClusterConfig) -> Started:
    """An existing scheduler, from ``cluster.address`` or ``DASK_SCHEDULER_ADDRESS``."""
    address = cfg.address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        raise ClusterError("cluster.kind 'address' needs cluster.address or DASK_SCHEDULER_ADDRESS (e.g. tcp://10.0.0.5:8786)")
    source = "cluster.address" if cfg.address else "DASK_SCHEDULER_ADDRESS"
    if "@" in address:  # Dask addresses carry no credentials; libraries would quote it unmasked
        raise ClusterError(f"{source} {redact(address)} holds a user or password, which Dask addresses never "
                           "carry; expected tcp://HOST:PORT, or tls://HOST:PORT with cluster.tls to authenticate")
    # The config checks cluster.address at load; an address from the environment is checked here.
    if address.startswith("tls://") and cfg.tls is None:
        raise ClusterError(
            f"the scheduler at {address} ({source}) speaks TLS: set cluster.tls (ca_file, cert, key) "
            "to certificates signed by its CA (cluster/make-certs.sh)"
        )
    if cfg.tls is not None and not address.startswith("tls://"):
        raise ClusterError(f"cluster.tls is set but the scheduler address {address} ({source}) is not tls://")
    return Started(None, address, "address")


def _require_extra(kind: str, module: str, extra: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        raise ClusterError(f"cluster.kind '{kind}' needs the '{extra}' extra: pip install -e '.[{extra}]'") from None


def _worker_host(hosts: list[str], interface: str | None) -> dict[str, str]:
    # Workers bind to loopback when every host is this machine, to the named interface when
    # one is given, and otherwise to every interface (other hosts must reach them).
    if interface:
        return {"interface": interface}
    if all(host in LOOPBACK_HOSTS for host in hosts):
        return {"host": "127.0.0.1"}
    return {}


def connect_ssh(cfg: ClusterConfig) -> Started:
    """A scheduler on the first of ``cluster.ssh.hosts`` and workers on the others, started over SSH."""
    _require_extra("ssh", "asyncssh", "ssh")
    import dask
    from distributed.deploy.ssh import SSHCluster

    ssh = cfg.ssh
    assert ssh is not None  # the config requires the section with this kind
    placement = _worker_host(ssh.hosts, ssh.interface)
    worker_options: dict[str, Any] = {
        "n_workers": ssh.workers_per_host,
        "nthreads": cfg.threads_per_worker,
        "memory_limit": cfg.memory_limit or 0,
        "resources": {"CPU": 1},
        "env": WORKER_ENV,
        # Workers serve HTTP (health, metrics) even without a dashboard; keep it on loopback.
        "dashboard_address": "127.0.0.1:0",
        **placement,
    }
    if ssh.local_directory:
        worker_options["local_directory"] = ssh.local_directory
    scheduler_options: dict[str, Any] = {"port": ssh.scheduler_port, **_scheduler_dashboard(cfg)}
    scheduler_options.update({"interface": ssh.interface} if ssh.interface else {"host": ssh.hosts[0]})
    security, remote_config = None, {}
    if cfg.tls is not None:
        security = tls_security(cfg.tls)
        scheduler_options["protocol"] = "tls"
        worker_options["protocol"] = "tls"
        # The remote scheduler and workers take their options as JSON, which cannot carry a
        # Security object; SSHCluster hands them this process's Dask config instead.
        remote_config = _tls_dask_config(cfg.tls)
    with dask.config.set(remote_config):
        cluster = SSHCluster(
            ssh.hosts,
            connect_options=ssh.connect_options,
            worker_options=worker_options,
            scheduler_options=scheduler_options,
            remote_python=ssh.remote_python,
            security=security,
        )
    n = ssh.workers_per_host * (len(ssh.hosts) - 1)
    return Started(cluster, cluster.scheduler_address, "ssh", note=f"ssh: {n} workers on {len(ssh.hosts) - 1} hosts")


def _tls_dask_config(tls: TLSConfig) -> dict[str, Any]:
    config: dict[str, Any] = {"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": tls.ca_file}
    for role in ("client", "scheduler", "worker"):
        config[f"distributed.comm.tls.{role}.cert"] = tls.cert
        config[f"distributed.comm.tls.{role}.key"] = tls.key
    return config


def slurm_cluster(cfg: ClusterConfig) -> Any:
    """The ``dask_jobqueue.SLURMCluster`` for ``cluster.slurm``, with its scheduler running and no job submitted.

    ``connect`` scales it to ``cluster.slurm.jobs``; ``slurm_cluster(cfg).job_script()`` shows
    what each job will run.
    """
    _require_extra("slurm", "dask_jobqueue", "slurm")
    from dask_jobqueue import SLURMCluster

    slurm = cfg.slurm
    assert slurm is not None  # the config requires the section with this kind
    processes = slurm.processes or max(1, slurm.cores // cfg.threads_per_worker)
    # The scheduler runs here (the login node); compute nodes dial it, so it listens on
    # slurm.interface or on every interface. Its dashboard stays where the config says.
    scheduler_options: dict[str, Any] = _scheduler_dashboard(cfg)
    return SLURMCluster(
        queue=slurm.queue,
        account=slurm.account,
        cores=slurm.cores,
        memory=slurm.memory,
        processes=processes,
        walltime=slurm.walltime,
        job_extra_directives=list(slurm.job_extra_directives),
        job_script_prologue=[f"export {name}={value}" for name, value in WORKER_ENV.items()],
        # The worker's HTTP server (health, metrics) stays on loopback, as with cluster/worker.sh.
        worker_extra_args=["--resources", "CPU=1", "--dashboard-address", "127.0.0.1:0"],
        python=slurm.python,
        interface=slurm.interface,
        local_directory=slurm.local_directory,
        log_directory=slurm.log_directory,
        scheduler_options=scheduler_options,
        security=tls_security(cfg.tls) if cfg.tls is not None else None,
    )


def connect_slurm(cfg: ClusterConfig) -> Started:
    """A scheduler in this process and ``cluster.slurm.jobs`` SLURM jobs of workers."""
    _require_extra("slurm", "dask_jobqueue", "slurm")
    if shutil.which("sbatch") is None:
        raise ClusterError("cluster.kind 'slurm': sbatch is not on PATH; run dask-pipeline on a SLURM login node")
    slurm = cfg.slurm
    assert slurm is not None
    cluster = slurm_cluster(cfg)
    cluster.scale(jobs=slurm.jobs)
    return Started(
        cluster, cluster.scheduler_address, "slurm",
        note=f"slurm: {slurm.jobs} jobs of {slurm.cores} cores submitted", wait=slurm.startup_timeout,
    )


def kubernetes_cluster_spec(cfg: ClusterConfig) -> dict[str, Any]:
    """The ``DaskCluster`` resource for ``cluster.kubernetes`` (the shape of cluster/kubernetes/daskcluster.yaml)."""
    _require_extra("kubernetes", "dask_kubernetes", "kubernetes")
    from dask_kubernetes.operator import make_cluster_spec

    kube = cfg.kubernetes
    assert kube is not None  # the config requires the section with this kind
    spec = make_cluster_spec(
        name=kube.name,
        image=kube.image,
        n_workers=kube.n_workers,
        resources=kube.resources.model_dump(),
        env={**WORKER_ENV, **kube.env},
        worker_command=[
            "dask", "worker",
            "--nthreads", str(cfg.threads_per_worker),
            "--memory-limit", str(cfg.memory_limit or 0),
            "--resources", "CPU=1",
        ],
    )
    # distributed no longer installs the dask-scheduler script the template names. The
    # scheduler listens on the pod network; its Service is ClusterIP, not exposed outside.
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "scheduler", *scheduler["args"][1:]]
    # The template hands both containers one resources dict; keep them apart for editing.
    scheduler["resources"] = copy.deepcopy(scheduler["resources"])
    return spec


def connect_kubernetes(cfg: ClusterConfig) -> Started:
    """A ``DaskCluster`` created through the dask-kubernetes operator, deleted again on exit."""
    spec = kubernetes_cluster_spec(cfg)
    from dask_kubernetes.operator import KubeCluster

    kube = cfg.kubernetes
    assert kube is not None
    try:
        cluster = KubeCluster(custom_cluster_spec=spec, namespace=kube.namespace, shutdown_on_close=True, quiet=True)
    except Exception:
        # A KubeCluster that failed to start stays registered for dask-kubernetes' exit hook,
        # which would try to delete it again and print a second traceback at exit.
        from distributed.core import Status

        for stale in [c for c in KubeCluster._instances if c.name == kube.name and c.status != Status.running]:
            KubeCluster._instances.discard(stale)
        raise
    # Pulling the image onto fresh nodes takes minutes.
    return Started(cluster, cluster.scheduler_address, "kubernetes", note=f"kubernetes: DaskCluster {kube.name}", wait=300)


CLUSTER_KINDS: dict[str, Callable[[ClusterConfig], Started]] = {
    "local": connect_local,
    "local-cuda": connect_local_cuda,
    "address": connect_address,
    "ssh": connect_ssh,
    "slurm": connect_slurm,
    "kubernetes": connect_kubernetes,
}

_START_HINTS = {
    "ssh": "check cluster.ssh.hosts and connect_options (ssh to each host must work without a password)",
    "slurm": "check cluster.slurm (queue, account) against sinfo and sacctmgr",
    "kubernetes": "check kubectl access and that the dask-kubernetes operator is installed (cluster/README.md)",
}


def _start(cfg: ClusterConfig) -> Started:
    try:
        return CLUSTER_KINDS[cfg.kind](cfg)
    except ClusterError:
        raise
    except Exception as exc:
        # SSH, SLURM and Kubernetes fail in their own many ways; all are the environment's,
        # not a bug here, so they get one line naming the kind and what to check.
        if cfg.kind not in _START_HINTS:
            raise
        raise ClusterError(f"cluster.kind '{cfg.kind}' could not start: {_one_line(exc)}; {_START_HINTS[cfg.kind]}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connection_error(address: str, exc: Exception) -> ClusterError:
    """One line for a client that could not connect, saying which side of TLS to look at."""
    from distributed.comm.core import FatalCommClosedError

    chain = list(_chain(exc))
    # A refused or timed-out connection never reached TLS; a bad certificate raises an
    # SSLError (or distributed's fatal "certificate does not match"), and a plain-TCP
    # scheduler answering a TLS hello a ValueError about SSL.
    tls_failed = any(
        isinstance(e, ssl.SSLError | FatalCommClosedError) or (isinstance(e, ValueError) and "SSL" in str(e))
        for e in chain
    )
    if address.startswith("tls://") and tls_failed:
        return ClusterError(
            f"TLS handshake with the scheduler at {address} failed ({_one_line(chain[-1])}); check cluster.tls: "
            "ca_file must be the CA that signed the scheduler's certificate and cert/key a pair it signed, "
            "and the scheduler must listen on tls://"
        )
    hint = ""
    if address.startswith("tcp://") and any(isinstance(e, ConnectionResetError) for e in chain):
        hint = "; if that scheduler uses TLS, connect to tls://... with cluster.tls set"
    return ClusterError(f"cannot reach the scheduler at {address}: {_one_line(exc)}{hint}")


def _check_scheduler(address: str, security: Any, timeout: float) -> None:
    """Fail within ``timeout`` when ``address`` does not answer as a Dask scheduler.

    ``Client`` would wait forever for the handshake of a port that accepts connections but
    never speaks Dask's protocol (an HTTP server, the dashboard's port): this one handshake,
    bounded, turns that into one line.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect as comm_connect

    args = security.get_connection_args("client") if security is not None else {}

    async def handshake() -> None:
        # The connect retries a refused port until ``timeout`` and then says so (OSError);
        # the margin lets it, so the bound below fires only on a port that never answers.
        comm = await asyncio.wait_for(comm_connect(address, timeout=timeout, **args), timeout + 2)
        await comm.close()

    # A thread of its own: the caller may already run an event loop (a notebook).
    with ThreadPoolExecutor(1, thread_name_prefix="dask-pipeline-probe") as pool:
        try:
            pool.submit(asyncio.run, handshake()).result()
        except (asyncio.TimeoutError, TimeoutError):
            raise ClusterError(
                f"the scheduler at {address} did not answer as a Dask scheduler within {timeout + 2:g} s: is it the "
                "scheduler's port (8786 by default), not its dashboard (8787) or another service?"
            ) from None
        except (OSError, ValueError) as exc:
            raise _connection_error(address, exc) from None
        except Exception as exc:  # bytes that are not Dask's protocol fail to decode in many ways
            raise ClusterError(f"the service at {address} does not speak Dask's protocol ({_one_line(exc)}); "
                               "expected a Dask scheduler's address, tcp://HOST:8786 or tls://HOST:8786") from None


def _connect_timeout() -> float:
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds"))


#: Kinds whose worker processes this process starts (and may therefore end quickly).
_OWN_WORKERS = ("local", "local-cuda")


def _worker_setup(quick_exit: bool) -> Any:
    """The worker plugin ``connect`` registers: dask sizes deeply nested dicts (worker
    profiles) without recursing, and, for worker processes this process started, the
    process ends as soon as the worker has closed.

    A closed worker process still spends 1-2 s in the interpreter's teardown of every
    module it imported (numba, scikit-learn, pandas...); on a busy machine that passes
    the nanny's 4 s, and the nanny kills it and logs ``Worker process still alive after
    4.0 seconds, killing``. By the time the exit hook runs, the worker has told the
    scheduler, dropped its data and removed its directory: nothing is left to tear down.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        name = "dask-pipeline-setup"

        def setup(self, worker: Any) -> None:
            from dask_pipeline.monitor import register_nested_sizeof

            register_nested_sizeof()

        def teardown(self, worker: Any) -> None:
            if quick_exit:
                import atexit

                atexit.register(_exit_now)

    return WorkerSetup()


def _exit_now() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to say
            pass
    os._exit(0)


@contextlib.contextmanager
def connect(cfg: ClusterConfig | None = None, timeout: float | None = None) -> Iterator[Any]:
    """Start or reach the cluster ``cfg`` describes and yield a connected ``distributed.Client``.

    Parameters
    ----------
    cfg
        The ``cluster:`` section; defaults to a local cluster.
    timeout
        Seconds to wait for the scheduler and the first worker (longer for queued SLURM jobs
        and Kubernetes pods); default Dask's ``distributed.comm.timeouts.connect`` (30 s).

    Returns
    -------
    Iterator[distributed.Client]
        The client; the cluster (if this call started one) closes when the block exits.
    """
    from distributed import Client

    cfg = cfg or ClusterConfig()
    timeout = _connect_timeout() if timeout is None else timeout
    started = _start(cfg)
    security = tls_security(cfg.tls) if cfg.tls is not None else None
    try:
        if started.cluster is None:  # someone else's scheduler: make sure it is one before waiting on it
            _check_scheduler(started.address, security, timeout)
        try:
            client = Client(started.address, timeout=timeout, set_as_default=False, security=security)
        except (OSError, ValueError) as exc:  # a plain-TCP scheduler answering a TLS hello: ValueError
            raise _connection_error(started.address, exc) from None
        with client:
            wait = max(timeout, started.wait)
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise ClusterError(f"no worker joined the scheduler at {started.address} within {wait:g} s") from None
            client.pipeline_note = started.note  # type: ignore[attr-defined]
            client.pipeline_kind = started.kind  # type: ignore[attr-defined]
            from dask_pipeline.monitor import register_nested_sizeof

            register_nested_sizeof()  # here too: the scheduler of a local cluster runs in this process
            client.register_plugin(_worker_setup(started.kind in _OWN_WORKERS))
            yield client
    finally:
        if started.cluster is not None:
            started.cluster.close()


def describe(client: Any) -> dict[str, Any]:
    """What the client is connected to: kind, scheduler, TLS, dashboard, workers, their resources, GPU workers.

    ``kind`` is None for a client that ``connect`` did not make.
    """
    info = _scheduler_info(client)
    workers = info.get("workers", {})
    scheduler = info.get("address", client.scheduler.address)
    return {
        "kind": getattr(client, "pipeline_kind", None),
        "scheduler": scheduler,
        "tls": str(scheduler).startswith("tls://"),
        "dashboard": client.dashboard_link if _serves_dashboard(client.dashboard_link) else None,
        "n_workers": len(workers),
        "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        "memory_limit": sum(w.get("memory_limit", 0) or 0 for w in workers.values()),
        "resources": _sum_resources(workers.values()),
        "gpu_workers": _gpu_addresses(workers),
        "note": getattr(client, "pipeline_note", ""),
    }


def workers_of(client: Any) -> dict[str, dict[str, Any]]:
    """Every worker the scheduler knows, by address (not only the first few it lists by default)."""
    return _scheduler_info(client).get("workers", {})


def gpu_worker_addresses(client: Any) -> list[str]:
    """The addresses of the workers that offer the ``GPU`` resource, sorted."""
    return _gpu_addresses(workers_of(client))


def _gpu_addresses(workers: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(a for a, w in workers.items() if "GPU" in (w.get("resources") or {}))


def _scheduler_info(client: Any) -> dict[str, Any]:
    import inspect

    # distributed before the n_workers argument lists every worker anyway.
    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1)
    return client.scheduler_info()


def _serves_dashboard(link: str | None) -> bool:
    """Whether the scheduler's HTTP server serves the dashboard (it also runs without one).

    Asks for the server's root, which the dashboard redirects to its status page, without
    following the redirect: rendering that page takes the scheduler ~0.3-1 s.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    if not link:
        return False

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    root = urllib.parse.urljoin(link, "/")
    try:
        with urllib.request.build_opener(Stay).open(root, timeout=3) as response:
            return response.status == 200
    except urllib.error.HTTPError as answer:
        return answer.code in (301, 302, 307, 308) and "status" in (answer.headers.get("Location") or "")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _sum_resources(workers: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for w in workers:
        for name, amount in (w.get("resources") or {}).items():
            total[name] = total.get(name, 0) + amount
    return dict(sorted(total.items()))
