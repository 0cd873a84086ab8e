"""Causal wave features against the full-hindsight scan: patterns found, and what they cost.

``python -m dask_pipeline.waves.causal.benchmark [CONFIG]`` (default
``configs/quickstart.yaml``) takes the config's bars (``data.synthetic`` generated in
memory, else the store at ``data.root``) and its ``waves`` section, and per symbol:

- ``scan``: the patterns ``waves.scan`` reports with hindsight (the config's windows,
  filters and top-k); ``confirmed``: those whose last pivot is confirmed by the last bar
  (the others end at the running extreme, which later bars may still move);
  ``seen``: those the causal version scores too, on the same pivots with the same score
  (checked), at the bar that confirms their last pivot -- a confirmed pattern is missed
  only when its start has left the lookback by then;
- ``hindsight``: every valid impulse spanning less than ``waves.window_bars`` bars over all
  the pivots, the running extreme included, each pivot known at its own bar;
  ``causal``: every valid impulse the causal version scores over the history (lookback =
  ``waves.window_bars``), each once, at the bar that confirms its last pivot;
  ``bests``: the distinct impulses it reports as the best at some bar; ``scan_bests``:
  how many of those the scan reports too;
- ``lag``: median bars from a seen pattern's last pivot to the bar that confirmed it: how
  much later than the hindsight scan the causal version knows of it (the ``all`` row
  pools the symbols);
- ``last_bar``: whether the causal best at the last bar equals ``causal.scan_best``;
- ``ms``: one ``causal_waves`` call (all three features), best of ``repeats``, warm JIT.

A note line times the plain-Python definition against the kernel on the first
``reference_bars`` bars of the first symbol.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from dask_pipeline.errors import DaskPipelineError, DataError
from dask_pipeline.waves.causal import causal_waves, scan_best
from dask_pipeline.waves.causal.kernels import causal_best_nb
from dask_pipeline.waves.causal.reference import causal_best_py
from dask_pipeline.waves.patterns import scan
from dask_pipeline.waves.score import score_params
from dask_pipeline.waves.spec import WavesConfig

COLUMNS = ["symbol", "bars", "pivots", "scan", "confirmed", "seen", "hindsight", "causal", "bests", "scan_bests",
           "lag", "last_bar", "ms"]  # fmt: skip


def compare_symbol(bars: pd.DataFrame, spec: WavesConfig, repeats: int = 3) -> dict:
    """One symbol's row of the table (``COLUMNS`` but ``symbol``); see the module doc."""
    prices = [bars[c].to_numpy(np.float64) for c in ("high", "low", "close")]
    settings = _settings(spec)
    state = causal_waves(*prices, **settings, keep_candidates=True)
    seconds = min(_timed(lambda: causal_waves(*prices, **settings)) for _ in range(max(1, repeats)))
    n = len(bars)
    pivot_of = {int(p): i for i, p in enumerate(state.pos)}
    found = scan(bars, spec, backend="numba")
    where = [bars.index.get_indexer(found[f"t{j}"]) for j in range(6)]
    scan_ids = np.array([[pivot_of[int(p)] for p in row] for row in zip(*where)], dtype=np.int64).reshape(-1, 6)
    causal_score = {tuple(ids): score for ids, score in zip(state.candidates.tolist(), state.candidate_score)}
    seen = [tuple(ids) in causal_score for ids in scan_ids.tolist()]
    for ids, score, hit in zip(scan_ids.tolist(), found["score"], seen):
        if hit and causal_score[tuple(ids)] != score:
            raise AssertionError(f"pattern {ids}: causal score {causal_score[tuple(ids)]} != scan score {score}")
    best_ids = np.unique(state.pivots[state.found], axis=0)
    scan_set = {tuple(ids) for ids in scan_ids.tolist()}
    params = score_params(WavesConfig())
    *_, hindsight = causal_best_nb(  # every pivot known at its own bar: the scan's view
        state.pos, state.price, state.kind, state.pos, n, spec.window_bars, spec.up_to,
        params.centers, params.scales, params.counts, params.weights, False,
    )  # fmt: skip
    seen_ends = scan_ids[np.array(seen, dtype=bool), 5]
    lags = state.confirm[seen_ends] - state.pos[seen_ends]
    last = scan_best(*prices, **settings)
    agrees = (last is None and not state.found[-1]) or (
        last is not None and (last[0], last[1].tolist()) == (state.score[-1], state.pivots[-1].tolist())
    )
    return {
        "bars": n,
        "pivots": int((state.confirm < n).sum()),
        "scan": len(found),
        "confirmed": int((state.confirm[scan_ids[:, 5]] < n).sum()),
        "seen": int(sum(seen)),
        "hindsight": int(hindsight),
        "causal": int(state.candidates.shape[0]),
        "bests": int(best_ids.shape[0]),
        "scan_bests": int(sum(tuple(ids) in scan_set for ids in best_ids.tolist())),
        "lag": float(np.median(lags)) if lags.size else np.nan,
        "lags": lags,
        "last_bar": "yes" if agrees else "NO",
        "ms": seconds * 1e3,
    }


def bench_causal_waves(config: str = "configs/quickstart.yaml", repeats: int = 3, reference_bars: int = 300):
    """The table for ``config``'s bars and waves section, a totals row last, and the timing note.

    Returns
    -------
    (DataFrame, str)
        ``COLUMNS`` per symbol and ``all``; the reference-vs-kernel note.
    """
    from dask_pipeline.config import load_config

    cfg = load_config(config)
    bars = _bars(cfg)
    rows = [{"symbol": symbol, **compare_symbol(frame, cfg.waves, repeats)} for symbol, frame in bars.items()]
    lags = np.concatenate([row.pop("lags") for row in rows])
    table = pd.DataFrame(rows, columns=COLUMNS)
    total = {c: table[c].sum() for c in COLUMNS[1:10]}
    total.update(symbol="all", lag=float(np.median(lags)) if lags.size else np.nan,
                 last_bar="yes" if (table["last_bar"] == "yes").all() else "NO", ms=table["ms"].sum())  # fmt: skip
    table = pd.concat([table, pd.DataFrame([total], columns=COLUMNS)], ignore_index=True)
    return table, _reference_note(next(iter(bars.items())), cfg.waves, reference_bars)


def format_causal_table(table: pd.DataFrame) -> str:
    """The table as Markdown (the README's Elliott-wave section)."""
    head = ("| symbol | bars | pivots | scan | confirmed | seen | hindsight | causal | bests | scan_bests | lag | "
            "last_bar | ms |")  # fmt: skip
    lines = [head, "| --- |" + " ---: |" * 10 + " --- | ---: |"]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.symbol} | {r.bars:,} | {r.pivots:,} | {r.scan:,} | {r.confirmed:,} | {r.seen:,} | {r.hindsight:,} | "
            f"{r.causal:,} | "
            f"{r.bests:,} | {r.scan_bests:,} | {r.lag:g} | {r.last_bar} | {r.ms:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the note; a bad config or data is one ``error:`` line and status 2."""
    parser = argparse.ArgumentParser(prog="python -m dask_pipeline.waves.causal.benchmark",
                                     description="causal wave features vs the full-hindsight scan")  # fmt: skip
    parser.add_argument("config", nargs="?", default="configs/quickstart.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-bars", type=int, default=300)
    args = parser.parse_args(argv)
    try:
        table, note = bench_causal_waves(args.config, args.repeats, args.reference_bars)
    except DaskPipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_causal_table(table))
    print(note)
    return 0


def _settings(spec: WavesConfig) -> dict:
    return {"mode": spec.pivot_mode, "threshold": spec.pivot_threshold, "atr_period": spec.atr_period,
            "lookback": spec.window_bars, "up_to": spec.up_to}  # fmt: skip


def _bars(cfg) -> dict[str, pd.DataFrame]:
    """The config's bars as a run loads them: ``data.synthetic`` in memory, else the store."""
    data = cfg.data
    if data.synthetic is not None:
        from dask_pipeline.data import synthesize

        s = data.synthetic
        frames = synthesize(s.symbols, s.start, s.end, s.freq, s.seed)
        wanted = data.symbols or list(frames)
        unknown = [k for k in wanted if k not in frames]
        if unknown:
            raise DataError(f"data.symbols: {', '.join(unknown)} not among data.synthetic's {', '.join(frames)}")
        return {k: frames[k].loc[data.start : data.end].astype(data.dtype) for k in wanted}
    from dask_pipeline.data import list_symbols, load_bars

    return {k: load_bars(data.root, k, data.start, data.end, dtype=data.dtype)
            for k in (data.symbols or list_symbols(data.root))}  # fmt: skip


def _reference_note(first: tuple[str, pd.DataFrame], spec: WavesConfig, n: int) -> str:
    symbol, bars = first
    prices = [bars[c].to_numpy(np.float64)[:n] for c in ("high", "low", "close")]
    s = _settings(spec)
    started = time.perf_counter()
    causal_best_py(*(p.tolist() for p in prices), s["mode"], s["threshold"], s["atr_period"], s["lookback"],
                   s["up_to"], score_params(WavesConfig()))  # fmt: skip
    reference = time.perf_counter() - started
    kernel = min(_timed(lambda: causal_waves(*prices, **s)) for _ in range(5))
    return (f"plain-Python definition on the first {len(prices[0])} bars of {symbol}: {reference:.2f} s; "
            f"the numba kernel on the same bars: {kernel * 1e3:.3f} ms ({reference / kernel:,.0f}x)")


def _timed(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
