"""The datacheck graph end to end: Python API on a real cluster, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_pipeline.config import load_config
from dask_pipeline.data import load_bars
from dask_pipeline.runner import run


def make_config(tmp_path, store, extra=()):
    return load_config(overrides=[f"data.root={store}", f"output.dir={tmp_path / 'results'}", "output.run_name=check", *extra])


def test_run_on_existing_scheduler_writes_summary_and_record(tmp_path, small_store, dask_processes):
    cfg = make_config(tmp_path, small_store)
    with Client(dask_processes.address) as client:
        result = run(cfg, client=client, echo=lambda *a: None)
    run_dir = tmp_path / "results" / "check"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "dask-report.html", "figures", "report.html",
                                                         "run.json", "stages.json", "summary.parquet"]

    summary = pd.read_parquet(run_dir / "summary.parquet")
    assert list(summary["symbol"]) == sorted(summary["symbol"]) and len(summary) == 4
    first = summary.iloc[0]
    bars = load_bars(small_store, first["symbol"], dtype="float64")
    assert first["rows"] == len(bars) and first["first"] == bars.index[0] and first["last"] == bars.index[-1]
    log_ret = np.diff(np.log(bars["close"].to_numpy(np.float32).astype(np.float64)))
    assert first["vol_log_return"] == pytest.approx(log_ret.std(ddof=1), rel=1e-9)
    assert -1 < first["max_drawdown"] <= 0

    record = json.loads((run_dir / "run.json").read_text())
    assert record["stages"]["load"]["tasks"] == 4
    assert record["stages"]["summary"]["tasks"] == 5
    assert record["cluster"]["n_workers"] == 2 and record["versions"]["dask"]
    assert result.record == record
    assert load_config(run_dir / "config.yaml").data.root == str(small_store)


def test_results_do_not_depend_on_the_cluster(tmp_path, small_store, dask_processes):
    cfg = make_config(tmp_path, small_store)
    with Client(dask_processes.address) as client:
        remote = run(cfg, client=client, echo=lambda *a: None)
    remote_bytes = (remote.run_dir / "summary.parquet").read_bytes()
    local = run(make_config(tmp_path / "local", small_store, ["cluster.n_workers=1", "cluster.dashboard=false"]), echo=lambda *a: None)
    assert (local.run_dir / "summary.parquet").read_bytes() == remote_bytes


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dask_pipeline.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_generates_demo_data_once_and_writes_results(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text(
        "graph: datacheck\n"
        "data:\n  root: data/demo\n  synthetic: {symbols: 3, start: 2020-01-01, end: 2020-12-31, seed: 3}\n"
        "cluster: {n_workers: 1, dashboard: false}\n"
    )
    first = cli("run", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "generated demo data: 3 symbols" in first.stdout
    assert "results:" in first.stdout and "summary.parquet" in first.stdout
    assert len(pd.read_parquet(tmp_path / "results" / "demo" / "summary.parquet")) == 3

    second = cli("run", str(config), "--workers", "1", "-o", "data.symbols=[SYN001]", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "generated demo data" not in second.stdout
    assert list(pd.read_parquet(tmp_path / "results" / "demo" / "summary.parquet")["symbol"]) == ["SYN001"]


def test_cli_bad_config_is_one_line_and_writes_nothing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  root: data/x\n  synthetic: {symbols: 2}\ncluster: {n_workres: 1}\n")
    done = cli("run", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "unknown key 'cluster.n_workres' (did you mean 'n_workers'?)" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_unknown_symbol_fails_before_any_cluster_or_file(tmp_path, small_store, monkeypatch):
    import dask_pipeline.runner as runner
    from dask_pipeline.errors import DataError

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(runner, "connect", no_cluster)
    cfg = make_config(tmp_path, small_store, ["data.symbols=[SYN000, SYN0009]"])
    with pytest.raises(DataError, match=r"'data.symbols': 'SYN0009' is not in the store .*close matches: SYN000"):
        run(cfg, echo=lambda *a: None)
    assert not (tmp_path / "results").exists()


def test_corrupt_part_file_is_one_line_from_the_cli(tmp_path, small_store):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    (store / "symbol=SYN002" / "part-0.parquet").write_bytes(b"not parquet")
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{root: {store}}}\ncluster: {{n_workers: 1, dashboard: false}}\n")
    done = cli("run", str(config), "-q", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.strip().count("\n") == 0
    assert "symbol=SYN002/part-0.parquet: symbol SYN002: unreadable Parquet file" in done.stderr
    assert not (tmp_path / "results").exists()
