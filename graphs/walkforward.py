"""Walk-forward study: per symbol load -> features; per fold fit -> backtest; one aggregate."""

from dask_pipeline.graph import (checkpointed, features_tasks, fold_plan, gpu_workers_present, require_volume,
                                 symbols_of, task, tell_plan)
from dask_pipeline.models import resolve_device
from dask_pipeline.walkforward import TABLES, aggregate_folds, backtest_fold, table, train_fold


def check(cfg):
    """Before any cluster starts: volume indicators on price-only symbols, and a fold layout that works."""
    require_volume(cfg)
    fold_plan(cfg)


def build(cfg):
    """``folds``, ``predictions``, ``equity``, ``importances`` of a walk-forward over every symbol.

    Folds are laid out on the client from each symbol's own timestamps (``fold_plan``);
    every fold task takes the shared ``load-<S>`` / ``features-<S>`` results by key; each
    fold's result is checkpointed under ``cfg.checkpoint_dir`` so ``--resume`` recomputes
    only the folds an interrupted run had not finished.
    """
    symbols = symbols_of(cfg)
    per_symbol = features_tasks(cfg)
    bars = [per_symbol[s][0] for s in symbols]
    features = [per_symbol[s][1] for s in symbols]
    plan = fold_plan(cfg)
    tell_plan(plan)  # dropped windows, sit-outs, calendars: a note line and run.json
    width = max(2, len(str(len(plan.folds) - 1)))
    results = []
    model = resolve_device(cfg.model, gpu_workers_present())  # auto: the GPU when there is one
    for fold in plan.folds:
        name = f"fold-{fold.index:0{width}d}"
        fit = task(train_fold, fold, symbols, bars, features, cfg.label, model, cfg.seed, name=f"{name}-fit", stage="fit",
                   gpu=model.device == "cuda")
        done = task(backtest_fold, fit, cfg.backtest, name=f"{name}-backtest", stage="backtest")
        results.append(checkpointed(done, cfg.checkpoint_dir / f"{name}.ckpt", name))
    tables = task(aggregate_folds, results, name="aggregate")
    return {t: task(table, tables, t, name=f"aggregate-{t}", stage="aggregate") for t in TABLES}
