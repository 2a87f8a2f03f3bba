"""Every SQL statement of the hedge service (schema `hedge`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.base import NAMING_CONVENTION, Money
from shared.domain.ledger import Balance
from shared.domain.types import Asset

SCHEMA = "hedge"
PENDING_APPROVAL = "pending_approval"  # override history action of an override waiting for a director
APPROVAL_REQUESTED = "approval_requested"  # the same row once the decision arrived (its own row follows)
TS = sa.DateTime(timezone=True)

metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("holdings_at", TS, nullable=True),
    sa.Column("nav", Money, nullable=True),
    sa.Column("peak_nav", Money, nullable=True),
    sa.Column("peak_at", TS, nullable=True),
    sa.Column("drawdown", Money, nullable=False),
    sa.Column("volatility", Money, nullable=False),
    sa.Column("current_fraction", Money, nullable=True),
    sa.Column("computed_target", Money, nullable=True),
    sa.Column("effective_target", Money, nullable=True),
    sa.Column("target_version", sa.Integer, nullable=False),
    sa.Column("evaluated_at", TS, nullable=True),
    sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
)
nav_history = sa.Table(
    "nav_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("nav", Money, nullable=False),
    sa.Column("peak_nav", Money, nullable=False),
    sa.Column("observed_at", TS, nullable=False),
)
volatility = sa.Table(
    "volatility",
    metadata,
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("last_price", Money, nullable=False),
    sa.Column("variance", Money, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("sampled_at", TS, nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("priced_at", TS, nullable=False),
)
overrides = sa.Table(
    "overrides",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("target_fraction", Money, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("set_at", TS, nullable=False),
)
override_history = sa.Table(
    "override_history",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target_fraction", Money, nullable=True),
    sa.Column("previous_fraction", Money, nullable=True),
    sa.Column("previous_expires_at", TS, nullable=True),
    sa.Column("expires_at", TS, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
)
recommendations = sa.Table(
    "recommendations",
    metadata,
    sa.Column("recommendation_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("drawdown", Money, nullable=False),
    sa.Column("threshold", Money, nullable=False),
    sa.Column("raised_at", TS, nullable=False),
    sa.Column("rearmed_at", TS, nullable=True),
    sa.Column("rearmed_by", sa.Text, nullable=True),
    sa.Column("rearm_reason", sa.Text, nullable=True),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("client_order_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("target_version", sa.Integer, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.Column("quantity", Money, nullable=False),
    sa.Column("from_fraction", Money, nullable=False),
    sa.Column("to_fraction", Money, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("filled_quantity", Money, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("settled_at", TS, nullable=True),
)
balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text, primary_key=True),
    sa.Column("total", Money, nullable=False),
    sa.Column("reserved", Money, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("changed_at", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False),
)
policies = sa.Table(
    "policies",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("policy", JSONB, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("set_at", TS, nullable=False),
)


class HedgeRepository:
    """SQL of the hedge service inside the caller's transaction (never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- accounts ------------------------------------------------------------------------------------------

    async def ensure_account(self, account_id: str) -> None:
        """Track `account_id` (a no-op when it is tracked already)."""
        await self.session.execute(
            pg_insert(accounts)
            .values(account_id=account_id, drawdown=Decimal(0), volatility=Decimal(0), target_version=0)
            .on_conflict_do_nothing(index_elements=[accounts.c.account_id])
        )

    async def lock_account(self, account_id: str) -> RowMapping | None:
        """The account's state row, locked for this transaction."""
        result = await self.session.execute(
            sa.select(accounts).where(accounts.c.account_id == account_id).with_for_update()
        )
        return result.mappings().first()

    async def account(self, account_id: str) -> RowMapping | None:
        result = await self.session.execute(sa.select(accounts).where(accounts.c.account_id == account_id))
        return result.mappings().first()

    async def account_rows(self, account_ids: Sequence[str] | None) -> Sequence[RowMapping]:
        """Tracked accounts, all of them or those in `account_ids`, by id."""
        query = sa.select(accounts).order_by(accounts.c.account_id)
        if account_ids is not None:
            query = query.where(accounts.c.account_id.in_(list(account_ids)))
        return (await self.session.execute(query)).mappings().all()

    async def account_ids(self) -> list[str]:
        result = await self.session.execute(sa.select(accounts.c.account_id).order_by(accounts.c.account_id))
        return list(result.scalars())

    async def update_account(self, account_id: str, **values: Any) -> None:
        await self.session.execute(sa.update(accounts).where(accounts.c.account_id == account_id).values(**values))

    async def add_nav(self, account_id: str, nav: Decimal, peak: Decimal, at: datetime) -> None:
        await self.session.execute(
            sa.insert(nav_history).values(account_id=account_id, nav=nav, peak_nav=peak, observed_at=at)
        )

    # --- prices --------------------------------------------------------------------------------------------

    async def lock_volatility(self, symbol: str) -> RowMapping | None:
        result = await self.session.execute(
            sa.select(volatility).where(volatility.c.symbol == symbol).with_for_update()
        )
        return result.mappings().first()

    async def volatility(self, symbol: str) -> RowMapping | None:
        result = await self.session.execute(sa.select(volatility).where(volatility.c.symbol == symbol))
        return result.mappings().first()

    async def prices(self) -> dict[str, Decimal]:
        """Latest price of every symbol seen."""
        result = await self.session.execute(sa.select(volatility.c.symbol, volatility.c.price))
        return {row.symbol: row.price for row in result}

    async def save_volatility(self, symbol: str, **values: Any) -> None:
        statement = pg_insert(volatility).values(symbol=symbol, **values)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=[volatility.c.symbol], set_=dict(values))
        )

    # --- overrides -----------------------------------------------------------------------------------------

    async def override(self, account_id: str, *, lock: bool = False) -> RowMapping | None:
        query = sa.select(overrides).where(overrides.c.account_id == account_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).mappings().first()

    async def save_override(self, account_id: str, **values: Any) -> None:
        statement = pg_insert(overrides).values(account_id=account_id, **values)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=[overrides.c.account_id], set_=dict(values))
        )

    async def delete_override(self, account_id: str) -> None:
        await self.session.execute(sa.delete(overrides).where(overrides.c.account_id == account_id))

    async def add_override_history(self, account_id: str, **values: Any) -> int:
        """The new history row's id."""
        statement = sa.insert(override_history).values(account_id=account_id, **values)
        row_id: int = (await self.session.execute(statement.returning(override_history.c.id))).scalar_one()
        return row_id

    async def pending_override(self, account_id: str) -> RowMapping | None:
        """The account's newest override waiting for approval (history action `pending_approval`)."""
        query = (
            sa.select(override_history)
            .where(override_history.c.account_id == account_id, override_history.c.action == PENDING_APPROVAL)
            .order_by(override_history.c.id.desc())
            .limit(1)
        )
        return (await self.session.execute(query)).mappings().first()

    async def resolve_pending(self, account_id: str, row_id: int) -> RowMapping | None:
        """Mark a pending override's row `approval_requested` (decided); None when it is not pending (any more)."""
        statement = (
            sa.update(override_history)
            .where(
                override_history.c.id == row_id,
                override_history.c.account_id == account_id,
                override_history.c.action == PENDING_APPROVAL,
            )
            .values(action=APPROVAL_REQUESTED)
            .returning(*override_history.c)
        )
        return (await self.session.execute(statement)).mappings().first()

    async def override_history(self, account_id: str, limit: int) -> Sequence[RowMapping]:
        """Newest first."""
        query = (
            sa.select(override_history)
            .where(override_history.c.account_id == account_id)
            .order_by(override_history.c.id.desc())
            .limit(limit)
        )
        return (await self.session.execute(query)).mappings().all()

    # --- recommendations -----------------------------------------------------------------------------------

    async def active_recommendations(self, account_ids: Sequence[str] | None) -> Sequence[RowMapping]:
        """Raised and not re-armed, oldest first."""
        query = (
            sa.select(recommendations)
            .where(recommendations.c.rearmed_at.is_(None))
            .order_by(recommendations.c.raised_at, recommendations.c.recommendation_id)
        )
        if account_ids is not None:
            query = query.where(recommendations.c.account_id.in_(list(account_ids)))
        return (await self.session.execute(query)).mappings().all()

    async def count_open_recommendations(self) -> dict[str, int]:
        """Raised and not re-armed, by level."""
        query = (
            sa.select(recommendations.c.level, sa.func.count())
            .where(recommendations.c.rearmed_at.is_(None))
            .group_by(recommendations.c.level)
        )
        return {str(level): int(count) for level, count in await self.session.execute(query)}

    async def insert_recommendation(self, **values: Any) -> bool:
        """False when the level is raised already (the partial unique index keeps it once)."""
        statement = (
            pg_insert(recommendations)
            .values(**values)
            .on_conflict_do_nothing(
                index_elements=[recommendations.c.account_id, recommendations.c.level],
                index_where=recommendations.c.rearmed_at.is_(None),
            )
            .returning(recommendations.c.recommendation_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def rearm(self, recommendation_id: str, at: datetime, actor: str, reason: str) -> None:
        await self.session.execute(
            sa.update(recommendations)
            .where(recommendations.c.recommendation_id == recommendation_id)
            .values(rearmed_at=at, rearmed_by=actor, rearm_reason=reason)
        )

    # --- policies ------------------------------------------------------------------------------------------

    async def policy(self, account_id: str) -> RowMapping | None:
        """The account's newest policy version, if it has one."""
        query = (
            sa.select(policies).where(policies.c.account_id == account_id).order_by(policies.c.version.desc()).limit(1)
        )
        return (await self.session.execute(query)).mappings().first()

    async def add_policy(self, account_id: str, version: int, **values: Any) -> None:
        await self.session.execute(sa.insert(policies).values(account_id=account_id, version=version, **values))

    # --- hedge orders --------------------------------------------------------------------------------------

    async def open_order(self, account_id: str) -> RowMapping | None:
        query = sa.select(orders).where(orders.c.account_id == account_id, orders.c.settled_at.is_(None))
        return (await self.session.execute(query.order_by(orders.c.target_version.desc()))).mappings().first()

    async def last_fill_settled_at(self, account_id: str) -> datetime | None:
        """When the newest hedge order that traded anything settled (the OMS's time)."""
        query = sa.select(sa.func.max(orders.c.settled_at)).where(
            orders.c.account_id == account_id, orders.c.filled_quantity > 0
        )
        value: datetime | None = await self.session.scalar(query)
        return value

    async def insert_order(self, **values: Any) -> bool:
        """False when an order with this client order id exists already."""
        statement = (
            pg_insert(orders)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[orders.c.client_order_id])
            .returning(orders.c.client_order_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def settle_order(self, client_order_id: str, status: str, at: datetime) -> bool:
        """Mark an open hedge order settled; False when it is unknown or settled already."""
        statement = (
            sa.update(orders)
            .where(orders.c.client_order_id == client_order_id, orders.c.settled_at.is_(None))
            .values(status=status, settled_at=at)
            .returning(orders.c.client_order_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def record_fill(self, client_order_id: str, filled_quantity: Decimal) -> None:
        """The order's cumulative filled quantity; a redelivered or overtaken fill never lowers it."""
        await self.session.execute(
            sa.update(orders)
            .where(orders.c.client_order_id == client_order_id)
            .values(filled_quantity=sa.func.greatest(orders.c.filled_quantity, filled_quantity))
        )

    async def hedged_base(self, account_id: str) -> Decimal:
        """Base sold by hedge orders net of base bought back (from their filled quantities)."""
        signed = sa.case((orders.c.side == "sell", orders.c.filled_quantity), else_=-orders.c.filled_quantity)
        total = await self.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(signed), 0)).where(orders.c.account_id == account_id)
        )
        return Decimal(total or 0)

    async def update_order_status(self, client_order_id: str, status: str) -> None:
        await self.session.execute(
            sa.update(orders)
            .where(orders.c.client_order_id == client_order_id, orders.c.settled_at.is_(None))
            .values(status=status)
        )


class BalanceRepository:
    """The accounts' balances as the OMS's `BalanceChanged` events left them (newest version per asset)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply(self, account_id: str, asset: str, *, version: int, **values: Any) -> bool:
        """Store one asset's balance unless a newer or equal version is stored already (False: stale, dropped)."""
        values["version"] = version
        statement = (
            pg_insert(balances)
            .values(account_id=account_id, asset=asset, **values)
            .on_conflict_do_update(
                index_elements=[balances.c.account_id, balances.c.asset],
                set_=values,
                where=balances.c.version < version,
            )
            .returning(balances.c.asset)
        )
        return (await self.session.execute(statement)).first() is not None

    async def of(self, account_ids: Sequence[str] | None) -> dict[str, dict[str, Balance]]:
        """{account_id: {asset: Balance}} of the given accounts (all for None)."""
        query = sa.select(balances.c.account_id, balances.c.asset, balances.c.total, balances.c.reserved)
        if account_ids is not None:
            query = query.where(balances.c.account_id.in_(list(account_ids)))
        result: dict[str, dict[str, Balance]] = {}
        for row in await self.session.execute(query):
            result.setdefault(row.account_id, {})[row.asset] = Balance(Asset(row.asset), row.total, row.reserved)
        return result

    async def received_since(self, since: datetime) -> set[str]:
        """Accounts with a balance received after `since` (their other changes may still be on the way)."""
        query = sa.select(balances.c.account_id).where(balances.c.received_at > since).distinct()
        return set((await self.session.execute(query)).scalars())


def _in(column: sa.ColumnElement[Any], account_ids: Sequence[str] | None) -> sa.ColumnElement[bool]:
    return sa.true() if account_ids is None else column.in_(list(account_ids))


class StatusQueries:
    """The status read model: one query per table for any number of accounts."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def overrides(self, account_ids: Sequence[str] | None) -> dict[str, RowMapping]:
        query = sa.select(overrides).where(_in(overrides.c.account_id, account_ids))
        return {row["account_id"]: row for row in (await self.session.execute(query)).mappings()}

    async def pending_overrides(self, account_ids: Sequence[str] | None) -> dict[str, RowMapping]:
        """Each account's newest override waiting for approval."""
        query = (
            sa.select(override_history)
            .ext(distinct_on(override_history.c.account_id))
            .where(override_history.c.action == PENDING_APPROVAL, _in(override_history.c.account_id, account_ids))
            .order_by(override_history.c.account_id, override_history.c.id.desc())
        )
        return {row["account_id"]: row for row in (await self.session.execute(query)).mappings()}

    async def open_orders(self, account_ids: Sequence[str] | None) -> dict[str, RowMapping]:
        query = (
            sa.select(orders)
            .ext(distinct_on(orders.c.account_id))
            .where(orders.c.settled_at.is_(None), _in(orders.c.account_id, account_ids))
            .order_by(orders.c.account_id, orders.c.target_version.desc())
        )
        return {row["account_id"]: row for row in (await self.session.execute(query)).mappings()}

    async def hedged_base(self, account_ids: Sequence[str] | None) -> dict[str, Decimal]:
        signed = sa.case((orders.c.side == "sell", orders.c.filled_quantity), else_=-orders.c.filled_quantity)
        query = (
            sa.select(orders.c.account_id, sa.func.sum(signed).label("hedged"))
            .where(_in(orders.c.account_id, account_ids))
            .group_by(orders.c.account_id)
        )
        return {row.account_id: Decimal(row.hedged or 0) for row in await self.session.execute(query)}

    async def policies(self, account_ids: Sequence[str] | None) -> dict[str, RowMapping]:
        """Each account's newest policy version."""
        query = (
            sa.select(policies)
            .ext(distinct_on(policies.c.account_id))
            .where(_in(policies.c.account_id, account_ids))
            .order_by(policies.c.account_id, policies.c.version.desc())
        )
        return {row["account_id"]: row for row in (await self.session.execute(query)).mappings()}
