"""A run's figures (PnL, returns, Sharpe, Sortino, max drawdown, Calmar, turnover, fees, exposure, trade list), as JSON
and as a self-contained HTML report with plots (equity, drawdown, positions, fills on price).

Money (PnL, fees, drawdown, notional) stays Decimal and is written as decimal strings; ratios are floats. Returns are
taken between consecutive equity samples (`BacktestConfig.sample_every`) and annualized by their median spacing.
"""

from __future__ import annotations

import html
import io
import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from shared.backtest.bars import EPOCH
from shared.backtest.engine import BacktestRun
from shared.domain.money import format_decimal

YEAR = timedelta(days=365)
PLOT_POINTS = 2000
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Drawdown:
    """The deepest fall of equity from a previous peak: in quote and as a fraction of that peak."""

    amount: Decimal
    fraction: Decimal


def max_drawdown(equity: list[Decimal]) -> Drawdown:
    """Peak-to-trough fall of an equity series (zero for a series that never falls)."""
    peak: Decimal | None = None
    worst = Drawdown(ZERO, ZERO)
    for value in equity:
        if peak is None or value > peak:
            peak = value
        fall = peak - value
        if fall > worst.amount:
            worst = Drawdown(fall, fall / peak if peak > 0 else ZERO)
    return worst


def _ratio(mean: float, deviation: float, periods_per_year: float) -> float | None:
    if deviation <= 0 or not math.isfinite(deviation):
        return None
    return mean / deviation * math.sqrt(periods_per_year)


def metrics(run: BacktestRun) -> dict[str, Any]:
    """The run's figures as a JSON-ready mapping (money as decimal strings)."""
    equity = [sample.equity for sample in run.samples]
    final = equity[-1] if equity else run.initial_equity
    pnl = final - run.initial_equity
    fees = sum((fill.fee for fill in run.fills), ZERO)
    notional = sum((fill.quantity * fill.price for fill in run.fills), ZERO)
    drawdown = max_drawdown(equity)
    returns = [float(b / a - 1) for a, b in pairwise(equity) if a > 0]
    spacings = [(b.at - a.at).total_seconds() for a, b in pairwise(run.samples)]
    spacing = statistics.median([s for s in spacings if s > 0] or [0.0])
    periods_per_year = YEAR.total_seconds() / spacing if spacing > 0 else 0.0
    sharpe = sortino = None
    if len(returns) >= 2 and periods_per_year > 0:
        mean = statistics.fmean(returns)
        sharpe = _ratio(mean, statistics.stdev(returns), periods_per_year)
        sortino = _ratio(mean, math.sqrt(statistics.fmean([min(r, 0.0) ** 2 for r in returns])), periods_per_year)
    duration = (run.samples[-1].at - run.samples[0].at).total_seconds() if run.samples else 0.0
    total_return = float(final / run.initial_equity - 1) if run.initial_equity > 0 else 0.0
    annual = None
    if duration > 0 and total_return > -1:
        try:
            annual = (1 + total_return) ** (YEAR.total_seconds() / duration) - 1
        except OverflowError:  # a few seconds of data compounded over a year: not a meaningful figure
            annual = None
    calmar = annual / float(drawdown.fraction) if annual is not None and drawdown.fraction > 0 else None
    exposed = 0
    gross: list[float] = []
    for sample in run.samples:
        held = sum(
            (abs(q) * p for q, p in zip(sample.positions, sample.prices, strict=True) if q and p is not None), ZERO
        )
        exposed += held > 0
        gross.append(float(held / sample.equity) if sample.equity > 0 else 0.0)
    return {
        "strategy": run.strategy,
        "params": {name: format_decimal(value) for name, value in run.params.items()},
        "seed": run.seed,
        "quote": run.quote,
        "symbols": list(run.symbols),
        "start": run.started_at.isoformat() if run.started_at else None,
        "end": run.ended_at.isoformat() if run.ended_at else None,
        "events": run.events,
        "rejected_market_data": run.rejected_market_data,
        "initial_equity": format_decimal(run.initial_equity),
        "final_equity": format_decimal(final),
        "pnl": format_decimal(pnl),
        "total_return": total_return,
        "annualized_return": annual,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown": format_decimal(drawdown.amount),
        "max_drawdown_fraction": float(drawdown.fraction),
        "calmar": calmar,
        "fees": format_decimal(fees),
        "traded_notional": format_decimal(notional),
        "turnover": float(notional / run.initial_equity) if run.initial_equity > 0 else None,
        "exposure_time_fraction": exposed / len(run.samples) if run.samples else 0.0,
        "average_gross_exposure": statistics.fmean(gross) if gross else 0.0,
        "fills": len(run.fills),
        "orders": len(run.orders),
    }


def to_json(run: BacktestRun) -> dict[str, Any]:
    """Metrics, trade list, orders and the equity curve: everything the HTML report shows, as JSON data."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else format_decimal(value)

    return {
        "metrics": metrics(run),
        "trades": [
            {
                "order_id": f.order_id,
                "trade_id": f.trade_id,
                "symbol": f.symbol,
                "side": f.side.value,
                "quantity": format_decimal(f.quantity),
                "price": format_decimal(f.price),
                "fee": format_decimal(f.fee),
                "liquidity": f.liquidity.value,
                "at": f.at.isoformat(),
            }
            for f in run.fills
        ],
        "orders": [
            {
                "order_id": o.order_id,
                "symbol": o.symbol,
                "side": o.side.value,
                "type": o.type.value,
                "quantity": format_decimal(o.quantity),
                "limit_price": text(o.limit_price),
                "submitted_at": o.submitted_at.isoformat(),
                "status": o.status,
                "filled": format_decimal(o.filled),
                "reason": o.reason,
            }
            for o in run.orders
        ],
        "equity": [
            {
                "at": s.at.isoformat(),
                "equity": format_decimal(s.equity),
                "positions": dict(zip(run.symbols, (format_decimal(q) for q in s.positions), strict=True)),
                "prices": dict(zip(run.symbols, (text(p) for p in s.prices), strict=True)),
            }
            for s in run.samples
        ],
    }


def _days(at: datetime) -> float:
    """Matplotlib's date number (days since its default epoch, 1970-01-01 UTC)."""
    return (at - EPOCH).total_seconds() / 86_400


def _svg(figure: Any) -> str:
    for axis in figure.axes:
        axis.xaxis_date()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def html_report(run: BacktestRun, data: Mapping[str, Any] | None = None, extra: str = "") -> str:
    """A self-contained HTML page: the figures, plots as inline SVG (matplotlib) and the trade list."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    data = data or to_json(run)
    samples = run.samples[:: max(1, len(run.samples) // PLOT_POINTS)]  # plots stay small on long runs
    times = [_days(s.at) for s in samples]
    equity = [float(s.equity) for s in samples]
    peaks = _running_max(equity)
    figures: list[tuple[str, str]] = []

    figure, axis = pyplot.subplots(figsize=(10, 3))
    axis.plot(times, equity, linewidth=1)
    axis.set_ylabel(f"equity ({run.quote})")
    figures.append(("Equity", _svg(figure)))
    pyplot.close(figure)

    figure, axis = pyplot.subplots(figsize=(10, 2.5))
    axis.fill_between(times, [e - p for e, p in zip(equity, peaks, strict=True)], 0, color="tab:red", alpha=0.5)
    axis.set_ylabel("drawdown")
    figures.append(("Drawdown", _svg(figure)))
    pyplot.close(figure)

    for index, symbol in enumerate(run.symbols):
        figure, axis = pyplot.subplots(figsize=(10, 2.5))
        axis.step(times, [float(s.positions[index]) for s in samples], where="post", linewidth=1)
        axis.set_ylabel(f"{symbol} position")
        figures.append((f"Position {symbol}", _svg(figure)))
        pyplot.close(figure)

        figure, axis = pyplot.subplots(figsize=(10, 3))
        priced = [(s.at, float(p)) for s in samples if (p := s.prices[index]) is not None]
        axis.plot([_days(t) for t, _ in priced], [p for _, p in priced], linewidth=1, color="grey")
        for side, marker, colour in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
            fills = [f for f in run.fills if f.symbol == symbol and f.side.value == side]
            axis.scatter(
                [_days(f.at) for f in fills],
                [float(f.price) for f in fills],
                marker=marker,
                color=colour,
                s=20,
            )
        axis.set_ylabel(f"{symbol} price, fills")
        figures.append((f"Fills on price {symbol}", _svg(figure)))
        pyplot.close(figure)

    metrics_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in data["metrics"].items()
    )
    trade_rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(t[k]))}</td>"
            for k in ("at", "symbol", "side", "quantity", "price", "fee", "liquidity", "order_id")
        )
        + "</tr>"
        for t in data["trades"][:5000]
    )
    plots = "".join(f"<h2>{html.escape(title)}</h2>{svg}" for title, svg in figures)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Backtest {html.escape(run.strategy)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<h1>Backtest: {html.escape(run.strategy)}</h1><table>{metrics_rows}</table>{plots}"
        "<h2>Trades</h2><table><tr><th>at</th><th>symbol</th><th>side</th><th>quantity</th><th>price</th>"
        f"<th>fee</th><th>liquidity</th><th>order</th></tr>{trade_rows}</table>{extra}</body></html>"
    )


def _running_max(values: list[float]) -> list[float]:
    peaks: list[float] = []
    peak = -math.inf
    for value in values:
        peak = max(peak, value)
        peaks.append(peak)
    return peaks


def write_reports(
    run: BacktestRun, directory: Path, *, stress: Mapping[str, Any] | None = None, stress_html: str = ""
) -> tuple[Path, Path]:
    """Write `result.json` and `report.html` into `directory` (created), with the stress report when given."""
    directory.mkdir(parents=True, exist_ok=True)
    data = to_json(run)
    if stress is not None:
        data["stress"] = stress
    json_path, html_path = directory / "result.json", directory / "report.html"
    json_path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    html_path.write_text(html_report(run, data, stress_html), encoding="utf-8")
    return json_path, html_path
