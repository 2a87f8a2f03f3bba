"""The SQL of the OMS's accounts, orders (with their events) and fills (schema `oms`); the ledger's is in
`ledger_repository.py`, the tables in `tables.py`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.tables import fills, order_events, orders, trading_accounts
from shared.domain.order_events import OrderEvent, event_from_payload
from shared.domain.order_rules import OPEN_STATUSES
from shared.domain.orders import Order
from shared.domain.types import AccountId, ClientOrderId, OrderId, OrderStatus

UNRESOLVED_STATUSES = (*sorted(OPEN_STATUSES), OrderStatus.SUBMITTED)
LIVE_STATUSES = (*UNRESOLVED_STATUSES, OrderStatus.PENDING_APPROVAL)


@dataclass(frozen=True, slots=True)
class TradingAccount:
    account_id: AccountId
    venue: str
    approval_threshold: Decimal | None
    fill_cursor: int


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order with the bookkeeping the aggregate does not carry."""

    order: Order
    request_hash: str
    venue: str
    origin: str
    created_at: datetime
    exits: dict[str, Any] | None = None  # ExitInstructions JSON the entry carried
    approval_payload: dict[str, Any] | None = None  # the ApprovalRequested payload of a held order


@dataclass(frozen=True, slots=True)
class OrderFilter:
    account_ids: Sequence[str] | None  # None: every account
    status: OrderStatus | None = None
    symbol: str | None = None
    limit: int = 100
    before_created_at: datetime | None = None
    before_order_id: str | None = None


class OmsRepository:
    """SQL of the OMS's accounts, orders and fills, bound to the caller's session (the unit of work commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- accounts ------------------------------------------------------------------------------------------

    async def ensure_account(self, account_id: str, venue: str, approval_threshold: Decimal | None) -> None:
        statement = pg_insert(trading_accounts).values(
            account_id=account_id, venue=venue, approval_threshold=approval_threshold
        )
        await self.session.execute(statement.on_conflict_do_nothing(index_elements=["account_id"]))

    async def lock_account(self, account_id: str) -> TradingAccount | None:
        """Lock the account row: every change of one account's orders and ledger is serialized by it."""
        query = sa.select(trading_accounts).where(trading_accounts.c.account_id == account_id).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _account(row)

    async def get_account(self, account_id: str) -> TradingAccount | None:
        query = sa.select(trading_accounts).where(trading_accounts.c.account_id == account_id)
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _account(row)

    async def list_accounts(self) -> list[TradingAccount]:
        rows = (await self.session.execute(sa.select(trading_accounts))).mappings().all()
        return [_account(row) for row in rows]

    async def set_fill_cursor(self, account_id: str, sequence: int) -> None:
        await self.session.execute(
            sa.update(trading_accounts)
            .where(trading_accounts.c.account_id == account_id, trading_accounts.c.fill_cursor < sequence)
            .values(fill_cursor=sequence)
        )

    async def traded_volume_since(self, account_id: str, since: datetime) -> Decimal:
        """The quote notional the account's fills traded from `since` on (its fee tier's rolling 30-day volume)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(fills.c.quantity * fills.c.price), 0)).where(
            fills.c.account_id == account_id, fills.c.filled_at >= since
        )
        return Decimal(await self.session.scalar(query) or 0)

    # --- orders --------------------------------------------------------------------------------------------

    async def find_by_client_id(self, account_id: str, client_order_id: str) -> StoredOrder | None:
        params = {"account_id": account_id, "client_order_id": client_order_id}
        return _stored_order((await self.session.execute(_STORED_BY_CLIENT_ID, params)).mappings().all())

    async def load(self, order_id: OrderId) -> StoredOrder | None:
        return _stored_order((await self.session.execute(_STORED_BY_ID, {"order_id": order_id})).mappings().all())

    async def insert(self, stored: StoredOrder, events: Sequence[OrderEvent]) -> None:
        order = stored.order
        request = order.request
        await self.session.execute(
            sa.insert(orders).values(
                order_id=order.id,
                account_id=request.account_id,
                client_order_id=request.client_order_id,
                request_hash=stored.request_hash,
                venue=stored.venue,
                symbol=request.symbol,
                side=request.side.value,
                type=request.type.value,
                quantity=request.quantity,
                limit_price=request.limit_price,
                trigger_price=request.trigger_price,
                time_in_force=request.time_in_force.value,
                post_only=request.post_only,
                origin=stored.origin,
                created_at=stored.created_at,
                exits=stored.exits,
                approval_payload=stored.approval_payload,
                **_order_state(order),
            )
        )
        await self._append_events(events)

    async def save(self, order: Order, events: Sequence[OrderEvent]) -> None:
        if not events:
            return
        await self.session.execute(sa.update(orders).where(orders.c.order_id == order.id).values(**_order_state(order)))
        await self._append_events(events)

    async def _append_events(self, events: Iterable[OrderEvent]) -> None:
        rows = [
            {
                "order_id": event.order_id,
                "version": event.version,
                "event_type": event.event_type,
                "payload": event.to_payload(),
                "occurred_at": event.occurred_at,
            }
            for event in events
        ]
        if rows:
            await self.session.execute(sa.insert(order_events), rows)

    async def list_orders(self, query_filter: OrderFilter) -> list[dict[str, Any]]:
        query = sa.select(orders).order_by(orders.c.created_at.desc(), orders.c.order_id.desc())
        if query_filter.account_ids is not None:
            query = query.where(orders.c.account_id.in_(query_filter.account_ids))
        if query_filter.status is not None:
            query = query.where(orders.c.status == query_filter.status.value)
        if query_filter.symbol is not None:
            query = query.where(orders.c.symbol == query_filter.symbol)
        if query_filter.before_created_at is not None and query_filter.before_order_id is not None:
            query = query.where(
                sa.tuple_(orders.c.created_at, orders.c.order_id)
                < sa.tuple_(sa.literal(query_filter.before_created_at), sa.literal(query_filter.before_order_id))
            )
        rows = (await self.session.execute(query.limit(query_filter.limit))).mappings().all()
        return [dict(row) for row in rows]

    async def order_row(self, order_id: str) -> dict[str, Any] | None:
        row = (await self.session.execute(sa.select(orders).where(orders.c.order_id == order_id))).mappings().first()
        return None if row is None else dict(row)

    async def unresolved_orders(self, account_id: str | None = None, older_than: datetime | None = None) -> list[str]:
        """Orders the venue may know more about than we do: submitted, open or awaiting a cancel."""
        query = sa.select(orders.c.order_id).where(orders.c.status.in_([s.value for s in UNRESOLVED_STATUSES]))
        if account_id is not None:
            query = query.where(orders.c.account_id == account_id)
        if older_than is not None:
            query = query.where(orders.c.updated_at < older_than)
        return list((await self.session.scalars(query.order_by(orders.c.created_at))).all())

    async def submitted_orders(self, older_than: datetime) -> list[str]:
        return await self.orders_in_status(OrderStatus.SUBMITTED, older_than, limit=500)

    async def orders_in_status(self, status: OrderStatus, older_than: datetime, limit: int | None = None) -> list[str]:
        """Orders in `status` not updated since `older_than`, oldest first (the partial index `ix_orders_open`)."""
        query = (
            sa.select(orders.c.order_id)
            .where(orders.c.status == status.value, orders.c.updated_at < older_than)
            .order_by(orders.c.created_at)
            .limit(limit)
        )
        return list((await self.session.scalars(query)).all())

    async def live_order_count(self, account_id: str, *, excluding: str | None = None) -> int:
        """Orders of the account that are or may become open at the venue (submitted .. pending cancel/approval),
        other than `excluding`."""
        query = sa.select(sa.func.count()).where(
            orders.c.account_id == account_id,
            orders.c.status.in_([s.value for s in LIVE_STATUSES]),
            orders.c.order_id != (excluding or ""),
        )
        return int(await self.session.scalar(query) or 0)

    async def open_buy_quantity(self, account_id: str, symbol: str, *, excluding: str | None = None) -> Decimal:
        """Unfilled quantity of the account's live buys in `symbol` (exposure they may still add), other than
        `excluding`."""
        query = sa.select(sa.func.coalesce(sa.func.sum(orders.c.quantity - orders.c.filled_quantity), 0)).where(
            orders.c.account_id == account_id,
            orders.c.symbol == symbol,
            orders.c.side == "buy",
            orders.c.status.in_([s.value for s in LIVE_STATUSES]),
            orders.c.order_id != (excluding or ""),
        )
        return Decimal(await self.session.scalar(query) or 0)

    async def has_submitted_in_symbol(self, account_id: str, symbol: str) -> bool:
        """Whether the account has an order in `symbol` that passed its checks (and approval) and went to the venue
        (an `OrderSubmitted` event), and that the venue did not reject. Orders denied, still pending approval, or
        withdrawn/expired before approval do not count."""
        submitted = sa.exists().where(
            order_events.c.order_id == orders.c.order_id, order_events.c.event_type == "OrderSubmitted"
        )
        query = sa.select(
            sa.exists().where(
                orders.c.account_id == account_id,
                orders.c.symbol == symbol,
                orders.c.status != OrderStatus.REJECTED.value,
                submitted,
            )
        )
        return bool(await self.session.scalar(query))

    async def client_order_ids(self, account_id: str) -> set[str]:
        query = sa.select(orders.c.client_order_id).where(orders.c.account_id == account_id)
        return set((await self.session.scalars(query)).all())

    # --- fills ---------------------------------------------------------------------------------------------

    async def insert_fill(self, values: dict[str, Any]) -> bool:
        """Record a fill once: False when (venue, trade_id) was already recorded."""
        statement = pg_insert(fills).values(**values).on_conflict_do_nothing(index_elements=["venue", "trade_id"])
        result = await self.session.execute(statement.returning(fills.c.fill_id))
        return result.first() is not None

    async def list_fills(
        self, account_ids: Sequence[str] | None, order_id: str | None, limit: int, before_fill_id: int | None
    ) -> list[dict[str, Any]]:
        query = sa.select(fills).order_by(fills.c.fill_id.desc()).limit(limit)
        if account_ids is not None:
            query = query.where(fills.c.account_id.in_(account_ids))
        if order_id is not None:
            query = query.where(fills.c.order_id == order_id)
        if before_fill_id is not None:
            query = query.where(fills.c.fill_id < before_fill_id)
        return [dict(row) for row in (await self.session.execute(query)).mappings().all()]


# An order with its events in one round trip (every order has at least its OrderCreated event), built once.
_STORED_ORDER = (
    sa.select(
        orders.c.request_hash,
        orders.c.venue,
        orders.c.origin,
        orders.c.created_at,
        orders.c.exits,
        orders.c.approval_payload,
        order_events.c.event_type,
        order_events.c.payload,
    )
    .join_from(orders, order_events, order_events.c.order_id == orders.c.order_id)
    .order_by(order_events.c.version)
)
_STORED_BY_ID = _STORED_ORDER.where(orders.c.order_id == sa.bindparam("order_id"))
_STORED_BY_CLIENT_ID = _STORED_ORDER.where(
    orders.c.account_id == sa.bindparam("account_id"), orders.c.client_order_id == sa.bindparam("client_order_id")
)


def _stored_order(rows: Sequence[sa.RowMapping]) -> StoredOrder | None:
    """The order of `_STORED_ORDER`'s rows (one per event, in version order), or None without rows."""
    if not rows:
        return None
    first = rows[0]
    events = [event_from_payload(row["event_type"], row["payload"]) for row in rows]
    return StoredOrder(
        Order.from_events(events),
        first["request_hash"],
        first["venue"],
        first["origin"],
        first["created_at"],
        first["exits"],
        first["approval_payload"],
    )


def _account(row: sa.RowMapping) -> TradingAccount:
    return TradingAccount(
        AccountId(row["account_id"]),
        row["venue"],
        row["approval_threshold"],
        row["fill_cursor"],
    )


def _order_state(order: Order) -> dict[str, Any]:
    return {
        "status": order.status.value,
        "filled_quantity": order.filled_quantity,
        "average_fill_price": order.average_fill_price,
        "fees_paid": order.fees_paid,
        "venue_order_id": order.venue_order_id,
        "reason": order.reason,
        "version": order.version,
        "updated_at": order.updated_at,
    }


def client_order_key(account_id: str, client_order_id: str) -> tuple[AccountId, ClientOrderId]:
    return AccountId(account_id), ClientOrderId(client_order_id)
