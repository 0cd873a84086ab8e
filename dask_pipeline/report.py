"""``report.html``: a run's results as one self-contained page of tables and figures.

Built from the result files of a run folder alone (``run.json``, ``config.yaml`` and
whichever graph outputs are there), so ``dask-pipeline report RUN_DIR`` rebuilds it for
any finished run. Figures are drawn with matplotlib's Agg canvas (no display, no pyplot
state), embedded as base64 PNG and also saved under ``figures/``. Each section appears
only when the files it reads exist, as a ``<section id="...">``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dask_pipeline.calendars import when
from dask_pipeline.results import verify_run_folder, write_bytes, write_text

TOP_IMPORTANCES = 20
TOP_PATTERNS = 20
TOP_WAVE_SYMBOLS = 3
MAX_LABELLED_CURVES = 12

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.note { color: #666; font-style: italic; }
.warning { color: #a40; font-weight: bold; }
summary { cursor: pointer; color: #036; margin: 0.5em 0; }
"""


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` (and ``figures/*.png``) for the finished run in ``run_dir``.

    Parameters
    ----------
    run_dir
        A run folder: it must hold ``run.json``; every other file is optional.

    Returns
    -------
    Path
        The written ``report.html``.
    """
    run_dir = Path(run_dir)
    # run.json is the completeness marker: every file it lists must be the one the run wrote.
    record = verify_run_folder(run_dir)
    page = _Page(run_dir)
    for section in SECTIONS:
        section(page, record)
    title = f"Run {record.get('run') or run_dir.name} ({record.get('graph', '?')})"
    body = "\n".join(page.parts)
    text = (
        f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{_esc(title)}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n{_contents(page.ids)}\n{body}\n</body>\n</html>\n"
    )
    return write_text(run_dir / "report.html", text)


class _Page:
    """The sections written so far and the figures they saved."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.parts: list[str] = []
        self.ids: list[tuple[str, str]] = []

    def section(self, id_: str, title: str, *blocks: str) -> None:
        self.ids.append((id_, title))
        self.parts.append(f'<section id="{id_}">\n<h2>{_esc(title)}</h2>\n' + "\n".join(blocks) + "\n</section>")

    def figure(self, name: str, draw: Callable[[Any], None], size: tuple[float, float] = (10, 4)) -> str:
        """Draw ``draw(fig)`` on a new figure, save it as ``figures/<name>.png``, return its ``<img>``."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, dpi=100, layout="constrained")
        draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        return self.image(name, buffer.getvalue())

    def image(self, name: str, png: bytes) -> str:
        """Save ``png`` as ``figures/<name>.png`` and return its embedded ``<img>``."""
        from urllib.parse import quote

        # Names carry symbols: percent-encoded like partitions, so 'BRK/B' or '..' stay in figures/.
        write_bytes(self.run_dir / "figures" / f"{quote(name, safe='')}.png", png)
        return _img(png, name)


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_esc(alt)}">'


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    return frame.to_html(index=index, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")


def _contents(ids: list[tuple[str, str]]) -> str:
    links = " · ".join(f'<a href="#{i}">{_esc(t)}</a>' for i, t in ids)
    return f"<nav>{links}</nav>"


def _read(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / name
    return pd.read_parquet(path) if path.is_file() else None


def summary_section(page: _Page, record: dict[str, Any]) -> None:
    """The headline results, then graph, start, wall time and cluster from ``run.json``; versions."""
    from dask.utils import format_bytes

    cluster = record.get("cluster") or {}
    if isinstance(cluster.get("memory_limit"), int) and cluster["memory_limit"] > 0:
        cluster = {**cluster, "memory_limit": format_bytes(cluster["memory_limit"])}
    rows = headline(page.run_dir, record)
    rows += [
        ("graph", record.get("graph")),
        ("started", record.get("started")),
        ("wall seconds", record.get("wall_seconds")),
        ("config digest", record.get("config_digest")),
        ("outputs", ", ".join(record.get("outputs", []))),
    ]
    rows += [(f"cluster {k}", v) for k, v in cluster.items() if v not in (None, "", {}, [], 0)]
    table = _table(pd.DataFrame(rows, columns=["", "value"]).astype(str))
    versions = record.get("versions") or {}
    vtable = _table(pd.DataFrame(sorted(versions.items()), columns=["package", "version"])) if versions else ""
    thresholds = record.get("thresholds") or []
    warn = "".join(f"<p class=\"warning\">warning: {_esc(t.get('message', t))}</p>" for t in thresholds)
    warn += "".join(f"<p class=\"note\">note: {_esc(line)}</p>" for line in record.get("notes") or [])
    page.section("summary", "Run summary", warn, table,
                 f"<details><summary>Versions</summary>{vtable}</details>" if vtable else "")


def headline(run_dir: Path, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The few figures a reader wants first, from whichever result files the run has."""
    rows: list[tuple[str, Any]] = []
    summary = _read(run_dir, "summary.parquet")
    if summary is not None and not summary.empty:
        rows.append(("symbols", f"{len(summary)} ({int(summary['rows'].sum())} bars)"))
    folds = _read(run_dir, "folds.parquet")
    if folds is not None and "curve" in folds:
        portfolio = folds[folds["curve"] == "portfolio"]
        if not portfolio.empty:
            rows.append(("folds", len(portfolio)))
            for metric in ("sharpe", "total_return", "excess_return", "max_drawdown"):
                if metric in portfolio:
                    rows.append((f"portfolio {metric} (mean over folds)", f"{portfolio[metric].mean():.4g}"))
    equity = _read(run_dir, "equity.parquet")
    if equity is not None and not equity.empty:
        curve = chain_equity(equity).get("portfolio")
        if curve is not None and curve.notna().any():
            curve = curve.dropna()
            rows.append(("portfolio equity, folds chained", f"{curve.iloc[-1]:.4g} "
                         f"(max drawdown {float((curve / curve.cummax() - 1).min()):.2%})"))
    best = run_dir / "best_params.json"
    if best.is_file():
        found = json.loads(best.read_text())
        rows.append(("best trial", f"{found.get('trial')}: {found.get('metric')} = {found.get('value')}"))
    waves = _read(run_dir, "waves.parquet")
    if waves is not None:
        best_score = f", best score {waves['score'].max():.3f}" if len(waves) else ""
        rows.append(("wave patterns", f"{len(waves)} in {waves['symbol'].nunique() if len(waves) else 0} symbols"
                     f"{best_score}"))
    thresholds = record.get("thresholds") or []
    rows.append(("monitor thresholds", f"{len(thresholds)} crossed" if thresholds else "none crossed"))
    return rows


def data_section(page: _Page, record: dict[str, Any]) -> None:
    """``summary.parquet``: the per-symbol data summary of a ``datacheck`` (or ``research``) run."""
    summary = _read(page.run_dir, "summary.parquet")
    if summary is None or summary.empty:
        return
    table = summary.copy()
    for column in ("first", "last"):
        if column in table and pd.api.types.is_datetime64_any_dtype(table[column]):
            table[column] = table[column].dt.strftime("%Y-%m-%d %H:%M")
    page.section("data", "Data summary", _table(table))


def config_section(page: _Page, record: dict[str, Any]) -> None:
    """The resolved ``config.yaml``, folded away: it repeats the run."""
    config = page.run_dir / "config.yaml"
    if config.is_file():
        page.section("config", "Resolved config",
                     "<p>The run repeats with <code>dask-pipeline run config.yaml</code>.</p>"
                     f"<details><summary>config.yaml</summary><pre>{_esc(config.read_text())}</pre></details>")


def stages_section(page: _Page, record: dict[str, Any]) -> None:
    """Per stage: tasks, wall and summed compute seconds as a bar chart; the whole stage table."""
    from dask.utils import format_bytes

    stages = record.get("stages") or {}
    if not stages:
        return
    frame = pd.DataFrame.from_dict(stages, orient="index")
    frame.index.name = "stage"
    frame = frame.reset_index()
    cols = [c for c in ("stage", "tasks", "wall_seconds", "compute_seconds", "share", "transfer_bytes",
                        "peak_worker_memory") if c in frame]
    frame = frame[cols]
    table = frame.copy()
    if "share" in table:
        table["share"] = table["share"].map(lambda v: f"{v:.1%}")
    for column in ("transfer_bytes", "peak_worker_memory"):
        if column in table:
            table[column] = table[column].map(lambda v: "" if pd.isna(v) else format_bytes(int(v)))

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(frame))
        ax.barh(y - 0.2, frame["wall_seconds"], height=0.4, label="wall (first start to last stop)")
        ax.barh(y + 0.2, frame["compute_seconds"], height=0.4, label="compute (summed over tasks)")
        ax.set_yticks(y, [f"{s} ({n})" for s, n in zip(frame["stage"], frame["tasks"])])
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title("Time per stage (task count in brackets)")
        ax.legend(loc="lower right")

    page.section("stages", "Stage timings", page.figure("stages", draw, (10, 0.5 * len(frame) + 1.5)), _table(table))


def chain_equity(equity: pd.DataFrame, column: str = "equity") -> pd.DataFrame:
    """One continuous curve per ``curve``: each fold's equity (starting from 1) compounded on the last.

    Parameters
    ----------
    equity
        ``equity.parquet``: long format with ``fold``, ``curve``, ``timestamp`` and ``column``.
    column
        ``equity`` (the strategy) or ``buy_and_hold`` (its benchmark).

    Returns
    -------
    DataFrame
        ``timestamp`` index, one column per curve, and the chained equity as values; NaN
        where a curve has no bar (a symbol before it lists, after it delists, on another
        symbol's calendar, in folds it sat out).
    """
    chained = []
    for curve, part in equity.groupby("curve", sort=True):
        part = part.sort_values(["fold", "timestamp"])
        ends = part.groupby("fold", sort=True)[column].last()
        # Each fold restarts at 1: scale it by the product of the earlier folds' final equity.
        base = ends.cumprod().shift(1, fill_value=1.0)
        values = part[column].to_numpy() * part["fold"].map(base).to_numpy()
        series = pd.Series(values, index=pd.DatetimeIndex(part["timestamp"]), name=str(curve))
        # A fold closes its positions on the bar where the next one opens: one instant, and
        # the later fold's row (scaled by the earlier's final equity) holds both.
        chained.append(series[~series.index.duplicated(keep="last")])
    return pd.concat(chained, axis=1, sort=True)


def equity_section(page: _Page, record: dict[str, Any]) -> None:
    """Portfolio and per-symbol equity curves over all test windows, beside buy-and-hold, with drawdowns."""
    equity = _read(page.run_dir, "equity.parquet")
    if equity is None or equity.empty:
        return
    curves = chain_equity(equity)
    held = chain_equity(equity, "buy_and_hold") if "buy_and_hold" in equity else None
    portfolio = curves["portfolio"].dropna() if "portfolio" in curves else None
    symbols = curves.drop(columns=["portfolio"], errors="ignore")
    blocks = []
    if portfolio is not None:
        def draw_portfolio(fig: Any) -> None:
            top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            top.plot(portfolio.index, portfolio.to_numpy(), color="C0", label="strategy")
            if held is not None:
                benchmark = held["portfolio"].dropna()
                top.plot(benchmark.index, benchmark.to_numpy(), color="#777", lw=1, ls="--",
                         label="buy-and-hold (equal weight)")
                top.legend(loc="best")
            top.axhline(1.0, color="#999", lw=0.8)
            top.set_ylabel("equity")
            top.set_title("Portfolio equity, test windows chained fold by fold")
            drawdown = portfolio / portfolio.cummax() - 1
            bottom.fill_between(drawdown.index, drawdown.to_numpy(), 0, color="C3", alpha=0.5)
            bottom.set_ylabel("drawdown")

        blocks.append(page.figure("equity-portfolio", draw_portfolio, (10, 5)))
    if not symbols.empty:
        labelled = symbols.shape[1] <= MAX_LABELLED_CURVES

        def draw_symbols(fig: Any) -> None:
            top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            for i, name in enumerate(symbols):
                # Each line starts and ends where its symbol does: only its own bars.
                series = symbols[name].dropna()
                top.plot(series.index, series.to_numpy(), lw=0.9, color=f"C{i % 10}", label=name)
                if held is not None and labelled and name in held:
                    benchmark = held[name].dropna()
                    top.plot(benchmark.index, benchmark.to_numpy(), lw=0.7, ls=":", color=f"C{i % 10}")
                bottom.plot(series.index, (series / series.cummax() - 1).to_numpy(), lw=0.7, color=f"C{i % 10}")
            top.axhline(1.0, color="#999", lw=0.8)
            top.set_ylabel("equity")
            top.set_title("Per-symbol equity (dotted: buy-and-hold)" if held is not None and labelled
                          else "Per-symbol equity")
            if labelled:
                top.legend(ncol=4, fontsize="small")
            bottom.set_ylabel("drawdown")

        blocks.append(page.figure("equity-symbols", draw_symbols, (10, 5)))
    rows = []
    for name in curves:
        series = curves[name].dropna()
        row = {"curve": name, "first": series.index[0], "last": series.index[-1], "final equity": series.iloc[-1],
               "max drawdown": float((series / series.cummax() - 1).min())}
        if held is not None and name in held and held[name].notna().any():
            row["buy-and-hold final equity"] = held[name].dropna().iloc[-1]
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("first", "last"):
        table[column] = table[column].map(when)
    page.section("equity", "Equity curves", *blocks, _table(table))


FOLD_COLUMNS = ["fold", "test_start", "test_end", "symbols", "n_test", "periods_per_year", "total_return", "cagr",
                "volatility", "sharpe", "sortino", "max_drawdown", "hit_rate", "trades", "turnover", "exposure",
                "buy_and_hold_return", "excess_return", "information_ratio", "note"]
MAX_SAT_OUT_ROWS = 40


def folds_section(page: _Page, record: dict[str, Any]) -> None:
    """Portfolio metrics per fold: a table and a bar chart of the Sharpe ratio."""
    folds = _read(page.run_dir, "folds.parquet")
    if folds is None or folds.empty or "curve" not in folds:
        return
    portfolio = folds[folds["curve"] == "portfolio"].sort_values("fold")
    if portfolio.empty:
        return
    symbols = folds[folds["curve"] != "portfolio"]
    if "status" in symbols:
        traded = symbols[symbols["status"] == "traded"].groupby("fold")["curve"].count()
        portfolio = portfolio.assign(symbols=portfolio["fold"].map(traded).fillna(0).astype(int))
    table = portfolio[[c for c in FOLD_COLUMNS if c in portfolio]].copy()
    for column in ("test_start", "test_end"):
        if column in table:
            table[column] = table[column].map(when)
    blocks = []
    if "sharpe" in portfolio:
        def draw(fig: Any) -> None:
            ax = fig.add_subplot()
            sharpe = portfolio["sharpe"].to_numpy()
            ax.bar(portfolio["fold"].astype(str), sharpe, color=np.where(sharpe >= 0, "C2", "C3"))
            ax.axhline(float(np.nanmean(sharpe)), color="#555", ls="--", lw=1, label=f"mean {np.nanmean(sharpe):.2f}")
            ax.set_xlabel("fold")
            ax.set_ylabel("Sharpe")
            ax.set_title("Portfolio Sharpe ratio per fold (test window)")
            ax.legend()

        blocks.append(page.figure("folds-sharpe", draw))
    page.section("folds", "Per-fold metrics (portfolio)", *blocks, _table(table), _sat_out(symbols))


def _sat_out(symbols: pd.DataFrame) -> str:
    """Which folds each symbol sat out and why (``status`` of ``folds.parquet``), or that none did."""
    if "status" not in symbols:
        return ""
    out = symbols[symbols["status"] != "traded"].sort_values(["curve", "fold"])
    n_symbols = symbols["curve"].nunique()
    if out.empty:
        return f"<p>Every one of the {n_symbols} symbols traded in every fold.</p>"
    rows = []
    for symbol, part in out.groupby("curve", sort=True):
        reasons = part.drop_duplicates("note")
        rows.append({"symbol": symbol, "folds sat out": ", ".join(str(f) for f in part["fold"]),
                     "why": "; ".join(f"fold {f}: {n}" for f, n in zip(reasons["fold"], reasons["note"]))})
    table = pd.DataFrame(rows)
    more = (f'<p class="note">... and {len(table) - MAX_SAT_OUT_ROWS} more symbols</p>'
            if len(table) > MAX_SAT_OUT_ROWS else "")
    traded_all = n_symbols - len(table)
    return (f"<h3>Symbols sitting folds out</h3><p>{traded_all} of {n_symbols} symbols traded in every fold; "
            "a symbol sits a fold out without bars in its test window or with too little history before it.</p>"
            + _table(table.head(MAX_SAT_OUT_ROWS)) + more)


def importances_section(page: _Page, record: dict[str, Any]) -> None:
    """The top features by importance, averaged over folds (and models)."""
    imp = _read(page.run_dir, "importances.parquet")
    if imp is None or imp.empty:
        return
    mean = imp.groupby("feature")["importance"].agg(["mean", "std"]).sort_values("mean", ascending=False)
    top = mean.head(TOP_IMPORTANCES)
    methods = ", ".join(sorted(imp["method"].astype(str).unique())) if "method" in imp else "?"

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        y = np.arange(len(top))
        ax.barh(y, top["mean"], xerr=top["std"].fillna(0), color="C0", ecolor="#888")
        ax.set_yticks(y, top.index)
        ax.invert_yaxis()
        ax.set_xlabel(f"importance ({methods}), mean over folds")
        ax.set_title(f"Top {len(top)} features")

    table = top.reset_index().rename(columns={"mean": "mean importance", "std": "std over folds"})
    page.section("importances", "Feature importances",
                 page.figure("importances", draw, (10, 0.3 * len(top) + 1.5)), _table(table))


OPTUNA_PLOTS = {"param_importances": "Parameter importances (fANOVA)", "parallel_coordinate": "Parallel coordinates"}


def optuna_section(page: _Page, record: dict[str, Any]) -> None:
    """Optuna history from ``trials.parquet``, the best parameters, and the study's importance and
    parallel-coordinate plots (``plots/``, also copied to ``figures/``)."""
    trials = _read(page.run_dir, "trials.parquet")
    best_path = page.run_dir / "best_params.json"
    best = json.loads(best_path.read_text()) if best_path.is_file() else None
    # Optuna's own history plot repeats the one drawn here from trials.parquet.
    plots = sorted(p for p in (page.run_dir / "plots").glob("*.png") if p.stem != "optimization_history") \
        if (page.run_dir / "plots").is_dir() else []
    if trials is None and best is None and not plots:
        return
    blocks = []
    if trials is not None and not trials.empty:
        values = [c for c in trials.columns if c == "value" or c.startswith("value_")]
        direction = (best or {}).get("direction", "maximize")

        def draw(fig: Any) -> None:
            ax = fig.add_subplot()
            for i, column in enumerate(values):
                done = trials[["number", column]].dropna()
                ax.scatter(done["number"], done[column], s=14, color=f"C{i}", label=column)
                if column == "value" and isinstance(direction, str):
                    running = done[column].cummax() if direction == "maximize" else done[column].cummin()
                    ax.step(done["number"], running, where="post", color="C3", label=f"best so far ({direction})")
            ax.set_xlabel("trial")
            ax.set_ylabel("objective")
            ax.set_title("Optimisation history (complete trials)")
            if values:
                ax.legend()

        blocks.append(page.figure("optuna-history", draw))
        states = trials["state"].value_counts() if "state" in trials else pd.Series(dtype=int)
        blocks.append("<p>" + ", ".join(f"{_esc(k)}: {v}" for k, v in states.items()) + "</p>")
        shown = [c for c in trials.columns if c in ("number", "state", "duration") or c in values
                 or c.startswith("params_")]
        order = values[0] if values else "number"
        top = trials[shown].sort_values(order, ascending=direction != "maximize", na_position="last").head(20)
        blocks.append("<h3>Best trials</h3>" + _table(top))
    if best is not None:
        params = pd.DataFrame(sorted((best.get("params") or {}).items()), columns=["parameter", "value"]).astype(str)
        blocks.append(f"<h3>Best parameters (trial {_esc(best.get('trial'))}, value {_esc(best.get('value'))})</h3>"
                      + _table(params))
    for plot in plots:
        title = OPTUNA_PLOTS.get(plot.stem, plot.stem.replace("_", " "))
        blocks.append(f"<h3>{_esc(title)}</h3>" + page.image(f"optuna-{plot.stem}", plot.read_bytes()))
    page.section("optuna", "Optuna study", *blocks)


WAVE_COLUMNS = ["symbol", "direction", "window", "t0", "t5", "p0", "p5", "wave2_score", "wave3_score",
                "wave4_score", "wave5_score", "time_score", "score"]


def waves_section(page: _Page, record: dict[str, Any]) -> None:
    """The top-scoring impulse patterns, and for the best symbols their price with the pivots 0-5."""
    waves = _read(page.run_dir, "waves.parquet")
    if waves is None or waves.empty:
        return
    ranked = waves.sort_values("score", ascending=False, kind="stable")
    table = ranked[[c for c in WAVE_COLUMNS if c in ranked]].head(TOP_PATTERNS).copy()
    for column in ("t0", "t5"):
        if column in table:
            table[column] = table[column].dt.strftime("%Y-%m-%d")
    blocks = [f"<h3>Top {len(table)} patterns by score</h3>" + _table(table)]
    best_per_symbol = ranked.drop_duplicates("symbol").head(TOP_WAVE_SYMBOLS)
    data = _data_config(page.run_dir)
    for _, pattern in best_per_symbol.iterrows():
        symbol = str(pattern["symbol"])
        bars = _bars(data, symbol)
        if bars is None:
            blocks.append(f'<p class="note">{_esc(symbol)}: bars not found under the config\'s data.root</p>')
            continue
        blocks.append(page.figure(f"waves-{symbol}", _draw_impulse(symbol, bars["close"], pattern)))
    page.section("waves", "Elliott-wave patterns", *blocks)


def _draw_impulse(symbol: str, close: pd.Series, pattern: pd.Series) -> Callable[[Any], None]:
    times = [pattern[f"t{i}"] for i in range(6)]
    prices = [float(pattern[f"p{i}"]) for i in range(6)]

    # The pattern with as much context on each side as it lasts: a decade of bars would
    # squeeze a three-month impulse into a few pixels.
    span = times[-1] - times[0]
    shown = close[(close.index >= times[0] - span) & (close.index <= times[-1] + span)]

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.plot(shown.index, shown.to_numpy(), color="#666", lw=0.8, label="close")
        ax.margins(y=0.12)  # room for the labels above the highest and below the lowest pivot
        ax.plot(times, prices, color="C1", lw=1.8, marker="o", label=f"{pattern['direction']} impulse")
        up = pattern["direction"] == "up"
        for i, (t, p) in enumerate(zip(times, prices)):
            # Peaks of an up impulse are the odd pivots: label them above, troughs below.
            above = (i % 2 == 1) == up
            ax.annotate(str(i), (t, p), textcoords="offset points", xytext=(0, 8 if above else -14),
                        ha="center", fontweight="bold", color="C1")
        ax.set_title(f"{symbol}: best impulse, score {float(pattern['score']):.3f}")
        ax.set_ylabel("close")
        ax.legend(loc="best")

    return draw


def _data_config(run_dir: Path) -> dict[str, Any]:
    # The report reads the run's own record of where its bars were; a config that no
    # longer loads (moved presets, a newer schema) must not stop the report.
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    except yaml.YAMLError:
        return {}


def _bars(data: dict[str, Any], symbol: str) -> pd.DataFrame | None:
    from dask_pipeline.data import load_bars
    from dask_pipeline.data.store import partition_name

    root = data.get("root")
    if not root or not (Path(root) / partition_name(symbol)).exists():  # percent-encoded: ^GSPC -> %5EGSPC
        return None
    start, end = data.get("start"), data.get("end")
    return load_bars(root, symbol, None if start is None else str(start), None if end is None else str(end),
                     columns=["close"], dtype="float64")


#: Output files the sections above show (or that are the run's record): the generic section skips them.
SHOWN_OUTPUTS = {"summary.parquet", "folds.parquet", "predictions.parquet", "equity.parquet", "importances.parquet",
                 "trials.parquet", "best_params.json", "best_config.yaml", "waves.parquet"}
GENERIC_ROWS = 10
GENERIC_TEXT = 4000


def outputs_section(page: _Page, record: dict[str, Any]) -> None:
    """Every other graph output (a user graph's): its size, first and last rows, a line chart when time-indexed.

    A frame is time-indexed when its index, or a ``timestamp`` column, holds datetimes; its
    numeric columns are drawn against time (a legend up to ``MAX_LABELLED_CURVES``). JSON
    and text outputs are shown as text, cut at ``GENERIC_TEXT`` characters.
    """
    names = [n for n in record.get("outputs", []) if n not in SHOWN_OUTPUTS and (page.run_dir / n).is_file()]
    blocks = []
    for name in names:
        path = page.run_dir / name
        blocks.append(f"<h3>{_esc(name)}</h3>")
        if name.endswith(".parquet"):
            blocks.extend(_frame_blocks(page, name.removesuffix(".parquet"), pd.read_parquet(path)))
        else:
            text = path.read_text(errors="replace")
            cut = f"\n... ({len(text) - GENERIC_TEXT} more characters)" if len(text) > GENERIC_TEXT else ""
            blocks.append(f"<pre>{_esc(text[:GENERIC_TEXT] + cut)}</pre>")
    if blocks:
        page.section("outputs", "Other outputs", *blocks)


def _frame_blocks(page: _Page, name: str, frame: pd.DataFrame) -> list[str]:
    blocks = [f"<p class=\"note\">{len(frame)} rows x {frame.shape[1]} columns</p>"]
    series = frame
    if "timestamp" in frame.columns and pd.api.types.is_datetime64_any_dtype(frame["timestamp"]):
        series = frame.set_index("timestamp")
    numeric = series.select_dtypes("number")
    if isinstance(series.index, pd.DatetimeIndex) and not numeric.empty and len(series) > 1 \
            and series.index.is_unique:
        def draw(fig: Any) -> None:
            ax = fig.add_subplot()
            for column in numeric:
                ax.plot(numeric.index, numeric[column].to_numpy(dtype=float), lw=0.9, label=str(column))
            ax.set_title(name)
            if numeric.shape[1] <= MAX_LABELLED_CURVES:
                ax.legend(ncol=4, fontsize="small")

        blocks.append(page.figure(f"output-{name}", draw))
    shown = frame if len(frame) <= 2 * GENERIC_ROWS else pd.concat([frame.head(GENERIC_ROWS), frame.tail(GENERIC_ROWS)])
    index = not isinstance(frame.index, pd.RangeIndex)
    blocks.append(_table(shown, index=index))
    if len(frame) > 2 * GENERIC_ROWS:
        blocks.append(f"<p class=\"note\">first and last {GENERIC_ROWS} rows</p>")
    return blocks


SECTIONS = [summary_section, data_section, equity_section, folds_section, importances_section, optuna_section,
            waves_section, outputs_section, stages_section, config_section]
