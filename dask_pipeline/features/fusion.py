"""Plan a feature set into the fused passes of :mod:`dask_pipeline.features.fused`, and run them.

Fusion is an optimisation of the built-in indicators, not a second registry: the engine
hands :func:`schedule` every item of the feature set, naming the built-ins it may fuse
(``FUSED``) and leaving user-registered or replaced indicators unnamed. Unnamed items,
built-ins without a fused pass (``wma``, ``corr``, ``beta``) and items whose bars do not
allow a shared pass go to the generic path: the indicator's own ``compute``, one at a
time, exactly as before fusion.

What may share a pass depends on the bars' NaN masks (from ``scan_bars_nb``): the
close recursions run over runs of present close; the range indicators (ATR, NATR,
stochastic, distances) share runs only when high, low and close are missing on the same
bars, and OBV joins the close pass only when volume is missing where close is (an
all-NaN volume, a price-only file, therefore takes the generic path and comes out NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dask_pipeline.features import fused as F

#: Built-in indicators (by registry name) that fused passes compute.
FUSED = frozenset(
    {"ret", "logret", "mom", "roc", "sma", "ema", "std", "zscore", "bbands", "macd", "rsi", "obv",
     "atr", "natr", "stoch", "dist_high", "dist_low", "volume_z"}
)  # fmt: skip
_RANGE = frozenset({"atr", "natr", "stoch", "dist_high", "dist_low"})
_LAG_KINDS = {"ret": F.LAG_RET, "mom": F.LAG_MOM, "roc": F.LAG_ROC}
_HIGH, _LOW, _CLOSE, _VOLUME = 1, 2, 3, 4  # rows of the (5, n) bar block: open, high, low, close, volume


@dataclass(frozen=True)
class Item:
    """One indicator of the feature set: its registry name when it may be fused (else
    None), its resolved parameters, and the block column of its first output."""

    name: str | None
    params: dict
    first: int


@dataclass(frozen=True)
class Schedule:
    """The passes computing a feature set: fused kernel arguments, and the positions of
    the items left to the generic path."""

    lags: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    logrets: tuple[tuple[int, int], ...] = ()
    chains: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    moments: tuple[tuple[int, int, np.ndarray, np.ndarray], ...] = ()
    ranges: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    generic: tuple[int, ...] = field(default_factory=tuple)

    @property
    def passes(self) -> int:
        """Fused kernel calls per symbol (the logret ratios count one each)."""
        return (self.lags is not None) + len(self.logrets) + len(self.chains) + len(self.moments) + len(self.ranges)


def schedule(items: list[Item], hlc_aligned: bool, cv_aligned: bool) -> Schedule:
    """Group ``items`` into fused passes.

    Parameters
    ----------
    items
        The feature set in order, each with the column of its first output.
    hlc_aligned, cv_aligned
        Whether high, low and close (close and volume) are NaN on the same bars.

    Returns
    -------
    Schedule
    """
    lags: list[tuple[int, int, int]] = []
    logrets: list[tuple[int, int]] = []
    slots: dict[str, list[tuple]] = {name: [] for name in ("sma", "ema", "macd", "rsi", "obv", "stoch", "dist_high",
                                                            "dist_low")}
    atr: dict[int, list[int]] = {}
    moments: dict[tuple[int, int], dict] = {}
    generic: list[int] = []

    def group(row: int, window: int) -> dict:
        return moments.setdefault((row, window), {"mean": -1, "std": -1, "z": -1, "bands": []})

    smas = []
    for position, item in enumerate(items):
        name, params, col = item.name, item.params, item.first
        if name is None or (name in _RANGE and not hlc_aligned) or (name == "obv" and not cv_aligned):
            generic.append(position)
        elif name in _LAG_KINDS:
            lags.append((_LAG_KINDS[name], params["lag"], col))
        elif name == "logret":
            logrets.append((params["lag"], col))
        elif name == "sma":
            smas.append((params["window"], col))
        elif name == "std":
            group(_CLOSE, params["window"])["std"] = col
        elif name == "zscore":
            group(_CLOSE, params["window"])["z"] = col
        elif name == "volume_z":
            group(_VOLUME, params["window"])["z"] = col
        elif name == "bbands":
            group(_CLOSE, params["window"])["bands"].append((params["nbdev"], col))
        elif name in ("atr", "natr"):
            atr.setdefault(params["window"], [-1, -1])[name == "natr"] = col
        elif name == "ema":
            slots["ema"].append((params["window"], col))
        elif name == "macd":
            slots["macd"].append((params["fast"], params["slow"], params["signal"], col))
        elif name == "rsi":
            slots["rsi"].append((params["window"], col))
        elif name == "obv":
            slots["obv"].append((col,))
        elif name == "stoch":
            slots["stoch"].append((params["window"], params["smooth"], params["d"], col))
        elif name in ("dist_high", "dist_low"):
            slots[name].append((params["window"], col))
        else:  # a name in FUSED without a rule here is a bug in this module
            raise AssertionError(f"no fused pass for {name!r}")
    # An SMA whose window already has moments on close is their mean; others are running sums.
    for window, col in smas:
        if (_CLOSE, window) in moments and moments[(_CLOSE, window)]["mean"] < 0:
            moments[(_CLOSE, window)]["mean"] = col
        else:
            slots["sma"].append((window, col))

    return Schedule(
        lags=_lag_arrays(lags),
        logrets=tuple(logrets),
        chains=tuple(_chain_rounds(slots)),
        moments=tuple(_moment_passes(moments)),
        ranges=tuple(_range_rounds(slots, atr)),
        generic=tuple(generic),
    )


def run(plan: Schedule, bars: np.ndarray, out: np.ndarray, nan_columns: int) -> None:
    """Run ``plan``'s fused passes over a ``(5, n)`` float64 bar block into ``out``.

    ``nan_columns``: bit ``j`` set when row ``j`` of ``bars`` holds a NaN (``scan_bars_nb``);
    runs of present bars are only looked for in those.
    """
    n = bars.shape[1]
    close, volume = bars[_CLOSE], bars[_VOLUME]
    whole = np.array([[0, n]], dtype=np.int64)
    close_runs = F.runs_nb(close) if nan_columns & (1 << _CLOSE) else whole
    if plan.lags is not None:
        F.lags_nb(close, *plan.lags, out)
    if plan.logrets:
        ratio = np.empty(n)
        for lag, col in plan.logrets:
            F.ratio_nb(close, lag, ratio)
            np.log(ratio, out=ratio)  # NumPy's SIMD log; NaN stays NaN without a warning
            out[:, col] = ratio
    for p, cols in plan.chains:
        F.chains_nb(close, volume, close_runs, p, cols, out)
    for row, window, cols, nbdevs in plan.moments:
        runs = close_runs if row == _CLOSE else F.runs_nb(bars[row]) if nan_columns & (1 << row) else whole
        F.moments_nb(bars[row], runs, window, cols, nbdevs, out)
    # The ranges pass is fused only when high, low and close share close's NaN mask.
    for p, cols in plan.ranges:
        F.ranges_nb(bars[_HIGH], bars[_LOW], close, close_runs, p, cols, out)


def _lag_arrays(lags: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not lags:
        return None
    kinds, windows, cols = (np.array(values, dtype=np.int64) for values in zip(*lags))
    return kinds, windows, cols


def _slots(size: int) -> np.ndarray:
    # Windows of unused slots stay 1 (harmless in the kernels' arithmetic); columns -1.
    return np.ones(size, dtype=np.int64)


def _written(p: np.ndarray, column_slots: tuple[int, ...]) -> np.ndarray:
    return np.array([p[i] for i in column_slots if p[i] >= 0], dtype=np.int64)


def _chain_rounds(slots: dict[str, list[tuple]]):
    rounds = max(len(slots[name]) for name in ("sma", "ema", "macd", "rsi", "obv"))
    column_slots = (F.C_SMA, F.C_EMA, F.C_MACD, F.C_MACD_SIG, F.C_MACD_HIST, F.C_RSI, F.C_OBV)
    for r in range(rounds):
        p = _slots(F.CHAIN_SLOTS)
        p[list(column_slots)] = -1
        if r < len(slots["sma"]):
            p[F.C_SMA_W], p[F.C_SMA] = slots["sma"][r]
        if r < len(slots["ema"]):
            p[F.C_EMA_W], p[F.C_EMA] = slots["ema"][r]
        if r < len(slots["macd"]):
            fast, slow, signal, col = slots["macd"][r]
            p[[F.C_MACD_FAST, F.C_MACD_SLOW, F.C_MACD_SIGNAL]] = fast, slow, signal
            p[[F.C_MACD, F.C_MACD_SIG, F.C_MACD_HIST]] = col, col + 1, col + 2
        if r < len(slots["rsi"]):
            p[F.C_RSI_W], p[F.C_RSI] = slots["rsi"][r]
        if r < len(slots["obv"]):
            (p[F.C_OBV],) = slots["obv"][r]
        yield p, _written(p, column_slots)


def _moment_passes(moments: dict[tuple[int, int], dict]):
    for (row, window), wanted in moments.items():
        cols = [wanted["mean"], wanted["std"], wanted["z"]]
        for _, col in wanted["bands"]:
            cols += [col, col + 1]
        nbdevs = np.array([nbdev for nbdev, _ in wanted["bands"]], dtype=np.float64)
        yield row, window, np.array(cols, dtype=np.int64), nbdevs


def _range_rounds(slots: dict[str, list[tuple]], atr: dict[int, list[int]]):
    atrs = list(atr.items())
    rounds = max(len(atrs), len(slots["stoch"]), len(slots["dist_high"]), len(slots["dist_low"]))
    column_slots = (F.R_ATR, F.R_NATR, F.R_STOCH_K, F.R_STOCH_DCOL, F.R_DIST_HIGH, F.R_DIST_LOW)
    for r in range(rounds):
        p = _slots(F.RANGE_SLOTS)
        p[list(column_slots)] = -1
        if r < len(atrs):
            window, (atr_col, natr_col) = atrs[r]
            p[[F.R_ATR_W, F.R_ATR, F.R_NATR]] = window, atr_col, natr_col
        if r < len(slots["stoch"]):
            window, smooth, d, col = slots["stoch"][r]
            p[[F.R_STOCH_W, F.R_STOCH_SMOOTH, F.R_STOCH_D]] = window, smooth, d
            p[[F.R_STOCH_K, F.R_STOCH_DCOL]] = col, col + 1
        if r < len(slots["dist_high"]):
            p[F.R_HIGH_W], p[F.R_DIST_HIGH] = slots["dist_high"][r]
        if r < len(slots["dist_low"]):
            p[F.R_LOW_W], p[F.R_DIST_LOW] = slots["dist_low"][r]
        yield p, _written(p, column_slots)
