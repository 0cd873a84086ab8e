"""Fixtures for the feature tests (bar generators live in tests/features/samples.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.features.samples import make_bars


@pytest.fixture(scope="session")
def bench_bars() -> pd.DataFrame:
    """A benchmark symbol's bars on the same minutes as ``make_bars``."""
    return make_bars("normal", 2000, seed=99)
