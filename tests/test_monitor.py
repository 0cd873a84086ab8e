"""The per-stage table matches the graph; thresholds warn, and fail when told, after the files exist."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from dask_pipeline.cli import main
from dask_pipeline.config import load_config
from dask_pipeline.errors import ConfigError, ThresholdError
from dask_pipeline.graph import load_graph, stages_of
from dask_pipeline.monitor import MonitorConfig, check_thresholds, portfolio_metrics, stage_times
from dask_pipeline.runner import run


def small_config(store, tmp_path, graph, *extra):
    return load_config(overrides=[
        f"data.root={store}", f"graph={graph}", "preset=blank", "folds.train=252", "folds.test=126",
        "cluster.n_workers=1", "cluster.dashboard=false", f"output.dir={tmp_path}", "output.run_name=r", *extra,
    ])


def test_stage_task_counts_match_the_graph(tmp_path, small_store):
    cfg = small_config(small_store, tmp_path, "walkforward")
    lines = []
    result = run(cfg, echo=lines.append, progress=True)  # not a terminal here: plain progress lines
    expected = Counter(stages_of(load_graph("walkforward").build(cfg)).values())
    table = json.loads((result.run_dir / "stages.json").read_text())
    assert {stage: row["tasks"] for stage, row in table.items()} == dict(expected)
    assert list(table)[:2] == ["load", "features"]  # in the order the stages started
    assert sum(row["share"] for row in table.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(row["peak_worker_memory"] > 0 for row in table.values())
    assert table["fit"]["transfer_bytes"] == 0  # one worker: nothing moves
    assert result.record["stages"] == table
    # The live counts come from the scheduler plugin: the last progress line is the whole graph.
    last = [line for line in lines if line.startswith("progress: ")][-1]
    counted = dict(item.rsplit(" ", 1) for item in last.removeprefix("progress: ").split(", "))
    assert counted == {stage: f"{n}/{n}" for stage, n in expected.items()}
    report = (result.run_dir / "dask-report.html").read_text()
    assert "Dask Performance Report" in report
    assert not list(result.run_dir.glob(".*.tmp"))


def test_stage_times_transfers_and_memory():
    stream = [
        {"key": "load-A-1", "worker": "w1", "nbytes": 100, "startstops": [{"action": "compute", "start": 0, "stop": 1}]},
        {"key": "fit-A-2", "worker": "w2", "nbytes": 10, "startstops": [
            {"action": "transfer", "start": 1, "stop": 1.5, "source": "w1"},
            {"action": "compute", "start": 2, "stop": 4}]},
    ]
    table = stage_times(stream, {}, {"fit-A-2": {"load-A-1"}}, [(0.5, "w1", 7), (3, "w2", 50), (3, "w1", 99)])
    assert table["fit"]["transfer_bytes"] == 100 and table["load"]["transfer_bytes"] == 0
    assert table["fit"]["peak_worker_memory"] == 50 and table["load"]["peak_worker_memory"] == 7
    assert table["fit"]["share"] == pytest.approx(2 / 3, abs=1e-3)
    assert table["fit"]["workers"] == {"w2": 1} and table["load"]["workers"] == {"w1": 1}


def test_check_thresholds_memory_and_metric():
    table = {"fit": {"wall_seconds": 1.0, "peak_worker_memory": 5 * 2**30}}
    folds = pd.DataFrame({"fold": [0, 1, 0], "curve": ["portfolio", "portfolio", "A"], "sharpe": [0.1, 0.3, 9.0]})
    crossed = check_thresholds(table, MonitorConfig(max_worker_memory="4GiB", min_metric={"sharpe": 0.5}),
                               portfolio_metrics(folds))
    assert [c["threshold"] for c in crossed] == ["max_worker_memory", "min_metric"]
    assert "sharpe 0.2" in crossed[1]["message"]


def test_memory_limit_as_size_or_bytes():
    with pytest.raises(ConfigError, match="monitor.max_worker_memory"):
        load_config(overrides=["monitor.max_worker_memory=lots"])
    assert load_config(overrides=["monitor.max_worker_memory=1000"]).monitor.max_worker_memory == 1000
    table = {"fit": {"wall_seconds": 1.0, "peak_worker_memory": 1001}}
    assert check_thresholds(table, MonitorConfig(max_worker_memory=1000))[0]["stage"] == "fit"


def test_short_tasks_take_the_next_heartbeat():
    # No sample falls inside the 10 ms load: it gets the first heartbeat after it, on its worker.
    stream = [{"key": "load-A-1", "worker": "w1", "startstops": [{"action": "compute", "start": 1.0, "stop": 1.01}]}]
    table = stage_times(stream, {}, None, [(0.9, "w1", 5), (1.2, "w2", 80), (1.4, "w1", 30), (1.9, "w1", 40)])
    assert table["load"]["peak_worker_memory"] == 30


def test_stage_monitor_follows_the_scheduler():
    """Counts per stage annotation (else the key's first word, as a driver's trial keys), dependencies, memory."""
    import io
    import time

    from distributed import Client, LocalCluster
    from rich.console import Console

    from dask_pipeline.graph import task
    from dask_pipeline.monitor import LineProgress, RichProgress, StageMonitor

    def slow(x, *deps):
        time.sleep(0.05)
        return x

    out = io.StringIO()
    bars = RichProgress(Console(file=out, force_terminal=True, width=100))
    with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        with StageMonitor(client, bars, interval=0.05) as monitor:
            loads = [task(slow, i, name=f"load-{i}") for i in range(3)]
            client.compute([task(slow, 0, *loads, name="features-all", stage="features")], sync=True)
            client.gather([client.submit(slow, k, key=f"trial-{k:04d}-fold-00-abcd1234") for k in range(2)])
            workers = set(client.scheduler_info()["workers"])
    assert monitor.error is None
    assert monitor.counts == {"load": (3, 3), "features": (1, 1), "trial": (2, 2)}
    features = next(k for k, s in monitor.stages.items() if s == "features")
    assert sorted(monitor.dependencies[features]) == sorted(str(d.key) for d in loads)
    assert monitor.stages["trial-0001-fold-00-abcd1234"] == "trial"
    assert {worker for _, worker, _ in monitor.samples} == workers  # the closing heartbeat of each, at least
    assert "trial" in out.getvalue() and "2/2" in out.getvalue()

    lines = []
    plain = LineProgress(lines.append, every=3600)
    plain.start()
    plain.update({"load": (1, 3)})  # within the interval: nothing
    plain.stop({"load": (3, 3)})
    assert lines == ["progress: load 3/3"]


def test_threshold_warns_then_fails_after_files(tmp_path, small_store, capsys):
    lines = []
    cfg = small_config(small_store, tmp_path, "datacheck", "monitor.max_stage_seconds=0.000001")
    result = run(cfg, echo=lines.append)
    assert any(line.startswith("warning: stage load took ") and "> monitor.max_stage_seconds 1e-06" in line
               for line in lines)
    assert result.record["thresholds"] and result.record["thresholds"][0]["stage"] == "load"

    failing = small_config(small_store, tmp_path / "fail", "datacheck", "monitor.max_stage_seconds=0.000001",
                           "monitor.fail_on_threshold=true")
    with pytest.raises(ThresholdError):
        run(failing, echo=lambda *a: None)
    for name in ("summary.parquet", "run.json", "stages.json", "report.html"):
        assert (failing.run_dir / name).is_file()
    assert json.loads((failing.run_dir / "run.json").read_text())["thresholds"]

    config = tmp_path / "c.yaml"
    config.write_text(f"graph: datacheck\ndata: {{root: {small_store}}}\ncluster: {{n_workers: 1, dashboard: false}}\n"
                      f"output: {{dir: {tmp_path / 'cli'}}}\nmonitor: {{max_stage_seconds: 0.000001, fail_on_threshold: true}}\n")
    assert main(["run", str(config), "-q"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # --quiet: no progress, no table
    err = captured.err.strip()
    assert err.startswith("error: ") and "monitor.max_stage_seconds" in err and "\n" not in err


def test_nested_sizeof_estimates_like_dask_without_recursing():
    import numpy as np
    from dask.sizeof import sizeof

    from dask_pipeline.monitor import register_nested_sizeof

    flat = {"a": np.ones(1000), "b": list(range(5)), "c": ("x", 1.5)}
    before = sizeof(flat)
    register_nested_sizeof()
    register_nested_sizeof()  # idempotent
    assert abs(sizeof(flat) - before) < 0.05 * before
    assert sizeof([np.ones(100)] * 50) == pytest.approx(50 * 800, rel=0.1)  # sampled and scaled, as dask does
    deep: dict = {}
    node = deep
    for _ in range(5000):  # deeper than any recursion limit: a worker's profile tree
        node["children"] = {"f": {}}
        node = node["children"]["f"]
    assert sizeof(deep) > 5000 * 2 * 64
