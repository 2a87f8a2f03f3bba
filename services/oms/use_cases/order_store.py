"""Loading, locking and moving one order inside a unit of work (used by execution, cancel, reconciliation,
approvals)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.errors import OrderNotFound
from services.oms.ledger_repository import LedgerRepository
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.publishing import publish_order_events, save_ledger
from shared.db import UnitOfWork
from shared.domain.order_events import OrderEvent
from shared.domain.orders import Order
from shared.domain.types import OrderId
from shared.events.tables import EventTables

OrderStep = Callable[[Order, datetime], tuple[Order, list[OrderEvent]]]


async def load_order(ctx: OmsContext, order_id: OrderId) -> StoredOrder:
    """The stored order, or OrderNotFound (404)."""
    async with UnitOfWork(ctx.sessionmaker) as uow:
        stored = await OmsRepository(uow.session).load(order_id)
    if stored is None:
        raise OrderNotFound(f"order {order_id} does not exist")
    return stored


async def locked_order(repo: OmsRepository, order_id: OrderId) -> StoredOrder:
    """The order, read after locking its account (every change of an account's orders and ledger is serialized)."""
    row = await repo.order_row(order_id)
    if row is None:
        raise OrderNotFound(f"order {order_id} does not exist")
    await repo.lock_account(row["account_id"])
    stored = await repo.load(order_id)
    if stored is None:
        raise OrderNotFound(f"order {order_id} does not exist")
    return stored


async def release_reservation(session: AsyncSession, tables: EventTables, order: Order, now: datetime) -> None:
    """Give back what the order still holds in the ledger."""
    ledger = await LedgerRepository(session).load_ledger(order.account_id)
    if order.id in ledger.reservations:
        await save_ledger(session, tables, ledger, ledger.release(order.id), now)


async def transition(ctx: OmsContext, order_id: OrderId, step: OrderStep, actor: str) -> Order:
    """Apply one state-machine step to the order in its own transaction (releasing the reservation when it ends)."""
    async with UnitOfWork(ctx.sessionmaker) as uow:
        uow.after_commit(ctx.on_commit)
        repo = OmsRepository(uow.session)
        stored = await locked_order(repo, order_id)
        now = ctx.clock()
        order, events = step(stored.order, now)
        if order.is_terminal:
            await release_reservation(uow.session, ctx.tables, order, now)
        await repo.save(order, events)
        await publish_order_events(uow.session, ctx.tables, order, events, actor, exits=stored.exits)
    return order
