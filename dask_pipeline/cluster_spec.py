"""The ``cluster:`` section: how to get a Dask cluster, typed and validated at load.

``dask_pipeline.cluster`` connects to what this describes. Kept apart from ``config``
(which re-exports these classes) so the run config stays one page of sections and
loading, and the cluster module reads its section without the rest of the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from dask_pipeline.schema import Section


#: Kinds that start their scheduler and workers away from this machine.
SCALE_OUT_KINDS = ("ssh", "slurm", "kubernetes")

#: Host names that mean "this machine only".
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class TLSConfig(Section):
    """Certificates for ``tls://`` connections (``cluster/make-certs.sh`` makes a set).

    ``ca_file`` is the CA that signed every certificate in the cluster; ``cert`` and ``key``
    are this machine's pair. Kinds that start a scheduler and workers (``ssh``, ``slurm``)
    give them the same pair, so it must sit at the same path on every node.
    """

    ca_file: str
    cert: str
    key: str

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _file_exists(cls, value: str) -> str:
        # Resolved here, like data.root in _resolve_paths: relative to the current directory.
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return str(path)


class SSHConfig(Section):
    """A scheduler and workers started over SSH (``distributed.deploy.ssh.SSHCluster``).

    Each worker process is single-threaded with ``cluster.threads_per_worker`` threads and
    ``cluster.memory_limit`` memory, like local workers.
    """

    #: The first host runs the scheduler, every further entry one group of workers (name
    #: the first host again to put workers beside the scheduler).
    hosts: list[str]
    #: Keywords of ``asyncssh.connect``: username, port, client_keys, known_hosts, ...
    connect_options: dict[str, Any] = {}
    workers_per_host: int = Field(1, ge=1)
    #: Network interface for the scheduler and workers (e.g. ib0); default: all interfaces
    #: (loopback only when every host is this machine).
    interface: str | None = None
    scheduler_port: int = Field(8786, ge=0, le=65535)
    #: The Python with dask-pipeline installed on the hosts; default: this Python's path.
    remote_python: str | None = None
    local_directory: str | None = None

    @field_validator("hosts")
    @classmethod
    def _scheduler_then_workers(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise ValueError(
                "needs the scheduler host and at least one worker host "
                "(name the first host twice to run workers beside the scheduler)"
            )
        if any(not host.strip() for host in value):
            raise ValueError("has an empty host name")
        if value[0] in LOOPBACK_HOSTS and any(host not in LOOPBACK_HOSTS for host in value[1:]):
            raise ValueError(
                f"the scheduler host {value[0]!r} is this machine's loopback address, which workers on "
                "other hosts cannot reach; name the scheduler host by its network address"
            )
        return value

    @field_validator("connect_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The resolved config is written to every run folder (config.yaml).
        secrets = sorted(k for k in value if k in ("password", "passphrase", "client_keys_passphrase"))
        if secrets:
            raise ValueError(
                f"holds {', '.join(secrets)}, which would be written to the run's config.yaml; "
                "use SSH keys without a passphrase or an ssh-agent"
            )
        return value


class SlurmConfig(Section):
    """Workers as SLURM jobs (``dask_jobqueue.SLURMCluster``); the scheduler runs in this process.

    Each job asks for ``cores`` and ``memory`` and runs ``processes`` worker processes
    (default: ``cores / cluster.threads_per_worker``, i.e. single-threaded workers), each
    with the resource ``CPU=1``.
    """

    queue: str | None = None
    account: str | None = None
    cores: int = Field(ge=1)
    memory: str
    walltime: str = "01:00:00"
    #: Jobs to submit when the cluster starts.
    jobs: int = Field(1, ge=1)
    processes: int | None = Field(None, ge=1)
    job_extra_directives: list[str] = []
    #: The Python with dask-pipeline installed on the compute nodes; default: this Python's path.
    python: str | None = None
    #: Network interface for the scheduler and workers (e.g. ib0); default: all interfaces.
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    #: Seconds to wait for the first job to start (jobs may queue).
    startup_timeout: float = Field(600, gt=0)

    @field_validator("memory")
    @classmethod
    def _is_size(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            parse_bytes(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a size (expected e.g. 64GiB or 500GB)") from None
        return value

    @field_validator("walltime")
    @classmethod
    def _is_walltime(cls, value: str) -> str:
        if not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", value):
            raise ValueError(f"{value!r} is not a SLURM time limit (expected e.g. 02:00:00 or 1-12:00:00)")
        return value

    @model_validator(mode="after")
    def _processes_divide_cores(self) -> SlurmConfig:
        if self.processes is not None and self.cores % self.processes:
            raise ValueError(f"processes {self.processes} does not divide cores {self.cores}")
        return self


def _quantities_as_text(value: Any) -> Any:
    # YAML reads `cpu: 1` as a number; Kubernetes quantities and env values are strings.
    if isinstance(value, dict):
        return {k: v if isinstance(v, str) else str(v) for k, v in value.items()}
    return value


QuantityMap = Annotated[dict[str, str], BeforeValidator(_quantities_as_text)]


class KubernetesResources(Section):
    """Pod resources of the scheduler and of each worker, in Kubernetes quantities (``4Gi``, ``1``)."""

    requests: QuantityMap = {"cpu": "1", "memory": "2Gi"}
    limits: QuantityMap = {"memory": "2Gi"}


class KubernetesConfig(Section):
    """A ``DaskCluster`` created through the dask-kubernetes operator (``KubeCluster``)."""

    name: str = "dask-pipeline"
    #: An image with dask-pipeline installed (cluster/kubernetes/Dockerfile).
    image: str
    #: Default: the current namespace of the kubeconfig context.
    namespace: str | None = None
    n_workers: int = Field(2, ge=1)
    resources: KubernetesResources = KubernetesResources()
    env: QuantityMap = {}

    @field_validator("name")
    @classmethod
    def _is_dns_label(cls, value: str) -> str:
        # The operator names the scheduler pod and service "<name>-scheduler": 63 characters at most.
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) or len(value) > 53:
            raise ValueError(
                f"{value!r} is not a Kubernetes name (lowercase letters, digits and '-', 53 characters at most)"
            )
        return value


class ClusterConfig(Section):
    """How to get a Dask cluster (see ``dask_pipeline.cluster``).

    ``n_workers``, ``threads_per_worker`` and ``memory_limit`` size local workers;
    ``threads_per_worker`` and ``memory_limit`` also size ``ssh`` and ``kubernetes`` workers,
    while the ``ssh``, ``slurm`` and ``kubernetes`` sections say how many. ``retries`` is how
    many times a failed task is retried (passed to compute/submit). ``tls`` holds the
    certificates for a ``tls://`` scheduler.
    """

    kind: Literal["local", "local-cuda", "address", "ssh", "slurm", "kubernetes"] = "local"
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | None = "auto"
    address: str | None = None
    dashboard: bool = True
    dashboard_address: str = "127.0.0.1:8787"
    retries: int = Field(0, ge=0)
    tls: TLSConfig | None = None
    ssh: SSHConfig | None = None
    slurm: SlurmConfig | None = None
    kubernetes: KubernetesConfig | None = None

    @field_validator("n_workers")
    @classmethod
    def _n_workers_applies(cls, value: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind")
        if value is not None and kind in SCALE_OUT_KINDS:
            where = {"ssh": "ssh.workers_per_host", "slurm": "slurm.jobs and cluster.slurm.processes",
                     "kubernetes": "kubernetes.n_workers"}[kind]
            raise ValueError(f"is not used with kind {kind!r}; set cluster.{where}")
        return value

    @field_validator("tls")
    @classmethod
    def _tls_applies(cls, value: TLSConfig | None, info: ValidationInfo) -> TLSConfig | None:
        kind, address = info.data.get("kind"), info.data.get("address")
        if value is not None and kind in ("local", "local-cuda"):
            raise ValueError(f"is not used with kind {kind!r}: a local cluster stays on 127.0.0.1")
        if value is not None and kind == "kubernetes":
            raise ValueError(
                "is not used with kind 'kubernetes': mount the certificates as a Secret in the DaskCluster "
                "manifest (cluster/kubernetes/) and connect with kind 'address'"
            )
        if kind == "address" and address:
            if address.startswith("tls://") and value is None:
                raise ValueError(f"is required for the tls:// address {address} (ca_file, cert, key)")
            if not address.startswith("tls://") and value is not None:
                raise ValueError(f"is set but cluster.address {address} is not tls://; use tls://HOST:PORT")
        return value

    @field_validator("ssh", "slurm", "kubernetes")
    @classmethod
    def _section_of_kind(cls, value: Section | None, info: ValidationInfo) -> Section | None:
        kind, section = info.data.get("kind"), info.field_name
        if kind is None:  # the kind itself failed; its error says so
            return value
        if value is not None and kind != section:
            raise ValueError(f"is only used with kind {section!r} (kind is {kind!r})")
        if value is None and kind == section:
            raise ValueError(f"is required with kind {section!r}: {_SECTION_HINTS[section]}")
        return value

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        if self.address is not None and self.kind != "address":
            raise ValueError(f"address is only used with kind 'address' (kind is {self.kind!r})")
        if self.address is not None and "://" not in self.address:
            raise ValueError(
                f"address {self.address!r} has no protocol; expected tcp://HOST:PORT or tls://HOST:PORT"
            )
        if self.address is not None and "@" in self.address:
            raise ValueError(
                f"address {self.address!r} holds a user or password, which Dask addresses never carry; "
                "expected tcp://HOST:PORT, or tls://HOST:PORT with cluster.tls certificates to authenticate"
            )
        if self.kind == "slurm" and "memory_limit" in self.model_fields_set:
            raise ValueError(
                "cluster.memory_limit is not used with kind 'slurm': each worker gets "
                "cluster.slurm.memory / cluster.slurm.processes"
            )
        return self


_SECTION_HINTS = {
    "ssh": "hosts: [scheduler-host, worker-host, ...]",
    "slurm": "at least cores and memory per job, e.g. {cores: 32, memory: 128GiB}",
    "kubernetes": "at least image: an image with dask-pipeline installed",
}
