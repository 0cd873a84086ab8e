"""Real-shaped data through the CLI: import what pandas writes, walk forward, report.

The universe (``tests/data/realistic.py``): a weekday stock, the same stock cut at both
ends, a 7-day series, an hourly price-only FX series and a stock delisted mid-sample,
written as ``DataFrame.to_csv()`` writes them. One run of each command, as a user types
it, reading every line they print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.data import realistic

#: What distributed may log while it stops a loaded machine's workers: not ours, not the run's.
SHUTDOWN = "distributed.nanny: Worker process still alive"


def cli(*args, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "dask_pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if SHUTDOWN not in line]
    return done.returncode, lines


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("realistic")
    realistic.write_csvs(realistic.universe(), tmp / "csv")
    imported = cli("data", "import", "csv", "--out", "store", cwd=tmp)
    (tmp / "wf.yaml").write_text(
        "graph: walkforward\npreset: blank\ndata: {root: store}\nfeatures: {cache: false}\n"
        f"folds: {{train: {realistic.FOLDS['train']}, test: {realistic.FOLDS['test']}}}\n"
        "cluster: {n_workers: 1, dashboard: false}\n"
    )
    ran = cli("run", "wf.yaml", cwd=tmp)
    return tmp, imported, ran


def test_import_reads_what_pandas_writes(walked):
    _, (code, lines), _ = walked
    assert code == 0 and lines == ["imported 5 symbols into store: ACME, ACME_CUT, BTC, EURUSD, GONE"]


def test_walk_forward_runs_cleanly_and_says_what_it_dropped(walked):
    tmp, _, (code, lines) = walked
    assert code == 0, "\n".join(lines[-5:])
    text = "\n".join(lines)
    assert "Traceback" not in text and "Warning" not in text and "warning" not in text.lower()
    assert [line for line in lines if line.startswith("note:")] == [
        "note: folds: dropped the last test window, 2022-07-01 to 2022-07-20 23:00 (342 bars): shorter than "
        "folds.min_test (half of folds.test 6M)"]
    assert lines[-1].startswith("results: ") and (tmp / "results/wf/report.html").is_file()


def test_results_follow_each_symbols_own_calendar(walked):
    tmp, _, _ = walked
    out = tmp / "results/wf"
    record = json.loads((out / "run.json").read_text())
    assert {s: c["periods_per_year"] for s, c in record["calendars"].items()} == {
        "ACME": 251, "ACME_CUT": 250, "BTC": 365, "EURUSD": 6267, "GONE": 251}
    folds = pd.read_parquet(out / "folds.parquet")
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sat = folds[folds["status"] == "sat out"].groupby("curve")["fold"].apply(list).to_dict()
    assert sat == {"ACME_CUT": [0, 1], "EURUSD": [0, 1, 2], "GONE": [3, 4]}
    symbols = folds[(folds["curve"] != "portfolio") & (folds["status"] == "traded")]
    assert (symbols["periods_per_year"] == symbols["curve"].map(
        {s: float(c["periods_per_year"]) for s, c in record["calendars"].items()})).all()
    equity = pd.read_parquet(out / "equity.parquet")
    stock = pd.DatetimeIndex(equity.loc[equity["curve"] == "ACME", "timestamp"])
    assert not (stock.day_of_week >= 5).any()  # a weekday stock gets no weekend rows
    assert {"equity", "buy_and_hold"} <= set(equity.columns)
    assert folds[["excess_return", "information_ratio"]].notna().any().all()


def test_report_rebuilds(walked, capsys):
    from dask_pipeline.cli import main

    tmp, _, _ = walked
    assert main(["report", str(tmp / "results/wf")]) == 0
    assert capsys.readouterr().out == f"report: {tmp / 'results/wf/report.html'}\n"
    page = (tmp / "results/wf/report.html").read_text()
    assert "Symbols sitting folds out" in page and "no bars in the test window (its last bar is 2021-03-15)" in page
