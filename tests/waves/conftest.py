"""Backends available here: numba and numpy always, cupy with a visible GPU."""

from __future__ import annotations

import pytest

from dask_pipeline.waves.backends import gpu_available

BACKENDS = [
    "numba",
    "numpy",
    pytest.param("cupy", marks=pytest.mark.skipif(not gpu_available(), reason="needs cupy and a GPU")),
]
