"""Checkpoints: authenticated on read (bit flips, truncation, a planted pickle refused, naming the
file, nothing executed), private keys, and a clear that deletes only what checkpoints wrote."""

from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pandas as pd
import pytest

from dask_pipeline import checkpoints
from dask_pipeline.checkpoints import clear, folder_key, load, save
from dask_pipeline.errors import CheckpointError
from dask_pipeline.graph import checkpointed, task

DIGEST = "0123456789abcdef"


class Planted:
    """What an attacker plants: unpickling it runs code (here: writes a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "run" / "checkpoints" / DIGEST
    yield path
    checkpoints.forget_keys(tmp_path)


def value():
    return {"fold": 3, "frame": pd.DataFrame({"x": np.arange(50.0)}), "note": "é"}


def test_round_trip_and_private_folder(folder):
    key = folder_key(folder)
    save(value(), folder / "fold-03.ckpt", key)
    loaded = load(folder / "fold-03.ckpt", key)
    pd.testing.assert_frame_equal(loaded["frame"], value()["frame"])
    assert folder_key(folder) == key  # read back from the key file
    assert oct(folder.stat().st_mode & 0o777) == "0o700" and oct((folder / "key").stat().st_mode & 0o777) == "0o600"


def test_every_single_bit_flip_is_refused_naming_the_file(folder):
    key = folder_key(folder)
    path = folder / "fold-01.ckpt"
    save(value(), path, key)
    good = path.read_bytes()
    rng = np.random.default_rng(5)
    for bit in rng.choice(len(good) * 8, size=300, replace=False):
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match=r"fold-01.ckpt: checkpoint fails its integrity check"):
            load(path, key)
    for cut in (0, 5, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError, match="fold-01.ckpt"):
            load(path, key)


def test_a_planted_pickle_is_refused_and_never_runs(folder, tmp_path):
    key = folder_key(folder)
    save(value(), folder / "fold-00.ckpt", key)  # the folder and its key are the run's
    marker = tmp_path / "pwned"
    path = folder / "fold-01.ckpt"
    path.write_bytes(pickle.dumps(Planted(str(marker))))
    with pytest.raises(CheckpointError, match="fold-01.ckpt: checkpoint fails its integrity check"):
        load(path, key)
    # ...even dressed up as a checkpoint, with a key the attacker made up.
    forged = os.urandom(32)
    save(Planted(str(marker)), tmp_path / "forged.ckpt", forged)
    path.write_bytes((tmp_path / "forged.ckpt").read_bytes())
    with pytest.raises(CheckpointError, match="fold-01.ckpt"):
        dask.compute(checkpointed(task(sum, [1, 2], name="fold-01-fit"), path, "fold-01"), scheduler="sync")
    assert not marker.exists()


def test_a_key_others_can_read_or_a_foreign_folder_is_not_trusted(folder):
    save(value(), folder / "fold-00.ckpt", folder_key(folder))
    os.chmod(folder / "key", 0o644)
    with pytest.raises(CheckpointError, match=r"key: other users may change it"):
        folder_key(folder)
    os.chmod(folder / "key", 0o600)
    os.chmod(folder, 0o777)
    with pytest.raises(CheckpointError, match=rf"{DIGEST}: other users may change it"):
        folder_key(folder)
    os.chmod(folder, 0o700)
    (folder / "key").unlink()
    with pytest.raises(CheckpointError, match="holds checkpoints without a key"):
        folder_key(folder)


def test_clear_deletes_only_the_checkpoint_layout(folder, tmp_path):
    root = folder.parent
    save(value(), folder / "fold-00.ckpt", folder_key(folder))
    clear(root)
    assert not root.exists()
    for intruder in ("notes.txt", "not-a-digest"):
        root.mkdir(exist_ok=True)
        (root / intruder).mkdir() if intruder == "not-a-digest" else (root / intruder).write_text("x")
        with pytest.raises(CheckpointError, match=rf"{intruder}: not a checkpoint folder of dask-pipeline"):
            clear(root)
        assert (root / intruder).exists()
        (root / intruder).rmdir() if intruder == "not-a-digest" else (root / intruder).unlink()
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "data").write_text("keep")
    root.rmdir()
    root.symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        clear(root)
    assert (elsewhere / "data").read_text() == "keep"


def test_a_folder_that_cannot_be_cleared_is_an_error(folder, monkeypatch):
    save(value(), folder / "fold-00.ckpt", folder_key(folder))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(CheckpointError, match=rf"{DIGEST}/(key|fold-00.ckpt): cannot clear the checkpoints of an "
                                              r"earlier run \(Permission denied\); remove .*checkpoints yourself"):
        clear(folder.parent)


def test_a_full_disk_while_saving_is_one_error_naming_the_file(folder, monkeypatch):
    key = folder_key(folder)
    real = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CheckpointError, match=r"fold-02.ckpt: cannot write the checkpoint \(No space left on device\)"):
        save(value(), folder / "fold-02.ckpt", key)
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in folder.iterdir()) == ["key"]  # no temp file left
