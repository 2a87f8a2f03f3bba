"""Background work of the OMS: commands and approval decisions from Kafka (exactly-once through the inbox),
startup reconciliation, and the resolver that settles ambiguous venue outcomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.errors import MarketDataUnavailable, OrderNotCancelable, OrderNotFound, RiskStateUnavailable
from services.oms.repository import OmsRepository
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.db import UnitOfWork
from shared.domain.types import OrderId, OrderStatus
from shared.errors import DomainError
from shared.events import Envelope, add_to_outbox
from shared.events.topics import HITL_DECISIONS, OMS_COMMANDS, OMS_ORDER_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

RECONCILED = "reconciled"


def order_service(runtime: ServiceRuntime) -> OrderService:
    service: OrderService = runtime.extras["orders"]
    return service


async def handle_command(orders: OrderService, session: AsyncSession, envelope: Envelope) -> None:
    """`SubmitOrder` / `CancelOrder` from other services, handled like REST (idempotent by client order id)."""
    actor = f"service:{envelope.producer}"
    try:
        if envelope.type == "SubmitOrder":
            body = OrderCreate.model_validate(envelope.payload["order"])
            await orders.record(session, body, actor, origin="command")
        elif envelope.type == "CancelOrder":
            await _cancel_by_command(orders, session, envelope, actor)
        else:
            raise DomainError(f"unknown command type {envelope.type!r}")
    except (RiskStateUnavailable, MarketDataUnavailable):
        raise  # Redis down: retry the command later (consumer backoff), never reject it for that
    except (DomainError, ValidationError, KeyError, TypeError) as exc:
        await _command_rejected(orders, session, envelope, exc)


async def _cancel_by_command(orders: OrderService, session: AsyncSession, envelope: Envelope, actor: str) -> None:
    payload = envelope.payload
    order_id = payload.get("order_id")
    if order_id is None:
        stored = await OmsRepository(session).find_by_client_id(
            str(payload["account_id"]), str(payload["client_order_id"])
        )
        if stored is None:
            raise OrderNotFound("no order with that client order id")
        order_id = stored.order.id
    # Cancel is idempotent and takes its own transactions (this one holds no lock), so a redelivery is harmless.
    await _cancel_quietly(orders, OrderId(str(order_id)), actor)


async def _cancel_quietly(orders: OrderService, order_id: OrderId, actor: str) -> None:
    with contextlib.suppress(OrderNotCancelable, OrderNotFound):
        await orders.cancel(order_id, actor)


async def _command_rejected(orders: OrderService, session: AsyncSession, envelope: Envelope, error: Exception) -> None:
    """A command that cannot be carried out is answered with an event, not retried forever."""
    code = getattr(error, "code", type(error).__name__)
    reply = envelope.follow_up(
        type="CommandRejected",
        producer="oms",
        aggregate_id=envelope.aggregate_id,
        payload={"command_type": envelope.type, "code": str(code), "message": str(error)[:500]},
    )
    await add_to_outbox(session, orders.tables, topic=OMS_ORDER_EVENTS, envelope=reply, key=envelope.aggregate_id)
    log.warning("command_rejected", command_type=envelope.type, code=str(code))


async def handle_decision(orders: OrderService, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` from the approval service: approved orders go on, rejected or expired ones stop."""
    payload = envelope.payload
    if envelope.type != "ApprovalDecided" or payload.get("subject_type") != "order":
        return
    decision = str(payload.get("decision"))
    reason = payload.get("reason")
    try:
        await orders.decide(
            session,
            OrderId(str(payload["subject_id"])),
            decision,
            None if reason is None else str(reason),
            actor=f"service:{envelope.producer}",
        )
    except OrderNotFound:
        log.warning("decision_for_unknown_order", subject_id=str(payload.get("subject_id")))


def _consumer(
    name: str, topic: str, handler: Callable[[OrderService, AsyncSession, Envelope], Awaitable[None]]
) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            orders = order_service(runtime)
            await run_consumer(
                runtime,
                name=f"oms.{name}",
                topics=[topic],
                handler=lambda session, envelope: handler(orders, session, envelope),
            )

        return run

    return build


def _reconciler(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        restore_venue = runtime.extras.get("restore_venue")
        if restore_venue is not None:
            await restore_venue()
        report = await order_service(runtime).reconcile()
        runtime.extras[RECONCILED] = report

    return run


def _resolver(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        orders = order_service(runtime)
        interval_s = orders.settings.resolver_interval_s
        while not runtime.stop_event.is_set():
            if RECONCILED in runtime.extras:
                await resolve_stale(orders)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=interval_s)

    return run


async def resolve_stale(orders: OrderService) -> int:
    """Query the venue about orders stuck in SUBMITTED or PENDING_CANCEL (ambiguous outcomes, commands, approvals)."""
    older_than = orders.clock() - timedelta(seconds=orders.settings.resolve_after_s)
    async with UnitOfWork(orders.sessionmaker) as uow:
        repo = OmsRepository(uow.session)
        stale = await repo.submitted_orders(older_than)
        stale += [
            order_id
            for order_id in await repo.unresolved_orders(older_than=older_than)
            if (row := await repo.order_row(order_id)) and row["status"] == OrderStatus.PENDING_CANCEL.value
        ]
    for order_id in stale:
        await orders.resolve(OrderId(order_id))
    return len(stale)


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("reconciler", _reconciler),
    ("resolver", _resolver),
    ("commands", _consumer("commands", OMS_COMMANDS, handle_command)),
    ("approvals", _consumer("approvals", HITL_DECISIONS, handle_decision)),
)
