"""Coinbase Advanced Trade WebSocket market data: `level2` (sequence-checked), `market_trades`, `heartbeats`, as the
platform's `BookSnapshot` / `BookDelta` / `Trade` messages; and the `user` channel feeding the adapter.

One connection (wss://advanced-trade-ws.coinbase.com): subscribe `heartbeats` (keeps the connection open and the
sequence moving), `level2` and `market_trades` for every product, each with a JWT when a signer is given. Every
frame's `sequence_num` must follow the previous one: a gap means a lost message, so every book is dropped, the gap
counted, and the client reconnects at once (fresh snapshots). A crossed book is dropped and resynced the same way.
Malformed frames and unknown products are logged, counted and skipped. No frame for `idle_timeout_s` or a closed
connection: books dropped, reconnect after exponential backoff with full jitter. Aether's `BTC/USD` is Coinbase's
`BTC-USD`; published messages carry Aether's form.
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
from shared.domain.types import AccountId, OrderSide
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketData, Trade
from shared.observability.logging import get_logger
from shared.observability.metrics import counter
from shared.venues.backoff import full_jitter_s
from shared.venues.coinbase.book import CrossedBook, Level2Book, SequenceGap, SequenceTracker, WireLevel
from shared.venues.coinbase.ws_wire import ErrorFrame, Frame, MarketTrade, WsWireError, decode_frame

log = get_logger(__name__)

PUBLIC_URL = "wss://advanced-trade-ws.coinbase.com"
USER_URL = "wss://advanced-trade-ws-user.coinbase.com"
VENUE = "coinbase"

FAULTS = counter(
    "aether_coinbase_ws_faults_total",
    "Coinbase WebSocket faults recovered from, by kind (malformed, sequence_gap, crossed_book, invalid_book, "
    "invalid_trade, venue_error, unknown_product, idle_timeout, disconnect)",
    ["kind"],
)
MESSAGES = counter("aether_coinbase_ws_messages_total", "Coinbase market-data messages handed on, by type", ["type"])

Sink = Callable[[MarketData], Awaitable[None]]


class _Reconnect(Exception):
    """End this session and connect again (`at_once`: no backoff, as after a sequence gap)."""

    def __init__(self, reason: str, at_once: bool = False) -> None:
        super().__init__(reason)
        self.at_once = at_once


@dataclass
class FeedStats:
    """What the client has seen since it started (the same counts go to Prometheus)."""

    connections: int = 0
    snapshots: int = 0
    deltas: int = 0
    trades: int = 0
    resyncs: int = 0
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


def product_of(symbol: str) -> str:
    """`BTC/USD` -> `BTC-USD`."""
    return symbol.replace("/", "-")


class CoinbasePublicFeed:
    """Streams `symbols` (Aether's `BTC/USD` form) from Coinbase into `sink` until stopped; never raises for frames."""

    def __init__(
        self,
        symbols: Sequence[str],
        sink: Sink,
        options: FeedOptions | None = None,
        *,
        jwt: Callable[[], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("symbols: at least one")
        self.options = options or FeedOptions()
        self.symbols = {product_of(s): s for s in dict.fromkeys(symbols)}
        self.sink = sink
        self.jwt = jwt
        self.rng = rng or random.Random()  # noqa: S311  # reconnect jitter, not a secret
        self.stats = FeedStats()
        self.books: dict[str, Level2Book] = {}
        self._published: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._tracker = SequenceTracker()
        self._sequence: dict[str, int] = {}

    def backoff_s(self, failures: int) -> float:
        """The delay before reconnect number `failures` (full jitter, shared.venues.backoff)."""
        return full_jitter_s(self.rng, failures, self.options.initial_backoff_s, self.options.max_backoff_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, reconnect (at once after a gap, else with backoff), until `stop` is set."""
        failures = 0
        while not stop.is_set():
            healthy, at_once = await self._connection(stop)
            failures = 0 if healthy else failures + 1
            if stop.is_set():
                break
            delay = 0.0 if at_once else self.backoff_s(max(failures, 1))
            log.info("coinbase_ws_reconnecting", delay_s=round(delay, 3), failures=failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connection(self, stop: asyncio.Event) -> tuple[bool, bool]:
        """One connection: (delivered a valid book, reconnect at once)."""
        self.books.clear()
        self._published.clear()
        self._tracker.reset()
        delivered_before = self.stats.snapshots
        try:
            async with connect(self.options.url, open_timeout=self.options.open_timeout_s, max_size=2**24) as ws:
                self.stats.connections += 1
                await self._session(ws, stop)
        except _Reconnect as exc:
            return self.stats.snapshots > delivered_before, exc.at_once
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.stats.count("disconnect")
            log.warning("coinbase_ws_disconnected", error=type(exc).__name__)
        return self.stats.snapshots > delivered_before, False

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        for channel in ("heartbeats", "level2", "market_trades"):
            await self._subscribe(ws, channel, list(self.symbols))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                receiver = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait(
                    {receiver, stopper}, timeout=self.options.idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
                if receiver not in done:
                    receiver.cancel()
                    with contextlib.suppress(BaseException):
                        await receiver
                    if stop.is_set():
                        return
                    self.stats.count("idle_timeout")
                    raise _Reconnect("idle")
                await self._frame(receiver.result())
        finally:
            stopper.cancel()

    async def _subscribe(self, ws: ClientConnection, channel: str, products: list[str]) -> None:
        request: dict[str, Any] = {"type": "subscribe", "product_ids": products, "channel": channel}
        if self.jwt is not None:
            request["jwt"] = self.jwt()
        await ws.send(json.dumps(request))

    async def _frame(self, text: str | bytes) -> None:
        try:
            frame = decode_frame(text)
        except WsWireError as exc:
            self.stats.count("malformed")
            log.warning("coinbase_ws_malformed", error=str(exc)[:200])
            return
        if isinstance(frame, ErrorFrame):
            self.stats.count("venue_error")
            log.error("coinbase_ws_error", message=frame.message[:200])
            return
        try:
            if not self._tracker.expect(frame.sequence):
                return  # a repeat of a message already applied
        except SequenceGap as exc:
            self.stats.count("sequence_gap")
            self.stats.resyncs += 1
            log.warning("coinbase_ws_sequence_gap", expected=exc.expected, got=exc.got)
            raise _Reconnect("sequence gap", at_once=True) from None
        if frame.channel == "l2_data":
            await self._level2(frame)
        elif frame.channel == "market_trades":
            for trade in frame.trades:
                await self._trade(trade)

    async def _level2(self, frame: Frame) -> None:
        for event in frame.l2:
            symbol = self.symbols.get(event.product_id)
            if symbol is None:
                self.stats.count("unknown_product")
                continue
            book = self.books.setdefault(event.product_id, Level2Book(symbol))
            if event.kind == "update" and not book.synced:
                continue  # until the snapshot
            try:
                if event.kind == "snapshot":
                    book.apply_snapshot(event.updates)
                else:
                    book.apply_update(event.updates)
                message = self._message(book, snapshot=event.kind == "snapshot")
            except (CrossedBook, ValidationError) as exc:
                kind = "crossed_book" if isinstance(exc, CrossedBook) else "invalid_book"
                self.stats.count(kind)
                self.stats.resyncs += 1
                log.warning("coinbase_ws_book_dropped", symbol=symbol, reason=kind, error=str(exc)[:200])
                raise _Reconnect(kind, at_once=True) from None
            if message is None:
                continue
            if isinstance(message, BookSnapshot):
                self.stats.snapshots += 1
            else:
                self.stats.deltas += 1
            MESSAGES.labels(message.TYPE).inc()
            await self.sink(message)

    def _message(self, book: Level2Book, *, snapshot: bool) -> BookSnapshot | BookDelta | None:
        """The snapshot of the top levels, or the delta between the last published top levels and the new ones."""
        bids, asks = book.top(self.options.depth)
        new = (dict(bids), dict(asks))
        old = self._published.get(book.symbol)
        self._published[book.symbol] = new
        if snapshot or old is None:
            return BookSnapshot(
                venue=VENUE,
                symbol=book.symbol,
                bids=_levels(bids),
                asks=_levels(asks),
                timestamp=utc_now(),
                sequence=self._next(book.symbol),
            )
        changed_bids, changed_asks = _diff(old[0], new[0]), _diff(old[1], new[1])
        if not changed_bids and not changed_asks:
            return None
        return BookDelta(
            venue=VENUE,
            symbol=book.symbol,
            bids=_levels(changed_bids),
            asks=_levels(changed_asks),
            timestamp=utc_now(),
            sequence=self._next(book.symbol),
        )

    async def _trade(self, record: MarketTrade) -> None:
        symbol = self.symbols.get(record.product_id)
        if symbol is None:
            self.stats.count("unknown_product")
            return
        try:
            trade = Trade(
                venue=VENUE,
                symbol=symbol,
                trade_id=record.trade_id[:64],
                price=record.price,
                qty=record.size,
                side=OrderSide.BUY if record.side == "SELL" else OrderSide.SELL,  # Coinbase reports the maker side
                timestamp=record.time,
            )
        except ValidationError as exc:
            self.stats.count("invalid_trade")
            log.warning("coinbase_ws_invalid_trade", symbol=symbol, error=str(exc)[:200])
            return
        self.stats.trades += 1
        MESSAGES.labels(trade.TYPE).inc()
        await self.sink(trade)

    def _next(self, symbol: str) -> int:
        self._sequence[symbol] = sequence = self._sequence.get(symbol, -1) + 1
        return sequence


def _levels(levels: Sequence[WireLevel]) -> list[Level]:
    return [Level(price=p, qty=q) for p, q in levels]


def _diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[WireLevel]:
    changed = [(p, q) for p, q in new.items() if old.get(p) != q]
    return changed + [(p, Decimal(0)) for p in old if p not in new]


UserHandler = Callable[[AccountId, str], Awaitable[None]]


class CoinbaseUserStream:
    """The `user` channel of one account: each order update calls `on_update(account, order_id)` (the adapter's
    `on_user_update`); when it drops, REST reconciliation (`CoinbaseVenue.sync`) is the backstop."""

    def __init__(
        self, account_id: AccountId, jwt: Callable[[], Awaitable[str]], on_update: UserHandler, url: str = USER_URL
    ) -> None:
        self.account_id = account_id
        self.jwt = jwt
        self.on_update = on_update
        self.url = url
        self.stats = FeedStats()

    async def run(self, stop: asyncio.Event, reconnect_s: float = 1.0) -> None:
        """Stream order updates until `stop`, reconnecting after `reconnect_s`."""
        while not stop.is_set():
            try:
                async with connect(self.url, open_timeout=10) as ws:
                    self.stats.connections += 1
                    await ws.send(
                        json.dumps({"type": "subscribe", "channel": "user", "product_ids": [], "jwt": await self.jwt()})
                    )
                    await self._stream(ws, stop)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
                self.stats.count("disconnect")
                log.warning("coinbase_user_ws_disconnected", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=reconnect_s)

    async def _stream(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        tracker = SequenceTracker()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiver = asyncio.ensure_future(ws.recv())
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not receiver.done():
                    receiver.cancel()
                    with contextlib.suppress(BaseException):
                        await receiver
                    return
                await self._frame(tracker, receiver.result())
        finally:
            stopper.cancel()

    async def _frame(self, tracker: SequenceTracker, text: str | bytes) -> None:
        try:
            frame = decode_frame(text)
            if isinstance(frame, ErrorFrame):
                self.stats.count("venue_error")
                log.error("coinbase_user_ws_error", message=frame.message[:200])
                return
            tracker.expect(frame.sequence)
        except WsWireError:
            self.stats.count("malformed")
            return
        except SequenceGap:
            self.stats.count("sequence_gap")  # nothing to rebuild: each update's order is re-read over REST
            tracker.reset()
        if isinstance(frame, ErrorFrame):
            return
        for order in frame.orders:
            try:
                await self.on_update(self.account_id, order.order_id)
            except Exception:  # the REST backstop catches up on what this update would have told
                log.exception("coinbase_user_update_failed", order_id=order.order_id)
