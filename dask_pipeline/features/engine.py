"""The feature engine: the indicator registry and :func:`compute`.

Adding an indicator is one function below (bar arrays and parameters in, one float32
array per output column out, computed by a kernel) and one line in ``INDICATORS``.
Column names are ``<output>_<params in declared order>``: ``sma_20``,
``macd_signal_12_26_9``, ``bb_pctb_20_2``; a float parameter prints without a
trailing ``.0`` and with ``p`` for the point (``2.5`` -> ``2p5``); ``obv`` has none.

Missing bars (NaN) are allowed in the input and follow the rule documented in
:mod:`dask_pipeline.features.reference`: windows holding a missing bar are NaN,
recursive indicators restart after a gap. Infinite values are an error.

``compute`` runs the shipped indicators it can through a few fused passes over the bars
(:mod:`dask_pipeline.features.fusion`), each writing straight into the output block;
every other entry (``wma``, ``corr``, ``beta``, one registered or replaced by a user,
or one whose bars' NaN masks keep it out of a shared pass) goes through its function
below, one at a time: the registry stays the one definition of each indicator.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from dask_pipeline.errors import ConfigError, DataError
from dask_pipeline.features import fusion, kernels, moments
from dask_pipeline.features.fused import (SCAN_BAD_COLUMN, SCAN_BAD_ROW, SCAN_CV_ALIGNED, SCAN_HLC_ALIGNED, SCAN_NAN,
                                          scan_bars_nb)
from dask_pipeline.waves.causal import wave_features

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
_MAX_WINDOW = 100_000


# --- registry types -----------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One indicator parameter: its type, default and allowed range (inclusive)."""

    default: int | float
    low: int | float
    high: int | float = _MAX_WINDOW
    kind: type = int

    def describe(self) -> str:
        kind = "integer" if self.kind is int else "number"
        if self.low == -float("inf") and self.high == float("inf"):  # a user indicator's unbounded parameter
            return kind
        return f"{kind} {self.low}..{self.high}"

    def coerce(self, value: Any, where: str) -> int | float:
        """``value`` as this parameter's type, or a ValueError naming ``where``."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            article = "an" if self.kind is int else "a"
            raise ValueError(f"{where} must be {article} {self.describe()}, got {value!r}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"{where}={value} is out of range; allowed {self.describe()}")
        return value


@dataclass(frozen=True)
class Indicator:
    """A registry entry: how to compute an indicator and how to name its columns.

    ``compute(bars, **params)`` gets :class:`BarArrays` and returns one float32 array
    per name in ``outputs``. ``check(**params)`` returns a message when the parameters
    are individually valid but inconsistent together.
    """

    compute: Callable[..., tuple[np.ndarray, ...]]
    outputs: tuple[str, ...]
    params: dict[str, Param] = field(default_factory=dict)
    needs_benchmark: bool = False
    check: Callable[..., str | None] | None = None
    needs_volume: bool = False
    #: A user indicator's code identity (``usercode.code_identity``), part of its cache key;
    #: empty for built-ins, whose code the package version identifies.
    code: str = ""

    def columns(self, params: dict[str, int | float]) -> list[str]:
        suffix = "".join("_" + _format_param(params[name]) for name in self.params)
        return [output + suffix for output in self.outputs]


def _format_param(value: int | float) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value).replace(".", "p")
    return str(value)


class BarArrays:
    """A symbol's bar columns as contiguous float64 arrays, plus the aligned benchmark
    close, with a per-call memo so indicators sharing a pass (std, z-score, Bollinger
    on the same window) compute it once."""

    def __init__(self, columns: dict[str, np.ndarray], bench_close: np.ndarray | None,
                 index: pd.DatetimeIndex | None = None, where: str = "bars"):
        self.index = index  # user indicators get the bars as a DataFrame on this index
        self.where = where
        self.open = columns["open"]
        self.high = columns["high"]
        self.low = columns["low"]
        self.close = columns["close"]
        self.volume = columns["volume"]
        self.bench_close = bench_close
        self._memo: dict[tuple, Any] = {}

    def moments(self, column: str, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Rolling (mean, population std) of a column, float64, computed once per call."""
        key = ("moments", column, window)
        if key not in self._memo:
            self._memo[key] = moments.rolling_moments_nb(getattr(self, column), window)
        return self._memo[key]

    def atr(self, window: int) -> np.ndarray:
        """Wilder ATR, float64, computed once per call."""
        key = ("atr", window)
        if key not in self._memo:
            self._memo[key] = kernels.wilder_atr_nb(self.high, self.low, self.close, window)
        return self._memo[key]

    def waves(self, mode: str, threshold: float, atr_period: int, lookback: int, up_to: int) -> tuple:
        """The causal wave features (score, direction, position), computed once per call and zigzag."""
        key = ("waves", mode, threshold, atr_period, lookback, up_to)
        if key not in self._memo:
            self._memo[key] = wave_features(self.high, self.low, self.close, mode, threshold, atr_period, lookback,
                                            up_to)
        return self._memo[key]


# --- indicators: one function each --------------------------------------------------


def _ret(b: BarArrays, lag):
    return (kernels.ret_nb(b.close, lag),)


def _logret(b: BarArrays, lag):
    return (kernels.logret_nb(b.close, lag),)


def _mom(b: BarArrays, lag):
    return (kernels.mom_nb(b.close, lag),)


def _roc(b: BarArrays, lag):
    return (kernels.roc_nb(b.close, lag),)


def _sma(b: BarArrays, window):
    return (kernels.sma_nb(b.close, window),)


def _ema(b: BarArrays, window):
    return (kernels.ema_nb(b.close, window),)


def _wma(b: BarArrays, window):
    return (kernels.wma_nb(b.close, window),)


def _std(b: BarArrays, window):
    return (b.moments("close", window)[1].astype(np.float32),)


def _zscore(b: BarArrays, window):
    return (moments.zscore_nb(b.close, *b.moments("close", window)),)


def _volume_z(b: BarArrays, window):
    return (moments.zscore_nb(b.volume, *b.moments("volume", window)),)


def _bbands(b: BarArrays, window, nbdev):
    return moments.bbands_nb(b.close, *b.moments("close", window), nbdev)


def _rsi(b: BarArrays, window):
    return (kernels.rsi_nb(b.close, window),)


def _macd(b: BarArrays, fast, slow, signal):
    return kernels.macd_nb(b.close, fast, slow, signal)


def _macd_check(fast, slow, signal):
    return None if fast < slow else f"fast ({fast}) must be shorter than slow ({slow})"


def _atr(b: BarArrays, window):
    return (b.atr(window).astype(np.float32),)


def _natr(b: BarArrays, window):
    return (kernels.natr_nb(b.atr(window), b.close),)


def _stoch(b: BarArrays, window, smooth, d):
    return kernels.stoch_nb(b.high, b.low, b.close, window, smooth, d)


def _dist_high(b: BarArrays, window):
    return (kernels.dist_high_nb(b.close, b.high, window),)


def _dist_low(b: BarArrays, window):
    return (kernels.dist_low_nb(b.close, b.low, window),)


def _obv(b: BarArrays):
    return (kernels.obv_nb(b.close, b.volume),)


def _corr(b: BarArrays, window):
    return (moments.corr_nb(b.close, b.bench_close, window),)


def _beta(b: BarArrays, window):
    return (moments.beta_nb(b.close, b.bench_close, window),)


def _wave_score(b: BarArrays, lookback, threshold, atr_period, up_to):
    return b.waves("atr", threshold, atr_period, lookback, up_to)[:1]


def _wave_direction(b: BarArrays, lookback, threshold, atr_period, up_to):
    return b.waves("atr", threshold, atr_period, lookback, up_to)[1:2]


def _wave_position(b: BarArrays, lookback, threshold, atr_period, up_to):
    return b.waves("atr", threshold, atr_period, lookback, up_to)[2:]


def _wave_score_pct(b: BarArrays, lookback, threshold, up_to):
    return b.waves("percent", threshold, 1, lookback, up_to)[:1]


def _wave_direction_pct(b: BarArrays, lookback, threshold, up_to):
    return b.waves("percent", threshold, 1, lookback, up_to)[1:2]


def _wave_position_pct(b: BarArrays, lookback, threshold, up_to):
    return b.waves("percent", threshold, 1, lookback, up_to)[2:]


def _waves(pct=False):
    """Parameters of the causal wave features (``waves.causal``), the scan's defaults."""
    threshold = Param(0.05, 0.001, 0.99, float) if pct else Param(3.0, 0.01, 100.0, float)
    atr = {} if pct else {"atr_period": Param(14, 1)}
    return {"lookback": Param(500, 6), "threshold": threshold, **atr, "up_to": Param(3, 1, 16)}


def _lag(default):
    return {"lag": Param(default, 1)}


def _window(default, low=2):
    return {"window": Param(default, low)}


INDICATORS: dict[str, Indicator] = {
    "ret": Indicator(_ret, ("ret",), _lag(1)),
    "logret": Indicator(_logret, ("logret",), _lag(1)),
    "mom": Indicator(_mom, ("mom",), _lag(10)),
    "roc": Indicator(_roc, ("roc",), _lag(10)),
    "sma": Indicator(_sma, ("sma",), _window(20)),
    "ema": Indicator(_ema, ("ema",), _window(12)),
    "wma": Indicator(_wma, ("wma",), _window(20)),
    "std": Indicator(_std, ("std",), _window(20)),
    "zscore": Indicator(_zscore, ("zscore",), _window(20)),
    "rsi": Indicator(_rsi, ("rsi",), _window(14)),
    "macd": Indicator(
        _macd,
        ("macd", "macd_signal", "macd_hist"),
        {"fast": Param(12, 2), "slow": Param(26, 2), "signal": Param(9, 1)},
        check=_macd_check,
    ),
    "bbands": Indicator(
        _bbands,
        ("bb_pctb", "bb_width"),
        {"window": Param(20, 2), "nbdev": Param(2.0, 0.01, 100.0, float)},
    ),
    "atr": Indicator(_atr, ("atr",), _window(14, low=1)),
    "natr": Indicator(_natr, ("natr",), _window(14, low=1)),
    "stoch": Indicator(
        _stoch,
        ("stoch_k", "stoch_d"),
        {"window": Param(14, 1), "smooth": Param(3, 1), "d": Param(3, 1)},
    ),
    "dist_high": Indicator(_dist_high, ("dist_high",), _window(20, low=1)),
    "dist_low": Indicator(_dist_low, ("dist_low",), _window(20, low=1)),
    "volume_z": Indicator(_volume_z, ("volume_z",), _window(20), needs_volume=True),
    "obv": Indicator(_obv, ("obv",), needs_volume=True),
    "corr": Indicator(_corr, ("corr",), _window(60), needs_benchmark=True),
    "beta": Indicator(_beta, ("beta",), _window(60), needs_benchmark=True),
    "wave_score": Indicator(_wave_score, ("wave_score",), _waves()),
    "wave_direction": Indicator(_wave_direction, ("wave_direction",), _waves()),
    "wave_position": Indicator(_wave_position, ("wave_position",), _waves()),
    "wave_score_pct": Indicator(_wave_score_pct, ("wave_score_pct",), _waves(pct=True)),
    "wave_direction_pct": Indicator(_wave_direction_pct, ("wave_direction_pct",), _waves(pct=True)),
    "wave_position_pct": Indicator(_wave_position_pct, ("wave_position_pct",), _waves(pct=True)),
}

#: The built-in entries the fused passes may compute: an entry replaced in ``INDICATORS``
#: (or one registered by a user) is no longer this object and takes the generic path.
_FUSABLE = {name: INDICATORS[name] for name in fusion.FUSED}

#: The feature set used when a config names none: (registry name, parameters).
DEFAULT_SET: tuple[tuple[str, dict[str, int | float]], ...] = (
    ("ret", {"lag": 1}),
    ("logret", {"lag": 1}),
    ("sma", {"window": 20}),
    ("ema", {"window": 12}),
    ("std", {"window": 20}),
    ("zscore", {"window": 20}),
    ("mom", {"lag": 10}),
    ("roc", {"lag": 10}),
    ("rsi", {"window": 14}),
    ("macd", {"fast": 12, "slow": 26, "signal": 9}),
    ("bbands", {"window": 20, "nbdev": 2.0}),
    ("atr", {"window": 14}),
    ("natr", {"window": 14}),
    ("stoch", {"window": 14, "smooth": 3, "d": 3}),
    ("dist_high", {"window": 20}),
    ("dist_low", {"window": 20}),
    ("volume_z", {"window": 20}),
    ("obv", {}),
)


def register(name: str, indicator: Indicator) -> None:
    """Add or replace the registry entry ``name`` (``features.indicator`` calls this for user code)."""
    INDICATORS[name] = indicator
    _plan.cache_clear()  # cached plans hold the entries they resolved
    _column_index.cache_clear()


def resolve_params(name: str, params: dict[str, Any]) -> dict[str, int | float]:
    """Validate an indicator's parameters and fill in defaults, in declared order.

    Raises
    ------
    ValueError
        Unknown indicator (naming the closest valid one), unknown parameter (naming
        the allowed ones), or a value of the wrong type or out of range.
    """
    indicator = INDICATORS.get(name)
    if indicator is None:
        close = difflib.get_close_matches(str(name), INDICATORS, n=1, cutoff=0.0)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown indicator {name!r}; {hint}valid: {', '.join(sorted(INDICATORS))}"
        )
    unknown = [key for key in params if key not in indicator.params]
    if unknown:
        allowed = ", ".join(f"{key} ({p.describe()})" for key, p in indicator.params.items())
        raise ValueError(
            f"indicator {name!r} has no parameter {unknown[0]!r}; "
            f"allowed: {allowed or 'none'}"
        )
    resolved = {
        key: p.coerce(params.get(key, p.default), f"{name}.{key}")
        for key, p in indicator.params.items()
    }
    if indicator.check is not None:
        problem = indicator.check(**resolved)
        if problem:
            raise ValueError(f"indicator {name!r}: {problem}")
    return resolved


def feature_columns(spec=None) -> list[str]:
    """The column names :func:`compute` returns for ``spec``, in order."""
    return [column for _, _, columns in _plan(_spec_key(spec)) for column in columns]


# --- compute ------------------------------------------------------------------------


def compute(
    bars: pd.DataFrame,
    spec=None,
    benchmark: pd.DataFrame | None = None,
    *,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Compute technical features of one symbol's bars.

    Parameters
    ----------
    bars : DataFrame
        ``DatetimeIndex`` (UTC, strictly increasing; a naive index is read as UTC and
        returned as given), columns ``open high low close`` and ``volume`` (any real
        dtype; NaN marks a missing value, inf is an error). ``volume`` may be absent or
        all NaN (price-only bars) unless an indicator needs it (``obv``, ``volume_z``).
    spec : FeaturesConfig, list of IndicatorSpec, or None
        The indicators to compute; None means the default set.
    benchmark : DataFrame, optional
        The benchmark symbol's bars (only ``close`` is read), needed by ``corr`` and
        ``beta``; aligned on ``bars``' timestamps, NaN where it has no bar.
    symbol : str, optional
        Named in error messages.

    Returns
    -------
    DataFrame
        float32 columns named ``<indicator>_<params>``, same index as ``bars``.

    Raises
    ------
    DataError
        Malformed bars or benchmark; a volume indicator on bars without volume.
    ConfigError
        Invalid spec, or ``corr``/``beta`` requested without a benchmark.
    """
    key = _spec_key(spec)
    plan = _plan(key)
    where = f"symbol {symbol!r}" if symbol else "bars"
    block, found = _bar_block(bars, where)
    needy = [c for ind, _, cols in plan if ind.needs_volume for c in cols]
    if needy and block.shape[1] and np.isnan(block[BAR_COLUMNS.index("volume")]).all():
        raise DataError(f"{where}: features {', '.join(needy)} need volume, and the bars have none (price-only)")
    bench_close = None
    if any(indicator.needs_benchmark for indicator, _, _ in plan):
        if benchmark is None:
            wanted = sorted({c for ind, _, cols in plan if ind.needs_benchmark for c in cols})
            raise ConfigError(
                f"features {', '.join(wanted)} need benchmark bars "
                "(set features.benchmark and pass its bars to compute)"
            )
        bench_close = _aligned_close(benchmark, bars.index, where)

    names = _column_index(key)
    out = feature_block(len(bars), len(names))
    todo, firsts = _schedule(key, (bool(found[SCAN_HLC_ALIGNED]), bool(found[SCAN_CV_ALIGNED])))
    fusion.run(todo, block, out, int(found[SCAN_NAN]))
    if todo.generic:
        arrays = BarArrays(dict(zip(BAR_COLUMNS, block)), bench_close, bars.index, where)
        for position in todo.generic:
            indicator, params, _ = plan[position]
            for j, values in enumerate(indicator.compute(arrays, **params), start=firsts[position]):
                out[:, j] = values
    return pd.DataFrame(out[:, :len(names)], index=bars.index, columns=names, copy=False)


def feature_block(n_bars: int, n_columns: int) -> np.ndarray:
    """The float32 block the fused passes write, column-major (each feature one contiguous
    column, the frame one block), with at least two columns: its first ``n_columns`` are
    the features.

    numba types an ``(n, 1)`` array as C-layout where a wider one is F-layout: every fused
    kernel would compile a second time (on every worker, the warm-up's marker
    notwithstanding) for a feature set of one indicator, common in a study.
    """
    return np.empty((n_bars, max(n_columns, 2)), dtype=np.float32, order="F")


def _spec_key(spec) -> tuple:
    """A hashable description of ``spec``: ((name, ((param, value), ...)), ...)."""
    if spec is None:
        items = DEFAULT_SET
    else:
        indicators = getattr(spec, "indicators", spec)
        if isinstance(indicators, (str, bytes)) or not hasattr(indicators, "__iter__"):
            raise ConfigError(
                "features spec must be a FeaturesConfig, a list of IndicatorSpec or None, "
                f"got {type(spec).__name__}"
            )
        items = []
        for item in indicators:
            name, params = getattr(item, "name", None), getattr(item, "params", None)
            if not isinstance(name, str) or not isinstance(params, dict):
                raise ConfigError(
                    f"features spec: expected IndicatorSpec items, got {type(item).__name__}"
                )
            items.append((name, params))
    return tuple((name, tuple(params.items())) for name, params in items)


@functools.lru_cache(maxsize=256)
def _plan(key: tuple) -> tuple[tuple[Indicator, dict, list[str]], ...]:
    """Resolved (indicator, parameters, column names) per spec item; ConfigError if invalid."""
    plan = []
    seen: dict[str, int] = {}
    for position, (name, params) in enumerate(key):
        try:
            resolved = resolve_params(name, dict(params))
        except ValueError as exc:
            raise ConfigError(f"features.indicators.{position}: {exc}") from None
        columns = INDICATORS[name].columns(resolved)
        for column in columns:
            if column in seen:
                raise ConfigError(
                    f"features.indicators.{position}: {column!r} is already computed by "
                    f"features.indicators.{seen[column]}"
                )
            seen[column] = position
        plan.append((INDICATORS[name], resolved, columns))
    return tuple(plan)


_SCHEDULES: dict[tuple, tuple] = {}


def _schedule(key: tuple, aligned: tuple[bool, bool]) -> tuple[fusion.Schedule, tuple[int, ...]]:
    """The fused passes of a spec for bars whose (high, low, close) and (close, volume)
    NaN masks agree or not, and each item's first output column.

    Kept per spec while its plan is the one ``_plan`` returns: a registry change clears
    the plans, and a schedule made from an older plan is not reused.
    """
    plan = _plan(key)
    cached = _SCHEDULES.get((key, aligned))
    if cached is not None and cached[0] is plan:
        return cached[1]
    items, firsts, j = [], [], 0
    for (name, _), (indicator, params, columns) in zip(key, plan):
        fusable = name in _FUSABLE and indicator is _FUSABLE[name]
        items.append(fusion.Item(name if fusable else None, params, j))
        firsts.append(j)
        j += len(columns)
    found = fusion.schedule(items, *aligned), tuple(firsts)
    if len(_SCHEDULES) >= 512:
        _SCHEDULES.clear()
    _SCHEDULES[(key, aligned)] = (plan, found)
    return found


@functools.lru_cache(maxsize=256)
def _column_index(key: tuple) -> pd.Index:
    """The output columns as a pandas Index, built once per spec (building one is slow)."""
    return pd.Index([column for _, _, cols in _plan(key) for column in cols])


def _check_index(index: pd.Index, where: str) -> None:
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"{where}: index must be a DatetimeIndex, got {type(index).__name__}")
    if index.tz is not None and str(index.tz) != "UTC":
        raise DataError(f"{where}: index must be UTC timestamps (or naive, read as UTC), got tz={index.tz}")
    if not (index.is_monotonic_increasing and index.is_unique):
        ticks = index.asi8
        if index.hasnans:
            row = int(np.flatnonzero(index.isna())[0])
            raise DataError(f"{where}: row {row} has no timestamp (NaT)")
        row = int(np.flatnonzero(np.diff(ticks) <= 0)[0]) + 1
        raise DataError(
            f"{where}: timestamps must be strictly increasing; row {row} ({index[row]}) "
            f"does not come after {index[row - 1]}"
        )


def _float_column(frame: pd.DataFrame, name: str, where: str) -> np.ndarray:
    """One column as contiguous float64 (slow path, for frames of mixed dtypes)."""
    series = frame[name]
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        raise DataError(f"{where}: column {name!r} must be numeric, got {dtype}")
    return np.ascontiguousarray(series.to_numpy(dtype=np.float64, na_value=np.nan))


def _check_finite(values: np.ndarray, name: str, frame: pd.DataFrame, where: str) -> None:
    row = kernels.first_infinite_nb(values)
    if row >= 0:
        raise DataError(f"{where}: column {name!r} is infinite at row {row} ({frame.index[row]})")


def _bar_block(bars: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The bar columns as one ``(5, n)`` float64 block (rows in ``BAR_COLUMNS`` order),
    validated in one pass, and what that pass found (``scan_bars_nb``: which columns
    hold NaN, and whether their NaN masks agree)."""
    if not isinstance(bars, pd.DataFrame):
        raise DataError(f"{where}: expected a DataFrame of bars, got {type(bars).__name__}")
    if "volume" not in bars.columns:  # price-only bars
        bars = bars.assign(volume=np.nan)
    names = bars.columns.tolist()
    missing = [c for c in BAR_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{where}: missing bar column(s) {', '.join(missing)}")
    _check_index(bars.index, where)
    # Fast path (pandas column access is slow): one array for an all-numeric frame.
    values = bars.to_numpy()
    block = np.empty((len(BAR_COLUMNS), len(bars)))
    for row, name in enumerate(BAR_COLUMNS):
        # A float32 frame's values are column-major: each row here is one contiguous copy.
        block[row] = values[:, names.index(name)] if values.dtype.kind in "fiu" else _float_column(bars, name, where)
    found = scan_bars_nb(block)
    if found[SCAN_BAD_COLUMN] >= 0:
        row = int(found[SCAN_BAD_ROW])
        name = BAR_COLUMNS[found[SCAN_BAD_COLUMN]]
        raise DataError(f"{where}: column {name!r} is infinite at row {row} ({bars.index[row]})")
    return block, found


def _bar_arrays(bars: pd.DataFrame, where: str) -> dict[str, np.ndarray]:
    """The bar columns by name, contiguous float64, validated (rows of :func:`_bar_block`)."""
    return dict(zip(BAR_COLUMNS, _bar_block(bars, where)[0]))


def _aligned_close(benchmark: pd.DataFrame, index: pd.DatetimeIndex, where: str) -> np.ndarray:
    """The benchmark's close on ``index``'s timestamps, NaN where it has no bar."""
    label = f"benchmark for {where}"
    if not isinstance(benchmark, pd.DataFrame) or "close" not in benchmark.columns:
        raise DataError(f"{label}: expected a DataFrame of bars with a 'close' column")
    _check_index(benchmark.index, label)
    close = _float_column(benchmark, "close", label)
    _check_finite(close, "close", benchmark, label)
    positions = _as_utc(benchmark.index).get_indexer(_as_utc(index))
    aligned = np.full(len(index), np.nan)
    found = positions >= 0
    aligned[found] = close[positions[found]]
    return aligned


def _as_utc(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """A naive index read as UTC (the contract's zone), so naive and UTC indexes align."""
    return index.tz_localize("UTC") if index.tz is None else index
