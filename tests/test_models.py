import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from dask_pipeline import models
from dask_pipeline.config import Config
from dask_pipeline.errors import ClusterError, ConfigError, DataError
from dask_pipeline.models import (
    MODELS,
    PRESETS,
    TASKS,
    LabelConfig,
    ModelConfig,
    check_task,
    fit_fold,
    make_estimator,
    make_label,
    model_seed,
    resolve_device,
)

FEATURES = ["sma_20", "rsi_14", "std_20", "atr_14"]


def dataset(n_train=160, n_test=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_train + n_test, len(FEATURES))) * [1.0, 10.0, 0.1, 3.0] + [0, 50, 1, 5]
    signal = X[:, 0] - 0.05 * (X[:, 1] - 50) + rng.normal(scale=0.5, size=len(X))
    frame = pd.DataFrame(X, columns=FEATURES)
    reg = signal * 0.01
    cls = (signal > 0).astype(np.float64)
    return frame.iloc[:n_train], frame.iloc[n_train:], reg, cls, n_train


def run(name, task, preset="blank", seed=7, fold=0, **kwargs):
    Xtr, Xte, reg, cls, n = dataset()
    y = reg if task == "regression" else cls
    cfg = ModelConfig(name=name, preset=preset, **kwargs)
    return fit_fold(Xtr, y[:n], Xte, y[n:], cfg, task, seed, fold)


NEEDS_XGBOOST = pytest.mark.skipif(not MODELS["xgboost"].installed(), reason="xgboost is not installed")
CASES = [
    pytest.param(name, task, marks=[] if spec.installed() else [NEEDS_XGBOOST])
    for name, spec in MODELS.items()
    for task in TASKS
    if spec.supports(task)
]


# ---------------------------------------------------------------- labels


def test_label_regression_and_classification():
    close = pd.Series([100.0, 110.0, 99.0, 99.0, 120.0],
                      index=pd.date_range("2024-01-01", periods=5, tz="UTC"))
    reg = make_label(close, 2, "regression")
    np.testing.assert_allclose(reg.to_numpy()[:3], [99 / 100 - 1, 99 / 110 - 1, 120 / 99 - 1])
    assert reg.isna().tolist() == [False, False, False, True, True]
    assert reg.index.equals(close.index) and reg.name == "label"
    cls = make_label(close.to_numpy(), 1, "classification")
    np.testing.assert_array_equal(cls, [1.0, 0.0, 0.0, 1.0, np.nan])


def test_label_validation():
    with pytest.raises(DataError, match="close must be > 0"):
        make_label(np.array([1.0, 0.0, 2.0]), 1)
    with pytest.raises(ConfigError, match="horizon"):
        make_label(np.array([1.0, 2.0]), 0)
    with pytest.raises(ConfigError, match="task"):
        make_label(np.array([1.0, 2.0]), 1, "ranking")
    assert LabelConfig() == LabelConfig(horizon=5, task="regression")
    with pytest.raises(ValidationError):
        LabelConfig(horizon=0)


# ---------------------------------------------------------------- registry


def test_registry_covers_the_issue():
    assert set(MODELS) == {"ridge", "logistic", "random_forest", "extra_trees", "hist_gbm", "mlp", "xgboost"}
    for spec in MODELS.values():
        assert set(spec.presets) == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("name", "task"), CASES)
def test_every_model_fits_and_predicts_under_every_preset(name, task, preset):
    pred, imp = run(name, task, preset)
    assert pred.dtype == np.float64 and pred.shape == (60,)
    assert np.isfinite(pred).all()
    if task == "classification":
        assert (np.abs(pred) <= 0.5).all()
    assert list(imp.index) == FEATURES and imp.name == "importance"
    assert np.isfinite(imp).all()
    assert imp.attrs["method"] in ("impurity", "permutation")


def test_estimators_are_seeded_and_single_threaded():
    est = make_estimator(ModelConfig(name="random_forest"), "regression", 123)
    assert est.random_state == 123 and est.n_jobs == 1 and est.n_estimators == 200
    mlp = make_estimator(ModelConfig(name="mlp", preset="blank"), "classification", 1)
    assert mlp.early_stopping is True and mlp.max_iter == 20


def test_params_override_the_preset():
    est = make_estimator(
        ModelConfig(name="hist_gbm", preset="fast", params={"max_iter": 7}), "regression", 0
    )
    assert est.max_iter == 7 and est.max_depth == 4


@pytest.mark.parametrize(("name", "task"), CASES)
def test_deterministic_bit_for_bit(name, task):
    pred1, imp1 = run(name, task, seed=3, fold=2)
    pred2, imp2 = run(name, task, seed=3, fold=2)
    assert pred1.tobytes() == pred2.tobytes()
    assert imp1.to_numpy().tobytes() == imp2.to_numpy().tobytes()


def test_seed_derivation():
    expected = int(np.random.SeedSequence([3, 2]).generate_state(1)[0])
    assert model_seed(3, 2) == expected
    seeds = {model_seed(3, 2), model_seed(3, 1), model_seed(4, 2), model_seed(3, 2, "AAPL")}
    assert len(seeds) == 4
    a, _ = run("random_forest", "regression", seed=3, fold=1)
    b, _ = run("random_forest", "regression", seed=3, fold=2)
    assert not np.array_equal(a, b)


def test_symbol_enters_the_seed():
    Xtr, Xte, reg, _, n = dataset()
    cfg = ModelConfig(name="extra_trees", preset="blank")
    a, _ = fit_fold(Xtr, reg[:n], Xte, reg[n:], cfg, "regression", 1, 0, symbol="AAPL")
    b, _ = fit_fold(Xtr, reg[:n], Xte, reg[n:], cfg, "regression", 1, 0, symbol="MSFT")
    assert not np.array_equal(a, b)


def test_task_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="'ridge' supports regression only.*logistic"):
        run("ridge", "classification")
    with pytest.raises(ConfigError, match="'logistic' supports classification only"):
        check_task("logistic", "regression")


def test_unknown_param_names_it_and_the_valid_names():
    message = "params.n_trees: unknown parameter for random_forest.*; valid: .*n_estimators"
    with pytest.raises(ValidationError, match=message):
        ModelConfig(name="random_forest", params={"n_trees": 10})
    with pytest.raises(ValidationError, match="params.random_state is set by the framework"):
        ModelConfig(name="ridge", params={"random_state": 1})
    with pytest.raises(ValidationError, match="unknown model 'lightgbm'"):
        ModelConfig(name="lightgbm")
    with pytest.raises(ValidationError):
        ModelConfig(preset="huge")
    with pytest.raises(ValidationError):
        ModelConfig(engine="gpu")


def test_a_param_of_the_other_tasks_estimator_fails_at_load():
    # class_weight is RandomForestClassifier's: a regression fold would fail on every worker.
    with pytest.raises(ConfigError, match=r"model.params.class_weight: random_forest for label.task regression "
                                          r"\(RandomForestRegressor\) has no parameter 'class_weight'"):
        check_task("random_forest", "regression", {"class_weight": "balanced"})
    check_task("random_forest", "classification", {"class_weight": "balanced"})
    with pytest.raises(ValidationError, match="has no parameter 'class_weight'"):
        Config.model_validate({"model": {"name": "hist_gbm", "params": {"class_weight": "balanced"}},
                               "label": {"task": "regression"}})


def test_config_defaults():
    cfg = ModelConfig()
    assert (cfg.name, cfg.preset, cfg.params, cfg.scope, cfg.scaler, cfg.device) == (
        "hist_gbm", "balanced", {}, "pooled", "standard", "auto"
    )


# ---------------------------------------------------------------- fit_fold


def test_scaler_is_fit_on_training_rows_only(monkeypatch):
    fitted = []
    real = models.make_scaler

    def spy(kind):
        scaler = real(kind)
        fitted.append(scaler)
        return scaler

    monkeypatch.setattr(models, "make_scaler", spy)
    Xtr, Xte, reg, _, n = dataset()
    cfg = ModelConfig(name="ridge", preset="blank")
    pred1, _ = fit_fold(Xtr, reg[:n], Xte, reg[n:], cfg, "regression", 0, 0)
    moved = Xte.copy()
    moved.iloc[30:] = moved.iloc[30:] * 1000 + 1e6
    pred2, _ = fit_fold(Xtr, reg[:n], moved, reg[n:], cfg, "regression", 0, 0)

    np.testing.assert_array_equal(fitted[0].offset_, fitted[1].offset_)
    np.testing.assert_array_equal(fitted[0].scale_, fitted[1].scale_)
    np.testing.assert_allclose(fitted[0].offset_, Xtr.mean().to_numpy())
    assert pred1[:30].tobytes() == pred2[:30].tobytes()


def test_nan_training_rows_are_dropped_and_nan_test_rows_predict_nan():
    Xtr, Xte, reg, _, n = dataset()
    cfg = ModelConfig(name="ridge", preset="blank")
    ytr = reg[:n].copy()
    dirty_X = Xtr.copy()
    dirty_X.iloc[5, 1] = np.nan
    ytr[9] = np.nan
    keep = np.ones(n, dtype=bool)
    keep[[5, 9]] = False
    dirty_test = Xte.copy()
    dirty_test.iloc[0, 0] = np.nan
    got, _ = fit_fold(dirty_X, ytr, dirty_test, reg[n:], cfg, "regression", 0, 0)
    clean, _ = fit_fold(Xtr[keep], reg[:n][keep], Xte, reg[n:], cfg, "regression", 0, 0)
    assert np.isnan(got[0])
    assert got[1:].tobytes() == clean[1:].tobytes()


def test_importances():
    _, imp = run("random_forest", "regression")
    assert imp.attrs["method"] == "impurity"
    assert imp.sum() == pytest.approx(1.0)
    _, imp = run("ridge", "regression", preset="fast")
    assert imp.attrs["method"] == "permutation"
    assert imp.idxmax() in ("sma_20", "rsi_14")  # the features the label is made of
    Xtr, Xte, reg, _, n = dataset()
    _, imp = fit_fold(Xtr, reg[:n], Xte, None, ModelConfig(name="ridge"), "regression", 0, 0)
    assert imp.isna().all()


def test_permutation_importance_of_an_undefined_score_is_nan_not_a_warning():
    """A one-row or constant test slice has no R^2 or accuracy: NaN importances, silently."""
    import warnings

    Xtr, Xte, reg, cls, n = dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, one = fit_fold(Xtr, reg[:n], Xte.iloc[:1], reg[n:n + 1], ModelConfig(name="ridge"), "regression", 0, 0)
        _, flat = fit_fold(Xtr, cls[:n], Xte.iloc[:5], np.ones(5), ModelConfig(name="logistic"), "classification", 0, 0)
    assert one.isna().all() and flat.isna().all() and one.attrs["method"] == "permutation"


def test_classification_predicts_centred_probability():
    pred, _ = run("logistic", "classification", preset="balanced")
    _, _, _, cls, n = dataset()
    accuracy = ((pred > 0) == (cls[n:] == 1)).mean()
    assert accuracy > 0.7


def test_bad_training_data():
    Xtr, Xte, _, cls, n = dataset()
    cfg = ModelConfig(name="logistic", preset="blank")
    with pytest.raises(DataError, match="fold 4: every training label is 1"):
        fit_fold(Xtr, np.ones(n), Xte, None, cfg, "classification", 0, 4)
    with pytest.raises(DataError, match="no training rows"):
        fit_fold(Xtr, np.full(n, np.nan), Xte, None, cfg, "classification", 0, 4)
    with pytest.raises(DataError, match="train_y: expected 160 values"):
        fit_fold(Xtr, cls[:10], Xte, None, cfg, "classification", 0, 4)


# ---------------------------------------------------------------- device and XGBoost


def test_only_gpu_models_take_device_cuda():
    with pytest.raises(ValidationError, match="'cuda': hist_gbm trains on cpu only; use auto or cpu, or a model that trains on cuda: xgboost"):
        ModelConfig(device="cuda")
    with pytest.raises(ValidationError, match=r"params.device is set by the framework \(set model.device instead\)"):
        ModelConfig(name="random_forest", params={"device": "cuda"})
    assert ModelConfig(name="hist_gbm", device="cpu").device == "cpu"


@NEEDS_XGBOOST
def test_device_auto_follows_the_cluster_and_cuda_needs_gpu_workers():
    xgb = ModelConfig(name="xgboost")
    assert resolve_device(xgb, gpu_workers=True).device == "cuda"
    assert resolve_device(xgb, gpu_workers=False).device == "cpu"
    cpu_only = ModelConfig(name="hist_gbm")
    assert resolve_device(cpu_only, gpu_workers=True) is cpu_only  # nothing to decide: same config, same keys
    with pytest.raises(ClusterError, match="model.device is 'cuda' but the cluster has no GPU worker"):
        resolve_device(ModelConfig(name="xgboost", device="cuda"), gpu_workers=False)


@NEEDS_XGBOOST
def test_xgboost_parameters_are_managed():
    est = make_estimator(ModelConfig(name="xgboost", preset="fast"), "regression", 4_000_000_000)
    params = est.get_params()
    assert (params["random_state"], params["n_jobs"], params["device"], params["tree_method"]) == (
        4_000_000_000, 1, "cpu", "hist")
    assert params["n_estimators"] == 100
    for key in ("nthread", "seed", "n_jobs", "random_state"):
        with pytest.raises(ValidationError, match=f"params.{key} is set by the framework"):
            ModelConfig(name="xgboost", params={key: 1})
    tuned = make_estimator(ModelConfig(name="xgboost", params={"max_depth": 3}), "classification", 1)
    assert tuned.max_depth == 3 and tuned.n_estimators == 300


@NEEDS_XGBOOST
@pytest.mark.skipif(models._xgboost_sees_gpu() if MODELS["xgboost"].installed() else True,
                    reason="checks the refusal without a GPU")
def test_xgboost_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(ClusterError, match="model.device is 'cuda' but XGBoost sees no CUDA GPU in this process"):
        run("xgboost", "regression", device="cuda")


@NEEDS_XGBOOST
@pytest.mark.skipif(not (MODELS["xgboost"].installed() and models._xgboost_sees_gpu()), reason="needs a CUDA GPU")
def test_xgboost_trains_on_the_gpu_repeatably():
    import json
    import warnings

    Xtr, Xte, y, _, n = dataset(n_train=2000, n_test=200)
    cfg = ModelConfig(name="xgboost", preset="balanced", device="cuda")
    est = make_estimator(cfg, "regression", 5)
    est.fit(Xtr.to_numpy(), y[:n])
    assert json.loads(est.get_booster().save_config())["learner"]["generic_param"]["device"].startswith("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no device-mismatch fallback warning when predicting
        gpu1, imp = fit_fold(Xtr, y[:n], Xte, y[n:], cfg, "regression", 7, 1)
    gpu2, _ = fit_fold(Xtr, y[:n], Xte, y[n:], cfg, "regression", 7, 1)
    assert np.isfinite(gpu1).all() and imp.attrs["method"] == "impurity"
    assert gpu1.tobytes() == gpu2.tobytes()


# ------------------------------------------------------------- estimators by class path


def test_class_path_estimator_gets_params_seed_and_one_thread():
    cfg = ModelConfig(name="sklearn.ensemble.ExtraTreesRegressor", params={"n_estimators": 7, "max_depth": 3})
    estimator = make_estimator(cfg, "regression", 123)
    assert estimator.get_params()["n_estimators"] == 7 and estimator.random_state == 123 and estimator.n_jobs == 1
    assert cfg.preset_note() is None
    first = run("sklearn.ensemble.ExtraTreesRegressor", "regression", params={"n_estimators": 5})
    again = run("sklearn.ensemble.ExtraTreesRegressor", "regression", params={"n_estimators": 5})
    np.testing.assert_array_equal(first[0], again[0])
    other = run("sklearn.ensemble.ExtraTreesRegressor", "regression", seed=8, params={"n_estimators": 5})
    assert not np.array_equal(first[0], other[0])  # the config seed reaches it


def test_class_path_errors_name_the_key_and_the_closest_name():
    with pytest.raises(ValidationError, match=r"module sklearn.linear_model has no 'Laso' \(did you mean 'Lasso'\?\)"):
        ModelConfig(name="sklearn.linear_model.Laso")
    with pytest.raises(ValidationError, match=r"no module named 'sklearn.linear_modle' "
                                              r"\(did you mean 'sklearn.linear_model'\?\)"):
        ModelConfig(name="sklearn.linear_modle.Lasso")
    with pytest.raises(ValidationError, match=r"params.alpah: unknown parameter for sklearn.linear_model.Lasso "
                                              r"\(did you mean 'alpha'\?\)"):
        ModelConfig(name="sklearn.linear_model.Lasso", params={"alpah": 0.1})
    with pytest.raises(ValidationError, match=r"params.random_state is set by the framework"):
        ModelConfig(name="sklearn.linear_model.Lasso", params={"random_state": 1})
    with pytest.raises(ValidationError, match=r"collections.OrderedDict is not a scikit-learn-compatible estimator"):
        ModelConfig(name="collections.OrderedDict")
    with pytest.raises(ConfigError, match=r"sklearn.linear_model.Lasso is not a classifier with predict_proba"):
        check_task("sklearn.linear_model.Lasso", "classification")
    with pytest.raises(ConfigError, match=r"sklearn.linear_model.LogisticRegression is a classifier"):
        check_task("sklearn.linear_model.LogisticRegression", "regression")


def test_presets_size_built_in_models_only_and_say_so():
    cfg = ModelConfig(name="sklearn.linear_model.Ridge", preset="blank")
    assert "sizes the built-in models only" in cfg.preset_note()
    assert make_estimator(cfg, "regression", 1).get_params()["alpha"] == 1.0  # Ridge's own default
    assert ModelConfig(name="ridge", preset="blank").preset_note() is None


@pytest.mark.parametrize("path", ["lightgbm.LGBMRegressor", "xgboost.XGBRegressor", "lightgbm.LGBMClassifier",
                                  "xgboost.XGBClassifier"])
def test_gradient_boosting_libraries_by_class_path(path, capfd):
    pytest.importorskip(path.split(".")[0])
    task = "classification" if path.endswith("Classifier") else "regression"
    params = {"n_estimators": 20, "max_depth": 3}
    estimator = make_estimator(ModelConfig(name=path, params=params), task, 99)
    found = estimator.get_params()
    assert found["random_state"] == 99 and found["n_jobs"] == 1
    first, importances = run(path, task, params=params)
    again, _ = run(path, task, params=params)
    np.testing.assert_array_equal(first, again)
    assert np.isfinite(first).all() and importances.attrs["method"] == "impurity"
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the native libraries stay quiet
