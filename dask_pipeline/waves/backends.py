"""Wave backends: one registry from name to backend; ``auto`` is resolved here and only here.

A backend turns a ``Plan`` into each window's top-k candidates (``TopK``) and names the
array module used for the small vectorised steps after it (corrections). ``numpy`` and
``cupy`` share one implementation written against ``xp`` (``candidates.py``); ``numba``
enumerates on the fly (``kernels.py``). All return the same candidates and scores.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from dask_pipeline.errors import ConfigError
from dask_pipeline.waves.candidates import TopK, top_candidates_xp
from dask_pipeline.waves.kernels import scan_windows_nb
from dask_pipeline.waves.score import ScoreParams
from dask_pipeline.waves.spec import WavesConfig
from dask_pipeline.waves.windows import Plan


class XpBackend:
    """Vectorised candidates in batches of ``gpu_batch_size``, with numpy or cupy as ``xp``."""

    def __init__(self, module: str):
        self.name = module
        self.module = module

    @property
    def xp(self) -> Any:
        """The array module."""
        return importlib.import_module(self.module)

    def top_candidates(self, plan: Plan, spec: WavesConfig, params: ScoreParams) -> TopK:
        """Each window's top-k impulses."""
        return top_candidates_xp(
            self.xp, plan, spec.up_to, spec.max_combinations, spec.top_k_per_window, spec.gpu_batch_size, params
        )


class NumbaBackend:
    """Enumerate on the fly in a numba kernel, a top-k per window, nothing materialised."""

    name = "numba"
    xp = np

    def top_candidates(self, plan: Plan, spec: WavesConfig, params: ScoreParams) -> TopK:
        """Each window's top-k impulses."""
        n_top, ordinal, pivots, subscores, score, n_cand = scan_windows_nb(
            plan.pos, plan.price, plan.kind, plan.lo, plan.hi, plan.starts, plan.ptr,
            spec.up_to, spec.max_combinations, spec.top_k_per_window,
            params.centers, params.scales, params.counts, params.weights,
        )  # fmt: skip
        kept = np.arange(ordinal.shape[1])[None, :] < n_top[:, None]
        window = np.broadcast_to(np.arange(plan.n_windows)[:, None], kept.shape)[kept]
        return TopK(window, ordinal[kept], pivots[kept], subscores[kept], score[kept], n_cand)


#: Backends by name (``waves.backend``; ``auto`` resolves to one of them).
BACKENDS: dict[str, Any] = {"numpy": XpBackend("numpy"), "cupy": XpBackend("cupy"), "numba": NumbaBackend()}


def gpu_available() -> bool:
    """Whether cupy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return False


def get_backend(name: str = "auto") -> Any:
    """The backend called ``name``; ``auto`` is cupy when a GPU is visible, else numba."""
    if name == "auto":
        name = "cupy" if gpu_available() else "numba"
    if name not in BACKENDS:
        raise ConfigError(f"'waves.backend': unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    if name == "cupy" and not gpu_available():
        raise ConfigError(
            "'waves.backend': cupy needs cupy and a visible CUDA GPU (pip install -e \".[gpu]\"); "
            "use auto, numba or numpy here"
        )
    return BACKENDS[name]
