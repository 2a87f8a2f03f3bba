"""The Kraken v2 local book: the documented checksum example, a long generated stream at depths 10/25/100 with
every checksum matching, a corrupted checksum detected, and the net changes the feed publishes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.venues.kraken.book import ChecksumMismatch, KrakenBook, PairPrecision, WireLevel
from shared.venues.kraken.ws_wire import BookMessage, InstrumentMessage, decode_frame
from tests.fakes.kraken_ws import KrakenMarket, recorded_stream

# https://docs.kraken.com/api/docs/guides/spot-ws-book-v2 "Checksum Steps with Example" (string decoder).
DOC_BIDS = [
    ("45283.5", "0.10000000"),
    ("45283.4", "1.54582015"),
    ("45282.1", "0.10000000"),
    ("45281.0", "0.10000000"),
    ("45280.3", "1.54592586"),
    ("45279.0", "0.07990000"),
    ("45277.6", "0.03310103"),
    ("45277.5", "0.30000000"),
    ("45277.3", "1.54602737"),
    ("45276.6", "0.15445238"),
]
DOC_ASKS = [
    ("45285.2", "0.00100000"),
    ("45286.4", "1.54571953"),
    ("45286.6", "1.54571109"),
    ("45289.6", "1.54560911"),
    ("45290.2", "0.15890660"),
    ("45291.8", "1.54553491"),
    ("45294.7", "0.04454749"),
    ("45296.1", "0.35380000"),
    ("45297.5", "0.09945542"),
    ("45299.5", "0.18772827"),
]
DOC_CHECKSUM = 3310070434


def levels_of(pairs: list[tuple[str, str]]) -> list[WireLevel]:
    return [(Decimal(price), Decimal(qty)) for price, qty in pairs]


def test_the_documented_example_checksum() -> None:
    book = KrakenBook("BTC/USD", 10)
    book.apply_snapshot(levels_of(DOC_BIDS), levels_of(DOC_ASKS), DOC_CHECKSUM)
    assert book.checksum() == DOC_CHECKSUM
    assert book.bids(1) == [(Decimal("45283.5"), Decimal("0.10000000"))]
    assert book.asks(1) == [(Decimal("45285.2"), Decimal("0.00100000"))]


def test_the_documented_example_as_shortest_numbers_needs_the_pairs_precision() -> None:
    """On the wire v2 sends numbers (0.1, not "0.10000000"): the checksum is rebuilt at the pair's precision."""
    bids = [(Decimal(p).normalize(), Decimal(q).normalize()) for p, q in DOC_BIDS]
    asks = [(Decimal(p).normalize(), Decimal(q).normalize()) for p, q in DOC_ASKS]
    book = KrakenBook("BTC/USD", 10, PairPrecision(price=1, qty=8))
    book.apply_snapshot(bids, asks, DOC_CHECKSUM)
    assert book.synced
    with pytest.raises(ChecksumMismatch):
        KrakenBook("BTC/USD", 10).apply_snapshot(bids, asks, DOC_CHECKSUM)


@pytest.mark.parametrize("depth", [10, 25, 100])
def test_a_long_generated_stream_matches_every_checksum(depth: int) -> None:
    market = KrakenMarket(symbol="BTC/USD", seed=depth)
    precision = PairPrecision(market.price_precision, market.qty_precision)
    book = KrakenBook("BTC/USD", depth, precision)
    snapshot = decode_frame(market.snapshot_frame(depth))
    assert isinstance(snapshot, BookMessage)
    book.apply_snapshot(snapshot.bids, snapshot.asks, snapshot.checksum)
    downstream = {"bids": dict(book.bids()), "asks": dict(book.asks())}
    validated = deletions = fell_out = 0
    while validated < 2000:
        before_bids, before_asks, _ = market.step()
        frame = market.update_frame(before_bids, before_asks, depth)
        if frame is None:
            continue
        message = decode_frame(frame)
        assert isinstance(message, BookMessage)
        assert message.checksum is not None
        deletions += sum(qty == 0 for _, qty in message.bids + message.asks)
        bid_changes, ask_changes = book.apply_update(message.bids, message.asks, message.checksum)  # raises on a miss
        validated += 1
        for sent, changes in ((message.bids, bid_changes), (message.asks, ask_changes)):
            removed_by_venue = {price for price, qty in sent if qty == 0}
            fell_out += sum(qty == 0 and price not in removed_by_venue for price, qty in changes.items())
        for side, changes in (("bids", bid_changes), ("asks", ask_changes)):
            for price, qty in changes.items():
                if qty == 0:
                    downstream[side].pop(price, None)
                else:
                    downstream[side][price] = qty
        assert downstream == {"bids": dict(book.bids()), "asks": dict(book.asks())}
    scale = Decimal(10) ** -market.price_precision, Decimal(10) ** -market.qty_precision
    truth_bids = sorted(market.bids.items(), reverse=True)[:depth]
    assert book.bids() == [(p * scale[0], q * scale[1]) for p, q in truth_bids]
    assert book.asks() == [(p * scale[0], q * scale[1]) for p, q in sorted(market.asks.items())[:depth]]
    assert deletions > 100  # the stream exercised removals ...
    assert fell_out > 10  # ... and levels pushed out of the subscribed depth


def test_a_corrupted_checksum_is_detected_and_the_book_dropped_until_a_new_snapshot() -> None:
    frames = list(recorded_stream(updates=50))
    instrument = decode_frame(frames[0])
    assert isinstance(instrument, InstrumentMessage)
    book = KrakenBook("BTC/USD", 10, instrument.pairs["BTC/USD"])
    messages = [decode_frame(frame) for frame in frames[1:]]
    assert all(isinstance(message, BookMessage) for message in messages)
    first, *updates = [m for m in messages if isinstance(m, BookMessage)]
    book.apply_snapshot(first.bids, first.asks, first.checksum)
    for message in updates[:20]:
        book.apply_update(message.bids, message.asks, message.checksum)
    bad = updates[20]
    assert bad.checksum is not None
    with pytest.raises(ChecksumMismatch) as caught:
        book.apply_update(bad.bids, bad.asks, bad.checksum ^ 0x10)
    assert caught.value.expected == bad.checksum ^ 0x10
    assert caught.value.computed == bad.checksum
    assert not book.synced
    assert book.bids() == []
    assert book.asks() == []
    with pytest.raises(RuntimeError):
        book.apply_update(updates[21].bids, updates[21].asks, updates[21].checksum)
    market = KrakenMarket(symbol="BTC/USD", seed=7)  # a resubscription: a fresh snapshot validates again
    again = decode_frame(market.snapshot_frame(10))
    assert isinstance(again, BookMessage)
    book.apply_snapshot(again.bids, again.asks, again.checksum)
    assert book.synced
    assert book.checksum() == again.checksum


def test_depth_must_be_a_kraken_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        KrakenBook("BTC/USD", 11)
