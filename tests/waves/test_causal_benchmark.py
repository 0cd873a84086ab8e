"""The causal-vs-scan count report runs on a config's synthetic data and its numbers hang together."""

from __future__ import annotations

from dask_pipeline.waves.causal.benchmark import COLUMNS, bench_causal_waves, main

CONFIG = """
data:
  root: {root}
  synthetic: {{symbols: 2, start: 2020-01-01, end: 2021-06-30, freq: 1D, seed: 3}}
waves: {{window_bars: 120, pivot_threshold: 2.0, up_to: 2}}
"""


def test_counts_hang_together(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.format(root=tmp_path / "store"))
    table, note = bench_causal_waves(str(path), repeats=1, reference_bars=120)
    assert list(table.columns) == COLUMNS and table["symbol"].tolist() == ["SYN000", "SYN001", "all"]
    rows = table.iloc[:2]
    assert (rows["bars"] == 391).all() and (rows["last_bar"] == "yes").all()
    assert (rows["seen"] <= rows["confirmed"]).all() and (rows["confirmed"] <= rows["scan"]).all()
    assert (rows["causal"] <= rows["hindsight"]).all() and (rows["scan_bests"] <= rows["bests"]).all()
    assert rows["causal"].sum() > 0 and table.iloc[2]["causal"] == rows["causal"].sum()
    assert "first 120 bars of SYN000" in note
    assert not (tmp_path / "store").exists()  # synthetic data stays in memory


def test_command_prints_the_table_or_one_error_line(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG.format(root=tmp_path / "store"))
    assert main([str(path), "--repeats", "1", "--reference-bars", "50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| symbol | bars |") and out[-1].startswith("plain-Python definition")
    assert main([str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.yaml" in err[0]
