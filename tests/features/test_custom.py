"""User indicators: ``@indicator`` registers into the one registry; output, parameters and cache key are checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from dask_pipeline.errors import ExtensionError
from dask_pipeline.features import FeaturesConfig, IndicatorSpec, cache_key, compute, compute_cached, indicator
from dask_pipeline.features.custom import is_user_indicator, make_indicator
from tests.features.samples import make_bars

BARS = make_bars("gappy", 400, seed=5)


def test_registered_indicator_is_used_like_a_built_in(registry, tmp_path):
    @indicator("spread")
    def spread(bars, window: int = 5, scale: float = 1.0):
        return scale * (bars["high"] - bars["low"]).rolling(window).mean() / bars["close"]

    assert is_user_indicator("spread") and not is_user_indicator("sma")
    cfg = FeaturesConfig(indicators=["sma", {"spread": {"window": 3, "scale": 2.5}}], cache_dir=str(tmp_path))
    assert cfg.indicators[1].params == {"window": 3, "scale": 2.5}
    frame = compute(BARS, cfg)
    assert list(frame.columns) == ["sma_20", "spread_3_2p5"] and (frame.dtypes == np.float32).all()
    expected = (2.5 * (BARS["high"] - BARS["low"]).rolling(3).mean() / BARS["close"]).astype(np.float32)
    np.testing.assert_array_equal(frame["spread_3_2p5"].to_numpy(), expected.to_numpy())
    assert compute_cached(BARS, cfg).equals(frame) and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValidationError, match=r"indicator 'spread' has no parameter 'windw'"):
        FeaturesConfig(indicators=[{"spread": {"windw": 3}}])
    with pytest.raises(ValidationError, match=r"spread.window must be an integer, got 2.5"):
        FeaturesConfig(indicators=[{"spread": {"window": 2.5}}])


def test_dataframe_outputs_and_bounds(registry):
    @indicator("band", outputs=("band_up", "band_down"), bounds={"window": (2, 50)})
    def band(bars, window: int = 10):
        mid = bars["close"].rolling(window).mean()
        return pd.DataFrame({"band_down": mid * 0.9, "band_up": mid * 1.1})  # any column order

    frame = compute(BARS, [IndicatorSpec(name="band", params={"window": 4})])
    assert list(frame.columns) == ["band_up_4", "band_down_4"]
    assert (frame["band_up_4"].dropna() > frame["band_down_4"].dropna()).all()
    with pytest.raises(ValidationError, match=r"band.window=60 is out of range; allowed integer 2..50"):
        IndicatorSpec(name="band", params={"window": 60})


def test_the_cache_key_follows_the_code(registry):
    spec = [IndicatorSpec(name="sma")]
    builtin_key = cache_key(BARS, spec)

    def register(source):
        # The same function (module and name) as its module would define it before and after an edit.
        namespace = {"__name__": "labmod"}
        exec(compile(source, "labmod.py", "exec"), namespace)
        indicator("scaled")(namespace["scaled"])

    original = "def scaled(bars, window=3):\n    return bars['close'].rolling(window).mean() * 2.0\n"
    register(original)
    first = cache_key(BARS, [IndicatorSpec(name="scaled")])
    register(original)
    assert cache_key(BARS, [IndicatorSpec(name="scaled")]) == first
    register(original.replace("2.0", "3.0"))  # an edited constant
    assert cache_key(BARS, [IndicatorSpec(name="scaled")]) != first
    register(original.replace("window=3", "window=4"))  # an edited default
    assert cache_key(BARS, [IndicatorSpec(name="scaled", params={"window": 3})]) != first
    assert cache_key(BARS, spec) == builtin_key  # built-in keys do not change


@pytest.mark.parametrize("body, message", [
    (lambda bars: bars["close"].iloc[1:], r"returned 399 rows on another index than the 400 bars' \(row 0: .*\); return values aligned"),
    (lambda bars: bars["close"].to_numpy(), r"returned a ndarray; expected a pandas Series"),
    (lambda bars: bars["close"] / 0.0, r"output 'bad' is infinite at 2024-01-02 00:00:00\+00:00 \(row 0\)"),
    (lambda bars: bars["close"] * 1e300, r"output 'bad' is 9.9\d*e\+301, beyond float32 range at"),
    (lambda bars: bars["close"].astype(str), r"output 'bad' is \w+, expected numbers"),
    (lambda bars: bars[["close", "open"]], r"returned columns \['close', 'open'\], expected its outputs \['bad'\]"),
    (lambda bars: bars["nope"], r"indicator 'bad' failed on symbol 'XYZ': KeyError: 'nope'"),
])
def test_broken_output_is_one_line_naming_the_indicator(registry, body, message):
    indicator("bad")(body)
    with pytest.raises(ExtensionError, match=message):
        compute(BARS.fillna(1.0), [IndicatorSpec(name="bad")], symbol="XYZ")


def test_the_function_gets_a_copy_of_the_bars(registry):
    @indicator("vandal")
    def vandal(bars):
        bars["close"] *= 0.0  # must not reach the built-ins computed in the same pass
        return bars["close"]

    frame = compute(BARS, [IndicatorSpec(name="vandal"), IndicatorSpec(name="sma", params={"window": 2})])
    assert frame["sma_2"].abs().max() > 1.0


@pytest.mark.parametrize("func, message", [
    (lambda bars, window: bars, r"parameter 'window' has no default"),
    (lambda bars, column="close": bars, r"parameter 'column' defaults to 'close'; parameters are numbers"),
    (lambda bars, flag=True: bars, r"parameter 'flag' defaults to True"),
    (lambda bars, *more: bars, r"\*more is not allowed"),
    (lambda: 1.0, r"must take the bars as its first argument"),
])
def test_bad_signatures_are_refused_at_registration(func, message):
    with pytest.raises(ExtensionError, match=message):
        make_indicator("odd", func)


def test_names_are_checked(registry):
    with pytest.raises(ExtensionError, match=r"indicator 'sma' is already registered \(a built-in\)"):
        indicator("sma")(lambda bars: bars["close"])
    with pytest.raises(ExtensionError, match=r"indicator name 'My Ind'"):
        indicator("My Ind")(lambda bars: bars["close"])
    with pytest.raises(ExtensionError, match=r"bounds name windw, which is not a parameter"):
        make_indicator("ok", lambda bars, window=3: bars["close"], bounds={"windw": (1, 2)})
    with pytest.raises(ExtensionError, match=r"default out of its bounds"):
        make_indicator("ok", lambda bars, window=1: bars["close"], bounds={"window": (2, 9)})
