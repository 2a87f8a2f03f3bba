"""What the REST API reads: orders, fills, positions, balances (each in its own short transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.oms.ledger_repository import LedgerRepository
from services.oms.repository import OmsRepository, OrderFilter, StoredOrder
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.order_store import load_order
from shared.db import UnitOfWork
from shared.domain.types import OrderId


class OrderQueries:
    """Read-only use cases behind the GET routes."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx

    async def get(self, order_id: OrderId) -> StoredOrder:
        """One order, or OrderNotFound (404)."""
        return await load_order(self.ctx, order_id)

    async def list_orders(self, query_filter: OrderFilter) -> tuple[list[StoredOrder], dict[str, Any] | None]:
        """The page of orders and the last row (for the next cursor) when the page is full."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            repo = OmsRepository(uow.session)
            rows = await repo.list_orders(query_filter)
            items = [stored for row in rows if (stored := await repo.load(OrderId(row["order_id"])))]
        return items, rows[-1] if len(rows) == query_filter.limit else None

    async def list_fills(
        self, account_ids: Sequence[str] | None, order_id: str | None, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        """Fills, newest first, before the fill id `before`."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            return await OmsRepository(uow.session).list_fills(account_ids, order_id, limit, before)

    async def list_positions(self, account_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        """Position rows of the accounts (None: every account)."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            return await LedgerRepository(uow.session).list_positions(account_ids)

    async def list_balances(self, account_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        """Balance rows of the accounts (None: every account)."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            return await LedgerRepository(uow.session).list_balances(account_ids)
