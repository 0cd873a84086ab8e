"""The Parquet bar store: layout, round trip, pushdown, atomic all-or-nothing writes, errors."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dask_pipeline.data import (
    BAR_COLUMNS,
    list_symbols,
    load_bars,
    store_exists,
    synthesize,
    validate_store,
    write_bars,
    write_dataset,
)
from dask_pipeline.errors import DataError
from tests.data.samples import tree


def part(root, symbol):
    return root / f"symbol={symbol}" / "part-0.parquet"


def corrupt_column_chunk(path, row_group: int, column: str) -> None:
    """Overwrite one column chunk of one row group with garbage, leaving the footer intact."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(row_group).column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + chunk.total_compressed_size] = b"\xab" * chunk.total_compressed_size
    path.write_bytes(bytes(data))


def test_layout_is_hive_partitions_with_float64_sorted_zstd_row_groups(store, daily_bars):
    assert sorted(p.name for p in store.iterdir()) == [f"symbol={s}" for s in sorted(daily_bars)]
    assert all(sorted(p.name for p in d.iterdir()) == ["part-0.parquet"] for d in store.iterdir())
    meta = pq.ParquetFile(part(store, "SYN000")).metadata
    schema = meta.schema.to_arrow_schema()
    assert schema.names == ["timestamp", *BAR_COLUMNS]  # no symbol column: it lives in the path
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert all(schema.field(c).type == pa.float64() for c in BAR_COLUMNS)
    rows = len(daily_bars["SYN000"])
    assert meta.num_row_groups == -(-rows // 252)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups - 1)] == [252] * (meta.num_row_groups - 1)
    assert meta.row_group(0).column(1).compression == "ZSTD"
    stats = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    assert all(a.max < b.min for a, b in zip(stats, stats[1:]))  # sorted: row groups are disjoint in time


def test_round_trip_float32_by_default_and_float64_exactly_when_asked(store, daily_bars):
    original = daily_bars["SYN003"]
    exact = load_bars(store, "SYN003", dtype="float64")
    pd.testing.assert_frame_equal(exact, original)
    default = load_bars(store, "SYN003")
    assert (default.dtypes == np.float32).all() and list(default.columns) == list(BAR_COLUMNS)
    assert default.index.name == "timestamp" and str(default.index.tz) == "UTC"
    pd.testing.assert_frame_equal(default, original.astype(np.float32))


def test_columns_subset_in_the_order_asked(store, daily_bars):
    bars = load_bars(store, "SYN001", columns=["volume", "close"])
    assert list(bars.columns) == ["volume", "close"]
    np.testing.assert_array_equal(bars["close"].to_numpy(), daily_bars["SYN001"]["close"].to_numpy(np.float32))
    with pytest.raises(DataError, match=r"unknown column 'adj' \(bars have: open, high, low, close, volume\)"):
        load_bars(store, "SYN001", columns=["adj"])


def test_date_range_is_inclusive_at_both_ends(store, daily_bars):
    bars = load_bars(store, "SYN002", "2017-03-01", "2017-03-31")
    expected = daily_bars["SYN002"].loc["2017-03-01":"2017-03-31"]
    assert bars.index.equals(expected.index)
    assert bars.index[0] == pd.Timestamp("2017-03-01", tz="UTC") and bars.index[-1] == pd.Timestamp("2017-03-31", tz="UTC")
    assert len(load_bars(store, "SYN002", start="2019-12-01")) == len(daily_bars["SYN002"].loc["2019-12-01":])
    assert len(load_bars(store, "SYN002", end="2015-01-31")) == len(daily_bars["SYN002"].loc[:"2015-01-31"])
    empty = load_bars(store, "SYN002", "2030-01-01", "2030-12-31")
    assert empty.empty and list(empty.columns) == list(BAR_COLUMNS) and str(empty.index.tz) == "UTC"


def test_a_date_only_end_covers_the_whole_intraday_day(tmp_path):
    bars = synthesize(1, "2021-03-01", "2021-03-05", "5min", seed=1)
    write_dataset(tmp_path, bars)
    day = load_bars(tmp_path, "SYN000", "2021-03-03", "2021-03-03")
    assert len(day) == 78 and (day.index.normalize() == pd.Timestamp("2021-03-03", tz="UTC")).all()
    cut = load_bars(tmp_path, "SYN000", "2021-03-03 10:00", "2021-03-03 11:00")
    assert cut.index[0].strftime("%H:%M") == "10:00" and cut.index[-1].strftime("%H:%M") == "11:00" and len(cut) == 13


def test_a_date_range_filter_selects_only_the_matching_row_groups(store):
    path = part(store, "SYN004")
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 6
    fragment = next(iter(ds.dataset(path, format="parquet").get_fragments()))
    wanted = (ds.field("timestamp") >= pa.scalar(pd.Timestamp("2017-03-01", tz="UTC"))) & (
        ds.field("timestamp") <= pa.scalar(pd.Timestamp("2017-03-31", tz="UTC"))
    )
    matching = fragment.split_by_row_group(wanted)
    assert len(matching) == 1 and matching[0].row_groups[0].id == 2  # 2017 is the third year of 252 bars
    assert matching[0].row_groups[0].num_rows == 252 < meta.num_rows


def test_load_bars_never_touches_row_groups_outside_the_range(store, daily_bars):
    # Garbage in the first year's row group: a load that decoded it would fail.
    corrupt_column_chunk(part(store, "SYN004"), row_group=0, column="close")
    bars = load_bars(store, "SYN004", "2017-01-01", "2018-12-31")
    pd.testing.assert_frame_equal(bars, daily_bars["SYN004"].loc["2017":"2018"].astype(np.float32))
    with pytest.raises(DataError, match=r"symbol=SYN004/part-0.parquet: symbol SYN004: unreadable Parquet file"):
        load_bars(store, "SYN004")


def test_load_bars_never_decodes_columns_not_asked_for(store, daily_bars):
    path = part(store, "SYN005")
    for group in range(pq.ParquetFile(path).metadata.num_row_groups):
        corrupt_column_chunk(path, group, "volume")
    bars = load_bars(store, "SYN005", columns=["open", "close"], dtype="float64")
    pd.testing.assert_frame_equal(bars, daily_bars["SYN005"][["open", "close"]])
    with pytest.raises(DataError, match="unreadable Parquet file"):
        load_bars(store, "SYN005", columns=["volume"])


def test_list_symbols_and_store_exists(store, tmp_path):
    assert list_symbols(store) == [f"SYN{i:03d}" for i in range(6)]
    assert store_exists(store)
    assert not store_exists(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert not store_exists(tmp_path / "empty") and list_symbols(tmp_path / "empty") == []


def test_missing_root_is_named(tmp_path):
    for call in (lambda r: list_symbols(r), lambda r: load_bars(r, "AAPL"), lambda r: validate_store(r)):
        with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}/gone: no such data directory$"):
            call(tmp_path / "gone")


def test_unknown_symbol_lists_close_matches(tmp_path):
    bars = synthesize(["AAPL", "AAP", "MSFT", "GOOGL"], "2020-01-01", "2020-03-31")
    write_dataset(tmp_path, bars)
    with pytest.raises(DataError) as err:
        load_bars(tmp_path, "APPL")
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: unknown symbol 'APPL' (close matches: ")
    assert "AAPL" in message and "AAP" in message and "MSFT" not in message
    with pytest.raises(DataError, match=r"unknown symbol 'aapl' \(close matches: AAPL"):
        load_bars(tmp_path, "aapl")
    with pytest.raises(DataError, match=r"unknown symbol 'XYZ' \(no close match among 4 symbols, e.g. AAP, AAPL"):
        load_bars(tmp_path, "XYZ")


def test_corrupt_part_file_is_named_by_load_and_validate(store):
    path = part(store, "SYN002")
    path.write_bytes(b"this is not parquet" * 10)
    expected = rf"^{re.escape(str(path))}: symbol SYN002: unreadable Parquet file \(.*\)$"
    with pytest.raises(DataError, match=expected):
        load_bars(store, "SYN002")
    with pytest.raises(DataError, match=expected):
        validate_store(store)
    load_bars(store, "SYN001")  # the others still load


def test_validate_store_summarises_every_symbol(store, daily_bars):
    summary = validate_store(store)
    assert [row["symbol"] for row in summary] == sorted(daily_bars)
    first = summary[0]
    assert first["rows"] == len(daily_bars["SYN000"])
    assert first["first"] == daily_bars["SYN000"].index[0] and first["last"] == daily_bars["SYN000"].index[-1]


def test_validate_store_names_the_first_bad_row_of_a_stored_file(store, daily_bars):
    bad = daily_bars["SYN003"].copy()
    bad.iloc[9, bad.columns.get_loc("high")] = bad["low"].iloc[9] - 1.0
    # written around write_bars' own validation, as a foreign tool might
    table = pa.Table.from_pandas(bad.reset_index(), preserve_index=False)
    pq.write_table(table, part(store, "SYN003"))
    where = re.escape(f"{part(store, 'SYN003')}: symbol SYN003, row 10 ({bad.index[9].isoformat()}): ")
    with pytest.raises(DataError, match=rf"^{where}high [\d.]+ < low [\d.]+$"):
        validate_store(store)


def test_validate_store_refuses_an_empty_store(tmp_path):
    with pytest.raises(DataError, match="no symbols"):
        validate_store(tmp_path)


def test_write_bars_replaces_atomically_and_leaves_no_temp_files(tmp_path, daily_bars):
    old_umask = os.umask(0o022)
    try:
        path = write_bars(tmp_path, "SYN000", daily_bars["SYN000"])
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by workers running as another user
    assert path == part(tmp_path, "SYN000")
    shorter = daily_bars["SYN001"].iloc[:100]
    write_bars(tmp_path, "SYN000", shorter)
    assert tree(tmp_path) == ["symbol=SYN000", "symbol=SYN000/part-0.parquet"]
    pd.testing.assert_frame_equal(load_bars(tmp_path, "SYN000", dtype="float64"), shorter)


def test_naive_and_other_timezone_indexes_are_stored_as_utc(tmp_path, daily_bars):
    bars = daily_bars["SYN000"].iloc[:20]
    write_bars(tmp_path, "NAIVE", bars.tz_localize(None))
    write_bars(tmp_path, "NY", bars.tz_convert("America/New_York"))
    for symbol in ("NAIVE", "NY"):
        pd.testing.assert_frame_equal(load_bars(tmp_path, symbol, dtype="float64"), bars)


def test_symbols_with_special_characters_round_trip(tmp_path, daily_bars):
    bars = daily_bars["SYN000"].iloc[:20]
    write_dataset(tmp_path, {"^GSPC": bars, "BRK.B": bars, "123": bars})
    assert list_symbols(tmp_path) == ["123", "BRK.B", "^GSPC"]
    for symbol in ("^GSPC", "BRK.B", "123"):
        pd.testing.assert_frame_equal(load_bars(tmp_path, symbol, dtype="float64"), bars)
    with pytest.raises(DataError, match="invalid symbol 'A B'"):
        write_bars(tmp_path, "A B", bars)


def test_one_bad_frame_writes_nothing_at_all(tmp_path, daily_bars):
    bad = daily_bars["SYN005"].copy()
    bad.iloc[3, bad.columns.get_loc("volume")] = -1.0
    root = tmp_path / "new" / "store"
    frames = {**{s: daily_bars[s] for s in ("SYN000", "SYN001")}, "SYN005": bad}
    with pytest.raises(DataError, match=r"^bars_by_symbol\['SYN005'\]: symbol SYN005, row 4 \(.*\): volume -1 < 0$"):
        write_dataset(root, frames)
    assert tree(tmp_path) == []


def test_a_failed_write_leaves_an_existing_store_as_it_was(store, daily_bars):
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    bad = daily_bars["SYN000"].copy()
    bad.iloc[0, bad.columns.get_loc("close")] = np.nan
    with pytest.raises(DataError, match=r"row 1 \(.*\): column 'close' is nan"):
        write_dataset(store, {"SYN001": daily_bars["SYN000"], "NEW": daily_bars["SYN000"], "SYN000": bad})
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before
    assert "NEW" not in list_symbols(store)


def test_a_write_interrupted_mid_stream_cleans_up(tmp_path, daily_bars):
    from dask_pipeline.data.store import write_validated

    def frames():
        yield "SYN000", daily_bars["SYN000"]
        raise DataError("input went bad")

    with pytest.raises(DataError, match="input went bad"):
        write_validated(tmp_path / "out", frames())
    assert tree(tmp_path) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    n=st.integers(min_value=1, max_value=40),
)
def test_any_valid_bars_round_trip_exactly(tmp_path_factory, data, n):
    price = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
    a = np.array(data.draw(st.lists(price, min_size=n, max_size=n)))
    b = np.array(data.draw(st.lists(price, min_size=n, max_size=n)))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    weights = np.array(data.draw(st.lists(st.floats(0, 1), min_size=2 * n, max_size=2 * n))).reshape(2, n)
    steps = np.array(data.draw(st.lists(st.integers(1, 10**15), min_size=n, max_size=n)), dtype="timedelta64[ns]")
    index = pd.DatetimeIndex(np.datetime64("1990-01-01", "ns") + np.cumsum(steps), tz="UTC", name="timestamp")
    bars = pd.DataFrame(
        {"open": np.clip(lo + weights[0] * (hi - lo), lo, hi), "high": hi, "low": lo,
         "close": np.clip(lo + weights[1] * (hi - lo), lo, hi),
         "volume": np.array(data.draw(st.lists(st.floats(0, 1e12), min_size=n, max_size=n)))},
        index=index,
    )
    root = tmp_path_factory.mktemp("prop")
    write_bars(root, "P", bars)
    pd.testing.assert_frame_equal(load_bars(root, "P", dtype="float64"), bars, check_exact=True)
    pd.testing.assert_frame_equal(load_bars(root, "P", index[0], index[-1], dtype="float64"), bars, check_exact=True)
