"""Issue 14, items 1 and 3: the `marketdata` store (migration 0029, data/ingest/store.py), the candle views and their
refresh, `aether data check`, and the sink from Kafka through the inbox, on the real stack.

The TimescaleDB path cannot run here (the extension is not installed): it is checked by detection (false here,
so the plain path ran), by asserting the statements the migration would issue, and by parsing them
(test_marketdata_timescale_sql.py); the plain path runs for real.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from data.ingest import store
from data.ingest.quality import CHECK_SOURCE, check_trades
from data.ingest.sink import MarketDataSink, kafka_position, kafka_source
from data.replay.source import SyntheticMarket
from shared.db import marketdata as md
from shared.db import sessionmaker_for
from shared.db.timescale import is_hypertable, timescale_available
from shared.domain.types import OrderSide
from shared.events import EventProducer, OutgoingMessage
from shared.marketdata import BookSnapshot, Trade, to_envelope
from tests.contract.conftest import unique_symbol
from tests.helpers import eventually

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _venue() -> str:
    return f"v{uuid.uuid4().hex[:10]}"


def _trade(venue: str, symbol: str, trade_id: str, at: datetime, price: str, qty: str = "1") -> Trade:
    return Trade(
        venue=venue,
        symbol=symbol,
        trade_id=trade_id,
        price=Decimal(price),
        qty=Decimal(qty),
        side=OrderSide.BUY,
        timestamp=at,
    )


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker_for(engine)


async def test_migration_builds_the_plain_path_and_the_timescale_sql_is_what_timescale_needs(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        available = await conn.run_sync(lambda c: timescale_available(c))
        hypertable = await conn.run_sync(lambda c: is_hypertable(c, "marketdata", "book_snapshots"))
        kinds = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT relname, relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE nspname = 'marketdata'"
                    )
                )
            ).all()
        )
        for view in md.CANDLE_VIEWS.values():
            columns = (await conn.execute(sa.select(md.candle_view(view.interval)).limit(0))).keys()
            assert list(columns) == [c.name for c in md.candle_view(view.interval).columns]
    assert not available
    assert not hypertable
    assert {kinds[v.name] for v in md.CANDLE_VIEWS.values()} == {"m"}  # materialized views
    assert {kinds["book_snapshots"], kinds["quarantine"], kinds["inbox"]} == {"r"}
    assert kinds["ux_candles_1m"] == "i"  # the unique index REFRESH ... CONCURRENTLY needs
    one_minute = md.CANDLE_VIEWS["1m"]
    timescale = md.create_candle_view_sql(one_minute, timescale=True)
    assert timescale[0].startswith("CREATE MATERIALIZED VIEW marketdata.candles_1m WITH (timescaledb.continuous) AS")
    assert "time_bucket(INTERVAL '1 minute', traded_at)" in timescale[0]
    assert "first(price, traded_at) AS open" in timescale[0]
    assert timescale[0].endswith("WITH NO DATA")
    assert timescale[2].startswith("SELECT add_continuous_aggregate_policy('marketdata.candles_1m'")
    assert md.refresh_candle_view_sql(one_minute, timescale=True) == (
        "CALL refresh_continuous_aggregate('marketdata.candles_1m', NULL, NULL)"
    )


async def test_insert_trades_counts_only_new_rows(sessions: async_sessionmaker[AsyncSession]) -> None:
    venue, symbol = _venue(), unique_symbol()
    first = [_trade(venue, symbol, str(n), T0 + timedelta(seconds=n), "100") for n in range(3)]
    async with sessions.begin() as session:
        assert await store.insert_trades(session, first) == 3
    async with sessions.begin() as session:
        again = [*first, _trade(venue, symbol, "3", T0 + timedelta(seconds=3), "101")]
        assert await store.insert_trades(session, again) == 1
        stored = await session.scalar(sa.select(sa.func.count()).where(md.trades.c.venue == venue))
    assert stored == 4


async def test_candles_are_built_from_trades_after_refresh(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    venue, symbol = _venue(), unique_symbol()
    prices = ["100", "105", "99", "102", "110", "108"]
    trades = [
        _trade(venue, symbol, str(n), T0 + timedelta(seconds=20 * n), price, "0.5") for n, price in enumerate(prices)
    ]
    async with sessions.begin() as session:
        await store.insert_trades(session, trades)
    refreshed = await store.refresh_aggregates(engine)
    assert [r.view for r in refreshed] == ["candles_1m", "candles_1h", "candles_1d"]
    assert not any(r.incremental for r in refreshed)
    candles = md.candle_view("1m")
    async with sessions() as session:
        rows = (
            await session.execute(sa.select(candles).where(candles.c.venue == venue).order_by(candles.c.bucket))
        ).all()
        hour = (await session.execute(sa.select(md.candle_view("1h")).where(sa.text(f"venue = '{venue}'")))).one()
    assert [(r.bucket, r.open, r.high, r.low, r.close, r.trade_count) for r in rows] == [
        (T0, Decimal(100), Decimal(105), Decimal(99), Decimal(99), 3),
        (T0 + timedelta(minutes=1), Decimal(102), Decimal(110), Decimal(102), Decimal(108), 3),
    ]
    assert rows[0].volume == Decimal("1.5")
    assert rows[0].notional == Decimal("152.0")
    assert (hour.open, hour.close, hour.trade_count) == (Decimal(100), Decimal(108), 6)


async def test_check_quarantines_duplicates_and_reports_gaps_and_disorder(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    venue, symbol = _venue(), unique_symbol()
    rows = [
        _trade(venue, symbol, "1", T0, "100"),
        _trade(venue, symbol, "2", T0 + timedelta(seconds=1), "100"),
        _trade(venue, symbol, "2", T0 + timedelta(seconds=2), "100"),  # the same id again, later: a duplicate
        _trade(venue, symbol, "3", T0 + timedelta(seconds=3), "100"),
        _trade(venue, symbol, "5", T0 + timedelta(minutes=20), "100"),  # id 4 missing, 20 minutes of silence
        _trade(venue, symbol, "6", T0 + timedelta(minutes=19), "100"),  # stamped before id 5: out of order
    ]
    async with sessions.begin() as session:
        assert await store.insert_trades(session, rows) == 6
    scope = store.Scope(venue=venue)
    report = await check_trades(sessions, scope, max_gap=timedelta(minutes=5))
    assert (report.duplicates, report.quarantined, report.out_of_order, report.id_gaps) == (1, 1, 1, 1)
    assert report.time_gaps == 1
    assert not report.clean
    assert report.examples["id_gaps"][0]["size"] == "1 missing"
    async with sessions() as session:
        entries = await store.quarantined(session, source=CHECK_SOURCE)
        left = await session.scalar(sa.select(sa.func.count()).where(md.trades.c.venue == venue))
    mine = [e for e in entries if e.position.startswith(f"{venue}/")]
    assert len(mine) == 1
    assert mine[0].reason.startswith("duplicate trade id (first stored at 2026-03-02T12:00:01")
    assert json.loads(mine[0].raw)["traded_at"] == (T0 + timedelta(seconds=2)).isoformat()
    assert left == 5  # moved, not lost: 5 kept + 1 in the quarantine
    again = await check_trades(sessions, scope, max_gap=timedelta(minutes=5))
    assert (again.duplicates, again.quarantined) == (0, 0)


def _records(topic: str, values: list[bytes], start_offset: int = 0) -> list[ConsumerRecord[Any, Any]]:
    return [
        ConsumerRecord(topic, 0, start_offset + n, 0, 0, None, value, None, 0, len(value), ())
        for n, value in enumerate(values)
    ]


def _market(symbol: str, count: int) -> list[Any]:
    market = SyntheticMarket(symbol=symbol, seed=3, start_at=T0, snapshot_every=5)
    return list(itertools.islice(market.messages(), count))


async def _count(sessions: async_sessionmaker[AsyncSession], table: sa.Table, symbol: str) -> int:
    async with sessions() as session:
        result = await session.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.instrument == symbol))
    return int(result or 0)


async def test_sink_batch_is_idempotent_and_quarantines_what_it_cannot_read(
    sessions: async_sessionmaker[AsyncSession], kafka_bootstrap: str
) -> None:
    symbol, topic = unique_symbol(), f"test.{uuid.uuid4().hex[:8]}.v1"
    messages = _market(symbol, 120)
    envelopes = [to_envelope(m, "test").to_bytes() for m in messages]
    bad_schema = to_envelope(messages[1], "test").model_copy(update={"payload": {"venue": "x"}}).to_bytes()
    values = [*envelopes, b"not json at all", bad_schema]
    sink = MarketDataSink(bootstrap=kafka_bootstrap, sessionmaker=sessions, snapshot_interval_s=3, depth=4)
    await sink.store_batch(_records(topic, values))
    trades = sum(isinstance(m, Trade) for m in messages)
    feed_snapshots = sum(isinstance(m, BookSnapshot) for m in messages)
    assert (sink.stats.trades, sink.stats.quarantined, sink.stats.duplicates) == (trades, 2, 0)
    assert sink.stats.snapshots > feed_snapshots  # feed snapshots plus interval snapshots from the deltas
    # Redelivered (a crash before the offset commit): nothing stored twice, nothing quarantined twice.
    await sink.store_batch(_records(topic, values))
    assert (sink.stats.trades, sink.stats.quarantined, sink.stats.duplicates) == (trades, 2, len(envelopes))
    assert await _count(sessions, md.trades, symbol) == trades
    async with sessions() as session:
        entries = await store.quarantined(session, source=kafka_source(topic))
        books = (
            await session.execute(
                sa.select(md.book_snapshots).where(md.book_snapshots.c.instrument == symbol).order_by("taken_at")
            )
        ).all()
    assert [(e.position, e.raw) for e in entries] == [
        (kafka_position(0, len(envelopes)), b"not json at all"),
        (kafka_position(0, len(envelopes) + 1), bad_schema),
    ]
    assert entries[1].reason.endswith("symbol: Field required")
    assert {b.reason for b in books} == {"snapshot", "interval"}
    assert all(len(b.bids) <= 4 and len(b.asks) <= 4 for b in books)
    last_feed = [m for m in messages if isinstance(m, BookSnapshot)][-1]
    stored = next(b for b in books if b.reason == "snapshot" and b.sequence == last_feed.sequence)
    assert [[Decimal(p), Decimal(q)] for p, q in stored.bids] == [[lv.price, lv.qty] for lv in last_feed.bids[:4]]


async def test_sink_consumes_kafka_end_to_end(sessions: async_sessionmaker[AsyncSession], kafka_bootstrap: str) -> None:
    symbol = unique_symbol()
    trade_topic, book_topic = (f"test.{uuid.uuid4().hex[:8]}.v1" for _ in range(2))
    messages = _market(symbol, 200)
    producer = EventProducer(kafka_bootstrap, client_id="test-sink")
    await producer.start()
    try:
        await producer.publish_batch(
            [
                OutgoingMessage(
                    trade_topic if isinstance(m, Trade) else book_topic,
                    symbol.encode(),
                    to_envelope(m, "t").to_bytes(),
                    (),
                )
                for m in messages
            ]
        )
    finally:
        await producer.stop()
    sink = MarketDataSink(
        bootstrap=kafka_bootstrap,
        sessionmaker=sessions,
        group_id=f"test-sink-{uuid.uuid4().hex[:8]}",
        topics=[trade_topic, book_topic],
        batch_size=50,
    )
    stop = asyncio.Event()
    await sink.start()
    task = asyncio.create_task(sink.run(stop))
    try:
        await eventually(lambda: _all_read(sink, len(messages)), timeout_s=30, message="sink read every record")
    finally:
        stop.set()
        await task
        await sink.stop()
    assert await _count(sessions, md.trades, symbol) == sum(isinstance(m, Trade) for m in messages)
    assert sink.stats.batches >= 2
    assert sink.stats.quarantined == 0


async def _all_read(sink: MarketDataSink, expected: int) -> bool:
    return sink.stats.records >= expected
