"""The replay's sources: CSV and Parquet files, the sample file, looping and rebasing, and the synthetic market
(no servers)."""

from __future__ import annotations

import importlib.util
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from data.replay.source import FileSource, SourceError, SyntheticMarket, load_file, looped, read_csv, rebased, write_csv
from shared.domain.matching import MatchingEngine, ReportKind
from shared.domain.sim_orders import SimOrder
from shared.domain.types import OrderSide, OrderType
from shared.marketdata import BookDelta, BookSnapshot, Level, Trade
from tests.kit.marketdata import HEADER, NOW, SAMPLE, synthetic

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
    messages = synthetic(seed=2, count=400)
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
    first = synthetic(seed=3, count=500)
    assert first == synthetic(seed=3, count=500)
    assert first != synthetic(seed=4, count=500)
    assert {m.venue for m in first} == {"synthetic"}


def test_synthetic_time_comes_from_start_and_steps() -> None:
    messages = synthetic(seed=3, count=300, step_s=0.5)
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
    deltas = synthetic(seed=8, count=4_000)
    every_step = synthetic(seed=8, count=4_000, snapshot_every=1)
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
    for message in synthetic(seed=5, count=3_000):
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
