"""graph.py: readable deterministic keys, stage annotations, GPU routing, checkpoints."""

from __future__ import annotations

import dask
import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster, get_task_stream

from dask_pipeline.graph import checkpointed, gpu_workers, stages_of, task


def double(x):
    return 2 * x


def slow_double(x):
    import time

    time.sleep(0.02)  # long enough that an unconstrained scheduler spreads them over both workers
    return 2 * x


def test_keys_are_readable_deterministic_and_input_specific():
    a = task(double, 1, name="load-AAPL")
    assert a.key == task(double, 1, name="load-AAPL").key
    assert a.key != task(double, 2, name="load-AAPL").key
    assert a.key.startswith("load-AAPL-") and len(a.key) == len("load-AAPL-") + 8
    assert key_split(a.key) == "load-AAPL"  # what the dashboard shows


def test_stage_annotation_defaults_to_first_word_and_survives_merging():
    loads = [task(double, i, name=f"load-S{i}") for i in range(3)]
    fit = task(sum, loads, name="fold-03-fit", stage="fit")
    stages = stages_of({"out": fit})
    assert stages[fit.key] == "fit"
    assert all(stages[x.key] == "load" for x in loads)


def test_gpu_tasks_go_to_gpu_workers_only_when_the_cluster_has_them():
    with gpu_workers(False):
        plain = task(double, 5, name="waves-X", gpu=True)
    assert "resources" not in (plain.__dask_graph__().layers[plain.key].annotations or {})

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        from distributed import Worker

        async def start():
            return [
                await Worker(cluster.scheduler_address, nthreads=1, resources=r, name=n)
                for n, r in (("gpu", {"GPU": 1}), ("cpu", {"CPU": 1}))
            ]

        workers = client.sync(start)
        with gpu_workers(True):
            tasks = [task(slow_double, i, name=f"waves-S{i}", gpu=True) for i in range(12)]
        free = [task(slow_double, i, name=f"features-S{i}") for i in range(12)]
        with gpu_workers(True, cpu_workers=True):  # a GPU node: CPU stages keep off the GPU worker
            pinned = [task(slow_double, i, name=f"backtest-S{i}") for i in range(12)]
        with get_task_stream(client) as stream:
            assert client.gather(client.compute(tasks)) == [2 * i for i in range(12)]
        with get_task_stream(client) as control:
            client.gather(client.compute(free))
        with get_task_stream(client) as placed:
            client.gather(client.compute(pinned))
        gpu_address, cpu_address = workers[0].address, workers[1].address
        assert {r["worker"] for r in stream.data} == {gpu_address}
        assert len({r["worker"] for r in control.data}) == 2
        assert {r["worker"] for r in placed.data} == {cpu_address}
        for w in workers:
            client.sync(w.close)


def test_checkpoint_saves_then_replaces_the_task(tmp_path):
    path = tmp_path / "fold-01.pkl"
    calls = []

    def work(x):
        calls.append(x)
        return {"x": x}

    first = checkpointed(task(work, 3, name="fold-01-fit"), path, "fold-01")
    assert dask.compute(first, scheduler="sync")[0] == {"x": 3} and path.exists()
    again = checkpointed(task(work, 3, name="fold-01-fit"), path, "fold-01")
    assert dask.compute(again, scheduler="sync")[0] == {"x": 3}
    assert calls == [3]  # the second graph loaded the checkpoint: nothing upstream ran
    assert not list(tmp_path.glob("*.tmp"))


def test_graph_outputs_are_checked_before_anything_is_written():
    import pandas as pd

    from dask_pipeline.errors import ExtensionError
    from dask_pipeline.graph import check_outputs

    series = pd.Series([1.0, 2.0], name="signal")
    checked = check_outputs({"signals": series, "plots/history.png": b"\x89PNG", "notes": "text"})
    assert list(checked["signals"].columns) == ["signal"] and checked["plots/history.png"] == b"\x89PNG"
    for bad in ("../escape", "/tmp/escape", "", "a/../b", 3):
        with pytest.raises(ExtensionError, match="names become file names in the run folder"):
            check_outputs({bad: "x"})
    with pytest.raises(ExtensionError, match="graph output 'n' is a int"):
        check_outputs({"n": 3})
    with pytest.raises(ExtensionError, match="column names must be text"):
        check_outputs({"t": pd.DataFrame({0: [1.0]})})
