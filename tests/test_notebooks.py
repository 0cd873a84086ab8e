"""The notebooks run top to bottom (nbclient) on the small store, as committed: without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01-quickstart", "02-dashboard-monitoring", "03-scale-out", "04-extend"]


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A ``python3`` kernelspec running this interpreter, found before any user-installed one."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python",
    }))
    return root


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, small_store, kernel_path, dask_processes, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "commit notebooks without outputs"
    assert "DASK_PIPELINE_NOTEBOOK_OVERRIDES" in code[0].source

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("DASK_PIPELINE_NOTEBOOK_OVERRIDES", json.dumps([
        f"data.root={small_store}", "preset=blank", "folds.train=252", "folds.test=126",
        "cluster.n_workers=1", "cluster.dashboard=false", f"features.cache_dir={tmp_path / 'cache'}",
        f"output.dir={tmp_path / 'results'}", f"output.run_name={name}",
    ]))
    # 03 runs against a real scheduler with two worker processes, as on a cluster.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dask_processes.address)
    NotebookClient(nb, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()

    run_dir = tmp_path / "results" / name
    assert (run_dir / "report.html").is_file() and (run_dir / "stages.json").is_file()
    outputs = "".join(json.dumps(cell.get("outputs", [])) for cell in nb.cells if cell.cell_type == "code")
    assert "Error" not in outputs and "Traceback" not in outputs
