"""Domain metrics of the risk service: how many accounts sit in each trading state, and the global state.

A count per state, not a series per account: `/metrics` is unauthenticated and the accounts are unbounded, so the
account ids stay behind the authenticated `GET /risk/trading-state`. The counts come from the stored states (one GROUP BY),
at start, after each commit of this process and every `REFRESH_INTERVAL_S` (changes made by another replica).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.risk.repository import RiskRepository
from shared.db import UnitOfWork
from shared.domain.types import TradingState
from shared.observability.metrics import Refresher, gauge

REFRESH_INTERVAL_S = 15.0

ACCOUNTS_IN_STATE = gauge(
    "aether_risk_accounts_in_state",
    "Accounts whose own trading state is `state` (accounts never changed are active and not counted)",
    ["state"],
)
GLOBAL_STATE = gauge("aether_risk_global_trading_state", "1 for the global trading state in force, else 0", ["state"])


class StateMetrics:
    """Keeps the trading-state gauges equal to the stored states."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self.refresher = Refresher(self.refresh, REFRESH_INTERVAL_S)

    async def refresh(self) -> None:
        """Count the stored states and publish them (a state nobody is in reads 0)."""
        async with UnitOfWork(self._sessionmaker) as uow:
            counts = await RiskRepository(uow.session).count_states()
        global_state = next((state for (scope, state) in counts if scope == "global"), TradingState.ACTIVE)
        for state in TradingState:
            ACCOUNTS_IN_STATE.labels(state.value).set(counts.get(("account", state), 0))
            GLOBAL_STATE.labels(state.value).set(1 if state is global_state else 0)
