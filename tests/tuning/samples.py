"""Configs and trials the tuning tests share."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

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


def write_study(tmp_path, store, tune: str, indicators: str = "[ret, rsi, natr]"):
    """A study on ``store`` (small_store: 3 folds of 250 bars) with the blank preset, a feature cache in ``tmp_path``."""
    path = tmp_path / "study.yaml"
    path.write_text(
        "graph: tune\npreset: blank\nseed: 3\n"
        f"data: {{root: {store}}}\n"
        f"features: {{indicators: {indicators}, cache_dir: {tmp_path / 'cache'}}}\n"
        "folds: {train: 252, test: 250, min_test: 30}\n"
        f"output: {{dir: {tmp_path / 'results'}}}\n"
        f"tune:\n{tune}"
    )
    return path


def quiet(*args, **kwargs):
    pass


def frozen(number, state, params, value=None, **attrs):
    dists = {"d": IntDistribution(0, 10_000), "c": CategoricalDistribution(["a", "b"])}
    trial = create_trial(state=state, params=params, distributions={k: dists[k] for k in params},
                         value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)
    trial.number = number
    return trial


def _journal_trials(path) -> list[tuple]:
    """The trials of the journal at ``path`` as Optuna's own file backend replays them."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.load_study(study_name="s", storage=storage)
    return [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs)
            for t in study.get_trials(deepcopy=False)]


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

