"""The bad input suite: every deliberately broken input gets one clear error and writes nothing.

Each case runs the real CLI (``python -m dask_pipeline.cli``) in a subprocess, in a folder
of its own, on an input from ``tests/bad_inputs/`` (CSV files and configs, checked in) or
on a broken Parquet store made by a recipe below (binary, so made at test time). A case
is clear when the command exits 2, the last line of stderr is ``error: ...`` and holds
the substrings the case expects (the file, row, symbol or dotted config key), no
``Traceback`` appears anywhere, and the case's folder is byte-for-byte as it was before
(no run folder, no half store; pre-existing results or stores left untouched).

``test_bad_input`` reports each case; ``test_summary`` (last) prints and checks
"N tried, N clear errors, 0 tracebacks". The cases run two at a time: most fail while
loading the config, a few start a one-worker cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dask_pipeline.data import synthesize, write_dataset

BAD = Path(__file__).resolve().parent / "bad_inputs"
GOOD_CSV = "date,open,high,low,close,volume\n2020-01-06,100,102,99,101,1000\n2020-01-07,101,103,100,102,1100\n"
PART = "symbol=SYN001/part-0.parquet"


@dataclass(frozen=True)
class Case:
    """One broken input: CLI arguments (``{bad}``, ``{stores}``, ``{here}`` filled in) and what the error must name."""

    name: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    before: Callable[[Path], None] | None = None  # prepares the case's folder (``here``)
    absent: tuple[str, ...] = ()  # what must appear nowhere in the output (a password)


@dataclass
class Outcome:
    """What one case did, and every way in which it was not a clear error."""

    case: Case
    returncode: int | None = None
    last_line: str = ""
    traceback: bool = False
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def csv(name: str, *expect: str) -> Case:
    return Case(f"csv/{name}", ("data", "import", f"{{bad}}/csv/{name}.csv", "--out", "{here}/store"),
                (f"{name}.csv: symbol {name.upper()}", *expect))


def config(name: str, *expect: str) -> Case:
    return Case(f"config/{name}", ("run", f"{{bad}}/configs/{name}.yaml"), (f"{name}.yaml", *expect))


def override(name: str, *args: str, expect: tuple[str, ...]) -> Case:
    return Case(f"override/{name}", ("run", "{bad}/configs/datacheck.yaml", *args), expect)


def validate(store: str, *expect: str) -> Case:
    return Case(f"validate/{store}", ("data", "validate", f"{{stores}}/{store}"), expect)


def run(name: str, graph: str, store: str, *expect: str, extra: tuple[str, ...] = (),
        before: Callable[[Path], None] | None = None) -> Case:
    return Case(f"run/{name}", ("run", f"{{bad}}/configs/{graph}.yaml", "-q", "-o", f"data.root={{stores}}/{store}",
                                *extra), expect, before)


def huge_config(here: Path) -> None:
    """A 2 MB config (a universe pasted in): refused by its size before it is parsed."""
    symbols = ", ".join(f"S{i:06d}" for i in range(250_000))
    (here / "huge.yaml").write_text(f"graph: datacheck\ndata:\n  symbols: [{symbols}]\n")


def nfc_and_nfd_csvs(here: Path) -> None:
    """One symbol's file twice: its name saved in Unicode NFC and in NFD (as macOS writes it)."""
    import unicodedata

    for form in ("NFC", "NFD"):
        write((f"in/{unicodedata.normalize(form, 'SOCIÉTÉ')}.csv", GOOD_CSV))(here)


def write(*files: tuple[str, str | bytes]) -> Callable[[Path], None]:
    """A ``before`` that writes ``(relative path, content)`` files under the case's folder."""
    def make(here: Path) -> None:
        for relative, content in files:
            path = here / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
    return make


def previous_results(here: Path) -> None:
    """A results folder from an earlier run of the same config, which a failed rerun must leave alone."""
    write(("results/datacheck/summary.parquet", b"earlier results"),
          ("results/datacheck/run.json", '{"outputs": ["summary.parquet"]}\n'))(here)


def store_and_mixed_csvs(here: Path) -> None:
    """A valid store, and a folder of one good and one truncated CSV to import into it."""
    write_dataset(here / "store", synthesize(2, "2020-01-01", "2020-03-31", "1D", seed=3))
    write(("in/good.csv", GOOD_CSV))(here)
    shutil.copy(BAD / "csv" / "truncated.csv", here / "in" / "truncated.csv")


CASES = [
    # CSV import: every file is checked before anything is written.
    csv("truncated", "row 6: the last line has 4 of 6 fields and no line end"),
    csv("text_in_close", "row 6 (2020-01-13T00:00:00+00:00): column 'close' has non-numeric value '1O5.0'"),
    csv("bad_date", "row 3: column 'date' has unparseable timestamp '2020-01-32'"),
    csv("bad_time_of_day", "row 2: column 'date' has unparseable timestamp '07/01/2020 25:99'"),
    csv("nan_storm", "row 2 (2020-01-07T00:00:00+00:00): column 'open' is nan"),
    csv("empty_cell", "row 4 (2020-01-09T00:00:00+00:00): column 'close' is nan"),
    csv("infinite_volume", "row 5 (2020-01-10T00:00:00+00:00): column 'volume' is inf"),
    csv("duplicate_timestamps", "row 4 (2020-01-08T00:00:00+00:00): duplicate timestamp (same as row 3)"),
    csv("unsorted_timestamps", "row 3 (2020-01-03T00:00:00+00:00): timestamp is earlier than row 2"),
    csv("high_below_low", "row 4 (2020-01-09T00:00:00+00:00): high 101 < low 102.5"),
    csv("close_above_high", "row 2 (2020-01-07T00:00:00+00:00): close 108 outside [low 100, high 103]"),
    csv("negative_price", "row 3 (2020-01-08T00:00:00+00:00): low -0.5 is not a positive price"),
    csv("negative_volume", "row 2 (2020-01-07T00:00:00+00:00): volume -1100 < 0"),
    csv("ambiguous_dates", "row 1: column 'date': dates are ambiguous: '02/01/2020' reads as 02 January 2020 "
                           "day-first and 01 February 2020 month-first", "--dayfirst", "--date-format"),
    csv("no_time_column", "missing time column, one of: timestamp, datetime, date, time"),
    csv("semicolon_delimited", "this file looks ';'-separated"),
    csv("ragged_row", "cannot parse as CSV", "Expected 6 fields in line 4, saw 8"),
    csv("empty", "no rows (empty file)"),
    csv("header_only", "no rows (header only)"),
    Case("csv/spreadsheet_saved_as_csv", ("data", "import", "{here}/in/prices.csv", "--out", "{here}/store"),
         ("prices.csv: symbol PRICES: cannot parse as CSV",),
         write(("in/prices.csv", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xb5U0#\xf4\x00\x00\x00L\x02"))),
    Case("csv/symbol_with_a_space", ("data", "import", "{here}/in/my stock.csv", "--out", "{here}/store"),
         ("my stock.csv: invalid symbol 'MY STOCK'",), write(("in/my stock.csv", GOOD_CSV))),
    Case("csv/two_files_one_symbol", ("data", "import", "{here}/in", "--out", "{here}/store"),
         ("aapl.csv: symbol AAPL also comes from", "AAPL.csv"),
         write(("in/AAPL.csv", GOOD_CSV), ("in/aapl.csv", GOOD_CSV))),
    Case("csv/folder_without_csv", ("data", "import", "{here}/in", "--out", "{here}/store"),
         ("in: no *.csv files in this directory",), write(("in/prices.txt", GOOD_CSV))),
    Case("csv/missing_source", ("data", "import", "{here}/nowhere.csv", "--out", "{here}/store"),
         ("nowhere.csv: no such file or directory",)),
    Case("csv/bad_file_leaves_existing_store_as_it_was", ("data", "import", "{here}/in", "--out", "{here}/store"),
         ("truncated.csv: symbol TRUNCATED, row 6",), store_and_mixed_csvs),
    Case("csv/out_is_a_file", ("data", "import", "{here}/in/good.csv", "--out", "{here}/store"),
         ("store: cannot write the store",),
         write(("in/good.csv", GOOD_CSV), ("store", "not a folder"))),

    # Stored bars: `data validate` reads every part file.
    validate("corrupt_part", PART, "symbol SYN001: unreadable Parquet file"),
    validate("truncated_part", PART, "symbol SYN001: unreadable Parquet file"),
    validate("empty_universe", "empty_universe: no symbols"),
    validate("empty_partition", "symbol=SYN001: symbol SYN001: no parquet files"),
    validate("nan_storm", PART, "symbol SYN001, row 11 (", "column 'close' is nan"),
    validate("all_nan", PART, "symbol SYN001, row 1 (", "column 'close' is nan"),
    validate("duplicate_timestamps", PART, "symbol SYN001, row 101 (", "duplicate timestamp (same as row 100)"),
    validate("high_below_low", PART, "symbol SYN001, row 51 (", "< low"),
    validate("zero_price", PART, "symbol SYN001, row 31 (", "open 0 is not a positive price"),
    validate("negative_volume", PART, "symbol SYN001, row 31 (", "volume -5 < 0"),
    validate("text_prices", PART, "symbol SYN001: column 'close' has type", "expected float64"),
    validate("text_timestamps", PART, "symbol SYN001: column 'timestamp' has type", "expected a timestamp"),
    validate("missing_column", PART, "symbol SYN001: missing column 'volume'"),
    validate("no_such_store", "no_such_store: no such data directory"),
    validate("root_is_a_file", "root_is_a_file: not a directory"),

    # Runs on bad data: caught before a cluster starts where the client can see it, else
    # by the task that loads the bars; either way before any result file is written.
    run("empty_universe", "datacheck", "empty_universe", "empty_universe: the store holds no symbols"),
    run("no_such_store", "datacheck", "no_such_store", "no_such_store: no such data directory"),
    run("symbols_not_in_store", "datacheck", "good", "'data.symbols': 'AAPL' is not in the store",
        extra=("-o", "data.symbols=[SYN001, AAPL]")),
    run("benchmark_not_in_store", "walkforward", "good", "'features.benchmark': 'SPY' is not in the store",
        extra=("-o", "features.benchmark=SPY")),
    run("output_dir_is_a_file", "datacheck", "good", "'output.dir':", "results is a file, not a folder",
        before=write(("results", "not a folder"))),
    run("corrupt_part", "walkforward", "corrupt_part", PART, "symbol SYN001: unreadable Parquet file"),
    run("nan_storm", "walkforward", "nan_storm", PART, "symbol SYN001, row 11 (", "column 'close' is nan"),
    run("symbol_with_3_bars", "walkforward", "short_symbol", "symbol TINY: 3 bars, too few for the walk-forward"),
    run("range_after_the_data", "walkforward", "good", "symbol SYN000: 0 bars from data.start 2030-01-01",
        extra=("-o", "data.start=2030-01-01")),
    run("folds_longer_than_the_data", "walkforward", "good", "need 5126 bars for train 5000 + test 126", "folds.train",
        extra=("-o", "folds.train=5000")),
    run("volume_indicator_on_price_only", "walkforward", "price_only",
        "'features.indicators': obv needs volume, and symbol SYN001", "price-only", extra=("-o", "features.indicators=[obv]")),
    run("bar_counts_over_mixed_calendars", "walkforward", "mixed_calendars",
        "folds.train=252, folds.test=126 count bars, but the symbols' calendars differ", "BTC: daily bars, 365 a year",
        "calendar spans"),
    run("high_below_low_found_by_a_task", "datacheck", "high_below_low", PART, "symbol SYN001, row 51 (", "< low",
        before=previous_results),

    # Configs: every mistake fails at load, before data or a cluster, naming the key.
    config("unknown_top_level_key", "unknown key 'fold' (did you mean 'folds'?)"),
    config("unknown_nested_key", "unknown key 'folds.trian' (did you mean 'train'?)"),
    config("wrong_type", "'label.horizon': Input should be a valid integer"),
    config("bad_enum", "'folds.mode': Input should be 'rolling' or 'expanding' (got 'sliding')"),
    config("out_of_range", "'backtest.quantile': Input should be less than or equal to 0.5 (got 0.9)"),
    config("bad_date", "'data.start': '2020-02-30' is not a date"),
    config("end_before_start", "data.end 2020-01-01 is before data.start 2021-06-30"),
    config("unknown_graph", "'graph': unknown graph (did you mean 'walkforward'?)"),
    config("unknown_preset", "key 'preset': unknown preset 'fastest' (did you mean 'fast'?)"),
    config("unknown_profile", "key 'profile': unknown profile 'labtop' (did you mean 'laptop'?)"),
    config("model_does_not_fit_task", "model.name: 'ridge' supports regression only", "label.task is 'classification'"),
    config("purge_shorter_than_horizon", "folds.purge 3 is shorter than label.horizon 10"),
    config("bad_tune_space_path", "'tune.space.model.params.max_dept'", "unknown parameter"),
    config("bad_tune_distribution", "'tune.space.model.params.max_depth': unknown option 'normal'"),
    config("unknown_metric", "'tune.metric': unknown metric 'sharp' (did you mean 'sharpe'?)"),
    config("unknown_indicator", "'features.indicators.1': unknown indicator 'rsii'; did you mean 'rsi'?"),
    config("bad_indicator_param", "'features.indicators.0': sma.window=0 is out of range"),
    config("ambiguous_indicator_path", "'tune.space.features.sma.window'", "sma is listed 2 times",
           "features.sma.0.window, features.sma.1.window"),
    config("feature_search_without_cache", "'tune.space.features.rsi.window': a search over features needs "
                                           "features.cache: true"),
    config("unknown_model", "'model.name': unknown model 'gbm'"),
    config("device_for_a_cpu_model", "'model.device': 'cuda': hist_gbm trains on cpu only", "trains on cuda: xgboost"),
    config("unknown_model_param", "'model': params.n_estimator: unknown parameter for random_forest"),
    config("unknown_model_class", "'model.name': module sklearn.linear_model has no 'Laso' (did you mean 'Lasso'?)"),
    config("unknown_model_class_param",
           "'model': params.alpah: unknown parameter for sklearn.linear_model.Lasso (did you mean 'alpha'?)"),
    config("unknown_graph_module", "'graph': no module named 'dask_pipeline.graphs.walkfoward' "
                                   "(did you mean 'dask_pipeline.graphs.walkforward'?)"),
    config("graph_file_missing", "'graph': no such file:", "graphs/momentum.py"),
    config("graph_without_build", "'graph': module dask_pipeline.summary has neither build(cfg) nor drive"),
    config("unknown_plugin", "'plugins': no module named 'dask_pipeline.feature' "
                             "(did you mean 'dask_pipeline.features'?)"),
    config("plugin_is_a_file", "'plugins': 'lab/indicators.py' is a file; plugins are modules by dotted name"),
    config("bad_fold_span", "'folds.train': expected a positive bar count or a calendar span"),
    config("section_not_a_mapping", "'folds': Input should be a valid dictionary"),
    config("empty_symbols", "'data.symbols': is empty"),
    config("yaml_syntax_error", "line 3: not valid YAML"),
    config("tab_indent", "line 3: not valid YAML (found character '\\t' that cannot start any token)"),
    config("duplicate_key", "line 5: not valid YAML (key 'folds' appears twice, first on line 2)"),
    config("empty", "empty config file"),
    config("not_a_mapping", "expected a mapping of sections at the top, got list"),
    config("not_utf8", "not UTF-8 text (byte 0xe9 at offset 22)"),
    Case("config/missing_file", ("run", "{here}/nowhere.yaml"), ("nowhere.yaml: no such config file",)),
    Case("config/a_directory", ("run", "{bad}/configs"), ("configs: is a directory; expected a YAML config file",)),
    override("unknown_key", "-o", "folds.trian=3", expect=("unknown key 'folds.trian' (did you mean 'train'?)",)),
    override("unknown_indicator_parameter", "-o", "features.rsi.windw=9",
             expect=("'features.rsi.windw': rsi has no parameter 'windw' (did you mean 'window'?)",)),
    override("no_equals_sign", "-o", "cluster.n_workers",
             expect=("override 'cluster.n_workers': expected key.path=value",)),
    override("bad_date", "-o", "data.start=2020-02-30", expect=("'data.start': '2020-02-30' is not a date",)),
    override("key_under_a_value", "-o", "seed.x=1", expect=("'seed': Input should be a valid integer",)),
    override("zero_workers", "--workers", "0",
             expect=("'cluster.n_workers': Input should be greater than or equal to 1",)),
    override("synthetic_range_inverted", "-o", "data.synthetic={{start: 2022-01-01, end: 2021-01-01}}",
             expect=("'data.synthetic': start 2022-01-01 to end 2021-01-01 holds no business day",)),
    Case("run/indicator_looks_ahead", ("run", "{bad}/configs/walkforward.yaml", "-q", "-o", "data.root={stores}/good",
                                       "-o", "graph={bad}/leaky_graph.py", "-o", "features.indicators=[ret, centred]"),
         ("indicator 'centred' (window=5) looks ahead on SYN000: centred_5 at 2019-", "no shift(-k), centred window")),

    # Reliability (issue 13): bounded config loading, paths that stay where they belong,
    # results folders a run did not write, secrets, Unicode forms of one symbol.
    config("alias_bomb", "line 8: holds more than 100,000 values once its aliases are expanded"),
    config("recursive_alias", "line 3: an alias refers to a value that contains it"),
    config("deep_nesting", "line 3: nested more than 64 levels deep"),
    config("negative_seed", "'seed': Input should be greater than or equal to 0 (got -1)"),
    config("tune_negative_seed", "'tune.seed': Input should be greater than or equal to 0 (got -5)"),
    Case("config/huge", ("run", "{here}/huge.yaml"), ("huge.yaml: 2,", "bytes, more than a config may hold"),
         huge_config),
    override("run_name_absolute", "-o", "output.run_name=/tmp/v",
             expect=("'output.run_name': '/tmp/v' is not a plain folder name",)),
    override("run_name_parent", "-o", "output.run_name=../../X",
             expect=("'output.run_name': '../../X' is not a plain folder name",)),
    Case("override/scheduler_with_password", ("run", "{bad}/configs/datacheck.yaml", "--scheduler",
                                              "tcp://alice:pa ss@db.internal:8786"),
         ("'cluster': address 'tcp://alice:***@db.internal:8786' holds a user or password",), absent=("pa ss",)),
    run("cache_dir_is_a_file", "datacheck", "good", "'features.cache_dir':", "cache is a file, not a folder",
        extra=("-o", "features.cache_dir={here}/cache"), before=write(("cache", "not a folder"))),
    run("run_json_is_a_folder", "datacheck", "good", "results/datacheck/run.json: is a folder",
        before=write(("results/datacheck/run.json/x", "{}"))),
    run("files_no_run_wrote", "datacheck", "good", "results/datacheck: holds notes.txt, which no run wrote",
        before=write(("results/datacheck/notes.txt", "mine"), ("results/datacheck/run.json", "{}\n"))),
    run("checkpoints_that_are_not_ours", "datacheck", "good",
        "results/datacheck/checkpoints/old.pkl: not a checkpoint folder of dask-pipeline",
        before=write(("results/datacheck/checkpoints/old.pkl", b"\x80\x04N."))),
    Case("csv/nfc_and_nfd_names_of_one_symbol", ("data", "import", "{here}/in", "--out", "{here}/store"),
         ("symbol SOCIÉTÉ given twice in one write", "NFC or NFD"), nfc_and_nfd_csvs),
]


def make_stores(root: Path) -> Path:
    """Broken stores, each a copy of a valid three-symbol store with ``SYN001``'s part file damaged or replaced."""
    good = root / "good"
    write_dataset(good, synthesize(3, "2019-01-01", "2021-12-31", "1D", seed=1))
    bars = synthesize(1, "2019-01-01", "2021-12-31", "1D", seed=2)["SYN000"]  # columns: open high low close volume

    def variant(name: str, content: pa.Table | bytes | None = None) -> Path:
        store = root / name
        shutil.copytree(good, store)
        if isinstance(content, pa.Table):
            pq.write_table(content, store / PART)  # as another tool would write it: no validation
        elif content is not None:
            (store / PART).write_bytes(content)
        return store

    def table_of(frame: pd.DataFrame) -> pa.Table:
        return pa.Table.from_pandas(frame.reset_index(), preserve_index=False)

    def changed(rows: int | slice, columns: int | slice, value: float) -> pa.Table:
        frame = bars.copy()
        frame.iloc[rows, columns] = value
        return table_of(frame)

    part = (good / PART).read_bytes()
    variant("corrupt_part", b"not parquet at all" * 8)
    variant("truncated_part", part[: len(part) // 2])
    (root / "empty_universe").mkdir()
    (variant("empty_partition") / PART).unlink()
    variant("nan_storm", changed(slice(10, None), 3, np.nan))  # 99 % of the closes
    variant("all_nan", changed(slice(None), 3, np.nan))
    variant("high_below_low", changed(50, 1, bars.iloc[50, 2] - 1.0))
    variant("zero_price", changed(30, slice(0, 4), 0.0))
    variant("negative_volume", changed(30, 4, -5.0))
    stamps = bars.index.tolist()
    stamps[100] = stamps[99]
    variant("duplicate_timestamps", table_of(bars.set_axis(pd.DatetimeIndex(stamps, name="timestamp"), axis=0)))
    table = table_of(bars)
    variant("text_prices", table.set_column(4, "close", pa.array(bars["close"].astype(str).to_numpy())))
    variant("text_timestamps", table.set_column(0, "timestamp", pa.array(bars.index.astype(str).to_numpy())))
    variant("missing_column", table.drop(["volume"]))
    (root / "root_is_a_file").write_text("not a store\n")
    write_dataset(variant("short_symbol"), {"TINY": bars.iloc[:3]})
    variant("price_only", changed(slice(None), 4, np.nan))  # FX, an index: no volume at all
    from tests.data.realistic import seven_days, walk

    write_dataset(variant("mixed_calendars"), {"BTC": walk(seven_days("2019-01-01", "2021-12-31"), 5, 0.03, 4000.0)})
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def attempt(case: Case, here: Path, stores: Path) -> Outcome:
    """Run one case in ``here`` and judge it."""
    here.mkdir(parents=True)
    if case.before is not None:
        case.before(here)
    before = snapshot(here)
    argv = [a.format(bad=BAD, stores=stores, here=here) for a in case.argv]
    outcome = Outcome(case)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "dask_pipeline.cli", *argv], cwd=here,
                              capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        outcome.problems.append("timed out after 180 s")
        return outcome
    finally:
        outcome.seconds = time.perf_counter() - started
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    outcome.returncode = done.returncode
    outcome.last_line = lines[-1] if lines else ""
    outcome.traceback = "Traceback" in done.stdout + done.stderr
    leaked = [a for a in case.absent if a in done.stdout + done.stderr]
    if leaked:
        outcome.problems.append(f"printed {leaked}")
    if done.returncode != 2:
        outcome.problems.append(f"exit code {done.returncode}, expected 2")
    if outcome.traceback:
        outcome.problems.append("a traceback: " + " | ".join(lines[-3:]))
    if not outcome.last_line.startswith("error: "):
        outcome.problems.append(f"last stderr line is not 'error: ...': {outcome.last_line!r}")
    missing = [e for e in case.expect if e not in outcome.last_line]
    if missing:
        outcome.problems.append(f"error line {outcome.last_line!r} does not name {missing}")
    after = snapshot(here)
    if after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k, 0) != after.get(k, 0))
        outcome.problems.append(f"wrote or changed {changed[:5]}")
    return outcome


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    return make_stores(tmp_path_factory.mktemp("bad-stores"))


@pytest.fixture(scope="module")
def outcomes(request, stores, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case's outcome, run two at a time (each is mostly a Python start-up)."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")}
    cases = [c for c in CASES if c.name in selected] or CASES
    untouched = snapshot(stores)
    folders = tmp_path_factory.mktemp("bad-cases")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda c: attempt(c, folders / c.name.replace("/", "-"), stores), cases)
        results = {o.case.name: o for o in done}
    assert snapshot(stores) == untouched, "a case changed the shared broken stores"
    return results


def test_case_names_are_unique_and_inputs_exist():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        for arg in case.argv:
            if arg.startswith("{bad}"):
                assert Path(arg.format(bad=BAD)).exists(), f"{case.name}: {arg} is missing"
    used = {Path(a.format(bad=BAD)).name for c in CASES for a in c.argv if a.startswith("{bad}/")}
    on_disk = {p.name for p in BAD.rglob("*") if p.is_file() and p.suffix in (".csv", ".yaml")}
    assert on_disk <= used, f"inputs no case uses: {sorted(on_disk - used)}"


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_bad_input(name, outcomes):
    outcome = outcomes[name]
    assert not outcome.problems, f"{name}: " + "; ".join(outcome.problems)


def test_summary(outcomes):
    """N tried, N clear errors, 0 tracebacks; a failure lists every case that was not clear."""
    tried = len(outcomes)
    clear = sum(not o.problems for o in outcomes.values())
    tracebacks = sum(o.traceback for o in outcomes.values())
    line = f"{tried} tried, {clear} clear errors, {tracebacks} tracebacks"
    slowest = sorted(outcomes.values(), key=lambda o: -o.seconds)[:5]
    print(line, "(slowest: " + ", ".join(f"{o.case.name} {o.seconds:.1f} s" for o in slowest) + ")")
    unclear = [f"{o.case.name}: {'; '.join(o.problems)}" for o in outcomes.values() if o.problems]
    assert (clear, tracebacks) == (tried, 0), line + "\n" + "\n".join(unclear)
