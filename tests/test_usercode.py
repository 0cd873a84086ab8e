"""Finding user code by dotted name or file path, with errors that name the key and the closest name."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

from dask_pipeline.errors import ConfigError
from dask_pipeline.graph import load_graph, resolve_graph
from dask_pipeline.usercode import code_identity, import_class, import_file, import_module


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """A package ``labpkg`` in the current directory (not on sys.path: found as ``python -m`` would)."""
    package = tmp_path / "labpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "graphs.py").write_text("def build(cfg):\n    return {}\n")
    (package / "nobuild.py").write_text("VALUE = 1\n")
    (package / "broken.py").write_text("import numpyy\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in [m for m in sys.modules if m == "labpkg" or m.startswith("labpkg.")]:
        del sys.modules[name]


def test_dotted_modules_from_the_current_directory_with_did_you_mean(lab):
    assert import_module("labpkg.graphs", "plugins").build(None) == {}
    with pytest.raises(ConfigError, match=r"^'plugins': no module named 'labpkg.graph' \(did you mean 'labpkg.graphs'\?\)$"):
        import_module("labpkg.graph", "plugins")
    with pytest.raises(ConfigError, match=r"'graph': no module named 'labpk' \(did you mean 'labpkg'\?\)"):
        import_module("labpk.graphs", "graph")
    with pytest.raises(ConfigError, match=r"'plugins': importing labpkg.broken failed: ModuleNotFoundError: "
                                          r"No module named 'numpyy' \(at .*broken.py, line 1\)"):
        import_module("labpkg.broken", "plugins")
    with pytest.raises(ConfigError, match=r"'model.name': module sklearn.linear_model has no 'Laso' "
                                          r"\(did you mean 'Lasso'\?\)"):
        import_class("sklearn.linear_model.Laso", "model.name")


def test_graphs_by_name_module_and_file(lab):
    (lab / "mine.py").write_text("def helper(x):\n    return x + 1\n\ndef build(cfg):\n    return {}\n")
    assert resolve_graph("labpkg.graphs").module == "labpkg.graphs"
    assert resolve_graph("walkforward").module is None and resolve_graph("walkforward").label == "walkforward"
    by_file = resolve_graph("mine.py")
    assert by_file.module is None and by_file.label == str(lab / "mine.py") and by_file.repeatable
    assert resolve_graph(lambda cfg: {}).repeatable is False
    with pytest.raises(ConfigError, match=r"'graph': module labpkg.nobuild has neither build\(cfg\) nor drive"):
        load_graph("labpkg.nobuild")
    with pytest.raises(ConfigError, match=r"'graph': no such file: .*nowhere.py"):
        load_graph("nowhere.py")
    with pytest.raises(ConfigError, match=r"'graph': unknown graph 'walkfoward' \(did you mean 'walkforward'\?\)"):
        load_graph("walkfoward")


def test_a_file_graph_travels_by_value(lab):
    (lab / "mine.py").write_text("OFFSET = 41\n\ndef helper(x):\n    return x + OFFSET\n\ndef build(cfg):\n    return {}\n")
    module = import_file(lab / "mine.py", "graph")
    assert import_file(lab / "mine.py", "graph") is module  # loaded once per content
    with pytest.raises(pickle.PicklingError):  # plain pickle (Dask's first try) cannot name it
        pickle.dumps(module.helper)
    payload = cloudpickle.dumps(module.helper)
    # A fresh interpreter in another folder, without the file: the function arrives whole.
    out = subprocess.run([sys.executable, "-c", "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())(1))"],
                         input=payload, capture_output=True, cwd="/", check=True)
    assert out.stdout.strip() == b"42"


def test_code_identity_sees_code_defaults_and_globals():
    def make(source, **globals_):
        namespace = {"__name__": "labmod", **globals_}
        exec(compile(source, "labmod.py", "exec"), namespace)
        return namespace["f"]

    base = "def f(x, k=2):\n    return x * k + SHIFT\n"
    first = code_identity(make(base, SHIFT=1))
    assert code_identity(make(base, SHIFT=1)) == first
    assert code_identity(make(base, SHIFT=2)) != first  # a plain global it reads
    assert code_identity(make(base.replace("k=2", "k=3"), SHIFT=1)) != first
    assert code_identity(make(base.replace("x * k", "x / k"), SHIFT=1)) != first


def test_code_identity_reads_tables_and_closures_by_value():
    # A notebook's lookup table edited after the indicator was registered, a factory's setting:
    # each changes what the indicator computes, so each changes its identity (its cache key).
    namespace = {"__name__": "__main__", "np": np}
    exec("TABLE = {'alpha': 0.1}\nARR = np.array([1.0, 2.0])\nNAMES = {'a', 'b', 'c'}\n"
         "def g(x):\n    return x * TABLE['alpha'] * ARR[0] * len(NAMES)\n"
         "def make(scale):\n    def f(x):\n        return x * scale\n    return f\n", namespace)
    g = namespace["g"]
    first = code_identity(g)
    namespace["TABLE"]["alpha"] = 0.5
    second = code_identity(g)
    namespace["ARR"][0] = 9.0
    third = code_identity(g)
    assert len({first, second, third}) == 3
    assert code_identity(namespace["make"](1)) != code_identity(namespace["make"](2))
    assert code_identity(namespace["make"](1)) == code_identity(namespace["make"](1))
    # The same in another process (a worker): no per-process hashes (set order, ids) enter it.
    script = ("import numpy as np\nfrom dask_pipeline.usercode import code_identity\n"
              "ns = {'__name__': '__main__', 'np': np}\n"
              "exec(\"TABLE = {'alpha': 0.5}\\nARR = np.array([9.0, 2.0])\\nNAMES = {'a', 'b', 'c'}\\n"
              "def g(x):\\n    return x * TABLE['alpha'] * ARR[0] * len(NAMES)\\n\", ns)\n"
              "print(code_identity(ns['g']))")
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2)}
    assert len(outs) == 1 and "" not in outs
    # Data that will not hash (a frame of lists) counts by its type, never fails the registration.
    namespace["TABLE"] = __import__("pandas").DataFrame({"a": [[1], [2]]})
    assert len(code_identity(g)) == 16
