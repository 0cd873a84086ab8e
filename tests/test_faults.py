"""Whole runs under faults, on a real scheduler and workers: a full disk while publishing, two
runs into one folder, planted and truncated checkpoints, and inputs that used to come out wrong
(``data.dtype: float64`` prices, ``^GSPC`` in the wave report)."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
from distributed import Client

from dask_pipeline import checkpoints, results
from dask_pipeline.config import load_config
from dask_pipeline.errors import CheckpointError, DataError, OutputError
from dask_pipeline.runner import run


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def client(dask_processes):
    with Client(dask_processes.address, set_as_default=False) as c:
        yield c


def config(tmp_path, store, graph="datacheck", **overrides):
    base = {"graph": graph, "preset": "blank", "data.root": str(store), "features.cache": False,
            "folds.train": 252, "folds.test": 110, "label.horizon": 5, "output.dir": str(tmp_path / "results"),
            "output.run_name": "r"}
    return load_config(overrides={**base, **overrides})


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Planted:
    """Unpickling it writes a marker file: what must never happen when a checkpoint is read."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_checkpoints_are_cleared_unread_then_a_full_disk_keeps_the_previous_run(tmp_path, small_store,
                                                                                       client, monkeypatch):
    cfg = config(tmp_path, small_store)
    marker = tmp_path / "pwned"
    planted = cfg.checkpoint_dir / "fold-00.ckpt"  # left where the previous run's checkpoints were
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps(Planted(marker)))
    run(cfg, client=client, echo=quiet)  # without --resume: cleared, never read
    assert not marker.exists() and not (cfg.run_dir / "checkpoints").exists()
    before = tree(cfg.run_dir)

    real = results.atomic_path
    written = []

    def filling(path):  # the disk fills up at the third file of the new run
        written.append(path)
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    monkeypatch.setattr(results, "atomic_path", filling)
    with pytest.raises(OutputError, match=r"results/r: cannot write the results \(No space left on device: .*\); "
                                          "nothing of this run was published and the folder is as it was"):
        run(cfg, client=client, echo=quiet)
    assert tree(cfg.run_dir) == before
    assert sorted(os.listdir(cfg.run_dir.parent)) == ["r"]  # no staging folder, no lock file left

    intruder = cfg.run_dir / "checkpoints" / "not-ours"
    intruder.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="checkpoints/not-ours: not a checkpoint folder of dask-pipeline"):
        run(cfg, client=client, echo=quiet)


HOLDER = """
import sys, time
from dask_pipeline.results import RunLock
with RunLock(sys.argv[1], describe="run 'r'"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_two_runs_into_one_folder_the_second_is_refused_and_a_killed_one_frees_it(tmp_path, small_store):
    cfg = config(tmp_path, small_store)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(cfg.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"results/r: another run is writing this folder \(run 'r', pid "
                                              rf"{holder.pid} on .*, started .*\); wait for it"):
            run(cfg, echo=quiet)  # refused before any cluster starts
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with results.RunLock(cfg.run_dir):  # the kernel dropped the dead run's lock
        pass
    assert os.listdir(tmp_path / "results") == []  # and the last holder removed its lock file


def test_resume_refuses_a_truncated_checkpoint_naming_it(tmp_path, small_store, client):
    cfg = config(tmp_path, small_store, graph="walkforward")
    path = cfg.checkpoint_dir / "fold-01.ckpt"
    checkpoints.save({"not": "a fold"}, path, checkpoints.folder_key(cfg.checkpoint_dir))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match=r"fold-01.ckpt: checkpoint fails its integrity check .*; rerun "
                                              "without --resume"):
        run(cfg, client=client, echo=quiet, resume=True)
    checkpoints.forget_keys(cfg.run_dir)


def test_fold_layout_reads_prices_as_data_dtype(tmp_path):
    """Prices beyond float32 (1e39): float64 lays the folds out; float32 says why it cannot."""
    from dask_pipeline.data import synthesize, write_dataset
    from dask_pipeline.graphs import walkforward

    store = tmp_path / "store"
    bars = synthesize(2, "2019-01-01", "2021-12-31", "1D", seed=1)
    write_dataset(store, {s: b.assign(**{c: b[c] * 1e37 for c in ("open", "high", "low", "close")})
                          for s, b in bars.items()})
    assert len(walkforward.build(config(tmp_path, store, "walkforward", **{"data.dtype": "float64"}))) == 4
    with pytest.raises(DataError, match="inf"):
        walkforward.build(config(tmp_path, store, "walkforward"))


def test_the_wave_report_finds_symbols_with_special_characters(tmp_path):
    from dask_pipeline.data import synthesize, write_dataset
    from dask_pipeline.report import _bars

    bars = next(iter(synthesize(1, "2020-01-01", "2020-06-30", "1D", seed=2).values()))
    write_dataset(tmp_path, {"^GSPC": bars, "BRK/B": bars})
    for symbol in ("^GSPC", "BRK/B"):
        found = _bars({"root": str(tmp_path)}, symbol)
        assert found is not None and np.allclose(found["close"], bars["close"])
