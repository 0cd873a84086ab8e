"""Enumeration order of the xp scorer: skip combinations and per-row ordinals."""

from __future__ import annotations

import itertools

import numpy as np

from dask_pipeline.waves.candidates import n_candidates, skip_offsets, start_rows
from dask_pipeline.waves.reference import window_candidates_py

from .samples import one_window_plan


def test_skip_offsets_are_lexicographic_with_wave1_slowest():
    offsets = skip_offsets(2)
    expected = [np.cumsum([2 * k + 1 for k in ks]).tolist() for ks in itertools.product(range(2), repeat=5)]
    assert offsets.tolist() == expected


def test_rows_count_their_candidates_like_the_reference():
    plan = one_window_plan([100.0 + (i % 2) * 5 for i in range(16)], starts=[0, 1, 3, 6, 10])
    window, last, per_row, base = start_rows(plan, 3)
    listed = window_candidates_py(plan.starts.tolist(), 15, 3, 10_000)
    first_of_start = {}
    for ordinal, ids in listed:
        first_of_start.setdefault(ids[0], ordinal)
    assert window.tolist() == [0] * 5 and last.tolist() == [15] * 5
    assert per_row.tolist() == [sum(1 for _, ids in listed if ids[0] == s) for s in plan.starts]
    assert [first_of_start.get(s) for s in plan.starts if s in first_of_start] == base[per_row > 0].tolist()
    assert n_candidates(plan, 3, 10_000).tolist() == [len(listed)]
    assert n_candidates(plan, 3, 7).tolist() == [7]
