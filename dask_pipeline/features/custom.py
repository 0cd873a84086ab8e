"""User indicators: ``@dask_pipeline.features.indicator("name")`` adds a function to the registry.

    from dask_pipeline.features import indicator

    @indicator("efficiency")
    def efficiency(bars, window: int = 10):
        change = (bars["close"] - bars["close"].shift(window)).abs()
        path = bars["close"].diff().abs().rolling(window).sum()
        return change / path

The function takes one symbol's bars (a DataFrame of float64 ``open high low close
volume`` on the bars' ``DatetimeIndex``, a fresh copy it may modify) and returns a Series
aligned on ``bars.index``, or a DataFrame whose columns are the declared ``outputs``.
Its keyword defaults are its parameters (int or float, checked and completed at config
load like a built-in's); columns are named ``<output>_<params>`` like built-ins
(``efficiency_10``). From then on the indicator is an ordinary registry entry: usable in
``features.indicators``, cached (its code identity is part of the cache key) and checked
for look-ahead at the start of every run that uses it (``features.lookahead``).

Output is checked on every call: aligned on ``bars.index``, numeric, finite or NaN, and
within float32 range; it is stored as float32 like every feature. A failure is one
``ExtensionError`` line naming the indicator and the symbol.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dask_pipeline.errors import DaskPipelineError, ExtensionError
from dask_pipeline.features import engine
from dask_pipeline.features.address import ENABLED, SECTION_KEYS
from dask_pipeline.usercode import code_identity

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def indicator(
    name: str, *, outputs: tuple[str, ...] | list[str] | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``f(bars, **params) -> Series | DataFrame`` as the indicator ``name``.

    Parameters
    ----------
    name
        The registry name used in ``features.indicators`` (lowercase letters, digits, ``_``);
        not the name of a built-in.
    outputs
        For a function returning a DataFrame: its column names, which become the feature
        columns ``<output>_<params>``. Default: one output named ``name``.
    bounds
        Allowed ``(low, high)`` per parameter, inclusive; parameters not listed take any
        value of their type.

    Returns
    -------
    The decorator; it returns the function unchanged, so it stays callable on its own.
    """
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        entry = make_indicator(name, func, outputs, bounds)
        previous = engine.INDICATORS.get(name)
        if previous is not None and not _same_function(previous, func):
            owner = getattr(previous.compute, "func", None)
            by = f" by {owner.__module__}.{owner.__qualname__}" if owner is not None else " (a built-in)"
            raise ExtensionError(f"indicator {name!r} is already registered{by}; choose another name")
        engine.register(name, entry)
        return func

    return register


def make_indicator(
    name: str, func: Callable[..., Any], outputs: tuple[str, ...] | list[str] | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
) -> engine.Indicator:
    """The registry entry of a user indicator (what ``indicator`` registers), validated."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ExtensionError(f"indicator name {name!r}: use lowercase letters, digits and '_', starting with a letter")
    if name in SECTION_KEYS:  # features.<name>.<param> would name the section's own key
        raise ExtensionError(f"indicator name {name!r} is a key of the features section; choose another name")
    if not callable(func):
        raise ExtensionError(f"indicator {name!r}: expected a function, got {type(func).__name__}")
    outs = (name,) if outputs is None else tuple(outputs)
    if not outs or any(not isinstance(o, str) or not _NAME.fullmatch(o) for o in outs) or len(set(outs)) < len(outs):
        raise ExtensionError(f"indicator {name!r}: outputs {list(outs)} must be distinct lowercase names")
    params = _params(name, func, bounds or {})
    return engine.Indicator(_UserCompute(name, func, outs), outs, params, code=code_identity(func))


def is_user_indicator(name: str) -> bool:
    """Whether the registry entry ``name`` came from ``@indicator`` (user code) rather than the package."""
    entry = engine.INDICATORS.get(name)
    return entry is not None and isinstance(entry.compute, _UserCompute)


def user_indicators() -> dict[str, engine.Indicator]:
    """The user entries of the registry, by name."""
    return {name: entry for name, entry in engine.INDICATORS.items() if isinstance(entry.compute, _UserCompute)}


@dataclass(frozen=True)
class _UserCompute:
    """The registry's ``compute`` of a user indicator: bar arrays in, checked float32 columns out."""

    name: str
    func: Callable[..., Any]
    outputs: tuple[str, ...]

    def __call__(self, arrays: engine.BarArrays, **params: Any) -> tuple[np.ndarray, ...]:
        index = arrays.index
        if index is None:  # only engine.compute builds BarArrays, and it always passes the index
            raise ExtensionError(f"indicator {self.name!r}: called without the bars' timestamps")
        bars = pd.DataFrame({c: getattr(arrays, c) for c in engine.BAR_COLUMNS}, index=index, copy=True)
        where = arrays.where
        try:
            result = self.func(bars, **params)
        except DaskPipelineError:
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())
            raise ExtensionError(f"indicator {self.name!r} failed on {where}: {type(exc).__name__}"
                                 f"{': ' + text if text else ''}") from exc
        frame = self._frame(result, index, where)
        return tuple(self._column(frame[o], o, index, where) for o in self.outputs)

    def _frame(self, result: Any, index: pd.DatetimeIndex, where: str) -> pd.DataFrame:
        label = f"indicator {self.name!r} on {where}"
        if isinstance(result, pd.Series):
            if len(self.outputs) > 1:
                raise ExtensionError(f"{label}: returned a Series, but it declares outputs "
                                     f"{', '.join(self.outputs)}; return a DataFrame with those columns")
            result = result.to_frame(self.outputs[0])
        elif isinstance(result, pd.DataFrame):
            if len(self.outputs) == 1 and result.shape[1] == 1:
                result = result.set_axis(list(self.outputs), axis=1)
            elif sorted(map(str, result.columns)) != sorted(self.outputs) or result.shape[1] != len(self.outputs):
                raise ExtensionError(f"{label}: returned columns {[str(c) for c in result.columns]}, "
                                     f"expected its outputs {list(self.outputs)}")
        else:
            raise ExtensionError(f"{label}: returned a {type(result).__name__}; "
                                 "expected a pandas Series (or DataFrame) aligned on bars.index")
        if not result.index.equals(index):
            raise ExtensionError(f"{label}: returned {len(result)} rows on another index than the "
                                 f"{len(index)} bars'{_first_difference(result.index, index)}; "
                                 "return values aligned on bars.index (no dropna, resample or reindex)")
        return result

    def _column(self, series: pd.Series, output: str, index: pd.DatetimeIndex, where: str) -> np.ndarray:
        label = f"indicator {self.name!r} on {where}"
        if not (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)):
            raise ExtensionError(f"{label}: output {output!r} is {series.dtype}, expected numbers")
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(over="ignore"):  # overflow is reported below, as a value beyond float32 range
            stored = values.astype(np.float32)
        bad = np.flatnonzero(np.isinf(stored))
        if bad.size:
            row = int(bad[0])
            what = "infinite" if np.isinf(values[row]) else f"{values[row]:.4g}, beyond float32 range"
            raise ExtensionError(f"{label}: output {output!r} is {what} at {index[row]} (row {row}); "
                                 "features must be finite or NaN")
        return np.ascontiguousarray(stored)


def _params(name: str, func: Callable[..., Any], bounds: dict[str, tuple[float, float]]) -> dict[str, engine.Param]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        raise ExtensionError(f"indicator {name!r}: cannot read the parameters of {func!r}") from None
    items = list(signature.parameters.values())
    if not items or items[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise ExtensionError(f"indicator {name!r}: the function must take the bars as its first argument")
    params: dict[str, engine.Param] = {}
    for item in items[1:]:
        if item.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ExtensionError(f"indicator {name!r}: *{item.name} is not allowed; parameters are "
                                 "keyword arguments with defaults")
        default = item.default
        if default is inspect.Parameter.empty:
            raise ExtensionError(f"indicator {name!r}: parameter {item.name!r} has no default; every parameter "
                                 "after the bars needs one (the default is its value when a config omits it)")
        if isinstance(default, bool) or not isinstance(default, int | float):
            raise ExtensionError(f"indicator {name!r}: parameter {item.name!r} defaults to {default!r}; "
                                 "parameters are numbers (int or float)")
        if item.name == ENABLED:
            raise ExtensionError(f"indicator {name!r}: a parameter cannot be named {ENABLED!r} "
                                 f"(features.{name}.{ENABLED} turns the indicator on and off)")
        kind = int if isinstance(default, int) else float
        low, high = bounds.get(item.name, (-math.inf, math.inf))
        param = engine.Param(default, low, high, kind)
        try:
            param.coerce(default, f"{name}.{item.name}")
        except ValueError as exc:
            raise ExtensionError(f"indicator {name!r}: default out of its bounds: {exc}") from None
        params[item.name] = param
    unknown = sorted(set(bounds) - set(params))
    if unknown:
        raise ExtensionError(f"indicator {name!r}: bounds name {', '.join(unknown)}, which is not a parameter")
    return params


def _same_function(previous: engine.Indicator, func: Callable[..., Any]) -> bool:
    """A re-registration of the same function (its module re-imported, its notebook cell re-run)."""
    old = getattr(previous.compute, "func", None)
    if old is None:
        return False
    if old.__qualname__ != func.__qualname__:
        return False
    same_file = getattr(getattr(old, "__code__", None), "co_filename", None) == \
        getattr(getattr(func, "__code__", None), "co_filename", "")
    return old.__module__ == func.__module__ or "__main__" in (old.__module__, func.__module__) or same_file


def _first_difference(got: pd.Index, want: pd.Index) -> str:
    for row, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f" (row {row}: {a} instead of {b})"
    return ""
