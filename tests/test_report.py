"""report.html: built from a finished run folder alone, with every section that applies."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest

from dask_pipeline.cli import main
from dask_pipeline.config import load_config
from dask_pipeline.errors import OutputError
from dask_pipeline.report import build_report, chain_equity
from dask_pipeline.runner import run

PNG = 'data:image/png;base64,'


class Sections(HTMLParser):
    """Collects ``<section id>`` values, the embedded PNG ``<img>`` count, anything loaded from
    elsewhere (which a self-contained page has none of) and the text of each section."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: list[str] = []
        self.images = 0
        self.external: list[str] = []
        self.text: dict[str, str] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.ids.append(attrs["id"])
            self.text[attrs["id"]] = ""
        if tag == "img" and (attrs.get("src") or "").startswith(PNG):
            self.images += 1
        elif tag in ("img", "script", "link", "iframe") or (attrs.get("src") and tag != "img"):
            self.external.append(tag)

    def handle_data(self, data):
        if self.ids:
            self.text[self.ids[-1]] += data


def small_config(store, tmp_path, graph):
    return load_config(overrides=[
        f"data.root={store}", f"graph={graph}", "preset=blank", "folds.train=252", "folds.test=126",
        "cluster.n_workers=1", "cluster.dashboard=false", f"output.dir={tmp_path}", "output.run_name=r",
    ])


@pytest.fixture(scope="module")
def walkforward_run(tmp_path_factory, small_store):
    tmp = tmp_path_factory.mktemp("report-wf")
    return run(small_config(small_store, tmp, "walkforward"), echo=lambda *a: None)


def test_run_writes_report(walkforward_run):
    assert walkforward_run.run_dir / "report.html" in walkforward_run.files
    assert (walkforward_run.run_dir / "report.html").is_file()


def test_report_rebuilds_from_folder_alone(walkforward_run):
    run_dir = walkforward_run.run_dir
    (run_dir / "report.html").unlink()
    shutil.rmtree(run_dir / "figures")
    path = build_report(run_dir)
    page = Sections(path.read_text())
    assert page.ids == ["summary", "equity", "folds", "importances", "stages", "config"]
    assert page.external == []
    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert figures == ["equity-portfolio.png", "equity-symbols.png", "folds-sharpe.png", "importances.png",
                       "stages.png"]
    assert page.images == len(figures)
    assert "portfolio sharpe (mean over folds)" in page.text["summary"]
    assert "peak_worker_memory" in page.text["stages"] and "MiB" in page.text["stages"]
    assert "graph: walkforward" in page.text["config"]


def test_chain_equity_compounds_folds():
    ts = pd.date_range("2020-01-01", periods=4, tz="UTC")
    equity = pd.DataFrame({"fold": [0, 0, 1, 1], "curve": "portfolio", "timestamp": ts,
                           "equity": [1.1, 1.2, 0.5, 1.5]})
    chained = chain_equity(equity)["portfolio"]
    assert chained.tolist() == pytest.approx([1.1, 1.2, 0.6, 1.8])


def test_datacheck_has_no_equity(tmp_path, small_store):
    result = run(small_config(small_store, tmp_path, "datacheck"), echo=lambda *a: None)
    page = Sections((result.run_dir / "report.html").read_text())
    assert page.ids == ["summary", "data", "stages", "config"]
    assert "SYN003" in page.text["data"]


def test_tune_folder_gets_optuna_section(tmp_path, walkforward_run):
    run_dir = tmp_path / "tune"
    shutil.copytree(walkforward_run.run_dir, run_dir)
    pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE", "PRUNED", "COMPLETE"], "value": [0.2, None, 0.5],
                  "params_model.learning_rate": [0.1, 0.05, 0.2]}).to_parquet(run_dir / "trials.parquet")
    (run_dir / "best_params.json").write_text(json.dumps({"trial": 2, "value": 0.5, "direction": "maximize",
                                                         "params": {"model.learning_rate": 0.2}}))
    (run_dir / "plots").mkdir()
    (run_dir / "figures" / "optuna-history.png").unlink(missing_ok=True)
    shutil.copy(run_dir / "figures" / "stages.png", run_dir / "plots" / "param_importances.png")
    page = Sections(build_report(run_dir).read_text())
    assert page.ids == ["summary", "equity", "folds", "importances", "optuna", "stages", "config"]
    assert (run_dir / "figures" / "optuna-history.png").is_file()
    assert (run_dir / "figures" / "optuna-param_importances.png").is_file()
    assert "Parameter importances" in page.text["optuna"] and "model.learning_rate" in page.text["optuna"]
    assert "best trial" in page.text["summary"]
    assert page.images == 5 + 2  # the walk-forward's figures, the history and the importances plot


def test_waves_section(tmp_path, small_store):
    result = run(small_config(small_store, tmp_path, "wavescan"), echo=lambda *a: None)
    page = Sections((result.run_dir / "report.html").read_text())
    assert page.ids == ["summary", "waves", "stages", "config"]
    charts = sorted((result.run_dir / "figures").glob("waves-*.png"))
    assert len(charts) == 3
    assert page.images == 1 + len(charts)  # the stage chart and one price chart per top symbol
    assert "wave patterns" in page.text["summary"] and "wave3_score" in page.text["waves"]


def test_missing_run_dir(tmp_path, capsys):
    with pytest.raises(OutputError, match="no run.json"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_chain_equity_on_ragged_histories_has_one_row_per_bar():
    """The crash of `cannot reindex on an axis with duplicate labels`: a symbol ending early made
    the curves' timestamps differ while each repeated the bar where one fold closes and the next
    opens. Now that bar holds both folds (the later row, scaled by the earlier's end)."""
    ts = pd.date_range("2020-01-01", periods=6, tz="UTC")
    rows = [(0, "A", ts[0], 1.0), (0, "A", ts[1], 1.1), (0, "A", ts[2], 1.2),   # fold 0 closes on ts[2]
            (1, "A", ts[2], 0.99), (1, "A", ts[3], 1.05), (1, "A", ts[5], 1.1),  # fold 1 opens there
            (0, "B", ts[0], 1.0), (0, "B", ts[1], 0.9), (0, "B", ts[2], 0.9),
            (1, "B", ts[2], 1.0), (1, "B", ts[3], 0.8)]                          # B delists after ts[3]
    equity = pd.DataFrame(rows, columns=["fold", "curve", "timestamp", "equity"]).assign(buy_and_hold=1.0)
    chained = chain_equity(equity)
    assert chained.index.is_unique and list(chained.index) == [ts[0], ts[1], ts[2], ts[3], ts[5]]
    assert chained["A"].tolist() == pytest.approx([1.0, 1.1, 1.2 * 0.99, 1.2 * 1.05, 1.2 * 1.1])
    assert chained["B"].dropna().tolist() == pytest.approx([1.0, 0.9, 0.9, 0.72])
    assert chain_equity(equity, "buy_and_hold")["A"].notna().sum() == 5


def test_report_of_a_ragged_run_names_the_folds_symbols_sat_out(tmp_path):
    folds = pd.DataFrame({
        "fold": [0, 0, 0, 1, 1, 1], "curve": ["A", "B", "portfolio"] * 2,
        "status": ["traded", "sat out", "traded", "traded", "traded", "traded"],
        "test_start": pd.Timestamp("2021-01-01", tz="UTC"), "test_end": pd.Timestamp("2021-06-30", tz="UTC"),
        "sharpe": [0.5, float("nan"), 0.4, 0.1, 0.2, 0.3],
        "note": ["", "too little history: 10 of about 250 bars in the training window from 2020-01-01", "", "", "", ""],
    })
    folds.to_parquet(tmp_path / "folds.parquet")
    (tmp_path / "run.json").write_text(json.dumps({"graph": "walkforward", "notes": ["folds: dropped the last one"]}))
    page = Sections(build_report(tmp_path).read_text())
    assert "fold 0: too little history: 10 of about 250" in page.text["folds"]
    assert "1 of 2 symbols traded in every fold" in page.text["folds"]
    assert "note: folds: dropped the last one" in page.text["summary"]


def test_outputs_no_section_knows_get_a_generic_one(tmp_path):
    """A user graph's outputs: a table per frame, a line chart when time-indexed, JSON as text."""
    index = pd.date_range("2021-01-01", periods=40, freq="D", tz="UTC", name="timestamp")
    pd.DataFrame({"a": range(40), "b": [0.5] * 40}, index=index).to_parquet(tmp_path / "curves.parquet")
    pd.DataFrame({"symbol": ["X", "Y"], "score": [1.0, 2.0]}).to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "params.json").write_text('{"alpha": 0.5}\n')
    pd.DataFrame({"pred": [0.1]}).to_parquet(tmp_path / "predictions.parquet")  # a walk-forward output
    record = {"run": "mine", "graph": "mylab.graphs.x",
              "outputs": ["curves.parquet", "params.json", "predictions.parquet", "scores.parquet"]}
    (tmp_path / "run.json").write_text(json.dumps(record))
    page = Sections(build_report(tmp_path).read_text())
    text = page.text["outputs"]
    assert "curves.parquet" in text and "scores.parquet" in text and '"alpha": 0.5' in text
    assert "predictions.parquet" not in text and "40 rows x 2 columns" in text and "first and last 10 rows" in text
    assert (tmp_path / "figures" / "output-curves.png").is_file()
    assert not (tmp_path / "figures" / "output-scores.png").exists() and not page.external
