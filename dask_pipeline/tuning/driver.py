"""The ask/tell driver: trials side by side on the cluster, fold by fold, over Dask futures."""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.backtest import PORTFOLIO, BacktestConfig
from dask_pipeline.cluster import gpu_worker_addresses
from dask_pipeline.errors import DaskPipelineError
from dask_pipeline.folds import Fold, plan_folds
from dask_pipeline.models import LabelConfig, ModelConfig, resolve_device
from dask_pipeline.tuning.inputs import FeatureSet, SharedInputs
from dask_pipeline.tuning.space import TUNABLE_METRICS, TuneConfig, apply_params, signature
from dask_pipeline.tuning.storage import storage_group
from dask_pipeline.tuning.study import (PRUNERS, Outcome, StudyState, optuna_quiet, driver_identity, tell)
from dask_pipeline.walkforward import backtest_fold, min_history, require_history, train_fold


def evaluate_fold(
    fold: Fold,
    symbols: Sequence[str],
    bars: Sequence[pd.DataFrame],
    features: Sequence[pd.DataFrame],
    label: LabelConfig,
    model: ModelConfig,
    backtest: BacktestConfig,
    seed: int,
) -> dict[str, float]:
    """One trial's fold: fit, predict, backtest (as the walk-forward does).

    Returns
    -------
    dict
        The fold's ``portfolio`` metrics row, ``{metric: value}`` for every ``TUNABLE_METRICS``.
    """
    result = backtest_fold(train_fold(fold, symbols, bars, features, label, model, seed), backtest)
    row = result.metrics.loc[result.metrics["curve"] == PORTFOLIO].iloc[0]
    return {name: float(row[name]) for name in TUNABLE_METRICS}


#: How fold values become a trial's value.
AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": lambda v: float(np.mean(v)),
    "median": lambda v: float(np.median(v)),
    "min": lambda v: float(np.min(v)),
}



def run_fold(evaluate: Callable[..., dict[str, float]], job: bytes, k: int, bundle: tuple) -> dict[str, float]:
    """A trial's fold task: ``evaluate`` on fold ``k`` of the trial's ``job``.

    ``job`` is the trial's ``(folds, label, model, backtest, seed)`` pickled once by the
    driver, so its config objects are serialised once per trial instead of once per fold.
    """
    folds, label, model, backtest, seed = pickle.loads(job)
    symbols, bars, features = bundle
    return evaluate(folds[k], symbols, bars, features, label, model, backtest, seed)


@dataclass
class LiveTrial:
    """A trial being evaluated: its config, folds, feature set, fold values so far, futures, waiting twins."""

    trial: Any
    cfg: Any
    folds: list[Fold]
    sig: str
    started: float
    job: bytes = b""  # its fold tasks' argument: (folds, label, model, backtest, seed), pickled
    token: str = ""  # of its fold tasks' arguments, in their keys
    features: FeatureSet | None = None
    reused: bool = False  # its feature set was held already when it started
    values: dict[int, dict[str, float]] = field(default_factory=dict)
    futures: dict[int, Any] = field(default_factory=dict)
    twins: list[Any] = field(default_factory=list)

    def fold_values(self, metric: str) -> list[float]:
        """The metric over the folds done so far, in fold order."""
        return [self.values[k][metric] for k in sorted(self.values)]


class StudyDriver:
    """Ask/tell over Dask futures (see the module docstring); ``run`` until the budget is spent."""

    #: The fold task (a benchmark of the driver alone swaps in a trivial one).
    evaluate: Callable[..., dict[str, float]] = staticmethod(evaluate_fold)

    def __init__(self, study: Any, state: StudyState, cfg: Any, client: Any, inputs: SharedInputs,
                 echo: Callable[..., Any] = print):
        from distributed import as_completed

        self.study, self.cfg, self.client, self.inputs, self.echo = study, cfg, client, inputs, echo
        self.tune: TuneConfig = cfg.tune
        self.metrics = self.tune.metrics
        self.aggregate = AGGREGATES[self.tune.aggregate]
        self.pruned_stepwise = self.tune.pruning != "none" and len(self.metrics) == 1
        self.distributions = {p: self.tune.space[p].distribution() for p in sorted(self.tune.space)}
        self.index = state.index
        self.counted = state.counted
        self.concurrency = self.tune.concurrency or max(1, len(client.nthreads()))
        self.identity = driver_identity()
        self.live: dict[int, LiveTrial] = {}
        self.by_key: dict[str, tuple[int, int]] = {}
        self.running: dict[str, int] = {}
        # Results are fetched in the background as folds finish, so the driver never blocks
        # on one fold's round trip; a fold's exception comes back as its result.
        self.completed = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        self._folds: dict[tuple[str, int], list[Fold]] = {}
        base_folds = self._layout(cfg)
        tunes_folds = any(p.split(".")[0] in ("folds", "label") for p in self.tune.space)
        study.pruner = PRUNERS[self.tune.pruning](None if tunes_folds else len(base_folds))
        grid = [p.grid() for p in self.tune.space.values()]
        self.grid_size = math.prod(len(g) for g in grid) if self.tune.sampler == "grid" else None
        self.best: tuple[float, int] | None = None
        if len(self.metrics) == 1:
            sign = 1 if self.tune.directions[0] == "maximize" else -1
            done = [(o.values[0], o.number) for o in self.index.values() if o.values is not None]
            self.best = max(done, key=lambda vn: (sign * vn[0], -vn[1]), default=None)
        self.asked = 0
        # model.device: auto becomes cuda on a cluster with GPU workers (for a GPU model), whose
        # trials' folds then go to those workers; cuda without them stops here, before any trial.
        self.gpu_workers = bool(gpu_worker_addresses(client))
        resolve_device(cfg.model, self.gpu_workers)
        self.pool = inputs.pool
        self._lengths = {s: len(stamps) for s, stamps in inputs.stamps.items()}
        self._base_tokens: dict[str, bytes] = {}  # per feature set's bundle key

    def run(self) -> None:
        """Ask, evaluate and tell until ``n_trials`` count, ``timeout`` passes or the grid is covered."""
        deadline = None if self.tune.timeout is None else time.monotonic() + self.tune.timeout
        to_go = self.tune.n_trials - self.counted
        if to_go > 0:
            self.echo(f"tune: {to_go} trials to run, {self.concurrency} at a time "
                      f"({self.tune.sampler} sampler, {self.tune.pruning} pruner)")
        ready: list[tuple[Any, Any]] = []
        try:
            while True:
                # What the driver does between two waits on the cluster is one storage group.
                with storage_group(self.study):
                    for future, row in ready:
                        self._fold_done(future, row)
                    while (len(self.live) < self.concurrency and self.counted < self.tune.n_trials
                           and (deadline is None or time.monotonic() < deadline) and not self._grid_covered()):
                        self._start_trial()
                if self.completed.is_empty():
                    break
                ready = self.completed.next_batch(block=True)
        except BaseException:
            self._requeue_live()
            raise
        if deadline is not None and time.monotonic() >= deadline and self.counted < self.tune.n_trials:
            self.echo(f"tune: timeout of {self.tune.timeout:g} s reached after {self.asked} new trials")
        if self._grid_covered() and self.counted < self.tune.n_trials:
            self.echo(f"tune: the grid's {self.grid_size} points are all evaluated; stopping before n_trials")
        if self.tune.searches_features and self.asked:
            self.echo(self._features_line())

    def _features_line(self) -> str:
        c = self.pool.counts
        return (f"tune: feature sets: {len(c.sets)} distinct over {len(self.inputs.symbols)} symbols, "
                f"{c.tasks['computed']} symbol-sets computed and {c.tasks['disk']} read from the cache; trials: "
                f"{c.trials['computed']} computed theirs, {c.trials['memory']} shared one held in memory, "
                f"{c.trials['disk']} read theirs from the cache; {c.released} sets let go of under "
                f"tune.feature_memory ({self.tune.feature_memory})")

    # ------------------------------------------------------------------ ask

    def _start_trial(self) -> None:
        trial = self.study.ask(self.distributions)
        self.counted += 1
        self.asked += 1
        trial.set_user_attr("driver", self.identity)
        params = trial.params  # a copy each time it is read
        sig = signature(params, self.tune.round_digits)
        if sig in self.index:
            self._tell_duplicate(trial, self.index[sig])
            return
        if sig in self.running:  # its twin is running: wait for its outcome
            self.live[self.running[sig]].twins.append(trial)
            return
        try:
            trial_cfg = apply_params(self.cfg, params)
            trial_cfg = trial_cfg.model_copy(update={"model": resolve_device(trial_cfg.model, self.gpu_workers)})
            folds = self._layout(trial_cfg)
            # Longer windows or a longer horizon than the config's may need more history than a symbol has.
            require_history(self._lengths, min_history(trial_cfg.features, trial_cfg.label.horizon), trial_cfg.data)
            features, reused = self.pool.acquire(trial_cfg)
        except DaskPipelineError as exc:
            self._tell_failed(trial, str(exc))
            return
        job = pickle.dumps((folds, trial_cfg.label, trial_cfg.model, trial_cfg.backtest, trial_cfg.seed),
                           protocol=pickle.HIGHEST_PROTOCOL)
        # One token for all of the trial's fold tasks (fold k's key adds k), so two studies or
        # runs sharing a scheduler never mistake each other's trial-N-fold-K for their own.
        token = hashlib.sha1(self._base_token(features) + job).hexdigest()[:8]
        live = LiveTrial(trial, trial_cfg, folds, sig, time.perf_counter(), job, token, features=features,
                         reused=reused)
        self.live[trial.number] = live
        self.running[sig] = trial.number
        for k in [0] if self.pruned_stepwise else range(len(folds)):
            self._submit(live, k)

    def _layout(self, cfg: Any) -> list[Fold]:
        key = (cfg.folds.model_dump_json(), cfg.label.horizon, cfg.backtest.periods_per_year)
        if key not in self._folds:
            self._folds[key] = plan_folds(self.inputs.stamps, cfg.folds, cfg.label.horizon,
                                          cfg.backtest.periods_per_year).folds
        return self._folds[key]

    def _base_token(self, features: FeatureSet) -> bytes:
        key = features.bundle.key
        if key not in self._base_tokens:
            from dask.base import tokenize

            self._base_tokens[key] = tokenize(self.evaluate, key).encode()
        return self._base_tokens[key]

    def _submit(self, live: LiveTrial, k: int) -> None:
        key = f"trial-{live.trial.number:04d}-fold-{k:02d}-{live.token}"
        future = self.client.submit(run_fold, self.evaluate, live.job, k, live.features.bundle, key=key,
                                    retries=self.cfg.cluster.retries,
                                    resources={"GPU": 1} if live.cfg.model.device == "cuda" else None)
        self.by_key[key] = (live.trial.number, k)
        live.futures[k] = future
        self.completed.add(future)

    def _grid_covered(self) -> bool:
        return self.grid_size is not None and len(self.index) + len(self.running) >= self.grid_size

    # ------------------------------------------------------------------ tell

    def _fold_done(self, future: Any, row: Any) -> None:
        where = self.by_key.pop(future.key, None)
        if where is None:  # a fold of a trial that already failed
            return
        number, k = where
        live = self.live[number]
        live.futures.pop(k)
        if future.status == "error" and isinstance(row, tuple):
            row = row[1]  # as_completed hands an erred future's (type, exception, traceback)
        if isinstance(row, BaseException):  # the fold's own error (or its inputs'), reported on the trial
            first_line = (str(row).splitlines() or [""])[0]
            self._finish(live, "FAIL", error=f"fold {k}: {type(row).__name__}: {first_line}")
            return
        live.values[k] = row
        if self.pruned_stepwise:
            metric = self.metrics[0]
            live.trial.report(self.aggregate(live.fold_values(metric)), step=k)
            if k + 1 == len(live.folds):  # every fold ran: pruning would only discard the value
                self._finish(live, "COMPLETE")
            elif live.trial.should_prune():
                self._finish(live, "PRUNED")
            else:
                self._submit(live, k + 1)
        elif len(live.values) == len(live.folds):
            self._finish(live, "COMPLETE")

    def _finish(self, live: LiveTrial, state: str, error: str | None = None) -> None:
        from optuna.trial import TrialState

        trial = live.trial
        for future in live.futures.values():
            self.by_key.pop(future.key, None)
            future.cancel()
        del self.live[trial.number]
        self.running.pop(live.sig, None)
        folds = {"n": len(live.folds), **{m: live.fold_values(m) for m in self.metrics}}
        values = None
        if state == "COMPLETE":
            values = [self.aggregate(folds[m]) for m in self.metrics]
            bad = [m for m, v in zip(self.metrics, values) if not math.isfinite(v)]
            if bad:
                state, error = "FAIL", f"{', '.join(bad)} is not finite over the folds {[folds[m] for m in bad]}"
        trial.set_user_attr("folds", folds)
        self._let_go_of_features(live)
        if state == "FAIL":
            trial.set_user_attr("error", error)
            tell(self.study, trial, state=TrialState.FAIL)
        elif state == "PRUNED":
            tell(self.study, trial, state=TrialState.PRUNED)
        else:
            tell(self.study, trial, values)
        outcome = Outcome(trial.number, state, values, folds)
        if state != "FAIL":
            self.index[live.sig] = outcome
        self._report(trial.number, state, values, folds, time.perf_counter() - live.started, error=error)
        for twin in live.twins:
            if state == "FAIL":
                twin.set_user_attr("duplicate_of", trial.number)
                self._tell_failed(twin, f"duplicate of trial {trial.number}, which failed", quiet=True)
            else:
                self._tell_duplicate(twin, outcome)

    def _let_go_of_features(self, live: LiveTrial) -> None:
        """Record where the trial's feature set came from (user attribute ``features``) and release it."""
        held = live.features
        if held is None:
            return
        source = "memory" if live.reused else self.pool.source(held)
        live.trial.set_user_attr("features", {"set": held.id, "source": source})
        self.pool.tell_trial(source)
        live.features = None
        self.pool.release(held)

    def _tell_duplicate(self, trial: Any, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("duplicate_of", outcome.number)
        trial.set_user_attr("folds", outcome.folds)
        if outcome.state == "COMPLETE":
            tell(self.study, trial, outcome.values if len(self.metrics) > 1 else outcome.values[0])
        else:
            tell(self.study, trial, state=TrialState.PRUNED)
        self._report(trial.number, outcome.state, outcome.values, outcome.folds, 0.0, duplicate_of=outcome.number)

    def _tell_failed(self, trial: Any, error: str, quiet: bool = False) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("error", error)
        tell(self.study, trial, state=TrialState.FAIL)
        if not quiet:
            self._report(trial.number, "FAIL", None, {}, 0.0, error=error)

    def _requeue_live(self) -> None:
        """On an interruption of this driver: re-queue what was running, then mark it FAIL."""
        from optuna.trial import TrialState

        for live in list(self.live.values()):
            for future in live.futures.values():
                future.cancel()
            if live.features is not None:
                self.pool.release(live.features, fit=False)
                live.features = None
            for trial in [live.trial, *live.twins]:
                self.study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})
                tell(self.study, trial, state=TrialState.FAIL)
        self.live.clear()

    def _report(self, number: int, state: str, values: list[float] | None, folds: dict[str, Any], seconds: float,
                duplicate_of: int | None = None, error: str | None = None) -> None:
        metric = self.metrics[0]
        shown = "" if values is None else "  " + " ".join(f"{m}={v:.4f}" for m, v in zip(self.metrics, values))
        if values is not None and len(self.metrics) == 1:
            sign = 1 if self.tune.directions[0] == "maximize" else -1
            if self.best is None or sign * values[0] > sign * self.best[0]:
                self.best = (values[0], number)
        done = len(folds.get(metric, [])) if folds else 0
        if duplicate_of is not None:
            how = f"duplicate of #{duplicate_of}"
        elif folds:
            how = f"{done}/{folds['n']} folds, {seconds:.1f} s"
        else:
            how = "not run"
        best = f"  best {self.best[0]:.4f} (#{self.best[1]})" if self.best else ""
        why = f"  {error}" if error else ""
        self.echo(f"trial {number:4d} {state:<8}{shown}  ({how}){best}{why}")


def run_study(study: Any, state: StudyState, cfg: Any, client: Any, inputs: SharedInputs,
              echo: Callable[..., Any] = print) -> StudyDriver:
    """Run the study's remaining trials on the cluster (see ``StudyDriver``)."""
    with optuna_quiet():
        driver = StudyDriver(study, state, cfg, client, inputs, echo)
        driver.run()
    return driver
