"""Market-data messages, the file source, the synthetic market and the replay's pacing (no servers)."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from data.replay.cli import app as feed_app
from data.replay.publisher import ReplayReport, ReplayTopics, replay
from data.replay.source import (
    FileSource,
    SourceError,
    SyntheticMarket,
    load_file,
    looped,
    read_csv,
    rebased,
    write_csv,
)
from shared.domain.matching import MatchingEngine, ReportKind
from shared.domain.sim_orders import SimOrder
from shared.domain.types import OrderSide, OrderType
from shared.events import Envelope
from shared.events.producer import Delivery, OutgoingMessage
from shared.marketdata import (
    BookDelta,
    BookSnapshot,
    Level,
    MarketData,
    MarketDataError,
    Trade,
    decode_marketdata,
    to_envelope,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "btc_usd_sample.csv"
HEADER = "timestamp,kind,symbol,side,price,qty,trade_id\n"


def _trade(**overrides: Any) -> dict[str, Any]:
    return {
        "venue": "kraken",
        "symbol": "BTC/USD",
        "trade_id": "1",
        "price": "60000.1",
        "qty": "0.5",
        "side": "buy",
        "timestamp": NOW.isoformat(),
        **overrides,
    }


def _book(**overrides: Any) -> dict[str, Any]:
    return {
        "venue": "kraken",
        "symbol": "BTC/USD",
        "bids": [{"price": "100.0", "qty": "1"}, {"price": "99.5", "qty": "2"}],
        "asks": [{"price": "100.5", "qty": "1"}, {"price": "101", "qty": "3"}],
        "timestamp": NOW.isoformat(),
        "sequence": 1,
        **overrides,
    }


def _synthetic(seed: int, count: int, **options: Any) -> list[MarketData]:
    return list(itertools.islice(SyntheticMarket(seed=seed, start_at=NOW, **options).messages(), count))


# --------------------------------------------------------------------------- message models


@pytest.mark.parametrize(
    "overrides",
    [
        {"price": 60000.1},  # a float: inexact
        {"qty": 1},  # a JSON number, not a decimal string
        {"price": "-1"},
        {"price": "0"},
        {"qty": "0"},  # a trade of nothing
        {"price": "1e5"},
        {"side": "bid"},
        {"symbol": "btcusd"},
        {"timestamp": "2026-03-01T00:00:00"},  # no offset
        {"extra": "field"},
    ],
)
def test_trade_refuses_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Trade.model_validate(_trade(**overrides))


def test_trade_keeps_decimal_strings_on_the_wire() -> None:
    trade = Trade.model_validate(_trade(price="60000.10", qty="0.00000001"))
    assert trade.price == Decimal("60000.1")
    assert trade.side is OrderSide.BUY
    dumped = trade.model_dump(mode="json")
    assert dumped["price"] == "60000.1"
    assert dumped["qty"] == "0.00000001"
    assert dumped["side"] == "buy"


def test_delta_accepts_qty_zero_and_refuses_negative_and_duplicate_levels() -> None:
    delta = BookDelta.model_validate(_book(bids=[{"price": "100", "qty": "0"}], asks=[]))
    assert delta.bids[0].qty == 0
    with pytest.raises(ValidationError, match="must not be negative"):
        BookDelta.model_validate(_book(bids=[{"price": "100", "qty": "-0.1"}], asks=[]))
    with pytest.raises(ValidationError, match="must be positive"):
        BookDelta.model_validate(_book(bids=[{"price": "-100", "qty": "1"}], asks=[]))
    with pytest.raises(ValidationError, match="more than once"):
        BookDelta.model_validate(_book(asks=[{"price": "101", "qty": "1"}, {"price": "101.0", "qty": "0"}]))
    with pytest.raises(ValidationError):
        Level.model_validate({"price": 100.5, "qty": "1"})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"bids": [{"price": "100", "qty": "0"}]}, "positive qty"),
        ({"bids": [{"price": "99.5", "qty": "1"}, {"price": "100", "qty": "1"}]}, "best first"),
        ({"asks": [{"price": "101", "qty": "1"}, {"price": "100.5", "qty": "1"}]}, "best first"),
        ({"asks": [{"price": "100", "qty": "1"}]}, "crossed book"),
        ({"sequence": -1}, "greater than or equal"),
    ],
)
def test_snapshot_is_sorted_positive_and_never_crossed(overrides: dict[str, Any], reason: str) -> None:
    assert BookSnapshot.model_validate(_book()).bids[0].price == Decimal(100)
    with pytest.raises(ValidationError, match=reason):
        BookSnapshot.model_validate(_book(**overrides))


def test_envelope_round_trip_carries_type_key_time_and_decimal_strings() -> None:
    snapshot = BookSnapshot.model_validate(_book())
    trade = Trade.model_validate(_trade())
    for message, kind in ((snapshot, "BookSnapshot"), (trade, "TradePrinted")):
        envelope = Envelope.from_bytes(to_envelope(message, "feed-replay", correlation_id="run-1").to_bytes())
        assert (envelope.type, envelope.producer, envelope.aggregate_id) == (kind, "feed-replay", "BTC/USD")
        assert envelope.occurred_at == NOW
        assert envelope.correlation_id == "run-1"
        assert decode_marketdata(envelope) == message
    raw = json.loads(to_envelope(trade, "feed-replay").to_bytes())
    assert raw["payload"]["price"] == "60000.1"


def test_decode_refuses_garbage_with_a_clear_error() -> None:
    envelope = to_envelope(Trade.model_validate(_trade()), "feed-replay")
    with pytest.raises(MarketDataError, match="not a market-data message: 'OrderFilled'"):
        decode_marketdata(envelope.model_copy(update={"type": "OrderFilled"}))
    with pytest.raises(MarketDataError, match=r"TradePrinted .*: price: must be positive"):
        decode_marketdata(envelope.model_copy(update={"payload": {**envelope.payload, "price": "-1"}}))
    with pytest.raises(MarketDataError, match="qty"):
        decode_marketdata(envelope.model_copy(update={"payload": {**envelope.payload, "qty": 0.5}}))
    with pytest.raises(MarketDataError, match="aggregate id"):
        decode_marketdata(envelope.model_copy(update={"aggregate_id": "ETH/USD"}))


# --------------------------------------------------------------------------- file source


def test_csv_groups_rows_into_snapshots_deltas_and_trades(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_text(
        HEADER + "2026-01-01T00:00:00Z,book,BTC/USD,ask,100.5,1,\n"
        "2026-01-01T00:00:00Z,book,BTC/USD,bid,99,2,\n"
        "2026-01-01T00:00:00Z,book,BTC/USD,bid,100,1.5,\n"
        "2026-01-01T00:00:01+00:00,trade,BTC/USD,buy,100.5,0.25,K1\n"
        "2026-01-01T00:00:01+00:00,trade,BTC/USD,sell,100,0.1,\n"
        "2026-01-01T00:00:02Z,delta,BTC/USD,ask,100.5,0,\n"
        "2026-01-01T00:00:02Z,delta,BTC/USD,ask,100.7,3,\n"
        "\n"
        "2026-01-01T00:00:02Z,book,ETH/USD,bid,3000,4,\n"
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    messages = read_csv(path)
    assert messages == [
        BookSnapshot(
            venue="replay",
            symbol="BTC/USD",
            bids=[Level(price=Decimal(100), qty=Decimal("1.5")), Level(price=Decimal(99), qty=Decimal(2))],
            asks=[Level(price=Decimal("100.5"), qty=Decimal(1))],
            timestamp=at,
            sequence=1,
        ),
        Trade(
            venue="replay",
            symbol="BTC/USD",
            trade_id="K1",
            price=Decimal("100.5"),
            qty=Decimal("0.25"),
            side=OrderSide.BUY,
            timestamp=at + timedelta(seconds=1),
        ),
        Trade(
            venue="replay",
            symbol="BTC/USD",
            trade_id="L6",  # no id in the file: the line number
            price=Decimal(100),
            qty=Decimal("0.1"),
            side=OrderSide.SELL,
            timestamp=at + timedelta(seconds=1),
        ),
        BookDelta(
            venue="replay",
            symbol="BTC/USD",
            asks=[Level(price=Decimal("100.5"), qty=Decimal(0)), Level(price=Decimal("100.7"), qty=Decimal(3))],
            timestamp=at + timedelta(seconds=2),
            sequence=2,
        ),
        BookSnapshot(
            venue="replay",
            symbol="ETH/USD",
            bids=[Level(price=Decimal(3000), qty=Decimal(4))],
            asks=[],
            timestamp=at + timedelta(seconds=2),
            sequence=1,
        ),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["2026-01-01T00:00:00Z,trade,BTC/USD,buy,100,1,t1", "2026-01-01T00:00:01Z,trade,BTC/USD,buy,abc,1,t2"],
            "line 3: price",
        ),
        (["2026-01-01T00:00:00Z,trade,BTC/USD,buy,1e3,1,t1"], "line 2: price must be a plain decimal"),
        (["2026-01-01T00:00:00,trade,BTC/USD,buy,100,1,t1"], "line 2: timestamp .* needs a UTC offset"),
        (["yesterday,trade,BTC/USD,buy,100,1,t1"], "line 2: timestamp 'yesterday' is not ISO 8601"),
        (["2026-01-01T00:00:00Z,quote,BTC/USD,buy,100,1,t1"], "line 2: kind must be one of book, delta, trade"),
        (["2026-01-01T00:00:00Z,trade,BTC/USD,bid,100,1,t1"], "line 2: a trade row's side must be buy or sell"),
        (["2026-01-01T00:00:00Z,book,BTC/USD,buy,100,1,"], "line 2: a book row's side must be bid or ask"),
        (["2026-01-01T00:00:00Z,trade,BTC/USD,buy,100,1"], "line 2: expected 7 fields, found 6"),
        (["2026-01-01T00:00:00Z,trade,BTC/USD,buy,100,0,t1"], "line 2: qty: must be positive"),
        (["2026-01-01T00:00:00Z,trade,btc-usd,buy,100,1,t1"], "line 2: symbol: String should match pattern"),
        (
            ["2026-01-01T00:00:05Z,trade,BTC/USD,buy,100,1,t1", "2026-01-01T00:00:04Z,trade,BTC/USD,buy,100,1,t2"],
            "line 3: timestamp goes back in time",
        ),
        (
            ["2026-01-01T00:00:00Z,book,BTC/USD,bid,101,1,", "2026-01-01T00:00:00Z,book,BTC/USD,ask,100,1,"],
            "line 2-3: crossed book",
        ),
        (
            ["2026-01-01T00:00:00Z,book,BTC/USD,bid,100,1,", "2026-01-01T00:00:00Z,book,BTC/USD,bid,100,2,"],
            "line 2-3: bids: levels must be unique",
        ),
        (["2026-01-01T00:00:00Z,delta,BTC/USD,ask,100,-1,"], "line 2: qty: must not be negative"),
    ],
)
def test_csv_errors_name_the_line(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=expected) as caught:
        FileSource(path)
    assert str(caught.value).startswith(f"{path}: line")
    assert "\n" not in str(caught.value)


def test_file_level_errors(tmp_path: Path) -> None:
    wrong_header = tmp_path / "wrong.csv"
    wrong_header.write_text("at,kind,symbol\n")
    with pytest.raises(SourceError, match="line 1: header must be timestamp,kind,symbol,side,price,qty,trade_id"):
        read_csv(wrong_header)
    with pytest.raises(SourceError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match=r"unsupported file type '\.json'"):
        load_file(tmp_path / "feed.json")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"Parquet needs pyarrow, which is not installed .* or convert the file to CSV"
    ):
        load_file(tmp_path / "feed.parquet")


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    messages = read_csv(SAMPLE)
    rows = [line.split(",") for line in SAMPLE.read_text().splitlines()]
    table = pa.table({name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])})
    parquet.write_table(table, tmp_path / "sample.parquet")
    assert load_file(tmp_path / "sample.parquet") == messages


def test_sample_file_is_the_synthetic_market_seed_11() -> None:
    # data/samples/btc_usd_sample.csv was written by write_csv from SyntheticMarket(seed=11): synthetic, not real data.
    expected = list(
        itertools.islice(SyntheticMarket(seed=11, start_at=datetime(2026, 1, 1, tzinfo=UTC)).messages(), 100)
    )
    assert read_csv(SAMPLE, venue="synthetic") == expected
    assert 300 <= len(SAMPLE.read_text().splitlines()) <= 500


def test_write_csv_round_trips(tmp_path: Path) -> None:
    messages = _synthetic(seed=2, count=400)
    write_csv(messages, tmp_path / "out.csv")
    assert read_csv(tmp_path / "out.csv", venue="synthetic") == messages


def test_looped_moves_each_pass_later_with_fresh_ids_and_sequences() -> None:
    source = FileSource(SAMPLE)
    one_pass = list(source.messages())
    three = list(itertools.islice(looped(source), 3 * len(one_pass)))
    times = [m.timestamp for m in three]
    assert times == sorted(times)
    assert three[len(one_pass)].timestamp > one_pass[-1].timestamp
    trade_ids = [m.trade_id for m in three if isinstance(m, Trade)]
    assert len(set(trade_ids)) == len(trade_ids)
    sequences = [m.sequence for m in three if not isinstance(m, Trade)]
    assert sequences == list(range(1, len(sequences) + 1))
    assert three[: len(one_pass)] == one_pass


def test_rebased_keeps_the_gaps() -> None:
    messages = read_csv(SAMPLE)
    moved = list(rebased(messages, NOW))
    assert moved[0].timestamp == NOW
    assert [m.timestamp - NOW for m in moved] == [m.timestamp - messages[0].timestamp for m in messages]


# --------------------------------------------------------------------------- synthetic market


def test_synthetic_market_is_deterministic_per_seed() -> None:
    first = _synthetic(seed=3, count=500)
    assert first == _synthetic(seed=3, count=500)
    assert first != _synthetic(seed=4, count=500)
    assert {m.venue for m in first} == {"synthetic"}


def test_synthetic_time_comes_from_start_and_steps() -> None:
    messages = _synthetic(seed=3, count=300, step_s=0.5)
    assert messages[0].timestamp == NOW
    assert isinstance(messages[0], BookSnapshot)
    offsets = [(m.timestamp - NOW).total_seconds() for m in messages]
    assert offsets == sorted(offsets)
    assert all((offset * 2).is_integer() for offset in offsets)
    later = list(
        itertools.islice(SyntheticMarket(seed=3, start_at=NOW + timedelta(days=1), step_s=0.5).messages(), 300)
    )
    assert [m.timestamp - timedelta(days=1) for m in later] == [m.timestamp for m in messages]


def test_synthetic_market_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="start_at must be timezone-aware"):
        SyntheticMarket(start_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="start_price must be positive"):
        SyntheticMarket(start_price=Decimal(-5))


def _apply(book: dict[str, dict[Decimal, Decimal]], message: BookSnapshot | BookDelta) -> None:
    if isinstance(message, BookSnapshot):
        book["bids"] = {level.price: level.qty for level in message.bids}
        book["asks"] = {level.price: level.qty for level in message.asks}
        return
    for side, levels in (("bids", message.bids), ("asks", message.asks)):
        for level in levels:
            if level.qty == 0:
                assert level.price in book[side], "a delta removes a level that is not there"
                del book[side][level.price]
            else:
                book[side][level.price] = level.qty


def test_synthetic_deltas_rebuild_the_snapshots_and_the_book_is_never_crossed() -> None:
    deltas = _synthetic(seed=8, count=4_000)
    every_step = _synthetic(seed=8, count=4_000, snapshot_every=1)
    truth = iter(m for m in every_step if isinstance(m, BookSnapshot))
    book: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    steps = 0
    for message in deltas:
        if isinstance(message, Trade):
            continue
        _apply(book, message)
        expected = next(truth)
        assert message.sequence == expected.sequence == steps + 1
        assert book["bids"] == {level.price: level.qty for level in expected.bids}
        assert book["asks"] == {level.price: level.qty for level in expected.asks}
        assert max(book["bids"]) < min(book["asks"])
        assert len(book["bids"]) == len(book["asks"]) == 10
        steps += 1
    assert steps > 500
    assert sum(isinstance(m, BookDelta) for m in deltas) > 8 * sum(isinstance(m, BookSnapshot) for m in deltas)


def test_synthetic_trades_print_through_the_levels_the_mid_moved_past() -> None:
    book: dict[str, dict[Decimal, Decimal]] = {"bids": {}, "asks": {}}
    through = at_touch = 0
    for message in _synthetic(seed=5, count=3_000):
        if not isinstance(message, Trade):
            _apply(book, message)
            continue
        resting = book["asks"] if message.side is OrderSide.BUY else book["bids"]
        # Every print is at a level of the book the consumer holds: through it, or at the new touch.
        assert resting.get(message.price, Decimal(0)) >= message.qty
        best = min(resting) if message.side is OrderSide.BUY else max(resting)
        if message.price == best:
            at_touch += 1
        else:
            through += 1
    assert through > 300
    assert at_touch > 300


def _fill_times(seed: int, distance: Decimal) -> tuple[float | None, float | None]:
    """Seconds until a resting buy below and a resting sell above the mid, `distance` away, first fill (or None)."""
    engine = MatchingEngine("BTC/USD")
    first_fill: dict[str, float] = {}
    for message in SyntheticMarket(seed=seed, start_at=NOW).messages():
        elapsed_s = (message.timestamp - NOW).total_seconds()
        if elapsed_s > 60:
            break
        if isinstance(message, BookSnapshot):
            reports = engine.on_book_snapshot(
                [(lv.price, lv.qty) for lv in message.bids],
                [(lv.price, lv.qty) for lv in message.asks],
                message.timestamp,
            )
            mid = engine.book.mid
            if mid is not None and elapsed_s == 0:
                for order_id, side, price in (
                    ("b", OrderSide.BUY, mid * (1 - distance)),
                    ("s", OrderSide.SELL, mid * (1 + distance)),
                ):
                    engine.submit(
                        SimOrder(order_id, side, OrderType.LIMIT, Decimal("0.01"), price.quantize(Decimal("0.1"))), NOW
                    )
        elif isinstance(message, BookDelta):
            reports = [
                report
                for side, levels in ((OrderSide.BUY, message.bids), (OrderSide.SELL, message.asks))
                for level in levels
                for report in engine.on_book_delta(side, level.price, level.qty, message.timestamp)
            ]
        else:
            reports = engine.on_trade(message.price, message.qty, message.side, message.timestamp)
        for report in reports:
            if report.kind is ReportKind.FILL:
                first_fill.setdefault(report.order_id, elapsed_s)
    return first_fill.get("b"), first_fill.get("s")


def test_resting_orders_near_the_mid_usually_fill_within_a_minute() -> None:
    # Through the real matching engine: limit orders 0.05 % (about 30 USD) either side of the first mid.
    results = [_fill_times(seed, Decimal("0.0005")) for seed in range(1, 21)]
    buys = [t for t, _ in results if t is not None]
    sells = [t for _, t in results if t is not None]
    assert len(buys) >= 12
    assert len(sells) >= 12


# --------------------------------------------------------------------------- replay pacing (fake publisher)


class FakePublisher:
    """Records batches; a BatchPublisher without Kafka."""

    def __init__(self) -> None:
        self.batches: list[list[OutgoingMessage]] = []

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        self.batches.append(list(messages))
        return [Delivery(message.topic, 0, i) for i, message in enumerate(messages)]

    @property
    def records(self) -> list[OutgoingMessage]:
        return [record for batch in self.batches for record in batch]


class FakeTime:
    """A clock that only moves when the replay sleeps."""

    def __init__(self) -> None:
        self.now_s = 1_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now_s

    async def sleep(self, delay_s: float) -> None:
        self.slept.append(delay_s)
        self.now_s += delay_s


class ListSource:
    def __init__(self, messages: list[MarketData]) -> None:
        self._messages = messages

    def messages(self) -> Any:
        return iter(self._messages)


@pytest.mark.parametrize("speed", [1.0, 4.0])
async def test_replay_paces_by_message_time_divided_by_speed(speed: float) -> None:
    messages = _synthetic(seed=1, count=200)
    span_s = (messages[-1].timestamp - messages[0].timestamp).total_seconds()
    fake, publisher = FakeTime(), FakePublisher()
    report = await replay(ListSource(messages), publisher, speed=speed, sleep=fake.sleep, clock=fake.clock)
    assert report.published == len(publisher.records) == 200
    assert report.books + report.trades == 200
    assert report.trades == sum(isinstance(m, Trade) for m in messages)
    assert sum(fake.slept) == pytest.approx(span_s / speed)
    assert report.elapsed_s == pytest.approx(span_s / speed)
    # One batch per distinct timestamp: what is due together goes together.
    assert len(publisher.batches) == len({m.timestamp for m in messages})


async def test_replay_at_speed_zero_never_sleeps_and_batches() -> None:
    fake, publisher = FakeTime(), FakePublisher()
    report = await replay(
        SyntheticMarket(seed=1, start_at=NOW), publisher, speed=0, limit=1_234, sleep=fake.sleep, clock=fake.clock
    )
    assert report.published == 1_234
    assert fake.slept == []
    assert [len(batch) for batch in publisher.batches] == [500, 500, 234]


async def test_replay_records_carry_topic_key_and_one_correlation_id() -> None:
    publisher = FakePublisher()
    topics = ReplayTopics.with_prefix("t-1.")
    messages = _synthetic(seed=1, count=50)
    await replay(ListSource(messages), publisher, speed=0, topics=topics)
    envelopes = [Envelope.from_bytes(record.value) for record in publisher.records]
    assert [decode_marketdata(envelope) for envelope in envelopes] == messages
    assert {record.key for record in publisher.records} == {"BTC/USD"}
    assert {envelope.correlation_id for envelope in envelopes} == {envelopes[0].correlation_id}
    assert {envelope.producer for envelope in envelopes} == {"feed-replay"}
    for record, message in zip(publisher.records, messages, strict=True):
        expected = "t-1.marketdata.trade-events.v1" if isinstance(message, Trade) else "t-1.marketdata.book-events.v1"
        assert record.topic == expected
        assert dict(record.headers)["event_type"] == Envelope.from_bytes(record.value).type.encode()


async def test_replay_loop_and_limit_and_start_at() -> None:
    publisher = FakePublisher()
    source = FileSource(SAMPLE)
    report = await replay(source, publisher, speed=0, loop=True, limit=3 * len(source) + 5, start_at=NOW)
    published = [decode_marketdata(Envelope.from_bytes(record.value)) for record in publisher.records]
    assert report.published == len(published) == 3 * len(source) + 5
    assert published[0].timestamp == NOW
    assert [m.timestamp for m in published] == sorted(m.timestamp for m in published)


async def test_stop_event_ends_the_replay_cleanly_even_while_sleeping() -> None:
    stop = asyncio.Event()
    fake, publisher = FakeTime(), FakePublisher()
    progress: list[ReplayReport] = []

    async def sleep_until_signal(delay_s: float) -> None:
        if len(fake.slept) < 10:
            await fake.sleep(delay_s)
            return
        stop.set()  # as the SIGINT/SIGTERM handler does, while the replay waits for the next message
        await asyncio.Event().wait()

    report = await asyncio.wait_for(
        replay(
            SyntheticMarket(seed=1, start_at=NOW),
            publisher,
            speed=1,
            stop=stop,
            sleep=sleep_until_signal,
            clock=fake.clock,
            on_progress=progress.append,
        ),
        timeout=5,
    )
    assert report.stopped
    assert len(publisher.batches) == 11  # the first message, then one batch after each of the 10 sleeps
    assert report.published == len(publisher.records) == progress[-1].published


async def test_replay_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speed"):
        await replay(ListSource([]), FakePublisher(), speed=-1)
    with pytest.raises(ValueError, match="limit"):
        await replay(ListSource([]), FakePublisher(), limit=-1)


# --------------------------------------------------------------------------- CLI errors (before any Kafka call)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["replay"], "give exactly one of --file PATH or --synthetic"),
        (["replay", "--synthetic", "--file", "x.csv"], "give exactly one of --file PATH or --synthetic"),
        (["replay", "--synthetic", "--start-price", "abc"], "--start-price: not a decimal number"),
        (["replay", "--synthetic", "--start-price", "-5"], "start_price must be positive"),
        (["replay", "--synthetic", "--symbol", "btc"], "symbol: String should match pattern"),
        (["replay", "--file", "/nonexistent/feed.csv"], "/nonexistent/feed.csv: cannot read"),
    ],
)
def test_cli_reports_bad_input_in_one_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(feed_app, [*args, "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output


def test_cli_names_the_bad_line_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        HEADER + "2026-01-01T00:00:00Z,trade,BTC/USD,buy,100,1,t1\n2026-01-01T00:00:01Z,trade,BTC/USD,buy,1.2.3,1,t2\n"
    )
    result = CliRunner().invoke(feed_app, ["replay", "--file", str(path), "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert f"{path}: line 3: price" in result.output
