"""Cluster fixtures: certificates made at test time, and cluster/*.sh started as real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import REPO

CLUSTER = REPO / "cluster"


def make_certs(out: Path, names: tuple[str, ...] = ("scheduler", "worker", "client"), openssl: bool | None = None) -> Path:
    """A CA and one cert/key pair per name in ``out`` (the files cluster/make-certs.sh writes).

    Uses cluster/make-certs.sh when openssl is installed (or ``openssl`` says so), else
    ``cryptography``; skips the test when neither is there.
    """
    if openssl is None:
        openssl = shutil.which("openssl") is not None
    if openssl:
        subprocess.run(
            ["bash", str(CLUSTER / "make-certs.sh"), str(out)],
            env={**os.environ, "CERT_NAMES": " ".join(names)}, check=True, capture_output=True,
        )
        return out
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        pytest.skip("neither openssl nor cryptography is installed: cannot make TLS certificates")

    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)

    def write(name: str, key, cert) -> None:
        (out / f"{name}-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def build(subject: str, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = build("test CA", ca_name, ca_key.public_key()).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    ).sign(ca_key, hashes.SHA256())
    write("ca", ca_key, ca)
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            build(f"dask-{name}", ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write(name, key, cert)
    return out


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """A cluster CA with scheduler, worker and client certificates."""
    return make_certs(tmp_path_factory.mktemp("tls") / "certs")


@pytest.fixture(scope="session")
def foreign_certs(tmp_path_factory) -> Path:
    """A client certificate from a different CA than ``certs``."""
    return make_certs(tmp_path_factory.mktemp("tls-other") / "certs", names=("client",))


def tls_env(certs: Path, role: str) -> dict[str, str]:
    """The TLS_* variables cluster/scheduler.sh and cluster/worker.sh read."""
    return {"TLS_CA_FILE": str(certs / "ca.pem"), "TLS_CERT": str(certs / f"{role}.pem"),
            "TLS_KEY": str(certs / f"{role}-key.pem")}


class ScriptCluster:
    """cluster/scheduler.sh and cluster/worker.sh started as subprocesses on 127.0.0.1."""

    def __init__(self, tmp: Path, n_workers: int, certs: Path | None = None):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = tmp / "scheduler.json"
        self.local_directory = tmp / "worker-space"
        base = {**os.environ, "PYTHON": sys.executable, "DASK_LOGGING__DISTRIBUTED": "warning"}
        for name in ("TLS_CA_FILE", "TLS_CERT", "TLS_KEY", "SCHEDULER_HOST", "WORKER_HOST", "WORKER_INTERFACE"):
            base.pop(name, None)
        self.procs: list[subprocess.Popen] = []
        self._start(
            "scheduler.sh",
            {**base, "SCHEDULER_PORT": "0", "DASHBOARD_ADDRESS": "127.0.0.1:0",
             "SCHEDULER_FILE": str(self.scheduler_file), **(tls_env(certs, "scheduler") if certs else {})},
        )
        self._wait_for(self.scheduler_file.exists, "scheduler file")
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        self._start(
            "worker.sh",
            {**base, "N_WORKERS": str(n_workers), "MEMORY_LIMIT": "1GiB", "LOCAL_DIRECTORY": str(self.local_directory),
             "SCHEDULER_FILE": str(self.scheduler_file), **(tls_env(certs, "worker") if certs else {})},
        )
        self.n_workers = n_workers

    def _start(self, script: str, env: dict[str, str]) -> None:
        log = open(self.tmp / f"{script}.log", "w")
        self.procs.append(subprocess.Popen(["bash", str(CLUSTER / script)], env=env, cwd=self.tmp, stdout=log, stderr=log))

    def _wait_for(self, check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                self.close()
                logs = " | ".join(p.read_text()[-500:] for p in self.tmp.glob("*.log"))
                raise RuntimeError(f"timed out waiting for the {what}: {logs}")
            time.sleep(0.1)

    def processes(self) -> list[psutil.Process]:
        """The scripts' processes and everything they started (nannies' worker processes)."""
        found = []
        for p in self.procs:
            try:
                top = psutil.Process(p.pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def close(self) -> list[psutil.Process]:
        """Stop the scripts; returns any process of theirs still alive afterwards (none expected)."""
        tree = self.processes()
        # Workers first: a worker whose scheduler is gone retries it for seconds before it stops.
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        _, alive = psutil.wait_procs(tree, timeout=10)
        for p in alive:
            p.kill()
        return alive


@pytest.fixture
def script_cluster(tmp_path):
    """Start a ScriptCluster with ``script_cluster(n_workers, certs=None)``; stopped after the test."""
    started: list[ScriptCluster] = []

    def start(n_workers: int, certs: Path | None = None) -> ScriptCluster:
        cluster = ScriptCluster(tmp_path / f"c{len(started)}", n_workers, certs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.close()


def worker_probe():
    """A task reporting what its worker gives it (env, resources, scratch space).

    Built here, not defined at module level, so cloudpickle ships it by value: workers
    started outside pytest cannot import this test module.
    """

    def probe() -> dict:
        import os

        from distributed import get_worker

        from dask_pipeline.cluster import WORKER_ENV

        worker = get_worker()
        return {
            "env": {name: os.environ.get(name) for name in WORKER_ENV},
            "resources": dict(worker.state.total_resources),
            "nthreads": worker.state.nthreads,
            "local_directory": worker.local_directory,
        }

    return probe
