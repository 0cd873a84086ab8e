"""The ``dask-pipeline`` command under Ctrl-C: one line with the ``--resume`` hint, exit 130, no
traceback from the CLI or its workers, no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil


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
