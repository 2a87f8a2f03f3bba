"""Fixtures that more than one integration module takes.

Events (test_events_*.py): a private schema with its own outbox and inbox, a sessionmaker, a producer.
The paper venue (test_paper_venue_*.py): a fresh instrument, a fake clock at START, a fresh account.
The hedge service (test_hedge_api_*.py): a database of its own, unique topics, its settings, `start_hedge`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.hedge.adapters import HedgeAdapters
from services.hedge.app import create_app
from services.hedge.config import HedgeSettings
from shared.app_factory import adapters_of
from shared.auth.keys import public_key_pem
from shared.config import AetherSettings
from shared.db import sessionmaker_for
from shared.domain.types import AccountId, Symbol
from shared.events import EventProducer, EventTables
from tests.contract.conftest import FakeClock, unique_symbol
from tests.helpers import eventually, own_database
from tests.kit.auth import KEY
from tests.kit.hedge import Hedge, HedgeFactory
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


@pytest.fixture(scope="module")
def hedge_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_api") as url:
        yield url


@pytest.fixture
def hedge_topics() -> dict[str, str]:
    """Every topic the service writes or reads, unique to the test."""
    names = ("commands", "order_events", "recommendation", "target", "marketdata_book", "marketdata_trade")
    return {f"{name}_topic": f"test.hedge-{name.replace('_', '-')}.{uuid.uuid4().hex[:10]}.v1" for name in names}


@pytest.fixture
def hedge_settings(settings: AetherSettings, hedge_database_url: str, hedge_topics: dict[str, str]) -> HedgeSettings:
    return HedgeSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(hedge_database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        log_level="WARNING",
        vol_sample_interval_s=0,
        volatility_source="ewma",  # these tests drive the volatility with prices
        revalue_interval_s=3_600,  # balances come from the test (test_hedge_nav.py publishes them to Kafka)
        hedge_symbol=f"X{uuid.uuid4().hex[:8].upper()}/USD",  # volatility state is per symbol: one per test
        **hedge_topics,
    )


@pytest.fixture
def start_hedge(hedge_settings: HedgeSettings) -> HedgeFactory:
    @asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[Hedge]:
        settings = hedge_settings.model_copy(update=changes) if changes else hedge_settings
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hedge") as client:
                await eventually(lambda: _ready(client), timeout_s=20, message="hedge ready")
                yield Hedge(client, adapters_of(app.state.runtime, HedgeAdapters))

    return start


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200
