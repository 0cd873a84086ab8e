"""Fixtures for the feature tests (bar generators live in tests/features/samples.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.features.samples import make_bars


@pytest.fixture(scope="session")
def bench_bars() -> pd.DataFrame:
    """A benchmark symbol's bars on the same minutes as ``make_bars``."""
    return make_bars("normal", 2000, seed=99)


@pytest.fixture
def registry():
    """The indicator registry, restored after the test: user indicators a test registers do not leak."""
    from dask_pipeline.features import engine

    saved = dict(engine.INDICATORS)
    yield engine.INDICATORS
    engine.INDICATORS.clear()
    engine.INDICATORS.update(saved)
    engine._plan.cache_clear()
    engine._column_index.cache_clear()
