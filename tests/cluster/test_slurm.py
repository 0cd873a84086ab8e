"""The slurm kind: the SLURMCluster it builds and the job script each job would run (nothing submitted)."""

from __future__ import annotations

import shutil

import pytest

from dask_pipeline.cluster import WORKER_ENV, connect, slurm_cluster
from dask_pipeline.config import ClusterConfig, SlurmConfig, TLSConfig
from dask_pipeline.errors import ClusterError

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install -e '.[slurm]')")


def slurm_config(tmp_path, **extra) -> ClusterConfig:
    section = SlurmConfig(
        queue="compute", account="research", cores=8, memory="32GiB", walltime="02:00:00", jobs=3,
        job_extra_directives=["--exclusive"], interface="lo", local_directory="$TMPDIR",
        log_directory=str(tmp_path / "logs"),
    )
    return ClusterConfig(kind="slurm", dashboard_address="127.0.0.1:0", slurm=section, **extra)


def test_job_script_carries_the_config(tmp_path):
    cluster = slurm_cluster(slurm_config(tmp_path))
    try:
        script = cluster.job_script()
        assert not cluster.workers  # built, not scaled: no job submitted
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")  # interface lo
    finally:
        cluster.close()
    for line in ("#SBATCH -p compute", "#SBATCH -A research", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                 "#SBATCH -t 02:00:00", "#SBATCH --exclusive"):
        assert line in script.splitlines()
    for name, value in WORKER_ENV.items():
        assert f"export {name}={value}" in script.splitlines()
    # Eight single-threaded workers per job, each CPU=1, spilling to node-local scratch.
    assert "--nworkers 8" in script and "--nthreads 1" in script and "--memory-limit 4.00GiB" in script
    assert "--resources CPU=1" in script and "--local-directory $TMPDIR" in script
    assert "--interface lo" in script and "--dashboard-address 127.0.0.1:0" in script


def test_processes_and_threads_split_the_cores(tmp_path):
    cfg = slurm_config(tmp_path, threads_per_worker=2)
    cluster = slurm_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "--nworkers 4" in script and "--nthreads 2" in script


def test_tls_workers_get_the_certificates(tmp_path, certs):
    tls = TLSConfig(ca_file=str(certs / "ca.pem"), cert=str(certs / "worker.pem"), key=str(certs / "worker-key.pem"))
    cluster = slurm_cluster(slurm_config(tmp_path, tls=tls))
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    finally:
        cluster.close()
    assert "--protocol tls://" in script
    assert f"--tls-ca-file {certs / 'ca.pem'}" in script and f"--tls-cert {certs / 'worker.pem'}" in script
    assert f"--tls-key {certs / 'worker-key.pem'}" in script


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="checks the error where SLURM is absent")
def test_without_sbatch_one_clear_error(tmp_path):
    with pytest.raises(ClusterError, match="sbatch is not on PATH; run dask-pipeline on a SLURM login node"):
        with connect(slurm_config(tmp_path)):
            pass
