"""Causal Elliott-wave features in the registry: names and parameters, no look-ahead, missing bars."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import dask_pipeline.graphs.walkforward as walkforward_graph
from dask_pipeline.config import load_config
from dask_pipeline.features import DEFAULT_INDICATORS, IndicatorSpec, compute
from dask_pipeline.waves.causal import causal_waves
from tests.conftest import REPO
from tests.features.samples import make_bars

NAMES = ("wave_score", "wave_direction", "wave_position")


def _waves(atr: dict, pct: dict) -> list[IndicatorSpec]:
    """All six wave indicators: ATR pivots with ``atr``, percent pivots with ``pct``."""
    return [IndicatorSpec(name=n, params=atr) for n in NAMES] + [
        IndicatorSpec(name=f"{n}_pct", params=pct) for n in NAMES
    ]


#: Pivot settings from many pivots per lookback to few (minute bars moving ~1% a bar).
SETS = [
    _waves({"lookback": 120, "threshold": 1.5, "up_to": 3}, {"lookback": 60, "threshold": 0.02, "up_to": 1}),
    _waves({}, {}),  # the defaults: 3 x ATR-14 or 5%, 500 bars, up_to 3
    _waves({"lookback": 300, "threshold": 2.5, "atr_period": 5, "up_to": 2}, {"lookback": 250, "threshold": 0.04}),
]


def test_columns_parameters_and_the_default_set():
    assert IndicatorSpec(name="wave_score").columns == ["wave_score_500_3_14_3"]
    spec = IndicatorSpec(name="wave_position_pct", params={"threshold": 0.02, "lookback": 250})
    assert spec.columns == ["wave_position_pct_250_0p02_3"]
    assert not {s.name for s in DEFAULT_INDICATORS} & {s.name for s in SETS[0]}
    for data, fragment in [
        ({"wave_score_pct": {"threshold": 1.5}}, "wave_score_pct.threshold=1.5 is out of range"),
        ({"wave_score": {"up_to": 17}}, "wave_score.up_to=17 is out of range"),
        ({"wave_direction": {"lookback": 5}}, "wave_direction.lookback=5 is out of range"),
        ({"wave_position_pct": {"atr_period": 14}}, "has no parameter 'atr_period'"),
    ]:
        with pytest.raises(ValidationError, match=fragment.replace(".", r"\.")):
            IndicatorSpec.model_validate(data)


def test_columns_are_the_causal_state_as_float32():
    bars = make_bars("heavy", 1500, seed=4)
    out = compute(bars, SETS[0])
    state = causal_waves(*(bars[c].to_numpy(np.float64) for c in ("high", "low", "close")),
                         threshold=1.5, lookback=120, up_to=3)  # fmt: skip
    assert (out.dtypes == np.float32).all() and out.notna().all().all()
    np.testing.assert_array_equal(out["wave_score_120_1p5_14_3"], state.score.astype(np.float32))
    np.testing.assert_array_equal(out["wave_direction_120_1p5_14_3"], state.direction)
    np.testing.assert_array_equal(out["wave_position_120_1p5_14_3"], state.position)
    assert state.found.mean() > 0.5 and set(state.direction) == {-1, 0, 1}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    cut=st.integers(0, 1200),
    kind=st.sampled_from(["normal", "heavy", "gappy", "drifting"]),
    which=st.integers(0, len(SETS) - 1),
)
def test_no_lookahead(seed, cut, kind, which):
    """The features of ``bars[:cut]`` are those of the whole series at every row before ``cut``."""
    bars = make_bars(kind, 1200, seed=seed)
    full = compute(bars, SETS[which])
    pd.testing.assert_frame_equal(compute(bars.iloc[:cut], SETS[which]), full.iloc[:cut], check_exact=True)


def test_missing_bars_are_skipped_and_their_rows_are_nan():
    bars = make_bars("gappy", 2000, seed=1)
    missing = bars["close"].isna().to_numpy()
    out = compute(bars, SETS[0])
    assert out[missing].isna().all().all() and out[~missing].notna().all().all()
    pd.testing.assert_frame_equal(out[~missing], compute(bars[~missing], SETS[0]), check_exact=True)
    only_high = bars.copy()
    only_high.iloc[100, only_high.columns.get_loc("high")] = np.nan  # one price missing is a missing bar
    assert compute(only_high, SETS[0]).iloc[100].isna().all()


def test_the_shipped_config_runs_a_walk_forward_on_them(tmp_path, small_store):
    cfg = load_config(REPO / "configs" / "wave-features.yaml", [
        f"data.root={small_store}", "data.synthetic=null", "preset=blank", "features.cache=false",
        "folds.train=252", "folds.test=250", f"output.dir={tmp_path}",
    ])  # fmt: skip
    waves = [c for spec in cfg.features.indicators if spec.name.startswith("wave_") for c in spec.columns]
    assert waves == ["wave_score_500_3_14_3", "wave_direction_500_3_14_3", "wave_position_500_3_14_3",
                     "wave_score_pct_250_0p05_3", "wave_direction_pct_250_0p05_3"]  # fmt: skip
    (tables,) = dask.compute(walkforward_graph.build(cfg), scheduler="sync")
    assert set(waves) <= set(tables["importances"]["feature"])
    assert tables["predictions"]["prediction"].notna().mean() > 0.9
