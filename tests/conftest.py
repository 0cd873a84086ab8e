"""Shared fixtures: a small synthetic store and a real scheduler + workers on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """Four synthetic symbols of daily bars, 2019-2021, as a Parquet store."""
    from dask_pipeline.data import synthesize, write_dataset

    root = tmp_path_factory.mktemp("store") / "bars"
    write_dataset(root, synthesize(4, "2019-01-01", "2021-12-31", "1D", seed=11))
    return root


class DaskProcesses:
    """A `dask scheduler` and `dask worker` subprocesses, each worker with its own local directory."""

    def __init__(self, tmp: Path, n_workers: int, worker_args: tuple[str, ...] = ()):
        self.tmp = tmp
        self.scheduler_file = tmp / "scheduler.json"
        env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning"}
        dask = [sys.executable, "-m", "dask"]
        self.procs = [
            subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(self.scheduler_file)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        ]
        self._wait_for(lambda: self.scheduler_file.exists(), "scheduler file")
        for i in range(n_workers):
            local = tmp / f"worker-{i}"
            local.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [*dask, "worker", "--scheduler-file", str(self.scheduler_file), "--host", "127.0.0.1",
                     "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--local-directory", str(local),
                     "--name", f"w{i}", "--resources", "CPU=1", *worker_args],
                    env={**env, "TMPDIR": str(local)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=local,
                )
            )
        import json

        from distributed import Client

        self.address = json.loads(self.scheduler_file.read_text())["address"]
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n_workers, timeout=60)

    def _wait_for(self, check, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"timed out waiting for the {what}")
            time.sleep(0.1)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="session")
def dask_processes(tmp_path_factory):
    """A real scheduler with two single-threaded workers, started as subprocesses."""
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"), n_workers=2)
    yield procs
    procs.close()
