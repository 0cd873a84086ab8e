"""A study's inputs on the cluster: every symbol's bars, loaded once, and the feature sets its
trials ask for, each computed once (``FeaturePool``).

A trial's feature set is its ``features`` section once its parameters are applied. Its
``features-<S>`` tasks are keyed by content (``graph.features_tasks``), so two trials that
need the same set for a symbol need the same task. The pool keeps each set's futures on
the cluster while a trial that uses it runs, and afterwards as long as the sets held fit
in ``tune.feature_memory``, letting go of the least recently used first (never one a
running trial uses, nor the last one asked for). A set asked for again after that is
read back from the content-addressed feature cache, never computed again: a search over
features requires the cache (``check_space``), which also serves the sets computed
before a resume. The budget counts one copy of each set's frames (the scheduler's
``nbytes`` of its ``features-<S>`` results); workers that ran its folds may hold
replicas until the set is let go of.

Where each set came from is told by its tasks (``graph.FEATURE_EVENTS``): ``computed``
(by the kernels), ``disk`` (from the cache) or, for a trial that found its set held by
the pool, ``memory``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SharedInputs:
    """Every symbol's bars as futures (computed once, shared by every trial), each symbol's
    timestamps (what trials lay their folds on), and the pool of feature sets."""

    symbols: list[str]
    bars: list[Any]
    stamps: dict[str, pd.DatetimeIndex]
    pool: FeaturePool


def feature_set_id(features: Any) -> str:
    """12 hex digits naming a feature set: its indicators and parameters (a user indicator
    with its code identity) and its benchmark; not where it is cached. The same in every
    run, so a resumed study's table names its sets alike."""
    from dask_pipeline.features.custom import user_indicators

    users = user_indicators()
    items = [[s.name, s.params, users[s.name].code if s.name in users else ""] for s in features.indicators]
    text = json.dumps({"indicators": items, "benchmark": features.benchmark}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(eq=False)
class FeatureSet:
    """One feature set held on the cluster: its ``features-<S>`` futures (in the order of
    the study's symbols), ``bundle``, one future of ``(symbols, bars, features)`` that fold
    tasks take (one dependency instead of two per symbol; the frames are the same objects),
    the running trials that use it and its size once known."""

    id: str
    futures: list[Any]
    bundle: Any
    users: int = 0
    last_used: int = 0
    nbytes: int | None = None


def bundle_inputs(symbols: list[str], bars: list[pd.DataFrame], features: list[pd.DataFrame]) -> tuple:
    """The task behind ``FeatureSet.bundle``: its arguments as one value."""
    return symbols, bars, features


@dataclass
class PoolCounts:
    """What the pool did: feature sets asked for, work by symbol and set, and by trial."""

    sets: set[str] = field(default_factory=set)  # distinct sets asked for
    tasks: Counter = field(default_factory=Counter)  # computed | disk: features-<S> tasks that ran
    trials: Counter = field(default_factory=Counter)  # computed | disk | memory: trials, by where their set came from
    released: int = 0  # sets let go of under the budget
    peak_bytes: int = 0  # the most the held sets took after letting go
    peak_sets: int = 0


class FeaturePool:
    """The feature sets of a study's trials, each computed once (see the module docstring).

    Parameters
    ----------
    client
        The study's ``distributed.Client``.
    cfg
        The study's config (its ``data`` section and cluster retries).
    symbols, bars
        The study's symbols and their bar futures (held for the study).
    budget
        Bytes the sets held between their trials may take (``tune.feature_memory``).
    benchmark_bars
        The future of the benchmark symbol's bars when it is not one of ``symbols``.
    """

    def __init__(self, client: Any, cfg: Any, symbols: list[str], bars: list[Any], budget: int,
                 benchmark_bars: list[Any] | None = None):
        from dask_pipeline.graph import FEATURE_EVENTS

        self.client, self.cfg, self.symbols, self.bars, self.budget = client, cfg, symbols, bars, budget
        self.sets: dict[str, FeatureSet] = {}
        self.counts = PoolCounts()
        self._clock = 0
        self._keys: dict[str, str] = {}  # features task key -> set id, of every set submitted
        self._sources: dict[str, str] = {}  # features task key -> computed | disk, since it was last asked for
        self._lock = threading.Lock()
        self._checked: set[tuple] = set()  # user indicator (name, params) that passed the look-ahead check
        self._check_bars: pd.DataFrame | None = None
        self.benchmark_bars = benchmark_bars or []  # held too: every feature set reads them
        self._topic = FEATURE_EVENTS
        # By weak reference: the client keeps a handler after unsubscribing, which must not keep
        # the pool, and with it every held feature set, alive.
        client.subscribe_topic(self._topic, functools.partial(_deliver, weakref.ref(self)))

    def acquire(self, cfg: Any) -> tuple[FeatureSet, bool]:
        """The feature set of the trial config ``cfg``, held until ``release``; and whether
        it was held already (computed or being computed for another trial).

        Raises
        ------
        DaskPipelineError
            A user indicator of a set not seen before fails the look-ahead check at these
            parameters (``LookAheadError``).
        """
        from dask.base import tokenize

        from dask_pipeline.graph import features_tasks

        set_id = feature_set_id(cfg.features)
        self.counts.sets.add(set_id)
        self._clock += 1
        held = self.sets.get(set_id)
        reused = held is not None
        if held is None:
            self._check_lookahead(cfg)
            per_symbol = features_tasks(cfg, self.symbols)
            tasks = [per_symbol[s][1] for s in self.symbols]
            self._expect(set_id, [t.key for t in tasks])
            # The load tasks in their graphs have the keys of the held bar futures: never loaded again.
            futures = self.client.compute(tasks, retries=cfg.cluster.retries)
            bundle = self.client.submit(bundle_inputs, self.symbols, self.bars, futures,
                                        key=f"tune-inputs-{tokenize(self.symbols, [f.key for f in futures])[:8]}")
            held = self.sets[set_id] = FeatureSet(set_id, futures, bundle)
        held.users += 1
        held.last_used = self._clock
        return held, reused

    def release(self, held: FeatureSet, fit: bool = True) -> None:
        """A trial is done with ``held``: size it if not yet, then let go of sets over the budget
        (``fit``; not while the driver is being interrupted, when the cluster may be going)."""
        held.users -= 1
        if not fit:
            return
        if held.nbytes is None and all(f.done() for f in held.futures):
            found = self.client.nbytes(keys=[f.key for f in held.futures], summary=False)
            held.nbytes = int(sum(found.get(f.key, 0) for f in held.futures))
        self._fit_budget()

    def source(self, held: FeatureSet) -> str | None:
        """``computed`` when any of the set's tasks computed its features, else ``disk`` when
        any read them from the cache, else ``memory``: asked for again right after it was let
        go of, the scheduler still held its results (the release had not reached it yet) and
        ran nothing. None while a task is not done, or when one failed.

        Each task's event reaches the scheduler before its result does, and this client
        before the news of any task that depends on it (one ordered stream each way), so
        once a trial's fold is done the events of its set's tasks are here.
        """
        found = []
        for future in held.futures:
            told = self._sources.get(future.key)
            if told is None and future.status != "finished":
                return None
            found.append(told or "memory")
        return next((s for s in ("computed", "disk") if s in found), "memory")

    def _expect(self, set_id: str, keys: list[str]) -> None:
        """Listen for the events of these features tasks (before they are submitted: one could
        finish first); a set asked for again says anew where its features come from."""
        with self._lock:
            for key in keys:
                self._keys[key] = set_id
                self._sources.pop(key, None)

    def tell_trial(self, source: str | None) -> None:
        """Count a finished trial by where its feature set came from."""
        if source is not None:
            self.counts.trials[source] += 1

    def close(self) -> None:
        """Stop listening to the features tasks' events (the held sets stay until the pool goes)."""
        with contextlib.suppress(ValueError):  # none to stop
            self.client.unsubscribe_topic(self._topic)

    def stage_record(self) -> dict[str, Any]:
        """The pool's counts for the ``features`` row of ``stages.json``."""
        c = self.counts
        return {"feature_sets": len(c.sets), "computed": c.tasks["computed"], "read_from_cache": c.tasks["disk"],
                "trials_computed": c.trials["computed"], "trials_from_cache": c.trials["disk"],
                "trials_from_memory": c.trials["memory"], "sets_released": c.released,
                "peak_held_bytes": c.peak_bytes, "peak_held_sets": c.peak_sets}

    # ------------------------------------------------------------------ internals

    def _fit_budget(self) -> None:
        held = sum(s.nbytes or 0 for s in self.sets.values())
        newest = max(self.sets.values(), key=lambda s: s.last_used, default=None)
        for candidate in sorted(self.sets.values(), key=lambda s: s.last_used):
            if held <= self.budget:
                break
            if candidate.users or candidate is newest:
                continue
            del self.sets[candidate.id]
            for future in (*candidate.futures, candidate.bundle):
                future.release()
            held -= candidate.nbytes or 0
            self.counts.released += 1
        self.counts.peak_bytes = max(self.counts.peak_bytes, held)
        self.counts.peak_sets = max(self.counts.peak_sets, len(self.sets))

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        # Runs on the client's event loop, in the order the scheduler logged the events.
        _, message = event
        key = message.get("key") if isinstance(message, dict) else None
        with self._lock:
            if key in self._keys:  # not another run's task
                self._sources[key] = message.get("source")
                self.counts.tasks[message.get("source")] += 1

    def _check_lookahead(self, cfg: Any) -> None:
        """The look-ahead check of the set's user indicators at parameters not checked yet
        (the run checked its config's own; a search reaches others), on the first symbol."""
        from dask_pipeline.features.custom import is_user_indicator

        unchecked = [s for s in cfg.features.indicators
                     if is_user_indicator(s.name) and (s.name, tuple(s.params.items())) not in self._checked]
        if not unchecked:
            return
        from dask_pipeline.data import load_bars
        from dask_pipeline.features.lookahead import check_run_indicators

        data = self.cfg.data
        if self._check_bars is None:
            self._check_bars = load_bars(data.root, self.symbols[0], data.start, data.end, dtype=data.dtype)
        check_run_indicators(self._check_bars, unchecked, self.symbols[0])
        self._checked.update((s.name, tuple(s.params.items())) for s in unchecked)


def _deliver(pool: weakref.ref, event: tuple[float, dict[str, Any]]) -> None:
    alive = pool()
    if alive is not None:
        alive._on_event(event)


def check_feature_space(cfg: Any) -> None:
    """Before any cluster starts: refuse a space that can enable an indicator needing volume
    (``features.obv.enabled``) when a symbol has none (price-only bars); each such trial
    would fail on its first fold. ``ConfigError`` naming the path and the symbol."""
    from dask_pipeline.features.address import ENABLED
    from dask_pipeline.features.engine import INDICATORS
    from dask_pipeline.graph import require_volume
    from dask_pipeline.tuning.space import apply_params

    for path, param in cfg.tune.space.items():
        parts = path.split(".")
        if parts[0] != "features" or parts[-1] != ENABLED or True not in (param.choices or ()):
            continue
        if not INDICATORS[parts[1]].needs_volume:
            continue
        require_volume(apply_params(cfg, {path: True}), f"tune.space.{path}",
                       f"every trial enabling it would fail: leave {path} out of the space")


def share_inputs(cfg: Any, client: Any) -> SharedInputs:
    """Load every symbol's bars once on the cluster (kept as futures) and lay out the study's
    folds' calendars; feature sets come from the returned pool as trials ask for them."""
    from dask_pipeline.graph import fold_plan, load_task, symbols_of, tell_plan

    symbols = symbols_of(cfg)
    loads = [load_task(cfg.data, s) for s in symbols]
    benchmark = cfg.features.benchmark  # a search never changes it
    if benchmark is not None and benchmark not in symbols:  # every feature set reads it: held like the bars
        loads.append(load_task(cfg.data, benchmark))
    held = client.compute(loads, retries=cfg.cluster.retries)
    bars = held[: len(symbols)]
    # Folds are laid out on the client from each symbol's timestamps: only closes are read.
    plan = fold_plan(cfg)
    tell_plan(plan)
    pool = FeaturePool(client, cfg, symbols, bars, cfg.tune.feature_memory_bytes, held[len(symbols):])
    return SharedInputs(symbols, bars, plan.stamps, pool)
