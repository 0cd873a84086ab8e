"""``features.<indicator>.<param>`` and ``.enabled``: the same keys in a config file and in ``-o`` overrides."""

from __future__ import annotations

import pytest

from dask_pipeline.config import dump_config, load_config
from dask_pipeline.errors import ConfigError, ExtensionError
from dask_pipeline.features import FeaturesConfig, indicator
from dask_pipeline.features.engine import DEFAULT_SET

TWO_SMAS = "features:\n  indicators: [{sma: {window: 10}}, {sma: {window: 50}}, rsi]\n"


def listed(cfg) -> list[tuple[str, dict]]:
    return [(s.name, s.params) for s in cfg.features.indicators]


def write(tmp_path, text: str = ""):
    path = tmp_path / "run.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'store'}}}\n{text}")
    return path


def test_parameters_of_listed_indicators(tmp_path):
    cfg = load_config(write(tmp_path), ["features.rsi.window=21", "features.macd.fast=5", "features.macd.slow=30"])
    names = [name for name, _ in DEFAULT_SET]
    assert [n for n, _ in listed(cfg)] == names  # same list, same order
    params = dict(listed(cfg))
    assert params["rsi"] == {"window": 21} and params["macd"] == {"fast": 5, "slow": 30, "signal": 9}
    # The same keys in the file; the resolved config holds the plain list, and loads back alike.
    in_file = load_config(write(tmp_path, "features:\n  rsi: {window: 21}\n  macd: {fast: 5, slow: 30}\n"))
    assert listed(in_file) == listed(cfg)
    (tmp_path / "again.yaml").write_text(dump_config(cfg))
    again = load_config(tmp_path / "again.yaml")
    assert listed(again) == listed(cfg) and "rsi:" not in dump_config(cfg).split("indicators:")[0]


def test_instances_by_place(tmp_path):
    cfg = load_config(write(tmp_path, TWO_SMAS), ["features.sma.1.window=60", "features.sma.0.window=5"])
    assert listed(cfg) == [("sma", {"window": 5}), ("sma", {"window": 60}), ("rsi", {"window": 14})]
    # An indicator listed once answers to place 0 as well.
    assert listed(load_config(write(tmp_path, TWO_SMAS), ["features.rsi.0.window=9"]))[2] == ("rsi", {"window": 9})


def test_enable_and_disable(tmp_path):
    path = write(tmp_path, "features:\n  indicators: [rsi, natr]\n")
    assert listed(load_config(path, ["features.natr.enabled=false"])) == [("rsi", {"window": 14})]
    # Enabling one that is not listed adds it at the end with its defaults (and parameters addressed with it) ...
    assert listed(load_config(path, ["features.wma.window=30", "features.wma.enabled=true"]))[-1] == \
        ("wma", {"window": 30})
    assert listed(load_config(path, ["features.obv.enabled=true"]))[-1] == ("obv", {})
    # ... enabling a listed one and disabling one that is not listed change nothing.
    assert listed(load_config(path, ["features.rsi.enabled=true", "features.obv.enabled=false"])) == \
        listed(load_config(path))
    # A parameter of an indicator the same keys disable does not matter (a search over both is valid).
    assert listed(load_config(path, ["features.natr.enabled=false", "features.natr.window=3"])) == \
        [("rsi", {"window": 14})]
    assert listed(load_config(path, ["features.wma.enabled=false", "features.wma.window=3"])) == listed(load_config(path))
    # One of two listed, by its place.
    assert listed(load_config(write(tmp_path, TWO_SMAS), ["features.sma.0.enabled=false"]))[0] == ("sma", {"window": 50})


@pytest.mark.parametrize(("overrides", "expected"), [
    (["features.rsl.window=5"], "'features.rsl': unknown key (did you mean 'rsi'?); the features section takes "
                                "indicators, cache, cache_dir, benchmark, and an indicator's name"),
    (["features.rsi.windw=5"], "'features.rsi.windw': rsi has no parameter 'windw' (did you mean 'window'?); "
                               "valid: window, enabled"),
    (["features.sma.window=5"], "'features.sma.window': sma is listed 2 times in features.indicators "
                                "(0: sma(window=10); 1: sma(window=50)); name one by its place among them: "
                                "features.sma.0.window, features.sma.1.window"),
    (["features.sma.enabled=false"], "'features.sma.enabled': sma is listed 2 times"),
    (["features.sma.2.window=5"], "'features.sma.2.window': sma is listed 2 times in features.indicators "
                                  "(0: sma(window=10); 1: sma(window=50)); places run from 0 to 1"),
    (["features.wma.window=5"], "'features.wma.window': wma is not in features.indicators; list it there, or add "
                                "it with features.wma.enabled: true"),
    (["features.rsi.window=1"], "'features.rsi.window': rsi.window=1 is out of range; allowed integer 2..100000"),
    (["features.rsi.enabled=maybe"], "'features.rsi.enabled': expected true or false, got 'maybe'"),
    (["features.rsi=7"], "'features.rsi': expected its parameters, e.g. features.rsi.window: 14"),
    (["features.sma.1.window=10"], "repeats 'sma_10'"),
])
def test_bad_addresses_name_the_key(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, TWO_SMAS), overrides)
    assert expected in str(err.value)


def test_user_indicators_are_addressed_alike(registry, tmp_path):
    @indicator("spread")
    def spread(bars, window: int = 5, scale: float = 1.0):
        return scale * (bars["high"] - bars["low"]).rolling(window).mean() / bars["close"]

    features = FeaturesConfig.model_validate({"indicators": ["rsi"], "spread": {"enabled": True, "scale": 2}})
    assert [(s.name, s.params) for s in features.indicators] == [("rsi", {"window": 14}),
                                                                 ("spread", {"window": 5, "scale": 2.0})]
    with pytest.raises(ExtensionError, match="'cache' is a key of the features section"):
        indicator("cache")(spread)
    with pytest.raises(ExtensionError, match="cannot be named 'enabled'"):
        indicator("toggled")(lambda bars, enabled=1: bars["close"])
