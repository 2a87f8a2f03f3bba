"""A Kraken WebSocket v2 public endpoint on loopback, and the seeded market behind it.

`KrakenMarket` is an exchange-side book of one pair (integers: price in ticks, quantity in lots) that moves at
random (seeded): levels added, changed, deleted, traded through. `KrakenMarket.frames` turns each move into the
frames a client subscribed at a depth receives, as https://docs.kraken.com/api/docs/guides/spot-ws-book-v2
describes them: changed levels within the depth, `qty` 0 for levels deleted within it, levels entering it from
below, and nothing for levels pushed out of it (the client truncates). Prices and quantities are JSON numbers in
their shortest form (trailing zeros dropped, as the venue's numbers are), so a client needs the `instrument`
channel's precisions to rebuild the checksum. Checksums come from `reference_checksum`, written independently of
`shared/venues/kraken/book.py`: the digits of a value at the pair's precision, without '.' and leading zeros, are
just its integer mantissa.

`KrakenWsFake` serves it over a real WebSocket: subscribe / unsubscribe acknowledgements (one per symbol),
`instrument` snapshot, `book` snapshot then updates, `trade` updates, `heartbeat` every second, `pong`; faults on
demand: drop every connection, corrupt the next checksum of a symbol, send a malformed frame, go silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Book = dict[int, int]  # price in ticks -> quantity in lots


def reference_checksum(asks: Book, bids: Book) -> int:
    """Kraken's CRC32 over the top 10 asks (lowest first) then the top 10 bids (highest first)."""
    text = "".join(f"{price}{asks[price]}" for price in sorted(asks)[:10])
    text += "".join(f"{price}{bids[price]}" for price in sorted(bids, reverse=True)[:10])
    return zlib.crc32(text.encode())


def number(mantissa: int, places: int) -> str:
    """A JSON number literal of mantissa / 10**places in its shortest form ("0.1", "45283.5", "2")."""
    sign, digits = ("-", str(-mantissa)) if mantissa < 0 else ("", str(mantissa))
    if places == 0:
        return sign + digits
    digits = digits.rjust(places + 1, "0")
    whole, fraction = digits[:-places], digits[-places:].rstrip("0")
    return sign + whole + ("." + fraction if fraction else "")


def _top(book: Book, depth: int, descending: bool) -> Book:
    return {price: book[price] for price in sorted(book, reverse=descending)[:depth]}


@dataclass
class KrakenMarket:
    """The venue's own book of one pair, moved by a seeded random walk."""

    symbol: str = "BTC/USD"
    seed: int = 7
    price_precision: int = 1
    qty_precision: int = 8
    mid_ticks: int = 452_840
    bids: Book = field(default_factory=dict)
    asks: Book = field(default_factory=dict)
    trade_id: int = 0
    clock: datetime = field(default_factory=lambda: datetime(2026, 12, 7, tzinfo=UTC))

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.symbol}/{self.seed}")
        for level in range(1, 131):
            self.bids[self.mid_ticks - 2 * level] = self._qty()
            self.asks[self.mid_ticks + 2 * level - 1] = self._qty()

    def _qty(self) -> int:
        return self.rng.randint(1, 300_000_000)

    def pair(self) -> dict[str, Any]:
        """The pair as the `instrument` channel lists it."""
        return {
            "symbol": self.symbol,
            "base": self.symbol.split("/")[0],
            "quote": self.symbol.split("/")[1],
            "status": "online",
            "qty_precision": self.qty_precision,
            "price_precision": self.price_precision,
            "qty_increment": float(10**-self.qty_precision),
            "price_increment": float(10**-self.price_precision),
            "cost_precision": 5,
            "qty_min": 0.0001,
            "cost_min": 0.5,
            "marginable": False,
            "has_index": True,
        }

    def checksum(self) -> int:
        return reference_checksum(self.asks, self.bids)

    def _levels(self, levels: list[tuple[int, int]]) -> str:
        return ",".join(
            f'{{"price":{number(p, self.price_precision)},"qty":{number(q, self.qty_precision)}}}' for p, q in levels
        )

    def _book_frame(self, kind: str, bids: list[tuple[int, int]], asks: list[tuple[int, int]], checksum: int) -> str:
        stamp = self.clock.isoformat().replace("+00:00", "Z")
        return (
            f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{self.symbol}",'
            f'"bids":[{self._levels(bids)}],"asks":[{self._levels(asks)}],'
            f'"checksum":{checksum},"timestamp":"{stamp}"}}]}}'
        )

    def snapshot_frame(self, depth: int) -> str:
        """The `book` snapshot a client subscribing at `depth` receives now."""
        bids = sorted(_top(self.bids, depth, True).items(), reverse=True)
        asks = sorted(_top(self.asks, depth, False).items())
        return self._book_frame("snapshot", bids, asks, self.checksum())

    def step(self) -> tuple[Book, Book, list[dict[str, Any]]]:
        """Move the market by a few changes; returns the books before the move and the trades printed."""
        before_bids, before_asks = dict(self.bids), dict(self.asks)
        trades: list[dict[str, Any]] = []
        self.clock += timedelta(milliseconds=self.rng.randint(1, 400))
        for _ in range(self.rng.randint(1, 4)):
            self._move(trades)
        return before_bids, before_asks, trades

    def _move(self, trades: list[dict[str, Any]]) -> None:
        rng = self.rng
        is_bid = rng.random() < 0.5
        book = self.bids if is_bid else self.asks
        best = max(book) if is_bid else min(book)
        other_best = min(self.asks) if is_bid else max(self.bids)
        roll = rng.random()
        if roll < 0.35:  # a new or changed level near the top, never crossing
            offset = rng.randint(-1, 14)
            price = best - offset if is_bid else best + offset
            if (is_bid and price < other_best) or (not is_bid and price > other_best):
                book[price] = self._qty()
        elif roll < 0.6 and len(book) > 110:  # a level deleted within the top
            ranked = sorted(book, reverse=is_bid)
            del book[ranked[rng.randint(0, 12)]]
        elif roll < 0.8:  # a trade through the best level
            qty = min(book[best], rng.randint(1, 150_000_000))
            book[best] -= qty
            if book[best] == 0:
                del book[best]
            self.trade_id += 1
            trades.append({"side": "sell" if is_bid else "buy", "price": best, "qty": qty, "trade_id": self.trade_id})
        else:  # a quantity change deeper in the book, often out of a depth-10 client's scope
            ranked = sorted(book, reverse=is_bid)
            book[ranked[rng.randint(0, len(ranked) - 1)]] = self._qty()
        while len(book) < 110:  # refill far away
            far = (min(book) - rng.randint(1, 5)) if is_bid else (max(book) + rng.randint(1, 5))
            book[far] = self._qty()

    def update_frame(self, before_bids: Book, before_asks: Book, depth: int) -> str | None:
        """The `book` update a client at `depth` receives for the last move (None: nothing in its scope changed)."""
        bids = self._diff(before_bids, self.bids, depth, True)
        asks = self._diff(before_asks, self.asks, depth, False)
        if not bids and not asks:
            return None
        return self._book_frame("update", bids, asks, self.checksum())

    def _diff(self, before: Book, after: Book, depth: int, descending: bool) -> list[tuple[int, int]]:
        old, new = _top(before, depth, descending), _top(after, depth, descending)
        changes = [(price, 0) for price in old if price not in new and price not in after]
        changes += [(price, qty) for price, qty in new.items() if old.get(price) != qty]
        if changes and self.rng.random() < 0.1:  # an earlier value of a level in the same message
            price, _ = changes[-1]
            changes.insert(0, (price, self._qty()))
        return changes

    def trade_frame(self, trades: list[dict[str, Any]]) -> str:
        stamp = self.clock.isoformat().replace("+00:00", "Z")
        data = ",".join(
            f'{{"symbol":"{self.symbol}","side":"{t["side"]}","price":{number(t["price"], self.price_precision)},'
            f'"qty":{number(t["qty"], self.qty_precision)},"ord_type":"market","trade_id":{t["trade_id"]},'
            f'"timestamp":"{stamp}"}}'
            for t in trades
        )
        return f'{{"channel":"trade","type":"update","data":[{data}]}}'

    def instrument_frame(self) -> str:
        return json.dumps({"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": [self.pair()]}})


def recorded_stream(symbol: str = "BTC/USD", seed: int = 7, updates: int = 1000, depth: int = 10) -> Iterator[str]:
    """A recorded-format stream: the `instrument` snapshot, a `book` snapshot, then `updates` book updates."""
    market = KrakenMarket(symbol=symbol, seed=seed)
    yield market.instrument_frame()
    yield market.snapshot_frame(depth)
    sent = 0
    while sent < updates:
        before_bids, before_asks, _ = market.step()
        frame = market.update_frame(before_bids, before_asks, depth)
        if frame is not None:
            sent += 1
            yield frame


def _ack(method: str, result: dict[str, Any], req_id: object, success: bool = True, error: str = "") -> str:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    message: dict[str, Any] = {"method": method, "result": result, "success": success, "time_in": now, "time_out": now}
    if error:
        message["error"] = error
    if req_id is not None:
        message["req_id"] = req_id
    return json.dumps(message)


@dataclass
class _Client:
    connection: ServerConnection
    book: dict[str, int] = field(default_factory=dict)  # symbol -> depth
    trade: set[str] = field(default_factory=set)
    instrument: bool = False


class KrakenWsFake:
    """`wss://ws.kraken.com/v2` on 127.0.0.1 (plain ws), driven by a `KrakenMarket` per symbol."""

    def __init__(
        self,
        symbols: tuple[str, ...] = ("BTC/USD", "ETH/USD"),
        *,
        seed: int = 7,
        interval_s: float = 0.02,
        port: int = 0,
    ):
        self.port = port
        self.markets = {
            symbol: KrakenMarket(symbol=symbol, seed=seed, mid_ticks=452_840 if symbol == "BTC/USD" else 300_000)
            for symbol in symbols
        }
        self.interval_s = interval_s
        self.clients: list[_Client] = []
        self.silent = False
        self.corrupt: set[str] = set()
        self.connections = 0
        self.subscriptions: list[tuple[str, str]] = []  # (channel, symbol) in the order received
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/v2"

    async def __aenter__(self) -> KrakenWsFake:
        self._server = await serve(self._handle, "127.0.0.1", self.port)
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # Faults
    async def disconnect_all(self) -> None:
        """Close every client connection (as a venue restart would)."""
        for client in list(self.clients):
            await client.connection.close(1001, "going away")

    def corrupt_next_checksum(self, symbol: str) -> None:
        """The next book update of `symbol` carries a wrong checksum."""
        self.corrupt.add(symbol)

    async def send_raw(self, frame: str) -> None:
        """Send one frame (malformed, unknown) to every client."""
        for client in list(self.clients):
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(frame)

    def set_silent(self, silent: bool) -> None:
        """Stop (or resume) sending anything at all, heartbeats included."""
        self.silent = silent

    # Protocol
    async def _handle(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        self.clients.append(client)
        self.connections += 1
        try:
            await connection.send(
                json.dumps(
                    {
                        "channel": "status",
                        "type": "update",
                        "data": [{"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": 1}],
                    }
                )
            )
            async for raw in connection:
                await self._request(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)

    async def _request(self, client: _Client, raw: str | bytes) -> None:
        try:
            request = json.loads(raw)
            method, params, req_id = request["method"], request.get("params", {}), request.get("req_id")
        except (ValueError, KeyError, TypeError):
            await client.connection.send(json.dumps({"error": "Malformed request", "success": False}))
            return
        if method == "ping":
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            await client.connection.send(
                json.dumps({"method": "pong", "req_id": req_id, "time_in": now, "time_out": now})
            )
            return
        channel = params.get("channel")
        if method == "subscribe" and channel == "instrument":
            client.instrument = True
            self.subscriptions.append(("instrument", ""))
            await client.connection.send(_ack(method, {"channel": "instrument", "snapshot": True}, req_id))
            pairs = [market.pair() for market in self.markets.values()]
            await client.connection.send(
                json.dumps({"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": pairs}})
            )
            return
        for symbol in params.get("symbol", []):
            await self._symbol_request(client, method, channel, symbol, params, req_id)

    async def _symbol_request(
        self, client: _Client, method: str, channel: str, symbol: str, params: dict[str, Any], req_id: object
    ) -> None:
        market = self.markets.get(symbol)
        result: dict[str, Any] = {"channel": channel, "symbol": symbol}
        if market is None or channel not in ("book", "trade") or method not in ("subscribe", "unsubscribe"):
            await client.connection.send(_ack(method, result, req_id, False, f"Currency pair not supported {symbol}"))
            return
        self.subscriptions.append((f"{method}:{channel}", symbol))
        depth = int(params.get("depth", 10))
        if channel == "book":
            result["depth"] = depth
        if method == "unsubscribe":
            client.book.pop(symbol, None) if channel == "book" else client.trade.discard(symbol)
            await client.connection.send(_ack(method, result, req_id))
            return
        await client.connection.send(_ack(method, {**result, "snapshot": True}, req_id))
        if channel == "book":
            client.book[symbol] = depth
            await client.connection.send(market.snapshot_frame(depth))
        else:
            client.trade.add(symbol)

    async def _tick(self) -> None:
        beat = 0
        while True:
            await asyncio.sleep(self.interval_s)
            if self.silent:
                continue
            frames: list[tuple[_Client, str]] = []
            for symbol, market in self.markets.items():
                frames += self._frames(symbol, market)
            beat += 1
            if beat * self.interval_s >= 1.0:
                beat = 0
                frames += [(client, '{"channel":"heartbeat"}') for client in self.clients]
            for client, frame in frames:
                with contextlib.suppress(ConnectionClosed):
                    await client.connection.send(frame)

    def _frames(self, symbol: str, market: KrakenMarket) -> list[tuple[_Client, str]]:
        before_bids, before_asks, trades = market.step()
        corrupt = symbol in self.corrupt
        frames: list[tuple[_Client, str]] = []
        for client in self.clients:
            if symbol in client.book:
                frame = market.update_frame(before_bids, before_asks, client.book[symbol])
                if frame is not None and corrupt:
                    right = market.checksum()
                    frame = frame.replace(f'"checksum":{right}', f'"checksum":{right ^ 1}')
                    self.corrupt.discard(symbol)
                if frame is not None:
                    frames.append((client, frame))
            if symbol in client.trade and trades:
                frames.append((client, market.trade_frame(trades)))
        return frames


async def _serve_forever(port: int, seed: int, interval_s: float) -> None:
    fake = await KrakenWsFake(seed=seed, interval_s=interval_s, port=port).__aenter__()
    print(f"Kraken v2 protocol fake (seeded, not real data) on {fake.url}; Ctrl-C stops", flush=True)  # noqa: T201
    try:
        await asyncio.Future()
    finally:
        await fake.__aexit__()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A Kraken WebSocket v2 public endpoint on loopback (seeded market)")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between market moves")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(arguments.port, arguments.seed, arguments.interval))
