"""Backend parity: every backend returns the reference's candidates, order and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_pipeline.errors import ConfigError
from dask_pipeline.waves import WavesConfig, scan
from dask_pipeline.waves.backends import BACKENDS, cuda_available, get_backend, gpu_available
from dask_pipeline.waves.candidates import TopK
from dask_pipeline.waves.patterns import plan_series
from dask_pipeline.waves.reference import top_candidates_py
from dask_pipeline.waves.score import score_params

from .conftest import BACKENDS as AVAILABLE
from .samples import one_window_plan, random_walk

specs = st.builds(
    WavesConfig,
    window_bars=st.integers(100, 250),
    window_overlap_ratio=st.sampled_from([0.0, 0.5]),
    pivot_mode=st.just("atr"),
    pivot_threshold=st.floats(1.0, 3.0),
    pre_score_threshold=st.just(0.0),
    skip_flat_windows=st.just(False),
    up_to=st.integers(1, 3),
    max_start_points=st.integers(1, 4),
    max_combinations=st.sampled_from([1, 7, 50, 400, 100_000]),
    top_k_per_window=st.integers(1, 5),
)


def assert_same(a: TopK, b: TopK) -> None:
    for field in ("window", "ordinal", "pivots", "subscores", "score", "n_candidates"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(50, 1200), spec=specs)
def test_every_backend_matches_the_reference_on_random_series(seed, n, spec):
    bars = random_walk(n, seed)
    plan = plan_series(*(bars[c].to_numpy() for c in ("high", "low", "close")), spec)
    params = score_params(spec)
    expected = top_candidates_py(plan, spec.up_to, spec.max_combinations, spec.top_k_per_window, params)
    for backend in ["numba", "numpy", *(["cupy"] if gpu_available() else []), *(["cuda"] if cuda_available() else [])]:
        assert_same(BACKENDS[backend].top_candidates(plan, spec, params), expected)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_scan_is_identical_across_backends(backend):
    bars = random_walk(3000, seed=1)
    spec = WavesConfig(window_bars=300, scan_pattern_types=["impulses", "corrections"], top_k_per_symbol=30)
    expected = scan(bars, spec, backend="numba", symbol="RW")
    assert len(expected) == 30 and expected["correction_score"].notna().any()
    pd.testing.assert_frame_equal(scan(bars, spec, backend=backend, symbol="RW"), expected, check_exact=True)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_equal_scores_keep_the_earlier_candidate(backend):
    pattern = [100.0, 120.0, 108.0, 140.0, 128.0, 148.0]
    plan = one_window_plan(pattern * 2, starts=[0, 6])  # the same impulse twice: equal scores
    for k, expected in [(1, [0]), (2, [0, 1])]:
        spec = WavesConfig(up_to=1, top_k_per_window=k)
        top = BACKENDS[backend].top_candidates(plan, spec, score_params(spec))
        assert top.ordinal.tolist() == expected and top.pivots[:, 0].tolist() == [0, 6][:k]
        assert len(set(top.score.tolist())) == 1


def test_xp_batches_do_not_change_the_answer():
    bars = random_walk(2000, seed=4)
    spec = WavesConfig(window_bars=250, max_combinations=300)
    plan = plan_series(*(bars[c].to_numpy() for c in ("high", "low", "close")), spec)
    params = score_params(spec)
    whole = BACKENDS["numpy"].top_candidates(plan, spec, params)
    assert whole.score.size > 10
    assert_same(whole, top_candidates_py(plan, spec.up_to, spec.max_combinations, spec.top_k_per_window, params))
    one_row = BACKENDS["numpy"].top_candidates(plan, spec.model_copy(update={"gpu_batch_size": 1}), params)
    assert_same(one_row, whole)
    assert_same(BACKENDS["numba"].top_candidates(plan, spec, params), whole)


def test_auto_picks_a_gpu_backend_only_with_a_gpu():
    assert get_backend("auto").name == ("cuda" if cuda_available() else "cupy" if gpu_available() else "numba")
    with pytest.raises(ConfigError, match="unknown backend 'cude'; known: auto, numpy, cupy, numba, cuda"):
        get_backend("cude")
    if not gpu_available():
        with pytest.raises(ConfigError, match="cupy needs cupy and a visible CUDA GPU"):
            get_backend("cupy")
