"""Wave backends: one registry from name to backend; ``auto`` is resolved here and only here.

A backend turns a ``Plan`` into each window's top-k candidates (``TopK``) and names the
array module used for the small vectorised steps after it (corrections). ``numpy`` and
``cupy`` share one implementation written against ``xp`` (``candidates.py``); ``numba``
enumerates on the fly on the CPU (``kernels.py``), ``cuda`` on the GPU, one thread block
per window (``cuda_kernels.py``, numba-cuda). All return the same candidates and scores.

``auto`` takes ``cuda`` where numba-cuda sees a GPU, else ``cupy`` where CuPy does, else
``numba``. numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) is not a GPU: ``auto`` never
picks it, and ``cuda`` runs under it only when asked for by name (the tests do).
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib
import importlib.util
import os
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
        return _top_k(self.scan_windows(plan, spec, params))

    def scan_windows(self, plan: Plan, spec: WavesConfig, params: ScoreParams) -> tuple[np.ndarray, ...]:
        """``scan_windows_nb``'s per-window arrays for ``plan``."""
        return scan_windows_nb(
            plan.pos, plan.price, plan.kind, plan.lo, plan.hi, plan.starts, plan.ptr,
            spec.up_to, spec.max_combinations, spec.top_k_per_window,
            params.centers, params.scales, params.counts, params.weights,
        )  # fmt: skip


class CudaBackend:
    """Enumerate on the fly in a numba-cuda kernel, one block per window; many symbols per launch.

    Windows with more pivots than fit in a block's shared memory (``max_shared_pivots``) go
    to the numba CPU kernel: same results. Corrections, a few thousand combinations per
    symbol, stay on the host (``xp = numpy``): a device round trip would cost more.
    """

    name = "cuda"
    xp = np

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def top_candidates(self, plan: Plan, spec: WavesConfig, params: ScoreParams) -> TopK:
        """Each window's top-k impulses."""
        return self.top_candidates_many([plan], spec, params)[0]

    def top_candidates_many(self, plans: list[Plan], spec: WavesConfig, params: ScoreParams) -> list[TopK]:
        """Each plan's top-k impulses per window, from one kernel launch over all their windows."""
        from dask_pipeline.waves import cuda_kernels

        threads = self.threads or cuda_kernels.THREADS
        joined, bounds, shifts = join_plans(plans)
        width = joined.hi - joined.lo
        on_gpu = width <= cuda_kernels.max_shared_pivots(threads)
        arrays = [np.zeros((joined.n_windows, *a.shape[1:]), a.dtype) for a in _empty_outputs(spec)]
        for mask, part in (
            (on_gpu, lambda p: self._gpu(p, spec, params, threads)),
            (~on_gpu, lambda p: NumbaBackend().scan_windows(p, spec, params)),
        ):
            if mask.any():
                for out, values in zip(arrays, part(_select_windows(joined, mask))):
                    out[mask] = values
        found = []
        for (w0, w1), shift in zip(bounds, shifts):
            n_top, ordinal, pivots, subscores, score, n_cand = (a[w0:w1] for a in arrays)
            found.append(_top_k((n_top, ordinal, pivots - shift, subscores, score, n_cand)))
        return found

    @staticmethod
    def _gpu(plan: Plan, spec: WavesConfig, params: ScoreParams, threads: int) -> tuple[np.ndarray, ...]:
        from dask_pipeline.waves.cuda_kernels import scan_windows_gpu

        return scan_windows_gpu(
            plan.pos, plan.price, plan.kind, plan.lo, plan.hi, plan.starts, plan.ptr,
            spec.up_to, spec.max_combinations, spec.top_k_per_window,
            params.centers, params.scales, params.counts, params.weights, threads=threads,
        )  # fmt: skip


def _top_k(arrays: tuple[np.ndarray, ...]) -> TopK:
    """``TopK`` from a kernel's per-window arrays ``(n_top, ordinal, pivots, subscores, score, n_candidates)``."""
    n_top, ordinal, pivots, subscores, score, n_cand = arrays
    kept = np.arange(ordinal.shape[1])[None, :] < n_top[:, None]
    window = np.broadcast_to(np.arange(n_top.shape[0])[:, None], kept.shape)[kept]
    return TopK(window, ordinal[kept], pivots[kept], subscores[kept], score[kept], n_cand)


def _empty_outputs(spec: WavesConfig) -> tuple[np.ndarray, ...]:
    k = spec.top_k_per_window
    return (np.zeros(0, np.int64), np.zeros((0, k), np.int64), np.zeros((0, k, 6), np.int64),
            np.zeros((0, k, 5)), np.zeros((0, k)), np.zeros(0, np.int64))  # fmt: skip


def join_plans(plans: list[Plan]) -> tuple[Plan, list[tuple[int, int]], list[int]]:
    """One plan over the windows of several (pivot ids shifted past the plans before), each
    plan's window range ``[w0, w1)`` in it, and each plan's pivot id shift."""
    piv = np.cumsum([0, *(p.price.shape[0] for p in plans)])
    win = np.cumsum([0, *(p.n_windows for p in plans)])
    n_starts = np.cumsum([0, *(p.starts.shape[0] for p in plans)])

    def cat(field: str, shift: np.ndarray | None = None) -> np.ndarray:
        parts = [getattr(p, field) + (shift[i] if shift is not None else 0) for i, p in enumerate(plans)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    ptr = np.concatenate([[0], *(p.ptr[1:] + n_starts[i] for i, p in enumerate(plans))]).astype(np.int64)
    joined = Plan(
        cat("pos"), cat("price"), cat("kind"), cat("window"), cat("first"), cat("end"),
        cat("lo", piv), cat("hi", piv), cat("pre_score"), cat("starts", piv), ptr,
    )  # fmt: skip
    return joined, [(int(win[i]), int(win[i + 1])) for i in range(len(plans))], [int(x) for x in piv[:-1]]


def _select_windows(plan: Plan, mask: np.ndarray) -> Plan:
    """The plan restricted to the windows in ``mask`` (pivots unchanged)."""
    counts = np.diff(plan.ptr)
    rows = np.repeat(mask, counts)
    ptr = np.concatenate([[0], np.cumsum(counts[mask])]).astype(np.int64)
    return Plan(plan.pos, plan.price, plan.kind, plan.window[mask], plan.first[mask], plan.end[mask],
                plan.lo[mask], plan.hi[mask], plan.pre_score[mask], plan.starts[rows], ptr)  # fmt: skip


#: Backends by name (``waves.backend``; ``auto`` resolves to one of them).
BACKENDS: dict[str, Any] = {
    "numpy": XpBackend("numpy"), "cupy": XpBackend("cupy"), "numba": NumbaBackend(), "cuda": CudaBackend(),
}  # fmt: skip


def gpu_available() -> bool:
    """Whether cupy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return False


@functools.cache
def cuda_status() -> str:
    """``"gpu"`` where numba-cuda sees a CUDA GPU, ``"simulator"`` under ``NUMBA_ENABLE_CUDASIM=1``,
    else why the ``cuda`` backend cannot run here (one phrase). Asked once per process."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed"
    simulating = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    if not simulating and not _cuda_driver_present():
        return "no CUDA driver on this machine"  # said without importing numba.cuda (a second)
    try:
        from numba import cuda

        from dask_pipeline.waves.cuda_kernels import SIMULATED
    except Exception as exc:  # noqa: BLE001 - e.g. CUDA bindings missing or broken
        return f"numba.cuda does not import ({type(exc).__name__}: {exc})"
    if SIMULATED:
        return "simulator"
    try:
        return "gpu" if cuda.is_available() and len(cuda.gpus) > 0 else "no CUDA GPU is visible to numba-cuda"
    except Exception:  # noqa: BLE001 - a driver that fails to initialise is no GPU
        return "no CUDA GPU is visible to numba-cuda"


def _cuda_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia") or ctypes.util.find_library("cuda") is not None


def cuda_available() -> bool:
    """Whether the ``cuda`` backend runs on a real GPU here (the simulator does not count)."""
    return cuda_status() == "gpu"


def get_backend(name: str = "auto") -> Any:
    """The backend called ``name``; ``auto`` is cuda, then cupy, where a GPU is visible, else numba."""
    if name == "auto":
        name = "cuda" if cuda_available() else "cupy" if gpu_available() else "numba"
    if name not in BACKENDS:
        raise ConfigError(f"'waves.backend': unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    if name == "cupy" and not gpu_available():
        raise ConfigError(
            "'waves.backend': cupy needs cupy and a visible CUDA GPU (pip install -e \".[gpu]\"); "
            "use auto, numba or numpy here"
        )
    if name == "cuda" and cuda_status() not in ("gpu", "simulator"):
        raise ConfigError(
            f"'waves.backend': cuda needs numba-cuda and a visible CUDA GPU ({cuda_status()}; "
            "pip install -e \".[gpu]\"); use auto, numba or numpy here"
        )
    return BACKENDS[name]
