"""Walk-forward study: per symbol load -> features; per fold fit -> backtest; one aggregate."""

from dask_pipeline.data import load_bars
from dask_pipeline.folds import make_folds
from dask_pipeline.graph import checkpointed, features_tasks, symbols_of, task
from dask_pipeline.walkforward import (TABLES, aggregate_folds, backtest_fold, min_history, require_history, table,
                                      train_fold, union_index)


def build(cfg):
    """``folds``, ``predictions``, ``equity``, ``importances`` of a walk-forward over every symbol.

    Every fold task takes the shared ``load-<S>`` / ``features-<S>`` results by key; each
    fold's result is checkpointed under ``cfg.checkpoint_dir`` so ``--resume`` recomputes
    only the folds an interrupted run had not finished.
    """
    symbols = symbols_of(cfg)
    per_symbol = features_tasks(cfg)
    bars = [per_symbol[s][0] for s in symbols]
    features = [per_symbol[s][1] for s in symbols]
    # Folds are laid out on the client from the union of timestamps: only closes are read.
    stamps = {s: load_bars(cfg.data.root, s, cfg.data.start, cfg.data.end, columns=["close"], dtype=cfg.data.dtype).index
              for s in symbols}
    require_history({s: len(i) for s, i in stamps.items()}, min_history(cfg.features, cfg.label.horizon), cfg.data)
    index = union_index(stamps.values())
    folds = make_folds(index, cfg.folds, cfg.label.horizon)
    width = max(2, len(str(len(folds) - 1)))
    results = []
    for fold in folds:
        name = f"fold-{fold.index:0{width}d}"
        fit = task(train_fold, fold, symbols, bars, features, cfg.label, cfg.model, cfg.seed, name=f"{name}-fit", stage="fit")
        done = task(backtest_fold, fit, cfg.backtest, name=f"{name}-backtest", stage="backtest")
        results.append(checkpointed(done, cfg.checkpoint_dir / f"{name}.ckpt", name))
    tables = task(aggregate_folds, results, name="aggregate")
    return {t: task(table, tables, t, name=f"aggregate-{t}", stage="aggregate") for t in TABLES}
