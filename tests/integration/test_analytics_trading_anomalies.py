"""Issue 14, item 8: trading anomalies from the OMS's order events through Kafka (slippage vs the stored book, a
fill-rate drop), each logged and published once, none for normal fills; and crossed books, from the sink's
quarantine to one `crossed_book` anomaly per episode, with no crossed book stored."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from data.ingest import store
from data.ingest.sink import MarketDataSink
from services.analytics import repository
from services.analytics.anomalies import AnomalyLog, ScanPolicy
from services.analytics.app import create_app
from services.analytics.config import AnalyticsSettings
from services.analytics.repository import anomalies as anomalies_table
from services.analytics.trading import TradingPolicy, prune_outcomes
from shared.auth.roles import Role
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.contracts.orders import OrderCanceled, OrderFilled, OrderSubmitted
from shared.contracts.registry import new_envelope
from shared.db import marketdata as md
from shared.db import sessionmaker_for
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope, EventProducer, event_tables
from shared.events.topics import ANALYTICS_ANOMALY_EVENTS
from shared.marketdata import BookDelta, BookSnapshot, Level, to_envelope
from tests.contract.conftest import unique_symbol
from tests.helpers import eventually
from tests.kit.auth import bearer, jwt_settings
from tests.kit.factories import account_id
from tests.kit.oms import serving

CONSUMER = "analytics.order-events"


@pytest.fixture
def sessions(engine: Any) -> async_sessionmaker[AsyncSession]:
    return sessionmaker_for(engine)


@pytest.fixture
async def analytics(settings: AetherSettings) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    topic = f"test.oms-order-events.{uuid.uuid4().hex[:10]}.v1"
    base = settings.model_dump(exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level"})
    app = create_app(
        AnalyticsSettings(
            **base,
            **jwt_settings(),
            order_events_topic=topic,
            anomaly_slippage_bps=Decimal(50),
            anomaly_fill_rate_min_orders=4,
            anomaly_fill_rate_threshold=Decimal("0.5"),
        )
    )
    async with serving(app, "http://analytics") as http:
        yield http, topic


def _base(order_id: str, account: str, symbol: str, at: datetime, status: OrderStatus, version: int) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "occurred_at": at,
        "version": version,
        "account_id": account,
        "client_order_id": f"c-{order_id[:12]}",
        "symbol": symbol,
        "side": OrderSide.BUY,
        "status": status,
    }


def _submitted(order_id: str, account: str, symbol: str, at: datetime) -> Envelope:
    event = OrderSubmitted(**_base(order_id, account, symbol, at, OrderStatus.SUBMITTED, 2), approved=False)
    return new_envelope(event, producer="oms", aggregate_id=order_id)


def _filled(order_id: str, account: str, symbol: str, at: datetime, price: str) -> Envelope:
    event = OrderFilled(
        **_base(order_id, account, symbol, at, OrderStatus.FILLED, 4),
        trade_id=uuid.uuid4().hex,
        quantity=Decimal(1),
        price=Decimal(price),
        fee=Decimal(0),
        liquidity=Liquidity.TAKER,
        filled_quantity=Decimal(1),
        leaves_quantity=Decimal(0),
        is_final=True,
    )
    return new_envelope(event, producer="oms", aggregate_id=order_id)


def _canceled(order_id: str, account: str, symbol: str, at: datetime) -> Envelope:
    event = OrderCanceled(**_base(order_id, account, symbol, at, OrderStatus.CANCELED, 3), reason=None)
    return new_envelope(event, producer="oms", aggregate_id=order_id)


async def _processed(sessions: async_sessionmaker[AsyncSession], envelopes: Sequence[Envelope]) -> bool:
    inbox = event_tables("analytics").inbox
    ids = [e.event_id for e in envelopes]
    async with sessions() as session:
        done = await session.scalar(
            sa.select(sa.func.count()).where(inbox.c.consumer == CONSUMER, inbox.c.event_id.in_(ids))
        )
    return done == len(set(ids))


async def _logged(sessions: async_sessionmaker[AsyncSession], where: Any) -> list[Any]:
    async with sessions() as session:
        return list((await session.execute(sa.select(anomalies_table).where(where))).all())


async def _published(sessions: async_sessionmaker[AsyncSession], anomaly_ids: Sequence[str]) -> int:
    outbox = event_tables("analytics").outbox
    async with sessions() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).where(
                outbox.c.topic == ANALYTICS_ANOMALY_EVENTS,
                outbox.c.payload["payload"]["anomaly_id"].astext.in_(anomaly_ids),
            )
        )
    return int(count or 0)


async def test_slippage_and_a_fill_rate_drop_are_flagged_once_and_normal_fills_never(
    analytics: tuple[httpx.AsyncClient, str], sessions: async_sessionmaker[AsyncSession], kafka_bootstrap: str
) -> None:
    client, topic = analytics
    symbol, normal, slipping, idle = unique_symbol(), account_id(), account_id(), account_id()
    now = utc_now()
    book = BookSnapshot(
        venue="kraken",
        symbol=symbol,
        bids=[Level(price=Decimal("99.5"), qty=Decimal(2))],
        asks=[Level(price=Decimal("100.5"), qty=Decimal(3))],
        timestamp=now - timedelta(seconds=5),
        sequence=1,
    )
    async with sessions.begin() as session:
        await store.insert_book_snapshots(session, [store.SnapshotRow.of(book, "snapshot", 10)])

    envelopes: list[Envelope] = []
    for _ in range(5):  # five normal fills at the ask: no slippage, a fill rate of 1
        order = uuid.uuid4().hex
        envelopes += [_submitted(order, normal, symbol, now), _filled(order, normal, symbol, now, "100.5")]
    slipped = uuid.uuid4().hex
    slipped_at = now + timedelta(milliseconds=1)
    bad_fill = _filled(slipped, slipping, symbol, slipped_at, "103")  # +248.76 bps
    envelopes += [_submitted(slipped, slipping, symbol, now), bad_fill, bad_fill]  # the second is a redelivery
    for n in range(5):  # five canceled without a fill: rate 0 over 4, then over 5: one episode
        order = uuid.uuid4().hex
        at = now + timedelta(milliseconds=10 + n)
        envelopes += [_submitted(order, idle, symbol, at), _canceled(order, idle, symbol, at)]

    await _publish(kafka_bootstrap, topic, envelopes)
    await eventually(lambda: _processed(sessions, envelopes), timeout_s=30, message="every order event consumed")

    rows = await _logged(sessions, anomalies_table.c.symbol == symbol)
    assert sorted((r.kind, r.account_id) for r in rows) == sorted([("slippage", slipping), ("fill_rate_drop", idle)])
    slip = next(r for r in rows if r.kind == "slippage")
    assert (slip.venue, slip.magnitude, slip.observed_at) == ("kraken", Decimal("248.76"), slipped_at)
    drop = next(r for r in rows if r.kind == "fill_rate_drop")
    assert (drop.venue, drop.magnitude) == ("oms", Decimal(0))
    assert "0 of 4 orders" in drop.detail
    assert await _published(sessions, [r.anomaly_id for r in rows]) == 2

    # Account-scoped: a viewer granted only `normal` sees neither; one granted `slipping` sees its own.
    def headers(account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {bearer(Role.VIEWER, accounts=(account,))}"}

    async def seen(account: str) -> set[str]:
        response = await client.get("/analytics/anomalies", params={"limit": 500}, headers=headers(account))
        assert response.status_code == 200, response.text
        return {item["anomaly_id"] for item in response.json()["items"]}

    ids = {r.anomaly_id: r.account_id for r in rows}
    assert not set(ids) & await seen(normal)
    assert {a for a, owner in ids.items() if owner == slipping} == set(ids) & await seen(slipping)

    # Five filled orders lift `idle` back to 5 of 10 (the threshold): the episode ends; one more cancel, 5 of 11,
    # is a new episode and a second anomaly; further cancels are the same episode.
    later: list[Envelope] = []
    for n in range(5):
        order, at = uuid.uuid4().hex, now + timedelta(milliseconds=100 + n)
        later += [_submitted(order, idle, symbol, at), _filled(order, idle, symbol, at, "100.5")]
    for n in range(3):
        order, at = uuid.uuid4().hex, now + timedelta(milliseconds=200 + n)
        later += [_submitted(order, idle, symbol, at), _canceled(order, idle, symbol, at)]
    await _publish(kafka_bootstrap, topic, later)
    await eventually(lambda: _processed(sessions, later), timeout_s=30, message="the later events consumed")
    drops = await _logged(sessions, sa.and_(anomalies_table.c.account_id == idle, anomalies_table.c.symbol == symbol))
    assert sorted((r.kind, r.detail.split(" orders")[0]) for r in drops) == [
        ("fill_rate_drop", "0 of 4"),
        ("fill_rate_drop", "5 of 11"),
    ]


async def _publish(bootstrap: str, topic: str, envelopes: Sequence[Envelope]) -> None:
    producer = EventProducer(bootstrap=bootstrap, client_id="analytics-test")
    await producer.start()
    try:
        for envelope in envelopes:  # by account (the OMS keys by order): the counts asserted need one order
            await producer.send(topic, envelope, key=str(envelope.payload["account_id"]))
    finally:
        await producer.stop()


def _records(topic: str, values: list[bytes]) -> list[ConsumerRecord[Any, Any]]:
    return [ConsumerRecord(topic, 0, n, 0, 0, None, value, None, 0, len(value), ()) for n, value in enumerate(values)]


async def test_a_crossed_book_is_one_anomaly_per_episode_and_never_stored(
    sessions: async_sessionmaker[AsyncSession], kafka_bootstrap: str
) -> None:
    symbol, topic, venue = unique_symbol(), f"test.{uuid.uuid4().hex[:8]}.v1", f"v{uuid.uuid4().hex[:8]}"
    t0 = utc_now() - timedelta(minutes=5)

    def at(seconds: int) -> datetime:
        return t0 + timedelta(seconds=seconds)

    def level(price: str) -> list[Level]:
        return [Level(price=Decimal(price), qty=Decimal(1))]

    snapshot = BookSnapshot(
        venue=venue, symbol=symbol, bids=level("99"), asks=level("101"), timestamp=at(0), sequence=1
    )
    crossing = BookDelta(venue=venue, symbol=symbol, bids=level("102"), timestamp=at(1), sequence=2)
    after = BookDelta(venue=venue, symbol=symbol, asks=level("103"), timestamp=at(2), sequence=3)  # same episode
    resync = snapshot.model_copy(update={"timestamp": at(3), "sequence": 10})
    feed = to_envelope(resync, "t")
    crossed_bids = [{"price": "105", "qty": "1"}]  # above the ask 101: the contract refuses it
    crossed_feed = feed.model_copy(
        update={"payload": {**feed.payload, "bids": crossed_bids, "timestamp": at(4).isoformat(), "sequence": 11}}
    )
    values = [to_envelope(m, "t").to_bytes() for m in (snapshot, crossing, after, resync)] + [crossed_feed.to_bytes()]
    sink = MarketDataSink(bootstrap=kafka_bootstrap, sessionmaker=sessions, snapshot_interval_s=0.5, depth=4)
    await sink.store_batch(_records(topic, values))
    await sink.store_batch(_records(topic, values))  # redelivered: nothing twice

    scan = AnomalyLog(sessions, event_tables("analytics"), ScanPolicy(stale_after_s=86_400))
    await scan.scan(utc_now())
    assert [a for a in await scan.scan(utc_now()) if a.venue == venue] == []  # seen already: nothing new
    rows = await _logged(sessions, sa.and_(anomalies_table.c.venue == venue, anomalies_table.c.symbol == symbol))
    assert sorted((r.kind, r.observed_at) for r in rows) == [("crossed_book", at(1)), ("crossed_book", at(4))]
    assert all(r.account_id is None for r in rows)
    assert await _published(sessions, [r.anomaly_id for r in rows]) == 2
    async with sessions() as session:
        stored = (
            await session.execute(sa.select(md.book_snapshots).where(md.book_snapshots.c.instrument == symbol))
        ).all()
    assert [(b.sequence, b.reason) for b in stored] == [(1, "snapshot"), (10, "snapshot")]
    assert all(Decimal(b.bids[0][0]) < Decimal(b.asks[0][0]) for b in stored)


async def test_outcomes_older_than_two_windows_are_pruned(sessions: async_sessionmaker[AsyncSession]) -> None:
    policy, now, account = TradingPolicy(fill_rate_window=timedelta(hours=1)), utc_now(), account_id()
    old, recent = uuid.uuid4().hex, uuid.uuid4().hex
    async with sessions.begin() as session:
        for order, at in ((old, now - timedelta(hours=2, seconds=1)), (recent, now - timedelta(hours=1, minutes=59))):
            await repository.record_outcome(session, order, account, "BTC/USD", at, filled=False, closed=True)
        assert await prune_outcomes(session, now, policy) >= 1
        left = await session.scalars(
            sa.select(repository.order_outcomes.c.order_id).where(repository.order_outcomes.c.account_id == account)
        )
        assert list(left) == [recent]
