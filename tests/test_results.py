"""Result files are written temp + rename: a writer killed at any point leaves the previous
file intact (never half a file under the real name)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dask_pipeline.results import write_parquet

#: A writer process: it writes a large frame over PATH and is SIGKILLed while it does so,
#: either in the middle of writing the temp file or once it is complete but not renamed.
KILLED_WRITER = """
import os, signal, sys, threading, time
import numpy as np, pandas as pd
from dask_pipeline import results

path, when = sys.argv[1], sys.argv[2]
frame = pd.DataFrame(np.random.default_rng(1).normal(size=(4_000_000, 4)), columns=list("abcd"))

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
