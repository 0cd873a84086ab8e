"""Every validation failure is one line naming the file, symbol, row and problem."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from dask_pipeline.data import import_csv, read_csv_bars, validate_bars
from dask_pipeline.errors import DataError
from tests.data.samples import CSV_HEADER, good_rows, tree, write_csv


def csv_error(tmp_path, rows, header=CSV_HEADER, name="AAPL.csv") -> str:
    """Import a one-file CSV and return its error message; check nothing was written."""
    path = write_csv(tmp_path / "in" / name, rows, header)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_csv(path, out)
    assert tree(out) == []
    message = str(err.value)
    assert "\n" not in message
    return message


def with_row(rows: list[str], position: int, line: str) -> list[str]:
    """``rows`` with data row ``position`` (1-based) replaced by ``line``."""
    return [line if i == position - 1 else row for i, row in enumerate(rows)]


def prefix(tmp_path, row: int, stamp: str, name="AAPL.csv", symbol="AAPL") -> str:
    return f"{tmp_path / 'in' / name}: symbol {symbol}, row {row} ({stamp}T00:00:00+00:00): "


def test_high_below_low(tmp_path):
    rows = with_row(good_rows(20), 17, "2020-01-28,101.5,101.2,101.9,101.5,900")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 17, "2020-01-28") + "high 101.2 < low 101.9"


def test_non_numeric_cell(tmp_path):
    rows = with_row(good_rows(), 5, "2020-01-10,104,106,103,abc,1004")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 5, "2020-01-10") + "column 'close' has non-numeric value 'abc'"


def test_missing_column_lists_what_the_file_has(tmp_path):
    rows = [",".join(r.split(",")[:4] + r.split(",")[5:]) for r in good_rows()]
    message = csv_error(tmp_path, rows, header="date,open,high,low,volume", name="X.csv")
    assert message == f"{tmp_path / 'in' / 'X.csv'}: symbol X: missing column 'close' (have: date, open, high, low, volume)"


def test_missing_time_column(tmp_path):
    rows = [r.split(",", 1)[1] for r in good_rows()]
    message = csv_error(tmp_path, rows, header="open,high,low,close,volume")
    assert message.endswith("symbol AAPL: missing time column, one of: timestamp, datetime, date, time (have: open, high, low, close, volume)")


@pytest.mark.parametrize(("cell", "shown"), [("", "nan"), ("NaN", "nan"), ("inf", "inf"), ("-inf", "-inf")])
def test_nan_or_infinite_price(tmp_path, cell, shown):
    rows = with_row(good_rows(), 2, f"2020-01-07,101,{cell},100,102,1001")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 2, "2020-01-07") + f"column 'high' is {shown}"


@pytest.mark.parametrize(("line", "problem"), [
    ("2020-01-08,105,104,100,102,1002", "open 105 outside [low 100, high 104]"),
    ("2020-01-08,101,104,100,99.5,1002", "close 99.5 outside [low 100, high 104]"),
])
def test_open_or_close_outside_the_bar_range(tmp_path, line, problem):
    assert csv_error(tmp_path, with_row(good_rows(), 3, line)) == prefix(tmp_path, 3, "2020-01-08") + problem


def test_negative_volume(tmp_path):
    rows = with_row(good_rows(), 4, "2020-01-09,103,105,102,104,-5")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 4, "2020-01-09") + "volume -5 < 0"


def test_duplicate_timestamp_names_the_first_occurrence(tmp_path):
    rows = with_row(good_rows(), 4, "2020-01-07,103,105,102,104,1003")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 4, "2020-01-07") + "duplicate timestamp (same as row 2)"


def test_decreasing_timestamp(tmp_path):
    rows = with_row(good_rows(), 4, "2020-01-03,103,105,102,104,1003")
    assert csv_error(tmp_path, rows) == (
        prefix(tmp_path, 4, "2020-01-03")
        + "timestamp is earlier than row 3 (2020-01-08T00:00:00+00:00); timestamps must increase"
    )


def test_unparseable_timestamp(tmp_path):
    rows = with_row(good_rows(), 2, "someday,101,103,100,102,1001")
    assert csv_error(tmp_path, rows) == f"{tmp_path / 'in' / 'AAPL.csv'}: symbol AAPL, row 2: column 'date' has unparseable timestamp 'someday'"


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "AAPL.csv").write_text("")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'in' / 'AAPL.csv'}: symbol AAPL: no rows (empty file)")):
        import_csv(tmp_path / "in" / "AAPL.csv", tmp_path / "out")
    assert csv_error(tmp_path, [], name="MSFT.csv").endswith("MSFT.csv: symbol MSFT: no rows (header only)")


def test_the_earliest_bad_row_is_reported(tmp_path):
    rows = with_row(with_row(good_rows(), 5, "2020-01-10,104,106,103,abc,1004"), 3, "2020-01-08,102,101,103,102,1002")
    assert csv_error(tmp_path, rows) == prefix(tmp_path, 3, "2020-01-08") + "high 101 < low 103"


def test_ragged_csv_is_one_line(tmp_path):
    rows = with_row(good_rows(), 2, "2020-01-07,101,103,100,102,1001,7,8")
    message = csv_error(tmp_path, rows)
    assert message.startswith(f"{tmp_path / 'in' / 'AAPL.csv'}: symbol AAPL: cannot parse as CSV (")


@pytest.fixture
def frame() -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.bdate_range("2021-01-04", periods=4, tz="UTC"), name="timestamp")
    return pd.DataFrame(
        {"open": [10.0, 11, 12, 13], "high": [11.0, 12, 13, 14], "low": [9.0, 10, 11, 12],
         "close": [10.5, 11.5, 12.5, 13.5], "volume": [100.0, 200, 300, 400]},
        index=index,
    )


def test_a_valid_frame_passes_in_float64_float32_and_as_text(frame):
    validate_bars(frame, "mem", "X")
    validate_bars(frame.astype(np.float32), "mem", "X")
    validate_bars(frame.astype(str), "mem", "X")
    validate_bars(frame.tz_localize(None), "mem", "X")


def test_frame_errors_name_the_row_by_position_and_timestamp(frame):
    bad = frame.astype(np.float32)
    bad.iloc[2, 1] = 10.1  # high below low 11
    with pytest.raises(DataError, match=re.escape("mem: symbol X, row 3 (2021-01-06T00:00:00+00:00): high 10.1 < low 11")):
        validate_bars(bad, "mem", "X")


@pytest.mark.parametrize(("change", "problem"), [
    (lambda f: f.drop(columns="volume"), "mem: symbol X: missing column 'volume' (have: open, high, low, close)"),
    (lambda f: f.assign(vwap=1.0), "mem: symbol X: unexpected column 'vwap' (bars have exactly: open, high, low, close, volume)"),
    (lambda f: f.iloc[:0], "mem: symbol X: no rows"),
    (lambda f: f.reset_index(drop=True), "mem: symbol X: index must be a DatetimeIndex of timestamps, got RangeIndex"),
    (lambda f: f.set_axis(pd.DatetimeIndex([f.index[0], pd.NaT, *f.index[2:]]), axis=0), "mem: symbol X, row 2: timestamp is missing"),
])
def test_frame_structure_errors(frame, change, problem):
    with pytest.raises(DataError) as err:
        validate_bars(change(frame), "mem", "X")
    assert str(err.value) == problem


def test_read_csv_bars_validates_without_writing(tmp_path):
    path = write_csv(tmp_path / "spy.csv", with_row(good_rows(), 2, "2020-01-07,101,103,100,102,-1"))
    with pytest.raises(DataError, match=r"spy.csv: symbol SPY, row 2 \(.*\): volume -1 < 0$"):
        read_csv_bars(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spy.csv"]
