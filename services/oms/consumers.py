"""Background work of the OMS: commands and approval decisions from Kafka (exactly-once through the inbox),
startup reconciliation, and the resolver that settles ambiguous venue outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.oms.adapters import oms_adapters
from services.oms.command_auth import CommandCredentials, authorize_account, command_verifier, service_actor
from services.oms.controls import ControlsFeed
from services.oms.errors import (
    CommandForbidden,
    CommandUnauthenticated,
    ControlsUnknown,
    MarketDataUnavailable,
    OrderNotCancelable,
    OrderNotFound,
)
from services.oms.repository import OmsRepository
from services.oms.service import OrderService
from services.oms.use_cases.reconciliation import RunKind, RunOutcome, record_run, sweep_outcome
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.audit import append as audit_append
from shared.auth.tokens import Principal, RevocationUnavailable
from shared.contracts.approvals import ApprovalDecided, CapitalTransferApprovalRequested, SubjectType
from shared.contracts.base import ContractViolation
from shared.contracts.orders import CancelOrder, CommandRejected, SubmitOrder
from shared.contracts.registry import follow_up_envelope, parse_as, parse_message
from shared.db import UnitOfWork
from shared.domain.types import OrderId, OrderStatus
from shared.errors import DomainError
from shared.events import Envelope, add_to_outbox
from shared.events.consumer import record_header
from shared.events.envelope import HEADER_AUTHORIZATION
from shared.events.topics import HITL_DECISIONS, OMS_COMMANDS, OMS_ORDER_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)


def order_service(runtime: ServiceRuntime) -> OrderService:
    return oms_adapters(runtime).orders


async def handle_command(
    orders: OrderService, session: AsyncSession, envelope: Envelope, credentials: CommandCredentials
) -> None:
    """`SubmitOrder` / `CancelOrder` from a service identity (services/oms/command_auth.py), handled like REST
    (idempotent by client order id)."""
    try:
        principal = await credentials.principal()
        command = parse_message(envelope)  # ContractViolation: answered with CommandRejected below
        if isinstance(command, SubmitOrder):
            authorize_account(principal, command.order.account_id)
            actor = service_actor(principal)
            await orders.record(
                session, command.order, actor, origin="command", model_confidence=command.model_confidence
            )
        elif isinstance(command, CancelOrder):
            await _cancel_by_command(orders, session, command, principal)
        else:
            raise ContractViolation(f"{envelope.type!r} is not a command")
    except (ControlsUnknown, MarketDataUnavailable, RevocationUnavailable):
        raise  # not known yet (or Redis down): retry the command later (consumer backoff), never reject it for that
    except (DomainError, ContractViolation, ValidationError) as exc:
        await _command_rejected(orders, session, envelope, exc)


async def _cancel_by_command(
    orders: OrderService, session: AsyncSession, command: CancelOrder, principal: Principal
) -> None:
    repo = OmsRepository(session)
    if command.order_id is None:
        # The contract guarantees both when there is no order id.
        stored = await repo.find_by_client_id(str(command.account_id), str(command.client_order_id))
    else:
        stored = await repo.load(OrderId(command.order_id))
    if stored is None:
        if command.order_id is None:
            raise OrderNotFound("no order with that client order id")
        return  # by order id: nothing to cancel, as before
    authorize_account(principal, stored.order.account_id)
    # Cancel is idempotent and takes its own transactions (this one holds no lock), so a redelivery is harmless.
    await _cancel_quietly(orders, stored.order.id, service_actor(principal))


async def _cancel_quietly(orders: OrderService, order_id: OrderId, actor: str) -> None:
    with contextlib.suppress(OrderNotCancelable, OrderNotFound):
        await orders.cancel(order_id, actor)


async def _command_rejected(orders: OrderService, session: AsyncSession, envelope: Envelope, error: Exception) -> None:
    """A command that cannot be carried out is answered with an event, not retried forever."""
    code = str(getattr(error, "code", type(error).__name__))
    rejected = CommandRejected(command_type=envelope.type or "unknown", code=code[:128], message=str(error)[:500])
    reply = follow_up_envelope(envelope, rejected, producer="oms", aggregate_id=envelope.aggregate_id)
    await add_to_outbox(session, orders.tables, topic=OMS_ORDER_EVENTS, envelope=reply, key=envelope.aggregate_id)
    if isinstance(error, CommandUnauthenticated | CommandForbidden):
        await audit_append(
            session,
            actor=f"unverified:{envelope.producer}",
            action="command.refused",
            target=envelope.aggregate_id,
            details={"command_type": envelope.type, "code": code, "reason": str(error)[:500]},
            chain="oms:commands",
        )
    log.warning("command_rejected", command_type=envelope.type, code=str(code))


async def handle_decision(orders: OrderService, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` from the approval service: approved orders go on, rejected or expired ones stop."""
    if envelope.type != ApprovalDecided.TYPE:
        return
    # A payload that breaks the contract (an unknown decision included) raises and is dead-lettered: never guessed.
    decided = parse_as(ApprovalDecided, envelope)
    if decided.subject_type == SubjectType.CAPITAL_TRANSFER:
        await orders.transfers.decide(decided, actor=f"service:{envelope.producer}")
        return
    if decided.subject_type != SubjectType.ORDER:
        return
    try:
        await orders.decide(
            session,
            OrderId(decided.subject_id),
            decided.decision,
            decided.reason,
            actor=f"service:{envelope.producer}",
            payload_hash=decided.payload_hash,
        )
    except OrderNotFound:
        log.warning("decision_for_unknown_order", subject_id=decided.subject_id)


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


def _commands_consumer(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        orders = order_service(runtime)
        verifier = command_verifier(orders.settings, runtime.redis)

        async def handle(session: AsyncSession, envelope: Envelope) -> None:
            credentials = CommandCredentials(verifier, record_header(HEADER_AUTHORIZATION))
            await handle_command(orders, session, envelope, credentials)

        await run_consumer(runtime, name="oms.commands", topics=[OMS_COMMANDS], handler=handle)

    return run


async def handle_allocation_request(orders: OrderService, session: AsyncSession, envelope: Envelope) -> None:
    """The capital allocator's `ApprovalRequested`: the transfer it proposes waits here for the decision."""
    request = parse_as(CapitalTransferApprovalRequested, envelope)
    await orders.transfers.hold_request(session, request)


def _allocation_requests(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        orders = order_service(runtime)
        await run_consumer(
            runtime,
            name="oms.allocation-requests",
            topics=[orders.settings.allocation_events_topic],
            handler=lambda session, envelope: handle_allocation_request(orders, session, envelope),
        )

    return run


# Start-up reconciliation walks every account of the database: OMS processes that start together take turns
# (a PostgreSQL session advisory lock, released when the reconcile ends or its connection drops with the process).
RECONCILE_LOCK_KEY = int.from_bytes(
    hashlib.blake2b(b"aether.oms-startup-reconciliation", digest_size=8).digest(), "big", signed=True
)


@contextlib.asynccontextmanager
async def reconciliation_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the start-up reconciliation lock of this database for the block (waits for another process's turn)."""
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(select(func.pg_advisory_lock(RECONCILE_LOCK_KEY)))
        try:
            yield
        finally:
            await autocommit.execute(select(func.pg_advisory_unlock(RECONCILE_LOCK_KEY)))


def _reconciler(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = oms_adapters(runtime)
        if adapters.restore_venue is not None:
            await adapters.restore_venue()
        async with reconciliation_turn(runtime.engine):
            adapters.reconciliation_status.report = await adapters.orders.reconcile()

    return run


def _controls(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        orders = order_service(runtime)
        settings = orders.settings
        feed = ControlsFeed(
            sessionmaker=orders.sessionmaker,
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            topics=(settings.risk_controls_topic, settings.hitl_controls_topic),
            clock=orders.clock,
        )
        await feed.run(runtime.stop_event)

    return run


def _resolver(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = oms_adapters(runtime)
        orders = adapters.orders
        interval_s = orders.settings.resolver_interval_s
        while not runtime.stop_event.is_set():
            if adapters.reconciliation_status.done:
                await resolve_stale(orders)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=interval_s)

    return run


async def resolve_stale(orders: OrderService) -> int:
    """Query the venue about orders stuck in SUBMITTED or PENDING_CANCEL (ambiguous outcomes, commands, approvals);
    the sweep is counted as a reconciliation run (ok, drift, error)."""
    try:
        outcomes = [await orders.resolve(OrderId(order_id)) for order_id in await _stale_orders(orders)]
    except Exception:
        record_run(RunKind.SWEEP, RunOutcome.ERROR)
        raise
    record_run(RunKind.SWEEP, sweep_outcome(outcomes))
    return len(outcomes)


async def _stale_orders(orders: OrderService) -> list[str]:
    older_than = orders.clock() - timedelta(seconds=orders.settings.resolve_after_s)
    async with UnitOfWork(orders.sessionmaker) as uow:
        repo = OmsRepository(uow.session)
        stale = await repo.submitted_orders(older_than)
        # One query: reading every open order's row to find the few awaiting a cancel cost a statement per resting
        # order each second (most of the OMS's statements once a few thousand limit orders rested).
        stale += await repo.orders_in_status(OrderStatus.PENDING_CANCEL, older_than)
    return stale


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("controls", _controls),
    ("reconciler", _reconciler),
    ("resolver", _resolver),
    ("commands", _commands_consumer),
    ("approvals", _consumer("approvals", HITL_DECISIONS, handle_decision)),
    ("allocation-requests", _allocation_requests),
)
