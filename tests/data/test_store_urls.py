"""The bar store at a URL: ``file://`` and a real S3-compatible server (moto) on 127.0.0.1.

Same layout, same reads (date-range pushdown), same all-or-nothing writes and the same
one-line errors as a local root, and a quickstart run on ``s3://`` whose results are
byte-identical to the same run on a local copy of the store.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dask_pipeline.config import load_config
from dask_pipeline.data import list_symbols, load_bars, store_exists, synthesize, validate_store, write_bars, write_dataset
from dask_pipeline.errors import ConfigError, DataError
from tests.conftest import REPO
from tests.data.test_store import corrupt_column_chunk

BUCKET = "bars-bucket"
QUICKSTART = REPO / "configs" / "quickstart.yaml"


# --- file:// URLs and config validation (no object store needed) ---------------------------


def test_a_file_url_root_reads_and_writes_like_its_path(tmp_path, daily_bars):
    url = f"file://{tmp_path}/store"
    write_dataset(url, daily_bars)
    assert list_symbols(url) == list_symbols(tmp_path / "store") == sorted(daily_bars)
    assert write_bars(url, "ONE", daily_bars["SYN000"]) == f"{url}/symbol=ONE/part-0.parquet"
    pd.testing.assert_frame_equal(load_bars(url, "SYN001", "2016-01-01", "2016-12-31", dtype="float64"),
                                  daily_bars["SYN001"].loc["2016"])
    with pytest.raises(DataError, match=rf"^{re.escape(url)}/gone: no such data directory$"):
        list_symbols(f"{url}/gone")


def test_config_keeps_urls_resolves_file_urls_and_refuses_bad_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {"data.root": "data/here"}).data.root == str(tmp_path / "data" / "here")
    assert load_config(None, {"data.root": "file://rel/bars"}).data.root == f"file://{tmp_path}/rel/bars"
    assert load_config(None, {"data.root": "memory://bucket/bars"}).data.root == "memory://bucket/bars"
    with pytest.raises(ConfigError, match=r"'data.root': unknown storage protocol 's4'"):
        load_config(None, {"data.root": "s4://bucket/bars"})
    with pytest.raises(ConfigError, match=r"'data.root': .*credentials in the URL would be written to config.yaml"):
        load_config(None, {"data.root": "ftp://me:hunter2@example.org/bars"})
    with pytest.raises(ConfigError, match=r"'data.root': is empty"):
        load_config(None, {"data.root": " "})


# --- a real S3-compatible server ----------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* variables point this process (and
    every worker it starts) at it. Yields an ``s3fs`` filesystem of its own, for looking at objects."""
    s3fs = pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        environment = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "moto-key-id",
                       "AWS_SECRET_ACCESS_KEY": "moto-secret-never-in-files", "AWS_DEFAULT_REGION": "us-east-1"}
        for name, value in environment.items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # one built before these variables would point elsewhere
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture
def url(s3, request):
    """A fresh, empty prefix in the bucket."""
    prefix = re.sub(r"\W", "-", request.node.name)
    return f"s3://{BUCKET}/{prefix}"


def objects(s3, url) -> dict[str, bytes]:
    s3.invalidate_cache()
    return {path: s3.cat_file(path) for path in s3.find(url.removeprefix("s3://"))}


def test_s3_store_has_the_local_layout_and_bytes_and_round_trips(s3, url, tmp_path, daily_bars):
    bars = {**daily_bars, "^GSPC": daily_bars["SYN000"]}
    write_dataset(url, bars)
    write_dataset(tmp_path, bars)
    stored = objects(s3, url)
    prefix = url.removeprefix("s3://")
    local = {f"{prefix}/{p.relative_to(tmp_path)}": p.read_bytes() for p in sorted(tmp_path.rglob("*.parquet"))}
    assert stored == local  # same keys (symbol=%5EGSPC too), same bytes
    assert list_symbols(url) == sorted(bars) and store_exists(url)
    for symbol in ("SYN002", "^GSPC"):
        pd.testing.assert_frame_equal(load_bars(url, symbol, "2017-03-01", "2017-03-31"),
                                      load_bars(tmp_path, symbol, "2017-03-01", "2017-03-31"))
    assert [row["rows"] for row in validate_store(url)] == [len(bars[s]) for s in sorted(bars)]
    assert write_bars(url, "ONE", daily_bars["SYN001"]) == f"{url}/symbol=ONE/part-0.parquet"


def test_s3_load_pushes_the_date_range_down_and_names_a_bad_object_by_url(s3, url, tmp_path, daily_bars):
    write_dataset(url, {"SYN004": daily_bars["SYN004"]})
    key = f"{url.removeprefix('s3://')}/symbol=SYN004/part-0.parquet"
    path = tmp_path / "part.parquet"
    path.write_bytes(s3.cat_file(key))
    assert pq.ParquetFile(path).metadata.num_row_groups == 6
    corrupt_column_chunk(path, row_group=0, column="close")  # garbage in the first year only
    s3.pipe_file(key, path.read_bytes())
    bars = load_bars(url, "SYN004", "2017-01-01", "2018-12-31")
    pd.testing.assert_frame_equal(bars, daily_bars["SYN004"].loc["2017":"2018"].astype(np.float32))
    with pytest.raises(DataError, match=rf"^{re.escape(url)}/symbol=SYN004/part-0.parquet: symbol SYN004: unreadable"):
        load_bars(url, "SYN004")


def test_a_missing_s3_root_is_one_line_naming_the_url(s3, url):
    for root in (f"{url}/gone", "s3://no-such-bucket/bars"):
        for call in (list_symbols, lambda r: load_bars(r, "AAPL"), validate_store):
            with pytest.raises(DataError, match=rf"^{re.escape(root)}: no such data directory$"):
                call(root)
        assert not store_exists(root)
    with pytest.raises(DataError, match=r"^s3://no-such-bucket/bars: cannot write the store \(.*bucket.*\)$"):
        write_dataset("s3://no-such-bucket/bars", {"A": synthesize(1, "2020-01-01", "2020-01-31")["SYN000"]})


def test_a_failed_s3_write_changes_nothing_and_leaves_no_temp_objects(s3, url, daily_bars):
    write_dataset(url, {s: daily_bars[s] for s in ("SYN000", "SYN001")})
    before = objects(s3, url)
    bad = daily_bars["SYN002"].copy()
    bad.iloc[5, bad.columns.get_loc("low")] = np.inf
    with pytest.raises(DataError, match=r"row 6 \(.*\): column 'low' is inf"):
        write_dataset(url, {"SYN000": daily_bars["SYN003"], "NEW": daily_bars["SYN003"], "SYN002": bad})
    from dask_pipeline.data.store import write_validated

    def frames():
        yield "SYN001", daily_bars["SYN004"]
        raise DataError("input went bad")

    with pytest.raises(DataError, match="input went bad"):
        write_validated(url, frames())
    assert objects(s3, url) == before
    assert list_symbols(url) == ["SYN000", "SYN001"]


def test_s3_listings_are_fresh_after_another_process_changes_the_store(s3, url, tmp_path, daily_bars):
    write_dataset(url, {s: daily_bars[s] for s in ("SYN000", "SYN001")})
    assert list_symbols(url) == ["SYN000", "SYN001"]
    pd.testing.assert_frame_equal(load_bars(url, "SYN001", dtype="float64"), daily_bars["SYN001"])
    # Another writer (its own client, its own listing cache): one symbol gone, one shorter.
    prefix = url.removeprefix("s3://")
    s3.rm(f"{prefix}/symbol=SYN000", recursive=True)
    write_dataset(tmp_path, {"SYN001": daily_bars["SYN001"].iloc[:50]})
    s3.put_file(str(tmp_path / "symbol=SYN001" / "part-0.parquet"), f"{prefix}/symbol=SYN001/part-0.parquet")
    assert list_symbols(url) == ["SYN001"]
    pd.testing.assert_frame_equal(load_bars(url, "SYN001", dtype="float64"), daily_bars["SYN001"].iloc[:50])


def test_quickstart_on_s3_gives_the_bytes_of_a_run_on_a_local_copy(s3, url, tmp_path):
    from dask_pipeline.cluster import connect
    from dask_pipeline.runner import run

    cfg = load_config(QUICKSTART)
    synth = cfg.data.synthetic
    bars = synthesize(synth.symbols, synth.start, synth.end, synth.freq, synth.seed)
    write_dataset(url, bars)  # the package's own write path, to the object store
    write_dataset(tmp_path / "bars", bars)
    # Fewer symbols and years than the quickstart's (the store holds them all): the same
    # graph, a third of the time.
    common = ["cluster.n_workers=1", "cluster.dashboard=false", f"output.dir={tmp_path / 'results'}",
              f"features.cache_dir={tmp_path / 'cache'}", "data.symbols=[SYN000, SYN003, SYN005]",
              "data.start=2019-01-01"]
    roots = {"s3": url, "local": tmp_path / "bars"}
    configs = {name: load_config(QUICKSTART, [f"data.root={root}", f"output.run_name={name}", *common])
               for name, root in roots.items()}
    lines: list[str] = []
    # The worker process inherits AWS_ENDPOINT_URL and the keys: it reads the bars from the server.
    with connect(configs["s3"].cluster) as client:
        results = {name: run(c, client=client, echo=lines.append) for name, c in configs.items()}
    outputs = results["s3"].record["outputs"]
    assert outputs == results["local"].record["outputs"] and "predictions.parquet" in outputs
    for name in outputs:
        assert (tmp_path / "results" / "s3" / name).read_bytes() == (tmp_path / "results" / "local" / name).read_bytes()
    assert not any(line.startswith("generated demo data") for line in lines)  # the stores were found, not regenerated
    for written in (tmp_path / "results" / "s3").rglob("*"):
        if written.is_file():
            assert b"moto-secret" not in written.read_bytes() and b"moto-key-id" not in written.read_bytes()
