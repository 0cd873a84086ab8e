"""Opening and resuming a study: the scan of its trials, the pruner, an unreachable storage."""

from __future__ import annotations

import datetime as dt
import socket
import time

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from dask_pipeline.config import load_config
from dask_pipeline.tuning import (
    open_study,
    scan_trials,
    signature,
)
from tests.tuning.samples import frozen, write_config


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

