"""Backends available here: numba and numpy always, cupy with a visible GPU; cuda on a GPU or
under numba's CUDA simulator.

On a machine without a CUDA driver the simulator is switched on here, before anything
imports ``numba.cuda``, so the ``cuda`` backend's tests run on the CPU (``pytest -k cuda``);
``NUMBA_ENABLE_CUDASIM`` set by hand wins either way.
"""

from __future__ import annotations

import os
import sys

import pytest

from dask_pipeline.waves.backends import _cuda_driver_present, gpu_available

if "NUMBA_ENABLE_CUDASIM" not in os.environ and "numba.cuda" not in sys.modules and not _cuda_driver_present():
    from numba.core.config import reload_config

    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    reload_config()  # numba, imported already, read its environment at import

BACKENDS = [
    "numba",
    "numpy",
    pytest.param("cupy", marks=pytest.mark.skipif(not gpu_available(), reason="needs cupy and a GPU")),
]
