"""The numba kernel's bookkeeping: subtree counts and the capped enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dask_pipeline.waves import WavesConfig
from dask_pipeline.waves.backends import BACKENDS
from dask_pipeline.waves.kernels import completion_counts_nb
from dask_pipeline.waves.reference import top_candidates_py
from dask_pipeline.waves.score import score_params

from .samples import one_window_plan


@pytest.mark.parametrize("up_to", [1, 2, 3])
def test_completion_counts_count_the_fitting_skip_tuples(up_to):
    table = completion_counts_nb(up_to, 20)
    for r in range(6):
        for budget in range(21):
            brute = sum(1 for ks in itertools.product(range(up_to), repeat=r) if sum(2 * k + 1 for k in ks) <= budget)
            assert table[r, budget] == brute


@pytest.mark.parametrize("cap", [1, 2, 5, 17, 40, 10_000])
def test_cap_and_pruned_subtrees_keep_reference_ordinals(cap):
    # A rising zigzag where many prefixes break a rule early (pruned) and many pass.
    rng = np.random.default_rng(3)
    prices = [100.0]
    for i in range(29):
        prices.append(prices[-1] + (rng.uniform(2, 10) if i % 2 == 0 else -rng.uniform(1, 9)))
    plan = one_window_plan(prices, starts=[0, 1, 2, 4, 8])
    spec = WavesConfig(up_to=3, max_combinations=cap, top_k_per_window=4)
    params = score_params(spec)
    expected = top_candidates_py(plan, 3, cap, 4, params)
    got = BACKENDS["numba"].top_candidates(plan, spec, params)
    assert got.n_candidates.tolist() == expected.n_candidates.tolist() == [min(cap, expected.n_candidates[0])]
    assert got.ordinal.tolist() == expected.ordinal.tolist() and got.score.tolist() == expected.score.tolist()
    if cap == 10_000:
        assert expected.score.size == 4
