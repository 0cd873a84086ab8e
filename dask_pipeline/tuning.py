"""Hyperparameter search over the walk-forward: an Optuna study driven over Dask futures.

The driver (the client process) does ask/tell; the cluster evaluates. Each trial applies
its parameters to the config (dotted paths such as ``model.params.max_depth``, validated
like any config) and runs its walk-forward folds as tasks keyed
``trial-<nnnn>-fold-<kk>-<token>``. With a pruner, fold k+1 is submitted only after fold
k reported, so a pruned trial's remaining folds never run; without one (``pruner: none``,
or several metrics) a trial's folds are submitted at once. Up to ``concurrency`` trials
run side by side; ``distributed.as_completed`` wakes the driver as each fold finishes.

- **Shared inputs.** Bars and features are computed once per study (``features_tasks``,
  through the feature cache) and every fold task takes them as futures, by reference.
  The search space therefore cannot touch ``data.*`` or ``features.*``: that is rejected
  at load (run one study per feature set).
- **Storage.** Only the driver touches it. Default: a journal file ``study.journal`` in
  the run folder; ``tune.storage`` takes another file path or any Optuna storage URL
  (``sqlite:///...``, ``postgresql://...``), which lets several drivers share one study.
- **Dedup.** A parameter set is signed canonically (sorted paths; numbers to
  ``round_digits`` significant digits). A set already evaluated is never run again: the
  new trial is told the recorded outcome (COMPLETE value or PRUNED) and marked with the
  user attribute ``duplicate_of``. A set asked while its twin is still running waits for
  the twin's outcome. Duplicates count toward ``n_trials``.
- **Resume.** Rerunning the same config continues the same study (``study_name``
  defaults to the run name) up to ``n_trials`` in total, counting COMPLETE, PRUNED and
  failed trials. Opening reads every trial once (one ``get_trials``; O(n)). A trial left
  RUNNING by a driver that is gone (same host, its process no longer exists) was
  interrupted: it is re-queued with the same parameters (``enqueue_trial``, user
  attribute ``rerun_of``) and then marked FAIL; interrupted trials do not count toward
  ``n_trials``. Trials RUNNING under a live driver, or one on another host, are left to
  it. A study whose objective (data, features, label, folds, model, backtest, seed,
  space, metric, aggregate, direction) differs from the config's is refused.
- **Determinism.** The sampler's seed derives from ``(tune.seed, trials already in the
  study)``. With ``concurrency: 1`` a fresh study is reproducible: the same trials, in
  the same order, with the same values, on any cluster. With more, the sampler and the
  pruner see trials finish in the cluster's order, so later suggestions and pruning
  decisions depend on timing (a fold's value for given parameters never does, and
  neither does the best trial's walk-forward for given parameters). A resumed study is
  a function of what it resumed from, not identical to an uninterrupted one.

The fold evaluation (``evaluate_fold``) is a plain stage function; Optuna is imported
only by the driver, never on the workers.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import pickle
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from dask_pipeline.backtest import METRICS, PORTFOLIO, TRADE_METRICS, BacktestConfig
from dask_pipeline.errors import ConfigError, DaskPipelineError
from dask_pipeline.folds import Fold, make_folds
from dask_pipeline.models import LabelConfig, ModelConfig
from dask_pipeline.schema import Section
from dask_pipeline.walkforward import backtest_fold, train_fold

KINDS = ("int", "float", "categorical")
#: Walk-forward metrics a study can optimise: columns of a fold's ``portfolio`` row.
TUNABLE_METRICS = (*METRICS, *TRADE_METRICS)
#: Sections a trial may not change: they are computed once and shared by every trial.
SHARED_SECTIONS = ("data", "features")
#: Sections that describe how a run is executed or the search itself, never a trial.
UNTUNABLE = ("graph", "tune", "cluster", "output")
#: The search parameters that do not change what a trial's value means.
NOT_OBJECTIVE = ("n_trials", "timeout", "sampler", "pruner", "seed", "concurrency", "storage", "study_name")


class StudyError(DaskPipelineError):
    """A study cannot run or yields nothing (its storage is unreachable, every trial failed)."""


# --------------------------------------------------------------------------- config


class Param(Section):
    """One search dimension, written ``{int: [lo, hi]}``, ``{float: [lo, hi]}`` (with
    optional ``log: true`` or ``step: s``) or ``{categorical: [a, b, ...]}``."""

    kind: Literal["int", "float", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[Any, ...] | None = None  # scalars, checked below (a union would garble the message)
    log: bool = False
    step: int | float | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"expected a distribution like {{int: [2, 12]}}, {{float: [0.0, 0.01], log: true}} "
                             f"or {{categorical: [a, b]}}, got {data!r}")
        if "kind" in data:  # already in field form (a model copy)
            return data
        kinds = [k for k in KINDS if k in data]
        unknown = sorted(set(data) - {*KINDS, "log", "step"})
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r} in {data!r} (valid: int, float, categorical, log, step)")
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of int, float, categorical; got {data!r}")
        kind = kinds[0]
        bounds = data[kind]
        if kind == "categorical":
            if not isinstance(bounds, list | tuple) or not bounds:
                raise ValueError(f"categorical: expected a non-empty list of values, got {bounds!r}")
            if "log" in data or "step" in data:
                raise ValueError("log and step apply to int and float ranges, not to categorical")
            return {"kind": kind, "choices": tuple(bounds)}
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ValueError(f"{kind}: expected [low, high], got {bounds!r}")
        return {"kind": kind, "low": bounds[0], "high": bounds[1], "log": data.get("log", False), "step": data.get("step")}

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if self.kind == "categorical":
            for choice in self.choices or ():
                if choice is not None and not isinstance(choice, bool | int | float | str):
                    raise ValueError(f"categorical: {choice!r} is not a scalar (None, bool, int, float or str)")
            if len(set(map(repr, self.choices or ()))) != len(self.choices or ()):
                raise ValueError(f"categorical: {list(self.choices or ())} lists a value twice")
            return self
        low, high, step = self.low, self.high, self.step
        for name, value in (("low", low), ("high", high), ("step", step)):
            if isinstance(value, bool) or (value is None and name != "step"):
                raise ValueError(f"{self.kind}: {name} must be a number, got {value!r}")
            if self.kind == "int" and value is not None and not float(value).is_integer():
                raise ValueError(f"int: {name} must be a whole number, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.kind}: {name} must be finite, got {value!r}")
        if low > high:
            raise ValueError(f"{self.kind}: low {low!r} is above high {high!r}")
        if self.log and low <= 0:
            raise ValueError(f"{self.kind}: log needs low > 0, got {low!r}")
        if step is not None:
            if step <= 0:
                raise ValueError(f"{self.kind}: step must be > 0, got {step!r}")
            if self.log:
                raise ValueError(f"{self.kind}: log and step cannot be combined")
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise ValueError(f"{self.kind}: high - low ({high - low!r}) is not a multiple of step {step!r}")
        if self.kind == "int":
            return self.model_copy(update={"low": int(low), "high": int(high), "step": None if step is None else int(step)})
        return self.model_copy(update={"low": float(low), "high": float(high)})

    @model_serializer(mode="plain")
    def _as_written(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"categorical": list(self.choices or ())}
        out: dict[str, Any] = {self.kind: [self.low, self.high]}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def distribution(self) -> Any:
        """The Optuna distribution."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices or ()))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous float range."""
        if self.kind == "categorical":
            return list(self.choices or ())
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            return None
        n = int(round((self.high - self.low) / self.step))
        return [float(self.low + i * self.step) for i in range(n + 1)]

    def probes(self) -> list[Any]:
        """Values the config must accept for this distribution to be usable (see ``check_space``)."""
        values = self.grid()
        if values is None:
            # An interior point that is not a whole number: a float range on an int key fails here.
            inside = self.low + (self.high - self.low) * 0.381966 if not self.log else \
                math.exp(math.log(self.low) + (math.log(self.high) - math.log(self.low)) * 0.381966)
            return [self.low, self.high, inside]
        if len(values) > 16:  # ends and an even spread; range constraints sit at the ends
            values = [values[i] for i in np.unique(np.linspace(0, len(values) - 1, 16).round().astype(int))]
        return values


class TuneConfig(Section):
    """``tune`` section: the Optuna study the ``tune`` graph runs over the walk-forward.

    ``metric`` is a column of a fold's ``portfolio`` metrics row (``sharpe``, ...), or a
    list of them for a multi-objective study; fold values are aggregated by ``aggregate``.
    ``direction`` is one direction, or one per metric. ``pruner`` defaults to ``median``
    for one metric and ``none`` for several (Optuna cannot prune multi-objective trials).
    ``seed`` defaults to the config's ``seed``; ``concurrency`` to the number of workers;
    ``storage`` to ``study.journal`` in the run folder; ``study_name`` to the run name.
    ``timeout`` (seconds) stops asking for new trials; running ones finish.
    """

    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    metric: str | list[str] = "sharpe"
    aggregate: Literal["mean", "median", "min"] = "mean"
    direction: Literal["maximize", "minimize"] | list[Literal["maximize", "minimize"]] = "maximize"
    sampler: Literal["tpe", "random", "cmaes", "grid", "nsga2"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] | None = None
    seed: int | None = None
    concurrency: int | None = Field(None, ge=1)
    storage: str | None = None
    study_name: str | None = None
    round_digits: int = Field(10, ge=1, le=17)
    space: dict[str, Param] = Field(default_factory=dict)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | list[str]) -> str | list[str]:
        import difflib

        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("is empty; name a walk-forward metric such as sharpe")
        for name in names:
            if name not in TUNABLE_METRICS:
                close = difflib.get_close_matches(name, TUNABLE_METRICS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown metric {name!r}{hint}; known: {', '.join(TUNABLE_METRICS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"{names} names a metric twice")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "://" in value:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except ArgumentError as exc:
                raise ValueError(f"{value!r} is not a storage URL ({exc})") from None
            return value
        # A journal file; resolved at load, against the directory the config is loaded from.
        return str(Path(value).expanduser().resolve())

    @model_validator(mode="after")
    def _consistent(self) -> TuneConfig:
        metrics = self.metrics
        if isinstance(self.direction, list) and len(self.direction) != len(metrics):
            raise ValueError(f"direction lists {len(self.direction)} directions for {len(metrics)} metrics {metrics}")
        if len(metrics) > 1:
            if self.pruner not in (None, "none"):
                raise ValueError(f"pruner {self.pruner!r} cannot prune a study of several metrics; use pruner: none")
            if self.sampler in ("cmaes",):
                raise ValueError(f"sampler {self.sampler!r} optimises one metric; for several use nsga2, tpe or random")
        if self.sampler == "cmaes":
            import importlib.util

            if importlib.util.find_spec("cmaes") is None:
                raise ValueError("sampler 'cmaes' needs the cmaes package (pip install cmaes)")
        return self

    @property
    def metrics(self) -> list[str]:
        """The metric names, one per objective."""
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        """One direction per metric."""
        return list(self.direction) if isinstance(self.direction, list) else [self.direction] * len(self.metrics)

    @property
    def pruning(self) -> str:
        """The pruner in effect: ``median`` by default for one metric, ``none`` for several."""
        if self.pruner is not None:
            return self.pruner
        return "median" if len(self.metrics) == 1 else "none"


def check_space(cfg: Any) -> None:
    """Raise a ``ValidationError`` located at ``tune.space.<path>`` for every unusable path.

    Each path must be a config key outside ``graph``, ``tune``, ``cluster``, ``output``,
    ``data`` and ``features``, and the config must accept every probed value of its
    distribution (both ends, an interior point, or the listed choices) -- checked by
    validating the whole config with the value in place, so every section's own rules
    apply. The ``tune`` graph also needs a non-empty space. ``Config`` calls this at load.
    """
    from pydantic_core import InitErrorDetails, PydanticCustomError

    errors: list[InitErrorDetails] = []

    def fail(loc: tuple[str, ...], message: str, value: Any) -> None:
        errors.append(InitErrorDetails(
            type=PydanticCustomError("tune_space", "{message}", {"message": message}), loc=loc, input=value,
        ))

    space = cfg.tune.space
    if not space and cfg.graph == "tune":
        fail(("tune", "space"), "is empty; name at least one config path to search, e.g. "
             "model.params.max_depth: {int: [2, 8]}", {})
    if space:
        base = _trial_dict(cfg)
        for path, param in space.items():
            problem = _path_problem(base, path, param)
            if problem is not None:
                fail(("tune", "space", path), *problem)
    if cfg.tune.sampler == "grid":
        for path, param in space.items():
            if param.grid() is None:
                fail(("tune", "space", path), "the grid sampler needs a finite set of values: give a step, "
                     "or use categorical", param.model_dump())
    if errors:
        raise ValidationError.from_exception_data("Config", errors)


def _path_problem(base: dict[str, Any], path: str, param: Param) -> tuple[str, Any] | None:
    from dask_pipeline.config import Config, _describe, _did_you_mean, set_dotted

    parts = path.split(".")
    head = parts[0]
    if head in UNTUNABLE:
        return f"{head} cannot be searched: it says how the study runs, not what a trial computes", param.model_dump()
    if head in SHARED_SECTIONS:
        return (f"{head}.* cannot be searched: bars and features are computed once and shared by every trial; "
                "run one study per data or feature set", param.model_dump())
    if head not in Config.model_fields:
        valid = [f for f in Config.model_fields if f not in UNTUNABLE + SHARED_SECTIONS]
        return f"not a config key: unknown section '{head}'{_did_you_mean(head, valid)}", param.model_dump()
    for value in param.probes():
        data = copy.deepcopy(base)
        try:
            set_dotted(data, path, value)
            Config.model_validate(data)
        except ConfigError as exc:
            return f"not a config key: {exc}", param.model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "extra_forbidden":
                return f"not a config key: {_describe(err)}", param.model_dump()
            where = ".".join(str(p) for p in err["loc"]) or "<top>"
            message = err["msg"].removeprefix("Value error, ")
            return f"{path} does not accept {value!r}, a value of this distribution ('{where}': {message})", value
    return None


def _trial_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data for a trial: a walk-forward without a search of its own."""
    data = cfg.to_dict()
    data["graph"] = "walkforward"
    data.pop("tune", None)
    return data


def apply_params(cfg: Any, params: Mapping[str, Any]) -> Any:
    """A validated copy of ``cfg`` with ``params`` (dotted path -> value) in place.

    The copy is the trial's walk-forward: ``graph: walkforward`` and no ``tune`` section.

    Raises
    ------
    ConfigError
        When the values together are not a valid config (e.g. a parameter the chosen
        model does not take), naming the key.
    """
    from dask_pipeline.config import Config, _describe, set_dotted

    data = _trial_dict(cfg)
    for path, value in params.items():
        set_dotted(data, path, value)
    # The very objects the shared tasks were keyed on (a search never changes them), so a
    # walk-forward of this config names the same load-/features- keys and reuses them;
    # pydantic takes validated section instances as they are (the features list is most
    # of a config's validation time, paid on every trial otherwise).
    data.update({name: getattr(cfg, name) for name in SHARED_SECTIONS})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err) for err in exc.errors())) from None


# --------------------------------------------------------------------------- stages


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


def signature(params: Mapping[str, Any], digits: int = 10) -> str:
    """A canonical hash of a parameter set: sorted paths, numbers to ``digits`` significant digits.

    ``3`` and ``3.0`` sign alike, as do ``0.0`` and ``-0.0``; strings, booleans and None
    keep their type.
    """
    parts = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, bool) or value is None:
            text = json.dumps(value)
        elif isinstance(value, int | float | np.integer | np.floating):
            number = float(value)
            text = "n" + (format(number, f".{digits}g") if number != 0 else "0")
        else:
            text = json.dumps(str(value))
        parts.append(f"{json.dumps(key)}={text}")
    return hashlib.blake2b(";".join(parts).encode(), digest_size=12).hexdigest()


# --------------------------------------------------------------------------- study


def _tpe(tune: TuneConfig, seed: int) -> Any:
    from optuna.samplers import TPESampler

    # constant_liar: trials still running count as bad, so concurrent asks spread out.
    return TPESampler(seed=seed, constant_liar=True, multivariate=True)


def _random(tune: TuneConfig, seed: int) -> Any:
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed)


def _cmaes(tune: TuneConfig, seed: int) -> Any:
    from optuna.samplers import CmaEsSampler

    # Categorical dimensions fall back to random sampling, as documented; no warning per trial.
    return CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _grid(tune: TuneConfig, seed: int) -> Any:
    from optuna.samplers import GridSampler

    class AskTellGridSampler(GridSampler):
        # GridSampler stops an optimize() loop once the grid is covered (study.stop(),
        # which raises outside optimize()); the driver stops asking by itself.
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return AskTellGridSampler({p: tune.space[p].grid() for p in sorted(tune.space)}, seed=seed)


def _nsga2(tune: TuneConfig, seed: int) -> Any:
    from optuna.samplers import NSGAIISampler

    # A generation of at most 50 and at least 4, so a small study gets past the random first one.
    return NSGAIISampler(seed=seed, population_size=max(4, min(50, tune.n_trials // 5)))


#: Sampler name -> factory(tune config, seed).
SAMPLERS: dict[str, Callable[[TuneConfig, int], Any]] = {
    "tpe": _tpe, "random": _random, "cmaes": _cmaes, "grid": _grid, "nsga2": _nsga2,
}


def _median(n_folds: int | None) -> Any:
    return cached_median_pruner()()


@functools.cache
def cached_median_pruner() -> type:
    """The class ``CachedMedianPruner`` (made on first use: Optuna is imported by the driver only)."""
    from optuna.pruners import MedianPruner

    class CachedMedianPruner(MedianPruner):
        """Optuna's ``MedianPruner(n_startup_trials=5, n_warmup_steps=0)``, deciding alike
        (a test holds them equal), with its median over the completed trials at a step kept
        until another trial completes.

        COMPLETE is final and trials are never removed, so the number of completed trials
        says whether that set changed. The driver asks several times between two
        completions, and each ask would otherwise gather every completed trial's value at
        the step again and take its percentile (O(trials), ~0.3 ms at 1,000 trials).
        """

        def __init__(self) -> None:
            super().__init__(n_startup_trials=5, n_warmup_steps=0)
            self._medians: dict[int, float] = {}
            self._medians_of = -1  # completed trials the kept medians were taken over

        def prune(self, study: Any, trial: Any) -> bool:
            # PercentilePruner.prune, with the percentile looked up.
            from optuna.pruners import _percentile as pct
            from optuna.study import StudyDirection
            from optuna.trial import TrialState

            completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            n = len(completed)
            step = trial.last_step
            if n == 0 or n < self._n_startup_trials or step is None or step < self._n_warmup_steps:
                return False
            if not pct._is_first_in_interval_step(step, trial.intermediate_values.keys(), self._n_warmup_steps,
                                                  self._interval_steps):
                return False
            direction = study.direction
            best = pct._get_best_intermediate_result_over_steps(trial, direction)
            if math.isnan(best):
                return True
            if self._medians_of != n:
                self._medians, self._medians_of = {}, n
            if step not in self._medians:
                self._medians[step] = pct._get_percentile_intermediate_result_over_trials(
                    completed, direction, step, self._percentile, self._n_min_trials)
            p = self._medians[step]
            if math.isnan(p):
                return False
            return best < p if direction == StudyDirection.MAXIMIZE else best > p

    return CachedMedianPruner


def _hyperband(n_folds: int | None) -> Any:
    from optuna.pruners import HyperbandPruner

    return HyperbandPruner(min_resource=1, max_resource=n_folds or "auto", reduction_factor=3)


def _no_pruner(n_folds: int | None) -> Any:
    from optuna.pruners import NopPruner

    return NopPruner()


#: Pruner name -> factory(number of folds, None when the space changes it).
PRUNERS: dict[str, Callable[[int | None], Any]] = {"median": _median, "hyperband": _hyperband, "none": _no_pruner}


@dataclass(frozen=True)
class Outcome:
    """An evaluated parameter set: what a duplicate of it is told."""

    number: int
    state: str  # "COMPLETE" or "PRUNED"
    values: list[float] | None
    folds: dict[str, Any]


@dataclass
class StudyState:
    """What the driver needs from the trials already in a study (``scan_trials``)."""

    index: dict[str, Outcome] = field(default_factory=dict)
    counted: int = 0
    stale: list[Any] = field(default_factory=list)
    requeued: set[int] = field(default_factory=set)
    running_elsewhere: int = 0


def driver_identity() -> str:
    """``host/pid/start-time`` of this process, recorded on every trial it asks."""
    import psutil

    return f"{socket.gethostname()}/{os.getpid()}/{psutil.Process().create_time():.3f}"


def driver_alive(identity: str | None) -> bool | None:
    """Whether the driver ``identity`` names still runs: None when it is on another host."""
    import psutil

    if not identity:
        return False
    host, _, rest = identity.partition("/")
    if host != socket.gethostname():
        return None
    pid, _, started = rest.partition("/")
    try:
        process = psutil.Process(int(pid))
        return process.status() != psutil.STATUS_ZOMBIE and f"{process.create_time():.3f}" == started
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def scan_trials(trials: Sequence[Any], digits: int, alive: Callable[[str | None], bool | None] = driver_alive) -> StudyState:
    """One pass over a study's trials: the dedup index, the budget used, the interrupted ones.

    Parameters
    ----------
    trials
        ``FrozenTrial`` s, from one ``study.get_trials(deepcopy=False)``.
    digits
        ``tune.round_digits``.
    alive
        ``driver_alive``: tells a RUNNING trial's driver apart (live, gone, elsewhere).

    Returns
    -------
    StudyState
        ``counted``: trials that count toward ``n_trials`` (COMPLETE, PRUNED, failed but
        not interrupted, RUNNING under a live driver). ``stale``: RUNNING trials whose
        driver is gone. ``requeued``: trials already re-queued by an earlier driver.
    """
    from optuna.trial import TrialState

    state = StudyState()
    state.requeued = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    verdicts: dict[str | None, bool | None] = {}
    for t in trials:
        s = t.state
        if s == TrialState.COMPLETE or s == TrialState.PRUNED:
            state.counted += 1
            sig = signature(t.params, digits)
            if sig not in state.index:
                original = t.user_attrs.get("duplicate_of", t.number)
                state.index[sig] = Outcome(original, s.name, t.values, t.user_attrs.get("folds", {}))
        elif s == TrialState.FAIL:
            state.counted += t.number not in state.requeued
        elif s == TrialState.RUNNING:
            driver = t.user_attrs.get("driver")
            if driver not in verdicts:
                verdicts[driver] = alive(driver)
            if verdicts[driver] is False:
                state.stale.append(t)
            else:
                state.counted += 1
                state.running_elsewhere += 1
    return state


class JournalFlock:
    """An exclusive ``flock`` on ``<journal>.flock``: the lock of a study's journal file.

    The kernel releases it when its process dies, so a driver killed in the middle of a
    write (SIGKILL) leaves no stale lock for the next driver to wait out (Optuna's default
    symlink lock is only broken after a 30 s grace period). On a filesystem without
    ``flock``, give ``tune.storage`` a database URL instead.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Block until this process holds the lock."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        """Give the lock back."""
        import fcntl

        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


@functools.cache
def group_commit_journal() -> type:
    """The class ``GroupCommitJournal`` (made on first use: Optuna is imported by the driver only)."""
    from optuna.storages.journal import BaseJournalBackend

    class GroupCommitJournal(BaseJournalBackend):
        """A journal file whose appends can be grouped: one locked, fsynced write per group.

        Outside ``group()`` it is Optuna's ``JournalFileBackend`` (each append locked, written
        and fsynced on its own). Inside, the file lock is held for the whole group, appends
        are kept in memory, reads see the file and then the kept lines (so the storage's
        replay, trial ids included, is what it will be once written), and leaving the group
        writes them in one ``write`` and one ``fsync``. Holding the lock keeps other drivers
        on the same file from appending in between, so every process replays the same order.

        The driver groups what it does between two waits on the cluster. If it dies inside a
        group, that group's lines are lost as a whole and the file ends at the previous group:
        a trial it had created is then absent, or RUNNING under a dead driver (re-queued on
        resume); a trial it had told is re-run. Nothing is half-written and nothing is told
        COMPLETE twice.
        """

        def __init__(self, path: str | Path, lock: Any = None):
            from optuna.storages.journal import JournalFileBackend

            self.path = str(path)
            self._lock = lock if lock is not None else (JournalFlock(f"{path}.flock") if os.name == "posix" else None)
            self._file = JournalFileBackend(self.path, lock_obj=self._lock)
            self._in_file = 0  # lines of the file read so far
            self._pending: list[str] | None = None  # lines of the open group
            self._pending_logs: list[dict[str, Any]] = []
            self.commits = 0  #: fsynced writes of groups so far
            self._file_read_in_group = False

        def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
            start = min(log_number_from, self._in_file)
            if not self._file_read_in_group:  # inside a group the file cannot change after one read
                for number, log in enumerate(self._file.read_logs(start), start=start):
                    self._in_file = number + 1
                    if number >= log_number_from:
                        yield log
                self._file_read_in_group = self._pending is not None
            yield from self._pending_logs[max(0, log_number_from - self._in_file):]

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            if self._pending is None:
                self._file.append_logs(logs)
                return
            for log in logs:
                line = json.dumps(log, separators=(",", ":"))
                self._pending.append(line)
                self._pending_logs.append(json.loads(line))  # as a reader of the file will see it

        @contextlib.contextmanager
        def group(self) -> Iterator[None]:
            """Hold the lock; keep appends; write them with one fsync at the end (nested: no-op)."""
            if self._pending is not None or self._lock is None:
                yield
                return
            self._lock.acquire()
            self._pending, self._pending_logs = [], []
            self._file_read_in_group = False
            try:
                yield
            finally:
                lines, self._pending = self._pending, None
                try:
                    if lines:
                        with open(self.path, "ab") as f:
                            f.write(("\n".join(lines) + "\n").encode())
                            f.flush()
                            os.fsync(f.fileno())
                        self.commits += 1
                finally:
                    self._pending_logs, self._file_read_in_group = [], False
                    self._lock.release()

    return GroupCommitJournal


def make_storage(cfg: Any) -> Any:
    """The study's storage: a journal file (default ``<run>/study.journal``, written through
    ``group_commit_journal()``) or an Optuna URL."""
    from optuna.storages.journal import JournalStorage

    target = cfg.tune.storage
    if target is not None and "://" in target:
        return target
    path = Path(target) if target is not None else cfg.run_dir / "study.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(group_commit_journal()(path))


@contextlib.contextmanager
def storage_group(study: Any) -> Iterator[None]:
    """Group the study's storage writes (``GroupCommitJournal.group``) where it has one."""
    backend = getattr(study._storage, "_backend", None)
    with backend.group() if isinstance(backend, group_commit_journal()) else contextlib.nullcontext():
        yield


def storage_name(cfg: Any) -> str:
    """Where the study lives, for messages and records (a URL's password masked)."""
    from dask_pipeline.config import redact

    target = cfg.tune.storage
    return redact(target) if target is not None else str(cfg.run_dir / "study.journal")


def objective_digest(cfg: Any) -> dict[str, str]:
    """Per config key, a hash of what decides a trial's value (a study refuses another objective)."""
    data = cfg.to_dict()
    data["data"].pop("root", None)  # where the store lives, not what is in it
    for key in ("cache", "cache_dir"):
        data["features"].pop(key, None)
    tune = {k: v for k, v in data["tune"].items() if k not in NOT_OBJECTIVE}
    parts = {k: data[k] for k in ("seed", "data", "features", "label", "folds", "model", "backtest")}
    parts.update({f"tune.{k}": v for k, v in tune.items()})
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in parts.items()}


def open_study(cfg: Any, echo: Callable[..., Any] = print, storage: Any = None) -> tuple[Any, StudyState]:
    """Create or resume the config's study; re-queue trials a killed driver left RUNNING.

    Parameters
    ----------
    cfg
        A ``tune`` config.
    storage
        An Optuna storage or URL; default ``make_storage(cfg)``.

    Returns
    -------
    (optuna.Study, StudyState)
        The study with its seeded sampler and pruner, and what ``scan_trials`` found
        (after the re-queueing).
    """
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy.exc import SQLAlchemyError

    from dask_pipeline.config import redact

    tune = cfg.tune
    name = tune.study_name or cfg.output.run_name or "tune"
    storage = make_storage(cfg) if storage is None else storage
    try:
        with _optuna_quiet():
            study = optuna.create_study(storage=storage, study_name=name, directions=tune.directions,
                                        load_if_exists=True)
    except (ImportError, OSError, ValueError, SQLAlchemyError) as exc:
        reason = redact(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        raise StudyError(f"tune.storage: cannot open {storage_name(cfg)}: {reason}") from None
    digest = objective_digest(cfg)
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", digest)
    elif recorded != digest:
        changed = sorted(k for k in set(digest) | set(recorded) if digest.get(k) != recorded.get(k))
        raise ConfigError(
            f"tune: study {name!r} in {storage_name(cfg)} was made for another objective "
            f"({', '.join(changed)} changed); set tune.study_name for a new study, or remove the old one"
        )
    if list(study.directions) != [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else
                                  optuna.study.StudyDirection.MINIMIZE for d in tune.directions]:
        raise ConfigError(f"tune.direction: study {name!r} in {storage_name(cfg)} has other directions")

    trials = study.get_trials(deepcopy=False)
    state = scan_trials(trials, tune.round_digits)
    for t in state.stale:
        if t.number not in state.requeued:
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
            state.requeued.add(t.number)
        study.tell(t.number, state=TrialState.FAIL)
    seed = cfg.seed if tune.seed is None else tune.seed
    # A resumed study continues with fresh draws instead of replaying its first ones.
    sampler_seed = int(np.random.SeedSequence([seed, len(trials)]).generate_state(1)[0])
    study.sampler = SAMPLERS[tune.sampler](tune, sampler_seed)
    if trials:
        echo(f"tune: resuming study {name!r} ({storage_name(cfg)}): {state.counted} of {tune.n_trials} trials done"
             + (f", {len(state.stale)} interrupted trials re-queued" if state.stale else "")
             + (f", {state.running_elsewhere} running under other drivers" if state.running_elsewhere else ""))
    return study, state


def tell(study: Any, trial: Any, values: Any = None, state: Any = None) -> None:
    """``study.tell`` without the deep copy of the finished trial it returns (the driver
    never reads it; ~0.5 ms a trial on a study of 1,000): Optuna's own implementation of
    ``tell``, with the public method where that is not available."""
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:  # another Optuna layout: the public method does the same
        study.tell(trial, values, state=state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)


@dataclass(frozen=True)
class SharedInputs:
    """Bars and features as futures (computed once, shared by every trial), the union index,
    and ``bundle``: one future of ``(symbols, bars, features)`` that the fold tasks take (one
    dependency instead of two per symbol: less for the client to pack and the scheduler to
    track on each of the study's thousands of fold tasks; the frames are the same objects)."""

    symbols: list[str]
    bars: list[Any]
    features: list[Any]
    index: pd.DatetimeIndex
    bundle: Any = None


def _bundle(symbols: list[str], bars: list[pd.DataFrame], features: list[pd.DataFrame]) -> tuple:
    return symbols, bars, features


def run_fold(evaluate: Callable[..., dict[str, float]], job: bytes, k: int, bundle: tuple) -> dict[str, float]:
    """A trial's fold task: ``evaluate`` on fold ``k`` of the trial's ``job``.

    ``job`` is the trial's ``(folds, label, model, backtest, seed)`` pickled once by the
    driver, so its config objects are serialised once per trial instead of once per fold.
    """
    folds, label, model, backtest, seed = pickle.loads(job)
    symbols, bars, features = bundle
    return evaluate(folds[k], symbols, bars, features, label, model, backtest, seed)


def share_inputs(cfg: Any, client: Any) -> SharedInputs:
    """Compute every symbol's bars and features once on the cluster; keep them as futures."""
    from dask.base import tokenize

    from dask_pipeline.data import load_bars
    from dask_pipeline.graph import features_tasks, symbols_of
    from dask_pipeline.walkforward import union_index

    symbols = symbols_of(cfg)
    per_symbol = features_tasks(cfg)
    futures = client.compute([per_symbol[s][0] for s in symbols] + [per_symbol[s][1] for s in symbols],
                             retries=cfg.cluster.retries)
    # Folds are laid out on the client from the union of timestamps: only closes are read.
    index = union_index(load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, columns=["close"]).index
                        for s in symbols)
    bars, features = futures[: len(symbols)], futures[len(symbols):]
    bundle = client.submit(_bundle, symbols, bars, features,
                           key=f"tune-inputs-{tokenize(symbols, [f.key for f in futures])[:8]}")
    return SharedInputs(symbols, bars, features, index, bundle)


@dataclass
class LiveTrial:
    """A trial being evaluated: its config, folds, fold values so far, futures, waiting twins."""

    trial: Any
    cfg: Any
    folds: list[Fold]
    sig: str
    started: float
    job: bytes = b""  # its fold tasks' argument: (folds, label, model, backtest, seed), pickled
    token: str = ""  # of its fold tasks' arguments, in their keys
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
        from dask.base import tokenize

        self._base_token = tokenize(self.evaluate, self.inputs.bundle.key).encode()

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
            folds = self._layout(trial_cfg)
        except DaskPipelineError as exc:
            self._tell_failed(trial, str(exc))
            return
        job = pickle.dumps((folds, trial_cfg.label, trial_cfg.model, trial_cfg.backtest, trial_cfg.seed),
                           protocol=pickle.HIGHEST_PROTOCOL)
        # One token for all of the trial's fold tasks (fold k's key adds k), so two studies or
        # runs sharing a scheduler never mistake each other's trial-N-fold-K for their own.
        token = hashlib.sha1(self._base_token + job).hexdigest()[:8]
        live = LiveTrial(trial, trial_cfg, folds, sig, time.perf_counter(), job, token)
        self.live[trial.number] = live
        self.running[sig] = trial.number
        for k in [0] if self.pruned_stepwise else range(len(folds)):
            self._submit(live, k)

    def _layout(self, cfg: Any) -> list[Fold]:
        key = (cfg.folds.model_dump_json(), cfg.label.horizon)
        if key not in self._folds:
            self._folds[key] = make_folds(self.inputs.index, cfg.folds, cfg.label.horizon)
        return self._folds[key]

    def _submit(self, live: LiveTrial, k: int) -> None:
        key = f"trial-{live.trial.number:04d}-fold-{k:02d}-{live.token}"
        future = self.client.submit(run_fold, self.evaluate, live.job, k, self.inputs.bundle, key=key,
                                    retries=self.cfg.cluster.retries)
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
        if isinstance(row, BaseException):  # the fold's own error, reported on the trial
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
    with _optuna_quiet():
        driver = StudyDriver(study, state, cfg, client, inputs, echo)
        driver.run()
    return driver


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    # The driver reports each trial itself; Optuna's INFO lines would repeat them.
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# --------------------------------------------------------------------------- outputs


def best_trial(trials: Sequence[Any], tune: TuneConfig) -> Any | None:
    """The best evaluated (non-duplicate) COMPLETE trial; ties go to the lowest number.

    With several metrics: among the Pareto-optimal trials, the best on the first metric.
    """
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    if not done:
        return None
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in tune.directions])
    scores = np.array([t.values for t in done], dtype=np.float64) * signs
    if len(signs) > 1:
        dominated = ((scores[None, :, :] >= scores[:, None, :]).all(axis=2)
                     & (scores[None, :, :] > scores[:, None, :]).any(axis=2)).any(axis=1)
        candidates = [i for i in range(len(done)) if not dominated[i]]
    else:
        candidates = list(range(len(done)))
    best = max(candidates, key=lambda i: (scores[i, 0], -done[i].number))
    return done[best]


def pareto_front(trials: Sequence[Any], tune: TuneConfig) -> list[Any]:
    """The non-dominated evaluated COMPLETE trials (several metrics), by number."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    if not done:
        return []
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in tune.directions])
    scores = np.array([t.values for t in done], dtype=np.float64) * signs
    dominated = ((scores[None, :, :] >= scores[:, None, :]).all(axis=2)
                 & (scores[None, :, :] > scores[:, None, :]).any(axis=2)).any(axis=1)
    return [t for t, d in zip(done, dominated) if not d]


def trials_frame(trials: Sequence[Any], tune: TuneConfig) -> pd.DataFrame:
    """``trials.parquet``: one row per trial, by number.

    Columns: ``number``, ``state``, ``value`` (COMPLETE trials; ``value_<metric>`` for several),
    ``params_<path>`` per searched path, ``fold_values`` (list; or ``fold_values_<metric>``),
    ``n_folds`` (of the trial's layout), ``duration`` (seconds), ``duplicate_of``,
    ``rerun_of``, ``error`` (why it failed; ``interrupted`` for a trial re-queued after its
    driver stopped).
    """
    metrics = tune.metrics
    requeued = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        folds = t.user_attrs.get("folds", {})
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        # A pruned trial's Optuna value is its last partial aggregate: not an objective value.
        values = t.values if t.state.name == "COMPLETE" and t.values else [None] * len(metrics)
        if len(metrics) == 1:
            row["value"] = values[0]
        else:
            row.update({f"value_{m}": v for m, v in zip(metrics, values)})
        for path in sorted(tune.space):
            row[f"params_{path}"] = t.params.get(path)
        if len(metrics) == 1:
            row["fold_values"] = folds.get(metrics[0], [])
        else:
            row.update({f"fold_values_{m}": folds.get(m, []) for m in metrics})
        row["n_folds"] = folds.get("n")
        row["duration"] = t.duration.total_seconds() if t.duration is not None else None
        row["duplicate_of"] = t.user_attrs.get("duplicate_of")
        row["rerun_of"] = t.user_attrs.get("rerun_of")
        row["error"] = "interrupted" if t.number in requeued and t.state.name == "FAIL" else t.user_attrs.get("error")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for column in ("n_folds", "duplicate_of", "rerun_of"):
        frame[column] = frame[column].astype("Int64")
    for column in [c for c in frame.columns if c.startswith("value") or c == "duration"]:
        frame[column] = frame[column].astype("float64")
    for column in [c for c in frame.columns if c.startswith("params_")]:
        if frame[column].map(type).nunique() > 1 and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    frame["error"] = frame["error"].astype("str").where(frame["error"].notna(), None)
    return frame


def study_summary(trials: Sequence[Any]) -> dict[str, int]:
    """Counts over the whole study: states, duplicates, interruptions, folds run and skipped."""
    requeued = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    summary = dict.fromkeys(("trials", "complete", "pruned", "failed", "interrupted", "duplicates",
                             "folds_run", "folds_skipped"), 0)
    summary["trials"] = len(trials)
    for t in trials:
        state = t.state.name
        folds = t.user_attrs.get("folds", {})
        done = max((len(v) for k, v in folds.items() if k != "n"), default=0)
        if "duplicate_of" in t.user_attrs:
            summary["duplicates"] += 1
            continue
        if state == "COMPLETE":
            summary["complete"] += 1
        elif state == "PRUNED":
            summary["pruned"] += 1
            summary["folds_skipped"] += folds.get("n", done) - done
        elif state == "FAIL":
            summary["interrupted" if t.number in requeued else "failed"] += 1
        summary["folds_run"] += done
    return summary


def best_params(trials: Sequence[Any], cfg: Any, best: Any) -> dict[str, Any]:
    """``best_params.json``: the study, the best trial (params, value, fold values) and the summary."""
    tune = cfg.tune
    record: dict[str, Any] = {
        "study": tune.study_name or cfg.output.run_name or "tune",
        "storage": storage_name(cfg),
        "metric": tune.metric,
        "aggregate": tune.aggregate,
        "direction": tune.direction,
        "sampler": tune.sampler,
        "pruner": tune.pruning,
        "trial": best.number,
        "params": dict(sorted(best.params.items())),
        "value": best.values[0] if len(tune.metrics) == 1 else dict(zip(tune.metrics, best.values)),
        "fold_values": {m: best.user_attrs.get("folds", {}).get(m, []) for m in tune.metrics},
        "summary": study_summary(trials),
    }
    if len(tune.metrics) > 1:
        record["pareto_front"] = [{"trial": t.number, "values": dict(zip(tune.metrics, t.values)),
                                   "params": dict(sorted(t.params.items()))} for t in pareto_front(trials, tune)]
    return record


def save_plots(study: Any, cfg: Any, echo: Callable[..., Any] = print) -> dict[str, str]:
    """Optimisation history, parameter importances and parallel coordinates as PNG in ``<run>/plots/``.

    Returns
    -------
    dict
        Plot name -> file written, or the reason it was skipped.
    """
    import sys
    import warnings

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # a headless driver; a notebook keeps its own backend
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    from dask_pipeline.results import atomic_path

    tune = cfg.tune
    target = None if len(tune.metrics) == 1 else (lambda t: t.values[0])
    name = tune.metrics[0]
    seed = cfg.seed if tune.seed is None else tune.seed
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=name),
        "param_importances": lambda: vis.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), target=target, target_name=name),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=name),
    }
    done: dict[str, str] = {}
    for plot, draw in plots.items():
        if plot == "param_importances" and n_complete < 2:
            done[plot] = "skipped: fewer than 2 complete trials"
            echo(f"note: {plot} plot {done[plot]}")
            continue
        path = cfg.run_dir / "plots" / f"{plot}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                done[plot] = f"skipped: {exc}"
                echo(f"note: {plot} plot {done[plot]}")
                continue
        figure = np.atleast_1d(axes).flat[0].figure
        try:
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(figure)
        done[plot] = str(path.relative_to(cfg.run_dir))
    return done


def study_outputs(study: Any, cfg: Any, echo: Callable[..., Any] = print) -> tuple[Any, dict[str, Any]]:
    """The best trial's walk-forward config and the study's result files (plots written here).

    Returns
    -------
    (Config, dict)
        The best parameters applied to the config (a walk-forward), and ``trials``
        (DataFrame), ``best_params`` (dict), ``best_config.yaml`` (text: that walk-forward,
        runnable on its own as run ``<run>-best``).

    Raises
    ------
    StudyError
        When no trial completed.
    """
    from dask_pipeline.config import dump_config

    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials, cfg.tune)
    summary = study_summary(trials)
    if best is None:
        errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
        first = f"; first error: {errors[0]}" if errors else ""
        raise StudyError(f"tune: no trial completed ({summary['failed']} failed, {summary['pruned']} pruned){first}")
    best_cfg = apply_params(cfg, best.params)
    record = best_params(trials, cfg, best)
    record["plots"] = save_plots(study, cfg, echo)
    standalone = best_cfg.model_copy(update={"output": best_cfg.output.model_copy(
        update={"run_name": f"{cfg.output.run_name or 'run'}-best"})})
    value = record["value"]
    shown = f"{value:.4f}" if isinstance(value, float) else json.dumps(value)
    echo(f"tune: {summary['trials']} trials ({summary['complete']} complete, {summary['pruned']} pruned, "
         f"{summary['failed']} failed, {summary['interrupted']} interrupted and re-run, {summary['duplicates']} "
         f"duplicates told from the record; {summary['folds_run']} folds run, {summary['folds_skipped']} skipped "
         f"by pruning); best {cfg.tune.metrics[0] if len(cfg.tune.metrics) == 1 else 'values'} {shown} "
         f"at trial {best.number}: {json.dumps(record['params'])}")
    return best_cfg, {
        "trials": trials_frame(trials, cfg.tune),
        "best_params": record,
        "best_config.yaml": dump_config(standalone),
    }

