"""The waves config section: defaults, and one clear error per bad value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dask_pipeline.config import load_config
from dask_pipeline.errors import ConfigError
from dask_pipeline.waves import WavesConfig


def test_defaults_are_a_usable_scan():
    spec = WavesConfig()
    assert spec.window_bars == 500 and spec.window_overlap_ratio == 0.5 and spec.max_windows == 2000
    assert (spec.pivot_mode, spec.pivot_threshold, spec.atr_period) == ("atr", 3.0, 14)
    assert spec.up_to == 3 and spec.max_start_points == 8 and spec.max_combinations == 100_000
    assert spec.scan_pattern_types == ["impulses"] and not spec.corrections
    assert spec.top_k_per_window == 3 and spec.top_k_per_symbol == 100 and spec.backend == "auto"
    assert load_config().waves == spec


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("waves.up_to=0", "'waves.up_to': must be at least 1: each wave ends at one of the next up_to pivots"),
        ("waves.window_bars=5", "'waves.window_bars': a window of 5 bars cannot hold the 6 pivots of an impulse"),
        ("waves.window_overlap_ratio=1.0", "'waves.window_overlap_ratio': Input should be less than 1"),
        ("waves.pivot_mode=percent", "pivot_threshold 3.0 with pivot_mode 'percent' is a fraction of price"),
        ("waves.pivot_threshold=0", "'waves.pivot_threshold': Input should be greater than 0"),
        ("waves.scan_pattern_types=[corrections]", "must include 'impulses'"),
        ("waves.scan_pattern_types=[waves]", "'waves.scan_pattern_types.0': Input should be 'impulses' or 'correc"),
        ("waves.backend=gpu", "'waves.backend': Input should be 'auto', 'cuda', 'cupy', 'numpy' or 'numba'"),
        ("waves.top_k_per_window=0", "'waves.top_k_per_window': Input should be greater than or equal to 1"),
        ("waves.max_combinations=0", "'waves.max_combinations': Input should be greater than or equal to 1"),
        ("waves.pre_score_threshold=1.5", "'waves.pre_score_threshold': Input should be less than or equal to 1"),
        ("waves.score_weights={wave2: 0, wave3: 0, wave4: 0, wave5: 0, time: 0}", "all weights are 0"),
        ("waves.score_tolerances.wave2=-0.1", "'waves.score_tolerances.wave2': Input should be greater than 0"),
    ],
)
def test_bad_values_name_the_key_and_the_reason(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'waves.up_too' \(did you mean 'up_to'\?\)"):
        load_config(overrides=["waves.up_too=2"])
    with pytest.raises(ConfigError, match=r"unknown key 'waves.score_weights.wave6' \(did you mean 'wave5'\?\)"):
        load_config(overrides=["waves.score_weights.wave6=1"])


def test_percent_threshold_is_a_fraction():
    assert WavesConfig(pivot_mode="percent", pivot_threshold=0.05).pivot_threshold == 0.05
    with pytest.raises(ValidationError):
        WavesConfig(up_to=17)
