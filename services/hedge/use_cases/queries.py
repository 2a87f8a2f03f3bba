"""Read models of the hedge service: account status (batched: one query per table for any number of accounts),
override history and the recommendations in force."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import RowMapping

from services.hedge.approval import override_subject_id
from services.hedge.errors import AccountNotTracked
from services.hedge.repository import BalanceRepository, HedgeRepository, StatusQueries
from services.hedge.schemas import (
    HedgeOrderRead,
    HedgeStatus,
    OverrideHistoryRead,
    OverrideRead,
    PendingOverrideRead,
    RecommendationRead,
)
from services.hedge.use_cases.common import HedgeContext, override_active, override_target
from shared.domain.hedge import value_balances

OVERRIDE_FIELDS = ("target_fraction", "reason", "expires_at", "set_by", "set_at")


@dataclass(frozen=True, slots=True)
class _AccountView:
    """Everything the status of one account is made of, read in bulk."""

    row: RowMapping
    override: RowMapping | None
    pending: RowMapping | None
    open_order: RowMapping | None
    policy: RowMapping | None
    hedged: Decimal
    unpriced: list[str]
    recommendations: list[RecommendationRead]


class Queries:
    """What the REST routes read."""

    def __init__(self, context: HedgeContext) -> None:
        self.context = context

    async def status(self, account_id: str) -> HedgeStatus:
        """The account's hedge status (404 when the service does not track it)."""
        statuses = await self.statuses([account_id])
        if not statuses:
            raise AccountNotTracked(f"account {account_id} is not hedged by this service")
        return statuses[0]

    async def statuses(self, account_ids: Sequence[str] | None) -> list[HedgeStatus]:
        """Status of the given tracked accounts (every tracked account for None)."""
        now = self.context.clock()
        async with self.context.reading() as uow:
            repo = HedgeRepository(uow.session)
            rows = await repo.account_rows(account_ids)
            if not rows:
                return []
            ids = [row["account_id"] for row in rows]
            reads = StatusQueries(uow.session)
            prices = await repo.prices()
            active = await repo.active_recommendations(ids)
            overrides = await reads.overrides(ids)
            pending = await reads.pending_overrides(ids)
            open_orders = await reads.open_orders(ids)
            hedged = await reads.hedged_base(ids)
            policies = await reads.policies(ids)
            balances = await BalanceRepository(uow.session).of(ids)
        quote = self.context.settings.quote_asset
        recommendations: dict[str, list[RecommendationRead]] = {}
        for rec in active:
            recommendations.setdefault(rec["account_id"], []).append(RecommendationRead(**rec))
        views = [
            _AccountView(
                row=row,
                override=overrides.get(account_id),
                pending=pending.get(account_id),
                open_order=open_orders.get(account_id),
                policy=policies.get(account_id),
                hedged=hedged.get(account_id, Decimal(0)),
                unpriced=list(value_balances(balances.get(account_id, {}), prices, quote).unpriced),
                recommendations=recommendations.get(account_id, []),
            )
            for row, account_id in zip(rows, ids, strict=True)
        ]
        return [self._status(view, now) for view in views]

    def _status(self, view: _AccountView, now: datetime) -> HedgeStatus:
        row, override, policy = view.row, view.override, view.policy
        override_read = None
        if override is not None:
            override_read = OverrideRead(
                **{key: override[key] for key in OVERRIDE_FIELDS}, active=override_active(override, now)
            )
        fixed = override_target(override, now)
        return HedgeStatus(
            account_id=row["account_id"],
            hedge_symbol=self.context.settings.hedge_symbol,
            nav=row["nav"],
            peak_nav=row["peak_nav"],
            peak_at=row["peak_at"],
            drawdown=row["drawdown"],
            volatility=row["volatility"] if row["evaluated_at"] is not None else None,  # the column's 0 is no estimate
            computed_target=row["computed_target"],
            override=override_read,
            pending_override=_pending_read(view.pending),
            effective_target=row["computed_target"] if fixed is None else fixed,
            current_fraction=row["current_fraction"],
            hedged_quantity=view.hedged,
            rebalance_band=self.context.default_policy.band if policy is None else Decimal(policy["policy"]["band"]),
            policy_version=policy["version"] if policy is not None else 0,
            unpriced_assets=view.unpriced,
            target_version=row["target_version"],
            open_order=HedgeOrderRead(**view.open_order) if view.open_order is not None else None,
            active_recommendations=view.recommendations,
            holdings_at=row["holdings_at"],
            evaluated_at=row["evaluated_at"],
        )

    async def override_history(self, account_id: str, limit: int = 100) -> list[OverrideHistoryRead]:
        """The account's override changes, newest first."""
        async with self.context.reading() as uow:
            rows = await HedgeRepository(uow.session).override_history(account_id, limit)
        return [OverrideHistoryRead(**{key: row[key] for key in OverrideHistoryRead.model_fields}) for row in rows]

    async def active_recommendations(self, account_ids: Sequence[str] | None) -> list[RecommendationRead]:
        """Recommendations raised and not re-armed (for the given accounts, or all)."""
        async with self.context.reading() as uow:
            rows = await HedgeRepository(uow.session).active_recommendations(account_ids)
        return [RecommendationRead(**row) for row in rows]


def _pending_read(row: RowMapping | None) -> PendingOverrideRead | None:
    if row is None:
        return None
    return PendingOverrideRead(
        subject_id=override_subject_id(row["account_id"], row["id"]),
        target_fraction=row["target_fraction"],
        reason=row["reason"],
        expires_at=row["expires_at"],
        requested_by=row["actor"],
        requested_at=row["occurred_at"],
    )
