"""Hyperparameter search over the walk-forward: an Optuna study driven over Dask futures.

The driver (the client process) does ask/tell; the cluster evaluates. Each trial applies
its parameters to the config (dotted paths such as ``model.params.max_depth``, validated
like any config) and runs its walk-forward folds as tasks keyed
``trial-<nnnn>-fold-<kk>-<token>``. With a pruner, fold k+1 is submitted only after fold
k reported, so a pruned trial's remaining folds never run; without one (``pruner: none``,
or several metrics) a trial's folds are submitted at once. Up to ``concurrency`` trials
run side by side; ``distributed.as_completed`` wakes the driver as each fold finishes.

- **Shared inputs.** Bars are loaded once per study and every fold task takes them as
  futures, by reference; the space cannot touch ``data.*`` (rejected at load: run one
  study per data set). It can touch indicator parameters (``features.rsi.window``,
  ``features.obv.enabled``): each trial's folds take the ``features-<S>`` results of its
  own feature set, keyed by content, so trials that need the same set share its tasks.
  ``FeaturePool`` (``tuning.inputs``) keeps each set on the cluster while its trials run
  and then within ``tune.feature_memory``, least recently used let go of first; a set
  asked for again is read from the feature cache, never computed twice in a study
  (across resumes too). Each trial records its set and where it came from (computed,
  disk, memory) in ``trials.parquet``; the counts go to ``stages.json``.
- **Storage.** Only the driver touches it. Default: a journal file ``study.journal`` in
  the run folder; ``tune.storage`` takes another file path or any Optuna storage URL
  (``sqlite:///...``, ``postgresql://...``), which lets several drivers share one study.
- **Dedup.** A parameter set is signed canonically (sorted paths; numbers to
  ``round_digits`` significant digits). A set already evaluated is never run again: the
  new trial is told the recorded outcome (COMPLETE value or PRUNED) and marked with the
  user attribute ``duplicate_of``. A set asked while its twin is still running waits for
  the twin's outcome. Duplicates count toward ``n_trials``.
- **Resume.** Rerunning the same config continues the same study (``study_name``
  defaults to the run name) up to ``n_trials`` in total, counting COMPLETE, PRUNED and
  failed trials. Opening reads every trial once (one ``get_trials``; O(n)). A trial left
  RUNNING by a driver that is gone (same host, its process no longer exists) was
  interrupted: it is re-queued with the same parameters (``enqueue_trial``, user
  attribute ``rerun_of``) and then marked FAIL; interrupted trials do not count toward
  ``n_trials``. Trials RUNNING under a live driver, or one on another host, are left to
  it. A study whose objective (data, features, label, folds, model, backtest, seed,
  space, metric, aggregate, direction) differs from the config's is refused.
- **Determinism.** The sampler's seed derives from ``(tune.seed, trials already in the
  study)``. With ``concurrency: 1`` a fresh study is reproducible: the same trials, in
  the same order, with the same values, on any cluster. With more, the sampler and the
  pruner see trials finish in the cluster's order, so later suggestions and pruning
  decisions depend on timing (a fold's value for given parameters never does, and
  neither does the best trial's walk-forward for given parameters). A resumed study is
  a function of what it resumed from, not identical to an uninterrupted one.

The fold evaluation (``evaluate_fold``) is a plain stage function; Optuna is imported
only by the driver, never on the workers.
"""

from dask_pipeline.tuning.driver import AGGREGATES, LiveTrial, StudyDriver, evaluate_fold, run_fold, run_study
from dask_pipeline.tuning.inputs import (FeaturePool, FeatureSet, SharedInputs, check_feature_space, feature_set_id,
                                         share_inputs)
from dask_pipeline.tuning.outputs import (best_params, best_trial, pareto_front, save_plots, study_outputs,
                                          study_summary, trials_frame)
from dask_pipeline.tuning.space import (KINDS, NOT_OBJECTIVE, SHARED_SECTIONS, TUNABLE_METRICS, UNTUNABLE, Param,
                                        TuneConfig, apply_params, check_space, signature)
from dask_pipeline.tuning.storage import JournalFlock, group_commit_journal, make_storage, storage_group, storage_name
from dask_pipeline.tuning.study import (PRUNERS, SAMPLERS, Outcome, StudyError, StudyState, cached_median_pruner,
                                        driver_alive, driver_identity, objective_digest, open_study, optuna_quiet,
                                        scan_trials, tell)

__all__ = [
    "AGGREGATES", "KINDS", "NOT_OBJECTIVE", "PRUNERS", "SAMPLERS", "SHARED_SECTIONS", "TUNABLE_METRICS", "UNTUNABLE",
    "FeaturePool", "FeatureSet", "JournalFlock", "LiveTrial", "Outcome", "Param", "SharedInputs", "StudyDriver",
    "StudyError", "StudyState", "TuneConfig", "apply_params", "best_params", "best_trial", "cached_median_pruner",
    "check_feature_space", "check_space", "driver_alive", "driver_identity", "evaluate_fold", "feature_set_id",
    "group_commit_journal", "make_storage", "objective_digest", "open_study", "optuna_quiet", "pareto_front",
    "run_fold", "run_study", "save_plots", "scan_trials", "share_inputs", "signature", "storage_group",
    "storage_name", "study_outputs", "study_summary", "tell", "trials_frame",
]
