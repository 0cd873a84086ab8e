"""Feature config: forms accepted, defaults filled, errors that name what is allowed."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from dask_pipeline.features import DEFAULT_INDICATORS, INDICATORS, FeaturesConfig, IndicatorSpec
from dask_pipeline.features.engine import DEFAULT_SET


def _error(data, model=IndicatorSpec) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


def test_long_short_and_bare_forms_are_the_same_spec():
    long = IndicatorSpec.model_validate({"name": "sma", "params": {"window": 20}})
    assert IndicatorSpec.model_validate({"sma": {"window": 20}}) == long
    assert IndicatorSpec.model_validate("sma") == long  # default window 20
    assert IndicatorSpec.model_validate({"sma": None}) == long
    assert long.columns == ["sma_20"]


def test_yaml_short_form():
    text = """
    indicators:
      - sma: {window: 50}
      - macd: {fast: 5}
      - bbands: {nbdev: 2.5}
      - obv
    cache: false
    """
    cfg = FeaturesConfig.model_validate(yaml.safe_load(text))
    assert [c for s in cfg.indicators for c in s.columns] == [
        "sma_50", "macd_5_26_9", "macd_signal_5_26_9", "macd_hist_5_26_9",
        "bb_pctb_20_2p5", "bb_width_20_2p5", "obv",
    ]  # fmt: skip
    assert cfg.cache is False


def test_params_are_completed_in_declared_order_and_typed():
    spec = IndicatorSpec(name="macd", params={"signal": 4, "fast": 3.0})
    assert list(spec.params.items()) == [("fast", 3), ("slow", 26), ("signal", 4)]
    assert type(spec.params["fast"]) is int
    assert type(IndicatorSpec(name="bbands", params={"nbdev": 2}).params["nbdev"]) is float
    # a loaded spec dumps to itself
    cfg = FeaturesConfig(indicators=[spec])
    assert FeaturesConfig.model_validate(cfg.model_dump()) == cfg


def test_unknown_indicator_names_the_closest():
    message = _error({"name": "rsii"})
    assert "unknown indicator 'rsii'" in message and "did you mean 'rsi'" in message
    assert "did you mean 'macd'" in _error({"mcad": {}})


def test_unknown_param_names_the_allowed_ones():
    message = _error({"sma": {"windw": 3}})
    assert "has no parameter 'windw'" in message and "window (integer 2..100000)" in message
    assert "allowed: none" in _error({"obv": {"window": 3}})


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"sma": {"window": 1}}, "sma.window=1 is out of range"),
        ({"sma": {"window": 2.5}}, "must be an integer"),
        ({"sma": {"window": "20"}}, "sma.window must be an integer 2..100000, got '20'"),
        ({"rsi": {"window": True}}, "must be an integer"),
        ({"bbands": {"nbdev": "2"}}, "bbands.nbdev must be a number 0.01..100.0"),
        ({"bbands": {"nbdev": 0}}, "bbands.nbdev=0.0 is out of range"),
        ({"macd": {"fast": 30}}, "fast (30) must be shorter than slow (26)"),
        ({"name": "sma", "params": [20]}, "must be a mapping"),
    ],
)
def test_invalid_params(data, fragment):
    assert fragment in _error(data)


def test_features_config_defaults_and_rules():
    cfg = FeaturesConfig()
    assert cfg.indicators == DEFAULT_INDICATORS
    assert [(s.name, s.params) for s in cfg.indicators] == [(n, p) for n, p in DEFAULT_SET]
    assert (cfg.cache, cfg.cache_dir, cfg.benchmark) == (True, ".cache/features", None)
    assert "set benchmark" in _error({"indicators": ["corr"]}, FeaturesConfig)
    FeaturesConfig(indicators=["corr", "beta"], benchmark="SPY")
    assert "repeats 'sma_20'" in _error({"indicators": ["sma", {"sma": {"window": 20}}]}, FeaturesConfig)
    assert "indicators is empty" in _error({"indicators": []}, FeaturesConfig)
    assert "'features.cache_directory': unknown key (did you mean 'cache_dir'?)" in \
        _error({"cache_directory": "x"}, FeaturesConfig)
    with pytest.raises(ValidationError):
        cfg.cache = False  # frozen


def test_error_location_points_at_the_item():
    with pytest.raises(ValidationError) as info:
        FeaturesConfig.model_validate({"indicators": ["sma", {"smaa": {}}]})
    assert info.value.errors()[0]["loc"][:2] == ("indicators", 1)


def test_every_indicator_has_valid_defaults_and_distinct_columns():
    columns = []
    for name in INDICATORS:
        columns += IndicatorSpec(name=name).columns
    assert len(columns) == len(set(columns))
