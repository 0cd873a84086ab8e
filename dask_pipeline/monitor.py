"""Where a run's time and memory went, per stage, and the thresholds it is held to.

Everything here comes from the scheduler, not from guesses: task counts and compute
spans from the task stream, transfers from its ``transfer`` start/stops (their bytes
from the ``nbytes`` of the dependencies fetched from another worker), and worker memory
from the scheduler's heartbeat metrics, sampled by ``StageMonitor`` during the compute.
``StageMonitor`` also drives the live progress per stage (``RichProgress`` on a
terminal, ``LineProgress`` elsewhere).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator

from dask_pipeline.schema import Section

SAMPLE_SECONDS = 0.5
#: How long a run waits, at most, for the workers' heartbeats after its last task.
FINAL_HEARTBEAT_WAIT = 3.0


class MonitorConfig(Section):
    """Thresholds a run is checked against once it has computed.

    ``max_stage_seconds``: a stage's wall seconds; ``max_worker_memory``: a stage's peak
    worker memory (bytes, or a size such as ``4GiB``); ``min_metric``: portfolio metrics
    (mean over folds of ``folds.parquet``) such as ``{sharpe: 0.5}``. A crossing prints a
    warning and is recorded in ``run.json`` (``thresholds``); ``fail_on_threshold`` makes
    the run fail (``ThresholdError``, exit 2) after all its files are written.
    """

    max_stage_seconds: float | None = Field(None, gt=0)
    max_worker_memory: int | str | None = None
    min_metric: dict[str, float] = {}
    fail_on_threshold: bool = False

    @field_validator("max_worker_memory")
    @classmethod
    def _is_size(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            from dask.utils import parse_bytes

            try:
                size = parse_bytes(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{value!r} is not a size (expected bytes or e.g. 4GiB, 500MB)") from exc
            if size <= 0:
                raise ValueError(f"{value!r} is not a positive size")
        return value


class StageMonitor:
    """Follow a compute from the scheduler: tasks per stage as they finish, and worker memory.

    A scheduler plugin counts, per ``stage`` annotation (else the key's first word, as
    ``graph.task`` names stages), the tasks that entered the scheduler and those that
    finished, and keeps each task's stage and dependencies. A background thread polls it
    every ``interval`` seconds together with each worker's memory from its last heartbeat
    and hands the counts to ``display`` (``RichProgress``, ``LineProgress`` or None).

    Attributes, complete after the ``with`` block: ``samples`` ``(time, worker, bytes)``
    (time: when the scheduler received the heartbeat), ``counts`` stage -> ``(done,
    total)``, ``stages`` key -> stage, ``dependencies`` key -> keys, and ``error``: why
    the scheduler could not be followed (None when it was), in which case the rest stay empty.
    """

    def __init__(self, client: Any, display: Any = None, interval: float = SAMPLE_SECONDS):
        import uuid

        self.client = client
        self.display = display
        self.interval = interval
        self.name = f"dask-pipeline-stages-{uuid.uuid4().hex[:8]}"
        self.samples: list[tuple[float, str, int]] = []
        self.counts: dict[str, tuple[int, int]] = {}
        self.stages: dict[str, str] = {}
        self.dependencies: dict[str, list[str]] = {}
        self.error: str | None = None
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stage-monitor", daemon=True)

    def __enter__(self) -> StageMonitor:
        try:
            self.client.register_plugin(_stage_counter(self.name), name=self.name)
        except Exception as exc:  # noqa: BLE001 - e.g. a scheduler that refuses pickled plugins
            self.error = f"{type(exc).__name__}: {exc}"
            return self
        if self.display is not None:
            self.display.start()
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.error is not None:
            return
        self._stop.set()
        self._thread.join()
        try:
            if exc_type is None:  # a failed compute reports its error without waiting
                self._last_heartbeats()
            final = self.client.run_on_scheduler(_stage_record(self.name, final=True))
            self.client.unregister_scheduler_plugin(self.name)
        except Exception as err:  # noqa: BLE001 - a closing cluster: keep what the polls had
            self.error = f"{type(err).__name__}: {err}"
        else:
            self._take(final)
            self.stages = final["stages"]
            self.dependencies = final["dependencies"]
        if self.display is not None:
            self.display.stop(self.counts)

    def _loop(self) -> None:
        poll = _stage_record(self.name, final=False)
        while not self._stop.wait(self.interval):
            try:
                self._take(self.client.run_on_scheduler(poll))
            except Exception:  # noqa: BLE001 - a poll lost to a busy or closing scheduler is only a gap
                continue
            if self.display is not None:
                self.display.update(self.counts)

    def _last_heartbeats(self) -> None:
        # The last tasks (an aggregate, often the largest) end between heartbeats: wait for
        # one more from every worker, so their memory is sampled too.
        poll = _stage_record(self.name, final=False)
        ended = self.client.run_on_scheduler(poll)["now"]
        deadline = time.monotonic() + FINAL_HEARTBEAT_WAIT
        while True:
            record = self.client.run_on_scheduler(poll)
            self._take(record)
            if all(seen > ended for seen, _, _ in record["memory"]) or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def _take(self, record: dict[str, Any]) -> None:
        self.counts = {stage: (done, total) for stage, (done, total) in record["counts"].items()}
        for seen, worker, memory in record["memory"]:
            # One heartbeat is one sample, however many polls see it.
            if memory is not None and self._seen.get(worker) != seen:
                self._seen[worker] = seen
                self.samples.append((seen, worker, int(memory)))


def _stage_counter(name: str) -> Any:
    """The scheduler plugin behind ``StageMonitor``.

    Defined inside a function so that it is pickled by value: the scheduler then needs
    only ``distributed``, not this package (a remote scheduler may run from a bare image).
    """
    from distributed.diagnostics.plugin import SchedulerPlugin

    queued = ("waiting", "queued", "no-worker", "processing")

    class StageCounter(SchedulerPlugin):
        def __init__(self) -> None:
            self.name = name
            self.scheduler: Any = None
            self.stage: dict[str, str] = {}
            self.dependencies: dict[str, list[str]] = {}
            self.done: set[str] = set()
            self.counts: dict[str, list[int]] = {}
            self.began: dict[str, int] = {}

        async def start(self, scheduler: Any) -> None:
            self.scheduler = scheduler

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            name = str(key)
            stage = self.stage.get(name)
            if stage is None:
                # Counted once it is to be computed: scattered data never is.
                if finish not in queued:
                    return
                ts = self.scheduler.tasks.get(key)
                stage = str(((ts.annotations if ts is not None else None) or {}).get("stage")
                            or name.split("-", 1)[0])
                self.stage[name] = stage
                self.dependencies[name] = [str(d.key) for d in ts.dependencies] if ts is not None else []
                self.counts.setdefault(stage, [0, 0])[1] += 1
            if finish == "processing" and stage not in self.began:
                self.began[stage] = len(self.began)
            if finish in ("memory", "erred") and name not in self.done:
                self.done.add(name)
                self.counts[stage][0] += 1

    return StageCounter()


def _stage_record(name: str, final: bool) -> Any:
    """A function for ``run_on_scheduler`` reading ``name``'s counts and the workers' memory (by value, as above)."""

    def record(dask_scheduler: Any) -> dict[str, Any]:
        import time

        plugin = dask_scheduler.plugins[name]
        # Stages in the order their first task started, then those still waiting.
        order = sorted(plugin.counts, key=lambda stage: plugin.began.get(stage, len(plugin.began)))
        found: dict[str, Any] = {
            "now": time.time(),
            "counts": {stage: tuple(plugin.counts[stage]) for stage in order},
            "memory": [(ws.last_seen, ws.address, (ws.metrics or {}).get("memory"))
                       for ws in dask_scheduler.workers.values()],
        }
        if final:
            found["stages"] = dict(plugin.stage)
            found["dependencies"] = dict(plugin.dependencies)
        return found

    return record


class LineProgress:
    """Progress as plain lines (a log, a pipe, a notebook): one line every ``every`` seconds while it changes."""

    def __init__(self, echo: Any = print, every: float = 5.0):
        self.echo = echo
        self.every = every
        self._last: tuple[float, Any] = (0.0, None)

    def start(self) -> None:
        self._last = (time.monotonic(), None)

    def update(self, counts: dict[str, tuple[int, int]]) -> None:
        shown_at, shown = self._last
        if counts != shown and time.monotonic() - shown_at >= self.every:
            self._show(counts)

    def stop(self, counts: dict[str, tuple[int, int]]) -> None:
        if counts and counts != self._last[1]:
            self._show(counts)

    def _show(self, counts: dict[str, tuple[int, int]]) -> None:
        self._last = (time.monotonic(), dict(counts))
        self.echo("progress: " + ", ".join(f"{stage} {done}/{total}" for stage, (done, total) in counts.items()))


class RichProgress:
    """A live bar per stage on a terminal (rich); ``console`` defaults to stdout."""

    def __init__(self, console: Any = None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console)
        self._bars: dict[str, Any] = {}

    def start(self) -> None:
        self.progress.start()

    def update(self, counts: dict[str, tuple[int, int]]) -> None:
        for stage, (done, total) in counts.items():
            if stage not in self._bars:
                self._bars[stage] = self.progress.add_task(stage, total=total)
            self.progress.update(self._bars[stage], completed=done, total=total)

    def stop(self, counts: dict[str, tuple[int, int]]) -> None:
        self.update(counts)
        self.progress.stop()


def progress_display(progress: bool, echo: Any = print) -> LineProgress | RichProgress | None:
    """The display ``run(progress=...)`` uses: rich bars on a terminal, plain lines elsewhere, None when off."""
    import sys

    if not progress:
        return None
    if sys.stdout.isatty():
        return RichProgress()
    return LineProgress(echo)


def stage_times(
    task_stream: list[dict[str, Any]],
    stages: dict[str, str],
    dependencies: dict[str, Iterable[str]] | None = None,
    memory: list[tuple[float, str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The per-stage table of a run, stages in the order they started.

    Parameters
    ----------
    task_stream
        ``get_task_stream`` records (key, worker, nbytes, startstops).
    stages
        Key -> stage (``stages_of``, ``StageMonitor.stages``); a key not in it counts
        under its first word.
    dependencies
        Key -> the keys it depends on, to size its transfers; None counts no bytes. A
        dependency counts once per worker that fetched it.
    memory
        ``StageMonitor.samples``: a sample counts for every stage with a task computing
        on that worker at that moment; a stage whose tasks all ran between two heartbeats
        gets the first sample after each of its tasks (the memory holding its result).

    Returns
    -------
    dict
        Per stage: ``tasks``, ``wall_seconds`` (first start to last stop),
        ``compute_seconds`` (summed), ``share`` (of the run's summed compute),
        ``transfer_seconds``, ``transfer_bytes``, ``peak_worker_memory`` (bytes or None) and
        ``workers``: tasks per worker address (where the stage ran: GPU or CPU workers).
    """
    dependencies = dependencies or {}
    placed = {str(r["key"]): (r.get("worker"), int(r.get("nbytes") or 0)) for r in task_stream}
    fetched: set[tuple[str, Any]] = set()
    spans: dict[str, list[tuple[float, float]]] = {}
    on_worker: dict[str, list[tuple[float, float, str]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for record in sorted(task_stream, key=_first_start):
        key = str(record["key"])
        stage = stages.get(key, key.split("-", 1)[0])
        startstops = record.get("startstops", ())
        computes = [(s["start"], s["stop"]) for s in startstops if s.get("action") == "compute"]
        transfers = [s for s in startstops if s.get("action") == "transfer"]
        if not computes:
            continue
        row = rows.setdefault(stage, {"tasks": 0, "transfer_seconds": 0.0, "transfer_bytes": 0, "workers": {}})
        row["tasks"] += 1
        worker = record.get("worker")
        row["workers"][str(worker)] = row["workers"].get(str(worker), 0) + 1
        spans.setdefault(stage, []).extend(computes)
        on_worker.setdefault(worker, []).extend((a, b, stage) for a, b in computes)
        if transfers:
            row["transfer_seconds"] += sum(s["stop"] - s["start"] for s in transfers)
            remote = {d for d in map(str, dependencies.get(key, ()))
                      if d in placed and placed[d][0] != worker and (d, worker) not in fetched}
            fetched.update((d, worker) for d in remote)
            row["transfer_bytes"] += sum(placed[d][1] for d in remote)
    peaks = _memory_peaks(memory or [], on_worker)
    total = sum(b - a for items in spans.values() for a, b in items) or 1.0
    table = {}
    for stage in rows:
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
            "workers": dict(sorted(rows[stage]["workers"].items())),
        }
    return table


def _first_start(record: dict[str, Any]) -> float:
    return min((s["start"] for s in record.get("startstops", ())), default=float("inf"))


def _memory_peaks(samples: list[tuple[float, str, int]],
                  on_worker: dict[str, list[tuple[float, float, str]]]) -> dict[str, int]:
    import bisect

    by_worker: dict[str, list[tuple[float, int]]] = {}
    for t, worker, memory in sorted(samples):
        by_worker.setdefault(worker, []).append((t, memory))
    during: dict[str, int] = {}
    after: dict[str, int] = {}
    for worker, intervals in on_worker.items():
        found = by_worker.get(worker, [])
        times = [t for t, _ in found]
        for start, stop, stage in intervals:
            lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, stop)
            if lo < hi:
                during[stage] = max(during.get(stage, 0), max(m for _, m in found[lo:hi]))
            elif hi < len(found):
                after[stage] = max(after.get(stage, 0), found[hi][1])
    return {**after, **during}


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
                               f"monitor.max_worker_memory {format_bytes(limit)}",
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


def register_nested_sizeof() -> None:
    """Let dask size deeply nested dicts without recursing (idempotent).

    dask sizes a dict by recursing into its keys and values. A worker's statistical
    profile (``performance_report`` asks every worker for it) is a call tree of dicts as
    deep as the deepest stack sampled -- numba's compiler, scikit-learn's fits -- and
    dask's recursion overflows on it: distributed then logs ``Sizeof calculation for
    object of type 'dict' failed`` for every profile sent. This registers the same
    estimate (sampling at most 10 items per container, as dask does) walked with an
    explicit stack, for dicts, lists, tuples and sets.
    """
    from dask.sizeof import sizeof

    if sizeof.dispatch(dict) is _nested_sizeof:
        return
    for kind in (dict, list, tuple, set, frozenset):
        sizeof.register(kind)(_nested_sizeof)


def _nested_sizeof(obj: Any) -> int:
    import random
    import sys

    from dask.sizeof import sizeof

    total = 0.0
    stack: list[tuple[Any, float]] = [(obj, 1.0)]
    while stack:
        item, weight = stack.pop()
        if sizeof.dispatch(type(item)) is not _nested_sizeof:  # a leaf with its own sizeof
            total += weight * sizeof(item)
            continue
        total += weight * sys.getsizeof(item)
        parts = [list(item.keys()), list(item.values())] if isinstance(item, dict) else [item]
        for part in parts:
            if len(part) > 10:
                sample = list(part)[:10] if isinstance(part, (set, frozenset)) else random.sample(list(part), 10)
                stack.extend((element, weight * len(part) / 10) for element in sample)
            else:
                stack.extend((element, weight) for element in part)
    return int(total)


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
