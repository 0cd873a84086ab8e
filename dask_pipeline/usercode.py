"""User code: modules and classes named in a config, found by dotted name or file path.

Every extension point (``graph:``, ``plugins:``, ``model.name``) names user code as text;
this module turns the text into the module or class, or into one ``ConfigError`` line
naming the config key, what was not found and the closest name that exists:

    'plugins': no module named 'examples.indicatrs' (did you mean 'examples.indicators'?)

Dotted names are imported like ``python -m`` does: from ``sys.path``, then from the
current directory (a console script does not put it on ``sys.path``, so a package beside
the config, such as this repository's ``examples/``, is found from the command line too).

A ``.py`` file is loaded under a name of its own that no worker can import, so cloudpickle
pickles its functions *by value*: they travel inside the tasks that use them, and the
file need not exist on any worker (a module imported by name is pickled by reference and
must be importable on every worker).

``code_identity`` is a hash of a function's code, defaults and the module source it comes
from: caches keyed by it never serve values computed by an older version of the function.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
import types
from pathlib import Path
from typing import Any

from dask_pipeline.errors import ConfigError
from dask_pipeline.schema import did_you_mean

#: Prefix of the module names files are loaded under (``_dask_pipeline_file_<stem>_<hash>``).
FILE_MODULE_PREFIX = "_dask_pipeline_file_"

#: Files loaded by ``import_file``, by module name (kept out of ``sys.modules`` on purpose).
_FILE_MODULES: dict[str, types.ModuleType] = {}

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_file_path(text: str) -> bool:
    """Whether ``text`` names a file (ends in ``.py`` or holds a path separator) rather than a module."""
    return text.endswith(".py") or "/" in text or os.sep in text


def is_dotted(text: str) -> bool:
    """Whether ``text`` is a dotted Python name (``a.b.c``) with at least one dot."""
    return "." in text and _DOTTED.fullmatch(text) is not None


def import_module(name: str, key: str | None = None) -> types.ModuleType:
    """The module ``name`` (dotted), imported; ``ConfigError`` naming ``key`` when it cannot be.

    A module that is not found names the closest module that exists; a module that is
    found but fails while importing names the exception and where it was raised.
    """
    if _DOTTED.fullmatch(name) is None:
        raise _error(key, f"{name!r} is not a module name (expected a dotted name such as mylab.indicators)")
    try:
        return _import(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise _error(key, f"importing {name} failed: {_one_line(exc)}") from None
        hint = _install_hint(exc.name) or did_you_mean(exc.name, _siblings(exc.name))
        raise _error(key, f"no module named {exc.name!r}{hint}") from None
    except Exception as exc:  # the module exists but its own code failed: say where
        raise _error(key, f"importing {name} failed: {_one_line(exc)}") from None


def import_file(path: str | Path, key: str | None = None) -> types.ModuleType:
    """The Python file at ``path``, loaded as a module whose functions are pickled by value.

    The module is executed under a name of its own and then kept out of ``sys.modules``:
    plain pickle (which Dask tries first, and which would pickle its functions by a
    reference no worker can resolve) then cannot find it, and Dask falls back to
    cloudpickle, which pickles a function of a module it cannot look up by value, code
    and globals included. (``cloudpickle.register_pickle_by_value`` alone is not enough:
    Dask consults the registry only for the top-level object it sends, never for the
    functions inside a graph.) Loading the same content twice returns the module loaded
    the first time; an edited file is loaded anew.
    """
    path = Path(path).expanduser().resolve()
    if path.suffix != ".py":
        raise _error(key, f"{path} is not a Python file (expected a path ending in .py)")
    if not path.is_file():
        raise _error(key, f"no such file: {path}")
    source = path.read_bytes()
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.blake2b(str(path).encode() + b"\0" + source, digest_size=6).hexdigest()
    name = f"{FILE_MODULE_PREFIX}{stem}_{digest}"
    if name in _FILE_MODULES:
        return _FILE_MODULES[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # while it runs: dataclasses and typing look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise _error(key, f"loading {path} failed: {_one_line(exc)}") from None
    finally:
        del sys.modules[name]
    _FILE_MODULES[name] = module
    return module


def loaded_module(name: str) -> types.ModuleType | None:
    """The module called ``name``: an imported one, or a file ``import_file`` loaded."""
    return sys.modules.get(name) or _FILE_MODULES.get(name)


def import_class(path: str, key: str | None = None) -> type:
    """The class at dotted ``path`` (``module.Class``), imported; ``ConfigError`` naming ``key`` otherwise."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name or _DOTTED.fullmatch(path) is None:
        raise _error(key, f"{path!r} is not a class path (expected module.Class, "
                          "e.g. sklearn.linear_model.Lasso)")
    module = import_module(module_name, key)
    found = getattr(module, class_name, None)
    if found is None:
        classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        raise _error(key, f"module {module_name} has no {class_name!r}"
                          f"{did_you_mean(class_name, classes)}")
    if not isinstance(found, type):
        raise _error(key, f"{path} is a {type(found).__name__}, not a class")
    return found


def _error(key: str | None, text: str) -> ConfigError:
    """The error for config key ``key`` (None inside a pydantic validator, which names the key itself)."""
    return ConfigError(f"'{key}': {text}" if key else text)


def module_source(module: types.ModuleType) -> bytes:
    """The source of ``module`` as bytes, or b"" when it has none on disk (``__main__`` in a notebook)."""
    path = getattr(module, "__file__", None)
    if path and path.endswith(".py"):
        try:
            return Path(path).read_bytes()
        except OSError:
            return b""
    return b""


def code_identity(func: Any) -> str:
    """A hash (16 hex digits) of what ``func`` computes, as far as its code shows it.

    It covers the function's bytecode and constants (nested functions included), its
    defaults, the values it closed over and the globals it reads (by value: numbers,
    strings, containers, arrays, frames, functions of its own module by their code;
    modules, classes and other functions by name), and the whole source file of its
    module when it has one. A change to any of these gives another identity; so may a
    change elsewhere in the same file (harmless: a cache miss, never a stale hit). It is
    taken when the indicator is registered (and travels with it to the workers): a table
    edited in a notebook afterwards is seen once the ``@indicator`` cell runs again.
    """
    digest = hashlib.blake2b(digest_size=8)
    _hash_function(func, digest, set())
    module = loaded_module(getattr(func, "__module__", "") or "")
    if module is not None:
        digest.update(module_source(module))
    return digest.hexdigest()


def _hash_function(func: Any, digest: Any, seen: set[int]) -> None:
    func = inspect.unwrap(func)
    if id(func) in seen:
        return
    seen.add(id(func))
    digest.update(f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}".encode())
    code = getattr(func, "__code__", None)
    if code is None:  # a builtin or a callable object: its name is all that can be hashed
        digest.update(repr(type(func)).encode())
        return
    _hash_code(code, digest)
    digest.update(repr(getattr(func, "__defaults__", None)).encode())
    digest.update(repr(sorted((getattr(func, "__kwdefaults__", None) or {}).items())).encode())
    for cell in getattr(func, "__closure__", None) or ():  # a factory's indicator: the values it closed over
        try:
            _hash_value(cell.cell_contents, digest, seen, func)
        except ValueError:  # an empty cell
            digest.update(b"<empty>")
    module_globals = getattr(func, "__globals__", {})
    for name in sorted(_global_names(code)):
        if name in module_globals:
            digest.update(f"{name}=".encode())
            _hash_value(module_globals[name], digest, seen, func)


def _hash_value(value: Any, digest: Any, seen: set[int], func: Any, depth: int = 0) -> None:
    """Hash what ``value`` holds, the same in every process: a table a function reads, a closed-over setting.

    Modules, classes and functions of other modules count by name (their code is the
    package's: a version); any other object by its type.
    """
    digest.update(type(value).__qualname__.encode())
    try:
        _hash_data(value, digest, seen, func, depth)
    except Exception:  # data that will not hash (a frame of lists): its type alone, as for any object
        digest.update(b"<unhashable>")


def _hash_data(value: Any, digest: Any, seen: set[int], func: Any, depth: int) -> None:
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, bool | int | float | complex | str | bytes | np.generic):
        digest.update(repr(value).encode())
    elif isinstance(value, types.ModuleType):
        digest.update(value.__name__.encode())
    elif inspect.isfunction(value) and value.__module__ == func.__module__:
        _hash_function(value, digest, seen)
    elif inspect.isroutine(value) or isinstance(value, type):
        digest.update(f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}".encode())
    elif depth > 8 or id(value) in seen:
        digest.update(b"<deep>")
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        if value.dtype.hasobject:
            seen.add(id(value))
            for item in value.ravel():
                _hash_value(item, digest, seen, func, depth + 1)
        else:
            digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, pd.Series | pd.DataFrame | pd.Index):
        digest.update(repr(getattr(value, "columns", getattr(value, "name", None))).encode())
        digest.update(pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index)).to_numpy().tobytes())
    elif isinstance(value, list | tuple):
        seen.add(id(value))
        for item in value:
            _hash_value(item, digest, seen, func, depth + 1)
    elif isinstance(value, dict):
        seen.add(id(value))
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _hash_value(value[key], digest, seen, func, depth + 1)
    elif isinstance(value, set | frozenset):  # str hashes differ per process: order by repr
        for item in sorted(value, key=repr):
            _hash_value(item, digest, seen, func, depth + 1)
    # Any other object counts by its type alone: its pickle may differ between processes
    # (sets inside, ids), and the client's and each worker's identities must agree.


def _hash_code(code: types.CodeType, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(const, digest)
        else:
            digest.update(repr(const).encode())


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _import(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.split(".")[0]
        here = os.getcwd()
        if exc.name != top or here in sys.path or "" in sys.path:
            raise
        # As `python -m` does: the current directory is where a user's own package lives.
        sys.path.insert(0, here)
        importlib.invalidate_caches()
        return importlib.import_module(name)


def _siblings(name: str) -> list[str]:
    """Modules beside ``name``: in its parent package, or top-level ones for a top-level name."""
    parent, _, _ = name.rpartition(".")
    if parent:
        try:
            package = importlib.import_module(parent)
        except Exception:
            return []
        prefix = parent + "."
        return [prefix + m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
    return sorted({m.name for m in pkgutil.iter_modules([p for p in (*sys.path, os.getcwd()) if p])})


def _install_hint(name: str) -> str:
    top = name.split(".")[0]
    extras = {"lightgbm": "lightgbm", "xgboost": "xgboost"}
    if top in extras and name == top:
        return f" (install it: pip install -e \".[{extras[top]}]\")"
    return ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<frozen"):
        where = f" (at {tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})"
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" (at {exc.filename}, line {exc.lineno})"
        text = exc.msg
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"
