"""User code on real worker subprocesses: plugins, user graphs and estimators by class path, from YAML and Python.

A scheduler and worker subprocesses started by ``dask worker`` in folders of their own,
as on other machines: the user's package ``labplug`` is "installed" on a worker when its
``PYTHONPATH`` holds the package's folder, and missing where it does not. The client
imports it from the same folder. The graph given as a file lives in a folder no worker
sees: its functions reach the workers by value.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from dask_pipeline.config import load_config
from dask_pipeline.data import load_bars
from dask_pipeline.features import engine, indicator
from dask_pipeline.errors import ClusterError
from dask_pipeline.plugins import UserCode
from dask_pipeline.preflight import check_user_code
from dask_pipeline.runner import run
from tests.conftest import DaskProcesses
from tests.test_preflight import extra_worker

LABPLUG = '''
import pandas as pd

from dask_pipeline.features import indicator
from dask_pipeline.graph import features_tasks, task


@indicator("labtrend")
def labtrend(bars, window: int = 5):
    return bars["close"].pct_change(window, fill_method=None) * {scale}


def last_rows(features):
    return features.tail(3).reset_index()


def build(cfg):
    parts = [task(last_rows, f, name=f"tail-{{s}}", stage="tail") for s, (_, f) in features_tasks(cfg).items()]
    return {{"tails": task(pd.concat, parts, name="tails", stage="tail")}}
'''

FILE_GRAPH = '''
import pandas as pd

from dask_pipeline.graph import features_tasks, task

SCALE = 100.0


def scaled_mean(features, column):
    return float(features[column].mean() * SCALE)


def table(values, symbols):
    return pd.DataFrame({"symbol": symbols, "mean": values})


def last_column(features, column):
    return features[column]


def build(cfg):
    per_symbol = features_tasks(cfg)
    column = cfg.features.indicators[0].columns[0]
    means = [task(scaled_mean, f, column, name=f"mean-{s}", stage="summary") for s, (_, f) in per_symbol.items()]
    first = next(iter(per_symbol.values()))[1]
    last = cfg.features.indicators[-1].columns[0]
    return {"means": task(table, means, list(per_symbol), name="means", stage="summary"),
            "signal": task(last_column, first, last, name="signal", stage="summary")}
'''


def write_package(folder: Path, scale: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labplug.py").write_text(textwrap.dedent(LABPLUG.format(scale=scale)))
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The user's package folder, importable here (as if installed) for the module's tests."""
    folder = write_package(tmp_path_factory.mktemp("site") / "lab")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("labplug", None)
    from dask_pipeline.features import engine

    engine.INDICATORS.pop("labtrend", None)
    engine._plan.cache_clear()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, lab):
    """A scheduler and one worker with the package installed (more join in the tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(lab))  # DaskProcesses hands its environment to the worker
        procs = DaskProcesses(tmp_path_factory.mktemp("plugins"), n_workers=1)
    from distributed import Client

    with Client(procs.address, timeout=30) as client:
        yield procs, client
    procs.close()


def config(tmp_path, store, **overrides):
    base = {"data.root": str(store), "preset": "blank", "folds.train": 252, "folds.test": 126,
            "features.cache": False, "output.dir": str(tmp_path / "results"), "plugins": ["labplug"]}
    return load_config(None, {**base, **overrides})


def imported(client, workers=None):
    def check():
        from dask_pipeline.features import INDICATORS

        return "labplug" in sys.modules and "labtrend" in INDICATORS
    return set(client.run(check, workers=workers).values())


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in ("folds.parquet", "predictions.parquet", "equity.parquet")}


def quiet(*args):
    return None


def test_estimator_by_class_path_same_bytes_on_one_and_two_workers_and_a_late_joiner_imports_plugins(
        cluster, tmp_path, small_store, lab):
    procs, client = cluster
    cfg = config(tmp_path, small_store, **{"graph": "walkforward", "data.start": "2020-01-01",
                                           "model.name": "sklearn.ensemble.ExtraTreesRegressor",
                                           "model.params": {"n_estimators": 4, "max_depth": 3},
                                           "features.indicators": ["ret", "rsi", {"labtrend": {"window": 10}}]})
    one = run(cfg.model_copy(update={"output": cfg.output.model_copy(update={"run_name": "one"})}),
              client=client, echo=quiet)
    assert len(client.scheduler_info()["workers"]) == 1 and imported(client) == {True}
    with extra_worker(procs, client, "late", env={"PYTHONPATH": str(lab)}) as late:
        # It joined after the plugin was registered: the scheduler handed it over at once.
        assert imported(client, workers=[late]) == {True}
        two = run(cfg.model_copy(update={"output": cfg.output.model_copy(update={"run_name": "two"})}),
                  client=client, echo=quiet)
        assert two.record["cluster"]["n_workers"] == 2
    assert outputs(one.run_dir) == outputs(two.run_dir)
    importances = pd.read_parquet(one.run_dir / "importances.parquet")
    assert "labtrend_10" in set(importances["feature"])


def test_file_graph_from_yaml_and_a_build_function_from_python(cluster, tmp_path, small_store, lab):
    _, client = cluster
    graph_file = tmp_path / "elsewhere" / "means.py"
    graph_file.parent.mkdir()
    graph_file.write_text(FILE_GRAPH)
    # An indicator written in a notebook or script (module __main__): no worker can import it, so
    # it travels by value inside the worker plugin.
    namespace = {"__name__": "__main__"}
    exec("def doubled(bars, window=3):\n    return bars['close'].rolling(window).mean() * 2.0\n", namespace)
    indicator("doubled")(namespace["doubled"])
    (tmp_path / "run.yaml").write_text(
        f"plugins: [labplug]\ngraph: {graph_file}\ndata: {{root: {small_store}}}\n"
        f"features: {{indicators: [labtrend, ret, doubled], cache: false}}\noutput: {{dir: {tmp_path / 'results'}}}\n")
    lines: list[str] = []
    try:
        result = run(load_config(tmp_path / "run.yaml"), client=client, echo=lines.append)
    finally:
        engine.INDICATORS.pop("doubled")
        engine._plan.cache_clear()
    close = load_bars(small_store, "SYN000")["close"].astype("float64")
    signal = pd.read_parquet(result.run_dir / "signal.parquet")["doubled_3"]
    assert signal.to_numpy().tobytes() == (close.rolling(3).mean() * 2.0).astype("float32").to_numpy().tobytes()
    assert "look-ahead check: labtrend_5, doubled_3 passed on SYN000 (784 bars)" in lines
    means = pd.read_parquet(result.run_dir / "means.parquet")
    assert list(means["symbol"]) == ["SYN000", "SYN001", "SYN002", "SYN003"] and means["mean"].notna().all()
    assert isinstance(pd.read_parquet(result.run_dir / "signal.parquet").index, pd.DatetimeIndex)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["graph"] == str(graph_file) and record["stages"]["summary"]["tasks"] == 6
    assert {"stages.json", "report.html", "config.yaml"} <= {p.name for p in result.run_dir.iterdir()}
    report = (result.run_dir / "report.html").read_text()
    assert 'id="outputs"' in report and "output-signal" in report

    import labplug

    cfg = config(tmp_path, small_store, **{"output.run_name": "python"})
    by_function = run(cfg, client=client, graph=labplug.build, echo=quiet)
    assert by_function.record["graph"] == "labplug.build"
    assert len(pd.read_parquet(by_function.run_dir / "tails.parquet")) == 12
    by_module = run(cfg, client=client, graph=labplug, echo=quiet)
    assert "graph: labplug" in (by_module.run_dir / "config.yaml").read_text()  # the config repeats it


def test_a_plugin_missing_or_different_on_one_worker_fails_the_preflight_naming_it(cluster, tmp_path, small_store):
    procs, client = cluster
    code = UserCode((("labplug", "plugins"),))
    check_user_code(client, code)
    with extra_worker(procs, client, "bare") as bare:
        with pytest.raises(ClusterError) as err:
            check_user_code(client, code)
        message = str(err.value)
        assert message.startswith(f"user code is missing: {bare} (bare) cannot import labplug "
                                  "(plugins: ModuleNotFoundError: No module named 'labplug')")
        assert message.count("tcp://") == 1 and "\n" not in message and "UploadFile" in message
        cfg = config(tmp_path, small_store)
        with pytest.raises(ClusterError, match="cannot import labplug"):
            run(cfg, client=client, echo=quiet)
        assert not cfg.run_dir.exists()
    # A graph module is unpickled by the scheduler too: it is checked there as well.
    with pytest.raises(ClusterError, match=rf"user code is missing: the scheduler {procs.address}, tcp://\S+ \(w0\) "
                                           r"cannot import nosuchgraph \(graph: ModuleNotFoundError"):
        check_user_code(client, UserCode((("nosuchgraph", "graph"),)))
    stale = write_package(tmp_path / "stale", scale=2.0)
    with extra_worker(procs, client, "stale", env={"PYTHONPATH": str(stale)}) as other:
        with pytest.raises(ClusterError, match=rf"other code than this client for user indicators: "
                                               rf"indicator 'labtrend' on {other} \(stale\)"):
            check_user_code(client, code)
