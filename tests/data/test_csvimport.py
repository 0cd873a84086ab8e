"""CSV import: header spellings, adjusted closes, time columns and zones, directories, all or nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_pipeline.data import import_csv, list_symbols, load_bars, read_csv_bars, validate_store
from dask_pipeline.errors import DataError
from tests.data.samples import good_rows, tree, write_csv

UTC = "UTC"


def test_headers_match_ignoring_case_and_spaces_and_extra_columns_are_dropped(tmp_path):
    path = write_csv(
        tmp_path / "msft.csv",
        ["2020-01-02, 10 ,11,9,10.5,100,x", "2020-01-03,10.5,12,10,11,200,y"],
        header=" DATE ,Open,  HIGH,low  ,Close,VoLuMe,Notes",
    )
    assert import_csv(path, tmp_path / "out") == ["MSFT"]
    bars = load_bars(tmp_path / "out", "MSFT", dtype="float64")
    expected = pd.DataFrame(
        {"open": [10.0, 10.5], "high": [11.0, 12.0], "low": [9.0, 10.0], "close": [10.5, 11.0], "volume": [100.0, 200.0]},
        index=pd.DatetimeIndex(["2020-01-02", "2020-01-03"], tz=UTC, name="timestamp").as_unit("ns"),
    )
    pd.testing.assert_frame_equal(bars, expected)


@pytest.mark.parametrize("adj_header", ["Adj Close", "adj_close", "ADJCLOSE", " adj  close "])
def test_adj_close_scales_all_four_prices_and_keeps_volume(tmp_path, adj_header):
    path = write_csv(
        tmp_path / "aapl.csv",
        ["2020-01-02,10,11,9,10,5,100", "2020-01-03,10,12,9.5,11,5.5,200", "2020-01-06,11,11,10,10,2.5,300"],
        header=f"Date,Open,High,Low,Close,{adj_header},Volume",
    )
    bars = read_csv_bars(path)
    np.testing.assert_allclose(bars["close"], [5.0, 5.5, 2.5])
    np.testing.assert_allclose(bars["open"], [5.0, 5.0, 2.75])
    np.testing.assert_allclose(bars["high"], [5.5, 6.0, 2.75])
    np.testing.assert_allclose(bars["low"], [4.5, 4.75, 2.5])
    np.testing.assert_array_equal(bars["volume"], [100.0, 200.0, 300.0])


def test_bad_adj_close_is_named_by_row(tmp_path):
    path = write_csv(tmp_path / "aapl.csv", ["2020-01-02,10,11,9,10,5,100", "2020-01-03,10,12,9.5,11,n/a?,200"],
                     header="Date,Open,High,Low,Close,Adj Close,Volume")
    with pytest.raises(DataError, match=r"aapl.csv: symbol AAPL, row 2 \(2020-01-03T00:00:00\+00:00\): column 'Adj Close' has non-numeric value 'n/a\?'$"):
        read_csv_bars(path)


@pytest.mark.parametrize("time_header", ["Date", "Datetime", "timestamp", "TIME", " date "])
def test_any_time_column_name(tmp_path, time_header):
    path = write_csv(tmp_path / "spy.csv", ["2021-06-01,1,2,0.5,1.5,10", "2021-06-02,1,2,0.5,1.5,10"],
                     header=f"{time_header},open,high,low,close,volume")
    bars = read_csv_bars(path)
    assert list(bars.index) == [pd.Timestamp("2021-06-01", tz=UTC), pd.Timestamp("2021-06-02", tz=UTC)]


def test_naive_times_are_utc_and_offsets_are_converted(tmp_path):
    naive = write_csv(tmp_path / "a.csv", ["2021-06-01 09:30:00,1,2,0.5,1.5,10", "2021-06-01 09:35:00,1,2,0.5,1.5,10"],
                      header="datetime,open,high,low,close,volume")
    aware = write_csv(tmp_path / "b.csv", ["2021-06-01T09:30:00-04:00,1,2,0.5,1.5,10", "2021-06-01T09:35:00-04:00,1,2,0.5,1.5,10"],
                      header="timestamp,open,high,low,close,volume")
    assert read_csv_bars(naive).index[0] == pd.Timestamp("2021-06-01 09:30", tz=UTC)
    assert read_csv_bars(aware).index[0] == pd.Timestamp("2021-06-01 13:30", tz=UTC)
    assert str(read_csv_bars(aware).index.tz) == UTC


def test_separate_date_and_time_columns_are_joined(tmp_path):
    path = write_csv(tmp_path / "es.csv", ["2021-06-01,09:30,1,2,0.5,1.5,10", "2021-06-01,09:35,1,2,0.5,1.5,10"],
                     header="Date,Time,Open,High,Low,Close,Volume")
    assert list(read_csv_bars(path).index.strftime("%Y-%m-%d %H:%M")) == ["2021-06-01 09:30", "2021-06-01 09:35"]


def test_a_directory_imports_every_csv_as_upper_cased_symbols(tmp_path):
    source = tmp_path / "csv"
    write_csv(source / "aapl.csv", good_rows(5))
    write_csv(source / "Brk.B.csv", good_rows(7))
    write_csv(source / "SPY.CSV", good_rows(3))
    (source / "notes.txt").write_text("not a csv")
    assert import_csv(source, tmp_path / "store") == ["AAPL", "BRK.B", "SPY"]
    assert list_symbols(tmp_path / "store") == ["AAPL", "BRK.B", "SPY"]
    assert [row["rows"] for row in validate_store(tmp_path / "store")] == [5, 7, 3]


def test_one_bad_file_in_a_directory_writes_nothing(tmp_path):
    source = tmp_path / "csv"
    write_csv(source / "aapl.csv", good_rows(5))
    write_csv(source / "bad.csv", [*good_rows(2), "2020-01-08,1,0.5,2,1,10"])
    write_csv(source / "zzz.csv", good_rows(5))
    with pytest.raises(DataError, match=r"bad.csv: symbol BAD, row 3 \(2020-01-08T00:00:00\+00:00\): high 0.5 < low 2$"):
        import_csv(source, tmp_path / "store")
    assert tree(tmp_path / "store") == []
    assert not (tmp_path / "store").exists()


def test_a_failed_import_leaves_an_existing_store_unchanged(tmp_path):
    write_csv(tmp_path / "first" / "aapl.csv", good_rows(5))
    import_csv(tmp_path / "first", tmp_path / "store")
    before = {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    write_csv(tmp_path / "second" / "aapl.csv", good_rows(9))
    write_csv(tmp_path / "second" / "msft.csv", ["not,a,bar"], header="date,open,high,low,close,volume")
    with pytest.raises(DataError, match="msft.csv: symbol MSFT"):
        import_csv(tmp_path / "second", tmp_path / "store")
    assert {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()} == before
    assert tree(tmp_path / "store") == ["symbol=AAPL", "symbol=AAPL/part-0.parquet"]


def test_reimport_replaces_a_symbol_and_keeps_the_others(tmp_path):
    write_csv(tmp_path / "a" / "aapl.csv", good_rows(5))
    write_csv(tmp_path / "a" / "msft.csv", good_rows(5))
    import_csv(tmp_path / "a", tmp_path / "store")
    write_csv(tmp_path / "b" / "aapl.csv", good_rows(8))
    assert import_csv(tmp_path / "b", tmp_path / "store") == ["AAPL"]
    assert len(load_bars(tmp_path / "store", "AAPL")) == 8 and len(load_bars(tmp_path / "store", "MSFT")) == 5


def test_paths_that_hold_no_csv_are_refused(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such file or directory"):
        import_csv(tmp_path / "nowhere", tmp_path / "store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no \\*.csv files in this directory"):
        import_csv(tmp_path / "empty", tmp_path / "store")


def test_two_files_for_one_symbol_are_refused(tmp_path):
    write_csv(tmp_path / "csv" / "aapl.csv", good_rows(3))
    write_csv(tmp_path / "csv" / "AAPL.csv", good_rows(3))
    with pytest.raises(DataError, match="symbol AAPL also comes from"):
        import_csv(tmp_path / "csv", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_two_headers_meaning_the_same_column_are_refused(tmp_path):
    path = write_csv(tmp_path / "x.csv", ["2020-01-02,1,2,0.5,1.5,1.4,10"], header="date,open,high,low,Close,close,volume")
    with pytest.raises(DataError, match="x.csv: symbol X: columns 'Close' and 'close' both mean 'close'"):
        read_csv_bars(path)


# ------------------------------------------------- what vendors and pandas write

from dask_pipeline.data import TimeFormat, import_bars  # noqa: E402
from tests.data import realistic  # noqa: E402


@pytest.fixture(scope="module")
def universe():
    return realistic.universe()


def test_pandas_to_csv_with_an_unnamed_index_and_price_only_bars(tmp_path, universe):
    folder = realistic.write_csvs(universe, tmp_path / "csv")
    assert (folder / "ACME.csv").read_text().startswith(",open,high,low,close,volume\n2019-01-02,")
    assert (folder / "EURUSD.csv").read_text().startswith(",open,high,low,close\n2020-06-01 00:00:00,")
    assert import_bars(folder, tmp_path / "store") == sorted(realistic.SYMBOLS)
    for symbol, bars in universe.items():
        got = load_bars(tmp_path / "store", symbol, dtype="float64")
        pd.testing.assert_frame_equal(got, bars.set_axis(bars.index.as_unit("ns")), check_freq=False, rtol=1e-15)
    assert load_bars(tmp_path / "store", "EURUSD")["volume"].isna().all()  # price-only: volume NaN


def test_long_csv_holds_every_symbol(tmp_path, universe):
    path = realistic.write_long_csv(universe, tmp_path / "long.csv")
    assert import_bars(path, tmp_path / "store") == sorted(realistic.SYMBOLS)
    got = load_bars(tmp_path / "store", "GONE", dtype="float64")
    assert got.index.equals(universe["GONE"].index.as_unit("ns"))
    np.testing.assert_allclose(got["close"], universe["GONE"]["close"], rtol=1e-15)


def test_long_file_errors_name_the_files_row(tmp_path):
    rows = ["2020-01-06,AAA,1,2,0.5,1.5,10", "2020-01-06,BBB,1,2,0.5,1.5,10",
            "2020-01-07,AAA,1,2,0.5,1.5,10", "2020-01-07,BBB,1,0.4,0.5,1.5,10"]
    path = write_csv(tmp_path / "prices.csv", rows, header="timestamp,symbol,open,high,low,close,volume")
    with pytest.raises(DataError, match=r"prices.csv: symbol BBB, row 4 \(2020-01-07T00:00:00\+00:00\): high 0.4 < low 0.5$"):
        import_bars(path, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    dup = write_csv(tmp_path / "dup.csv", [*rows[:3], "2020-01-06,BBB,1,2,0.5,1.5,10"],
                    header="timestamp,symbol,open,high,low,close,volume")
    with pytest.raises(DataError, match=r"dup.csv: symbol BBB, row 4 \(.*\): duplicate timestamp \(same as row 2\)"):
        import_bars(dup, tmp_path / "store")


def test_long_file_sorted_by_time_through_daylight_saving(tmp_path):
    # A vendor's long file, every symbol's row of a timestamp together, over London's fall-back:
    # each symbol's own order tells the two 01:00 apart.
    local = ["2023-10-29 00:00", "2023-10-29 01:00", "2023-10-29 01:00", "2023-10-29 02:00"]
    rows = [f"{t},{s},1,2,0.5,1.5,10" for t in local for s in ("AAA", "BBB")]
    path = write_csv(tmp_path / "long.csv", rows, header="timestamp,symbol,open,high,low,close,volume")
    assert import_bars(path, tmp_path / "store", fmt=TimeFormat(tz="Europe/London")) == ["AAA", "BBB"]
    for symbol in ("AAA", "BBB"):
        stamps = load_bars(tmp_path / "store", symbol).index
        assert list(stamps.strftime("%H:%M")) == ["23:00", "00:00", "01:00", "02:00"]


def test_dashed_day_first_dates_are_local_time_not_an_offset(tmp_path):
    # '15-06-2020' ends in '-2020', which is not a UTC offset: --tz applies as to '15/06/2020'.
    for sep in "-/":
        path = write_csv(tmp_path / f"d{ord(sep)}.csv", [f"15{sep}06{sep}2020,1,2,0.5,1.5,10"],
                         header="date,open,high,low,close,volume")
        got = read_csv_bars(path, fmt=TimeFormat(tz="Europe/London", dayfirst=True)).index[0]
        assert got == pd.Timestamp("2020-06-14 23:00", tz=UTC), sep


def test_long_parquet_file_and_dataset(tmp_path, universe):
    long = pd.concat([b.assign(symbol=s) for s, b in universe.items()]).reset_index()
    long.to_parquet(tmp_path / "long.parquet")
    assert import_bars(tmp_path / "long.parquet", tmp_path / "a") == sorted(realistic.SYMBOLS)
    # A dataset partitioned by symbol (no symbol column in the files) and by year.
    for (symbol, year), part in long.groupby(["symbol", long["timestamp"].dt.year]):
        folder = tmp_path / "ds" / f"symbol={symbol}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(columns="symbol").to_parquet(folder / f"{year}.parquet", index=False)
    assert import_bars(tmp_path / "ds", tmp_path / "b") == sorted(realistic.SYMBOLS)
    for symbol in universe:
        pd.testing.assert_frame_equal(load_bars(tmp_path / "a", symbol), load_bars(tmp_path / "b", symbol))
    # The same bar in two files is refused, naming both.
    long[long["symbol"] == "GONE"].iloc[:3].to_parquet(tmp_path / "ds" / "symbol=GONE" / "extra.parquet", index=False)
    with pytest.raises(DataError, match=r"symbol GONE: timestamp 2019-01-02T00:00:00\+00:00 is also in .*2019.parquet"):
        import_bars(tmp_path / "ds", tmp_path / "c")


def test_wide_parquet_of_closes_keeps_each_symbols_own_bars(tmp_path, universe):
    daily = {s: universe[s]["close"] for s in ("ACME", "ACME_CUT", "BTC", "GONE")}
    wide = pd.DataFrame(daily)  # NaN where a symbol has no bar
    wide.index = wide.index.tz_localize(None)  # naive: read as UTC
    wide.to_parquet(tmp_path / "closes.parquet")
    assert import_bars(tmp_path / "closes.parquet", tmp_path / "store") == ["ACME", "ACME_CUT", "BTC", "GONE"]
    acme = load_bars(tmp_path / "store", "ACME_CUT", dtype="float64")
    assert acme.index.equals(universe["ACME_CUT"].index.as_unit("ns"))  # no row where it had NaN
    assert (acme["open"] == acme["close"]).all() and acme["volume"].isna().all()
    wide.iloc[5, 0] = -1.0
    wide.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: symbol ACME, row 6 \(.*\): open -1 is not a positive price"):
        import_bars(tmp_path / "bad.parquet", tmp_path / "store2")


AMBIGUOUS = ["02/01/2020,1,2,0.5,1.5,10", "03/01/2020,1,2,0.5,1.5,10", "06/01/2020,1,2,0.5,1.5,10"]


def test_dates_that_read_both_ways_are_refused_as_ambiguous(tmp_path):
    path = write_csv(tmp_path / "eu.csv", AMBIGUOUS)
    with pytest.raises(DataError, match=r"eu.csv: symbol EU, row 1: column 'date': dates are ambiguous: '02/01/2020' "
                                        r"reads as 02 January 2020 day-first and 01 February 2020 month-first.* "
                                        r"--dayfirst .* --date-format '%m/%d/%Y'"):
        read_csv_bars(path)
    day_first = read_csv_bars(path, fmt=TimeFormat(dayfirst=True)).index
    assert list(day_first.strftime("%Y-%m-%d")) == ["2020-01-02", "2020-01-03", "2020-01-06"]
    month_first = read_csv_bars(path, fmt=TimeFormat(date_format="%m/%d/%Y")).index
    assert list(month_first.strftime("%Y-%m-%d")) == ["2020-02-01", "2020-03-01", "2020-06-01"]
    # One date that reads only day-first settles the file; ISO dates are never day-first.
    settled = write_csv(tmp_path / "fr.csv", [*AMBIGUOUS, "13/01/2020 ,1,2,0.5,1.5,10"])
    assert read_csv_bars(settled).index[-1] == pd.Timestamp("2020-01-13", tz=UTC)
    iso = write_csv(tmp_path / "iso.csv", good_rows(3, "2020-01-02"))
    assert read_csv_bars(iso, fmt=TimeFormat(dayfirst=True)).index[0] == pd.Timestamp("2020-01-02", tz=UTC)
    with pytest.raises(DataError, match=r"row 2: column 'date' has '2020-01-03', which does not match --date-format"):
        read_csv_bars(write_csv(tmp_path / "x.csv", ["01/02/2020,1,2,0.5,1.5,10", "2020-01-03,1,2,0.5,1.5,10"]),
                      fmt=TimeFormat(date_format="%m/%d/%Y"))


def test_local_exchange_time_through_daylight_saving(tmp_path):
    # New York, hourly bars over the November 2021 fall-back: 01:00 happens twice.
    local = ["2021-11-07 00:00", "2021-11-07 01:00", "2021-11-07 01:00", "2021-11-07 02:00"]
    rows = [f"{t},1,2,0.5,1.5,10" for t in local]
    path = write_csv(tmp_path / "es.csv", rows, header="datetime,open,high,low,close,volume")
    stamps = read_csv_bars(path, fmt=TimeFormat(tz="America/New_York")).index
    assert list(stamps.strftime("%H:%M")) == ["04:00", "05:00", "06:00", "07:00"]  # UTC, one hour apart
    gap = write_csv(tmp_path / "gap.csv", ["2021-03-14 01:00,1,2,0.5,1.5,10", "2021-03-14 02:30,1,2,0.5,1.5,10"],
                    header="datetime,open,high,low,close,volume")
    with pytest.raises(DataError, match=r"gap.csv: symbol GAP, row 2: local time '2021-03-14 02:30' does not exist "
                                        r"in America/New_York"):
        read_csv_bars(gap, fmt=TimeFormat(tz="America/New_York"))
    with pytest.raises(DataError, match=r"--tz 'America/New_Yrok': unknown time zone \(did you mean 'America/New_York'\?\)"):
        TimeFormat(tz="America/New_Yrok")
    aware = write_csv(tmp_path / "aware.csv", ["2021-06-01T09:30:00-04:00,1,2,0.5,1.5,10"],
                      header="timestamp,open,high,low,close,volume")
    assert read_csv_bars(aware, fmt=TimeFormat(tz="Europe/London")).index[0] == pd.Timestamp("2021-06-01 13:30", tz=UTC)
