"""Binance public market data (`<symbol>@depth@100ms` diffs kept by `LocalBook`, `<symbol>@trade`) as the
platform's `BookSnapshot` / `Trade` messages.

One combined-stream connection (`/stream?streams=...`); the depth snapshot of a symbol is fetched over REST
(GET /api/v3/depth) once its first diff event is buffered, as "How to manage a local order book correctly" says.
A book is handed on (its top `depth` levels as a `BookSnapshot`, sequence = its update id) only while synced:
a gap (`BookGap`) drops it, is counted and a new snapshot is fetched; a snapshot older than the buffer is fetched
again. Malformed frames, unknown events and invalid levels are logged, counted and skipped. No frame for
`idle_timeout_s` or a closed connection: every book is dropped and the client reconnects after an exponential
backoff with full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from shared.clock import utc_now
from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, Level, MarketData, Trade
from shared.observability.logging import get_logger
from shared.observability.metrics import counter
from shared.venues.backoff import full_jitter_s
from shared.venues.binance.adapter import BINANCE_URL
from shared.venues.binance.book import BookGap, LocalBook, depth_snapshot, depth_update
from shared.venues.binance.wire import BinanceWireError

log = get_logger(__name__)

STREAM_URL = "wss://stream.binance.com:9443"
VENUE = "binance"
SNAPSHOT_ATTEMPTS = 5

FAULTS = counter(
    "aether_binance_ws_faults_total",
    "Binance WebSocket faults recovered from, by kind (malformed, unknown, gap, stale_snapshot, snapshot_failed, "
    "invalid_book, invalid_trade, idle_timeout, disconnect)",
    ["kind"],
)

Sink = Callable[[MarketData], Awaitable[None]]


class _Reconnect(Exception):
    """End this session and connect again."""


@dataclass
class FeedStats:
    """What the client has seen since it started (the same fault counts go to Prometheus)."""

    connections: int = 0
    snapshots: int = 0
    books: int = 0
    trades: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        FAULTS.labels(kind).inc()


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """Connection behaviour; the defaults suit the real venue."""

    url: str = STREAM_URL
    rest_url: str = BINANCE_URL
    depth: int = 10
    snapshot_limit: int = 1000
    idle_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


def venue_symbol(symbol: str) -> str:
    """BTC/USDT -> BTCUSDT."""
    return symbol.replace("/", "")


class BinancePublicFeed:
    """Streams `symbols` (BTC/USDT, ...) from Binance into `sink` until stopped; never raises for what it receives."""

    def __init__(
        self,
        symbols: Sequence[str],
        sink: Sink,
        options: FeedOptions | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not symbols:
            raise ValueError("symbols: at least one")
        self.options = options or FeedOptions()
        self.symbols = {venue_symbol(s): s for s in dict.fromkeys(symbols)}
        self.sink = sink
        self.rng = rng or random.Random()  # noqa: S311  # reconnect jitter, not a secret
        self.stats = FeedStats()
        self.books: dict[str, LocalBook] = {}
        self._fetching: dict[str, asyncio.Task[None]] = {}

    def backoff_s(self, failures: int) -> float:
        """The delay before reconnect number `failures` (full jitter, shared.venues.backoff)."""
        return full_jitter_s(self.rng, failures, self.options.initial_backoff_s, self.options.max_backoff_s)

    def stream_url(self) -> str:
        """The combined-stream URL of every symbol's diff depth and trade streams."""
        names = [f"{s.lower()}@depth@100ms/{s.lower()}@trade" for s in self.symbols]
        return f"{self.options.url}/stream?streams={'/'.join(names)}"

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, reconnect with backoff, until `stop` is set."""
        failures = 0
        async with httpx.AsyncClient(base_url=self.options.rest_url, timeout=self.options.open_timeout_s) as http:
            while not stop.is_set():
                healthy = await self._connection(http, stop)
                failures = 0 if healthy else failures + 1
                if stop.is_set():
                    break
                delay = self.backoff_s(max(failures, 1))
                log.info("binance_ws_reconnecting", delay_s=round(delay, 3), failures=failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connection(self, http: httpx.AsyncClient, stop: asyncio.Event) -> bool:
        self.books = {s: LocalBook(s) for s in self.symbols}
        synced_before = self.stats.snapshots
        try:
            async with connect(self.stream_url(), open_timeout=self.options.open_timeout_s, max_size=2**22) as ws:
                self.stats.connections += 1
                log.info("binance_ws_connected", url=self.options.url)
                await self._session(ws, http, stop)
        except _Reconnect:
            pass
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.stats.count("disconnect")
            log.warning("binance_ws_disconnected", error_type=type(exc).__name__, error=str(exc)[:200])
        finally:
            for task in self._fetching.values():
                task.cancel()
            await asyncio.gather(*self._fetching.values(), return_exceptions=True)
            self._fetching.clear()
            self.books.clear()
        return self.stats.snapshots > synced_before

    async def _session(self, ws: ClientConnection, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
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
                    raise _Reconnect
                await self._frame(receiver.result(), http)
        finally:
            stopper.cancel()

    async def _frame(self, raw: str | bytes, http: httpx.AsyncClient) -> None:
        try:
            frame = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.stats.count("malformed")
            return
        data = frame.get("data") if isinstance(frame, dict) else None
        kind = data.get("e") if isinstance(data, dict) else None
        if kind == "depthUpdate":
            await self._depth(data, http)
        elif kind == "trade":
            await self._trade(data)
        else:
            self.stats.count("unknown")

    async def _depth(self, data: Any, http: httpx.AsyncClient) -> None:
        try:
            update = depth_update(data)
        except BinanceWireError as exc:
            self.stats.count("malformed")
            log.warning("binance_ws_malformed_depth", error=str(exc)[:200])
            return
        book = self.books.get(update.symbol)
        if book is None:
            self.stats.count("unknown")
            return
        try:
            changed = book.on_update(update)
        except BookGap as gap:
            self.stats.count("gap")
            log.warning("binance_book_gap", symbol=update.symbol, detail=str(gap))
            changed = False
        if changed:
            await self._publish(book)
        elif not book.synced and update.symbol not in self._fetching:
            self._fetching[update.symbol] = asyncio.create_task(self._snapshot(book, http))

    async def _snapshot(self, book: LocalBook, http: httpx.AsyncClient) -> None:
        """Fetch the depth snapshot until one continues the buffered events (or give up until the next diff)."""
        try:
            for _ in range(SNAPSHOT_ATTEMPTS):
                params = {"symbol": book.symbol, "limit": str(self.options.snapshot_limit)}
                try:
                    response = await http.get("/api/v3/depth", params=params)
                    response.raise_for_status()
                    snapshot = depth_snapshot(response.json())
                except (httpx.HTTPError, ValueError) as exc:
                    self.stats.count("snapshot_failed")
                    log.warning("binance_depth_snapshot_failed", symbol=book.symbol, error=type(exc).__name__)
                    await asyncio.sleep(self.options.initial_backoff_s)
                    continue
                try:
                    if book.on_snapshot(snapshot):
                        self.stats.snapshots += 1
                        await self._publish(book)
                        return
                    self.stats.count("stale_snapshot")
                except BookGap:
                    self.stats.count("gap")
        finally:
            self._fetching.pop(book.symbol, None)

    async def _publish(self, book: LocalBook) -> None:
        bids, asks = book.top(self.options.depth)
        try:
            message = BookSnapshot(
                venue=VENUE,
                symbol=self.symbols[book.symbol],
                bids=[Level(price=p, qty=q) for p, q in bids],
                asks=[Level(price=p, qty=q) for p, q in asks],
                timestamp=utc_now(),
                sequence=book.update_id or 0,
            )
        except ValidationError as exc:
            self.stats.count("invalid_book")
            log.warning("binance_invalid_book", symbol=book.symbol, error=str(exc)[:200])
            book.reset()
            return
        self.stats.books += 1
        await self.sink(message)

    async def _trade(self, data: Any) -> None:
        symbol = self.symbols.get(str(data.get("s")))
        try:
            if symbol is None or not isinstance(data.get("T"), int) or not isinstance(data.get("m"), bool):
                raise ValueError("trade: unknown symbol or missing T / m")
            message = Trade(
                venue=VENUE,
                symbol=symbol,
                trade_id=str(data["t"]),
                price=data["p"],
                qty=data["q"],
                side=OrderSide.SELL if data["m"] else OrderSide.BUY,  # m: the buyer was the maker
                timestamp=datetime.fromtimestamp(data["T"] / 1000, UTC),
            )
        except (ValidationError, ValueError, KeyError, OverflowError) as exc:
            self.stats.count("invalid_trade")
            log.warning("binance_invalid_trade", error=str(exc)[:200])
            return
        self.stats.trades += 1
        await self.sink(message)
