"""What a finished study writes: the trial table, the best parameters, plots, best config."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.schema import dump_config
from dask_pipeline.tuning.space import TuneConfig, apply_params
from dask_pipeline.tuning.storage import storage_name
from dask_pipeline.tuning.study import StudyError


def best_trial(trials: Sequence[Any], tune: TuneConfig) -> Any | None:
    """The best evaluated (non-duplicate) COMPLETE trial; ties go to the lowest number.

    With several metrics: among the Pareto-optimal trials, the best on the first metric.
    """
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    if not done:
        return None
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in tune.directions])
    scores = np.array([t.values for t in done], dtype=np.float64) * signs
    if len(signs) > 1:
        dominated = ((scores[None, :, :] >= scores[:, None, :]).all(axis=2)
                     & (scores[None, :, :] > scores[:, None, :]).any(axis=2)).any(axis=1)
        candidates = [i for i in range(len(done)) if not dominated[i]]
    else:
        candidates = list(range(len(done)))
    best = max(candidates, key=lambda i: (scores[i, 0], -done[i].number))
    return done[best]


def pareto_front(trials: Sequence[Any], tune: TuneConfig) -> list[Any]:
    """The non-dominated evaluated COMPLETE trials (several metrics), by number."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    if not done:
        return []
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in tune.directions])
    scores = np.array([t.values for t in done], dtype=np.float64) * signs
    dominated = ((scores[None, :, :] >= scores[:, None, :]).all(axis=2)
                 & (scores[None, :, :] > scores[:, None, :]).any(axis=2)).any(axis=1)
    return [t for t, d in zip(done, dominated) if not d]


def trials_frame(trials: Sequence[Any], tune: TuneConfig) -> pd.DataFrame:
    """``trials.parquet``: one row per trial, by number.

    Columns: ``number``, ``state``, ``value`` (COMPLETE trials; ``value_<metric>`` for several),
    ``params_<path>`` per searched path, ``fold_values`` (list; or ``fold_values_<metric>``),
    ``n_folds`` (of the trial's layout), ``duration`` (seconds), ``duplicate_of``,
    ``rerun_of``, ``error`` (why it failed; ``interrupted`` for a trial re-queued after its
    driver stopped), ``features_set`` (its feature set, ``tuning.feature_set_id``) and
    ``features_source``: where the trial's folds got it, ``computed`` (for this trial),
    ``disk`` (the feature cache) or ``memory`` (held on the cluster for another trial);
    empty for a trial that never ran folds (a duplicate, a config error).
    """
    metrics = tune.metrics
    requeued = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        folds = t.user_attrs.get("folds", {})
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        # A pruned trial's Optuna value is its last partial aggregate: not an objective value.
        values = t.values if t.state.name == "COMPLETE" and t.values else [None] * len(metrics)
        if len(metrics) == 1:
            row["value"] = values[0]
        else:
            row.update({f"value_{m}": v for m, v in zip(metrics, values)})
        for path in sorted(tune.space):
            row[f"params_{path}"] = t.params.get(path)
        if len(metrics) == 1:
            row["fold_values"] = folds.get(metrics[0], [])
        else:
            row.update({f"fold_values_{m}": folds.get(m, []) for m in metrics})
        row["n_folds"] = folds.get("n")
        row["duration"] = t.duration.total_seconds() if t.duration is not None else None
        row["duplicate_of"] = t.user_attrs.get("duplicate_of")
        row["rerun_of"] = t.user_attrs.get("rerun_of")
        row["features_set"] = t.user_attrs.get("features", {}).get("set")
        row["features_source"] = t.user_attrs.get("features", {}).get("source")
        row["error"] = "interrupted" if t.number in requeued and t.state.name == "FAIL" else t.user_attrs.get("error")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for column in ("n_folds", "duplicate_of", "rerun_of"):
        frame[column] = frame[column].astype("Int64")
    for column in [c for c in frame.columns if c.startswith("value") or c == "duration"]:
        frame[column] = frame[column].astype("float64")
    for column in [c for c in frame.columns if c.startswith("params_")]:
        if frame[column].map(type).nunique() > 1 and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    for column in ("error", "features_set", "features_source"):
        frame[column] = frame[column].astype("str").where(frame[column].notna(), None)
    return frame


def study_summary(trials: Sequence[Any]) -> dict[str, int]:
    """Counts over the whole study: states, duplicates, interruptions, folds run and skipped,
    distinct feature sets, and trials by where their feature set came from."""
    requeued = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
    summary = dict.fromkeys(("trials", "complete", "pruned", "failed", "interrupted", "duplicates",
                             "folds_run", "folds_skipped", "feature_sets", "features_computed",
                             "features_from_cache", "features_from_memory"), 0)
    summary["trials"] = len(trials)
    sets = {t.user_attrs["features"].get("set") for t in trials if "features" in t.user_attrs}
    summary["feature_sets"] = len(sets - {None})
    for t in trials:
        source = t.user_attrs.get("features", {}).get("source")
        if source in ("computed", "disk", "memory"):
            summary[{"computed": "features_computed", "disk": "features_from_cache",
                     "memory": "features_from_memory"}[source]] += 1
        state = t.state.name
        folds = t.user_attrs.get("folds", {})
        done = max((len(v) for k, v in folds.items() if k != "n"), default=0)
        if "duplicate_of" in t.user_attrs:
            summary["duplicates"] += 1
            continue
        if state == "COMPLETE":
            summary["complete"] += 1
        elif state == "PRUNED":
            summary["pruned"] += 1
            summary["folds_skipped"] += folds.get("n", done) - done
        elif state == "FAIL":
            summary["interrupted" if t.number in requeued else "failed"] += 1
        summary["folds_run"] += done
    return summary


def best_params(trials: Sequence[Any], cfg: Any, best: Any) -> dict[str, Any]:
    """``best_params.json``: the study, the best trial (params, value, fold values) and the summary."""
    tune = cfg.tune
    record: dict[str, Any] = {
        "study": tune.study_name or cfg.output.run_name or "tune",
        "storage": storage_name(cfg),
        "metric": tune.metric,
        "aggregate": tune.aggregate,
        "direction": tune.direction,
        "sampler": tune.sampler,
        "pruner": tune.pruning,
        "trial": best.number,
        "params": dict(sorted(best.params.items())),
        "value": best.values[0] if len(tune.metrics) == 1 else dict(zip(tune.metrics, best.values)),
        "fold_values": {m: best.user_attrs.get("folds", {}).get(m, []) for m in tune.metrics},
        "summary": study_summary(trials),
    }
    if len(tune.metrics) > 1:
        record["pareto_front"] = [{"trial": t.number, "values": dict(zip(tune.metrics, t.values)),
                                   "params": dict(sorted(t.params.items()))} for t in pareto_front(trials, tune)]
    return record


def save_plots(study: Any, cfg: Any, echo: Callable[..., Any] = print) -> tuple[dict[str, str], dict[str, bytes]]:
    """Optimisation history, parameter importances and parallel coordinates as PNG, for ``<run>/plots/``.

    Returns
    -------
    (dict, dict)
        Plot name -> its file in the run folder, or the reason it was skipped; and file ->
        PNG bytes, which the runner publishes with the run's other outputs.
    """
    import sys
    import warnings

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # a headless driver; a notebook keeps its own backend
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    import io

    tune = cfg.tune
    target = None if len(tune.metrics) == 1 else (lambda t: t.values[0])
    name = tune.metrics[0]
    seed = cfg.seed if tune.seed is None else tune.seed
    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=name),
        "param_importances": lambda: vis.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), target=target, target_name=name),
        "parallel_coordinate": lambda: vis.plot_parallel_coordinate(study, target=target, target_name=name),
    }
    done: dict[str, str] = {}
    images: dict[str, bytes] = {}
    for plot, draw in plots.items():
        if plot == "param_importances" and n_complete < 2:
            done[plot] = "skipped: fewer than 2 complete trials"
            echo(f"note: {plot} plot {done[plot]}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                done[plot] = f"skipped: {exc}"
                echo(f"note: {plot} plot {done[plot]}")
                continue
        figure = np.atleast_1d(axes).flat[0].figure
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(figure)
        done[plot] = f"plots/{plot}.png"
        images[done[plot]] = buffer.getvalue()
    return done, images


def study_outputs(study: Any, cfg: Any, echo: Callable[..., Any] = print) -> tuple[Any, dict[str, Any]]:
    """The best trial's walk-forward config and the study's result files.

    Returns
    -------
    (Config, dict)
        The best parameters applied to the config (a walk-forward), and ``trials``
        (DataFrame), ``best_params`` (dict), ``best_config.yaml`` (text: that walk-forward,
        runnable on its own as run ``<run>-best``) and ``plots/<name>.png`` (bytes).

    Raises
    ------
    StudyError
        When no trial completed.
    """
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials, cfg.tune)
    summary = study_summary(trials)
    if best is None:
        errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
        first = f"; first error: {errors[0]}" if errors else ""
        raise StudyError(f"tune: no trial completed ({summary['failed']} failed, {summary['pruned']} pruned){first}")
    best_cfg = apply_params(cfg, best.params)
    record = best_params(trials, cfg, best)
    record["plots"], images = save_plots(study, cfg, echo)
    standalone = best_cfg.model_copy(update={"output": best_cfg.output.model_copy(
        update={"run_name": f"{cfg.output.run_name or 'run'}-best"})})
    value = record["value"]
    shown = f"{value:.4f}" if isinstance(value, float) else json.dumps(value)
    echo(f"tune: {summary['trials']} trials ({summary['complete']} complete, {summary['pruned']} pruned, "
         f"{summary['failed']} failed, {summary['interrupted']} interrupted and re-run, {summary['duplicates']} "
         f"duplicates told from the record; {summary['folds_run']} folds run, {summary['folds_skipped']} skipped "
         f"by pruning); best {cfg.tune.metrics[0] if len(cfg.tune.metrics) == 1 else 'values'} {shown} "
         f"at trial {best.number}: {json.dumps(record['params'])}")
    return best_cfg, {
        "trials": trials_frame(trials, cfg.tune),
        "best_params": record,
        "best_config.yaml": dump_config(standalone),
        **images,
    }
