"""The steps of ``cluster/gpu-check.sh``: what a GPU node measures and checks, as functions.

``python -m dask_pipeline.gpucheck OUT [--dry-run]`` runs them in order and writes
``OUT/gpu-check.json`` (every figure) and ``OUT/gpu-check.md`` (one table, for the README):

1. ``probe``: the GPUs (``nvidia-smi``), and what numba-cuda, CuPy, dask-cuda and XGBoost see.
2. ``gpu_tests``: the test suite's GPU, cuda, cupy and XGBoost tests, for real (pytest).
3. ``bench``: ``bench waves`` with the numba, numpy, cupy and cuda rows: one symbol x 500
   windows, and ``sp500``.
4. ``research_run``: ``configs/research.yaml`` on a ``local-cuda`` cluster; every
   ``waves-<S>`` task must have run on a GPU worker and every fit task on a CPU worker
   (from the task stream, and as recorded in ``stages.json`` / ``run.json``), and the GPU
   worker's ``waves.backend: auto`` must resolve to ``cuda``.
5. ``xgboost_fit``: one pooled-size XGBoost fit on the CPU and on the GPU: seconds, the
   device the booster reports, whether a second GPU fit repeats the first bit for bit, and
   how far GPU predictions are from CPU ones.

Each step returns rows ``{step, measure, value, status, detail}`` (status ``ok``,
``failed`` or ``skipped``); a step that raises becomes one ``failed`` row and the others
still run. ``--dry-run`` rehearses every step on a machine without a GPU at small sizes:
the CPU rows are real, the GPU rows say ``skipped``. The exit status is 1 when a row
failed, else 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The tests a GPU node runs for real (they skip or simulate elsewhere).
GPU_TEST_KEYWORDS = "cuda or gpu or cupy or xgboost"
GPU_TEST_PATHS = ("tests/waves", "tests/test_models.py", "tests/test_graph.py", "tests/graphs/test_wavescan.py",
                  "tests/graphs/test_walkforward.py", "tests/cluster/test_connect.py")  # fmt: skip

Row = dict[str, Any]


def row(step: str, measure: str, value: Any, status: str = "ok", detail: str = "") -> Row:
    """One line of the report."""
    return {"step": step, "measure": measure, "value": value, "status": status, "detail": detail}


# --------------------------------------------------------------------------- 1. probe


def nvidia_smi() -> list[dict[str, str]]:
    """The GPUs ``nvidia-smi`` lists (name, memory, driver), or none without it."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return gpus


def probe(dry_run: bool = False) -> tuple[dict[str, Any], list[Row]]:
    """What this node has: GPUs, and whether each GPU library sees one.

    A dry run installs no CUDA libraries (no CuPy, no dask-cuda), so even on a node with a
    GPU its GPU-library rows are ``skipped``, not failed: only the GPUs row is measured.
    """
    from importlib.metadata import PackageNotFoundError, version

    from dask_pipeline.cluster import visible_gpus
    from dask_pipeline.models import MODELS
    from dask_pipeline.waves.backends import cuda_status, get_backend

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    gpus = nvidia_smi()
    node = {
        "host": platform.node(),
        "gpus": gpus,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {n: installed(n) for n in ("dask_pipeline", "numba", "numba-cuda", "cupy-cuda12x", "dask-cuda",
                                                  "xgboost", "dask", "distributed")},
        "numba_cuda": cuda_status(),
        "cupy_gpus": visible_gpus(),
        "waves_auto": get_backend("auto").name,
        "xgboost_gpu": _xgboost_gpu() if MODELS["xgboost"].installed() else "xgboost is not installed",
    }  # fmt: skip
    has_gpu = bool(gpus)
    checked = has_gpu and not dry_run
    why = "" if checked else "dry run: the GPU libraries are not installed" if has_gpu else \
        "no GPU: the GPU rows below are not measured"  # fmt: skip

    def gpu_row(measure: str, value: Any, works: bool) -> Row:
        return row("probe", measure, value, ("ok" if works else "failed") if checked else "skipped")

    rows = [
        row("probe", "GPUs (nvidia-smi)", ", ".join(f"{g['name']} {g['memory']}" for g in gpus) or "none",
            "ok" if has_gpu else "skipped", why),
        gpu_row("numba-cuda", node["numba_cuda"], node["numba_cuda"] == "gpu"),
        gpu_row("CuPy devices", node["cupy_gpus"], bool(node["cupy_gpus"])),
        # Without a GPU, auto must fall back to numba: a check either way, except in a dry run on a GPU node.
        row("probe", "waves.backend auto", node["waves_auto"],
            "skipped" if has_gpu and dry_run else
            "ok" if node["waves_auto"] == ("cuda" if has_gpu else "numba") else "failed"),
        gpu_row("XGBoost on the GPU", node["xgboost_gpu"], node["xgboost_gpu"] == "yes"),
        gpu_row("dask-cuda", node["versions"]["dask-cuda"], node["versions"]["dask-cuda"] != "not installed"),
    ]  # fmt: skip
    return node, rows


def _xgboost_gpu() -> str:
    from dask_pipeline.models import _xgboost_sees_gpu

    return "yes" if _xgboost_sees_gpu() else "no GPU visible to XGBoost"


# --------------------------------------------------------------------------- 2. tests


def gpu_tests(out: Path, timeout: float = 300) -> list[Row]:
    """Run the GPU, cuda, cupy and XGBoost tests (``GPU_TEST_KEYWORDS``); passed/failed/skipped from JUnit XML."""
    report = out / "gpu-tests.xml"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}  # a GPU runs them for real
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", GPU_TEST_KEYWORDS,
           f"--junitxml={report}", *GPU_TEST_PATHS]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    (out / "gpu-tests.log").write_text(done.stdout + done.stderr)
    counts = junit_counts(report.read_text()) if report.exists() else {}
    status = "ok" if done.returncode == 0 and counts.get("failed", 0) == 0 else "failed"
    detail = f"pytest -k '{GPU_TEST_KEYWORDS}', {seconds:.0f} s; log: gpu-tests.log"
    return [
        row("tests", "passed / failed / skipped",
            f"{counts.get('passed', 0)} / {counts.get('failed', 0)} / {counts.get('skipped', 0)}", status, detail),
        *[row("tests", "skip reason", f"{n} x {reason}", "skipped") for reason, n in skip_reasons(out).items()],
    ]  # fmt: skip


def junit_counts(xml: str) -> dict[str, int]:
    """``passed``, ``failed`` (failures + errors) and ``skipped`` from a pytest JUnit XML report."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped}


def skip_reasons(out: Path) -> dict[str, int]:
    """Skip reasons of the GPU test run (from its JUnit XML), counted."""
    import xml.etree.ElementTree as ET

    report = out / "gpu-tests.xml"
    if not report.exists():
        return {}
    found: dict[str, int] = {}
    for skipped in ET.parse(report).getroot().iter("skipped"):
        reason = re.sub(r"^Skipped: ", "", skipped.get("message", ""))
        found[reason] = found.get(reason, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


# --------------------------------------------------------------------------- 3. bench


def bench(dry_run: bool) -> tuple[Any, list[Row]]:
    """``bench waves`` on every backend this node has; the table, and a row per implementation."""
    from dask_pipeline.waves.backends import cuda_status, gpu_available
    from dask_pipeline.waves.benchmark import bench_waves

    backends = ["numpy", "numba", *(["cupy"] if gpu_available() else [])]
    if cuda_status() in ("gpu", "simulator"):
        backends.append("cuda")
    sizes = (dict(windows=2, window_bars=100, reference_windows=2, sp500_windows=2, measure_symbols=1, repeats=1)
             if dry_run else dict(windows=500, window_bars=500, reference_windows=25, measure_symbols=10, repeats=3))
    table = bench_waves(**sizes, backends=backends)
    rows = []
    for r in table.itertuples(index=False):
        seconds = r.scan_s if r.workload.startswith("sp500") else r.scoring_s
        measure = f"{r.workload}: {r.implementation} " + ("scan s" if r.workload.startswith("sp500") else "scoring s")
        rows.append(row("bench", measure, float(f"{seconds:.4g}"), "ok", r.note))
    for name in ("cupy", "cuda"):
        if name not in backends or (name == "cuda" and cuda_status() == "simulator"):
            rows.append(row("bench", f"{name} rows", "not measured", "skipped", "no GPU visible to it"))
    return table, rows


# --------------------------------------------------------------------------- 4. research run


def research_config(out: Path, n_workers: int, dry_run: bool) -> Any:
    """``configs/research.yaml`` on a ``local-cuda`` cluster of ``n_workers``, writing under ``out``."""
    from dask_pipeline.config import load_config

    overrides = [
        "cluster.kind=local-cuda", f"cluster.n_workers={n_workers}", "cluster.dashboard=false",
        f"output.dir={out / 'results'}", f"data.root={out / 'data' / 'quickstart'}",
        f"features.cache_dir={out / 'cache'}",
    ]  # fmt: skip
    if dry_run:  # 3 symbols and 3 folds: the same steps in seconds
        overrides += ["data.synthetic.symbols=3", "data.synthetic.start=2016-01-01", "data.synthetic.end=2019-12-31"]
    return load_config(REPO / "configs" / "research.yaml", overrides)


def placement(task_stream: list[dict[str, Any]], gpu_workers: set[str]) -> dict[str, dict[str, int]]:
    """Tasks per kind (``waves-<S>`` scans, ``fit``, other) on GPU and on CPU workers."""
    counts: dict[str, dict[str, int]] = {}
    for record in task_stream:
        name = str(record["key"]).rsplit("-", 1)[0]  # drop the token
        kind = "waves scan" if name.startswith("waves-") and name != "waves-all" else \
            "fit" if name.endswith("-fit") else "other"  # fmt: skip
        where = "gpu" if record.get("worker") in gpu_workers else "cpu"
        counts.setdefault(kind, {"gpu": 0, "cpu": 0})[where] += 1
    return counts


def research_run(out: Path, dry_run: bool, n_workers: int | None = None) -> list[Row]:
    """The research study on ``local-cuda``, and where its scans and fits ran."""
    from distributed import get_task_stream

    from dask_pipeline.cluster import connect, gpu_worker_addresses
    from dask_pipeline.runner import run

    n_workers = n_workers or (2 if dry_run else min(16, os.cpu_count() or 2))
    cfg = research_config(out, n_workers, dry_run)
    lines: list[str] = []
    started = time.perf_counter()
    with connect(cfg.cluster) as client:
        gpu_workers = set(gpu_worker_addresses(client))
        auto = client.run(_waves_auto, workers=sorted(gpu_workers)) if gpu_workers else {}
        with get_task_stream(client) as stream:
            result = run(cfg, client=client, echo=lines.append)
    seconds = time.perf_counter() - started
    (out / "research-run.log").write_text("\n".join(lines) + "\n")
    stages = json.loads((result.run_dir / "stages.json").read_text())
    record = json.loads((result.run_dir / "run.json").read_text())
    where = placement(stream.data, gpu_workers)
    scans, fits = where.get("waves scan", {"gpu": 0, "cpu": 0}), where.get("fit", {"gpu": 0, "cpu": 0})
    recorded_gpu = set(record["cluster"].get("gpu_workers", []))
    fit_on_gpu = sum(n for w, n in stages.get("fit", {}).get("workers", {}).items() if w in recorded_gpu)
    has_gpu = bool(gpu_workers)
    check = "ok" if has_gpu else "skipped"
    why = "" if has_gpu else f"no GPU worker ({record['cluster'].get('note') or 'local-cuda fell back to local'})"
    return [
        row("research", "wall s (cluster start, run, results)", round(seconds, 1), "ok",
            f"{record['cluster']['n_workers']} workers, {len(gpu_workers)} GPU; results: {result.run_dir}"),
        row("research", "waves stage wall s", stages.get("waves", {}).get("wall_seconds"), "ok"),
        row("research", "waves-<S> scans on the GPU worker", f"{scans['gpu']} of {scans['gpu'] + scans['cpu']}",
            (check if scans["cpu"] == 0 else "failed") if has_gpu else "skipped", why),
        row("research", "fit tasks on CPU workers", f"{fits['cpu']} of {fits['gpu'] + fits['cpu']}",
            "ok" if fits["gpu"] == 0 and fit_on_gpu == 0 else "failed",
            "task stream and stages.json agree" if fit_on_gpu == fits["gpu"] else "stages.json disagrees"),
        row("research", "waves.backend auto on the GPU worker", ", ".join(sorted(set(auto.values()))) or "-",
            ("ok" if set(auto.values()) == {"cuda"} else "failed") if has_gpu else "skipped", why),
    ]  # fmt: skip


def _waves_auto() -> str:
    from dask_pipeline.waves.backends import get_backend

    return get_backend("auto").name


# --------------------------------------------------------------------------- 5. XGBoost


def xgboost_fit(dry_run: bool, rows_n: int | None = None) -> list[Row]:
    """An XGBoost fit (``balanced`` preset) on the CPU and on the GPU: seconds, device, repeatability, agreement."""
    import numpy as np

    from dask_pipeline.models import MODELS, ModelConfig, _xgboost_sees_gpu, fit_fold

    if not MODELS["xgboost"].installed():
        return [row("xgboost", "fit", "xgboost is not installed", "failed", "pip install -e '.[xgboost]'")]
    n = rows_n or (5_000 if dry_run else 200_000)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 22)).astype(np.float32)
    y = 0.01 * X[:, 0] - 0.005 * X[:, 3] + rng.normal(scale=0.02, size=n)
    cut = int(n * 0.8)

    def fit(device: str) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        pred, _ = fit_fold(X[:cut], y[:cut], X[cut:], y[cut:], ModelConfig(name="xgboost", device=device),
                           "regression", 7, 0)  # fmt: skip
        return pred, time.perf_counter() - started

    cpu, cpu_s = fit("cpu")
    rows = [row("xgboost", f"fit s, CPU (1 thread), {n:,} rows x 22", round(cpu_s, 3))]
    if not _xgboost_sees_gpu():
        return rows + [row("xgboost", "fit s, GPU", "not measured", "skipped", "no GPU visible to XGBoost")]
    gpu, gpu_s = fit("cuda")
    again, _ = fit("cuda")
    return rows + [
        row("xgboost", f"fit s, GPU, {n:,} rows x 22", round(gpu_s, 3), "ok", f"{cpu_s / gpu_s:.1f}x the CPU fit"),
        row("xgboost", "GPU fit repeats bit for bit", gpu.tobytes() == again.tobytes(),
            "ok" if gpu.tobytes() == again.tobytes() else "failed"),
        row("xgboost", "GPU vs CPU predictions: max |diff|, correlation",
            f"{np.max(np.abs(gpu - cpu)):.3g}, {np.corrcoef(gpu, cpu)[0, 1]:.4f}", "ok",
            "different models by design (GPU histograms sum in another order)"),
    ]  # fmt: skip


# --------------------------------------------------------------------------- report


def write_report(out: Path, node: dict[str, Any], rows: list[Row], bench_table: Any, meta: dict[str, Any]) -> None:
    """``gpu-check.json`` (node, rows, bench table, meta) and ``gpu-check.md`` (the tables)."""
    from dask_pipeline.results import write_text
    from dask_pipeline.waves.benchmark import format_waves_table

    bench_rows = [] if bench_table is None else json.loads(bench_table.to_json(orient="records"))
    payload = {**meta, "node": node, "rows": rows, "bench_waves": bench_rows}
    write_text(out / "gpu-check.json", json.dumps(payload, indent=2, default=str) + "\n")
    gpus = ", ".join(g["name"] for g in node.get("gpus", [])) or "no GPU"
    lines = [
        f"# gpu-check: {node.get('host', '?')}, {gpus}, {node.get('cpus', '?')} cores"
        f"{' (dry run)' if meta.get('dry_run') else ''}",
        "",
        f"{meta.get('started', '')}, {meta.get('wall_seconds', 0):.0f} s; versions: "
        + ", ".join(f"{k} {v}" for k, v in node.get("versions", {}).items()),
        "",
        "| step | measure | value | status | detail |",
        "| --- | --- | ---: | --- | --- |",
        *(f"| {r['step']} | {r['measure']} | {r['value']} | {r['status']} | {r['detail']} |" for r in rows),
    ]
    if bench_table is not None:
        lines += ["", "`bench waves`:", "", format_waves_table(bench_table)]
    write_text(out / "gpu-check.md", "\n".join(lines) + "\n")


STEPS = ("probe", "tests", "bench", "research", "xgboost")


def _simulate_cuda_without_a_driver() -> None:
    """A dry run without a CUDA driver walks the cuda backend's code under numba's simulator."""
    from dask_pipeline.waves.backends import _cuda_driver_present

    if "NUMBA_ENABLE_CUDASIM" not in os.environ and "numba.cuda" not in sys.modules and not _cuda_driver_present():
        from numba.core.config import reload_config

        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        reload_config()


def main(argv: list[str] | None = None) -> int:
    """Run the steps, write the report, print its table; 1 when a check failed, else 0."""
    parser = argparse.ArgumentParser(prog="python -m dask_pipeline.gpucheck", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="rehearse on a machine without a GPU, small sizes")
    parser.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS[1:])}")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.dry_run:
        _simulate_cuda_without_a_driver()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    rows: list[Row] = []
    node: dict[str, Any] = {}
    bench_table = None

    def step(name: str, func: Callable[[], Any]) -> Any:
        if name in skip:
            rows.append(row(name, "step", "left out (--skip)", "skipped"))
            return None
        print(f"gpu-check: {name} ...", flush=True)
        t = time.perf_counter()
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - one failed step is a row; the rest still run
            (out / f"{name}-error.log").write_text(traceback.format_exc())
            rows.append(row(name, "step", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                            "failed", f"after {time.perf_counter() - t:.0f} s; traceback: {name}-error.log"))
            return None

    found = step("probe", lambda: probe(args.dry_run))
    if found is not None:
        node, probe_rows = found
        rows += probe_rows
    rows += step("tests", lambda: gpu_tests(out)) or []
    measured = step("bench", lambda: bench(args.dry_run))
    if measured is not None:
        bench_table, bench_rows = measured
        rows += bench_rows
    rows += step("research", lambda: research_run(out, args.dry_run)) or []
    rows += step("xgboost", lambda: xgboost_fit(args.dry_run)) or []
    meta = {"started": started, "wall_seconds": round(time.perf_counter() - t0, 1), "dry_run": args.dry_run}
    write_report(out, node, rows, bench_table, meta)
    failed = [r for r in rows if r["status"] == "failed"]
    print((out / "gpu-check.md").read_text())
    print(f"gpu-check: {len(rows)} rows, {len(failed)} failed, {meta['wall_seconds']:.0f} s; "
          f"{out / 'gpu-check.md'} and {out / 'gpu-check.json'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
