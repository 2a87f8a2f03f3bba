"""What the R3 tests share: a schema with an outbox, an inbox and an `effects` table; the effect handler; reading a
topic to its end; counting unsent rows and out-of-order applications."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import UnitOfWork
from shared.events import Envelope, EventTables
from shared.events.consumer import Handler


async def effects_schema(engine: AsyncEngine) -> AsyncIterator[tuple[EventTables, sa.Table]]:
    """A private schema with outbox, inbox and `effects` (one row per business id, counting its applications)."""
    name = f"evt_{uuid.uuid4().hex[:8]}"
    tables = EventTables(name)
    effects = sa.Table(
        "effects",
        tables.metadata,
        sa.Column("business_id", sa.Text, primary_key=True),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("applied_count", sa.Integer, nullable=False),
        sa.Column("applied_order", sa.BigInteger, sa.Identity(always=True), nullable=False),
    )
    async with engine.begin() as conn:
        await conn.execute(sa.schema.CreateSchema(name))
        await conn.run_sync(tables.metadata.create_all)
    yield tables, effects
    async with engine.begin() as conn:
        await conn.execute(sa.schema.DropSchema(name, cascade=True))


def effect_applier(effects: sa.Table) -> Handler:
    """The consumers' side effect: count one application of the event's business id (in the inbox's transaction)."""

    async def apply_effect(session: AsyncSession, envelope: Envelope) -> None:
        statement = insert(effects).values(
            business_id=str(envelope.payload["business_id"]),
            aggregate_id=envelope.aggregate_id,
            seq=int(str(envelope.payload["seq"])),
            applied_count=1,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[effects.c.business_id], set_={"applied_count": effects.c.applied_count + 1}
        )
        await session.execute(statement)

    return apply_effect


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic`, from the beginning to the end offsets at call time."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = sorted(consumer.assignment())
        end_offsets = await consumer.end_offsets(tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < end_offsets[tp]]:
            assert time.monotonic() < deadline, "topic not read to its end in time"
            for batch in (await consumer.getmany(*tps, timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def unsent_rows(sessions: async_sessionmaker[AsyncSession], tables: EventTables) -> int:
    outbox = tables.outbox
    async with UnitOfWork(sessions) as uow:
        count = await uow.session.scalar(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        )
    return int(count or 0)


def out_of_order_applications(applied: list[Any]) -> int:
    """Applications whose per-aggregate sequence number is not the previous one + 1."""
    last: dict[str, int] = defaultdict(int)
    wrong = 0
    for row in applied:
        if row.seq != last[row.aggregate_id] + 1:
            wrong += 1
        last[row.aggregate_id] = row.seq
    return wrong


async def applied_effects(sessions: async_sessionmaker[AsyncSession], effects: sa.Table) -> list[Any]:
    """Every effect row in the order it was first applied."""
    async with UnitOfWork(sessions) as uow:
        return list(
            (
                await uow.session.execute(
                    sa.select(effects.c.aggregate_id, effects.c.seq, effects.c.applied_count).order_by(
                        effects.c.applied_order
                    )
                )
            ).all()
        )
