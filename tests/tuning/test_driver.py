"""The driver on a cluster: a fold that fails fails its trial with one line, and the study goes on."""

from __future__ import annotations

from dask_pipeline.config import load_config
from dask_pipeline.tuning import open_study, run_study, share_inputs, trials_frame
from tests.tuning.samples import quiet, write_study


def test_a_failing_fold_fails_its_trial_and_the_study_goes_on(tmp_path, small_store, client):
    # A learning rate the config accepts (it checks names) and the estimator refuses when it fits.
    tune = ("  n_trials: 4\n  sampler: random\n  pruner: none\n  concurrency: 2\n  seed: 2\n"
            "  space:\n    model.params.learning_rate: {categorical: [0.1, -1.0]}\n")
    cfg = load_config(write_study(tmp_path, small_store, tune))
    study, state = open_study(cfg, quiet)
    inputs = share_inputs(cfg, client)
    lines = []
    run_study(study, state, cfg, client, inputs, lines.append)
    inputs.pool.close()
    trials = trials_frame(study.get_trials(deepcopy=False), cfg.tune)
    bad = trials[trials["params_model.params.learning_rate"] == -1.0]
    good = trials[trials["params_model.params.learning_rate"] == 0.1]
    assert len(bad) and len(good) and len(trials) == 4
    assert (bad["state"] == "FAIL").all() and (good["state"] == "COMPLETE").all()
    assert bad["error"].str.match(r"fold \d: \w+Error: .*learning_rate").all()
    assert any(line.startswith(f"trial {bad['number'].iloc[0]:4d} FAIL") for line in lines)
