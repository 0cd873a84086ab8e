"""Several "nodes" on one machine: a real `dask scheduler` and `dask worker` processes, each
worker with its own local directory, temp directory and working directory (nothing shared
but the data root and the results folder the config names).

- The walk-forward and tune quickstarts run through ``dask-pipeline run --scheduler`` give
  the same result files, byte for byte, as the same configs on a local cluster.
- A worker killed with SIGKILL in the middle of a run: the run completes on the survivor
  with byte-identical results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from distributed import Client

from tests.conftest import REPO, DaskProcesses

#: Files that record how a run went (times, cluster, the config as run, the study's log with
#: its timestamps), not what it computed.
RUN_RECORDS = {"run.json", "stages.json", "dask-report.html", "report.html", "config.yaml", "study.journal"}


def cli_run(config: Path, cwd: Path, out: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    proc = subprocess.run(
        [sys.executable, "-m", "dask_pipeline.cli", "run", str(config), "-q", "-o", f"output.dir={out}",
         "-o", f"features.cache_dir={out}/cache", "-o", "cluster.dashboard=false", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def result_files(run_dir: Path, out: Path | None = None) -> dict[str, bytes]:
    """Every result file's bytes; ``trials.parquet`` without its wall-clock ``duration``, the
    output folder ``out`` (named in the best config and the study's location) as OUT, and
    configs without their ``cluster`` section."""
    files = {}
    for path in sorted(run_dir.iterdir()):
        if path.name in RUN_RECORDS or not path.is_file():
            continue
        if path.name == "trials.parquet":
            files[path.name] = pd.read_parquet(path).drop(columns=["duration"]).to_json().encode()
        else:
            files[path.name] = path.read_bytes()
            if out is not None and path.suffix in (".json", ".yaml"):
                files[path.name] = files[path.name].replace(str(out).encode(), b"OUT")
            if path.suffix == ".yaml":  # a config: its cluster section says where it ran
                config = yaml.safe_load(files[path.name])
                config.pop("cluster", None)
                files[path.name] = yaml.safe_dump(config).encode()
    return files


#: The quickstarts on half their symbols and years, to keep the suite short.
SMALLER = ["-o", "data.symbols=[SYN000, SYN002, SYN004, SYN006]", "-o", "data.start=2019-06-01"]


@pytest.mark.parametrize("config, extra", [
    ("quickstart.yaml", SMALLER),
    # One trial at a time: the sampler's suggestions then do not depend on completion order.
    ("tune-quickstart.yaml", [*SMALLER, "-o", "tune.n_trials=4", "-o", "tune.concurrency=1"]),
])
def test_quickstarts_on_two_worker_processes_match_a_local_run(tmp_path, dask_processes, config, extra):
    path = REPO / "configs" / config
    cli_run(path, tmp_path, str(tmp_path / "local"), "--workers", "2", *extra)
    cli_run(path, tmp_path, str(tmp_path / "nodes"), "--scheduler", dask_processes.address, *extra)

    name = path.stem
    local, nodes = tmp_path / "local" / name, tmp_path / "nodes" / name
    local_files, node_files = result_files(local, tmp_path / "local"), result_files(nodes, tmp_path / "nodes")
    assert len(local_files) >= 3 and local_files.keys() == node_files.keys()
    different = sorted(n for n in local_files if local_files[n] != node_files[n])
    assert not different, different
    record = json.loads((nodes / "run.json").read_text())
    assert record["cluster"]["scheduler"] == dask_processes.address and record["cluster"]["n_workers"] == 2


def test_a_worker_killed_mid_run_completes_on_the_survivor_with_the_same_bytes(tmp_path, small_store):
    config = tmp_path / "wf.yaml"
    # Forests of a balanced size make each fold take a moment, so a worker can be caught
    # with fold tasks in hand.
    config.write_text(
        "graph: walkforward\npreset: balanced\nseed: 3\n"
        f"data: {{root: {small_store}}}\n"
        "model: {name: random_forest}\n"
        "features: {cache: false}\n"
        "label: {horizon: 5}\n"
        "folds: {train: 252, test: 110}\n"
    )
    cli_run(config, tmp_path, str(tmp_path / "reference"), "--workers", "2")
    reference = result_files(tmp_path / "reference" / "wf")

    # Plain worker processes, no nanny to restart one: a SIGKILL removes it for good.
    (tmp_path / "dask").mkdir()
    cluster = DaskProcesses(tmp_path / "dask", n_workers=2, worker_args=("--no-nanny",))
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    try:
        with Client(cluster.address, timeout=30) as watcher:
            pids = watcher.run(os.getpid)
            run = subprocess.Popen(
                [sys.executable, "-m", "dask_pipeline.cli", "run", str(config), "-q", "--scheduler", cluster.address,
                 "-o", f"output.dir={tmp_path / 'killed'}", "-o", "cluster.dashboard=false"],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            victim = None
            deadline = time.monotonic() + 180
            while victim is None:  # wait until a worker is fitting a fold, then kill it
                assert run.poll() is None, run.communicate()
                assert time.monotonic() < deadline, "no worker ever held a fit task"
                for address, keys in watcher.processing().items():
                    if any(str(k).startswith("fold-") and "-fit-" in str(k) for k in keys):
                        victim = address
                        break
                time.sleep(0.02)
            os.kill(pids[victim], signal.SIGKILL)
            out, err = run.communicate(timeout=300)
            assert run.returncode == 0, err[-3000:]
            assert victim not in watcher.scheduler_info()["workers"]
    finally:
        cluster.close()
    assert result_files(tmp_path / "killed" / "wf") == reference
