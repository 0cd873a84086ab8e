"""Fixtures of the tuning tests: the indicator registry (restored after a test that registers
one) and a cluster whose workers are threads of this process (so a test can count what they run)."""

import pytest
from distributed import Client, LocalCluster

from tests.features.conftest import registry  # noqa: F401


@pytest.fixture(scope="session")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c
