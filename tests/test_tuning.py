"""The tune section, search-space checks, signatures, trial configs, and the O(n) resume scan
(no cluster: the study driver itself is exercised end to end in tests/graphs/test_tune.py)."""

from __future__ import annotations

import datetime as dt
import socket
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from dask_pipeline.config import dump_config, load_config
from dask_pipeline.errors import ConfigError
from dask_pipeline.tuning import (
    apply_params,
    best_trial,
    open_study,
    pareto_front,
    scan_trials,
    signature,
    study_summary,
    trials_frame,
)

SPACE = """
tune:
  n_trials: 5
  space:
    model.params.max_depth: {int: [2, 6]}
    model.params.learning_rate: {float: [0.01, 0.3], log: true}
    backtest.rule: {categorical: [sign, threshold]}
    backtest.threshold: {float: [0.0, 0.002], step: 0.001}
"""


def write_config(tmp_path, extra: str = SPACE, graph: str = "tune"):
    path = tmp_path / "study.yaml"
    path.write_text(f"graph: {graph}\npreset: blank\ndata: {{root: {tmp_path / 'store'}}}\n"
                    f"output: {{dir: {tmp_path / 'results'}}}\n{extra}")
    return path


def test_space_round_trips_through_the_written_config(tmp_path):
    cfg = load_config(write_config(tmp_path))
    space = cfg.tune.space
    assert space["model.params.max_depth"].distribution() == IntDistribution(2, 6)
    assert space["model.params.learning_rate"].log
    assert space["backtest.threshold"].grid() == [0.0, 0.001, 0.002]
    assert cfg.to_dict()["tune"]["space"]["model.params.learning_rate"] == {"float": [0.01, 0.3], "log": True}
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    again = load_config(tmp_path / "again.yaml", {"output.run_name": "study"})
    assert again.tune == cfg.tune and again.digest() == cfg.digest()
    assert cfg.tune.pruning == "median" and cfg.tune.metrics == ["sharpe"] and cfg.tune.directions == ["maximize"]


@pytest.mark.parametrize(("override", "expected"), [
    ({"tune.space": {"model.params.max_depth": {"int": [2]}}},
     "'tune.space.model.params.max_depth': int: expected [low, high]"),
    ({"tune.space": {"model.params.max_depth": {"integer": [2, 6]}}},
     "'tune.space.model.params.max_depth': unknown option 'integer'"),
    ({"tune.space": {"model.params.max_depth": {"int": [6, 2]}}}, "low 6 is above high 2"),
    ({"tune.space": {"model.params.max_depth": {"int": [2.5, 6]}}}, "int: low must be a whole number"),
    ({"tune.space": {"model.params.learning_rate": {"float": [0, 0.3], "log": True}}},
     "'tune.space.model.params.learning_rate': float: log needs low > 0"),
    ({"tune.space": {"backtest.rule": {"categorical": []}}}, "'tune.space.backtest.rule': categorical: expected a non-empty"),
    ({"tune.space": {"model.params.max_depth": {"categorical": [[1, 2]]}}}, "[1, 2] is not a scalar"),
    ({"tune.space": {"model.parms.max_depth": {"int": [2, 6]}}},
     "'tune.space.model.parms.max_depth': not a config key: unknown key 'model.parms' (did you mean 'params'?)"),
    ({"tune.space": {"modle.name": {"categorical": ["ridge"]}}},
     "'tune.space.modle.name': not a config key: unknown section 'modle' (did you mean 'model'?)"),
    ({"tune.space": {"seed.x": {"int": [1, 2]}}}, "'tune.space.seed.x': not a config key: seed is a value"),
    ({"tune.space": {"label.horizon": {"float": [1, 5]}}},
     "'tune.space.label.horizon': label.horizon does not accept 2.527864"),
    ({"tune.space": {"backtest.quantile": {"float": [0.1, 0.9]}}},
     "'tune.space.backtest.quantile': backtest.quantile does not accept 0.9"),
    ({"tune.space": {"model.name": {"categorical": ["ridge", "lasso"]}}}, "does not accept 'lasso'"),
    ({"tune.space": {"features.cache": {"categorical": [True, False]}}},
     "'tune.space.features.cache': features.* cannot be searched"),
    ({"tune.space": {"data.start": {"categorical": ["2019-01-01"]}}}, "'tune.space.data.start': data.* cannot be searched"),
    ({"tune.space": {"cluster.n_workers": {"int": [1, 2]}}}, "'tune.space.cluster.n_workers': cluster cannot be searched"),
    ({"tune.space": {}}, "'tune.space': is empty"),
    ({"tune.n_trials": 0}, "'tune.n_trials': Input should be greater than or equal to 1"),
    ({"tune.metric": "sharp"}, "'tune.metric': unknown metric 'sharp' (did you mean 'sharpe'?)"),
    ({"tune.metric": ["sharpe", "cagr"], "tune.direction": ["maximize"]}, "direction lists 1 directions for 2 metrics"),
    ({"tune.metric": ["sharpe", "cagr"], "tune.pruner": "median"}, "cannot prune a study of several metrics"),
    ({"tune.sampler": "grid", "tune.space": {"backtest.threshold": {"float": [0.0, 0.01]}}},
     "'tune.space.backtest.threshold': the grid sampler needs a finite set of values"),
    ({"tune.n_trial": 3}, "unknown key 'tune.n_trial' (did you mean 'n_trials'?)"),
])
def test_bad_tune_sections_fail_at_load_naming_the_key(tmp_path, override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path), override)
    assert expected in str(err.value)


def test_an_empty_space_is_fine_for_other_graphs(tmp_path):
    cfg = load_config(write_config(tmp_path, extra="", graph="walkforward"))
    assert cfg.tune.space == {}


def test_several_metrics_default_to_no_pruner(tmp_path):
    cfg = load_config(write_config(tmp_path), {"tune.metric": ["sharpe", "max_drawdown"], "tune.sampler": "nsga2",
                                               "tune.direction": ["maximize", "maximize"]})
    assert cfg.tune.pruning == "none" and cfg.tune.directions == ["maximize", "maximize"]


def test_signature_is_canonical():
    a = {"model.params.max_depth": 3, "backtest.threshold": 0.001, "backtest.rule": "sign"}
    assert signature(a) == signature(dict(reversed(list(a.items()))))  # key order
    assert signature({**a, "backtest.threshold": 0.001 + 1e-15}) == signature(a)  # below round_digits
    assert signature({**a, "backtest.threshold": 0.0011}) != signature(a)
    assert signature({"x": 3}) == signature({"x": 3.0})
    assert signature({"x": 0.0}) == signature({"x": -0.0})
    assert signature({"x": "1"}) != signature({"x": 1}) and signature({"x": True}) != signature({"x": 1})
    assert signature({"x": 0.123456}, digits=3) == signature({"x": 0.1234999}, digits=3)


def test_apply_params_gives_a_validated_walkforward_config(tmp_path):
    cfg = load_config(write_config(tmp_path))
    trial = apply_params(cfg, {"model.params.max_depth": 4, "backtest.rule": "threshold"})
    assert trial.graph == "walkforward" and trial.tune.space == {}
    assert trial.model.params == {"max_depth": 4} and trial.backtest.rule == "threshold"
    # The shared sections are the very objects the shared tasks were keyed on.
    assert trial.features is cfg.features and trial.data is cfg.data
    with pytest.raises(ConfigError, match=r"params.max_depth: unknown parameter for ridge"):
        apply_params(cfg, {"model.name": "ridge", "model.params.max_depth": 4})


def frozen(number, state, params, value=None, **attrs):
    dists = {"d": IntDistribution(0, 10_000), "c": CategoricalDistribution(["a", "b"])}
    trial = create_trial(state=state, params=params, distributions={k: dists[k] for k in params},
                         value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)
    trial.number = number
    return trial


def test_scan_sorts_trials_into_index_budget_and_interrupted():
    trials = [
        frozen(0, TrialState.COMPLETE, {"d": 1}, 0.5, folds={"n": 2, "sharpe": [0.4, 0.6]}),
        frozen(1, TrialState.COMPLETE, {"d": 1}, 0.5, duplicate_of=0),
        frozen(2, TrialState.PRUNED, {"d": 2}),
        frozen(3, TrialState.FAIL, {"d": 3}, error="boom"),        # a real failure: counts
        frozen(4, TrialState.FAIL, {"d": 4}),                      # interrupted: re-queued as 6
        frozen(5, TrialState.RUNNING, {"d": 5}, driver="dead"),
        frozen(6, TrialState.WAITING, {"d": 4}, rerun_of=4),
        frozen(7, TrialState.RUNNING, {"d": 7}, driver="live"),
        frozen(8, TrialState.RUNNING, {"d": 8}, driver="elsewhere"),
    ]
    state = scan_trials(trials, 10, alive={"dead": False, "live": True, "elsewhere": None}.get)
    assert state.index[signature({"d": 1})].number == 0 and state.index[signature({"d": 1})].values == [0.5]
    assert state.index[signature({"d": 2})].state == "PRUNED"
    assert len(state.index) == 2
    assert [t.number for t in state.stale] == [5]
    assert state.requeued == {4}
    assert state.counted == 6  # 0, 1, 2, 3 and the two live RUNNING ones
    assert state.running_elsewhere == 2


def test_resuming_a_10000_trial_study_reads_its_trials_once(tmp_path):
    cfg = load_config(write_config(tmp_path, extra="tune:\n  space: {model.params.max_depth: {int: [0, 10000]}}\n"))
    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="study", direction="maximize")
    start = dt.datetime(2024, 1, 1)
    dead_driver = f"{socket.gethostname()}/99999999/0"  # this host, a process that cannot exist
    trials = []
    for i in range(10_000):
        state = TrialState.RUNNING if i >= 9_997 else TrialState.COMPLETE
        t = create_trial(state=state, params={"model.params.max_depth": i},
                         distributions={"model.params.max_depth": IntDistribution(0, 10_000)},
                         value=float(i) if state == TrialState.COMPLETE else None,
                         user_attrs={"driver": dead_driver, "folds": {"n": 3, "sharpe": [1.0, 2.0, 3.0]}})
        t.datetime_start = start
        trials.append(t)
    study.add_trials(trials)

    calls = {"get_all_trials": 0, "get_trial": 0}
    for name in calls:
        real = getattr(storage, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        setattr(storage, name, counted)
    t0 = time.perf_counter()
    study, state = open_study(cfg, echo=lambda *a: None, storage=storage)
    seconds = time.perf_counter() - t0
    assert calls["get_all_trials"] == 1  # one read of every trial ...
    assert calls["get_trial"] <= 3 * len(state.stale)  # ... and per-trial reads only for the 3 interrupted ones
    assert seconds < 2.0, f"resume took {seconds:.2f} s"
    assert len(state.index) == 9_997 and state.counted == 9_997
    after = study.get_trials(deepcopy=False)
    assert [t.state for t in after[9_997:10_000]] == [TrialState.FAIL] * 3
    requeued = after[10_000:]
    assert [(t.state, t.user_attrs["rerun_of"], t.system_attrs["fixed_params"]["model.params.max_depth"])
            for t in requeued] == [
        (TrialState.WAITING, n, n) for n in (9_997, 9_998, 9_999)]


def test_best_trial_skips_duplicates_and_breaks_ties_by_number(tmp_path):
    cfg = load_config(write_config(tmp_path))
    trials = [frozen(0, TrialState.COMPLETE, {"d": 1}, 0.5), frozen(1, TrialState.COMPLETE, {"d": 2}, 0.9),
              frozen(2, TrialState.COMPLETE, {"d": 2}, 0.9, duplicate_of=1), frozen(3, TrialState.COMPLETE, {"d": 3}, 0.9)]
    assert best_trial(trials, cfg.tune).number == 1
    low = load_config(write_config(tmp_path), {"tune.direction": "minimize"})
    assert best_trial(trials, low.tune).number == 0
    assert best_trial([frozen(0, TrialState.PRUNED, {"d": 1})], cfg.tune) is None


def test_pareto_front_of_two_metrics(tmp_path):
    cfg = load_config(write_config(tmp_path), {"tune.metric": ["sharpe", "max_drawdown"], "tune.sampler": "nsga2"})
    dists = {"d": IntDistribution(0, 10)}
    points = [(1.0, -0.5), (2.0, -0.6), (0.5, -0.1), (0.4, -0.7)]  # the last is dominated by the first
    trials = []
    for i, values in enumerate(points):
        t = create_trial(state=TrialState.COMPLETE, params={"d": i}, distributions=dists, values=list(values))
        t.number = i
        trials.append(t)
    assert [t.number for t in pareto_front(trials, cfg.tune)] == [0, 1, 2]
    assert best_trial(trials, cfg.tune).number == 1


def test_trials_table_and_summary(tmp_path):
    cfg = load_config(write_config(tmp_path, extra="tune:\n  space: {model.params.max_depth: {int: [0, 10000]}}\n"))
    p = "model.params.max_depth"
    trials = [
        frozen(0, TrialState.COMPLETE, {}, 0.5, folds={"n": 3, "sharpe": [0.4, 0.5, 0.6]}),
        frozen(1, TrialState.PRUNED, {}, folds={"n": 3, "sharpe": [-1.0]}),
        frozen(2, TrialState.COMPLETE, {}, 0.5, duplicate_of=0, folds={"n": 3, "sharpe": [0.4, 0.5, 0.6]}),
        frozen(3, TrialState.FAIL, {}),
        frozen(4, TrialState.COMPLETE, {}, 0.7, rerun_of=3, folds={"n": 3, "sharpe": [0.7, 0.7, 0.7]}),
        frozen(5, TrialState.FAIL, {}, error="fold 0: DataError: no rows", folds={"n": 3, "sharpe": []}),
    ]
    for i, t in enumerate(trials):
        t.params, t.distributions = {p: i}, {p: IntDistribution(0, 10_000)}
    frame = trials_frame(trials, cfg.tune)
    assert list(frame.columns) == ["number", "state", "value", f"params_{p}", "fold_values", "n_folds", "duration",
                                   "duplicate_of", "rerun_of", "error"]
    assert frame["state"].tolist() == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert frame["duplicate_of"].tolist()[2] == 0 and frame["rerun_of"].tolist()[4] == 3
    assert frame["error"].tolist()[3] == "interrupted" and frame["error"].tolist()[5].startswith("fold 0")
    assert list(frame["fold_values"][1]) == [-1.0]
    frame.to_parquet(tmp_path / "trials.parquet")  # the types write
    assert study_summary(trials) == {"trials": 6, "complete": 2, "pruned": 1, "failed": 1, "interrupted": 1,
                                     "duplicates": 1, "folds_run": 7, "folds_skipped": 2}


# ------------------------------------------------------------------ storage groups and the pruner


def _journal_trials(path) -> list[tuple]:
    """The trials of the journal at ``path`` as Optuna's own file backend replays them."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="s", storage=storage)
    return [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs)
            for t in study.get_trials(deepcopy=False)]


def test_grouped_journal_writes_replay_as_plain_appends(tmp_path):
    from optuna.storages.journal import JournalStorage

    from dask_pipeline.tuning import group_commit_journal, storage_group

    journal = group_commit_journal()(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=JournalStorage(journal), direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    seen = []
    for i in range(6):
        with storage_group(study):
            trial = study.ask(dist)
            trial.set_user_attr("tag", [i, "a"])
            trial.report(float(i), step=0)
            # Inside the group the storage already sees what is not written yet...
            seen.append(study.get_trials(deepcopy=False)[-1].intermediate_values)
        with storage_group(study):
            if i % 3 == 2:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, float(i) * 0.5)
    assert seen == [{0: float(i)} for i in range(6)]
    assert journal.commits == 12
    # ...and a reader of the file replays exactly what the writer holds in memory.
    ours = [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs)
            for t in study.get_trials(deepcopy=False)]
    assert _journal_trials(tmp_path / "study.journal") == ours
    assert [t[1] for t in ours] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED] * 2


GROUP_KILLED = """
import os, signal, sys
import optuna
from optuna.storages.journal import JournalStorage
from dask_pipeline.tuning import group_commit_journal, storage_group

study = optuna.create_study(study_name="s", storage=JournalStorage(group_commit_journal()(sys.argv[1])),
                            load_if_exists=True)
dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
with storage_group(study):
    study.tell(study.ask(dist), 1.0)
with storage_group(study):
    trial = study.ask(dist)
    study.tell(trial, 2.0)
    os.kill(os.getpid(), signal.SIGKILL)  # dies before the group is written
"""


def test_a_driver_killed_inside_a_group_leaves_the_journal_at_the_previous_group(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "study.journal"
    proc = subprocess.run([sys.executable, "-c", GROUP_KILLED, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -9
    trials = _journal_trials(path)
    assert [(n, s, v) for n, s, _, v, *_ in trials] == [(0, TrialState.COMPLETE, [1.0])]
    # The lock died with the process: the next driver writes at once.
    from optuna.storages.journal import JournalStorage

    from dask_pipeline.tuning import group_commit_journal, storage_group

    study = optuna.load_study(study_name="s", storage=JournalStorage(group_commit_journal()(path)))
    with storage_group(study):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}), 3.0)
    assert [t[3] for t in _journal_trials(path)] == [[1.0], [3.0]]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_cached_median_pruner_decides_as_optunas(direction):
    """Random studies with ties, NaN reports and trials completing out of order: every
    pruning question gets the same answer from both pruners."""
    import numpy as np
    from optuna.pruners import MedianPruner

    from dask_pipeline.tuning import cached_median_pruner

    rng = np.random.default_rng(3)
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    asked, pruned = 0, 0
    for _ in range(4):
        ours, theirs = cached_median_pruner()(), MedianPruner(n_startup_trials=5, n_warmup_steps=0)
        study = optuna.create_study(storage=InMemoryStorage(), direction=direction)
        live = []
        for _ in range(400):
            if len(live) < 6:
                live.append((study.ask(dist), 0))
            i = int(rng.integers(len(live)))
            trial, step = live[i]
            value = float(rng.choice([np.nan, 0.0, 1.0, rng.normal()], p=[0.05, 0.1, 0.1, 0.75]))
            trial.report(value, step=step)
            frozen = study._storage.get_trial(trial._trial_id)
            decision = theirs.prune(study, frozen)
            assert ours.prune(study, frozen) == decision
            asked, pruned = asked + 1, pruned + decision
            if decision or step == 3:
                if decision:
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, value if value == value else 0.0)
                live.pop(i)
            else:
                live[i] = (trial, step + 1)
    assert asked == 1600 and 100 < pruned < 1500


def test_an_unreachable_storage_is_one_error_without_its_password(tmp_path):
    from dask_pipeline.tuning import StudyError

    cfg = load_config(write_config(tmp_path), ["tune.storage=postgresql://optuna:hunter2@127.0.0.1:9/studies"])
    with pytest.raises(StudyError) as caught:
        open_study(cfg, echo=lambda *a: None)
    message = str(caught.value)
    assert message.startswith("tune.storage: cannot open postgresql://optuna:***@127.0.0.1:9/studies")
    assert "hunter2" not in message and "\n" not in message
