"""The journal file written in groups, and a driver killed inside a group."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tests.tuning.samples import GROUP_KILLED, _journal_trials


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

