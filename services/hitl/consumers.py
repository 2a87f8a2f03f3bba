"""Background work of the hitl service: `ApprovalRequested` from the OMS and the hedge service (idempotent through the `hitl.inbox`
table), the expiry worker and the policy mirror."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from services.hitl.config import HitlSettings
from services.hitl.errors import SubjectConflict
from services.hitl.mirror import PolicyMirror
from services.hitl.service import HitlService, NewRequest
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


def hitl_service(runtime: ServiceRuntime) -> HitlService:
    service: HitlService = runtime.extras["hitl"]
    return service


def request_from_event(envelope: Envelope) -> NewRequest | None:
    """The request an `ApprovalRequested` envelope asks for (None for other event types)."""
    if envelope.type != "ApprovalRequested":
        return None
    payload: dict[str, Any] = dict(envelope.payload)
    return NewRequest(
        subject_type=str(payload["subject_type"]),
        subject_id=str(payload["subject_id"]),
        account_id=str(payload["account_id"]),
        requested_by=str(payload.get("requested_by") or f"service:{envelope.producer}"),
        payload=payload,
        source="event",
    )


async def handle_order_event(service: HitlService, session: AsyncSession, envelope: Envelope) -> None:
    """Open a request for each `ApprovalRequested`; other order events are ignored."""
    new = request_from_event(envelope)
    if new is None:
        return
    try:
        await service.open_request(session, new)
    except SubjectConflict as exc:
        log.warning("approval_request_conflict", subject_id=new.subject_id, error=exc.message)


def _requests_consumer(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        settings = runtime.settings
        assert isinstance(settings, HitlSettings)  # noqa: S101 - the app builds the runtime with HitlSettings
        service = hitl_service(runtime)

        async def handler(session: AsyncSession, envelope: Envelope) -> None:
            await handle_order_event(service, session, envelope)
            # The relay publishes ApprovalRequestOpened once the inbox transaction commits.
            runtime.relay.wake()

        await run_consumer(
            runtime,
            name="hitl.approval-requests",
            group_id=settings.requests_consumer_group,
            topics=[settings.order_events_topic, settings.hedge_events_topic],
            handler=handler,
        )

    return run


def _expiry(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        settings = runtime.settings
        assert isinstance(settings, HitlSettings)  # noqa: S101
        service = hitl_service(runtime)
        while not runtime.stop_event.is_set():
            while await service.expire_due() > 0:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=settings.expiry_interval_s)

    return run


def _policy_mirror(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    """Re-write every current policy to Redis at start-up, every `policy_mirror_interval_s`, and at once when a
    commit's own write failed (services/hitl/mirror.py)."""

    async def run() -> None:
        settings = runtime.settings
        assert isinstance(settings, HitlSettings)  # noqa: S101
        mirror: PolicyMirror = runtime.extras["policy_mirror"]
        while not runtime.stop_event.is_set():
            mirror.wake.clear()
            with contextlib.suppress(RedisError, SQLAlchemyError, OSError):  # logged by the mirror / PG probe
                await mirror.mirror_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(runtime.stop_event, mirror.wake), settings.policy_mirror_interval_s)

    return run


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("approval-requests", _requests_consumer),
    ("expiry", _expiry),
    ("policy-mirror", _policy_mirror),
)
