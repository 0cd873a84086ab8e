"""The search space: the tune section at load, signatures, a trial's config."""

from __future__ import annotations

import pytest
from optuna.distributions import IntDistribution

from dask_pipeline.config import dump_config, load_config
from dask_pipeline.errors import ConfigError
from dask_pipeline.graph import features_tasks
from dask_pipeline.tuning import apply_params, feature_set_id, signature
from tests.tuning.samples import write_config


def test_space_round_trips_through_the_written_config(tmp_path):
    cfg = load_config(write_config(tmp_path))
    space = cfg.tune.space
    assert space["model.params.max_depth"].distribution() == IntDistribution(2, 6)
    assert space["model.params.learning_rate"].log
    assert space["backtest.threshold"].grid() == [0.0, 0.001, 0.002]
    assert cfg.to_dict()["tune"]["space"]["model.params.learning_rate"] == {"float": [0.01, 0.3], "log": True}
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    again = load_config(tmp_path / "again.yaml", {"output.run_name": "study"})
    assert again.tune == cfg.tune and again.digest() == cfg.digest()
    assert cfg.tune.pruning == "median" and cfg.tune.metrics == ["sharpe"] and cfg.tune.directions == ["maximize"]


@pytest.mark.parametrize(("override", "expected"), [
    ({"tune.space": {"model.params.max_depth": {"int": [2]}}},
     "'tune.space.model.params.max_depth': int: expected [low, high]"),
    ({"tune.space": {"model.params.max_depth": {"integer": [2, 6]}}},
     "'tune.space.model.params.max_depth': unknown option 'integer'"),
    ({"tune.space": {"model.params.max_depth": {"int": [6, 2]}}}, "low 6 is above high 2"),
    ({"tune.space": {"model.params.max_depth": {"int": [2.5, 6]}}}, "int: low must be a whole number"),
    ({"tune.space": {"model.params.learning_rate": {"float": [0, 0.3], "log": True}}},
     "'tune.space.model.params.learning_rate': float: log needs low > 0"),
    ({"tune.space": {"backtest.rule": {"categorical": []}}}, "'tune.space.backtest.rule': categorical: expected a non-empty"),
    ({"tune.space": {"model.params.max_depth": {"categorical": [[1, 2]]}}}, "[1, 2] is not a scalar"),
    ({"tune.space": {"model.parms.max_depth": {"int": [2, 6]}}},
     "'tune.space.model.parms.max_depth': not a config key: unknown key 'model.parms' (did you mean 'params'?)"),
    ({"tune.space": {"modle.name": {"categorical": ["ridge"]}}},
     "'tune.space.modle.name': not a config key: unknown section 'modle' (did you mean 'model'?)"),
    ({"tune.space": {"seed.x": {"int": [1, 2]}}}, "'tune.space.seed.x': not a config key: seed is a value"),
    ({"tune.space": {"label.horizon": {"float": [1, 5]}}},
     "'tune.space.label.horizon': label.horizon does not accept 2.527864"),
    ({"tune.space": {"backtest.quantile": {"float": [0.1, 0.9]}}},
     "'tune.space.backtest.quantile': backtest.quantile does not accept 0.9"),
    ({"tune.space": {"model.name": {"categorical": ["ridge", "lasso"]}}}, "does not accept 'lasso'"),
    ({"tune.space": {"features.cache": {"categorical": [True, False]}}},
     "'tune.space.features.cache': features.cache cannot be searched: under features a study searches an "
     "indicator's parameters"),
    ({"tune.space": {"data.start": {"categorical": ["2019-01-01"]}}}, "'tune.space.data.start': data.* cannot be searched"),
    ({"tune.space": {"cluster.n_workers": {"int": [1, 2]}}}, "'tune.space.cluster.n_workers': cluster cannot be searched"),
    ({"tune.space": {}}, "'tune.space': is empty"),
    ({"tune.space": {"waves.up_to": {"int": [2, 4]}}},
     "'tune.space.waves.up_to': waves cannot be searched: a trial is a walk-forward"),
    ({"tune.space": {"monitor.max_stage_seconds": {"float": [10, 100]}}}, "monitor cannot be searched"),
    ({"tune.space": {"model.preset": {"categorical": ["fast", "quality"]}}, "model.name": "sklearn.linear_model.Ridge"},
     "'tune.space.model.preset': model.preset cannot be searched with model.name sklearn.linear_model.Ridge: "
     "presets size the built-in models only"),
    ({"tune.space": {"features.rsl.window": {"int": [5, 20]}}},
     "'tune.space.features.rsl.window': not a config key: 'features.rsl': unknown key (did you mean 'rsi'?)"),
    ({"tune.space": {"features.rsi.windw": {"int": [5, 20]}}},
     "'tune.space.features.rsi.windw': not a config key: 'features.rsi.windw': rsi has no parameter 'windw' "
     "(did you mean 'window'?)"),
    ({"tune.space": {"features.wma.window": {"int": [5, 20]}}},
     "'tune.space.features.wma.window': not a config key: 'features.wma.window': wma is not in features.indicators"),
    ({"tune.space": {"features.rsi.window": {"int": [1, 20]}}},
     "'tune.space.features.rsi.window': features.rsi.window does not accept 1, a value of this distribution "
     "('features.rsi.window': rsi.window=1 is out of range; allowed integer 2..100000)"),
    ({"tune.space": {"features.rsi.window": {"float": [5, 20]}}}, "features.rsi.window does not accept 10.7"),
    ({"tune.space": {"features.rsi": {"categorical": [True]}}}, "'tune.space.features.rsi': features.rsi cannot be "
     "searched: under features a study searches an indicator's parameters, features.<indicator>.<param>"),
    ({"tune.space": {"features.benchmark": {"categorical": ["SYN001"]}}}, "features.benchmark cannot be searched"),
    ({"tune.space": {"features.rsi.window": {"int": [5, 20]}}, "features.cache": False},
     "'tune.space.features.rsi.window': a search over features needs features.cache: true"),
    ({"tune.space": {"label.horizon": {"int": [1, 8]}}, "folds.purge": 5},
     "'tune.space.label.horizon': label.horizon does not accept 6, a value of this distribution ('<top>': "
     "folds.purge 5 is shorter than label.horizon 6"),
    ({"tune.feature_memory": "lots"}, "'tune.feature_memory': 'lots' is not a size (expected e.g. 2GiB or 500MB)"),
    ({"tune.n_trials": 0}, "'tune.n_trials': Input should be greater than or equal to 1"),
    ({"tune.metric": "sharp"}, "'tune.metric': unknown metric 'sharp' (did you mean 'sharpe'?)"),
    ({"tune.metric": ["sharpe", "cagr"], "tune.direction": ["maximize"]}, "direction lists 1 directions for 2 metrics"),
    ({"tune.metric": ["sharpe", "cagr"], "tune.pruner": "median"}, "cannot prune a study of several metrics"),
    ({"tune.sampler": "grid", "tune.space": {"backtest.threshold": {"float": [0.0, 0.01]}}},
     "'tune.space.backtest.threshold': the grid sampler needs a finite set of values"),
    ({"tune.n_trial": 3}, "unknown key 'tune.n_trial' (did you mean 'n_trials'?)"),
])
def test_bad_tune_sections_fail_at_load_naming_the_key(tmp_path, override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path), override)
    assert expected in str(err.value)


def test_an_empty_space_is_fine_for_other_graphs(tmp_path):
    cfg = load_config(write_config(tmp_path, extra="", graph="walkforward"))
    assert cfg.tune.space == {}


def test_several_metrics_default_to_no_pruner(tmp_path):
    cfg = load_config(write_config(tmp_path), {"tune.metric": ["sharpe", "max_drawdown"], "tune.sampler": "nsga2",
                                               "tune.direction": ["maximize", "maximize"]})
    assert cfg.tune.pruning == "none" and cfg.tune.directions == ["maximize", "maximize"]


def test_signature_is_canonical():
    a = {"model.params.max_depth": 3, "backtest.threshold": 0.001, "backtest.rule": "sign"}
    assert signature(a) == signature(dict(reversed(list(a.items()))))  # key order
    assert signature({**a, "backtest.threshold": 0.001 + 1e-15}) == signature(a)  # below round_digits
    assert signature({**a, "backtest.threshold": 0.0011}) != signature(a)
    assert signature({"x": 3}) == signature({"x": 3.0})
    assert signature({"x": 0.0}) == signature({"x": -0.0})
    assert signature({"x": "1"}) != signature({"x": 1}) and signature({"x": True}) != signature({"x": 1})
    assert signature({"x": 0.123456}, digits=3) == signature({"x": 0.1234999}, digits=3)


def test_apply_params_gives_a_validated_walkforward_config(tmp_path):
    cfg = load_config(write_config(tmp_path))
    trial = apply_params(cfg, {"model.params.max_depth": 4, "backtest.rule": "threshold"})
    assert trial.graph == "walkforward" and trial.tune.space == {}
    assert trial.model.params == {"max_depth": 4} and trial.backtest.rule == "threshold"
    # The shared sections are the very objects the shared tasks were keyed on.
    assert trial.features is cfg.features and trial.data is cfg.data
    with pytest.raises(ConfigError, match=r"params.max_depth: unknown parameter for ridge"):
        apply_params(cfg, {"model.name": "ridge", "model.params.max_depth": 4})



FEATURE_SPACE = """
tune:
  space:
    features.rsi.window: {int: [6, 20], step: 2}
    features.natr.enabled: {categorical: [true, false]}
    features.wma.enabled: {categorical: [true, false]}
    features.wma.window: {int: [5, 30]}
    label.horizon: {int: [1, 10]}
    label.task: {categorical: [regression, classification]}
    folds.train: {categorical: [200, 252]}
    folds.embargo: {int: [0, 5]}
"""


def test_trials_over_indicators_labels_and_folds(tmp_path):
    cfg = load_config(write_config(tmp_path, extra=FEATURE_SPACE))  # blank: ret, zscore, rsi, natr
    assert cfg.tune.searches_features and "feature_memory" not in cfg.to_dict()["tune"]["space"]
    params = {"features.rsi.window": 8, "features.natr.enabled": False, "features.wma.enabled": True,
              "features.wma.window": 12, "label.horizon": 10, "label.task": "classification", "folds.train": 200}
    trial = apply_params(cfg, params)
    assert [(s.name, s.params) for s in trial.features.indicators] == [
        ("ret", {"lag": 1}), ("zscore", {"window": 20}), ("rsi", {"window": 8}), ("wma", {"window": 12})]
    assert (trial.label.horizon, trial.label.task, trial.folds.train, trial.folds.purge) == (10, "classification",
                                                                                           200, None)
    # Another trial with the same feature set: an equal section, the same set and the same features-<S> keys.
    other = apply_params(cfg, {**params, "label.horizon": 3, "folds.train": 252})
    key = lambda c: features_tasks(c, ["SYN000"])["SYN000"][1].key  # noqa: E731
    assert other.features == trial.features and feature_set_id(other.features) == feature_set_id(trial.features)
    assert key(other) == key(trial) != key(cfg)
    # With wma off its window does not matter: one feature set.
    off = [apply_params(cfg, {"features.wma.enabled": False, "features.wma.window": w}) for w in (5, 25)]
    assert feature_set_id(off[0].features) == feature_set_id(off[1].features) == feature_set_id(cfg.features)
    # A trial without a features path keeps the study's very section (and its keys).
    assert apply_params(cfg, {"label.horizon": 3}).features is cfg.features
    # Values valid one by one may not be together: the trial's config says which key (the driver fails the trial).
    macd = load_config(write_config(tmp_path), {"features.indicators": ["rsi", "macd"],
                                                "tune.space": {"features.macd.fast": {"int": [5, 25]}}})
    with pytest.raises(ConfigError, match=r"'features.indicators.1': indicator 'macd': fast \(30\) must be shorter"):
        apply_params(macd, {"features.macd.fast": 30})

def test_an_ambiguous_indicator_path_names_the_places(tmp_path):
    two = {"features.indicators": [{"sma": {"window": 10}}, {"sma": {"window": 50}}, "rsi"]}
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path), {**two, "tune.space": {"features.sma.window": {"int": [5, 20]}}})
    assert ("'tune.space.features.sma.window': not a config key: 'features.sma.window': sma is listed 2 times in "
            "features.indicators (0: sma(window=10); 1: sma(window=50)); name one by its place among them: "
            "features.sma.0.window, features.sma.1.window") in str(err.value)
    cfg = load_config(write_config(tmp_path), {**two, "tune.space": {"features.sma.0.window": {"int": [5, 20]},
                                                                     "features.sma.1.window": {"int": [30, 60]}}})
    trial = apply_params(cfg, {"features.sma.0.window": 7, "features.sma.1.window": 40})
    assert [s.params["window"] for s in trial.features.indicators if s.name == "sma"] == [7, 40]
