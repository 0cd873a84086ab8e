"""The search space: the tune section at load, signatures, a trial's config."""

from __future__ import annotations

import pytest
from optuna.distributions import IntDistribution

from dask_pipeline.config import dump_config, load_config
from dask_pipeline.errors import ConfigError
from dask_pipeline.tuning import (
    apply_params,
    signature,
)
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

