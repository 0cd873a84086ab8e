"""The tune graph on a real scheduler and workers: a study end to end, pruning that really skips
folds, dedup, reproducibility with concurrency 1, and resume after the driver is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from distributed import Client
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from dask_pipeline.config import load_config
from dask_pipeline.errors import ConfigError
from dask_pipeline.runner import run
from dask_pipeline.tuning import signature

N_FOLDS = 3  # small_store: 784 bars = 252 train + test windows of 250, 250, 30 (min_test 30 keeps the last)
SPACE = """
  space:
    model.params.max_depth: {int: [2, 6]}
    model.params.learning_rate: {float: [0.01, 0.3], log: true}
    backtest.rule: {categorical: [sign, threshold]}
    backtest.threshold: {float: [0.0, 0.002]}
"""


def write_config(tmp_path, store, address, name="study", tune="", space=SPACE):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "graph: tune\npreset: blank\nseed: 3\n"
        f"data: {{root: {store}}}\n"
        f"features: {{cache: false, cache_dir: {tmp_path / 'cache'}}}\n"
        "label: {horizon: 5}\n"
        "folds: {train: 252, test: 250, min_test: 30}\n"
        f"cluster: {{kind: address, address: '{address}'}}\n"
        f"output: {{dir: {tmp_path / 'results'}}}\n"
        f"tune:\n{tune}{space}"
    )
    return path


@pytest.fixture(scope="module")
def client(dask_processes):
    with Client(dask_processes.address, set_as_default=False) as c:
        yield c


def quiet(*args, **kwargs):
    pass


def study_trials(cfg):
    storage = JournalStorage(JournalFileBackend(str(cfg.run_dir / "study.journal")))
    return optuna.load_study(study_name=cfg.output.run_name, storage=storage).get_trials(deepcopy=False)


def test_study_end_to_end_then_resume_to_more_trials(tmp_path, small_store, dask_processes, client):
    path = write_config(tmp_path, small_store, dask_processes.address, tune="  n_trials: 6\n  concurrency: 2\n")
    cfg = load_config(path)
    result = run(cfg, client=client, echo=quiet)
    out = cfg.run_dir
    for name in ("trials.parquet", "best_params.json", "best_config.yaml", "folds.parquet", "predictions.parquet",
                 "equity.parquet", "importances.parquet", "config.yaml", "run.json",
                 "plots/optimization_history.png", "plots/param_importances.png", "plots/parallel_coordinate.png"):
        assert (out / name).is_file(), name
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["number"].tolist() == list(range(6))
    assert {f"params_{p}" for p in cfg.tune.space} <= set(trials.columns)
    best = json.loads((out / "best_params.json").read_text())
    assert best["summary"]["trials"] == 6

    # The best parameters' walk-forward landed like a normal run's, and agrees with the study.
    folds = pd.read_parquet(out / "folds.parquet")
    portfolio = folds[folds["curve"] == "portfolio"].sort_values("fold")
    assert len(portfolio) == N_FOLDS
    assert portfolio["sharpe"].tolist() == pytest.approx(best["fold_values"]["sharpe"])
    assert portfolio["sharpe"].mean() == pytest.approx(best["value"])
    assert best["value"] == pytest.approx(trials.loc[trials["state"] == "COMPLETE", "value"].max())
    assert trials.loc[trials["state"] != "COMPLETE", "value"].isna().all()
    rerun = load_config(out / "best_config.yaml")
    assert rerun.graph == "walkforward" and rerun.output.run_name == "study-best"
    assert {p: v for p, v in best["params"].items() if p.startswith("model.params.")} == {
        f"model.params.{k}": v for k, v in rerun.model.params.items()}

    # Bars and features were computed once, for every trial and the best walk-forward.
    stages = result.record["stages"]
    assert stages["load"]["tasks"] == 4 and stages["features"]["tasks"] == 4
    # One feature set (the space has no features.* path): computed by the first trial, in memory for the others.
    assert stages["features"]["feature_sets"] == 1 and stages["features"]["computed"] == 4
    ran = trials[trials["duplicate_of"].isna()]
    assert ran["features_source"].tolist().count("computed") == 1 and set(ran["features_source"]) <= {"computed",
                                                                                                      "memory"}
    assert stages["trial"]["tasks"] == best["summary"]["folds_run"]
    # Only the driver touches the study: the workers never even import Optuna.
    assert not any(client.run(lambda: "optuna" in sys.modules).values())

    # Rerunning the same config continues the same study up to n_trials in total.
    run(load_config(path, ["tune.n_trials=8"]), client=client, echo=quiet)
    numbers = pd.read_parquet(out / "trials.parquet")["number"].tolist()
    assert numbers == list(range(8))
    assert pd.read_parquet(out / "trials.parquet")["state"].isin(["COMPLETE", "PRUNED"]).all()
    again = run(load_config(path, ["tune.n_trials=8"]), client=client, echo=quiet)
    assert "trial" not in again.record["stages"]  # nothing left to run
    assert len(study_trials(cfg)) == 8

    # Another objective is not mixed into this study.
    with pytest.raises(ConfigError, match=r"made for another objective \(backtest changed\)"):
        run(load_config(path, ["backtest.cost_bps=5"]), client=client, echo=quiet)


def test_pruning_skips_the_remaining_folds(tmp_path, small_store, dask_processes, client):
    path = write_config(tmp_path, small_store, dask_processes.address,
                        tune="  n_trials: 12\n  concurrency: 1\n  sampler: random\n  pruner: median\n")
    cfg = load_config(path)
    result = run(cfg, client=client, echo=quiet)
    trials = pd.read_parquet(cfg.run_dir / "trials.parquet")
    pruned = trials[trials["state"] == "PRUNED"]
    assert len(pruned) >= 1
    assert (pruned["fold_values"].map(len) < N_FOLDS).all()
    assert (trials.loc[trials["state"] == "COMPLETE", "fold_values"].map(len) == N_FOLDS).all()
    # The fold tasks the scheduler ran are exactly the folds the trials reported.
    ran = int(trials["fold_values"].map(len).sum())
    assert result.record["stages"]["trial"]["tasks"] == ran < 12 * N_FOLDS
    summary = json.loads((cfg.run_dir / "best_params.json").read_text())["summary"]
    assert summary["folds_skipped"] == 12 * N_FOLDS - ran


def test_duplicates_are_told_from_the_record_not_run(tmp_path, small_store, dask_processes, client):
    space = "  space:\n    model.params.max_depth: {int: [2, 3]}\n"
    path = write_config(tmp_path, small_store, dask_processes.address, space=space,
                        tune="  n_trials: 7\n  concurrency: 2\n  sampler: random\n  pruner: none\n")
    cfg = load_config(path)
    result = run(cfg, client=client, echo=quiet)
    trials = pd.read_parquet(cfg.run_dir / "trials.parquet")
    assert (trials["state"] == "COMPLETE").all() and len(trials) == 7
    evaluated = trials[trials["duplicate_of"].isna()]
    assert sorted(evaluated["params_model.params.max_depth"]) == [2, 3]  # each point once
    assert result.record["stages"]["trial"]["tasks"] == 2 * N_FOLDS
    duplicates = trials[trials["duplicate_of"].notna()]
    assert len(duplicates) == 5
    by_number = trials.set_index("number")
    for _, dup in duplicates.iterrows():
        original = by_number.loc[int(dup["duplicate_of"])]
        assert original["params_model.params.max_depth"] == dup["params_model.params.max_depth"]
        assert original["value"] == dup["value"]
    assert json.loads((cfg.run_dir / "best_params.json").read_text())["summary"]["duplicates"] == 5


def test_seeded_study_with_concurrency_1_is_reproducible(tmp_path, small_store, dask_processes, client):
    tune = "  n_trials: 6\n  concurrency: 1\n  sampler: tpe\n"
    tables = []
    for name in ("first", "second"):
        cfg = load_config(write_config(tmp_path / name, small_store, dask_processes.address, tune=tune))
        run(cfg, client=client, echo=quiet)
        frame = pd.read_parquet(cfg.run_dir / "trials.parquet")
        tables.append(frame.drop(columns=["duration"]))
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_resume_after_the_driver_is_killed(tmp_path, small_store, dask_processes, client):
    n_trials = 10
    path = write_config(tmp_path, small_store, dask_processes.address,
                        tune=f"  n_trials: {n_trials}\n  concurrency: 2\n  sampler: random\n  pruner: none\n")
    cfg = load_config(path)
    journal = cfg.run_dir / "study.journal"
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "dask_pipeline.cli", "run", str(path)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # poll the storage until some trials are done and others are in flight
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "driver.log").read_text()
            if journal.exists():
                try:
                    states = [t.state for t in study_trials(cfg)]
                except KeyError:  # the study is not created yet
                    states = []
                if states.count(TrialState.COMPLETE) >= 3 and TrialState.RUNNING in states:
                    break
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    before = {t.number: t for t in study_trials(cfg)}
    interrupted = sorted(n for n, t in before.items() if t.state == TrialState.RUNNING)
    assert interrupted and sum(t.state == TrialState.COMPLETE for t in before.values()) >= 3

    run(cfg, client=client, echo=quiet)

    after = study_trials(cfg)
    by_number = {t.number: t for t in after}
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in after)  # none RUNNING or WAITING
    for n, t in before.items():  # no finished trial lost or changed
        if t.state == TrialState.COMPLETE:
            assert by_number[n].state == TrialState.COMPLETE and by_number[n].values == t.values
    for n in interrupted:  # marked FAIL, then re-run exactly once with the same parameters
        assert by_number[n].state == TrialState.FAIL
        reruns = [t for t in after if t.user_attrs.get("rerun_of") == n]
        # (a trial killed while its parameters were being drawn has only some of them recorded)
        assert len(reruns) == 1 and reruns[0].params.items() >= before[n].params.items()
        assert reruns[0].state == TrialState.COMPLETE
    assert [t.state for t in after].count(TrialState.FAIL) == len(interrupted)
    assert sum(t.state == TrialState.COMPLETE for t in after) == n_trials  # the budget, exactly
    # No parameter set was evaluated (COMPLETE without being a duplicate) twice.
    evaluated = [signature(t.params) for t in after if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated))
    table = pd.read_parquet(cfg.run_dir / "trials.parquet")
    assert len(table) == len(after)
    assert table.loc[table["number"].isin(interrupted), "error"].eq("interrupted").all()
    summary = json.loads((cfg.run_dir / "best_params.json").read_text())["summary"]
    assert summary["interrupted"] == len(interrupted) and summary["complete"] + summary["duplicates"] == n_trials
