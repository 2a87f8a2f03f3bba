"""Domain metrics of the hedge service (registered once on the process registry).

`/metrics` is unauthenticated, so no metric carries an account id: per-account figures are read through the
authenticated `/hedge/status`; here only the worst value across the accounts this process evaluates.
"""

from __future__ import annotations

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hedge.repository import HedgeRepository
from shared.db import UnitOfWork
from shared.domain.hedge import HedgeLevel
from shared.observability.metrics import Refresher, counter, gauge

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

OPEN_RECOMMENDATIONS = gauge(
    "aether_hedge_open_recommendations",
    "Kill-switch recommendations raised and not re-armed, by level (counted from the stored rows)",
    ["level"],
)
REFRESH_INTERVAL_S = 15.0


class OpenRecommendations:
    """Keeps aether_hedge_open_recommendations equal to the stored rows (at start, after commits, every 15 s)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self.refresher = Refresher(self.refresh, REFRESH_INTERVAL_S)

    async def refresh(self) -> None:
        """Count the open recommendations per level (a level with none reads 0)."""
        async with UnitOfWork(self._sessionmaker) as uow:
            counts = await HedgeRepository(uow.session).count_open_recommendations()
        for level in HedgeLevel:
            OPEN_RECOMMENDATIONS.labels(level.value).set(counts.get(level.value, 0))
