"""Result files are written temp + rename: a writer killed at any point leaves the previous
file intact (never half a file under the real name). Run folders are published as one: a
publish killed at any point leaves the previous run or the new one, every file of it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dask_pipeline import results
from dask_pipeline.errors import OutputError
from dask_pipeline.results import RunFolder, check_replaceable, recover, verify_run_folder, write_parquet, write_text

#: A writer process: it writes a large frame over PATH and is SIGKILLed while it does so,
#: either in the middle of writing the temp file or once it is complete but not renamed.
KILLED_WRITER = """
import os, signal, sys, threading, time
import numpy as np, pandas as pd
from dask_pipeline import results

path, when = sys.argv[1], sys.argv[2]
# Mid-write needs a frame big enough to be caught writing; before-rename any frame will do.
rows = 1_000_000 if when == "mid-write" else 1_000
frame = pd.DataFrame(np.random.default_rng(1).normal(size=(rows, 4)), columns=list("abcd"))

if when == "before-rename":
    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)
    results.os.replace = replace
else:  # mid-write: a watcher kills the process once the temp file has some bytes, not all
    def watch():
        folder = os.path.dirname(path)
        while True:
            for name in os.listdir(folder):
                if name.endswith(".tmp") and os.path.getsize(os.path.join(folder, name)) > 0:
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0005)
    threading.Thread(target=watch, daemon=True).start()
results.write_parquet(path, frame)
print("finished without being killed")
"""


@pytest.mark.parametrize("when", ["mid-write", "before-rename"])
def test_a_killed_writer_leaves_the_previous_file_intact(tmp_path, when):
    path = tmp_path / "folds.parquet"
    previous = pd.DataFrame({"fold": [0, 1, 2], "sharpe": [0.5, -0.1, 1.2]})
    write_parquet(path, previous)
    before = path.read_bytes()

    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), when], capture_output=True, text=True,
                          timeout=300)

    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert path.read_bytes() == before
    pd.testing.assert_frame_equal(pd.read_parquet(path), previous)
    # What the killed writer left is only its temp file, under a name no reader looks for.
    assert {p.name for p in tmp_path.iterdir()} - {"folds.parquet"} <= {
        p.name for p in tmp_path.glob(".folds.parquet.*.tmp")}


def test_a_failed_write_leaves_no_temp_file_and_the_previous_file(tmp_path):
    path = tmp_path / "folds.parquet"
    write_parquet(path, pd.DataFrame({"sharpe": [1.0]}))
    before = path.read_bytes()
    unwritable = pd.DataFrame({"sharpe": [1.0, "high", object()]})  # pyarrow refuses it mid-write
    with pytest.raises(Exception):
        write_parquet(path, unwritable)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["folds.parquet"]


def test_parquet_output_is_deterministic(tmp_path):
    frame = pd.DataFrame({"a": np.arange(1000, dtype="float32"), "b": ["x"] * 1000})
    assert write_parquet(tmp_path / "one.parquet", frame).read_bytes() == \
        write_parquet(tmp_path / "two.parquet", frame).read_bytes()


# -- file permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = [write_parquet(tmp_path / "a.parquet", pd.DataFrame({"x": [1.0]})), write_text(tmp_path / "b", "b")]
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [mode, mode]


# -- run folders ---------------------------------------------------------------------------------


def run_files(tag: str) -> dict[str, bytes]:
    """The files of a small run ``tag``: every file's bytes name the run, so a mix is visible."""
    return {f"{name}": f"{tag}:{name}\n".encode() for name in ("folds.parquet", "predictions.parquet",
                                                            "config.yaml", "stages.json", "plots/history.png")}


def publish(run_dir: Path, tag: str) -> None:
    with RunFolder(run_dir) as folder:
        for name, data in run_files(tag).items():
            folder.write(name, data)
        folder.seal({"run": tag, "outputs": sorted(run_files(tag))})
        folder.publish()


def folder_files(run_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def which_run(run_dir: Path) -> str:
    """'A' or 'B' when every file of the folder is that run's (run.json included), else a description."""
    files = folder_files(run_dir)
    record = json.loads(files.pop("run.json"))
    tag = record["run"]
    if files != run_files(tag):
        return f"mixed: run.json of {tag} beside {sorted(files)}"
    verify_run_folder(run_dir)
    return tag


def test_publish_replaces_the_folder_whole_and_keeps_the_journal(tmp_path):
    run_dir = tmp_path / "results" / "r"
    publish(run_dir, "A")
    (run_dir / "study.journal").write_bytes(b'{"op_code": 0}\n')
    (run_dir / "checkpoints").mkdir()
    publish(run_dir, "B")
    journal = (run_dir / "study.journal").read_bytes()
    (run_dir / "study.journal").unlink()
    assert which_run(run_dir) == "B"
    assert journal == b'{"op_code": 0}\n'
    assert not (run_dir / "checkpoints").exists()  # the previous run's checkpoints went with its folder
    assert sorted(os.listdir(run_dir.parent)) == ["r"]  # no staging or previous folder left


def test_a_folder_with_files_no_run_wrote_is_not_replaced(tmp_path):
    run_dir = tmp_path / "r"
    publish(run_dir, "A")
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"r: holds notes.txt, which no run wrote"):
        check_replaceable(run_dir)
    other = tmp_path / "other"
    (other / "run.json").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"run.json: is a folder"):
        check_replaceable(other)
    check_replaceable(tmp_path / "absent")


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/../../x", "", "."])
def test_output_names_stay_inside_the_folder(tmp_path, name):
    with RunFolder(tmp_path / "r") as folder, pytest.raises(OutputError, match="expected a plain file name"):
        folder.write(name, b"x")
    assert sorted(os.listdir(tmp_path)) == []


def test_verify_names_a_file_of_another_run(tmp_path):
    run_dir = tmp_path / "r"
    publish(run_dir, "A")
    (run_dir / "folds.parquet").write_bytes(b"B:folds.parquet\n")
    with pytest.raises(OutputError, match=r"folds.parquet: not the file this run wrote"):
        verify_run_folder(run_dir)
    (run_dir / "folds.parquet").unlink()
    with pytest.raises(OutputError, match=r"folds.parquet: missing"):
        verify_run_folder(run_dir)


def _killed_publish(run_dir: Path, delay: float | None, step: int | None, exchange: bool) -> int:
    """Publish run B over run A in a forked child, SIGKILLed after ``delay`` s or at its ``step``-th
    rename/unlink/mkdir; return how many such steps the child reached (-1 when killed by time)."""
    counter = tmp_counter = run_dir.parent / ".steps"
    tmp_counter.write_text("0")
    pid = os.fork()
    if pid == 0:  # the child: publish, dying at the chosen step
        try:
            steps = [0]

            def dying(real):
                def call(*args, **kwargs):
                    steps[0] += 1
                    counter.write_text(str(steps[0]))
                    if step is not None and steps[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)
                return call

            if step is not None:
                for name in ("rename", "replace", "unlink", "rmdir", "mkdir", "link"):
                    setattr(os, name, dying(getattr(os, name)))
                results._exchange = dying(results._exchange)
            if not exchange:
                results._exchange = lambda a, b: False
            publish(run_dir, "B")
        finally:
            os._exit(0)
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return int(counter.read_text())


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_kill_9_at_any_point_of_the_publish_leaves_one_whole_run(tmp_path, monkeypatch, exchange):
    """Every step of the publish (each rename, unlink, mkdir...), then random moments: after each
    SIGKILL the folder is run A's or run B's, every file of it; the next run cleans up and publishes."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # a kill, not a power cut: fsync changes nothing here
    run_dir = tmp_path / "results" / "r"
    publish(run_dir, "A")
    total = _killed_publish(run_dir, None, 10_000, exchange)  # a whole publish, to count its steps
    assert which_run(run_dir) == "B" and total > 5
    seen: dict[str, int] = {}
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    _killed_publish(run_dir, None, None, exchange)
    duration = time.perf_counter() - t0
    trials = [(None, k) for k in range(1, total + 1)] + [(float(rng.uniform(0, duration)), None) for _ in range(20)]
    for delay, step in trials:
        publish(run_dir, "A")
        _killed_publish(run_dir, delay, step, exchange)
        recover(run_dir)  # what the next run does first
        found = which_run(run_dir)
        assert found in ("A", "B"), f"killed at step {step} / after {delay} s: {found}"
        seen[found] = seen.get(found, 0) + 1
        assert sorted(os.listdir(run_dir.parent)) == [".steps", "r"], os.listdir(run_dir.parent)
    assert seen.get("A") and seen.get("B"), seen  # kills landed before and after the swap
