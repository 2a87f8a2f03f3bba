"""Kraken WebSocket v2 public market data: `instrument`, `book` (validated by its checksum), `trade`, as the
platform's `BookSnapshot` / `BookDelta` / `Trade` messages.

One connection (https://docs.kraken.com/api/docs/guides/spot-ws-intro): subscribe `instrument` first and wait for
the pairs' precisions (the book checksum needs them), then `book` at the chosen depth and `trade` for every symbol.
Each book message is applied to a `KrakenBook` and validated before anything is handed on, so a wrong book is never
published: on a checksum mismatch the book is dropped, `book` is unsubscribed and subscribed again for that symbol
(a fresh snapshot), and the mismatch counted. Malformed frames, unknown messages and levels the schema refuses are
logged, counted and skipped. No frame for `idle_timeout_s` (the venue sends a heartbeat every second) or a closed
connection: every book is dropped, and the client reconnects after an exponential backoff with full jitter
(`initial_backoff_s` doubling to `max_backoff_s`, reset once a session delivered a valid book), then subscribes
everything again. Book messages carry the time the feed received them (so a consumer's staleness measures this
feed, not the venue's clock); trades carry the venue's trade time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from shared.clock import utc_now
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketData, Trade
from shared.observability.logging import get_logger
from shared.observability.metrics import counter
from shared.venues.backoff import full_jitter_s
from shared.venues.kraken.book import DEPTHS, BookLevelError, ChecksumMismatch, KrakenBook, PairPrecision
from shared.venues.kraken.ws_wire import (
    BookMessage,
    InstrumentMessage,
    MethodResponse,
    TradeMessage,
    TradeRecord,
    Unknown,
    WireError,
    decode_frame,
)

log = get_logger(__name__)

PUBLIC_URL = "wss://ws.kraken.com/v2"
VENUE = "kraken"

FAULTS = counter(
    "aether_kraken_ws_faults_total",
    "Kraken WebSocket faults recovered from, by kind (malformed, unknown, checksum_mismatch, invalid_book, "
    "invalid_trade, subscribe_error, unknown_symbol, idle_timeout, disconnect)",
    ["kind"],
)
MESSAGES = counter("aether_kraken_ws_messages_total", "Kraken market-data messages handed on, by type", ["type"])

Sink = Callable[[MarketData], Awaitable[None]]


class _Reconnect(Exception):
    """End this session and connect again."""


@dataclass
class FeedStats:
    """What the client has seen since it started (the same counts go to Prometheus)."""

    connections: int = 0
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        FAULTS.labels(kind).inc()


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """Connection behaviour; the defaults suit the real venue."""

    url: str = PUBLIC_URL
    depth: int = 10
    idle_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


class KrakenPublicFeed:
    """Streams `symbols` from Kraken into `sink` until stopped; never raises for what the venue sends."""

    def __init__(
        self,
        symbols: Sequence[str],
        sink: Sink,
        options: FeedOptions | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options or FeedOptions()
        if self.options.depth not in DEPTHS:
            raise ValueError(f"depth must be one of {DEPTHS}, not {self.options.depth}")
        if not symbols:
            raise ValueError("symbols: at least one")
        self.symbols = tuple(dict.fromkeys(symbols))
        self.sink = sink
        self.rng = rng or random.Random()  # noqa: S311  # reconnect jitter, not a secret
        self.stats = FeedStats()
        self.books: dict[str, KrakenBook] = {}
        self.precisions: dict[str, PairPrecision] = {}
        self._sequence: dict[str, int] = {}
        self._req_id = 0
        self._instruments_seen = False

    def backoff_s(self, failures: int) -> float:
        """The delay before reconnect number `failures` (full jitter, shared.venues.backoff)."""
        return full_jitter_s(self.rng, failures, self.options.initial_backoff_s, self.options.max_backoff_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, reconnect with backoff, until `stop` is set."""
        failures = 0
        while not stop.is_set():
            healthy = await self._connection(stop)
            failures = 0 if healthy else failures + 1
            if stop.is_set():
                break
            delay = self.backoff_s(max(failures, 1))
            log.info("kraken_ws_reconnecting", delay_s=round(delay, 3), failures=failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connection(self, stop: asyncio.Event) -> bool:
        """One connection; True when it delivered at least one valid book."""
        self.books.clear()
        self.precisions.clear()
        self._instruments_seen = False
        synced_before = self.stats.snapshots
        try:
            async with connect(
                self.options.url, open_timeout=self.options.open_timeout_s, max_size=2**22, ping_interval=20
            ) as ws:
                self.stats.connections += 1
                log.info("kraken_ws_connected", url=self.options.url)
                await self._session(ws, stop)
        except _Reconnect:
            pass
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.stats.count("disconnect")
            log.warning("kraken_ws_disconnected", error_type=type(exc).__name__, error=str(exc)[:200])
        finally:
            self.books.clear()
        return self.stats.snapshots > synced_before

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        await self._send(ws, {"method": "subscribe", "params": {"channel": "instrument", "snapshot": True}})
        subscribed = False
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                receiver = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait(
                    {receiver, stopper}, timeout=self.options.idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                if receiver not in done:
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await receiver
                    if stopper in done:
                        return
                    self.stats.count("idle_timeout")
                    log.warning("kraken_ws_idle_timeout", idle_timeout_s=self.options.idle_timeout_s)
                    raise _Reconnect
                await self._frame(ws, receiver.result())
                if not subscribed and self._instruments_seen:
                    subscribed = True
                    await self._subscribe_markets(ws)
        finally:
            stopper.cancel()

    async def _subscribe_markets(self, ws: ClientConnection) -> None:
        symbols = [symbol for symbol in self.symbols if symbol in self.precisions]
        for symbol in self.symbols:
            if symbol not in self.precisions:
                self.stats.count("unknown_symbol")
                log.error("kraken_ws_unknown_symbol", symbol=symbol)
        if not symbols:
            return
        params = {"channel": "book", "symbol": symbols, "depth": self.options.depth, "snapshot": True}
        await self._send(ws, {"method": "subscribe", "params": params})
        await self._send(
            ws, {"method": "subscribe", "params": {"channel": "trade", "symbol": symbols, "snapshot": False}}
        )

    async def _resubscribe_book(self, ws: ClientConnection, symbol: str) -> None:
        params: dict[str, Any] = {"channel": "book", "symbol": [symbol], "depth": self.options.depth}
        await self._send(ws, {"method": "unsubscribe", "params": params})
        await self._send(ws, {"method": "subscribe", "params": {**params, "snapshot": True}})

    async def _send(self, ws: ClientConnection, request: dict[str, Any]) -> None:
        self._req_id += 1
        await ws.send(json.dumps({**request, "req_id": self._req_id}))

    async def _frame(self, ws: ClientConnection, frame: str | bytes) -> None:
        try:
            message = decode_frame(frame)
        except WireError as exc:
            self.stats.count("malformed")
            log.warning("kraken_ws_malformed_frame", error=str(exc)[:200])
            return
        if isinstance(message, BookMessage):
            await self._book(ws, message)
        elif isinstance(message, TradeMessage):
            await self._trades(message)
        elif isinstance(message, InstrumentMessage):
            self.precisions.update({s: p for s, p in message.pairs.items() if s in self.symbols})
            self._instruments_seen = True
        elif isinstance(message, MethodResponse):
            if not message.success:
                self.stats.count("subscribe_error")
                log.error(
                    "kraken_ws_request_refused", method=message.method, symbol=message.symbol, error=message.error
                )
        elif isinstance(message, Unknown):
            self.stats.count("unknown")
            log.info("kraken_ws_unknown_message", what=message.what)

    async def _book(self, ws: ClientConnection, message: BookMessage) -> None:
        symbol = message.symbol
        if symbol not in self.symbols:
            self.stats.count("unknown")
            return
        book = self.books.get(symbol)
        if message.snapshot:
            book = self.books[symbol] = KrakenBook(symbol, self.options.depth, self.precisions.get(symbol))
        elif book is None or not book.synced:
            return  # after a mismatch, until the new snapshot
        try:
            if message.snapshot:
                book.apply_snapshot(message.bids, message.asks, message.checksum)
                published: MarketData = self._snapshot(book)
            else:
                bids, asks = book.apply_update(message.bids, message.asks, message.checksum)
                published = self._delta(symbol, bids, asks)
        except (ChecksumMismatch, BookLevelError, ValidationError) as exc:
            kind = "checksum_mismatch" if isinstance(exc, ChecksumMismatch) else "invalid_book"
            self.stats.count(kind)
            log.warning("kraken_ws_book_dropped", symbol=symbol, reason=kind, error=str(exc)[:200])
            book.reset()
            await self._resubscribe_book(ws, symbol)
            return
        if isinstance(published, BookSnapshot):
            self.stats.snapshots += 1
        else:
            self.stats.deltas += 1
        MESSAGES.labels(published.TYPE).inc()
        await self.sink(published)

    def _next_sequence(self, symbol: str) -> int:
        self._sequence[symbol] = sequence = self._sequence.get(symbol, -1) + 1
        return sequence

    def _snapshot(self, book: KrakenBook) -> BookSnapshot:
        return BookSnapshot(
            venue=VENUE,
            symbol=book.symbol,
            bids=[Level(price=p, qty=q) for p, q in book.bids()],
            asks=[Level(price=p, qty=q) for p, q in book.asks()],
            checksum=book.checksum(),
            timestamp=utc_now(),
            sequence=self._next_sequence(book.symbol),
        )

    def _delta(self, symbol: str, bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal]) -> BookDelta:
        return BookDelta(
            venue=VENUE,
            symbol=symbol,
            bids=[Level(price=p, qty=q) for p, q in bids.items()],
            asks=[Level(price=p, qty=q) for p, q in asks.items()],
            checksum=self.books[symbol].checksum(),
            timestamp=utc_now(),
            sequence=self._next_sequence(symbol),
        )

    async def _trades(self, message: TradeMessage) -> None:
        for record in message.trades:
            if record.symbol not in self.symbols:
                continue
            try:
                trade = _trade(record)
            except ValidationError as exc:
                self.stats.count("invalid_trade")
                log.warning("kraken_ws_invalid_trade", symbol=record.symbol, error=str(exc)[:200])
                continue
            self.stats.trades += 1
            MESSAGES.labels(trade.TYPE).inc()
            await self.sink(trade)


def _trade(record: TradeRecord) -> Trade:
    return Trade(
        venue=VENUE,
        symbol=record.symbol,
        trade_id=str(record.trade_id),
        price=record.price,
        qty=record.qty,
        side=record.side,
        ord_type=record.ord_type,
        timestamp=record.timestamp,
    )
