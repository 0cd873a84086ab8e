"""Where a run's time and memory went, per stage, and the thresholds it is held to.

Everything here comes from the scheduler, not from guesses: task counts and compute
spans from the task stream, transfers from its ``transfer`` start/stops (their bytes
from the ``nbytes`` of the dependencies fetched from another worker), and worker memory
from the scheduler's heartbeat metrics, sampled by ``MemorySampler`` during the compute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator

from dask_pipeline.schema import Section

SAMPLE_SECONDS = 0.5


class MonitorConfig(Section):
    """Thresholds a run is checked against once it has computed.

    A crossing prints a warning and is recorded in ``run.json`` (``thresholds``);
    ``fail_on_threshold`` makes the run fail (exit 2) after its files are written.
    """

    max_stage_seconds: float | None = Field(None, gt=0)
    max_worker_memory: str | None = None
    min_metric: dict[str, float] = {}
    fail_on_threshold: bool = False

    @field_validator("max_worker_memory")
    @classmethod
    def _is_size(cls, value: str | None) -> str | None:
        if value is not None:
            from dask.utils import parse_bytes

            try:
                parse_bytes(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{value!r} is not a size (expected e.g. 4GiB or 500MB)") from exc
        return value


class MemorySampler:
    """A background thread recording each worker's memory every ``interval`` seconds.

    ``samples`` holds ``(time, worker address, bytes)``. The figure is the one the
    scheduler has from the worker's last heartbeat, so it lags by up to a heartbeat.
    """

    def __init__(self, client: Any, interval: float = SAMPLE_SECONDS):
        self.client = client
        self.interval = interval
        self.samples: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the last heartbeat covers the end of the compute

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _sample(self) -> None:
        try:
            workers = self.client.scheduler_info()["workers"]
        except Exception:  # noqa: BLE001 - a sample lost to a closing client is only a gap
            return
        now = time.time()
        for address, info in workers.items():
            memory = (info.get("metrics") or {}).get("memory")
            if memory is not None:
                self.samples.append((now, address, int(memory)))


def stage_times(
    task_stream: list[dict[str, Any]],
    stages: dict[str, str],
    dependencies: dict[str, Iterable[str]] | None = None,
    memory: list[tuple[float, str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The per-stage table of a run.

    Parameters
    ----------
    task_stream
        ``get_task_stream`` records (key, worker, nbytes, startstops).
    stages
        Key -> stage (``stages_of``); a key not in it counts under its first word.
    dependencies
        Key -> the keys it depends on, to size its transfers; None counts no bytes.
    memory
        ``MemorySampler.samples``: a sample counts for every stage with a task computing
        on that worker at that moment.

    Returns
    -------
    dict
        Per stage: ``tasks``, ``wall_seconds`` (first start to last stop),
        ``compute_seconds`` (summed), ``share`` (of the run's summed compute),
        ``transfer_seconds``, ``transfer_bytes`` and ``peak_worker_memory`` (bytes or None).
    """
    dependencies = dependencies or {}
    placed = {str(r["key"]): (r.get("worker"), int(r.get("nbytes") or 0)) for r in task_stream}
    spans: dict[str, list[tuple[float, float]]] = {}
    on_worker: dict[str, list[tuple[float, float, str]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for record in task_stream:
        key = str(record["key"])
        stage = stages.get(key, key.split("-", 1)[0])
        startstops = record.get("startstops", ())
        computes = [(s["start"], s["stop"]) for s in startstops if s.get("action") == "compute"]
        transfers = [s for s in startstops if s.get("action") == "transfer"]
        if not computes:
            continue
        row = rows.setdefault(stage, {"tasks": 0, "transfer_seconds": 0.0, "transfer_bytes": 0})
        row["tasks"] += 1
        spans.setdefault(stage, []).extend(computes)
        on_worker.setdefault(record.get("worker"), []).extend((a, b, stage) for a, b in computes)
        if transfers:
            row["transfer_seconds"] += sum(s["stop"] - s["start"] for s in transfers)
            worker = record.get("worker")
            row["transfer_bytes"] += sum(placed[d][1] for d in map(str, dependencies.get(key, ()))
                                         if d in placed and placed[d][0] != worker)
    peaks = _memory_peaks(memory or [], on_worker)
    total = sum(b - a for items in spans.values() for a, b in items) or 1.0
    table = {}
    for stage in sorted(rows):
        items = spans[stage]
        compute = sum(b - a for a, b in items)
        table[stage] = {
            "tasks": rows[stage]["tasks"],
            "wall_seconds": round(max(b for _, b in items) - min(a for a, _ in items), 4),
            "compute_seconds": round(compute, 4),
            "share": round(compute / total, 4),
            "transfer_seconds": round(rows[stage]["transfer_seconds"], 4),
            "transfer_bytes": rows[stage]["transfer_bytes"],
            "peak_worker_memory": peaks.get(stage),
        }
    return table


def _memory_peaks(samples: list[tuple[float, str, int]],
                  on_worker: dict[str, list[tuple[float, float, str]]]) -> dict[str, int]:
    peaks: dict[str, int] = {}
    for t, worker, memory in samples:
        for start, stop, stage in on_worker.get(worker, ()):
            if start <= t <= stop:
                peaks[stage] = max(peaks.get(stage, 0), memory)
    return peaks


def task_dependencies(outputs: dict[str, Any]) -> dict[str, set[str]]:
    """Key -> the keys it depends on, over every output's graph."""
    deps: dict[str, set[str]] = {}
    for value in outputs.values():
        graph = value.__dask_graph__()
        if hasattr(graph, "get_all_dependencies"):
            for key, found in graph.get_all_dependencies().items():
                deps.setdefault(str(key), set()).update(map(str, found))
    return deps


def check_thresholds(table: dict[str, dict[str, Any]], monitor: MonitorConfig,
                     metrics: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The thresholds the run crossed, each with a one-line ``message``.

    Parameters
    ----------
    table
        ``stage_times``'s table.
    monitor
        The config's ``monitor`` section.
    metrics
        Portfolio metrics, mean over folds (``portfolio_metrics``), for ``min_metric``.
    """
    from dask.utils import format_bytes, parse_bytes

    crossed = []
    if monitor.max_stage_seconds is not None:
        for stage, row in table.items():
            if row["wall_seconds"] > monitor.max_stage_seconds:
                crossed.append({
                    "threshold": "max_stage_seconds", "stage": stage, "value": row["wall_seconds"],
                    "limit": monitor.max_stage_seconds,
                    "message": f"stage {stage} took {row['wall_seconds']:.1f} s > monitor.max_stage_seconds "
                               f"{monitor.max_stage_seconds:g}",
                })
    if monitor.max_worker_memory is not None:
        limit = parse_bytes(monitor.max_worker_memory)
        for stage, row in table.items():
            peak = row.get("peak_worker_memory")
            if peak is not None and peak > limit:
                crossed.append({
                    "threshold": "max_worker_memory", "stage": stage, "value": peak, "limit": limit,
                    "message": f"stage {stage} peaked at {format_bytes(peak)} worker memory > "
                               f"monitor.max_worker_memory {monitor.max_worker_memory}",
                })
    for name, minimum in sorted(monitor.min_metric.items()):
        value = (metrics or {}).get(name)
        if value is None:
            continue
        if not value >= minimum:
            crossed.append({
                "threshold": "min_metric", "metric": name, "value": value, "limit": minimum,
                "message": f"portfolio {name} {value:.4g} (mean over folds) < monitor.min_metric.{name} {minimum:g}",
            })
    return crossed


def portfolio_metrics(folds: Any) -> dict[str, float]:
    """Mean over folds of each numeric column of the ``portfolio`` rows of ``folds.parquet``."""
    if folds is None or "curve" not in getattr(folds, "columns", ()):
        return {}
    rows = folds[folds["curve"] == "portfolio"].select_dtypes("number").drop(columns=["fold"], errors="ignore")
    return {k: float(v) for k, v in rows.mean().items()}


def format_table(table: dict[str, dict[str, Any]]) -> str:
    """The stage table as aligned text lines."""
    from dask.utils import format_bytes

    header = f"{'stage':<12} {'tasks':>6} {'compute s':>10} {'wall s':>8} {'share':>6} {'transfer':>10} {'peak mem':>10}"
    lines = [header]
    for stage, row in table.items():
        peak = row.get("peak_worker_memory")
        lines.append(
            f"{stage:<12} {row['tasks']:>6} {row['compute_seconds']:>10.2f} {row['wall_seconds']:>8.2f} "
            f"{row['share']:>6.1%} {format_bytes(row['transfer_bytes']):>10} "
            f"{format_bytes(peak) if peak is not None else '-':>10}"
        )
    return "\n".join(lines)
