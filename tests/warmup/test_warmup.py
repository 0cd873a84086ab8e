"""Warm-up: where numba caches, which kernel groups a run needs, compiling once per
machine (markers), and reuse across processes and workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dask_pipeline import warmup
from dask_pipeline.config import load_config
from tests.conftest import REPO


def test_cache_location_prefers_numba_cache_dir_then_beside_the_sources(tmp_path):
    assert warmup.cache_location(tmp_path / "pkg", {"NUMBA_CACHE_DIR": "/x/numba"}) == Path("/x/numba")
    assert warmup.cache_location(tmp_path / "pkg", {}) is None  # writable: numba caches beside the sources


def test_cache_location_falls_back_when_the_package_is_read_only(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    read_only = blocker / "pkg"  # nothing can be created below a file, whoever runs the test
    found = warmup.cache_location(read_only, {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert found == tmp_path / "xdg" / "dask-pipeline" / "numba" and found.is_dir()
    # No writable user cache either: the temp directory.
    found = warmup.cache_location(read_only, {"XDG_CACHE_HOME": str(blocker / "xdg")})
    assert found is not None and found.name == "numba" and found.is_dir()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], [*warmup.FEATURE_GROUPS, "backtest"]),
        (["graph=wavescan"], ["waves"]),
        (["graph=datacheck"], []),
        (["features.indicators=[sma, wma]"], [*warmup.FEATURE_GROUPS, "features-indicators", "backtest"]),
        (["backtest.rule=rank"], [*warmup.FEATURE_GROUPS, "backtest", "backtest-rank"]),
    ],
)
def test_kernel_groups_follow_the_graph_and_the_feature_set(overrides, expected):
    cfg = load_config(REPO / "configs" / "quickstart.yaml", overrides)
    assert warmup.kernel_groups(cfg) == expected


def test_warm_marks_the_machine_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # where the markers go (cache_root)
    first = warmup.warm("features-close")
    assert first["ran"] and list(tmp_path.glob("dask-pipeline-warm-features-close-*"))
    again = warmup.warm("features-close")
    assert not again["ran"] and again["seconds"] == 0.0
    assert warmup.warm("features-close", force=True)["ran"]


_SINGLE_INDICATOR_SETS = """
import json
from numba.core.registry import CPUDispatcher
from dask_pipeline import warmup
from dask_pipeline.features import IndicatorSpec, compute, engine, fused, fusion

def signatures():
    return {name: [str(s) for s in f.signatures] for name, f in vars(fused).items() if isinstance(f, CPUDispatcher)}

for group in warmup.FEATURE_GROUPS:
    warmup.KERNEL_GROUPS[group]()
warmed = signatures()
singles = sorted(n for n in fusion.FUSED if len(engine.INDICATORS[n].outputs) == 1)
for gap in (True, False):
    for name in singles:
        compute(warmup._bars(gap=gap), [IndicatorSpec(name=name)])
after = signatures()
print(json.dumps({"singles": singles, "new": {k: sorted(set(v) - set(warmed.get(k, []))) for k, v in after.items()
                                             if set(v) - set(warmed.get(k, []))}}))
"""


def test_warm_feature_groups_cover_a_single_indicator_feature_set():
    """A one-column ``out`` (``indicators: [rsi]``, common in tuning) is C-layout to numba, not
    F: after the feature groups warmed, no single-indicator set types a fused kernel anew
    (which every worker would compile though the marker says warm). A fresh process, so no
    earlier test has compiled anything."""
    import json

    done = subprocess.run([sys.executable, "-c", _SINGLE_INDICATOR_SETS], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"rsi", "ret", "std", "atr", "volume_z"} <= set(found["singles"])
    assert found["new"] == {}


def test_fingerprint_tells_identical_installs_at_two_places_apart(tmp_path, monkeypatch):
    """numba caches by the sources' absolute folder: an identical install elsewhere, sharing
    the fallback cache directory, has none of the first one's kernels, so not its marker."""
    installs = []
    for place in ("a", "b"):
        package = tmp_path / place / "dask_pipeline"
        package.mkdir(parents=True)
        (package / "kernels.py").write_text("x = 1\n")
        os.utime(package / "kernels.py", ns=(1_700_000_000_000_000_000,) * 2)  # same size, same mtime
        installs.append(package)
    found = []
    for package in installs:
        monkeypatch.setattr(warmup, "PACKAGE_DIR", package)
        found.append(warmup._fingerprint())
    assert found[0] != found[1]
    assert warmup._fingerprint() == found[1]  # and stable for one place


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dask_pipeline.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_warmup_command_compiles_once_and_later_processes_load(tmp_path):
    """``dask-pipeline warmup`` in an empty cache compiles; a new process then loads every
    kernel from the cache (numba compiles nothing) -- the reuse every worker relies on."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    cold = _cli("warmup", "--groups", "features-close", "--kernels", env=env)
    assert cold.returncode == 0, cold.stderr
    assert "compiled" in cold.stdout and "dask_pipeline.features.fused.chains_nb" in cold.stdout
    assert cold.stderr == ""
    warm = _cli("warmup", "--groups", "features-close", "--force", env=env)
    assert warm.returncode == 0 and "loaded from the cache" in warm.stdout, warm.stdout


def test_warmup_command_names_a_bad_group(capsys):
    from dask_pipeline.cli import main

    assert main(["warmup", "--groups", "features-clos"]) == 2
    assert capsys.readouterr().err.startswith("error: --groups 'features-clos': unknown group(s) features-clos; valid:")


_compiles = []


def _broken_group() -> None:
    raise ImportError("no module named 'missing_extra'")


def _tiny_group() -> None:
    """A kernel group of one fresh kernel: compiling it costs a fraction of a second."""
    from numba import njit

    _compiles.append(1)
    njit(lambda x: x + 1)(len(_compiles))


def test_warm_cluster_runs_each_group_once_per_machine(tmp_path, monkeypatch):
    """One task per group and machine, spread over the machine's workers; a line only when
    something compiled; a marked machine costs a round trip (workers in this process, so
    the test's group is theirs)."""
    from distributed import Client, LocalCluster

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # where the markers go
    monkeypatch.setitem(warmup.KERNEL_GROUPS, "tiny-1", _tiny_group)
    monkeypatch.setitem(warmup.KERNEL_GROUPS, "tiny-2", _tiny_group)
    lines: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        cold = warmup.warm_cluster(client, ["tiny-1", "tiny-2"], lines.append)
        assert [r["group"] for r in cold] == ["tiny-1", "tiny-2"] and all(r["ran"] and r["kernels"] for r in cold)
        assert len(_compiles) == 2
        assert len(lines) == 1 and "compiled numba kernels once for 1 machine in " in lines[0]
        warm = warmup.warm_cluster(client, ["tiny-1", "tiny-2"], lines.append)
        assert not any(r["ran"] for r in warm) and len(_compiles) == 2 and len(lines) == 1
        # A group that cannot compile ahead is one note; the run goes on, and meets the error itself if real.
        monkeypatch.setitem(warmup.KERNEL_GROUPS, "broken", _broken_group)
        warmup.warm_cluster(client, ["broken"], lines.append)
        assert lines[-1] == ("note: could not compile broken ahead (ImportError: no module named 'missing_extra'); "
                             "the workers compile it when they need it")
        assert not list(tmp_path.glob("dask-pipeline-warm-broken-*"))
