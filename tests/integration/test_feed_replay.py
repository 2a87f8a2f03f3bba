"""The replay against the real Kafka: what it publishes is read back, decoded, complete and in order per symbol."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from data.replay.publisher import ReplayTopics, replay
from data.replay.source import SyntheticMarket, read_csv
from shared.events import Envelope, header_value
from shared.events.producer import EventProducer
from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade, decode_marketdata
from tests.helpers import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
START_AT = datetime(2026, 2, 1, tzinfo=UTC)
Record = ConsumerRecord[bytes, bytes]


def _unique_topics() -> ReplayTopics:
    return ReplayTopics.with_prefix(f"test-{uuid.uuid4().hex[:10]}.")


async def _end_offsets(
    bootstrap: str, topic: str
) -> tuple[AIOKafkaConsumer, list[TopicPartition], dict[TopicPartition, int]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    tps = sorted(consumer.assignment())
    return consumer, tps, (await consumer.end_offsets(tps)) if tps else {}


async def read_all(bootstrap: str, topic: str, *, timeout_s: float = 15.0) -> list[Record]:
    """Every record on `topic` up to its end offsets now, partition by partition, in offset order."""
    consumer, tps, end_offsets = await _end_offsets(bootstrap, topic)
    try:
        records: dict[TopicPartition, list[Record]] = defaultdict(list)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < end_offsets[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end in time"
            for tp, batch in (await consumer.getmany(*tps, timeout_ms=200)).items():
                records[tp].extend(batch)
        return [record for tp in tps for record in records[tp]]
    finally:
        await consumer.stop()


async def count_records(bootstrap: str, topic: str) -> int:
    consumer, _, end_offsets = await _end_offsets(bootstrap, topic)
    await consumer.stop()
    return sum(end_offsets.values())


def _by_symbol(messages: list[MarketData]) -> dict[str, list[MarketData]]:
    grouped: dict[str, list[MarketData]] = defaultdict(list)
    for message in messages:
        grouped[message.symbol].append(message)
    return dict(grouped)


async def test_synthetic_replay_reaches_kafka_complete_and_in_order(kafka_bootstrap: str) -> None:
    topics = _unique_topics()
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="test-feed-replay")
    await producer.start()
    try:
        report = await replay(SyntheticMarket(seed=9, start_at=START_AT), producer, speed=0, limit=200, topics=topics)
    finally:
        await producer.stop()
    expected = list(itertools.islice(SyntheticMarket(seed=9, start_at=START_AT).messages(), 200))
    assert report.published == 200
    assert report.trades == sum(isinstance(m, Trade) for m in expected)

    book_records = await read_all(kafka_bootstrap, topics.book)
    trade_records = await read_all(kafka_bootstrap, topics.trade)
    assert len(book_records) + len(trade_records) == 200
    envelopes = {
        "book": [Envelope.from_bytes(r.value) for r in book_records],
        "trade": [Envelope.from_bytes(r.value) for r in trade_records],
    }
    # One key (the symbol) per topic: one partition, so the read order is the publish order.
    assert [decode_marketdata(e) for e in envelopes["book"]] == [m for m in expected if not isinstance(m, Trade)]
    assert [decode_marketdata(e) for e in envelopes["trade"]] == [m for m in expected if isinstance(m, Trade)]
    for record in [*book_records, *trade_records]:
        envelope = Envelope.from_bytes(record.value)
        message = decode_marketdata(envelope)
        assert record.key == b"BTC/USD"
        assert envelope.producer == "feed-replay"
        assert envelope.aggregate_id == "BTC/USD"
        assert envelope.schema_version == 1
        assert envelope.occurred_at == message.timestamp
        assert envelope.type == ("TradePrinted" if isinstance(message, Trade) else type(message).__name__)
        assert header_value(record.headers, "event_type") == envelope.type
        assert header_value(record.headers, "correlation_id") == envelope.correlation_id
    assert {e.type for e in envelopes["book"]} == {"BookSnapshot", "BookDelta"}
    assert len({e.correlation_id for e in [*envelopes["book"], *envelopes["trade"]]}) == 1


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "data.replay.cli", "replay", *args]


async def test_cli_replays_a_two_symbol_file_in_order_per_symbol(kafka_bootstrap: str, tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    rows = ["timestamp,kind,symbol,side,price,qty,trade_id"]
    for second in range(30):
        at = f"2026-01-01T00:00:{second:02d}Z"
        for symbol, price in (("BTC/USD", 60_000 + second), ("ETH/USD", 3_000 + second)):
            rows += [
                f"{at},book,{symbol},bid,{price - 1},1,",
                f"{at},book,{symbol},ask,{price + 1},1,",
                f"{at},trade,{symbol},buy,{price + 1},0.5,{symbol[:3]}-{second}",
            ]
    path.write_text("\n".join(rows) + "\n")
    topics = _unique_topics()
    prefix = topics.book.removesuffix("marketdata.book-events.v1")
    completed = await asyncio.to_thread(
        subprocess.run,
        _cli(
            "--file",
            str(path),
            "--speed",
            "0",
            "--keep-timestamps",
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            prefix,
        ),
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()

    received = [
        decode_marketdata(Envelope.from_bytes(record.value))
        for topic in (topics.book, topics.trade)
        for record in await read_all(kafka_bootstrap, topic)
    ]
    expected = _by_symbol(read_csv(path))
    assert sum(len(messages) for messages in expected.values()) == 120
    for symbol, messages in _by_symbol(received).items():
        books = [m for m in messages if isinstance(m, BookSnapshot | BookDelta)]
        assert books == [m for m in expected[symbol] if not isinstance(m, Trade)]
        assert [m.sequence for m in books] == list(range(1, 31))
        assert [m for m in messages if isinstance(m, Trade)] == [m for m in expected[symbol] if isinstance(m, Trade)]


async def test_cli_synthetic_feed_stops_cleanly_on_sigterm(kafka_bootstrap: str) -> None:
    topics = _unique_topics()
    prefix = topics.book.removesuffix("marketdata.book-events.v1")
    process = subprocess.Popen(  # noqa: ASYNC220 - a long-running child we signal; awaited in a thread below
        _cli("--synthetic", "--speed", "10", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await eventually(lambda: _at_least(kafka_bootstrap, topics.book, 5), timeout_s=30, message="no book messages")
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(process.wait, 15)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode() if process.stderr is not None else ""
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    books = [decode_marketdata(Envelope.from_bytes(r.value)) for r in await read_all(kafka_bootstrap, topics.book)]
    assert [m.sequence for m in books if not isinstance(m, Trade)] == list(range(1, len(books) + 1))


async def _at_least(bootstrap: str, topic: str, count: int) -> bool:
    return await count_records(bootstrap, topic) >= count
