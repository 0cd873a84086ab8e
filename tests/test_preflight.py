"""The checks after connect: same versions everywhere, the data root visible to every worker.

Real `dask scheduler` / `dask worker` subprocesses. A worker "from another installation"
is a worker whose PYTHONPATH puts first a directory holding a ``dask_pipeline-0.0.0``
distribution's metadata, so ``importlib.metadata`` there reports 0.0.0, exactly what a
machine with an older install reports. A worker "on another machine without the data" runs
in its own mount namespace (``unshare``) with an empty tmpfs mounted over the directory
holding the store: the path this client reads does not exist for that worker, as on a
node that lacks the shared filesystem. Where the kernel refuses a mount namespace that
test skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dask_pipeline.config import load_config
from dask_pipeline.data import synthesize, write_dataset
from dask_pipeline.errors import ClusterError
from dask_pipeline.preflight import check_workers, store_problem, version_mismatches
from tests.conftest import DaskProcesses


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and one ordinary worker (this environment), as subprocesses."""
    procs = DaskProcesses(tmp_path_factory.mktemp("preflight"), n_workers=1, worker_args=("--no-nanny",))
    yield procs
    procs.close()


@pytest.fixture(scope="module")
def client(cluster):
    from distributed import Client

    with Client(cluster.address, timeout=30) as client:
        yield client


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "shared" / "bars"
    write_dataset(root, synthesize(["AAA", "BBB"], "2021-01-01", "2021-03-31", seed=3))
    return root


@contextlib.contextmanager
def extra_worker(cluster, client, name: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()):
    """One more `dask worker` subprocess (its own env, its command behind ``prefix``); yields its address."""
    local = Path(cluster.tmp) / name
    local.mkdir()
    before = len(client.scheduler_info()["workers"])
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "dask", "worker", "--scheduler-file", str(cluster.scheduler_file),
         "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard", "--local-directory", str(local),
         "--name", name],
        env={**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning", "TMPDIR": str(local), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=local,
    )
    try:
        client.wait_for_workers(before + 1, timeout=60)
        workers = client.scheduler_info()["workers"]
        yield next(address for address, info in workers.items() if info.get("name") == name)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        deadline = time.monotonic() + 30
        while len(client.scheduler_info()["workers"]) > before and time.monotonic() < deadline:
            time.sleep(0.1)


def fake_install(tmp_path: Path, version: str) -> Path:
    """A directory whose ``dask_pipeline-<version>.dist-info`` says dask-pipeline is at ``version``."""
    site = tmp_path / f"fake-site-{version}"
    info = site / f"dask_pipeline-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dask-pipeline\nVersion: {version}\n")
    return site


def test_matching_workers_pass_and_another_dask_pipeline_is_one_line_naming_the_worker(cluster, client, store, tmp_path):
    from importlib.metadata import version

    cfg = load_config(None, {"data.root": str(store), "output.dir": str(tmp_path / "results")})
    assert check_workers(client, cfg, echo=pytest.fail) == []
    here = version("dask-pipeline")
    with extra_worker(cluster, client, "old", env={"PYTHONPATH": str(fake_install(tmp_path, "0.0.0"))}) as old:
        with pytest.raises(ClusterError) as err:
            check_workers(client, cfg)
        message = str(err.value)
        assert "\n" not in message
        assert re.match(rf"^the cluster runs other versions than this client: dask-pipeline {re.escape(here)} here, "
                        rf"0\.0\.0 on {re.escape(old)}; install the same versions on every machine", message)
        assert message.count("tcp://") == 1  # only the odd worker is named, not the matching one

        from dask_pipeline.runner import run

        with pytest.raises(ClusterError, match="other versions than this client"):
            run(cfg, client=client, echo=lambda *a: None)
        assert not cfg.run_dir.exists()  # stopped before anything was computed or written
    assert check_workers(client, cfg, echo=pytest.fail) == []


def _mount_namespace() -> tuple[str, ...] | None:
    """An ``unshare`` prefix giving a private mount namespace where tmpfs can be mounted, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    with tempfile.TemporaryDirectory() as target:
        for flags in (("--mount", "--propagation", "private"), ("--user", "--map-root-user", "--mount")):
            probe = subprocess.run([unshare, *flags, "mount", "-t", "tmpfs", "tmpfs", target],
                                   capture_output=True, check=False)
            if probe.returncode == 0:
                return (unshare, *flags)
    return None


def test_a_worker_that_cannot_see_the_data_root_is_named_with_the_root(cluster, client, store):
    namespace = _mount_namespace()
    if namespace is None:
        pytest.skip("no mount namespace here (unshare missing or refused), so no worker can be kept from the data")
    hidden = store.parent  # .../shared: an empty tmpfs over it, for that worker only
    hide = (*namespace, "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(hidden))
    cfg = load_config(None, {"data.root": str(store), "data.symbols": ["AAA", "BBB"]})
    with extra_worker(cluster, client, "elsewhere", prefix=hide) as elsewhere:
        assert store.is_dir()  # this client still sees the store
        with pytest.raises(ClusterError) as err:
            check_workers(client, cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"1 of 2 workers cannot read the data root {store}: {elsewhere}: no such data directory; "
        "put the store on a filesystem every worker mounts at the same path, or use an object store URL"
    )
    assert message.endswith("see cluster/README.md, 'Data on several machines'")


def test_store_problem_names_a_missing_root_and_missing_symbols(store):
    assert store_problem(str(store), ["AAA", "BBB"]) is None
    assert store_problem(str(store), ["AAA", "ZZZ", "YYY"]) == "the store there lacks ZZZ, YYY (another copy of the store?)"
    assert store_problem(str(store / "gone"), ["AAA"]) == f"{store / 'gone'}: no such data directory"


def test_version_mismatches_are_grouped_and_libraries_only_warn():
    def install(**versions):
        return {"host": {}, "packages": {"python": "3.11.7.final.0", "dask": "2026.8.0", "distributed": "2026.8.0",
                                         "dask-pipeline": "0.1.0", "numpy": "2.4.6", **versions}}

    report = {
        "client": install(),
        "scheduler": install(**{"python": "3.11.9.final.0", "dask-pipeline": None, "numpy": None}),
        "workers": {"tcp://10.0.0.7:4012": install(dask="2026.7.1"), "tcp://10.0.0.8:4012": install(dask="2026.7.1"),
                    "tcp://10.0.0.9:4012": install(numpy="2.3.0", python="3.12.1.final.0")},
    }
    errors, warnings = version_mismatches(report)
    # A scheduler without dask-pipeline or numpy, on another Python patch release, is fine.
    assert errors == [
        "dask 2026.8.0 here, 2026.7.1 on tcp://10.0.0.7:4012, tcp://10.0.0.8:4012",
        "python 3.11 here, 3.12 on tcp://10.0.0.9:4012",
    ]
    assert warnings == ["workers run other versions of libraries that decide the numbers, results may differ "
                        "from a run on this machine: numpy 2.4.6 here, 2.3.0 on tcp://10.0.0.9:4012"]
    assert version_mismatches({**report, "workers": {"tcp://a:1": install()}, "scheduler": install()}) == ([], [])
