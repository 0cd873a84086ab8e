"""The research graph: every stage's outputs from one graph that loads each symbol once."""

from __future__ import annotations

import dask
import pandas as pd

from dask_pipeline.config import load_config
from dask_pipeline.graph import stages_of
from dask_pipeline.graphs import research, walkforward, wavescan

from ..conftest import REPO


def test_research_composes_the_stages_and_shares_loads(tmp_path, small_store):
    cfg = load_config(
        REPO / "configs" / "research.yaml",
        [f"data.root={small_store}", "data.synthetic=null", f"output.dir={tmp_path}", "preset=blank",
         "folds.train=252", "folds.test=126", "features.cache=false", "waves.window_bars=250"],
    )
    outputs = research.build(cfg)
    assert set(outputs) == {"summary", "folds", "predictions", "equity", "importances", "waves"}
    stages = stages_of(outputs)
    loads = [k for k, s in stages.items() if s == "load"]
    assert len(loads) == 4  # one per symbol, shared by summary, features and waves

    values = dict(zip(outputs, dask.compute(*outputs.values(), scheduler="sync")))
    alone_wf = walkforward.build(cfg)
    alone_waves = wavescan.build(cfg)
    expect = dict(zip(alone_wf, dask.compute(*alone_wf.values(), scheduler="sync")))
    expect["waves"] = dask.compute(alone_waves["waves"], scheduler="sync")[0]
    for name, frame in expect.items():
        pd.testing.assert_frame_equal(values[name], frame)
    assert len(values["summary"]) == 4 and set(values["waves"]["symbol"]) <= set(values["summary"]["symbol"])
