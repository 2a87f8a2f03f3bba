"""Order events out through the outbox, each with its audit entry, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import JsonValue
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.ledger_repository import LedgerRepository
from services.oms.metrics import ORDER_TRANSITIONS
from shared.audit import AuditEntry
from shared.audit import append_many as audit_append_many
from shared.contracts.balances import BalanceChanged
from shared.contracts.base import ContractViolation, outbox_payload
from shared.contracts.cashflows import OMS_CASHFLOW_EVENTS, CashFlowRecorded
from shared.contracts.orders import ORDER_EVENTS, OrderEventMessage
from shared.contracts.registry import new_envelope
from shared.domain.ledger import Ledger, LedgerUpdate
from shared.domain.order_events import OrderEvent
from shared.domain.orders import Order
from shared.events import OutboxItem, add_many_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import OMS_BALANCE_EVENTS, OMS_ORDER_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)


_ORDER_EVENT_MODELS: Mapping[str, type[OrderEventMessage]] = {model.TYPE: model for model in ORDER_EVENTS}


def order_event_message(order: Order, event: OrderEvent, exits: Mapping[str, Any] | None = None) -> OrderEventMessage:
    """The contract message of a domain order event (oms.order-events.v1): the event, the order's identity, its
    exits. A domain event without a contract model is a ContractViolation, never an untyped payload."""
    model = _ORDER_EVENT_MODELS.get(event.event_type)
    if model is None:
        raise ContractViolation(f"order event {event.event_type!r} has no contract model")
    return model.model_validate(
        {
            **event.to_payload(),
            "account_id": order.account_id,
            "client_order_id": order.client_order_id,
            "symbol": order.symbol,
            "side": order.side,
            "status": order.status,
            "exits": None if exits is None else dict(exits),
        }
    )


def order_payload(order: Order, event: OrderEvent, exits: Mapping[str, Any] | None = None) -> dict[str, JsonValue]:
    """The payload of an order event on oms.order-events.v1 (its contract message as JSON)."""
    return outbox_payload(order_event_message(order, event, exits))


async def publish_order_events(
    session: AsyncSession,
    tables: EventTables,
    order: Order,
    events: Sequence[OrderEvent],
    actor: str,
    *,
    exits: Mapping[str, Any] | None,
    queued_first: Sequence[OutboxItem] = (),
) -> None:
    """Outbox event and audit entry for every transition, in the caller's transaction: one outbox insert and one
    audit append for all of them. `exits` is the order's stored exits (the caller loaded the order with them).
    `queued_first`: the transaction's other outbox items (its balance changes), written ahead of the order's events
    in the same insert."""
    messages = [order_event_message(order, event, exits) for event in events]
    await add_many_to_outbox(
        session,
        tables,
        [
            *queued_first,
            *(
                OutboxItem(
                    OMS_ORDER_EVENTS,
                    new_envelope(message, producer="oms", aggregate_id=order.id, now=event.occurred_at),
                    key=order.id,
                )
                for message, event in zip(messages, events, strict=True)
            ),
        ],
    )
    if not events:
        return
    entries = [
        AuditEntry(
            actor=actor,
            action=f"order.{message.TYPE}",
            target=order.id,
            details=outbox_payload(message),
            occurred_at=event.occurred_at,
        )
        for message, event in zip(messages, events, strict=True)
    ]
    await audit_append_many(session, entries, chain=f"oms:{order.account_id}")
    for message in messages:
        ORDER_TRANSITIONS.labels(event=message.TYPE).inc()


async def save_ledger(
    session: AsyncSession, tables: EventTables, before: Ledger, update: LedgerUpdate, now: datetime
) -> None:
    """Persist the ledger change and announce every balance it moved (`BalanceChanged`, keyed by account id)."""
    await add_many_to_outbox(session, tables, await persist_ledger(session, before, update, now))


async def persist_ledger(
    session: AsyncSession, before: Ledger, update: LedgerUpdate, now: datetime
) -> list[OutboxItem]:
    """Persist the ledger change; the `BalanceChanged` announcements of every balance it moved, for the caller to
    queue in the same transaction (with its order events: one outbox insert)."""
    repo = LedgerRepository(session)
    versions = await repo.save_ledger(before, update)  # the new journal entries' ids: no query for the versions
    after = update.ledger
    changed = [asset for asset, balance in after.balances.items() if before.balances.get(asset) != balance]
    unjournaled = [asset for asset in changed if asset not in versions]
    if unjournaled:
        versions = {**versions, **await repo.balance_versions(after.account_id, unjournaled)}
    items = []
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
        envelope = new_envelope(message, producer="oms", aggregate_id=after.account_id, now=now)
        items.append(OutboxItem(OMS_BALANCE_EVENTS, envelope, key=after.account_id))
    return items


async def publish_cash_flow(session: AsyncSession, tables: EventTables, flow: CashFlowRecorded) -> None:
    """Announce a deposit, withdrawal or transfer (`CashFlowRecorded`) in the caller's transaction."""
    envelope = new_envelope(flow, producer="oms", aggregate_id=flow.account_id, now=flow.occurred_at)
    await add_many_to_outbox(session, tables, [OutboxItem(OMS_CASHFLOW_EVENTS, envelope, key=flow.account_id)])
