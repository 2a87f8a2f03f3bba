"""Fixtures that more than one integration module takes.

Events (test_events_*.py): a private schema with its own outbox and inbox, a sessionmaker, a producer.
The paper venue (test_paper_venue_*.py): a fresh instrument, a fake clock at START, a fresh account.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import sessionmaker_for
from shared.domain.types import AccountId, Symbol
from shared.events import EventProducer, EventTables
from tests.contract.conftest import FakeClock, unique_symbol
from tests.kit.paper_venue import START


@pytest.fixture
async def tables(engine: AsyncEngine) -> AsyncIterator[EventTables]:
    """A private schema with its own outbox, inbox and an `effects` table for consumer side effects."""
    schema = f"evt_{uuid.uuid4().hex[:8]}"
    event_tables = EventTables(schema)
    sa.Table(
        "effects",
        event_tables.metadata,
        sa.Column("business_id", sa.Text, primary_key=True),
        sa.Column("applied_count", sa.Integer, nullable=False),
    )
    async with engine.begin() as conn:
        await conn.execute(sa.schema.CreateSchema(schema))
        await conn.run_sync(event_tables.metadata.create_all)
    yield event_tables
    async with engine.begin() as conn:
        await conn.execute(sa.schema.DropSchema(schema, cascade=True))


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker_for(engine)


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[EventProducer]:
    producer = EventProducer(kafka_bootstrap, client_id="test-events")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
def symbol() -> Symbol:
    return unique_symbol()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def account() -> AccountId:
    return AccountId(f"acct-{uuid.uuid4().hex[:12]}")
