"""``scan``: the textbook impulse is found with its pivots and the top score; the table's contract."""

from __future__ import annotations

import numpy as np
import pytest

from dask_pipeline.errors import DataError
from dask_pipeline.waves import WavesConfig, combine_scans, scan
from dask_pipeline.waves.backends import BACKENDS as BACKENDS_BY_NAME
from dask_pipeline.waves.patterns import plan_series
from dask_pipeline.waves.score import score_params

from .conftest import BACKENDS
from .samples import random_walk, textbook_story

PIVOT_COLUMNS = [f"t{i}" for i in range(6)] + [f"p{i}" for i in range(6)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["up", "down"])
def test_textbook_impulse_is_found_with_its_pivots_and_the_top_score(backend, direction):
    bars, times, prices = textbook_story(direction)
    found = scan(bars, backend=backend, symbol="TXT")
    best = found.loc[found["score"].idxmax()]
    assert best["direction"] == direction and best["symbol"] == "TXT" and best["window"] == 0
    assert [best[f"t{i}"] for i in range(6)] == times[:6]
    assert [best[f"p{i}"] for i in range(6)] == prices[:6]
    assert best["score"] == pytest.approx(1.0, abs=1e-9)
    assert all(best[f"{s}_score"] == pytest.approx(1.0, abs=1e-9) for s in ("wave2", "wave3", "wave4", "wave5", "time"))
    assert (found["score"].drop(best.name) < 0.99).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_correction_after_the_impulse_is_found(backend):
    bars, times, prices = textbook_story()
    spec = WavesConfig(scan_pattern_types=["impulses", "corrections"])
    best = scan(bars, spec, backend=backend).iloc[0]
    assert best["score"] == pytest.approx(1.0, abs=1e-9)
    assert [best[f"t{i}"] for i in range(6, 9)] == times[6:]
    assert [best[f"p{i}"] for i in range(6, 9)] == prices[6:]
    assert best["correction_score"] == pytest.approx(1.0, abs=1e-9)


def test_a_pattern_in_overlapping_windows_is_reported_once():
    bars, times, _ = textbook_story()
    spec = WavesConfig(window_bars=190, window_overlap_ratio=0.9, top_k_per_window=1)
    plan = plan_series(*(bars[c].to_numpy() for c in ("high", "low", "close")), spec)
    top = BACKENDS_BY_NAME["numba"].top_candidates(plan, spec, score_params(spec))
    assert plan.window.tolist() == [0, 1] and top.pivots[0].tolist() == top.pivots[1].tolist()  # both windows' best
    found = scan(bars, spec)
    assert len(found) == 1 and found["window"].item() == 0
    assert found[[f"t{i}" for i in range(6)]].iloc[0].tolist() == times[:6]


def test_rows_are_sorted_and_capped_per_window_and_symbol():
    bars = random_walk(6000, seed=2)
    spec = WavesConfig(window_bars=400, top_k_per_window=2, top_k_per_symbol=25)
    found = scan(bars, spec, symbol="RW")
    assert len(found) == 25 and found.groupby("window").size().max() <= 2
    ordered = found.sort_values(["window", "score", "candidate"], ascending=[True, False, True], kind="mergesort")
    assert found.equals(ordered)
    everything = scan(bars, spec.model_copy(update={"top_k_per_symbol": 10_000}), symbol="RW")
    assert found["score"].min() >= everything["score"].nlargest(25).min()
    assert (found["score"].between(0, 1)).all() and (found["t0"] < found["t5"]).all()
    assert (found["window_start"] <= found["t0"]).all() and (found["t5"] <= found["window_end"]).all()


def test_symbol_column_and_empty_results():
    bars, _, _ = textbook_story()
    assert "symbol" not in scan(bars).columns
    bars.attrs["symbol"] = "ATTR"
    assert set(scan(bars)["symbol"]) == {"ATTR"}
    empty = scan(bars.iloc[:10], symbol="X")
    assert empty.empty and list(empty.columns[:3]) == ["symbol", "direction", "window"]
    assert set(PIVOT_COLUMNS) <= set(empty.columns)
    assert scan(bars.iloc[:0]).empty


def test_bad_bars_are_one_line_data_errors():
    bars, _, _ = textbook_story()
    with pytest.raises(DataError, match="symbol X: bars lack column\\(s\\) low; the wave scan needs high, low, close"):
        scan(bars.drop(columns="low"), symbol="X")
    broken = bars.copy()
    broken.iloc[7, broken.columns.get_loc("high")] = np.nan
    with pytest.raises(DataError, match=r"symbol X: row 7 \(2020-01-08 00:00:00\+00:00\): high is nan"):
        scan(broken, symbol="X")


def test_combine_sorts_by_symbol_window_score():
    bars = random_walk(3000, seed=6)
    spec = WavesConfig(window_bars=300)
    parts = [scan(bars, spec, symbol="B"), scan(bars.iloc[::-1].set_axis(bars.index), spec, symbol="A")]
    table = combine_scans(parts)
    assert list(table["symbol"].unique()) == ["A", "B"] and len(table) == sum(map(len, parts))
    for _, rows in table.groupby("symbol"):
        assert rows["window"].is_monotonic_increasing
        assert all(g["score"].is_monotonic_decreasing for _, g in rows.groupby("window"))
    assert combine_scans([]).empty


def test_naive_index_is_read_as_utc():
    bars, _, _ = textbook_story("up")
    naive = bars.set_axis(bars.index.tz_localize(None)) if bars.index.tz is not None else bars
    found = scan(naive, symbol="TXT")
    assert str(found["t0"].dt.tz) == "UTC"
    expected = scan(naive.set_axis(naive.index.tz_localize("UTC")), symbol="TXT")
    assert found.equals(expected)
