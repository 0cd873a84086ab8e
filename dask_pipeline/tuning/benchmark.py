"""``dask-pipeline bench tune``: the study driver's overhead per trial, resume time, real
walk-forward trials on Dask against ``study.optimize``, and a search over an indicator window
with feature sets shared across trials against features recomputed per trial."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import pandas as pd

from dask_pipeline.bench import timed, warm_worker
from dask_pipeline.tuning.inputs import FeaturePool, FeatureSet, bundle_inputs, feature_set_id


#: The search of ``bench tune``: three continuous hist_gbm / backtest parameters (no duplicates).
TUNE_SPACE = {
    "model.params.learning_rate": {"float": [0.02, 0.3], "log": True},
    "model.params.l2_regularization": {"float": [0.0, 1.0]},
    "backtest.threshold": {"float": [0.0, 0.002]},
}


#: Trials in flight while the driver's overhead is measured: enough that the driver, not a
#: fold's round trip, sets the pace.
OVERHEAD_CONCURRENCY = 16


def _no_objective(*args) -> dict[str, float]:
    """A fold task that does nothing: what is left of a trial is the driver's own cost."""
    from dask_pipeline.tuning import TUNABLE_METRICS

    return {name: 0.0 for name in TUNABLE_METRICS}


def bench_tune(trials_overhead: int = 1000, resume_trials: int = 10_000, wf_trials: int = 32,
               workers: int = 2, repeats: int = 3, *, preset: str = "balanced") -> pd.DataFrame:
    """The figures of ``dask-pipeline bench tune`` on ``configs/workloads/small.yaml`` (4 folds).

    1. Driver overhead per trial: the real ``StudyDriver`` (ask, tell, default journal
       storage, median pruner, Dask dispatch of every fold) over ``trials_overhead``
       trials whose fold task returns at once, 16 trials in flight, on a local cluster of
       ``workers``; wall seconds per trial. Two component rows say where it goes: the same
       storage calls without Dask, and the same fold tasks through Dask without Optuna.
       Random sampler; TPE (whose ask grows with the study) on its own row at a fifth of
       the trials. Each is the median of ``repeats`` fresh studies, repeats interleaved.
    2. Resume: ``open_study`` on a journal file holding ``resume_trials`` finished trials
       (written beforehand, untimed); median of ``repeats``.
    3. ``wf_trials`` real walk-forward trials (model preset ``preset``), random sampler
       with one seed so both sides evaluate the same parameter sets (checked), no pruner:
       the Dask driver on ``workers`` single-threaded workers, against
       ``optuna.Study.optimize(n_jobs=1)`` calling ``tuning.evaluate_fold`` for every fold
       in this process (features computed once, untimed; sklearn keeps its own threads).
       One timed run each, after a warm-up.

    Returns
    -------
    DataFrame
        One row per figure: ``measure``, ``value``, ``unit``, ``target`` and
        ``others_cores`` (cores other programs kept busy meanwhile; clean near 0).
    """
    import tempfile

    from dask_pipeline import tuning
    from dask_pipeline.cluster import connect
    from dask_pipeline.config import REPO_CONFIGS, ClusterConfig, load_config
    from dask_pipeline.runner import prepare_data

    path = REPO_CONFIGS / "workloads" / "small.yaml"
    rows = []
    quiet = lambda *a, **k: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:

        def tune_cfg(name: str, n_trials: int, sampler: str, pruner: str, model_preset: str = "fast",
                     concurrency: int = workers):
            return load_config(path, [
                "graph=tune", f"preset={model_preset}", "features.cache=false", f"output.dir={tmp}",
                f"output.run_name={name}", f"tune.n_trials={n_trials}", f"tune.sampler={sampler}",
                f"tune.pruner={pruner}", f"tune.concurrency={concurrency}", "tune.seed=5",
                f"tune.space={TUNE_SPACE}",
            ])

        prepare_data(tune_cfg("data", 1, "random", "none"), echo=quiet)

        class Dispatch(tuning.StudyDriver):
            evaluate = staticmethod(_no_objective)

        with connect(ClusterConfig(n_workers=workers, dashboard=False)) as client:
            client.wait_for_workers(workers)
            client.run(warm_worker)
            n_tpe = max(1, trials_overhead // 5)
            # per repeat: (wall s, driver-thread CPU s, others' cores) per trial
            timings: dict[str, list[tuple[float, float, float]]] = {"random": [], "storage": [], "dispatch": [],
                                                                     "tpe": []}
            lines: list[float] = []
            writes: list[float] = []
            for r in range(repeats):
                for what in timings:
                    sampler = "tpe" if what == "tpe" else "random"
                    n = n_tpe if what == "tpe" else trials_overhead
                    cfg = tune_cfg(f"overhead-{what}-{r}", n, sampler, "median", concurrency=OVERHEAD_CONCURRENCY)
                    study, state = tuning.open_study(cfg, quiet)
                    inputs = tuning.share_inputs(cfg, client)
                    held, _ = inputs.pool.acquire(cfg)  # the one feature set, computed before the clock starts
                    client.gather(held.futures)
                    inputs.pool.release(held)
                    journal = study._storage._backend
                    commits = journal.commits
                    with tuning.optuna_quiet():
                        driver = Dispatch(study, state, cfg, client, inputs, quiet)
                        work = {"storage": lambda: _storage_calls(driver),
                                "dispatch": lambda: _dispatch_calls(driver)}.get(what, driver.run)
                        cpu = time.thread_time()
                        wall, others = timed(work)
                        cpu = time.thread_time() - cpu
                    timings[what].append((wall / n, cpu / n, others))
                    if what == "random":
                        with open(cfg.run_dir / "study.journal", "rb") as f:
                            lines.append(sum(1 for _ in f) / n)
                        writes.append((journal.commits - commits) / n)
                        n_folds = len(driver._layout(cfg))
            shape = f"{n_folds} folds each, {OVERHEAD_CONCURRENCY} in flight"
            measures = {
                ("random", 1): (f"driver overhead per trial: its own CPU for ask, tell, storage and dispatch "
                                f"(random sampler, {trials_overhead:,} trials, {shape})", "<= 5 ms"),
                ("random", 0): ("  wall time per trial, Dask's scheduling round trips included", ""),
                ("storage", 0): (f"  part: its storage calls alone, no Dask ({statistics.median(lines):.0f} journal "
                                 f"lines a trial, {statistics.median(writes):.2f} fsynced writes a trial in the run)",
                                 ""),
                ("dispatch", 0): (f"  part: its {n_folds} no-op fold tasks a trial through Dask alone, no Optuna "
                                  "(wall)", ""),
                ("tpe", 1): (f"driver overhead per trial: its own CPU (TPE sampler, {n_tpe:,} trials, {shape})", ""),
            }
            for (what, which), (measure, target) in measures.items():
                rows.append({"measure": measure, "value": statistics.median(t[which] for t in timings[what]) * 1e3,
                             "unit": "ms", "target": target,
                             "others_cores": statistics.median(t[2] for t in timings[what])})

            cfg = tune_cfg("resume", resume_trials, "random", "none")
            _fill_study(cfg, resume_trials)
            loads = [timed(lambda: tuning.open_study(cfg, quiet)) for _ in range(repeats)]
            rows.append({"measure": f"resume: open a {resume_trials:,}-trial study (journal file)",
                         "value": statistics.median(w for w, _ in loads), "unit": "s", "target": "<= 2 s",
                         "others_cores": statistics.median(o for _, o in loads)})

            cfg = tune_cfg("dask", wf_trials, "random", "none", model_preset=preset)

            def dask_study() -> None:
                study, state = tuning.open_study(cfg, quiet)
                inputs = tuning.share_inputs(cfg, client)
                tuning.run_study(study, state, cfg, client, inputs, quiet)

            dask_wall, dask_others = timed(dask_study)
            dask_values = _values(tuning.open_study(cfg, quiet)[0])

        # The in-process baseline runs with no cluster alive (its event loop would take the GIL).
        plain_cfg = tune_cfg("plain", wf_trials, "random", "none", model_preset=preset)
        objective = _plain_objective(plain_cfg)
        objective(None)  # warm: JIT caches, sklearn imports
        holder: dict[str, Any] = {}
        plain_wall, plain_others = timed(lambda: holder.setdefault("study", _plain_study(plain_cfg, objective)))
        same = dask_values == _values(holder["study"])
    rows.append({"measure": f"{wf_trials} walk-forward trials ({preset} preset), plain study.optimize(n_jobs=1)",
                 "value": plain_wall, "unit": "s", "target": "", "others_cores": plain_others})
    rows.append({"measure": f"{wf_trials} walk-forward trials ({preset} preset), dask driver on {workers} workers",
                 "value": dask_wall, "unit": "s", "target": "", "others_cores": dask_others})
    rows.append({"measure": "speedup of the dask driver" + (", same trials and values" if same else
                                                            " (trial values DIFFER)"),
                 "value": plain_wall / dask_wall, "unit": "x", "target": f">= 1.8x on {workers} cores",
                 "others_cores": float("nan")})
    table = pd.DataFrame(rows)
    table.attrs["note"] = (
        "Walk-forward trials: random sampler with one seed on both sides, so both evaluate the same "
        f"{wf_trials} parameter sets in the same order whatever order the cluster finishes them in; no pruner; "
        f"space {', '.join(TUNE_SPACE)}. One timed run each."
    )
    return table


def _storage_calls(driver) -> None:
    """The driver's storage traffic for its ``n_trials`` trials, without Dask or a config:
    ask and the driver attribute; per fold a report and a pruning check; the fold values and
    tell. One storage group per step, as the driver has when each fold comes back on its own
    (it has fewer when several come back together)."""
    from dask_pipeline import tuning

    n_folds = len(driver._layout(driver.cfg))
    zeros = _no_objective()
    study = driver.study
    for _ in range(driver.tune.n_trials):
        with tuning.storage_group(study):
            trial = study.ask(driver.distributions)
            trial.set_user_attr("driver", driver.identity)
        for k in range(n_folds):
            with tuning.storage_group(study):
                trial.report(0.0, step=k)
                if k + 1 < n_folds:
                    trial.should_prune()
                else:
                    trial.set_user_attr("folds", {"n": n_folds, **{m: [zeros[m]] * n_folds for m in driver.metrics}})
                    study.tell(trial, 0.0)


def _dispatch_calls(driver) -> None:
    """The driver's Dask traffic for its ``n_trials`` trials, without Optuna: each trial's
    no-op fold tasks, with the fold task's arguments, one after the other, ``concurrency``
    trials at once, results fetched in the background as the driver does."""
    from distributed import as_completed

    c, inputs = driver.cfg, driver.inputs
    folds = driver._layout(c)
    held, _ = driver.pool.acquire(c)
    completed = as_completed(loop=driver.client.loop, with_results=True, raise_errors=False)
    where: dict[str, tuple[int, int]] = {}

    def submit(number: int, k: int) -> None:
        key = f"dispatch-{number:04d}-fold-{k:02d}"
        where[key] = (number, k)
        completed.add(driver.client.submit(_no_objective, folds[k], inputs.symbols, inputs.bars, held.futures,
                                           c.label, c.model, c.backtest, c.seed, key=key))

    started = live = 0
    while True:
        while live < driver.concurrency and started < driver.tune.n_trials:
            submit(started, 0)
            started, live = started + 1, live + 1
        if completed.is_empty():
            break
        future, _ = next(completed)
        number, k = where.pop(future.key)
        if k + 1 < len(folds):
            submit(number, k + 1)
        else:
            live -= 1
    driver.pool.release(held)


def _plain_objective(cfg) -> Callable[[Any], float]:
    """The walk-forward objective for plain ``study.optimize``: ``tuning.evaluate_fold`` over
    every fold in this process, on bars and features computed once; ``objective(None)`` runs
    the config's own parameters (a warm-up)."""
    from dask_pipeline import tuning
    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute
    from dask_pipeline.folds import plan_folds
    from dask_pipeline.graph import symbols_of

    symbols = symbols_of(cfg)
    bars = [load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, dtype=cfg.data.dtype) for s in symbols]
    features = [compute(b, cfg.features) for b in bars]
    stamps = {s: b.index for s, b in zip(symbols, bars)}
    distributions = {p: cfg.tune.space[p].distribution() for p in sorted(cfg.tune.space)}
    aggregate = tuning.AGGREGATES[cfg.tune.aggregate]
    metric = cfg.tune.metrics[0]

    def objective(trial) -> float:
        # The driver's ask draws the parameters in this (sorted) order, so one seed gives the same sets.
        params = {} if trial is None else {p: _suggest(trial, p, d) for p, d in distributions.items()}
        c = tuning.apply_params(cfg, params)
        folds = plan_folds(stamps, c.folds, c.label.horizon, c.backtest.periods_per_year).folds
        return aggregate([tuning.evaluate_fold(f, symbols, bars, features, c.label, c.model, c.backtest, c.seed)[metric]
                          for f in folds])

    return objective


def _suggest(trial, name: str, distribution) -> Any:
    """``trial.suggest_*`` for an Optuna distribution (what ``study.ask`` does with a fixed one)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


def _plain_study(cfg, objective: Callable[[Any], float]) -> Any:
    """``cfg``'s trials through plain ``optuna.Study.optimize(n_jobs=1)``, in memory, seeded as
    ``open_study`` seeds a fresh study."""
    import optuna

    from dask_pipeline import tuning

    sampler = tuning.SAMPLERS[cfg.tune.sampler](cfg.tune, _sampler_seed(cfg))
    study = optuna.create_study(directions=cfg.tune.directions, sampler=sampler)
    with tuning.optuna_quiet():
        study.optimize(objective, n_trials=cfg.tune.n_trials, n_jobs=1)
    return study


def _sampler_seed(cfg) -> int:
    # What open_study seeds a fresh study's sampler with, so both sides draw the same sets.
    return int(np.random.SeedSequence([cfg.tune.seed, 0]).generate_state(1)[0])


def _values(study) -> list[tuple]:
    """(params, value) of the complete trials, in order of their parameters."""
    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    return sorted((tuple(sorted(t.params.items())), round(t.value, 12)) for t in done)


def _fill_study(cfg, n: int) -> None:
    """Write ``n`` finished trials into the config's study (through its real storage), shaped
    like the driver's: parameters, the driver attribute, one report and one value per fold."""
    import optuna

    from dask_pipeline import tuning

    study, _ = tuning.open_study(cfg, lambda *a: None)
    distributions = {p: cfg.tune.space[p].distribution() for p in sorted(cfg.tune.space)}
    identity = tuning.driver_identity()
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(n):
        params = {p: float(d.low + (d.high - d.low) * rng.random()) for p, d in distributions.items()}
        folds = rng.normal(size=4).tolist()
        trials.append(optuna.trial.create_trial(
            params=params, distributions=distributions, value=float(np.mean(folds)),
            intermediate_values={k: float(np.mean(folds[: k + 1])) for k in range(4)},
            user_attrs={"driver": identity, "folds": {"n": 4, "sharpe": folds}},
        ))
    study.add_trials(trials)


def feature_space(windows: int) -> dict[str, dict[str, Any]]:
    """The search of the features row: ``features.rsi.window`` over ``windows`` values (6, 8,
    10, ...) and two continuous hist_gbm parameters."""
    return {
        "features.rsi.window": {"categorical": [6 + 2 * i for i in range(windows)]},
        "model.params.learning_rate": {"float": [0.02, 0.3], "log": True},
        "model.params.l2_regularization": {"float": [0.0, 1.0]},
    }


def bench_tune_features(trials: int = 64, windows: int = 8, workers: int = 2, repeats: int = 1, *,
                        workload: str = "medium", preset: str = "fast", client: Any = None) -> pd.DataFrame:
    """The features row of ``dask-pipeline bench tune``: feature sets shared across trials
    against features recomputed per trial.

    A study of ``trials`` trials over ``feature_space(windows)`` on
    ``configs/workloads/<workload>.yaml`` (model preset ``preset``), random sampler with one
    seed and no pruner, ``workers`` trials at a time on a local cluster of ``workers``
    single-threaded workers (warmed), run twice: with the study's ``FeaturePool`` (each
    feature set computed once, a fresh feature cache), and with a pool that gives every
    trial its own ``features-<S>`` tasks with the cache bypassed. Both draw the same
    parameter sets; their values are checked equal. Feature computations are counted from
    the tasks' own events (``graph.FEATURE_EVENTS``). ``repeats`` timed runs of each, interleaved
    (the first pair recomputing first, the next sharing first, ...), medians reported.
    ``client``: a cluster to use instead of starting one of ``workers``. ``client``: a cluster to use instead of a local one of ``workers``.

    Returns
    -------
    DataFrame
        The rows of ``bench_tune``'s table (``measure``, ``value``, ``unit``, ``target``,
        ``others_cores``); its ``attrs["note"]`` says what a trial's feature work costs
        against its folds.
    """
    import contextlib
    import gc
    import tempfile
    from dataclasses import replace

    from dask_pipeline import tuning
    from dask_pipeline.bench import wait_until_forgotten
    from dask_pipeline.cluster import connect
    from dask_pipeline.config import REPO_CONFIGS, ClusterConfig, load_config
    from dask_pipeline.runner import prepare_data

    path = REPO_CONFIGS / "workloads" / f"{workload}.yaml"
    quiet = lambda *a, **k: None  # noqa: E731
    space = feature_space(windows)
    with tempfile.TemporaryDirectory(prefix="bench-tune-features-") as tmp:

        def study_cfg(name: str):
            # A cache of its own per run: each shared run computes its sets (none is read from an earlier run).
            return load_config(path, [
                "graph=tune", f"preset={preset}", f"features.cache_dir={tmp}/cache-{name}", f"output.dir={tmp}",
                f"output.run_name={name}", f"tune.n_trials={trials}", "tune.sampler=random", "tune.pruner=none",
                f"tune.concurrency={workers}", "tune.seed=5", f"tune.space={space}",
            ])

        prepare_data(study_cfg("data"), echo=quiet)
        runs: dict[str, list[dict[str, Any]]] = {"recomputed": [], "shared": []}
        own = connect(ClusterConfig(n_workers=workers, dashboard=False)) if client is None else \
            contextlib.nullcontext(client)
        with own as client:
            client.wait_for_workers(workers)
            client.run(warm_worker)
            for r in range(repeats):
                for way in ("recomputed", "shared") if r % 2 == 0 else ("shared", "recomputed"):
                    cfg = study_cfg(f"{way}-{r}")
                    found: dict[str, Any] = {}

                    def run_study() -> None:
                        study, state = tuning.open_study(cfg, quiet)
                        inputs = tuning.share_inputs(cfg, client)
                        if way == "recomputed":
                            inputs.pool.close()
                            inputs = replace(inputs, pool=RecomputedFeatures(client, cfg, inputs.symbols, inputs.bars,
                                                                             0))
                        tuning.run_study(study, state, cfg, client, inputs, quiet)
                        inputs.pool.close()
                        found["counts"], found["symbols"] = inputs.pool.counts, len(inputs.symbols)

                    wall, others = timed(run_study)
                    gc.collect()  # the study's futures go with it: the next run starts from an empty cluster
                    wait_until_forgotten(client)
                    runs[way].append({"wall": wall, "others": others,
                                      "values": _values(tuning.open_study(cfg, quiet)[0]), **found})
        feature_seconds = _feature_seconds(study_cfg("data"))
    shared, again = runs["shared"][0], runs["recomputed"][0]  # their counts are the same on every repeat
    sets, n = len(shared["counts"].sets), shared["symbols"]
    values = [run["values"] for way in runs.values() for run in way]
    same = all(v == values[0] for v in values) and len(values[0]) == trials
    wall = {way: statistics.median(run["wall"] for run in done) for way, done in runs.items()}
    others = {way: statistics.median(run["others"] for run in done) for way, done in runs.items()}
    what = f"{trials} trials over features.rsi.window ({windows} values) x 2 model parameters, {workload}, {preset}"
    rows = [
        {"measure": f"feature computations (symbol x set), recomputed per trial: {what}",
         "value": again["counts"].tasks["computed"], "unit": "count", "target": f"= {trials} trials x {n} symbols",
         "others_cores": float("nan")},
        {"measure": "feature computations, shared across trials",
         "value": shared["counts"].tasks["computed"], "unit": "count",
         "target": f"= {sets} sets x {n} symbols = {sets * n}", "others_cores": float("nan")},
        {"measure": f"wall time, features recomputed per trial ({workers} workers)", "value": wall["recomputed"],
         "unit": "s", "target": "", "others_cores": others["recomputed"]},
        {"measure": f"wall time, feature sets shared ({workers} workers)", "value": wall["shared"], "unit": "s",
         "target": "", "others_cores": others["shared"]},
        {"measure": "speedup of sharing" + (", same trials and values" if same else " (trial values DIFFER)"),
         "value": wall["recomputed"] / wall["shared"], "unit": "x", "target": ">= 2x", "others_cores": float("nan")},
    ]
    table = pd.DataFrame(rows)
    table.attrs["note"] = (
        f"Features row: random sampler with one seed on both sides (the same {trials} parameter sets), no pruner, "
        f"{workers} trials at a time; {shared['counts'].trials['memory']} shared trials found their set in memory, "
        f"{shared['counts'].trials['disk']} in the cache. One feature set of {n} symbols takes "
        f"{feature_seconds * 1e3:.1f} ms to compute on one core; a trial, {wall['shared'] * workers / trials:.2f} s "
        f"of a worker (its folds). Wall times: median of {repeats} runs each, interleaved."
    )
    return table


def _feature_seconds(cfg: Any, repeats: int = 5) -> float:
    """Median seconds of one feature set of ``cfg`` over all its symbols, in this process (warm)."""
    import statistics
    import time

    from dask_pipeline.data import load_bars
    from dask_pipeline.features import compute
    from dask_pipeline.graph import symbols_of

    data = cfg.data
    bars = [load_bars(data.root, s, data.start, data.end, dtype=data.dtype) for s in symbols_of(cfg)]
    compute(bars[0], cfg.features)
    spent = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in bars:
            compute(b, cfg.features)
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


class RecomputedFeatures(FeaturePool):
    """The features row's baseline: every trial computes its own feature set (``features-<S>``
    tasks keyed by the trial, the cache bypassed) and lets go of it when it finishes."""

    def acquire(self, cfg: Any) -> tuple[FeatureSet, bool]:
        from dask.base import tokenize

        from dask_pipeline.graph import cached_features

        if cfg.features.benchmark is not None:
            raise ValueError("the features row has no benchmark symbol")
        self._clock += 1
        features = cfg.features.model_copy(update={"cache": False})
        set_id = feature_set_id(features)
        self.counts.sets.add(set_id)
        token = tokenize(features, self._clock)[:8]
        self._expect(set_id, [f"features-{s}-{token}" for s in self.symbols])
        futures = [self.client.submit(cached_features, bars, features, None, symbol=s, key=f"features-{s}-{token}")
                   for s, bars in zip(self.symbols, self.bars)]
        bundle = self.client.submit(bundle_inputs, self.symbols, self.bars, futures, key=f"tune-inputs-{token}")
        return FeatureSet(set_id, futures, bundle, users=1, last_used=self._clock), False

    def release(self, held: FeatureSet, fit: bool = True) -> None:
        for future in (*held.futures, held.bundle):
            future.release()


def format_tune_table(df: pd.DataFrame) -> str:
    """The bench-tune table as text (with its note on how the trials were drawn)."""
    rows = [("measure", "value", "target", "others_cores")]
    for r in df.itertuples():
        value = f"{int(r.value):,}" if r.unit == "count" else f"{r.value:,.3f} {r.unit}"
        rows.append((r.measure, value, r.target, "" if r.others_cores != r.others_cores else f"{r.others_cores:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    text = "\n".join(f"{m:<{widths[0]}}  {v:>{widths[1]}}  {t:<{widths[2]}}  {o:>{widths[3]}}".rstrip()
                     for m, v, t, o in rows)
    note = df.attrs.get("note")
    return text + ("\n" + note if note else "")

