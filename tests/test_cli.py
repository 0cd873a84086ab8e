"""The ``dask-pipeline`` command under Ctrl-C: one line with the ``--resume`` hint, exit 130, no
traceback from the CLI or its workers, no process left behind; output it could not write at exit
is a failure, not exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest


def test_ctrl_c_is_one_line_and_leaves_no_process(tmp_path, small_store):
    config = tmp_path / "wf.yaml"
    config.write_text(
        "graph: walkforward\npreset: balanced\nseed: 3\n"
        f"data: {{root: {small_store}}}\nfeatures: {{cache: false}}\nlabel: {{horizon: 5}}\n"
        "folds: {train: 252, test: 50}\ncluster: {n_workers: 1, dashboard: false}\n"
        f"output: {{dir: {tmp_path / 'results'}}}\n"
    )
    # A terminal's Ctrl-C goes to the whole foreground process group: the CLI and its workers.
    proc = subprocess.Popen([sys.executable, "-m", "dask_pipeline.cli", "run", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    while not any(line.startswith("cluster:") for line in lines):
        line = proc.stdout.readline()
        assert line, f"the run ended before its cluster started: {proc.communicate()}"
        lines.append(line)
    time.sleep(1)  # into the computation
    family = psutil.Process(proc.pid).children(recursive=True)
    assert family, "no worker process was started"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == ("error: interrupted; rerun the same command with --resume to continue "
                                            "(finished work is kept)")
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err, err
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def _synth(tmp_path, stdout) -> subprocess.CompletedProcess:
    """A cheap command that succeeds and prints one line, its stdout block-buffered (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-m", "dask_pipeline.cli", "data", "synth", "--out", str(tmp_path / "store"),
                           "--symbols", "1", "--start", "2020-01-01", "--end", "2020-01-10"],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=120)  # fmt: skip


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_output_that_cannot_be_written_at_exit_is_exit_120_and_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        done = _synth(tmp_path, full)
    assert done.returncode == 120, done.stderr  # as plain Python exits when its last flush fails
    assert done.stderr == "error: cannot write standard output (No space left on device)\n"


def test_a_reader_gone_before_the_exit_flush_is_exit_141(tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader left (| head) before the command's buffered line was flushed
    try:
        done = _synth(tmp_path, write)
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""
