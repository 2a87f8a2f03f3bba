"""Issue 14, item 8: PnL jumps. The OMS's fills through Kafka build each account's average-cost position; valued at
the stored marks, a move of its PnL in a symbol beyond the threshold within the window is one `pnl_jump` anomaly
per episode (logged and published once, with the account); a price move without a fill is seen by the scan."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from data.ingest import store
from services.analytics import repository
from services.analytics.anomalies import record
from services.analytics.app import create_app
from services.analytics.config import AnalyticsSettings
from services.analytics.pnl_jumps import PnlJumpPolicy, PnlJumps
from services.analytics.repository import anomalies as anomalies_table
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.contracts.orders import OrderFilled
from shared.contracts.registry import new_envelope
from shared.db import sessionmaker_for
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope, EventProducer, event_tables
from shared.events.topics import ANALYTICS_ANOMALY_EVENTS
from shared.marketdata import BookSnapshot, Level, Trade
from tests.contract.conftest import unique_symbol
from tests.helpers import eventually
from tests.kit.auth import jwt_settings
from tests.kit.factories import account_id
from tests.kit.oms import serving

CONSUMER = "analytics.order-events"
POLICY = PnlJumpPolicy(quote=Decimal(1_000), window=timedelta(minutes=5))


@pytest.fixture
def sessions(engine: Any) -> async_sessionmaker[AsyncSession]:
    return sessionmaker_for(engine)


@pytest.fixture
async def analytics(settings: AetherSettings) -> AsyncIterator[str]:
    topic = f"test.oms-order-events.{uuid.uuid4().hex[:10]}.v1"
    base = settings.model_dump(exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level"})
    app = create_app(
        AnalyticsSettings(
            **base,
            **jwt_settings(),
            order_events_topic=topic,
            anomaly_scan_s=3_600,  # the test runs the PnL scan itself, at instants it chooses
            anomaly_pnl_jump_quote=POLICY.quote,
            anomaly_pnl_jump_window_minutes=5,
        )
    )
    async with serving(app, "http://analytics"):
        yield topic


def _filled(account: str, symbol: str, at: datetime, side: OrderSide, quantity: str, price: str) -> Envelope:
    order = uuid.uuid4().hex
    event = OrderFilled(
        order_id=order,
        occurred_at=at,
        version=4,
        account_id=account,
        client_order_id=f"c-{order[:12]}",
        symbol=symbol,
        side=side,
        status=OrderStatus.FILLED,
        trade_id=uuid.uuid4().hex,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(1),
        liquidity=Liquidity.TAKER,
        filled_quantity=Decimal(quantity),
        leaves_quantity=Decimal(0),
        is_final=True,
    )
    return new_envelope(event, producer="oms", aggregate_id=order)


def _trade(symbol: str, at: datetime, price: str) -> Trade:
    return Trade(
        venue="kraken",
        symbol=symbol,
        trade_id=uuid.uuid4().hex[:16],
        price=Decimal(price),
        qty=Decimal(1),
        side=OrderSide.BUY,
        timestamp=at,
    )


async def _publish(bootstrap: str, topic: str, envelopes: Sequence[Envelope]) -> None:
    producer = EventProducer(bootstrap=bootstrap, client_id="analytics-pnl-test")
    await producer.start()
    try:
        for envelope in envelopes:  # keyed by account: one account's fills in order
            await producer.send(topic, envelope, key=str(envelope.payload["account_id"]))
    finally:
        await producer.stop()


async def _processed(sessions: async_sessionmaker[AsyncSession], envelopes: Sequence[Envelope]) -> bool:
    inbox = event_tables("analytics").inbox
    ids = {e.event_id for e in envelopes}
    async with sessions() as session:
        done = await session.scalar(
            sa.select(sa.func.count()).where(inbox.c.consumer == CONSUMER, inbox.c.event_id.in_(ids))
        )
    return done == len(ids)


async def _jumps(sessions: async_sessionmaker[AsyncSession], symbol: str) -> list[Any]:
    a = anomalies_table
    query = sa.select(a).where(a.c.symbol == symbol, a.c.kind == "pnl_jump").order_by(a.c.observed_at)
    async with sessions() as session:
        return list((await session.execute(query)).all())


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


async def test_a_pnl_jump_is_one_anomaly_per_episode_from_fills_and_from_the_scan(
    analytics: str, sessions: async_sessionmaker[AsyncSession], kafka_bootstrap: str
) -> None:
    symbol, unmarked, jumping, calm = unique_symbol(), unique_symbol(), account_id(), account_id()
    t0 = utc_now() - timedelta(minutes=30)
    book = BookSnapshot(
        venue="kraken",
        symbol=symbol,
        bids=[Level(price=Decimal("99.5"), qty=Decimal(2))],
        asks=[Level(price=Decimal("100.5"), qty=Decimal(3))],
        timestamp=t0 - timedelta(seconds=10),
        sequence=1,
    )
    async with sessions.begin() as session:
        await store.insert_book_snapshots(session, [store.SnapshotRow.of(book, "snapshot", 10)])
        await store.insert_trades(session, [_trade(symbol, t0 + timedelta(milliseconds=500), "300")])

    # jumping: 10 bought at 100 (mark: the mid 100; PnL -1, the fee); then the trade at 300 marks the next fill:
    # 11 at an average 100 are worth 3300 (PnL 2198, +2199 within the window): one jump. A third fill in the same
    # window is the same episode; the redelivered fill changes nothing (the inbox).
    second = _filled(jumping, symbol, t0 + timedelta(seconds=1), OrderSide.BUY, "1", "100")
    envelopes = [
        _filled(jumping, symbol, t0, OrderSide.BUY, "10", "100"),
        second,
        second,
        _filled(jumping, symbol, t0 + timedelta(seconds=2), OrderSide.BUY, "1", "300"),
        # unmarked: a symbol with no stored book or trade: the position is kept, never valued (no verdict).
        _filled(calm, unmarked, t0, OrderSide.BUY, "50", "100"),
        _filled(calm, unmarked, t0 + timedelta(seconds=1), OrderSide.BUY, "50", "900"),
        # calm: one unit at 100, then sold at 300: PnL 198 at most, below the threshold.
        _filled(calm, symbol, t0, OrderSide.BUY, "1", "100"),
        _filled(calm, symbol, t0 + timedelta(seconds=2), OrderSide.SELL, "1", "300"),
    ]
    await _publish(kafka_bootstrap, analytics, envelopes)
    await eventually(lambda: _processed(sessions, envelopes), timeout_s=30, message="every fill consumed")

    rows = await _jumps(sessions, symbol)
    assert [(r.account_id, r.venue, r.observed_at, r.magnitude) for r in rows] == [
        (jumping, "oms", t0 + timedelta(seconds=1), Decimal("2199.00"))
    ]
    assert "PnL 2198.00 moved +2199.00" in rows[0].detail
    assert await _published(sessions, [r.anomaly_id for r in rows]) == 1
    async with sessions() as session:
        position = await repository.pnl_position(session, jumping, symbol)
    assert position is not None
    assert (position["quantity"], position["cost"], position["fees"], position["fills"]) == (
        Decimal(12),
        Decimal(1400),
        Decimal(3),
        3,
    )

    async with sessions() as session:
        kept = await repository.pnl_position(session, calm, unmarked)
        assert kept is not None
        assert kept["quantity"] == Decimal(100)
        assert await repository.pnl_points_within(session, calm, unmarked, t0 - POLICY.window, utc_now()) == []
    assert await _jumps(sessions, unmarked) == []

    # The scan, ten minutes on: no point in its window, the episode closes (PnL 12 * 300 - 1400 - 3 = 2197). The
    # price falls to 100 without a fill: the next scan sees -2400 within the window, a second episode.
    jumps = PnlJumps(POLICY)
    t1 = t0 + timedelta(minutes=10)

    async def scan(at: datetime) -> list[Any]:
        async with sessions.begin() as session:
            return await record(session, event_tables("analytics"), await jumps.scan(session, at), at)

    assert [a for a in await scan(t1) if a.symbol == symbol] == []
    async with sessions.begin() as session:
        await store.insert_trades(session, [_trade(symbol, t1 + timedelta(seconds=30), "100")])
    found = [a for a in await scan(t1 + timedelta(minutes=1)) if a.symbol == symbol]
    assert [(a.account_id, a.magnitude) for a in found] == [(jumping, Decimal("2400.00"))]
    assert [a for a in await scan(t1 + timedelta(minutes=2)) if a.symbol == symbol] == []  # the same episode
    async with sessions() as session:  # that scan pruned the points older than two windows (the fills' ones)
        left = await repository.pnl_points_within(session, jumping, symbol, t0 - POLICY.window, utc_now())
    assert [at for at, _ in left] == [t1, t1 + timedelta(minutes=1), t1 + timedelta(minutes=2)]
    assert [(r.account_id, r.magnitude) for r in await _jumps(sessions, symbol)] == [
        (jumping, Decimal("2199.00")),
        (jumping, Decimal("2400.00")),
    ]
    assert await _published(sessions, [a.anomaly_id for a in found]) == 1
