"""Canceling an order: withdrawn at once while it awaits approval, otherwise requested at the venue."""

from __future__ import annotations

from services.oms.errors import OrderNotCancelable
from services.oms.metrics import VENUE_ERRORS
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.execution import ExecuteOrders
from services.oms.use_cases.order_store import load_order, locked_order, release_reservation, transition
from services.oms.use_cases.publishing import publish_order_events
from shared.db import UnitOfWork
from shared.domain.order_events import OrderEvent
from shared.domain.orders import Order
from shared.domain.types import OrderId, OrderStatus
from shared.observability.logging import get_logger
from shared.venues.base import VenueError, VenueRejected

log = get_logger(__name__)


class CancelOrder:
    """REST and `CancelOrder` commands; idempotent (a second cancel of a PENDING_CANCEL order changes nothing)."""

    def __init__(self, ctx: OmsContext, execution: ExecuteOrders) -> None:
        self.ctx = ctx
        self.execution = execution

    async def cancel(self, order_id: OrderId, actor: str) -> StoredOrder:
        """Cancel: withdrawn at once while awaiting approval, otherwise requested at the venue."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            uow.after_commit(self.ctx.on_commit)
            repo = OmsRepository(uow.session)
            stored = await locked_order(repo, order_id)
            order, now = stored.order, self.ctx.clock()
            events: list[OrderEvent] = []
            if order.status is OrderStatus.PENDING_APPROVAL:
                order, events = order.cancel("withdrawn before approval", now)
                await release_reservation(uow.session, self.ctx.tables, order, now)
            elif order.status in {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}:
                order, events = order.request_cancel(now)
            elif order.status is not OrderStatus.PENDING_CANCEL:
                raise OrderNotCancelable(
                    f"order {order_id} is {order.status.value}: it cannot be canceled now",
                    details={"status": order.status.value},
                )
            await repo.save(order, events)
            await publish_order_events(uow.session, self.ctx.tables, order, events, actor, exits=stored.exits)
        if order.status is OrderStatus.PENDING_CANCEL:
            await self.send_cancel(order)
        return await load_order(self.ctx, order_id)

    async def send_cancel(self, order: Order) -> None:
        """Ask the venue to cancel; a definitive refusal is recorded, anything unclear is left to the resolver."""
        try:
            update = await self.ctx.venue.cancel(order.account_id, order.client_order_id)
        except VenueRejected as exc:
            code = exc.code
            await transition(self.ctx, order.id, lambda o, now: o.cancel_rejected(now, code), "venue")
            return
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="cancel", kind=type(exc).__name__).inc()
            log.warning("venue_cancel_unresolved", order_id=order.id, error_type=type(exc).__name__)
            return
        await self.execution.apply_status(update)
