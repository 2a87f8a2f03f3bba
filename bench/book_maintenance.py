"""Benchmark: Kraken WebSocket v2 book maintenance with checksum validation, Aether against ccxt, in one run.

Stream: one recorded-format stream (`tests/fakes/kraken_ws.py`, seeded): an `instrument` snapshot, a BTC/USD `book`
snapshot at depth 10, then `--updates` book updates in Kraken's wire format (numbers in their shortest form,
deletions, levels pushed out of the depth, a checksum on every message). Both sides start from the same text frames.

- Aether: `decode_frame` (JSON with exact decimals, validated) -> `KrakenBook.apply_update` (levels, truncation,
  CRC32 checksum checked after every message, net changes computed for the published delta).
- ccxt (`ccxt.pro.kraken`, the peer): `json.loads` (its client's parser) -> `handle_message` -> `handle_order_book`
  (its `OrderBook` classes: store, limit), then the checksum per message with ccxt's own `format_number` and
  `crc32` over the top 10 levels, written at the pair's precision. ccxt's built-in v2 checksum branch cannot be
  used: it is off by default ("temporarily disabled because the exchange checksum was not reliable") and, turned on,
  raises AttributeError ('float' object has no attribute 'split') on v2's numeric levels; formatting at the pair's
  precision is what makes the peer's checksums match (both sides are asserted to match on every message).

ccxt is a bench-only dependency, never a runtime one: `/work/main/.venv/bin/pip install 'ccxt>=4.5'` (or
`pip install -e '.[ml]'`, whose extra lists it). Run: `PYTHONPATH=. .venv/bin/python bench/book_maintenance.py`.
Prints one JSON line: both rates (updates/s, best of `--repeat`), their ratio and the 3x target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.venues.kraken.book import KrakenBook
from shared.venues.kraken.ws_wire import BookMessage, InstrumentMessage, decode_frame
from tests.fakes.kraken_ws import recorded_stream

SYMBOL = "BTC/USD"
TARGET_RATIO = 3.0


def aether_pass(frames: list[str]) -> tuple[float, int]:
    """Seconds to maintain the book over `frames` (after the instrument frame); updates validated."""
    instrument = decode_frame(frames[0])
    if not isinstance(instrument, InstrumentMessage):
        raise RuntimeError("the stream must start with the instrument snapshot")
    book = KrakenBook(SYMBOL, 10, instrument.pairs[SYMBOL])
    validated = 0
    started = time.perf_counter()
    for frame in frames[1:]:
        message = decode_frame(frame)
        if not isinstance(message, BookMessage):
            raise RuntimeError("only book messages are expected in the stream")
        if message.snapshot:
            book.apply_snapshot(message.bids, message.asks, message.checksum)
        else:
            book.apply_update(message.bids, message.asks, message.checksum)  # raises on a checksum mismatch
            validated += 1
    return time.perf_counter() - started, validated


class _PeerClient:
    """What ccxt's handlers touch of its WebSocket client: subscriptions, resolve, reject."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Any] = {}
        self.resolved = 0
        self.rejected: list[Exception] = []

    def resolve(self, _result: object, _message_hash: str) -> None:
        self.resolved += 1

    def reject(self, error: Exception, _message_hash: str) -> None:
        self.rejected.append(error)


def ccxt_pass(frames: list[str]) -> tuple[float, int]:
    """Seconds for ccxt to maintain the same book and check the same checksums."""
    import ccxt.pro

    instrument = json.loads(frames[0])["data"]["pairs"][0]
    price_places, qty_places = instrument["price_precision"], instrument["qty_precision"]
    exchange = ccxt.pro.kraken()
    client = _PeerClient()
    client.subscriptions[exchange.get_message_hash("orderbook", None, SYMBOL)] = {"limit": 10}
    fmt, crc32 = exchange.format_number, exchange.crc32
    validated = 0
    started = time.perf_counter()
    for frame in frames[1:]:
        message = json.loads(frame)
        exchange.handle_message(client, message)
        book = exchange.orderbooks[SYMBOL]
        parts = [fmt(f"{p:.{price_places}f}") + fmt(f"{q:.{qty_places}f}") for p, q in book["asks"][:10]]
        parts += [fmt(f"{p:.{price_places}f}") + fmt(f"{q:.{qty_places}f}") for p, q in book["bids"][:10]]
        if crc32("".join(parts), False) != message["data"][0]["checksum"]:
            raise RuntimeError(f"ccxt's book disagrees with the venue's checksum at frame {validated + 2}")
        validated += message["type"] == "update"
    if client.rejected:
        raise RuntimeError(f"ccxt rejected the book: {client.rejected[0]}")
    return time.perf_counter() - started, validated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    frames = list(recorded_stream(SYMBOL, args.seed, args.updates, depth=10))
    import ccxt

    ours, theirs = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        seconds, validated = aether_pass(frames)
        ours.append(validated / seconds)
        seconds, peer_validated = ccxt_pass(frames)
        theirs.append(peer_validated / seconds)
        if not validated == peer_validated == args.updates:
            raise RuntimeError(f"validated {validated} vs ccxt {peer_validated}, expected {args.updates}")
    aether_rate, ccxt_rate = max(ours), max(theirs)
    print(
        json.dumps(
            {
                "bench": "book_maintenance",
                "stream": f"kraken v2 BTC/USD depth 10, seed {args.seed}, {args.updates} updates",
                "aether_updates_per_s": round(aether_rate),
                "ccxt_updates_per_s": round(ccxt_rate),
                "ratio": round(aether_rate / ccxt_rate, 2),
                "target_ratio": TARGET_RATIO,
                "target_met": aether_rate / ccxt_rate >= TARGET_RATIO,
                "ccxt_version": ccxt.__version__,
                "checksums_validated_each": args.updates,
            }
        )
    )


if __name__ == "__main__":
    main()
