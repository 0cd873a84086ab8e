"""The CUDA scan kernel against the numba CPU kernel and the plain-Python reference.

Without a GPU these run under numba's CUDA simulator (``conftest.py`` switches it on where
no CUDA driver exists): every thread of every block runs as Python, so the inputs are
small and blocks have a few threads (which also exercises the multi-round top-k merge and
``top_k_per_window`` larger than a block). On a GPU they run on the device, and
``test_cuda_on_a_gpu_matches_numba_on_a_real_workload`` adds a real-size parity check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install -e '.[test]')")

from dask_pipeline.errors import ConfigError  # noqa: E402
from dask_pipeline.waves import WavesConfig, scan, scan_many  # noqa: E402
from dask_pipeline.waves.backends import BACKENDS, CudaBackend, cuda_status, get_backend, join_plans  # noqa: E402
from dask_pipeline.waves.patterns import plan_series  # noqa: E402
from dask_pipeline.waves.reference import top_candidates_py  # noqa: E402
from dask_pipeline.waves.score import score_params  # noqa: E402

from .samples import one_window_plan, random_walk  # noqa: E402
from .test_backends import assert_same  # noqa: E402

STATUS = cuda_status()
pytestmark = pytest.mark.skipif(STATUS not in ("gpu", "simulator"), reason=f"cuda backend unavailable: {STATUS}")


def _plan(n: int, seed: int, spec: WavesConfig):
    bars = random_walk(n, seed)
    return plan_series(*(bars[c].to_numpy() for c in ("high", "low", "close")), spec)


def _spec(**kw) -> WavesConfig:
    return WavesConfig(pre_score_threshold=0.0, skip_flat_windows=False, **kw)


# (bars, seed, spec, threads per block): caps that cut a window short, k above the block
# size, one thread per block, several windows of different widths.
CASES = [
    (300, 28, dict(window_bars=120, up_to=2, max_start_points=2, top_k_per_window=3, max_windows=3), 16),
    (200, 16, dict(window_bars=100, up_to=3, max_start_points=1, top_k_per_window=7, max_combinations=50,
                   max_windows=2), 8),
    (150, 8, dict(window_bars=150, up_to=2, max_start_points=2, top_k_per_window=10, pivot_threshold=1.0), 4),
    (160, 19, dict(window_bars=160, up_to=2, max_start_points=3, top_k_per_window=2, max_combinations=5,
                   pivot_threshold=1.5), 1),
]


@pytest.mark.parametrize("n, seed, spec, threads", CASES)
def test_cuda_kernel_matches_the_reference_and_numba(n, seed, spec, threads):
    spec = _spec(**spec)
    plan = _plan(n, seed, spec)
    params = score_params(spec)
    expected = top_candidates_py(plan, spec.up_to, spec.max_combinations, spec.top_k_per_window, params)
    assert expected.score.size > 0
    got = CudaBackend(threads=threads).top_candidates(plan, spec, params)
    assert_same(got, expected)
    assert_same(got, BACKENDS["numba"].top_candidates(plan, spec, params))


@pytest.mark.parametrize("cap", [1, 17, 10_000])
def test_cuda_cap_and_ordinals_follow_the_enumeration(cap):
    rng = np.random.default_rng(3)  # a rising zigzag: many prefixes break a rule, many pass
    prices = [100.0]
    for i in range(17):
        prices.append(prices[-1] + (rng.uniform(2, 10) if i % 2 == 0 else -rng.uniform(1, 9)))
    plan = one_window_plan(prices, starts=[0, 2, 4])
    spec = WavesConfig(up_to=2, max_combinations=cap, top_k_per_window=4)
    params = score_params(spec)
    expected = top_candidates_py(plan, 2, cap, 4, params)
    assert_same(CudaBackend(threads=8).top_candidates(plan, spec, params), expected)


@pytest.mark.parametrize("k", [1, 2])
def test_cuda_equal_scores_keep_the_earlier_candidate(k):
    pattern = [100.0, 120.0, 108.0, 140.0, 128.0, 148.0]
    plan = one_window_plan(pattern * 2, starts=[0, 6])  # the same impulse twice: equal scores
    spec = WavesConfig(up_to=1, top_k_per_window=k)
    # Two threads: both copies are contenders in the same round, the later ordinal first in thread order.
    top = CudaBackend(threads=2).top_candidates(plan, spec, score_params(spec))
    assert top.ordinal.tolist() == [0, 1][:k] and top.pivots[:, 0].tolist() == [0, 6][:k]


def test_cuda_scans_many_symbols_in_one_launch():
    spec = _spec(window_bars=100, up_to=2, max_start_points=1, top_k_per_window=2, max_windows=2)
    params = score_params(spec)
    plans = [_plan(220, seed, spec) for seed in (1, 2, 3)]
    joined, bounds, shifts = join_plans(plans)
    assert joined.n_windows == sum(p.n_windows for p in plans) and bounds[-1][1] == joined.n_windows
    assert shifts == [0, plans[0].price.size, plans[0].price.size + plans[1].price.size]
    for plan, got in zip(plans, CudaBackend(threads=8).top_candidates_many(plans, spec, params)):
        assert_same(got, BACKENDS["numba"].top_candidates(plan, spec, params))


def test_cuda_windows_too_wide_for_shared_memory_go_to_the_cpu_kernel(monkeypatch):
    from dask_pipeline.waves import cuda_kernels

    spec = _spec(window_bars=120, up_to=2, max_start_points=1, top_k_per_window=2, max_windows=3)
    plan = _plan(300, 5, spec)
    params = score_params(spec)
    widths = plan.hi - plan.lo
    assert widths.min() < widths.max()
    # A budget that holds the narrowest window's pivots only.
    monkeypatch.setattr(cuda_kernels, "SHARED_BYTES", (2 * int(widths.min()) + 3 * 8) * 8)
    launched = []
    real = cuda_kernels.scan_windows_gpu
    monkeypatch.setattr(cuda_kernels, "scan_windows_gpu", lambda *a, **kw: launched.append(a[3].size) or real(*a, **kw))
    assert_same(CudaBackend(threads=8).top_candidates(plan, spec, params),
                BACKENDS["numba"].top_candidates(plan, spec, params))
    assert launched == [int((widths == widths.min()).sum())]


def test_cuda_scan_with_corrections_equals_numba():
    bars = random_walk(260, seed=4)
    spec = _spec(window_bars=130, up_to=2, max_start_points=1, scan_pattern_types=["impulses", "corrections"],
                 max_windows=2)
    expected = scan(bars, spec, backend="numba", symbol="RW")
    assert len(expected) > 0
    pd.testing.assert_frame_equal(scan(bars, spec, backend="cuda", symbol="RW"), expected, check_exact=True)


def test_cuda_scan_many_equals_scanning_each_symbol():
    spec = _spec(window_bars=100, up_to=2, max_start_points=1, max_windows=2)
    frames = [random_walk(220, seed) for seed in (1, 2)]
    expected = [scan(f, spec, backend="numba", symbol=s) for f, s in zip(frames, "AB")]
    for backend in ("cuda", "numba"):
        for got, want in zip(scan_many(frames, spec, backend=backend, symbols=["A", "B"]), expected):
            pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_cuda_rows_in_bench_waves():
    from dask_pipeline.waves.benchmark import bench_waves

    table = bench_waves(windows=2, window_bars=100, reference_windows=2, sp500_symbols=10, sp500_windows=2,
                        measure_symbols=2, repeats=1, backends=["numba", "cuda"])
    assert list(table["implementation"]) == ["reference (plain Python)", "numba", "cuda", "numba", "cuda",
                                             "cuda, all symbols in one launch"]
    symbol = table[table["workload"].str.startswith("1 symbol")]
    assert symbol["candidates"].nunique() == 1 and (table["scan_s"].dropna() > 0).all()
    assert table["note"].iloc[-1].endswith("CUDA simulator on the CPU: walks the code, times nothing real"
                                           if STATUS == "simulator" else "1 GPU")


def test_cuda_auto_never_picks_the_simulator():
    if STATUS == "simulator":
        assert get_backend("auto").name != "cuda"
        assert get_backend("cuda").name == "cuda"  # by name it runs (how these tests run)
    else:
        assert get_backend("auto").name == "cuda"


def test_cuda_backend_refuses_clearly_where_it_cannot_run(monkeypatch):
    from dask_pipeline.waves import backends

    monkeypatch.setattr(backends, "cuda_status", lambda: "no CUDA GPU is visible to numba-cuda")
    with pytest.raises(ConfigError, match=r"'waves.backend': cuda needs numba-cuda and a visible CUDA GPU "
                                          r"\(no CUDA GPU is visible to numba-cuda;"):
        backends.get_backend("cuda")
    assert backends.get_backend("auto").name != "cuda"


@pytest.mark.skipif(STATUS != "gpu", reason="needs a CUDA GPU")
def test_cuda_on_a_gpu_matches_numba_on_a_real_workload():
    from dask_pipeline.waves.benchmark import bench_bars

    (bars,) = bench_bars(1, 30_000, seed=3)
    spec = WavesConfig(window_bars=500, max_windows=200, pre_score_threshold=0.0, skip_flat_windows=False)
    plan = plan_series(*(bars[c].to_numpy(np.float64) for c in ("high", "low", "close")), spec)
    params = score_params(spec)
    got = BACKENDS["cuda"].top_candidates(plan, spec, params)
    assert got.score.size > 100
    assert_same(got, BACKENDS["numba"].top_candidates(plan, spec, params))


def _toolkit_present() -> bool:
    """Whether NVRTC (which numba-cuda compiles with) may be found: a pip wheel or a system library."""
    import ctypes.util
    import importlib.util

    try:
        wheel = importlib.util.find_spec("nvidia.cuda_nvrtc") is not None
    except ModuleNotFoundError:
        wheel = False
    return wheel or ctypes.util.find_library("nvrtc") is not None


@pytest.mark.skipif(not _toolkit_present(), reason="no NVVM to compile PTX with (pip install 'numba-cuda[cu12]')")
def test_cuda_kernel_compiles_with_no_fused_multiply_add():
    """Compiled for a real GPU (PTX, no device needed), every float product is ``mul.rn``
    (never fused) and there is no ``fma``: the GPU rounds as the CPU kernel does."""
    code = textwrap.dedent(
        """
        import re, sys
        from numba import cuda, types
        try:
            cuda.compile_ptx(lambda a: None, (types.float64[:],), cc=(8, 0))
        except Exception as exc:
            print("no-nvvm", type(exc).__name__); sys.exit(0)
        from dask_pipeline.waves import cuda_kernels as ck
        f, i = types.float64, types.int64
        a = lambda t, d: types.Array(t, d, "C")
        sig = (a(f, 1), a(f, 1), a(f, 1), a(i, 1), a(i, 1), a(i, 1), a(i, 1), a(i, 2), i, i, i, a(f, 2), a(f, 2),
               a(i, 1), a(f, 1), i, a(f, 3), a(i, 3), a(i, 3), a(i, 1), a(i, 2), a(i, 3), a(f, 3), a(f, 2), a(i, 1))
        ptx, _ = cuda.compile_ptx(ck.scan_windows_cuda.py_func, sig, cc=(8, 0))
        print(len(re.findall(r"\\bfma\\.", ptx)), len(re.findall(r"\\bmul\\.f64", ptx)),
              len(re.findall(r"\\bmul\\.rn\\.f64", ptx)))
        """
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.startswith("no-nvvm"):
        pytest.skip("no NVVM to compile PTX with (pip install 'numba-cuda[cu12]')")
    fma, plain_mul, rn_mul = map(int, out.stdout.split())
    assert (fma, plain_mul) == (0, 0) and rn_mul > 100
