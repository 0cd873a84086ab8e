"""The search space: the ``tune`` config section, its distributions, and how a trial's
parameters become a config.

A path in ``tune.space`` is a dotted config key; ``check_space`` proves at load that the
config accepts every probed value of its distribution, and ``apply_params`` builds a
trial's config. Indicator parameters are paths too (``features.rsi.window``,
``features.sma.1.window``, ``features.obv.enabled``: ``features.address``). The root
config class is taken from the config passed in, so this module never imports
``dask_pipeline.config`` (which imports it for ``TuneConfig``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from dask_pipeline.backtest import METRICS, TRADE_METRICS
from dask_pipeline.errors import ConfigError
from dask_pipeline.schema import Section, describe_error, did_you_mean, set_dotted

KINDS = ("int", "float", "categorical")
#: Walk-forward metrics a study can optimise: columns of a fold's ``portfolio`` row.
TUNABLE_METRICS = (*METRICS, *TRADE_METRICS)
#: Sections a trial may not change: they are computed once and shared by every trial.
SHARED_SECTIONS = ("data",)
#: Sections that describe how a run is executed or the search itself, never a trial.
UNTUNABLE = ("graph", "tune", "cluster", "output")
#: Sections a trial (a walk-forward) never reads: searching them would change nothing.
NOT_READ = ("waves", "monitor", "plugins")
#: The search parameters that do not change what a trial's value means.
NOT_OBJECTIVE = ("n_trials", "timeout", "sampler", "pruner", "seed", "concurrency", "storage", "study_name",
                 "feature_memory")


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
    ``feature_memory`` bounds the feature sets the driver keeps on the cluster between the
    trials that use them (a size such as ``2GiB``; see ``tuning.inputs.FeaturePool``).
    """

    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    metric: str | list[str] = "sharpe"
    aggregate: Literal["mean", "median", "min"] = "mean"
    direction: Literal["maximize", "minimize"] | list[Literal["maximize", "minimize"]] = "maximize"
    sampler: Literal["tpe", "random", "cmaes", "grid", "nsga2"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] | None = None
    seed: int | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1)
    storage: str | None = None
    study_name: str | None = None
    round_digits: int = Field(10, ge=1, le=17)
    feature_memory: str = "2GiB"
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

    @field_validator("feature_memory")
    @classmethod
    def _is_size(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            size = parse_bytes(value)
        except (ValueError, TypeError):
            raise ValueError(f"{value!r} is not a size (expected e.g. 2GiB or 500MB)") from None
        if size < 0:
            raise ValueError(f"{value!r} is negative; expected a size such as 2GiB")
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
    def feature_memory_bytes(self) -> int:
        """``feature_memory`` in bytes."""
        from dask.utils import parse_bytes

        return parse_bytes(self.feature_memory)

    @property
    def searches_features(self) -> bool:
        """Whether the space has a ``features.*`` path (trials then differ in their feature sets)."""
        return any(path.split(".")[0] == "features" for path in self.space)

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
    ``data`` and the sections a trial never reads (``waves``, ``monitor``, ``plugins``; nor
    ``model.preset`` for an estimator given by class path) -- under ``features`` only an
    indicator's parameter or ``enabled`` (``features.rsi.window``) -- and the config must accept every probed value of its
    distribution (both ends, an interior point, or the listed choices): checked by
    validating the whole config with the value in place, so every section's own rules
    apply. A parameter of an indicator whose ``enabled`` the space also searches is
    probed with it enabled. A search over features needs ``features.cache`` (a feature
    set is then computed once per study, see ``tuning.inputs``). The ``tune`` graph also
    needs a non-empty space. ``Config`` calls this at load.
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
            problem = _path_problem(type(cfg), _with_enabled(base, path, space), path, param, list(space))
            if problem is not None:
                fail(("tune", "space", path), *problem)
        searched = [p for p in space if p.split(".")[0] == "features"]
        if searched and not cfg.features.cache:
            fail(("tune", "space", searched[0]), "a search over features needs features.cache: true: each feature "
                 "set is then computed once in the study, and one the driver let go of (tune.feature_memory) or "
                 "computed before a resume is read back from the cache instead of computed again",
                 space[searched[0]].model_dump())
    if cfg.tune.sampler == "grid":
        for path, param in space.items():
            if param.grid() is None:
                fail(("tune", "space", path), "the grid sampler needs a finite set of values: give a step, "
                     "or use categorical", param.model_dump())
    if errors:
        raise ValidationError.from_exception_data("Config", errors)


def _with_enabled(base: dict[str, Any], path: str, space: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the indicator of ``path`` enabled when the space also searches its ``enabled``."""
    from dask_pipeline.features.address import ENABLED

    parts = path.split(".")
    if parts[0] != "features" or len(parts) < 3 or parts[-1] == ENABLED:
        return base
    toggle = ".".join([*parts[:-1], ENABLED])
    if toggle not in space:
        return base
    data = copy.deepcopy(base)
    set_dotted(data, toggle, True)
    return data


def _path_problem(root: type, base: dict[str, Any], path: str, param: Param,
                  space_paths: Sequence[str] = ()) -> tuple[str, Any] | None:
    from dask_pipeline.features.address import ADDRESS_ERROR, SECTION_KEYS
    from dask_pipeline.models import is_class_path

    parts = path.split(".")
    head = parts[0]
    if head in UNTUNABLE:
        return f"{head} cannot be searched: it says how the study runs, not what a trial computes", param.model_dump()
    if head in NOT_READ:
        return (f"{head} cannot be searched: a trial is a walk-forward (seed, features, label, folds, model, "
                f"backtest) and never reads {head}, so every value would score the same", param.model_dump())
    if path == "model.preset" and "model.name" not in space_paths and is_class_path(base["model"].get("name", "")):
        return (f"model.preset cannot be searched with model.name {base['model']['name']}: presets size the "
                "built-in models only, so every value would score the same; search its model.params instead",
                param.model_dump())
    if head in SHARED_SECTIONS:
        return (f"{head}.* cannot be searched: the bars are loaded once and shared by every trial; "
                "run one study per data set", param.model_dump())
    if head == "features" and (len(parts) < 3 or parts[1] in SECTION_KEYS):
        what = f"features.{parts[1]}" if len(parts) > 1 else "features"
        return (f"{what} cannot be searched: under features a study searches an indicator's parameters, "
                "features.<indicator>.<param> (e.g. features.rsi.window), or features.<indicator>.enabled",
                param.model_dump())
    if head not in root.model_fields:
        valid = [f for f in root.model_fields if f not in UNTUNABLE + SHARED_SECTIONS + NOT_READ]
        return f"not a config key: unknown section '{head}'{did_you_mean(head, valid)}", param.model_dump()
    for value in param.probes():
        data = copy.deepcopy(base)
        try:
            set_dotted(data, path, value)
            root.model_validate(data)
        except ConfigError as exc:
            return f"not a config key: {exc}", param.model_dump()
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "extra_forbidden":
                return f"not a config key: {describe_error(err, root)}", param.model_dump()
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == ADDRESS_ERROR:
                return f"not a config key: {message}", param.model_dump()
            where = ".".join(str(p) for p in err["loc"]) or "<top>"
            if message.startswith(f"'{where}."):  # the message names the key itself
                return f"{path} does not accept {value!r}, a value of this distribution ({message})", value
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
    Its ``data`` section is the very object of ``cfg`` (a search never changes it), and so
    is ``features`` when no path is under it: a walk-forward of the copy then names the
    same ``load-``/``features-`` keys as ``cfg``'s. Two trials with the same feature set
    get equal ``features`` sections, which name the same keys too.

    Raises
    ------
    ConfigError
        When the values together are not a valid config (e.g. a parameter the chosen
        model does not take), naming the key.
    """
    data = _trial_dict(cfg)
    for path, value in params.items():
        set_dotted(data, path, value)
    # pydantic takes validated section instances as they are (the features list is most of
    # a config's validation time, paid on every trial otherwise).
    touched = {path.split(".")[0] for path in params}
    data.update({name: getattr(cfg, name) for name in (*SHARED_SECTIONS, "features") if name not in touched})
    try:
        return type(cfg).model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(describe_error(err, type(cfg)) for err in exc.errors())) from None


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
