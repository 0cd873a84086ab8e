"""Hard rules: each rule-breaking impulse is rejected for that rule, by every implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_pipeline.waves import WavesConfig, scan
from dask_pipeline.waves.backends import BACKENDS
from dask_pipeline.waves.reference import broken_correction_rules, broken_impulse_rules
from dask_pipeline.waves.rules import CORRECTION_RULES, IMPULSE_RULES, correction_rule_masks, impulse_rule_masks
from dask_pipeline.waves.score import score_params

from .samples import BROKEN, TEXTBOOK, leg_bars, one_window_plan

CPU_BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("rule", IMPULSE_RULES)
def test_each_broken_series_breaks_exactly_its_rule(rule):
    q = BROKEN[rule]
    assert broken_impulse_rules(q) == [rule]
    masks = impulse_rule_masks(np, np.array([q]))
    assert [name for name in IMPULSE_RULES if not masks[name][0]] == [rule]
    assert broken_impulse_rules(TEXTBOOK) == []


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rule", [*IMPULSE_RULES, None])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_backends_reject_a_candidate_for_each_rule(backend, rule, direction):
    prices = TEXTBOOK if rule is None else BROKEN[rule]
    if direction == "down":
        prices = [300.0 - p for p in prices]
    plan = one_window_plan(prices, first_kind=-1 if direction == "up" else 1)
    spec = WavesConfig(up_to=1)
    top = BACKENDS[backend].top_candidates(plan, spec, score_params(spec))
    assert top.n_candidates.tolist() == [1]
    assert top.pivots.tolist() == ([] if rule else [[0, 1, 2, 3, 4, 5]])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("rule", ["wave2_retrace", "wave3_shortest", "wave4_overlap", "progress"])
def test_scan_finds_nothing_in_a_series_that_breaks_a_rule(backend, rule):
    good = scan(leg_bars(TEXTBOOK), backend=backend)
    assert len(good) == 1  # the same construction with the textbook prices is found
    assert scan(leg_bars(BROKEN[rule]), backend=backend).empty


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 5).map(float), min_size=6, max_size=6))
def test_masks_agree_with_reference_on_random_prices(q):
    # Small integers make ties (equal prices, equal wave lengths) common: strictness matters.
    masks = impulse_rule_masks(np, np.array([q]))
    assert [name for name in IMPULSE_RULES if not masks[name][0]] == broken_impulse_rules(q)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 5).map(float), min_size=5, max_size=5))
def test_correction_masks_agree_with_reference(q):
    masks = correction_rule_masks(np, *(np.array([v]) for v in q))
    assert [name for name in CORRECTION_RULES if not masks[name][0]] == broken_correction_rules(*q)
