"""Feature cache: hits compute nothing; data, spec, benchmark or version changes miss;
concurrent writers of one key leave one complete file."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pandas as pd
import pytest

import dask_pipeline
from dask_pipeline.features import FeaturesConfig, IndicatorSpec, cache_key, compute, compute_cached
from dask_pipeline.features import engine
from tests.features.samples import make_bars


@pytest.fixture
def calls(monkeypatch):
    """Counts feature computations (the cache calls engine.compute on a miss)."""
    counter = {"n": 0}
    real = engine.compute

    def counting(*args, **kwargs):
        counter["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "compute", counting)
    return counter


@pytest.fixture
def bars():
    return make_bars("normal", 500, seed=3).astype(np.float32)


def _files(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_second_run_hits_and_computes_nothing(tmp_path, bars, calls):
    cfg = FeaturesConfig(cache_dir=str(tmp_path))
    first = compute_cached(bars, cfg)
    (path,) = [tmp_path / name for name in _files(tmp_path)]
    written = path.stat().st_mtime_ns
    second = compute_cached(bars, cfg)
    assert calls["n"] == 1
    assert path.stat().st_mtime_ns == written  # not rewritten
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(second, compute(bars, cfg))
    assert second.index is bars.index
    # a copy of the same data (other object, same bytes) hits too
    compute_cached(bars.copy(), cfg)
    assert calls["n"] == 1


def test_changes_of_data_spec_or_version_miss(tmp_path, bars, calls, monkeypatch):
    cfg = FeaturesConfig(cache_dir=str(tmp_path))
    compute_cached(bars, cfg)
    changed = bars.copy()
    changed.iloc[250, 3] += 0.01
    compute_cached(changed, cfg)
    compute_cached(bars.iloc[:-1], cfg)
    shifted = bars.set_axis(bars.index + pd.Timedelta("1min"))
    compute_cached(shifted, cfg)
    compute_cached(bars, FeaturesConfig(cache_dir=str(tmp_path), indicators=[{"sma": {"window": 21}}]))
    compute_cached(bars, FeaturesConfig(cache_dir=str(tmp_path), indicators=[{"bbands": {"nbdev": 1.5}}]))
    monkeypatch.setattr(dask_pipeline, "__version__", "999.0")
    compute_cached(bars, cfg)
    assert calls["n"] == 7
    assert len(_files(tmp_path)) == 7
    compute_cached(bars, cfg)  # the new version's entry now hits
    assert calls["n"] == 7


def test_settings_that_do_not_change_features_share_the_key(tmp_path, bars):
    a = FeaturesConfig(cache_dir=str(tmp_path))
    b = FeaturesConfig(cache_dir="elsewhere", benchmark="SPY")
    assert cache_key(bars, a) == cache_key(bars, b) == cache_key(bars, None)
    explicit = [IndicatorSpec(name="sma", params={"window": 20})]
    assert cache_key(bars, [IndicatorSpec(name="sma")]) == cache_key(bars, explicit)


def test_benchmark_change_misses_only_when_read(tmp_path, bars, calls):
    bench = make_bars("normal", 500, seed=4)
    other = bench.copy()
    other.iloc[100, 3] *= 1.01
    with_corr = FeaturesConfig(cache_dir=str(tmp_path), indicators=["corr"], benchmark="SPY")
    compute_cached(bars, with_corr, bench)
    compute_cached(bars, with_corr, other)
    assert calls["n"] == 2
    plain = FeaturesConfig(cache_dir=str(tmp_path))
    assert cache_key(bars, plain, bench) == cache_key(bars, plain, other)


def test_cache_off(tmp_path, bars, calls):
    compute_cached(bars, FeaturesConfig(cache=False, cache_dir=str(tmp_path)))
    compute_cached(bars, FeaturesConfig(cache=False, cache_dir=str(tmp_path)))
    compute_cached(bars, None)  # no directory: nothing to cache in
    assert calls["n"] == 3
    assert _files(tmp_path) == []


def test_a_damaged_file_is_recomputed_and_replaced(tmp_path, bars, calls):
    cfg = FeaturesConfig(cache_dir=str(tmp_path))
    good = compute_cached(bars, cfg)
    (path,) = [tmp_path / name for name in _files(tmp_path)]
    path.write_bytes(path.read_bytes()[:100])
    pd.testing.assert_frame_equal(compute_cached(bars, cfg), good)
    assert calls["n"] == 2
    pd.testing.assert_frame_equal(compute_cached(bars, cfg), good)
    assert calls["n"] == 2


def _writer(cache_dir: str, barrier, rounds: int) -> None:
    from dask_pipeline.results import write_parquet

    bars = make_bars("normal", 500, seed=3).astype(np.float32)
    cfg = FeaturesConfig(cache_dir=cache_dir)
    barrier.wait()
    features = compute_cached(bars, cfg)
    path = os.path.join(cache_dir, f"{cache_key(bars, cfg)}.parquet")
    for _ in range(rounds):  # keep racing on the same key
        write_parquet(path, features)


def test_concurrent_writers_of_one_key(tmp_path, bars):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), barrier, 25)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(_files(tmp_path)) == 1  # one file, no temporaries left behind
    cfg = FeaturesConfig(cache_dir=str(tmp_path))
    on_disk = pd.read_parquet(tmp_path / _files(tmp_path)[0])
    pd.testing.assert_frame_equal(on_disk, compute(bars, cfg), check_freq=False)


def test_bit_flips_are_never_used(tmp_path, bars, calls, caplog):
    """150 random single-bit flips of a cache file: each read gives the true features (a damaged
    file is logged once, recomputed and replaced), never different numbers."""
    cfg = FeaturesConfig(cache_dir=str(tmp_path), indicators=["sma", "rsi"])  # a small file: a quick test
    bars = bars.iloc[:200]
    good = compute_cached(bars, cfg)
    (path,) = [tmp_path / name for name in _files(tmp_path)]
    clean = path.read_bytes()
    rng = np.random.default_rng(7)
    recomputed = 0
    for bit in rng.choice(len(clean) * 8, size=150, replace=False):
        data = bytearray(clean)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        before, caplog_count = calls["n"], len(caplog.records)
        with caplog.at_level("WARNING", logger="dask_pipeline.features.cache"):
            got = compute_cached(bars, cfg)
        pd.testing.assert_frame_equal(got, good)
        if calls["n"] > before:
            recomputed += 1
            assert len(caplog.records) == caplog_count + 1 and "is damaged" in caplog.records[-1].getMessage()
            assert path.read_bytes() == clean  # replaced by the recomputed file
        else:
            assert len(caplog.records) == caplog_count  # a flip in bytes that hold no value: nothing to say
    assert recomputed > 75  # most flips touch a value or its metadata; every one of those was caught
    assert _files(tmp_path) == [path.name]


def test_an_unwritable_cache_is_said_once_and_the_run_goes_on(tmp_path, bars, calls, caplog, monkeypatch):
    from dask_pipeline.features import cache

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    monkeypatch.setattr(cache, "_unwritable", set())
    cfg = FeaturesConfig(cache_dir=str(tmp_path))
    with caplog.at_level("WARNING", logger="dask_pipeline.features.cache"):
        first = compute_cached(bars, cfg)
        compute_cached(bars.iloc[:-1], cfg)
    pd.testing.assert_frame_equal(first, compute(bars, cfg))
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: feature cache {tmp_path} cannot be written (No space left on device); "
        "features are computed without it"]
    assert _files(tmp_path) == []
