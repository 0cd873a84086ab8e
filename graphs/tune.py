"""Optuna study over the walk-forward: trials side by side on the cluster, then the best
parameters' full walk-forward (see ``dask_pipeline.tuning``)."""

from dask_pipeline.graph import record_stage
from dask_pipeline.graphs import walkforward
from dask_pipeline.tuning import check_feature_space, open_study, run_study, share_inputs, study_outputs


def check(cfg):
    """The walk-forward's checks (same inputs and folds), and a space that can enable a volume indicator on price-only bars."""
    walkforward.check(cfg)
    check_feature_space(cfg)


def drive(cfg, client, echo):
    """``trials``, ``best_params``, ``best_config.yaml`` (plots go to ``plots/``), and the best
    trial's walk-forward tables: ``folds``, ``predictions``, ``equity``, ``importances``."""
    study, state = open_study(cfg, echo)          # resumes, re-queues interrupted trials
    inputs = share_inputs(cfg, client)            # bars once; feature sets as trials ask, each computed once
    try:
        run_study(study, state, cfg, client, inputs, echo)
        best_cfg, outputs = study_outputs(study, cfg, echo)
        # Same load/features keys as the trials' futures: the scheduler reuses those still held.
        tables = walkforward.build(best_cfg)
        names = sorted(tables)
        values = client.gather(client.compute([tables[n] for n in names]))
    finally:
        inputs.pool.close()
    record_stage("features", inputs.pool.stage_record())  # sets computed, read from the cache, reused
    return {**dict(zip(names, values)), **outputs}
