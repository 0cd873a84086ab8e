"""Feature sets shared across trials: computed once per study (across a resume too), held within
``tune.feature_memory``, read back from the cache once let go of, checked for look-ahead at new
parameters. Workers are threads of this process, so the kernels' own calls can be counted."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pandas as pd
import pytest
from dask_pipeline.config import load_config
from dask_pipeline.features import engine, indicator
from dask_pipeline.features.lookahead import LookAheadError
from dask_pipeline.tuning import apply_params, open_study, run_study, share_inputs, trials_frame
from tests.tuning.samples import quiet, write_study

SYMBOLS = ["SYN000", "SYN001", "SYN002", "SYN003"]  # small_store


@pytest.fixture
def computed(monkeypatch):
    """Calls of the feature kernels, by (symbol, rsi window): what computing a feature set costs."""
    calls: Counter = Counter()
    lock = threading.Lock()
    real = engine.compute

    def counting(bars, spec=None, benchmark=None, *, symbol=None):
        window = next(s.params["window"] for s in spec.indicators if s.name == "rsi")
        with lock:
            calls[(symbol, window)] += 1
        return real(bars, spec, benchmark, symbol=symbol)

    monkeypatch.setattr(engine, "compute", counting)
    return calls


def forgotten(client, key) -> bool:
    deadline = time.monotonic() + 10
    while client.run_on_scheduler(lambda dask_scheduler, k=key: k in dask_scheduler.tasks):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_feature_set_is_computed_once_per_study_and_across_a_resume(tmp_path, small_store, client, computed):
    tune = ("  n_trials: 12\n  sampler: random\n  pruner: none\n  concurrency: 2\n  seed: 1\n"
            "  feature_memory: 1B\n"  # room for no set between trials: most are let go of and read back
            "  space:\n"
            "    features.rsi.window: {categorical: [6, 8, 10, 800]}\n"  # 800: longer than the history
            "    label.horizon: {categorical: [3, 5]}\n"
            "    model.params.learning_rate: {float: [0.05, 0.3]}\n")
    cfg = load_config(write_study(tmp_path, small_store, tune))

    def study_run(cfg):
        study, state = open_study(cfg, quiet)
        inputs = share_inputs(cfg, client)
        run_study(study, state, cfg, client, inputs, quiet)
        inputs.pool.close()
        return trials_frame(study.get_trials(deepcopy=False), cfg.tune), inputs.pool.stage_record()

    trials, record = study_run(cfg)
    window = trials["params_features.rsi.window"]
    # A window longer than the history fails its trial before any feature is computed.
    too_long = trials[window == 800]
    assert (too_long["state"] == "FAIL").all() and too_long["error"].str.contains("too few for the walk-forward").all()
    ran = trials[window != 800]
    windows = set(ran["params_features.rsi.window"])
    assert len(windows) > 1 and (ran["state"] == "COMPLETE").all()
    # Each set the study needed was computed once per symbol, however often it was let go of and asked for again.
    assert computed == {(s, w): 1 for s in SYMBOLS for w in windows}
    assert record["computed"] == 4 * len(windows) and record["feature_sets"] == len(windows)
    assert record["sets_released"] > 0 and record["read_from_cache"] > 0
    for w, group in ran.groupby("params_features.rsi.window"):
        assert group["features_set"].nunique() == 1
        sources = group.sort_values("number")["features_source"].tolist()
        assert sources[0] == "computed" and set(sources[1:]) <= {"memory", "disk"}, (w, sources)
    assert ran["features_set"].nunique() == len(windows)
    assert record["trials_computed"] + record["trials_from_cache"] + record["trials_from_memory"] == len(ran)

    # A resumed study (a new driver: nothing in memory) reads the sets it had from the cache.
    computed.clear()
    again, record = study_run(load_config(write_study(tmp_path, small_store, tune), ["tune.n_trials=20"]))
    new = again[(again["number"] >= len(trials)) & (again["params_features.rsi.window"] != 800)]
    fresh = set(new["params_features.rsi.window"]) - windows
    assert computed == {(s, w): 1 for s in SYMBOLS for w in fresh}
    for w, group in new.groupby("params_features.rsi.window"):
        first = group.sort_values("number")["features_source"].iloc[0]
        assert first == ("computed" if w in fresh else "disk")


def test_the_pool_holds_sets_within_its_budget(tmp_path, small_store, client, computed):
    tune = "  space:\n    features.rsi.window: {int: [6, 12], step: 2}\n"
    cfg = load_config(write_study(tmp_path, small_store, tune))
    sets = [apply_params(cfg, {"features.rsi.window": w}) for w in (6, 8, 10, 12)]
    pool = share_inputs(cfg, client).pool

    def use(trial_cfg):
        held, reused = pool.acquire(trial_cfg)
        client.gather(held.futures)
        pool.release(held)
        return held, reused

    first, reused = use(sets[0])
    assert not reused and first.nbytes > 0 and pool.source(first) == "computed"
    pool.budget = 2.5 * first.nbytes  # room for two sets (alike in size), not three
    for trial_cfg in sets[1:]:
        use(trial_cfg)
        held = sum(s.nbytes for s in pool.sets.values())
        assert held <= pool.budget and len(pool.sets) == 2
    assert first.id not in pool.sets and forgotten(client, first.futures[0].key)  # let go of on the cluster too
    assert pool.counts.released == 2 and pool.counts.peak_sets == 2

    # Sets in use stay whatever the budget; of the others, the last one asked for stays.
    pool.budget = 0
    a, _ = pool.acquire(sets[0])
    b, _ = pool.acquire(sets[1])
    client.gather(a.futures + b.futures)
    assert len(pool.sets) == 4
    pool.release(a)
    assert a.id not in pool.sets and b.id in pool.sets  # b is in use
    pool.release(b)
    assert list(pool.sets) == [b.id]  # the last asked for

    # A set asked for again after it was let go of (and the scheduler dropped it) comes from the cache: no kernel runs.
    assert forgotten(client, a.futures[0].key)
    computed.clear()
    again, reused = use(sets[0])
    assert not reused and pool.source(again) == "disk" and not computed
    pool.close()


def test_user_indicators_are_checked_for_look_ahead_at_each_new_parameter(registry, tmp_path, small_store, client):
    @indicator("peek")
    def peek(bars, window: int = 3):
        close = bars["close"]
        return close.shift(-1) if window > 5 else close.rolling(window).mean()  # leaks past 5

    tune = "  space:\n    features.peek.window: {int: [2, 8]}\n"
    cfg = load_config(write_study(tmp_path, small_store, tune, indicators="[rsi, peek]"))
    pool = share_inputs(cfg, client).pool
    held, _ = pool.acquire(apply_params(cfg, {"features.peek.window": 4}))
    pool.release(held)
    with pytest.raises(LookAheadError, match="peek"):
        pool.acquire(apply_params(cfg, {"features.peek.window": 8}))
    assert len(pool.sets) == 1
    pool.close()


def test_a_study_without_feature_search_keeps_its_one_set(tmp_path, small_store, client):
    tune = "  n_trials: 3\n  concurrency: 1\n  feature_memory: 1B\n  space:\n    model.params.learning_rate: {float: [0.05, 0.3]}\n"
    cfg = load_config(write_study(tmp_path, small_store, tune))
    study, state = open_study(cfg, quiet)
    inputs = share_inputs(cfg, client)
    run_study(study, state, cfg, client, inputs, quiet)
    inputs.pool.close()
    frame = trials_frame(study.get_trials(deepcopy=False), cfg.tune)
    assert frame["features_source"].tolist()[0] == "computed"
    assert set(frame["features_source"].tolist()[1:]) <= {"memory"}  # never let go of, even over the budget
    assert inputs.pool.counts.released == 0 and isinstance(frame, pd.DataFrame)


def test_a_benchmark_outside_the_symbols_is_loaded_once_for_every_set(tmp_path, small_store, client):
    tune = "  space:\n    features.corr.window: {int: [20, 40]}\n"
    path = write_study(tmp_path, small_store, tune, indicators="[rsi, {corr: {window: 30}}]")
    cfg = load_config(path, {"data.symbols": ["SYN000", "SYN001"], "features.benchmark": "SYN003"})
    inputs = share_inputs(cfg, client)
    pool = inputs.pool
    (bench,) = pool.benchmark_bars
    assert bench.key.startswith("load-SYN003-")
    for window in (20, 40):
        held, _ = pool.acquire(apply_params(cfg, {"features.corr.window": window}))
        frames = client.gather(held.futures)
        assert list(frames[0].columns) == ["rsi_14", f"corr_{window}"] and frames[0][f"corr_{window}"].notna().any()
        # The sets' graphs name the held benchmark future's key: the scheduler loads it once.
        assert bench.key in {str(d) for f in held.futures for d in client.run_on_scheduler(
            lambda dask_scheduler, k=f.key: [d.key for d in dask_scheduler.tasks[k].dependencies])}
        pool.release(held)
    pool.close()


def test_a_space_that_can_enable_a_volume_indicator_on_price_only_bars_is_refused(tmp_path):
    import numpy as np

    from dask_pipeline.data import synthesize, write_dataset
    from dask_pipeline.errors import ConfigError
    from dask_pipeline.tuning import check_feature_space

    bars = synthesize(2, "2021-01-01", "2021-12-31", "1D", seed=3)
    write_dataset(tmp_path / "fx", {s: b.assign(volume=np.nan) for s, b in bars.items()})  # price-only
    space = "  space:\n    features.rsi.window: {int: [6, 20]}\n    features.obv.enabled: {categorical: [true, false]}\n"
    cfg = load_config(write_study(tmp_path, tmp_path / "fx", space))
    with pytest.raises(ConfigError, match=r"'tune.space.features.obv.enabled': obv needs volume, and symbol SYN000 .* "
                                          r"has none \(price-only bars\); every trial enabling it would fail"):
        check_feature_space(cfg)
    check_feature_space(load_config(write_study(tmp_path, tmp_path / "fx", space.replace("true, false", "false"))))
