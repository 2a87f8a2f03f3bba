"""The outbox: messages written in the same transaction as the state change they announce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Envelope
from shared.events.tables import EventTables
from shared.events.topics import validate_kafka_name


async def add_to_outbox(
    session: AsyncSession,
    tables: EventTables,
    *,
    topic: str,
    envelope: Envelope,
    key: str | None = None,
) -> None:
    """Queue `envelope` for `topic` inside the caller's transaction (never commits); key defaults to the aggregate id."""
    await add_many_to_outbox(session, tables, [OutboxItem(topic, envelope, key)])


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message to queue: its topic, its envelope, its key (None: the envelope's aggregate id)."""

    topic: str
    envelope: Envelope
    key: str | None = None


async def add_many_to_outbox(session: AsyncSession, tables: EventTables, items: Sequence[OutboxItem]) -> None:
    """Queue `items`, in order, inside the caller's transaction (never commits): one multi-row insert."""
    if items:
        await session.execute(insert(tables.outbox), [_row(item) for item in items])


def _row(item: OutboxItem) -> dict[str, Any]:
    envelope = item.envelope
    return {
        "event_id": envelope.event_id,
        "topic": validate_kafka_name(item.topic),
        "key": item.key if item.key is not None else envelope.aggregate_id,
        "event_type": envelope.type,
        # The whole envelope as JSON: the relay publishes exactly what was written here.
        "payload": envelope.model_dump(mode="json"),
        "headers": {name: value.decode() for name, value in envelope.kafka_headers()},
    }
