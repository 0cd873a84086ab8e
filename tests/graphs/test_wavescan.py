"""The wavescan graph: keys, the GPU hint, and its table equals scanning each symbol directly."""

from __future__ import annotations

import dask
import pandas as pd

from dask_pipeline.config import load_config
from dask_pipeline.data import load_bars
from dask_pipeline.graph import gpu_workers, load_graph, stages_of
from dask_pipeline.waves import combine_scans, scan

from ..conftest import REPO


def wavescan_config(tmp_path, store, *extra):
    return load_config(
        REPO / "configs" / "wavescan.yaml",
        [f"data.root={store}", f"output.dir={tmp_path}", "waves.window_bars=300", *extra],
    )


def test_graph_computes_every_symbols_patterns(tmp_path, small_store):
    cfg = wavescan_config(tmp_path, small_store)
    assert cfg.graph == "wavescan" and cfg.waves.corrections
    graph = load_graph("wavescan").build(cfg)
    assert list(graph) == ["waves"]
    stages = stages_of(graph)
    names = sorted(key.rsplit("-", 1)[0] for key in stages)
    symbols = [f"SYN00{i}" for i in range(4)]
    assert names == sorted([f"load-{s}" for s in symbols] + [f"waves-{s}" for s in symbols] + ["waves-all"])
    assert sorted(set(stages.values())) == ["load", "waves"]

    (table,) = dask.compute(graph["waves"], scheduler="sync")
    direct = combine_scans([scan(load_bars(small_store, s), cfg.waves, symbol=s) for s in symbols])
    pd.testing.assert_frame_equal(table, direct)
    assert set(table["symbol"]) == set(symbols) and len(table) > 20
    assert table["correction_score"].notna().any()
    ordered = table.sort_values(["symbol", "window", "score"], ascending=[True, True, False], kind="mergesort")
    assert table.equals(ordered)


def test_scan_tasks_ask_for_the_gpu_only_on_gpu_clusters(tmp_path, small_store):
    cfg = wavescan_config(tmp_path, small_store, "data.symbols=[SYN001]")

    def resources(graph):
        found = {}
        for layer in graph["waves"].__dask_graph__().layers.values():
            for key in layer:
                wanted = (layer.annotations or {}).get("resources")
                wanted = wanted(key) if callable(wanted) else wanted  # merged layers: a function of the key
                found[key.rsplit("-", 1)[0]] = wanted if isinstance(wanted, dict) else None
        return found

    on_cpu = resources(load_graph("wavescan").build(cfg))
    assert on_cpu == {"load-SYN001": None, "waves-SYN001": None, "waves-all": None}
    with gpu_workers(True):
        on_gpu = resources(load_graph("wavescan").build(cfg))
    assert on_gpu == {"load-SYN001": None, "waves-SYN001": {"GPU": 1}, "waves-all": None}
