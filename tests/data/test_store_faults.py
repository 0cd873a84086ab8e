"""The store's write path under faults: imports killed at any moment never leave a symbol folder
without its part file, leftovers of older crashes are cleaned or named, and one symbol is one
folder whatever Unicode form its name came in."""

from __future__ import annotations

import os
import signal
import time
import unicodedata

import numpy as np
import pytest

from dask_pipeline.data import list_symbols, load_bars, synthesize, validate_store, write_dataset
from dask_pipeline.data import store
from dask_pipeline.errors import DataError


@pytest.fixture(scope="module")
def market():
    return synthesize(6, "2020-01-01", "2020-12-31", "1D", seed=4)


def _killed_import(root, bars, delay: float) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            write_dataset(root, bars)
        finally:
            os._exit(0)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_an_import_killed_at_any_moment_leaves_a_readable_store(tmp_path, market, monkeypatch):
    """SIGKILL at random moments of a six-symbol import into a store that has two of them: every
    listed symbol reads and validates, no temp file is ever inside a symbol folder, and the next
    import removes what the killed one left."""
    root = tmp_path / "store"
    first = dict(list(market.items())[:2])
    write_dataset(root, first)
    t0 = time.perf_counter()
    write_dataset(tmp_path / "timing", market)
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(3)
    for delay in rng.uniform(0, duration, size=12):
        _killed_import(root, market, float(delay))
        for symbol_dir in root.glob("symbol=*"):
            assert sorted(p.name for p in symbol_dir.iterdir()) == [store.PART_FILE], symbol_dir
        assert {r["symbol"] for r in validate_store(root)} >= set(first)
    monkeypatch.setattr(store, "_STALE_SECONDS", 0)  # the killed imports' staging folders are stale now
    write_dataset(root, market)
    assert sorted(os.listdir(root)) == sorted(store.partition_name(s) for s in market)
    assert list_symbols(root) == sorted(market)


def test_a_live_import_is_never_cleaned_away(tmp_path, market, monkeypatch):
    root = tmp_path / "store"
    write_dataset(root, dict(list(market.items())[:1]))
    live = root / f"{store._STAGING_PREFIX}live"
    live.mkdir()
    held = store._hold(str(live))
    try:
        monkeypatch.setattr(store, "_STALE_SECONDS", 0)
        write_dataset(root, dict(list(market.items())[1:2]))
        assert live.is_dir()  # locked by its writer: left alone
    finally:
        os.close(held)
    write_dataset(root, dict(list(market.items())[2:3]))
    assert not live.exists()


def test_an_older_crash_leftover_is_named_then_cleaned(tmp_path, market):
    root = tmp_path / "store"
    symbol = next(iter(market))
    write_dataset(root, {symbol: market[symbol]})
    orphan = root / "symbol=ORPHAN"
    orphan.mkdir()
    (orphan / f".{store.PART_FILE}.0123abcd.tmp").write_bytes(b"half a file")
    with pytest.raises(DataError, match=r"symbol=ORPHAN: symbol ORPHAN: no parquet files \(expected part-0.parquet\) "
                                        r"\(only \.part-0\.parquet\.0123abcd\.tmp, a temp file of an "
                                        r"interrupted import"):
        load_bars(root, "ORPHAN")
    write_dataset(root, {"ORPHAN": market[symbol]})
    assert sorted(p.name for p in orphan.iterdir()) == [store.PART_FILE]
    assert len(load_bars(root, "ORPHAN")) == len(market[symbol])


def test_part_files_are_on_disk_before_they_are_published(tmp_path, market, monkeypatch):
    """A power cut cannot be simulated, so the order is checked: each staged part file (and a new
    symbol's folder, which holds its name) is fsynced before the rename that publishes it, and
    the folder that rename changed after it; else a power cut can leave an empty part file."""
    root = tmp_path / "store"
    old, new = list(market)[:2]
    write_dataset(root, {old: market[old]})
    events: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def recorded(move):
        def recording(src, dst, *args, **kwargs):
            events.append(("move", os.stat(src).st_ino))
            move(src, dst, *args, **kwargs)
        return recording

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", recorded(os.rename))
    monkeypatch.setattr(os, "replace", recorded(os.replace))
    write_dataset(root, {old: market[old], new: market[new]})

    def synced(path, before=None, after=None):
        return ("fsync", os.stat(path).st_ino) in events[after + 1 if after is not None else 0:before]

    def published(path):
        return events.index(("move", os.stat(path).st_ino))

    new_dir, old_dir = root / store.partition_name(new), root / store.partition_name(old)
    # A new symbol: its staged folder is renamed into the root.
    assert synced(new_dir / store.PART_FILE, before=published(new_dir))
    assert synced(new_dir, before=published(new_dir))
    assert synced(root, after=published(new_dir))
    # An existing symbol: its staged part file replaces the old one.
    assert synced(old_dir / store.PART_FILE, before=published(old_dir / store.PART_FILE))
    assert synced(old_dir, after=published(old_dir / store.PART_FILE))


def test_nfc_and_nfd_names_are_one_symbol(tmp_path, market):
    bars = next(iter(market.values()))
    nfc, nfd = unicodedata.normalize("NFC", "SOCIÉTÉ"), unicodedata.normalize("NFD", "SOCIÉTÉ")
    assert nfc != nfd
    root = tmp_path / "store"
    with pytest.raises(DataError, match="symbol SOCIÉTÉ given twice in one write .*NFC or NFD"):
        write_dataset(root, {nfc: bars, nfd: bars})
    assert not root.exists()
    write_dataset(root, {nfd: bars})  # a file name saved as NFD (macOS)
    assert list_symbols(root) == [nfc]
    assert len(load_bars(root, nfc)) == len(load_bars(root, nfd)) == len(bars)
    (root / f"symbol={store.quote(nfd, safe='')}").mkdir()  # another tool's NFD folder beside ours
    with pytest.raises(DataError, match="are one symbol in two Unicode forms"):
        list_symbols(root)
