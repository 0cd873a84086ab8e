"""cluster/gpu-check.sh and its steps (dask_pipeline/gpucheck.py), on a machine without a GPU:
the script's no-GPU line, the JUnit and placement readers, the XGBoost step's CPU row, and
the report writers fed with CPU rows."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dask_pipeline import gpucheck
from dask_pipeline.waves.benchmark import COLUMNS

SCRIPT = Path(__file__).resolve().parent.parent / "cluster" / "gpu-check.sh"


def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_3(tmp_path):
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}  # no nvidia-smi
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True)
    assert done.returncode == 3 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no NVIDIA GPU found (no nvidia-smi): nothing measured")
    assert not (tmp_path / "out").exists()
    # An nvidia-smi that lists no GPU is no GPU either.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found'\n")
    fake.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 3 and "(nvidia-smi lists none)" in done.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--fast"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "gpu-check.sh: unknown option --fast (see --help)"


def test_gpu_check_help_is_the_comment_header_only():
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and done.stderr == ""
    assert lines[0].startswith("Measure and check dask-pipeline on a GPU node")
    assert lines[-1].startswith("VENV, WHEELS, CUDA_VISIBLE_DEVICES (which GPU)")  # the header's last line
    assert not any(line.startswith(("set -euo", "repo=", "#")) for line in lines), lines[-3:]


def _fake_nvidia_smi(folder: Path) -> None:
    """An ``nvidia-smi`` listing one GPU, for the script (``-L``) and for ``gpucheck.nvidia_smi`` (CSV)."""
    fake = folder / "nvidia-smi"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"; '
                    'else echo "NVIDIA H200, 143771 MiB, 570.86"; fi\n')
    fake.chmod(0o755)


def test_gpu_probe_dry_run_on_a_gpu_node_skips_the_gpu_library_rows(tmp_path, monkeypatch):
    """A dry run installs no CuPy or dask-cuda: on a node with a GPU their rows are skipped, not failed."""
    _fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    node, rows = gpucheck.probe(dry_run=True)
    status = {r["measure"]: r["status"] for r in rows}
    assert node["gpus"] == [{"name": "NVIDIA H200", "memory": "143771 MiB", "driver": "570.86"}]
    assert status == {"GPUs (nvidia-smi)": "ok", "numba-cuda": "skipped", "CuPy devices": "skipped",
                      "waves.backend auto": "skipped", "XGBoost on the GPU": "skipped", "dask-cuda": "skipped"}
    assert rows[0]["detail"] == "dry run: the GPU libraries are not installed"
    # For real, the same node's GPU libraries are checked.
    _, rows = gpucheck.probe()
    assert all(r["status"] in ("ok", "failed") for r in rows)


def test_gpu_junit_counts_and_skip_reasons(tmp_path):
    (tmp_path / "gpu-tests.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite tests="5" failures="1" errors="0" skipped="2">'
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase><testcase name="c"/>'
        '<testcase name="d"><skipped message="needs a CUDA GPU"/></testcase>'
        '<testcase name="e"><skipped message="Skipped: needs a CUDA GPU"/></testcase></testsuite></testsuites>'
    )
    assert gpucheck.junit_counts((tmp_path / "gpu-tests.xml").read_text()) == {"passed": 2, "failed": 1, "skipped": 2}
    assert gpucheck.skip_reasons(tmp_path) == {"needs a CUDA GPU": 2}


def test_gpu_placement_counts_scans_and_fits_per_worker_kind():
    stream = [
        {"key": "waves-AAPL-1a2b3c4d", "worker": "tcp://gpu"},
        {"key": "waves-MSFT-1a2b3c4d", "worker": "tcp://cpu1"},
        {"key": "waves-all-0badc0de", "worker": "tcp://cpu1"},
        {"key": "fold-03-fit-deadbeef", "worker": "tcp://cpu2"},
        {"key": "load-AAPL-00000000", "worker": "tcp://gpu"},
    ]
    assert gpucheck.placement(stream, {"tcp://gpu"}) == {
        "waves scan": {"gpu": 1, "cpu": 1}, "other": {"gpu": 1, "cpu": 1}, "fit": {"gpu": 0, "cpu": 1}}


def test_gpu_check_research_config_asks_for_local_cuda(tmp_path):
    cfg = gpucheck.research_config(tmp_path, 3, dry_run=True)
    assert (cfg.graph, cfg.cluster.kind, cfg.cluster.n_workers) == ("research", "local-cuda", 3)
    assert cfg.run_dir.parent == tmp_path / "results" and cfg.data.synthetic.symbols == 3


def test_gpu_check_xgboost_step_and_report_with_cpu_rows(tmp_path):
    pytest.importorskip("xgboost")
    from dask_pipeline.models import _xgboost_sees_gpu

    rows = gpucheck.xgboost_fit(dry_run=True, rows_n=1_000)
    assert rows[0]["measure"] == "fit s, CPU (1 thread), 1,000 rows x 22" and rows[0]["value"] > 0
    if not _xgboost_sees_gpu():
        assert rows[1:] == [gpucheck.row("xgboost", "fit s, GPU", "not measured", "skipped", "no GPU visible to XGBoost")]
    table = pd.DataFrame([["1 symbol x 2 windows of 100 bars", "numba", 2, 10, 0.001, 1e4, 0.002, 5.0, "1 core"],
                          ["sp500: 5 symbols x 2 windows", "numba", 10, np.nan, np.nan, np.nan, 0.5, np.nan, "1 core"]],
                         columns=COLUMNS)  # fmt: skip
    node = {"host": "box", "gpus": [], "cpus": 2, "versions": {"numba": "0.68"}}
    meta = {"started": "2026-01-01T00:00:00+00:00", "wall_seconds": 12.0, "dry_run": True}
    gpucheck.write_report(tmp_path, node, rows, table, meta)
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert saved["dry_run"] is True and saved["rows"] == json.loads(json.dumps(rows))
    assert [r["implementation"] for r in saved["bench_waves"]] == ["numba", "numba"]
    md = (tmp_path / "gpu-check.md").read_text().splitlines()
    assert md[0] == "# gpu-check: box, no GPU, 2 cores (dry run)"
    assert "| xgboost | fit s, CPU (1 thread), 1,000 rows x 22 |" in "\n".join(md)
    assert any(line.startswith("| sp500: 5 symbols x 2 windows | numba |") for line in md)
