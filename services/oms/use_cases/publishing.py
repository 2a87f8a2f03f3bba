"""Order events out through the outbox, each with its audit entry, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.metrics import ORDER_TRANSITIONS
from services.oms.repository import OmsRepository
from shared.audit import append as audit_append
from shared.contracts.balances import BalanceChanged
from shared.contracts.base import outbox_payload
from shared.domain.ledger import Ledger, LedgerUpdate
from shared.domain.orders import Order, OrderEvent
from shared.events import Envelope, add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import OMS_BALANCE_EVENTS, OMS_ORDER_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)


def order_payload(order: Order, event: OrderEvent, exits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The payload of an order event on oms.order-events.v1: the event, the order's identity and its exits."""
    payload: dict[str, Any] = dict(event.to_payload())
    payload.update(
        account_id=order.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side.value,
        status=order.status.value,
        exits=None if exits is None else dict(exits),
    )
    return payload


async def publish_order_events(
    session: AsyncSession, tables: EventTables, order: Order, events: Sequence[OrderEvent], actor: str
) -> None:
    """Outbox event and audit entry for every transition, in the caller's transaction."""
    exits = await OmsRepository(session).order_exits(order.id)
    for event in events:
        payload = order_payload(order, event, exits)
        envelope = Envelope.new(
            type=event.event_type, producer="oms", aggregate_id=order.id, payload=payload, now=event.occurred_at
        )
        await add_to_outbox(session, tables, topic=OMS_ORDER_EVENTS, envelope=envelope, key=order.id)
        await audit_append(
            session,
            actor=actor,
            action=f"order.{event.event_type}",
            target=order.id,
            details=payload,
            chain=f"oms:{order.account_id}",
            occurred_at=event.occurred_at,
        )
        ORDER_TRANSITIONS.labels(event=event.event_type).inc()


async def save_ledger(
    session: AsyncSession, tables: EventTables, before: Ledger, update: LedgerUpdate, now: datetime
) -> None:
    """Persist the ledger change and announce every balance it moved (`BalanceChanged`, keyed by account id)."""
    repo = OmsRepository(session)
    await repo.save_ledger(before, update)
    after = update.ledger
    changed = [asset for asset, balance in after.balances.items() if before.balances.get(asset) != balance]
    versions = await repo.balance_versions(after.account_id, changed)
    for asset in changed:
        version = versions.get(asset)
        if version is None:  # every ledger change is journaled: this is a bug, loud but not fatal to the fill
            log.error("balance_changed_without_journal", account_id=after.account_id, asset=asset)
            continue
        balance = after.balances[asset]
        message = BalanceChanged(
            account_id=after.account_id,
            asset=asset,
            total=balance.total,
            available=balance.free,
            reserved=balance.reserved,
            version=version,
            changed_at=now,
        )
        envelope = Envelope.new(
            type=BalanceChanged.TYPE,
            producer="oms",
            aggregate_id=after.account_id,
            payload=outbox_payload(message),
            now=now,
        )
        await add_to_outbox(session, tables, topic=OMS_BALANCE_EVENTS, envelope=envelope, key=after.account_id)
