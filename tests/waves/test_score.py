"""Fibonacci score: textbook ratios score 1, and xp, numba and the reference agree bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dask_pipeline.waves import WavesConfig
from dask_pipeline.waves.kernels import impulse_subscores_nb
from dask_pipeline.waves.reference import (
    broken_correction_rules,
    broken_impulse_rules,
    correction_score_py,
    impulse_score_py,
)
from dask_pipeline.waves.score import SUBSCORES, closeness, combine, correction_score, impulse_subscores, score_params

from .samples import TEXTBOOK, TEXTBOOK_BARS

PARAMS = score_params(WavesConfig())
TIMES = [float(t) for t in np.cumsum([0, *TEXTBOOK_BARS])]


def test_textbook_impulse_scores_one():
    subscores, score = impulse_score_py(TEXTBOOK, TIMES, PARAMS)
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in subscores.values())
    assert score == pytest.approx(1.0, abs=1e-12)
    xp_sub = impulse_subscores(np, np.array([TEXTBOOK]), np.array([TIMES]), PARAMS)
    assert combine(np, xp_sub, PARAMS.weights)[0] == score


def test_closeness_is_one_on_target_and_half_at_the_tolerance():
    x = np.array([0.618, 0.5, 0.618 * 1.15, 0.5 * 0.85, 5.0])
    c = closeness(np, x, np.array([0.5, 0.618]), 1.0 / np.array([0.075, 0.0927]), 2)
    np.testing.assert_allclose(c[:4], [1.0, 1.0, 0.5, 0.5], rtol=1e-12)
    assert 0 < c[4] < 0.01


def test_weights_are_normalised_and_zero_weight_ignores_a_subscore():
    spec = WavesConfig(score_weights={"wave2": 2, "wave3": 2, "wave4": 0, "wave5": 0, "time": 0})
    params = score_params(spec)
    np.testing.assert_array_equal(params.weights, [0.5, 0.5, 0.0, 0.0, 0.0])
    q = list(TEXTBOOK)
    q[4] = q[3] - 0.9 * (q[3] - q[2])  # a poor wave 4 costs nothing at weight 0
    assert impulse_score_py(q, TIMES, params)[1] == pytest.approx(1.0, abs=1e-12)
    assert impulse_score_py(q, TIMES, PARAMS)[1] < 0.9


def _impulse(draw):
    """A valid impulse built wave by wave (each wave inside the room the rules leave it)."""
    fraction = lambda lo, hi: draw(st.floats(lo, hi))  # noqa: E731
    len1 = fraction(0.01, 50.0)
    len2 = len1 * fraction(0.01, 0.99)
    len3 = len1 * fraction(1.0, 4.0)
    len4 = (len3 - len2) * fraction(0.01, 0.99)
    len5 = len4 * fraction(1.01, 5.0)
    q = [fraction(-100.0, 100.0)]
    for i, length in enumerate((len1, len2, len3, len4, len5)):
        q.append(q[-1] + (length if i % 2 == 0 else -length))
    t = [float(draw(st.integers(0, 1000)))]
    for _ in range(5):
        t.append(t[-1] + draw(st.integers(1, 300)))
    return q, t


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_xp_numba_and_reference_scores_are_identical(data):
    q, t = _impulse(data.draw)
    assume(not broken_impulse_rules(q))  # scores are defined where the rules hold
    subscores, score = impulse_score_py(q, t, PARAMS)
    xp_sub = impulse_subscores(np, np.array([q]), np.array([t]), PARAMS)[0]
    nb_sub = np.zeros(5)
    impulse_subscores_nb(*q, *t, PARAMS.centers, PARAMS.scales, PARAMS.counts, nb_sub)
    assert xp_sub.tolist() == [subscores[s] for s in SUBSCORES] == nb_sub.tolist()
    assert combine(np, xp_sub[None], PARAMS.weights)[0] == score
    assert 0.0 < score <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_correction_score_matches_reference(data):
    fraction = lambda: data.draw(st.floats(0.01, 0.99))  # noqa: E731
    q0 = data.draw(st.floats(-100.0, 100.0))
    q5 = q0 + data.draw(st.floats(0.01, 50.0))
    qc = q0 + (q5 - q0) * fraction()  # C ends above the start, A above C, B between A and the top
    qa = qc + (q5 - qc) * fraction()
    qb = qa + (q5 - qa) * fraction()
    assume(not broken_correction_rules(q0, q5, qa, qb, qc))
    xp_score = correction_score(np, *(np.array([v]) for v in (q0, q5, qa, qb, qc)), PARAMS)[0]
    assert xp_score == correction_score_py(q0, q5, qa, qb, qc, PARAMS)
    assert 0.0 < xp_score <= 1.0
