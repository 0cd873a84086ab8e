"""The walk-forward graph end to end: its shape, identical bytes on every scheduler and in
any completion order, and resume after a killed run."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import dask
import pytest
from distributed import Client

import dask_pipeline.graphs.walkforward as walkforward_graph
from dask_pipeline.cluster import connect
from dask_pipeline.config import ClusterConfig, load_config
from dask_pipeline.graph import stages_of
from dask_pipeline.results import write_output
from dask_pipeline.runner import run
from dask_pipeline.walkforward import TABLES

N_FOLDS = 5  # small_store: 784 bars = 252 train + 5 test windows of 110 (the last 92)


def write_config(tmp_path, store, name="wf", extra=""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "graph: walkforward\npreset: blank\nseed: 3\n"
        f"data: {{root: {store}}}\n"
        f"features: {{cache: false, cache_dir: {tmp_path / 'cache'}}}\n"
        "label: {horizon: 5}\n"
        "folds: {train: 252, test: 110}\n"
        "cluster: {n_workers: 1, dashboard: false}\n"
        f"output: {{dir: {tmp_path / 'results'}}}\n" + extra
    )
    return path


def output_bytes(run_dir):
    return {name: (run_dir / f"{name}.parquet").read_bytes() for name in TABLES}


def compute_sync(cfg, out_dir, scheduler="sync", **kwargs):
    outputs = walkforward_graph.build(cfg)
    values = dask.compute(outputs, scheduler=scheduler, **kwargs)[0]
    for name, value in values.items():
        write_output(out_dir, name, value)
    return output_bytes(out_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_store):
    """The sync scheduler's output bytes: what every other way of running must reproduce."""
    tmp = tmp_path_factory.mktemp("wf-sync")
    cfg = load_config(write_config(tmp, small_store))
    return compute_sync(cfg, tmp / "sync")


def test_graph_names_shares_features_and_embeds_nothing_large(tmp_path, small_store, monkeypatch):
    import dask_pipeline.data

    reads = []
    real_load = dask_pipeline.data.load_bars
    cfg = load_config(write_config(tmp_path, small_store))
    monkeypatch.setattr(dask_pipeline.data, "load_bars", lambda *a, **k: reads.append(k.get("columns")) or real_load(*a, **k))
    walkforward_graph.check(cfg)
    assert reads == [["close"]] * 4  # before a cluster starts: no volume indicator in `blank`, the folds' layout
    reads.clear()
    outputs = walkforward_graph.build(cfg)
    monkeypatch.undo()
    assert sorted(outputs) == sorted(TABLES)
    assert reads == [["close"]] * 4  # the client read only closes to lay out the folds

    graph = dict(dask.base.collections_to_expr(list(outputs.values())).__dask_graph__())
    names = {str(k).rsplit("-", 1)[0]: k for k in graph}
    symbols = ["SYN000", "SYN001", "SYN002", "SYN003"]
    assert {f"load-{s}" for s in symbols} | {f"features-{s}" for s in symbols} <= set(names)
    for k in range(N_FOLDS):
        assert {f"fold-{k:02d}-fit", f"fold-{k:02d}-backtest", f"fold-{k:02d}-checkpoint"} <= set(names)
        deps = {str(d).rsplit("-", 1)[0] for d in graph[names[f"fold-{k:02d}-fit"]].dependencies}
        assert deps == {f"features-{s}" for s in symbols} | {f"load-{s}" for s in symbols}
    assert "aggregate" in names

    stages = set(stages_of(outputs).values())
    assert {"load", "features", "fit", "backtest", "fold", "aggregate"} <= stages
    # Bars and features travel by key: no fold task carries data of its own.
    for key, spec in graph.items():
        if str(key).startswith("fold-"):
            assert len(pickle.dumps(spec)) < 8_000, key


def test_plain_loop_baseline_computes_the_same_tables(tmp_path, small_store, reference):
    from dask_pipeline.walkforward.benchmark import walkforward_loop

    cfg = load_config(write_config(tmp_path, small_store))
    for name, value in walkforward_loop(cfg).items():
        write_output(tmp_path / "loop", name, value)
    assert output_bytes(tmp_path / "loop") == reference


def test_same_bytes_on_one_and_two_local_workers(tmp_path, small_store, reference):
    for n in (1, 2):
        cfg = load_config(write_config(tmp_path / f"w{n}", small_store), [f"cluster.n_workers={n}"])
        with connect(ClusterConfig(n_workers=n, dashboard=False)) as client:
            result = run(cfg, client=client, echo=lambda *a: None)
        assert output_bytes(result.run_dir) == reference, f"{n} workers"
        assert result.record["stages"]["fit"]["tasks"] == N_FOLDS


def test_same_bytes_on_a_cluster_of_processes(tmp_path, small_store, reference, dask_processes):
    cfg = load_config(write_config(tmp_path, small_store))
    with Client(dask_processes.address) as client:
        result = run(cfg, client=client, echo=lambda *a: None)
    assert output_bytes(result.run_dir) == reference
    assert result.record["cluster"]["n_workers"] == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_same_bytes_whatever_order_tasks_finish(tmp_path, small_store, reference, monkeypatch, seed):
    """Random delays on 4 threads shuffle which fold finishes first; the bytes do not change."""
    rng = random.Random(seed)
    finished = []

    def delayed_by_chance(func):
        def stage(*args, **kwargs):
            time.sleep(rng.uniform(0, 0.05))
            value = func(*args, **kwargs)
            finished.append(getattr(value, "fold", None))
            return value
        return stage

    for name in ("train_fold", "backtest_fold"):
        monkeypatch.setattr(walkforward_graph, name, delayed_by_chance(getattr(walkforward_graph, name)))
    cfg = load_config(write_config(tmp_path, small_store))
    assert compute_sync(cfg, tmp_path / "threads", scheduler="threads", num_workers=4) == reference
    order = [f.index for f in finished]
    assert sorted(order) == sorted(list(range(N_FOLDS)) * 2)
    assert order != sorted(order)  # they really did finish out of order


def cli(*args, cwd, **kwargs):
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    return subprocess.Popen([sys.executable, "-m", "dask_pipeline.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_resume_after_kill_computes_only_missing_folds(tmp_path, small_store):
    # Balanced-size models make each fold take a moment, so the run can be caught halfway.
    config = write_config(tmp_path, small_store, "resumed", "model: {preset: balanced, name: random_forest}\n")
    cfg = load_config(config)
    checkpoints = cfg.checkpoint_dir

    first = cli("run", str(config), cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(checkpoints.glob("fold-*.ckpt"))) < 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no fold checkpoint appeared"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the CLI and the workers it started
    first.wait()
    done = sorted(p.name for p in checkpoints.glob("fold-*.ckpt"))
    assert 2 <= len(done) < N_FOLDS, done
    assert not (cfg.run_dir / "folds.parquet").exists()

    resumed = cli("run", str(config), "--resume", cwd=tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming: {len(done)} checkpoints" in out
    stages = json.loads((cfg.run_dir / "run.json").read_text())["stages"]
    assert stages["fit"]["tasks"] == stages["backtest"]["tasks"] == N_FOLDS - len(done)
    assert stages["fold"]["tasks"] == N_FOLDS  # one checkpoint written or read per fold
    assert not checkpoints.exists()

    clean = compute_sync(cfg, tmp_path / "clean")
    assert output_bytes(cfg.run_dir) == clean


#: Attempts per fold of ``_flaky_train`` (module-level: tasks are pickled by reference to it,
#: so the in-process workers count here).
ATTEMPTS: dict[int, int] = {}
_REAL_TRAIN = walkforward_graph.train_fold


def _flaky_train(fold, *args, **kwargs):
    ATTEMPTS[fold.index] = ATTEMPTS.get(fold.index, 0) + 1
    if ATTEMPTS[fold.index] == 1:
        raise OSError(f"fold {fold.index}: transient read error")
    return _REAL_TRAIN(fold, *args, **kwargs)


def test_cluster_retries_rerun_a_fold_that_failed_once(tmp_path, small_store, reference, monkeypatch):
    """A fold whose first attempt fails (say a flaky network filesystem) succeeds on its retry
    with ``cluster.retries``; without retries the run fails with that error."""
    from distributed import LocalCluster

    from dask_pipeline.errors import DaskPipelineError

    monkeypatch.setattr(walkforward_graph, "train_fold", _flaky_train)
    ATTEMPTS.clear()
    # Threads in this process, so the patched stage is the one the workers run.
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        cfg = load_config(write_config(tmp_path, small_store, "retried"), ["cluster.retries=1"])
        result = run(cfg, client=client, echo=lambda *a, **k: None)
        assert output_bytes(result.run_dir) == reference
        assert ATTEMPTS == dict.fromkeys(range(N_FOLDS), 2)

        ATTEMPTS.clear()
        cfg = load_config(write_config(tmp_path / "none", small_store, "not-retried"))
        with pytest.raises((OSError, DaskPipelineError), match="transient read error"):
            run(cfg, client=client, echo=lambda *a, **k: None)
        assert not (cfg.run_dir / "folds.parquet").exists()


def test_fit_tasks_go_to_gpu_workers_when_the_model_trains_there(tmp_path, small_store):
    """model.device auto: an XGBoost fit asks for the GPU on a cluster with GPU workers; every
    other task (and a CPU model's fits) asks for a CPU worker there; nothing asks elsewhere."""
    from dask_pipeline.graph import gpu_workers

    pytest.importorskip("xgboost")

    def wanted(graph):
        found = {}
        for value in graph.values():
            for layer in value.__dask_graph__().layers.values():
                for key in layer:
                    want = (layer.annotations or {}).get("resources")
                    want = want(key) if callable(want) else want
                    name = str(key).rsplit("-", 1)[0]
                    found[name.split("-", 2)[-1] if name.startswith("fold-") else name.split("-", 1)[0]] = (
                        want if isinstance(want, dict) else None)
        return found

    xgb = load_config(write_config(tmp_path, small_store, extra="model: {name: xgboost}\n"))
    with gpu_workers(True, cpu_workers=True):
        on_gpu_node = wanted(walkforward_graph.build(xgb))
    assert on_gpu_node["fit"] == {"GPU": 1}
    assert on_gpu_node["backtest"] == on_gpu_node["features"] == {"CPU": 1}
    assert wanted(walkforward_graph.build(xgb))["fit"] is None  # no GPU workers: the CPU, anywhere
    hist = load_config(write_config(tmp_path, small_store, name="hist"))
    with gpu_workers(True, cpu_workers=True):
        assert wanted(walkforward_graph.build(hist))["fit"] == {"CPU": 1}
