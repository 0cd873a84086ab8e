"""Fixtures for the data tests: a small synthetic universe and a store holding it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dask_pipeline.data import synthesize, write_dataset


@pytest.fixture(scope="session")
def daily_bars() -> dict[str, pd.DataFrame]:
    """Six symbols of daily bars over five years (about 1300 bars each)."""
    return synthesize(6, "2015-01-01", "2019-12-31", "1D", seed=5)


@pytest.fixture
def store(tmp_path, daily_bars) -> Path:
    """A fresh store holding ``daily_bars``."""
    root = tmp_path / "store"
    write_dataset(root, daily_bars)
    return root
