"""The study's outputs: best trial, Pareto front, trial table and summary."""

from __future__ import annotations

from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from dask_pipeline.config import load_config
from dask_pipeline.tuning import (
    best_trial,
    pareto_front,
    study_summary,
    trials_frame,
)
from tests.tuning.samples import frozen, write_config


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
        frozen(0, TrialState.COMPLETE, {}, 0.5, folds={"n": 3, "sharpe": [0.4, 0.5, 0.6]},
               features={"set": "aaa", "source": "computed"}),
        frozen(1, TrialState.PRUNED, {}, folds={"n": 3, "sharpe": [-1.0]}, features={"set": "aaa", "source": "memory"}),
        frozen(2, TrialState.COMPLETE, {}, 0.5, duplicate_of=0, folds={"n": 3, "sharpe": [0.4, 0.5, 0.6]}),
        frozen(3, TrialState.FAIL, {}),
        frozen(4, TrialState.COMPLETE, {}, 0.7, rerun_of=3, folds={"n": 3, "sharpe": [0.7, 0.7, 0.7]},
               features={"set": "bbb", "source": "disk"}),
        frozen(5, TrialState.FAIL, {}, error="fold 0: DataError: no rows", folds={"n": 3, "sharpe": []}),
    ]
    for i, t in enumerate(trials):
        t.params, t.distributions = {p: i}, {p: IntDistribution(0, 10_000)}
    frame = trials_frame(trials, cfg.tune)
    assert list(frame.columns) == ["number", "state", "value", f"params_{p}", "fold_values", "n_folds", "duration",
                                   "duplicate_of", "rerun_of", "features_set", "features_source", "error"]
    assert frame["state"].tolist() == ["COMPLETE", "PRUNED", "COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert frame["duplicate_of"].tolist()[2] == 0 and frame["rerun_of"].tolist()[4] == 3
    assert frame["error"].tolist()[3] == "interrupted" and frame["error"].tolist()[5].startswith("fold 0")
    assert list(frame["fold_values"][1]) == [-1.0]
    text = lambda column: [v if isinstance(v, str) else None for v in frame[column]]  # noqa: E731
    assert text("features_set") == ["aaa", "aaa", None, None, "bbb", None]
    assert text("features_source") == ["computed", "memory", None, None, "disk", None]
    frame.to_parquet(tmp_path / "trials.parquet")  # the types write
    assert study_summary(trials) == {"trials": 6, "complete": 2, "pruned": 1, "failed": 1, "interrupted": 1,
                                     "duplicates": 1, "folds_run": 7, "folds_skipped": 2, "feature_sets": 2,
                                     "features_computed": 1, "features_from_cache": 1, "features_from_memory": 1}

