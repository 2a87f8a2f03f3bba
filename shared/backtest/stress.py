"""The stress report of a run: how the exits fired, what the limits denied, what the venue refused, and how the hedge
target and the kill-switch recommendation moved, before, inside and after the scenario's window.

The hedge target and the recommendation levels are `shared.domain.hedge` itself (the hedge service's code) applied to
the run's equity samples: NAV is the sample's equity, volatility the EWMA of the first symbol's sampled price.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.backtest.engine import BacktestRun
from shared.backtest.scenarios import Stressed, Window
from shared.domain.hedge import (
    HedgeLevel,
    HedgePolicy,
    VolatilityState,
    drawdown,
    levels_to_raise,
    levels_to_rearm,
    next_peak,
    target_fraction,
    update_volatility,
)
from shared.domain.money import format_decimal

SERIES_POINTS = 500
NOTES_LISTED = 200


def _phase(at: datetime, window: Window | None) -> str:
    if window is None:
        return "run"
    return "before" if at < window.start else "inside" if at < window.end else "after"


def _hedge(run: BacktestRun, policy: HedgePolicy, window: Window | None) -> tuple[dict[str, Any], dict[str, Any]]:
    state: VolatilityState | None = None
    peak: Decimal | None = None
    raised: set[HedgeLevel] = set()
    series: list[dict[str, str]] = []
    transitions: list[dict[str, str]] = []
    by_phase: dict[str, Decimal] = {}
    worst: tuple[Decimal, datetime | None] = (Decimal(-1), None)
    for sample in run.samples:
        price = next((p for p in sample.prices if p is not None and p > 0), None)
        if price is not None:
            state = update_volatility(state, price, sample.at, policy.ewma_lambda)
        peak = next_peak(peak, sample.equity)
        fall = drawdown(peak, sample.equity)
        target = target_fraction(policy, state.volatility if state else Decimal(0), fall)
        phase = _phase(sample.at, window)
        by_phase[phase] = max(by_phase.get(phase, Decimal(0)), target)
        if target > worst[0]:
            worst = (target, sample.at)
        series.append({"at": sample.at.isoformat(), "target": format_decimal(target), "drawdown": format_decimal(fall)})
        for action, levels in (
            ("raised", levels_to_raise(policy, fall, raised)),
            ("rearmed", levels_to_rearm(policy, fall, raised)),
        ):
            for level in levels:
                (raised.add if action == "raised" else raised.discard)(level)
                transitions.append(
                    {
                        "at": sample.at.isoformat(),
                        "level": level.value,
                        "action": action,
                        "drawdown": format_decimal(fall),
                        "phase": phase,
                    }
                )
    step = max(1, len(series) // SERIES_POINTS)
    hedge = {
        "max_target_by_phase": {k: format_decimal(v) for k, v in by_phase.items()},
        "max_target": format_decimal(max(worst[0], Decimal(0))),
        "max_target_at": None if worst[1] is None else worst[1].isoformat(),
        "final_target": series[-1]["target"] if series else None,
        "series": series[::step],
    }
    order = list(HedgeLevel)
    highest = max((order.index(HedgeLevel(t["level"])) for t in transitions if t["action"] == "raised"), default=None)
    kill = {
        "transitions": transitions,
        "highest_level": None if highest is None else order[highest].value,
        "raised_at_end": sorted(level.value for level in raised),
    }
    return hedge, kill


def stress_report(run: BacktestRun, stressed: Stressed | None, policy: HedgePolicy | None = None) -> dict[str, Any]:
    """The stress section of a run's JSON: exits, limits, venue refusals, fee changes, hedge target, kill switch."""
    window = None if stressed is None else stressed.window
    triggered: Counter[str] = Counter()
    filled: Counter[str] = Counter()
    notes: list[dict[str, Any]] = []
    fee_changes: list[dict[str, Any]] = []
    for note in run.notes:
        phase = _phase(note.at, window)
        if note.kind == "ExitTriggered":
            triggered[f"{note.details.get('leg')}:{phase}"] += 1
        elif note.kind == "ExitFilled":
            filled[f"{note.details.get('leg')}:{phase}"] += 1
        elif note.kind == "fee_change":
            fee_changes.append({"at": note.at.isoformat(), **note.details})
        if len(notes) < NOTES_LISTED:
            notes.append({"at": note.at.isoformat(), "kind": note.kind, "phase": phase, **note.details})
    denied: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for order in run.orders:
        key = f"{order.reason}:{_phase(order.submitted_at, window)}"
        if order.status == "denied":
            denied[key] += 1
        elif order.status == "rejected":
            rejected[key] += 1
    hedge, kill = _hedge(run, policy or HedgePolicy(), window)
    return {
        "scenario": None if stressed is None else stressed.describe(),
        "exits": {"triggered": dict(sorted(triggered.items())), "filled": dict(sorted(filled.items()))},
        "limits_denied": dict(sorted(denied.items())),
        "venue_rejected": dict(sorted(rejected.items())),
        "fee_changes": fee_changes,
        "hedge": hedge,
        "kill_switch": kill,
        "notes": notes,
    }


def html_section(report: dict[str, Any]) -> str:
    """The stress report as an HTML section (tables; the hedge target's path is in the JSON)."""

    def table(title: str, counts: dict[str, Any]) -> str:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in counts.items())
        return f"<h3>{html.escape(title)}</h3><table>{rows or '<tr><td>none</td></tr>'}</table>"

    scenario = report.get("scenario") or {}
    hedge = report["hedge"]
    kill = report["kill_switch"]
    transitions = {f"{t['at']} {t['level']}": f"{t['action']} at drawdown {t['drawdown']}" for t in kill["transitions"]}
    return (
        "<h2>Stress</h2>"
        + table("Scenario", dict(scenario))
        + table("Exits triggered (leg:phase)", report["exits"]["triggered"])
        + table("Exits filled (leg:phase)", report["exits"]["filled"])
        + table("Limits denied (reason:phase)", report["limits_denied"])
        + table("Venue rejected (reason:phase)", report["venue_rejected"])
        + table(
            "Hedge target",
            {
                **{f"max {k}": v for k, v in hedge["max_target_by_phase"].items()},
                "max": hedge["max_target"],
                "max at": hedge["max_target_at"],
                "final": hedge["final_target"],
            },
        )
        + table("Kill-switch recommendation", transitions | {"highest level": kill["highest_level"]})
    )
