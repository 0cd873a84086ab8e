"""The journal file written in groups, a driver killed inside a group, torn and garbage lines, a full disk."""

from __future__ import annotations

import errno
import os

import optuna
import pytest
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



def _study_with(path, values, echo=None):
    from optuna.storages.journal import JournalStorage

    from dask_pipeline.tuning import group_commit_journal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=JournalStorage(group_commit_journal()(path, echo=echo)),
                                load_if_exists=True)
    for v in values:
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}), v)
    return study


def test_a_torn_last_record_is_cut_on_open_and_said_once(tmp_path):
    path = tmp_path / "study.journal"
    _study_with(path, [1.0, 2.0])
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":5,"worker_id":"x","trial_id":2,"sta')  # a write the disk cut off
    notes = []
    study = _study_with(path, [3.0], echo=notes.append)
    assert len(notes) == 1 and "study.journal: its last record was cut off" in notes[0] and "(46 bytes)" in notes[0]
    assert [t.values for t in study.get_trials()] == [[1.0], [2.0], [3.0]]
    assert path.read_bytes().startswith(whole) and path.read_bytes().endswith(b"\n")
    again = []
    assert [t[3] for t in _journal_trials(path)] == [[1.0], [2.0], [3.0]]  # Optuna's own reader agrees
    _study_with(path, [], echo=again.append)
    assert again == []  # said once: the journal is whole now


@pytest.mark.parametrize("garbage", [b"not json at all", b'{"op_code": 1', b"[1, 2, 3]", b"\xff\xfe\x00"])
def test_a_garbage_line_in_the_middle_is_an_error_naming_it(tmp_path, garbage):
    from dask_pipeline.tuning.storage import JournalError

    path = tmp_path / "study.journal"
    _study_with(path, [1.0, 2.0])
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:3], garbage, *lines[3:]]))
    with pytest.raises(JournalError, match=r"study.journal, line 4: not a journal record"):
        _study_with(path, [])


def test_a_full_disk_ends_the_study_with_one_error_and_an_intact_journal(tmp_path, monkeypatch):
    from dask_pipeline.tuning import storage_group
    from dask_pipeline.tuning.storage import JournalError

    path = tmp_path / "study.journal"
    study = _study_with(path, [1.0, 2.0])
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # what a disk that fills up mid-write does
        if len(data) > 8:
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(JournalError, match=r"study.journal: cannot write the study journal \(No space left on device\)"
                                           r"; it is intact up to its last complete record"):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)}), 3.0)
    with pytest.raises(JournalError, match="No space left on device"), storage_group(study):
        study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before
    assert [t.values for t in _study_with(path, [4.0]).get_trials() if t.values] == [[1.0], [2.0], [4.0]]
