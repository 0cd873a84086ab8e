"""cluster/scheduler.sh and cluster/worker.sh started for real: loopback only, CPU=1, one thread, clean exit."""

from __future__ import annotations

import subprocess

import pytest

from dask_pipeline.cluster import WORKER_ENV, connect, describe
from dask_pipeline.config import ClusterConfig

from .conftest import CLUSTER, worker_probe


@pytest.mark.parametrize("script", sorted(p.name for p in CLUSTER.glob("*.sh")) + ["slurm.sbatch"])
def test_scripts_parse_and_fail_fast(script):
    path = CLUSTER / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()


def test_scheduler_and_workers_from_the_scripts(script_cluster):
    cluster = script_cluster(n_workers=2)
    assert cluster.address.startswith("tcp://127.0.0.1:")
    with connect(ClusterConfig(kind="address", address=cluster.address)) as client:
        client.wait_for_workers(2, timeout=60)
        info = describe(client)
        assert info["kind"] == "address" and info["tls"] is False
        assert info["n_workers"] == 2 and info["threads"] == 2 and info["resources"] == {"CPU": 2}
        assert info["dashboard"] is not None and info["dashboard"].startswith("http://127.0.0.1:")

        probe = client.submit(worker_probe(), resources={"CPU": 1}, pure=False).result()
        assert probe["env"] == WORKER_ENV
        assert probe["resources"] == {"CPU": 1} and probe["nthreads"] == 1
        assert probe["local_directory"].startswith(str(cluster.local_directory))

        # Nothing of the scheduler, its dashboard, the nanny or the workers listens beyond loopback.
        listening = {
            (p.pid, c.laddr.ip)
            for p in cluster.processes()
            for c in p.net_connections(kind="inet")
            if c.status == "LISTEN"
        }
        assert listening and {ip for _, ip in listening} == {"127.0.0.1"}
    assert cluster.close() == []
