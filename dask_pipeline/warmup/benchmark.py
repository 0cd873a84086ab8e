"""``dask-pipeline bench first-run``: a user's first run against their second.

A fresh clone, venv and HOME start with an empty numba cache, no demo data and no
matplotlib font cache. The benchmark runs ``dask-pipeline run CONFIG -q`` as a user
would, in a subprocess whose HOME and ``NUMBA_CACHE_DIR`` are empty temporary folders
and whose data and results go to a fresh folder: once cold, then ``warm_repeats`` times
warm (same cache, data and HOME). Per run: the process wall (what the user waits for)
and the run's own wall from ``run.json`` (the graph's compute), and the difference
between them (start-up, warm-up, report, exit). Then it compiles every kernel group one
after another in another empty cache, to say where compile time goes.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dask_pipeline.bench import timed

REPO = Path(__file__).resolve().parents[2]


def _command() -> list[str]:
    """The installed console script beside this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("dask-pipeline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dask_pipeline.cli"]


def bench_first_run(config: str | None = None, warm_repeats: int = 2) -> pd.DataFrame:
    """Process wall and run wall of ``dask-pipeline run CONFIG -q``, cold and warm.

    Parameters
    ----------
    config
        The config to run (default: ``configs/quickstart.yaml`` of this checkout).
    warm_repeats
        Warm runs after the cold one; the table reports each and their median.

    Returns
    -------
    DataFrame
        One row per run (``cold``, ``warm 1``...): ``process_s``, ``run_s``, ``overhead_s``
        (process less run), ``others_cores`` (CPU other programs used meanwhile; clean
        figures need ~0), and ``vs_warm`` (process wall over the warm runs' median). The
        per-group compile seconds are in ``result.attrs["compile"]``.
    """
    config_path = Path(config) if config else REPO / "configs" / "quickstart.yaml"
    rows = []
    with tempfile.TemporaryDirectory(prefix="dask-pipeline-first-run-") as tmp:
        root = Path(tmp)
        env = _cold_env(root)
        results = root / "results"
        argv = [*_command(), "run", str(config_path.resolve()), "-q", "-o", f"output.dir={results}",
                "-o", f"data.root={root / 'data'}"]
        for label in ["cold", *(f"warm {i + 1}" for i in range(warm_repeats))]:
            done: dict[str, subprocess.CompletedProcess] = {}

            def once() -> None:
                done["run"] = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)

            seconds, others = timed(once)
            finished = done["run"]
            if finished.returncode != 0:
                raise RuntimeError(f"{label} run failed ({finished.returncode}): {finished.stderr.strip()[-2000:]}")
            record = json.loads(next(results.glob("*/run.json")).read_text())
            rows.append({"run": label, "process_s": seconds, "run_s": float(record["wall_seconds"]),
                         "others_cores": others, "printed": (finished.stdout + finished.stderr).strip()})
        table = pd.DataFrame(rows)
        table["overhead_s"] = table.process_s - table.run_s
        warm = table[table.run != "cold"]
        if len(warm):
            table["vs_warm"] = table.process_s / statistics.median(warm.process_s)
        table.attrs["compile"] = compile_times(root / "compile-cache")
    return table


def _cold_env(root: Path) -> dict[str, str]:
    home = root / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "DASK_CONFIG")}
    env.update(HOME=str(home), NUMBA_CACHE_DIR=str(root / "numba"), MPLBACKEND="Agg")
    return env


def compile_times(cache: Path) -> pd.DataFrame:
    """Seconds to compile each kernel group from an empty cache, one group at a time in a
    fresh process, and the kernels each compiled (``dask-pipeline warmup --kernels``)."""
    from dask_pipeline.warmup import KERNEL_GROUPS

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    rows = []
    for group in KERNEL_GROUPS:
        start = time.perf_counter()
        done = subprocess.run([*_command(), "warmup", "--groups", group, "--processes", "1", "--kernels"],
                              env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"warmup of {group} failed: {done.stderr.strip()[-2000:]}")
        kernels = [line.split() for line in done.stdout.splitlines() if line.startswith("    ")]
        ours = [k for k in kernels if k[-1].startswith("dask_pipeline.")]
        rows.append({
            "group": group,
            "process_s": time.perf_counter() - start,
            "compile_s": sum(float(k[0]) for k in kernels),
            "kernels": len(ours),
            "slowest": ", ".join(f"{k[-1].rsplit('.', 1)[-1]} {float(k[0]):.1f}" for k in ours[:3]),
        })
    shutil.rmtree(cache, ignore_errors=True)
    return pd.DataFrame(rows)


def format_first_run_table(df: pd.DataFrame) -> str:
    """The runs table, what they printed (``-q``: nothing, when all is well) and the compile table."""
    shown = df.drop(columns=["printed"]).copy()
    for column in ("process_s", "run_s", "overhead_s"):
        shown[column] = shown[column].map("{:.1f}".format)
    shown["others_cores"] = shown.others_cores.map("{:.2f}".format)
    if "vs_warm" in shown:
        shown["vs_warm"] = shown.vs_warm.map("{:.2f}x".format)
    text = shown.to_string(index=False)
    for _, row in df.iterrows():
        text += f"\n{row['run']} printed: {row['printed'] or '(nothing)'}"
    compiled = df.attrs.get("compile")
    if compiled is not None and len(compiled):
        shown = compiled.assign(process_s=compiled.process_s.map("{:.1f}".format),
                                compile_s=compiled.compile_s.map("{:.1f}".format))
        text += "\n\nkernel groups compiled from an empty cache, one at a time:\n" + shown.to_string(index=False)
    return text
