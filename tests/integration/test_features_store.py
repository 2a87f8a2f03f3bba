"""The streaming feature worker against the real PostgreSQL (feature table, outbox, rollbacks), the batch recompute
from the stored trades and book snapshots, and the analytics features endpoint."""

from __future__ import annotations

import itertools
import json
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from data.features import store
from data.features.definitions import FEATURES, BookTracker, FeatureInputError
from data.features.stream import GRACE_US, FeatureBar, FeatureStream
from data.features.worker import FeatureWorker
from data.replay.source import SyntheticMarket
from services.analytics.app import create_app
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.features import FeaturesComputed
from shared.contracts.registry import parse_as
from shared.events import Envelope, EventTables
from shared.events.topics import ANALYTICS_FEATURE_EVENTS
from shared.marketdata import MarketData, Trade, to_envelope
from tests.helpers import eventually
from tests.kit.auth import jwt_settings, token

START = datetime(2026, 2, 1, tzinfo=UTC)
VENUE = "synthetic"  # SyntheticMarket's venue: a seeded random walk, not real data


class Rollback(Exception):
    """Raised inside a transaction after the worker ran, to undo its attempt."""


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)


def _values(bar: FeatureBar | dict[str, object]) -> list[bytes | None]:
    source = bar.values if isinstance(bar, FeatureBar) else bar
    return [_bits(source[name]) for name in FEATURES]  # type: ignore[arg-type]


@pytest.fixture
def symbol() -> str:
    return f"F{uuid.uuid4().hex[:8].upper()}/USD"


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def messages(symbol: str) -> list[MarketData]:
    market = SyntheticMarket(symbol=symbol, seed=31, start_at=START, step_s=15.0)
    return list(itertools.islice(market.messages(), 900))  # about 80 one-minute bars


async def _rows(sessions: async_sessionmaker[AsyncSession], symbol: str) -> list[dict[str, object]]:
    async with sessions() as session:
        rows = await store.query(session, symbol, START - timedelta(days=1), START + timedelta(days=1), venue=VENUE,
                                 limit=500)  # fmt: skip
    return [dict(row) for row in rows]


async def test_worker_writes_and_publishes_each_closed_bar_once_and_recompute_agrees(
    sessions: async_sessionmaker[AsyncSession], symbol: str, messages: list[MarketData]
) -> None:
    worker = FeatureWorker(EventTables("analytics"))
    for index, message in enumerate(messages):
        if index % 7 == 0:  # a failed attempt first: its transaction rolls back, the state must too
            with pytest.raises(Rollback):
                await _failed_attempt(sessions, worker, message)
        async with sessions.begin() as session:
            await worker.handle(session, to_envelope(message, "test"))

    reference = FeatureStream(grace_us=GRACE_US)  # what the worker runs
    closed = [bar for message in messages for bar in reference.on_message(message)]
    rows = await _rows(sessions, symbol)
    assert len(closed) > 40
    assert [store.from_us(bar.bar_us) for bar in closed] == [row["bar_start"] for row in rows]
    assert [_values(bar) for bar in closed] == [_values(row) for row in rows]

    async with sessions() as session:
        published = (
            await session.execute(
                sa.text("SELECT topic, key, payload FROM analytics.outbox WHERE key = :key ORDER BY id"),
                {"key": symbol},
            )
        ).all()
    assert {(topic, key) for topic, key, _ in published} == {(ANALYTICS_FEATURE_EVENTS, symbol)}
    events = [parse_as(FeaturesComputed, Envelope.model_validate(payload)) for _, _, payload in published]
    assert [event.bar_start for event in events] == [row["bar_start"] for row in rows]
    assert [[_bits(getattr(event, name)) for name in FEATURES] for event in events] == [_values(bar) for bar in closed]

    # The same data stored as the store keeps it, recomputed by the batch engine: the same values, plus the
    # bar the stream still holds open.
    await _store_inputs(sessions, messages)
    async with sessions.begin() as session:
        written = await store.recompute(session, VENUE, symbol, START, START + timedelta(hours=2))
    everything = closed + reference.flush()
    rows = await _rows(sessions, symbol)
    assert written == len(everything) == len(rows)
    assert [_values(bar) for bar in everything] == [_values(row) for row in rows]


async def _failed_attempt(
    sessions: async_sessionmaker[AsyncSession], worker: FeatureWorker, message: MarketData
) -> None:
    async with sessions.begin() as session:
        await worker.handle(session, to_envelope(message, "test"))
        raise Rollback


async def _store_inputs(sessions: async_sessionmaker[AsyncSession], messages: list[MarketData]) -> None:
    tracker = BookTracker()
    trades, snapshots = [], []
    for message in messages:
        if isinstance(message, Trade):
            trades.append(
                {"venue": message.venue, "instrument": message.symbol, "trade_id": message.trade_id,
                 "traded_at": message.timestamp, "price": message.price, "quantity": message.qty,
                 "side": message.side.value}
            )  # fmt: skip
            continue
        tracker.apply(message)
        bids = [[str(p), str(tracker.bids[p])] for p in sorted(tracker.bids, reverse=True)[:10]]
        asks = [[str(p), str(tracker.asks[p])] for p in sorted(tracker.asks)[:10]]
        snapshots.append(
            {"venue": message.venue, "instrument": message.symbol, "taken_at": message.timestamp,
             "sequence": message.sequence, "bids": bids, "asks": asks}
        )  # fmt: skip
    async with sessions.begin() as session:
        await session.execute(
            sa.text(
                "INSERT INTO marketdata.trades (venue, instrument, trade_id, traded_at, price, quantity, side) "
                "VALUES (:venue, :instrument, :trade_id, :traded_at, :price, :quantity, :side)"
            ),
            trades,
        )
        await session.execute(
            sa.text(
                "INSERT INTO marketdata.book_snapshots (venue, instrument, taken_at, sequence, reason, depth, bids, asks) "
                "VALUES (:venue, :instrument, :taken_at, :sequence, 'snapshot', 10, CAST(:bids AS jsonb), CAST(:asks AS jsonb))"
            ),
            [{**row, "bids": _json(row["bids"]), "asks": _json(row["asks"])} for row in snapshots],
        )


def _json(value: object) -> str:
    return json.dumps(value)


@pytest.fixture
async def analytics(settings: AetherSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"log_level": "WARNING", **jwt_settings()}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as client:
            await eventually(lambda: _ready(client), timeout_s=30, message="analytics ready")
            yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_features_endpoint_pages_a_range_and_names_bad_fields(
    analytics: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession], symbol: str, messages: list[MarketData]
) -> None:
    stream = FeatureStream()
    bars = [bar for message in messages for bar in stream.on_message(message)]
    async with sessions.begin() as session:
        await store.save_bars(session, bars)
    headers = token(Role.VIEWER)
    query = {"symbol": symbol, "venue": VENUE, "from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}

    seen: list[dict[str, object]] = []
    params = {**query, "limit": "20"}
    while True:
        response = await analytics.get("/analytics/features", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["items"]
        if page["next_from"] is None:
            break
        params = {**params, "from": page["next_from"]}
    assert [item["bar_start"] for item in seen] == [store.from_us(bar.bar_us).isoformat() for bar in bars]
    assert [item["rv_5"] for item in seen] == [bar.values["rv_5"] for bar in bars]  # JSON floats round-trip

    async def error(**changes: str) -> tuple[int, object]:
        response = await analytics.get("/analytics/features", params={**query, **changes}, headers=headers)
        return response.status_code, response.json()["error"].get("details", {}).get("field")

    assert await error(**{"from": query["to"], "to": query["from"]}) == (422, "from")
    assert await error(to=(START + timedelta(days=40)).isoformat()) == (422, "to")
    assert await error(symbol="NOPE/USD") == (404, "symbol")
    assert (
        await analytics.get("/analytics/features", params={**query, "symbol": "btc-usd"}, headers=headers)
    ).status_code == 422
    assert (await analytics.get("/analytics/features", params=query)).status_code == 401


async def test_a_malformed_stored_row_is_named_with_its_position(
    sessions: async_sessionmaker[AsyncSession], symbol: str
) -> None:
    at = START + timedelta(seconds=5)
    async with sessions.begin() as session:
        await session.execute(
            sa.text(
                "INSERT INTO marketdata.book_snapshots (venue, instrument, taken_at, sequence, reason, depth, bids, asks) "
                """VALUES (:venue, :symbol, :at, 0, 'snapshot', 10, '[["100", "1"], ["99"]]', '[]')"""
            ),
            {"venue": VENUE, "symbol": symbol, "at": at},
        )
    with pytest.raises(FeatureInputError) as refused:
        async with sessions() as session:
            await store.read_inputs(session, VENUE, symbol, START, START + timedelta(minutes=1))
    assert str(refused.value) == (
        f"marketdata.book_snapshots {VENUE} {symbol} taken_at {at.isoformat()}: bids.1.qty: Field required"
    )

    other = f"G{symbol[1:]}"
    async with sessions.begin() as session:
        await session.execute(
            sa.text(
                "INSERT INTO marketdata.trades (venue, instrument, trade_id, traded_at, price, quantity, side) "
                "VALUES (:venue, :symbol, 'T-9', :at, 100, 0.000000001, 'buy')"
            ),
            {"venue": VENUE, "symbol": other, "at": at},
        )
    with pytest.raises(FeatureInputError, match=rf"marketdata.trades {VENUE} {other} trade_id T-9: qty .* 8 decimals"):
        async with sessions() as session:
            await store.read_inputs(session, VENUE, other, START, START + timedelta(minutes=1))
