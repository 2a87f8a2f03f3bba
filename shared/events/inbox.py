"""The inbox: one row per (consumer, event id), written in the same transaction as the message's side effect."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.envelope import Envelope
from shared.events.tables import EventTables


async def claim(
    session: AsyncSession,
    tables: EventTables,
    *,
    consumer: str,
    envelope: Envelope,
    topic: str,
    partition: int,
    offset: int,
) -> bool:
    """Record that `consumer` handles `envelope` in the caller's transaction; False when it already has."""
    inbox = tables.inbox
    statement = (
        insert(inbox)
        .values(consumer=consumer, event_id=envelope.event_id, topic=topic, partition=partition, offset=offset)
        .on_conflict_do_nothing(index_elements=[inbox.c.consumer, inbox.c.event_id])
        .returning(inbox.c.event_id)
    )
    # A concurrent claim of the same event waits for the other transaction, then finds the row (or takes it).
    return (await session.execute(statement)).first() is not None
