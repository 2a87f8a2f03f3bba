"""Domain metrics of the hedge service (registered once on the process registry)."""

from __future__ import annotations

from shared.observability.metrics import counter, gauge

RECOMMENDATIONS_RAISED = counter(
    "aether_hedge_recommendations_raised_total", "Kill-switch recommendations raised, by level", ["level"]
)
RECOMMENDATIONS_REARMED = counter(
    "aether_hedge_recommendations_rearmed_total", "Recommendations re-armed, automatically or by hand", ["how"]
)
HEDGE_ORDERS = counter("aether_hedge_orders_total", "Hedge orders sent to the OMS, by side", ["side"])
DRAWDOWN = gauge("aether_hedge_drawdown_ratio", "Drawdown of account NAV from its peak", ["account_id"])
EFFECTIVE_TARGET = gauge(
    "aether_hedge_effective_target_ratio", "Target hedge fraction in force (override or computed)", ["account_id"]
)
