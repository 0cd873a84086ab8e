"""Labels, the estimator registry with its presets, and per-fold training.

One registry, ``MODELS``: a name maps to a ``ModelSpec`` naming the scikit-learn class
(or scikit-learn-compatible one, such as XGBoost's) for each task it supports, the
parameters it always runs with, one parameter set per preset (``blank`` for smoke runs in
seconds, ``fast``, ``balanced``, ``quality``), the devices it trains on, and the
parameters the framework manages for it (``managed``: seed, threads, device). Adding a
model is one ``ModelSpec`` and one registry line.

Conventions of ``fit_fold``:

- Training rows whose label or any feature is NaN (or infinite) are dropped, for every
  model alike (HistGBM could take NaN features; the other models cannot, and one rule
  keeps models comparable). Test rows with a NaN feature get a NaN prediction, which the
  backtest reads as flat.
- The scaler is fit on the kept training rows only, then applied to both slices.
- Regression predicts the forward return. Classification predicts ``P(up) - 0.5`` in
  ``[-0.5, 0.5]``: its sign is the direction, so the ``sign`` rule goes long above
  ``P(up) = 0.5`` and the ``threshold`` rule needs ``|P(up) - 0.5| > threshold``.
- Importances: impurity-based where the model has ``feature_importances_`` (forests,
  summing to 1); otherwise permutation importance on the test slice (rows with finite
  features and label), in units of the estimator's score (R^2 or accuracy) lost; NaN
  where that score is undefined (fewer than two such rows, or a constant label).
- Randomness: ``random_state`` comes from ``model_seed(seed, fold_index, symbol)``
  (``np.random.SeedSequence``); estimators run with ``n_jobs=1``. Same inputs, same bits.
- Device (``model.device``): ``cpu``, ``cuda`` (models whose ``ModelSpec.devices`` include
  it: ``xgboost``, and an estimator by class path with a ``device`` parameter), or ``auto``,
  which the graph resolves once per run with ``resolve_device``: ``cuda`` when the model
  trains on a GPU and the cluster has GPU workers, else ``cpu`` (so the choice never
  depends on which worker a task lands on; an unresolved ``auto`` reaching ``fit_fold``
  trains on the CPU). A ``cuda`` fit checks that its process sees a GPU and stops with one
  line if not, rather than let XGBoost fall back to the CPU silently. XGBoost trains on the
  GPU and predicts on the CPU (the trees are the model; no device round trip for the test
  rows). GPU and CPU fits of the same seed are different models -- XGBoost builds its GPU
  histograms in another summation order -- each repeatable on its own device.

Any scikit-learn-compatible estimator can be named by its class path instead of a
registry name (``model.name: sklearn.linear_model.Lasso``, ``lightgbm.LGBMRegressor``,
``xgboost.XGBClassifier``, ``mylab.models.Shrunk``): built without arguments, then given
``model.params`` (checked against its ``get_params()`` at load) and the framework-managed
parameters it has (``managed_params``: seed, single-threading and device, whatever their
names). Presets size the registry's models only; a class path runs with its own defaults.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator, model_validator

from dask_pipeline.errors import ClusterError, ConfigError, DataError
from dask_pipeline.features.scalers import make_scaler
from dask_pipeline.schema import Section, did_you_mean

TASKS = ("regression", "classification")
PRESETS = ("blank", "fast", "balanced", "quality")
DEVICES = ("auto", "cpu", "cuda")
#: The names estimators give their seed and their thread count (scikit-learn, XGBoost,
#: LightGBM, CatBoost); an estimator by class path gets whichever of them it has.
SEED_PARAMS = ("random_state", "seed", "random_seed")
THREAD_PARAMS = ("n_jobs", "nthread", "num_threads", "thread_count")
# Set by the framework, never by a config, with the reason: seeds derive from config.seed,
# estimators run single-threaded inside Dask tasks, and model.device picks the device.
MANAGED_PARAMS = {
    **dict.fromkeys(SEED_PARAMS, "seeded from config.seed"),
    **dict.fromkeys(THREAD_PARAMS, "single-threaded inside tasks"),
    "device": "set model.device instead",
}
#: Per library (top-level module): keyword arguments that keep its native code from
#: printing to the terminal (LightGBM writes warnings from C++ unless told not to).
QUIET_PARAMS = {"lightgbm": {"verbose": -1}, "xgboost": {"verbosity": 0}}


# --------------------------------------------------------------------------- labels


class LabelConfig(Section):
    """``label`` section: forward return over ``horizon`` bars, or its direction."""

    horizon: int = Field(default=5, ge=1)
    task: Literal["regression", "classification"] = "regression"


def make_label(close, horizon: int, task: str = "regression"):
    """Forward return ``close[t + horizon] / close[t] - 1``, or its direction as 1 / 0.

    Parameters
    ----------
    close : pd.Series or 1-D array
        One symbol's closes, in time order.
    horizon : int
        Bars ahead, >= 1.
    task : {"regression", "classification"}
        ``classification`` gives 1.0 where the forward return is > 0, else 0.0.

    Returns
    -------
    pd.Series (same index, name ``"label"``) or float64 ndarray
        NaN for the last ``horizon`` rows and wherever a close is NaN.
    """
    _check_task(task)
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ConfigError(f"label.horizon: expected an integer >= 1, got {horizon!r}")
    values = np.asarray(close, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(f"make_label: expected one column of closes, got shape {values.shape}")
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        where = close.index[bad[0]] if isinstance(close, pd.Series) else int(bad[0])
        raise DataError(f"make_label: close must be > 0, got {values[bad[0]]} at row {where}")
    label = np.full(values.shape, np.nan)
    if horizon < len(values):
        label[:-horizon] = values[horizon:] / values[:-horizon] - 1.0
    if task == "classification":
        label = np.where(np.isnan(label), np.nan, (label > 0).astype(np.float64))
    if isinstance(close, pd.Series):
        return pd.Series(label, index=close.index, name="label")
    return label


# ------------------------------------------------------------------------- registry


def seeded(valid: frozenset[str], random_state: int, device: str) -> dict[str, Any]:
    """Managed parameters of a scikit-learn estimator: ``random_state`` where it takes one."""
    return {"random_state": random_state} if "random_state" in valid else {}


def xgboost_managed(valid: frozenset[str], random_state: int, device: str) -> dict[str, Any]:
    """Managed parameters of an XGBoost estimator: seed, one thread, and the device."""
    return {"random_state": random_state, "n_jobs": 1, "device": device}


@dataclass(frozen=True)
class ModelSpec:
    """An estimator family: class per task, fixed parameters, parameters per preset, the
    devices it trains on, and ``managed(valid_params, random_state, device)``: the
    parameters the framework sets on every estimator it builds (never a config).

    Classes are named by import path (``"sklearn.linear_model.Ridge"``) and imported on
    first use: scikit-learn takes over a second to import, and loading or rejecting a
    config needs it only for a config that sets ``model.params``. ``extra`` names the
    pip extra that installs a class outside the base dependencies.
    """

    regressor: str | None
    classifier: str | None
    fixed: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: tuple[str, ...] = ("cpu",)
    managed: Callable[[frozenset[str], int, str], dict[str, Any]] = seeded
    extra: str | None = None

    def installed(self) -> bool:
        """Whether its classes' top-level package can be imported (without importing it)."""
        path = self.regressor or self.classifier
        return importlib.util.find_spec(path.split(".", 1)[0]) is not None

    def supports(self, task: str) -> bool:
        """Whether the family has an estimator for ``task`` (without importing it)."""
        return (self.regressor if task == "regression" else self.classifier) is not None

    def estimator_class(self, task: str) -> type | None:
        """The estimator class for ``task``, or None where the family has none."""
        path = self.regressor if task == "regression" else self.classifier
        return None if path is None else _import_class(path)

    def param_names(self) -> frozenset[str]:
        """Parameters of any of its estimators (``get_params`` keys)."""
        return _param_names(self.regressor, self.classifier)


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def is_class_path(name: str) -> bool:
    """Whether ``model.name`` is an estimator's class path (``sklearn.linear_model.Lasso``) rather than a registry name."""
    return "." in name


def estimator_class(path: str) -> type:
    """The estimator class at ``path``, checked to look like a scikit-learn estimator.

    Raises ``ConfigError`` (without a key: the config's validator names it) for a module or
    class that is not there (with did-you-mean), or a class without ``fit``, ``predict``
    and ``get_params``, or one that cannot be built without arguments.
    """
    from dask_pipeline.usercode import import_class

    cls = import_class(path)
    missing = [m for m in ("fit", "predict", "get_params") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"{path} is not a scikit-learn-compatible estimator: it has no {', '.join(missing)}")
    try:
        cls()
    except Exception as exc:
        raise ConfigError(f"{path}() failed ({type(exc).__name__}: {exc}); an estimator by class path must "
                          "build without arguments (its parameters come from model.params)") from None
    return cls


def managed_params(cls: type, random_state: int, device: str = "cpu") -> dict[str, Any]:
    """The parameters the framework sets on an estimator by class path: one hook for every estimator.

    Its seed (every name in ``SEED_PARAMS`` it has) from ``model_seed``, its threads
    (``THREAD_PARAMS``) to 1, as for the registry's models, its ``device`` where it takes
    one (``model.device``, resolved), and its library's quiet flags.
    """
    valid = set(cls().get_params())
    params: dict[str, Any] = {name: random_state for name in SEED_PARAMS if name in valid}
    params.update({name: 1 for name in THREAD_PARAMS if name in valid})
    if "device" in valid:
        params["device"] = device
    params.update(QUIET_PARAMS.get(cls.__module__.split(".")[0], {}))
    return params


def model_devices(name: str) -> tuple[str, ...]:
    """The devices model ``name`` trains on: its registry entry's, or for a class path the
    CPU, and CUDA too where the estimator takes a ``device`` parameter (XGBoost's)."""
    if is_class_path(name):
        return ("cpu", "cuda") if "device" in _param_names(name) else ("cpu",)
    return MODELS[name].devices if name in MODELS else DEVICES


@functools.cache
def _param_names(*paths: str | None) -> frozenset[str]:
    # Building an estimator to ask its parameters costs ~1 ms; every trial's config asks.
    return frozenset(name for path in paths if path is not None for name in _import_class(path)().get_params())


_TREES = {
    "blank": {"n_estimators": 5, "max_depth": 2},
    "fast": {"n_estimators": 50, "max_depth": 6, "min_samples_leaf": 20, "max_features": 0.5},
    "balanced": {"n_estimators": 200, "max_depth": 8, "min_samples_leaf": 20, "max_features": 0.5},
    "quality": {"n_estimators": 500, "max_depth": 12, "min_samples_leaf": 10, "max_features": 0.5},
}

MODELS: dict[str, ModelSpec] = {
    "ridge": ModelSpec(
        "sklearn.linear_model.Ridge", None,
        presets={p: {"alpha": 1.0} for p in PRESETS},
    ),
    "logistic": ModelSpec(
        None, "sklearn.linear_model.LogisticRegression",
        presets={
            "blank": {"C": 1.0, "max_iter": 50},
            "fast": {"C": 1.0, "max_iter": 100},
            "balanced": {"C": 1.0, "max_iter": 200},
            "quality": {"C": 1.0, "max_iter": 1000},
        },
    ),
    "random_forest": ModelSpec(
        "sklearn.ensemble.RandomForestRegressor", "sklearn.ensemble.RandomForestClassifier", fixed={"n_jobs": 1},
        presets=_TREES,
    ),
    "extra_trees": ModelSpec(
        "sklearn.ensemble.ExtraTreesRegressor", "sklearn.ensemble.ExtraTreesClassifier", fixed={"n_jobs": 1},
        presets=_TREES,
    ),
    "hist_gbm": ModelSpec(
        "sklearn.ensemble.HistGradientBoostingRegressor", "sklearn.ensemble.HistGradientBoostingClassifier",
        presets={
            "blank": {"max_iter": 5, "max_depth": 2},
            "fast": {"max_iter": 50, "max_depth": 4, "learning_rate": 0.1},
            "balanced": {"max_iter": 200, "max_leaf_nodes": 31, "learning_rate": 0.05,
                         "min_samples_leaf": 50, "l2_regularization": 1.0},
            "quality": {"max_iter": 500, "max_leaf_nodes": 63, "learning_rate": 0.03,
                        "min_samples_leaf": 50, "l2_regularization": 1.0},
        },
    ),
    "mlp": ModelSpec(
        "sklearn.neural_network.MLPRegressor", "sklearn.neural_network.MLPClassifier",
        fixed={"early_stopping": True},
        presets={
            "blank": {"hidden_layer_sizes": (8,), "max_iter": 20},
            "fast": {"hidden_layer_sizes": (32,), "max_iter": 100},
            "balanced": {"hidden_layer_sizes": (64, 32), "max_iter": 200, "alpha": 1e-4},
            "quality": {"hidden_layer_sizes": (128, 64), "max_iter": 500, "alpha": 1e-4},
        },
    ),
    # Histogram trees on the CPU or the GPU (model.device); `pip install -e ".[xgboost]"`.
    "xgboost": ModelSpec(
        "xgboost.XGBRegressor", "xgboost.XGBClassifier",
        fixed={"tree_method": "hist", "verbosity": 0},
        presets={
            "blank": {"n_estimators": 5, "max_depth": 2},
            "fast": {"n_estimators": 100, "max_depth": 4, "learning_rate": 0.1},
            "balanced": {"n_estimators": 300, "max_depth": 6, "learning_rate": 0.05, "subsample": 0.8,
                         "colsample_bytree": 0.8, "min_child_weight": 5, "reg_lambda": 1.0},
            "quality": {"n_estimators": 800, "max_depth": 8, "learning_rate": 0.03, "subsample": 0.8,
                        "colsample_bytree": 0.8, "min_child_weight": 5, "reg_lambda": 1.0},
        },
        devices=("cpu", "cuda"),
        managed=xgboost_managed,
        extra="xgboost",
    ),
}


class ModelConfig(Section):
    """``model`` section: estimator name, preset, parameter overrides, scope, scaler, device."""

    name: str = "hist_gbm"
    preset: Literal["blank", "fast", "balanced", "quality"] = "balanced"
    params: dict[str, Any] = Field(default_factory=dict)
    scope: Literal["pooled", "per_symbol"] = "pooled"
    scaler: Literal["standard", "minmax", "none"] = "standard"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if is_class_path(value):
            try:
                estimator_class(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            return value
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}{did_you_mean(value, list(MODELS))}; expected one of "
                             f"{', '.join(MODELS)}, or an estimator's class path such as sklearn.linear_model.Lasso")
        spec = MODELS[value]
        if spec.extra is not None and not spec.installed():
            raise ValueError(f"{value} is not installed: pip install -e '.[{spec.extra}]'")
        return value

    @field_validator("device")
    @classmethod
    def _device_supported(cls, value: str, info: ValidationInfo) -> str:
        name = info.data.get("name")  # absent when the name itself was refused
        devices = model_devices(name) if name is not None else DEVICES
        if value != "auto" and value not in devices:
            gpu = [m for m, s in MODELS.items() if value in s.devices]
            raise ValueError(
                f"{value!r}: {name} trains on {' and '.join(devices)} only; use auto or cpu, "
                f"or a model that trains on {value}: {', '.join(gpu)}"
            )
        return value

    @model_validator(mode="after")
    def _known_params(self) -> "ModelConfig":
        if not self.params:  # asking the estimator for its parameters imports scikit-learn
            return self
        if is_class_path(self.name):
            names = _param_names(self.name)
            managed = set(MANAGED_PARAMS) & names
        else:
            names, managed = MODELS[self.name].param_names(), set(MANAGED_PARAMS)
        valid = sorted(names - managed)
        for key in self.params:
            if key in managed:
                raise ValueError(f"params.{key} is set by the framework ({MANAGED_PARAMS[key]}); remove it")
            if key not in valid:
                raise ValueError(
                    f"params.{key}: unknown parameter for {self.name}{did_you_mean(key, valid)}; valid: "
                    f"{', '.join(valid)}"
                )
        return self

    def preset_note(self) -> str | None:
        """A note when a preset is set with an estimator by class path (presets size registry models only)."""
        if is_class_path(self.name) and "preset" in self.model_fields_set:
            return (f"model.preset {self.preset!r} sizes the built-in models only; {self.name} runs with its "
                    "own defaults and model.params")
        return None


def check_task(name: str, task: str, params: Mapping[str, Any] | None = None) -> None:
    """ConfigError unless model ``name`` has an estimator for ``task`` taking ``params``."""
    _check_task(task)
    if is_class_path(name):
        _check_class_task(name, task)
        return
    spec = MODELS.get(name)
    if spec is None:
        raise ConfigError(
            f"model.name: unknown model {name!r}; expected one of {', '.join(MODELS)}"
        )
    if not spec.supports(task):
        supported = [t for t in TASKS if spec.supports(t)]
        fits = [m for m, s in MODELS.items() if s.supports(task)]
        raise ConfigError(
            f"model.name: {name!r} supports {' and '.join(supported)} only, but label.task is "
            f"{task!r}; for {task} use one of {', '.join(fits)}"
        )
    if params:  # the other task's estimator may take a parameter this one does not (class_weight)
        path = spec.regressor if task == "regression" else spec.classifier
        unknown = sorted(set(params) - _param_names(path) - set(MANAGED_PARAMS))
        if unknown:
            raise ConfigError(
                f"model.params.{unknown[0]}: {name} for label.task {task} ({path.rpartition('.')[2]}) has no parameter "
                f"{unknown[0]!r}; it is a parameter of the {name} for the other task"
            )


def _check_class_task(path: str, task: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    estimator = estimator_class(path)()
    if task == "classification" and (is_regressor(estimator) or not hasattr(estimator, "predict_proba")):
        raise ConfigError(f"model.name: {path} is not a classifier with predict_proba, but label.task is "
                          "'classification'; name a classifier or set label.task: regression")
    if task == "regression" and is_classifier(estimator):
        raise ConfigError(f"model.name: {path} is a classifier, but label.task is 'regression'; name a "
                          "regressor or set label.task: classification")


def model_seed(seed: int, fold_index: int, symbol: str | None = None) -> int:
    """The estimator's ``random_state``: from ``SeedSequence([seed, fold_index(, symbol)])``.

    ``symbol`` (for ``scope: per_symbol``) enters as its CRC32, stable across processes.
    """
    entropy = [int(seed), int(fold_index)]
    if symbol is not None:
        entropy.append(zlib.crc32(str(symbol).encode()))
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def resolve_device(cfg: ModelConfig, gpu_workers: bool) -> ModelConfig:
    """``cfg`` with ``device`` decided for a cluster with or without GPU workers.

    ``auto`` becomes ``cuda`` when the model trains on a GPU and there are GPU workers, else
    ``cpu``; ``cuda`` without GPU workers is a ``ClusterError`` (a CPU fit would be another
    model, so it is refused rather than substituted). The graph calls this once per run and
    sends ``cuda`` fits to the GPU workers.
    """
    if cfg.device == "cuda" and not gpu_workers:
        raise ClusterError(
            "model.device is 'cuda' but the cluster has no GPU worker (resource GPU); run on a GPU node "
            "(cluster.kind: local-cuda, or cluster/cuda-worker.sh), or set model.device: auto or cpu"
        )
    if cfg.device != "auto" or "cuda" not in model_devices(cfg.name):
        return cfg  # a CPU-only model's auto is the CPU already (and its tasks keep their keys)
    return cfg.model_copy(update={"device": "cuda" if gpu_workers else "cpu"})


def make_estimator(cfg: ModelConfig, task: str, random_state: int):
    """A fresh, unfitted estimator: fixed parameters, the preset, ``cfg.params``, then the managed ones.

    An estimator by class path gets ``cfg.params`` and ``managed_params`` (no preset).
    """
    check_task(cfg.name, task)
    device = "cpu" if cfg.device == "auto" else cfg.device  # auto unresolved by a graph: the CPU
    if device == "cuda":
        require_gpu(cfg.name)
    if is_class_path(cfg.name):
        cls = estimator_class(cfg.name)
        return cls(**{**cfg.params, **managed_params(cls, random_state, device)})
    spec = MODELS[cfg.name]
    cls = spec.estimator_class(task)
    valid = frozenset(cls().get_params())
    params = {**spec.fixed, **spec.presets[cfg.preset], **cfg.params}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ConfigError(
            f"model.params: {', '.join(unknown)} not valid for {cls.__name__}; valid: "
            f"{', '.join(sorted(valid - set(MANAGED_PARAMS)))}"
        )
    return cls(**params, **spec.managed(valid, random_state, device))


def require_gpu(name: str) -> None:
    """``ClusterError`` unless this process sees a CUDA GPU that model ``name`` can train on."""
    if (name == "xgboost" or name.startswith("xgboost.")) and not _xgboost_sees_gpu():
        import socket

        raise ClusterError(
            f"model.device is 'cuda' but XGBoost sees no CUDA GPU in this process (host {socket.gethostname()}); "
            "run the fit tasks on GPU workers, or set model.device: auto or cpu"
        )


@functools.cache
def _xgboost_sees_gpu() -> bool:
    """Whether XGBoost trains on a GPU here: a one-row fit, and the device its booster reports."""
    import json

    import xgboost

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No visible GPU is found": the answer, not a warning for the user
        booster = xgboost.train({"device": "cuda", "nthread": 1, "verbosity": 0},
                                xgboost.DMatrix(np.zeros((2, 1)), label=np.zeros(2)), num_boost_round=1)
    return json.loads(booster.save_config())["learner"]["generic_param"]["device"].startswith("cuda")


# ------------------------------------------------------------------------- training


def fit_fold(
    train_X,
    train_y,
    test_X,
    test_y,
    model_cfg: ModelConfig,
    task: str,
    seed: int,
    fold_index: int,
    feature_names=None,
    symbol: str | None = None,
) -> tuple[np.ndarray, pd.Series]:
    """Fit one fold's model on its training rows and predict its test rows.

    Parameters
    ----------
    train_X, test_X : 2-D array or DataFrame, same columns
    train_y : 1-D array or Series
        Labels from ``make_label``; NaN rows are dropped (with NaN-feature rows).
    test_y : 1-D array, Series or None
        Test labels, used only for permutation importance; None gives NaN importances
        for models without ``feature_importances_``.
    model_cfg : ModelConfig
    task : {"regression", "classification"}
    seed, fold_index : int
        Seed the estimator and permutation importance (``model_seed``).
    feature_names : sequence of str, optional
        Defaults to DataFrame columns, else ``x0, x1, ...``.
    symbol : str, optional
        For ``scope: per_symbol``: call once per symbol with its rows; it enters the seed.

    Returns
    -------
    predictions : float64 ndarray, one per test row (see the module docstring)
    importances : pd.Series indexed by feature name, name ``"importance"``;
        ``attrs["method"]`` is ``"impurity"`` or ``"permutation"``.
    """
    check_task(model_cfg.name, task)
    names = _feature_names(train_X, feature_names)
    Xtr = _matrix(train_X, "train_X", len(names))
    Xte = _matrix(test_X, "test_X", len(names))
    ytr = _vector(train_y, "train_y", len(Xtr))
    keep = np.isfinite(Xtr).all(axis=1) & np.isfinite(ytr)
    Xtr, ytr = Xtr[keep], ytr[keep]
    where = f"fold {fold_index}" + (f" symbol {symbol}" if symbol is not None else "")
    if len(Xtr) == 0:
        raise DataError(f"{where}: no training rows without NaN label or features")
    if task == "classification":
        classes = np.unique(ytr)
        if not np.isin(classes, (0.0, 1.0)).all():
            raise DataError(f"{where}: classification labels must be 0/1, got {classes[:5]}")
        if len(classes) < 2:
            raise DataError(
                f"{where}: every training label is {int(classes[0])}; classification needs both"
            )
        ytr = ytr.astype(np.int64)

    from sklearn.exceptions import ConvergenceWarning

    random_state = model_seed(seed, fold_index, symbol)
    scaler = make_scaler(model_cfg.scaler).fit(Xtr)
    estimator = make_estimator(model_cfg, task, random_state)
    with warnings.catch_warnings():
        # blank/fast presets stop iterative models early on purpose.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(scaler.transform(Xtr), ytr)
    if getattr(estimator, "device", "cpu") != "cpu":
        # Predict on the CPU: the test rows are on the host, and XGBoost would otherwise warn
        # about mismatched devices and copy them over for every predict call.
        estimator.set_params(device="cpu")

    Ste = scaler.transform(Xte)
    rows = np.isfinite(Ste).all(axis=1)
    predictions = np.full(len(Xte), np.nan)
    if rows.any():
        predictions[rows] = _predict(estimator, Ste[rows], task)

    if hasattr(estimator, "feature_importances_"):
        values, method = np.asarray(estimator.feature_importances_, dtype=np.float64), "impurity"
    else:
        values = _permutation(estimator, Ste, rows, test_y, task, random_state)
        method = "permutation"
    importances = pd.Series(values, index=pd.Index(names, name="feature"), name="importance")
    importances.attrs["method"] = method
    return predictions, importances


def _predict(estimator, X: np.ndarray, task: str) -> np.ndarray:
    if task == "regression":
        return np.asarray(estimator.predict(X), dtype=np.float64)
    up = list(estimator.classes_).index(1)
    return np.asarray(estimator.predict_proba(X)[:, up], dtype=np.float64) - 0.5


def _permutation(estimator, Ste, rows, test_y, task, random_state) -> np.ndarray:
    from sklearn.inspection import permutation_importance

    n_features = Ste.shape[1]
    if test_y is None:
        return np.full(n_features, np.nan)
    yte = _vector(test_y, "test_y", len(Ste))
    usable = rows & np.isfinite(yte)
    # The score (R^2, accuracy) of fewer than two rows, or of a constant target, is
    # undefined: NaN importances, not a warning per feature and repeat from every worker.
    if usable.sum() < 2 or np.ptp(yte[usable]) == 0:
        return np.full(n_features, np.nan)
    from sklearn.exceptions import UndefinedMetricWarning

    target = yte[usable].astype(np.int64) if task == "classification" else yte[usable]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = permutation_importance(
            estimator, Ste[usable], target, n_repeats=5, random_state=random_state, n_jobs=1
        )
    return np.asarray(result.importances_mean, dtype=np.float64)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"label.task: expected one of {', '.join(TASKS)}, got {task!r}")


def _feature_names(X, feature_names) -> list[str]:
    if feature_names is not None:
        return [str(n) for n in feature_names]
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    return [f"x{i}" for i in range(np.shape(X)[1])]


def _matrix(X, what: str, n_features: int) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise DataError(f"{what}: expected shape (rows, {n_features}), got {arr.shape}")
    return arr


def _vector(y, what: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64)
    if arr.shape != (n_rows,):
        raise DataError(f"{what}: expected {n_rows} values, got shape {arr.shape}")
    return arr
