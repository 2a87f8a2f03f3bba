"""Domain metrics of the hedge service (registered once on the process registry).

`/metrics` is unauthenticated, so no metric carries an account id: per-account figures are read through the
authenticated `/hedge/status`; here only the worst value across the accounts this process evaluates.
"""

from __future__ import annotations

from prometheus_client import Gauge

from shared.observability.metrics import counter, gauge

RECOMMENDATIONS_RAISED = counter(
    "aether_hedge_recommendations_raised_total", "Kill-switch recommendations raised, by level", ["level"]
)
RECOMMENDATIONS_REARMED = counter(
    "aether_hedge_recommendations_rearmed_total", "Recommendations re-armed, automatically or by hand", ["how"]
)
HEDGE_ORDERS = counter("aether_hedge_orders_total", "Hedge orders sent to the OMS, by side", ["side"])


class WorstOf:
    """A gauge holding the largest of the latest per-account values (the ids stay in this process)."""

    def __init__(self, metric: Gauge) -> None:
        self._metric = metric
        self._latest: dict[str, float] = {}

    def set(self, account_id: str, value: float) -> None:
        """Record `account_id`'s latest value and publish the largest."""
        self._latest[account_id] = value
        self._metric.set(max(self._latest.values()))


DRAWDOWN_MAX = WorstOf(gauge("aether_hedge_drawdown_max_ratio", "Largest drawdown of account NAV from its peak"))
EFFECTIVE_TARGET_MAX = WorstOf(
    gauge("aether_hedge_effective_target_max_ratio", "Largest target hedge fraction in force (override or computed)")
)
