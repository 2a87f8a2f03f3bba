"""The outbox: messages written in the same transaction as the state change they announce."""

from __future__ import annotations

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
    await session.execute(
        insert(tables.outbox).values(
            event_id=envelope.event_id,
            topic=validate_kafka_name(topic),
            key=key if key is not None else envelope.aggregate_id,
            event_type=envelope.type,
            # The whole envelope as JSON: the relay publishes exactly what was written here.
            payload=envelope.model_dump(mode="json"),
            headers={name: value.decode() for name, value in envelope.kafka_headers()},
        )
    )
