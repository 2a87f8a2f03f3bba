"""Background work of the hitl service: `ApprovalRequested` from the OMS and the hedge service (idempotent through the `hitl.inbox`
table), the expiry worker and the policy mirror."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from services.hitl.adapters import hitl_adapters
from services.hitl.errors import SubjectConflict
from services.hitl.mirror import policy_value
from services.hitl.repository import HitlRepository
from services.hitl.requests import OpenRequest
from services.hitl.service import NewRequest
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.contracts.approvals import (
    CapitalTransferApprovalRequested,
    HedgeOverrideApprovalRequested,
    LimitRaiseApprovalRequested,
    OrderApprovalRequested,
    TradingResumeApprovalRequested,
)
from shared.contracts.base import outbox_payload
from shared.contracts.controls import ApprovalPolicySet, ControlOwner, ControlRecord
from shared.contracts.registry import parse_message
from shared.controls import SnapshotPublisher
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


def request_from_event(envelope: Envelope) -> NewRequest | None:
    """The request an `ApprovalRequested` envelope asks for; None for the topics' other registered types.

    Every record is read through its contract: an unknown type or a payload that breaks its contract raises
    ContractViolation and the consumer loop sends the record to the dead-letter topic. The request binds the
    payload as the contract reads it (the requesters write exactly that: `outbox_payload` of the same model).
    """
    match parse_message(envelope):
        case (
            OrderApprovalRequested()
            | HedgeOverrideApprovalRequested()
            | LimitRaiseApprovalRequested()
            | TradingResumeApprovalRequested()
            | CapitalTransferApprovalRequested()
        ) as message:
            return NewRequest(
                subject_type=message.subject_type.value,
                subject_id=message.subject_id,
                account_id=message.account_id,
                requested_by=message.requested_by,
                payload=outbox_payload(message),
                source="event",
            )
        case _:
            return None  # order events, hedge rebalances: not the approval service's business


async def handle_order_event(open_request: OpenRequest, session: AsyncSession, envelope: Envelope) -> None:
    """Open a request for each `ApprovalRequested`; other order events are ignored."""
    new = request_from_event(envelope)
    if new is None:
        return
    try:
        await open_request.open_in(session, new)
    except SubjectConflict as exc:
        log.warning("approval_request_conflict", subject_id=new.subject_id, error=exc.message)


def _requests_consumer(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        hitl = hitl_adapters(runtime)
        settings = hitl.settings

        async def handler(session: AsyncSession, envelope: Envelope) -> None:
            await handle_order_event(hitl.open_request, session, envelope)
            # The relay publishes ApprovalRequestOpened once the inbox transaction commits.
            runtime.relay.wake()

        await run_consumer(
            runtime,
            name="hitl.approval-requests",
            group_id=settings.requests_consumer_group,
            topics=[
                settings.order_events_topic,
                settings.hedge_events_topic,
                settings.risk_events_topic,
                settings.allocation_events_topic,
            ],
            handler=handler,
        )

    return run


def _expiry(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        hitl = hitl_adapters(runtime)
        while not runtime.stop_event.is_set():
            while await hitl.expire_due() > 0:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=hitl.settings.expiry_interval_s)

    return run


def _policy_mirror(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Re-write every current policy to Redis at start-up, every `policy_mirror_interval_s`, and at once when a
    commit's own write failed (services/hitl/mirror.py)."""

    async def run() -> None:
        hitl = hitl_adapters(runtime)
        mirror = hitl.mirror
        while not runtime.stop_event.is_set():
            mirror.wake.clear()
            with contextlib.suppress(RedisError, SQLAlchemyError, OSError):  # logged by the mirror / PG probe
                await mirror.mirror_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(runtime.stop_event, mirror.wake), hitl.settings.policy_mirror_interval_s)

    return run


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


async def current_policy_records(session: AsyncSession) -> list[ControlRecord]:
    """Every account's current approval policy version (hitl's controls snapshot)."""
    return [ApprovalPolicySet(policy=policy_value(p)) for p in await HitlRepository(session).all_current_policies()]


def _controls_snapshot(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        hitl = hitl_adapters(runtime)
        publisher = SnapshotPublisher(
            owner=ControlOwner.HITL,
            topic=hitl.context.controls_topic,
            bootstrap=hitl.settings.kafka_bootstrap,
            sessionmaker=hitl.context.sessionmaker,
            tables=hitl.context.tables,
            clock=hitl.context.clock,
            records=current_policy_records,
            on_commit=runtime.relay.wake,
        )
        await publisher.run(runtime.stop_event)

    return run


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("controls-snapshot", _controls_snapshot),
    ("approval-requests", _requests_consumer),
    ("expiry", _expiry),
    ("policy-mirror", _policy_mirror),
)
