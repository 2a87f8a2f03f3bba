"""Benchmark: trades/s from Kafka into PostgreSQL through the market-data sink, against COPY of the same rows into
the same PostgreSQL in the same run (the ceiling: no Kafka, no decoding, no inbox, no conflict check).

Workload: `AETHER_BENCH_TRADES` (default 100,000) SYNTHETIC trades of one symbol (`TradePrinted` envelopes, as the
replay and the Kraken feed publish them) on a fresh topic; a fresh database `aether_bench_mdsink`, migrated.
1. Publish them all (not part of the sink's figure; its rate is printed too).
2. The sink (`data/ingest/sink.py`, batches of `AETHER_BENCH_BATCH`, default 1,000) consumes them from the start:
   per batch one transaction with the inbox rows and the trades. Timed from the end of its first batch (the
   group join, about 3 s of broker rebalance delay, is printed apart) to its last commit.
3. TRUNCATE the trades, then COPY the same rows (psycopg `COPY ... FROM STDIN`, binary-free text rows) in one
   transaction. Timed.
Prints one JSON line. Needs the stack (`aether stack up`); run `python bench/marketdata_sink.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, stack_env  # noqa: E402
from data.ingest.sink import MarketDataSink  # noqa: E402
from shared.config import AetherSettings, Environment  # noqa: E402
from shared.db import create_engine, sessionmaker_for  # noqa: E402
from shared.domain.types import OrderSide  # noqa: E402
from shared.events import EventProducer, OutgoingMessage  # noqa: E402
from shared.marketdata import Trade, to_envelope  # noqa: E402

BENCH_DB = "aether_bench_mdsink"
TRADES = int(os.environ.get("AETHER_BENCH_TRADES", "100000"))
BATCH = int(os.environ.get("AETHER_BENCH_BATCH", "1000"))
START = datetime(2026, 1, 1, tzinfo=UTC)


def trades(count: int) -> list[Trade]:
    """`count` SYNTHETIC trades, 10 ms apart, prices on a small deterministic walk."""
    return [
        Trade(
            venue="bench",
            symbol="BTC/USD",
            trade_id=str(n),
            price=Decimal(60_000) + Decimal(n % 997) / 10,
            qty=Decimal("0.0125"),
            side=OrderSide.BUY if n % 2 else OrderSide.SELL,
            timestamp=START + timedelta(milliseconds=10 * n),
        )
        for n in range(count)
    ]


async def publish(bootstrap: str, topic: str, items: list[Trade]) -> float:
    producer = EventProducer(bootstrap, client_id="bench-mdsink")
    await producer.start()
    started = time.perf_counter()
    try:
        for chunk in range(0, len(items), 5_000):
            await producer.publish_batch(
                [
                    OutgoingMessage(topic, b"BTC/USD", to_envelope(t, "bench").to_bytes(), ())
                    for t in items[chunk : chunk + 5_000]
                ],
                timeout_s=120,
            )
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def sink(settings: AetherSettings, topic: str, expected: int) -> tuple[float, float, int, int]:
    """(seconds to join the group and store the first batch, seconds for the rest, records in the rest, batches)."""
    engine = create_engine(settings, application_name="bench-mdsink")
    consumer = MarketDataSink(
        bootstrap=settings.kafka_bootstrap,
        sessionmaker=sessionmaker_for(engine),
        group_id=f"bench-mdsink-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        batch_size=BATCH,
    )
    stop = asyncio.Event()
    await consumer.start()
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(stop))
    try:
        first_s, first_records = 0.0, 0
        while consumer.stats.records < expected:
            if task.done():
                task.result()
            if not first_records and consumer.stats.records:
                first_s, first_records = time.perf_counter() - started, consumer.stats.records
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started - first_s
    finally:
        stop.set()
        await task
        await consumer.stop()
        await engine.dispose()
    return first_s, elapsed, expected - first_records, consumer.stats.batches


def copy(url: str, items: list[Trade]) -> float:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        conn.execute("TRUNCATE marketdata.trades")
        conn.commit()
        started = time.perf_counter()
        columns = "venue, instrument, trade_id, traded_at, price, quantity, side"
        with conn.cursor() as cursor, cursor.copy(f"COPY marketdata.trades ({columns}) FROM STDIN") as out:
            for t in items:
                out.write_row((t.venue, t.symbol, t.trade_id, t.timestamp, t.price, t.qty, str(t.side)))
        conn.commit()
        elapsed = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM marketdata.trades").fetchone()
    if stored is None or stored[0] != len(items):
        raise RuntimeError(f"COPY stored {stored} rows, expected {len(items)}")
    return elapsed


def stored_trades(url: str) -> int:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq) as conn:
        row = conn.execute("SELECT count(*) FROM marketdata.trades").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    env = stack_env()
    url = fresh_database(env["AETHER_DATABASE_URL"], BENCH_DB)
    settings = AetherSettings(
        env=Environment.TEST,
        database_url=url,
        redis_url=env["AETHER_REDIS_URL"],
        kafka_bootstrap=env["AETHER_KAFKA_BOOTSTRAP"],
    )
    items = trades(TRADES)
    topic = f"bench.mdsink-{uuid.uuid4().hex[:8]}.v1"
    publish_s = asyncio.run(publish(settings.kafka_bootstrap, topic, items))
    first_s, sink_s, steady, batches = asyncio.run(sink(settings, topic, len(items)))
    sunk = stored_trades(url)
    if sunk != len(items):
        raise RuntimeError(f"the sink stored {sunk} trades, expected {len(items)}")
    copy_s = copy(url, items)
    sink_rate, copy_rate = steady / sink_s, len(items) / copy_s
    print(
        json.dumps(
            {
                "bench": "marketdata_sink",
                "workload": f"{len(items)} SYNTHETIC trades, 1 topic, 1 partition, one fresh database",
                "trades": len(items),
                "batch_size": BATCH,
                "batches": batches,
                "sink_trades_per_s": round(sink_rate),
                "copy_trades_per_s": round(copy_rate),
                "sink_vs_copy": round(sink_rate / copy_rate, 3),
                "publish_trades_per_s": round(len(items) / publish_s),
                "sink_s": round(sink_s, 3),
                "sink_trades_timed": steady,
                "join_and_first_batch_s": round(first_s, 3),
                "copy_s": round(copy_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
