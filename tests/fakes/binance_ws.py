"""Binance public market data on loopback: the combined WebSocket stream and GET /api/v3/depth, from one market.

`BinanceMarketFake` keeps each symbol's book (price -> quantity, decimal strings) and its update id. `move()` changes
levels and sends a `depthUpdate` event (`U` = the first new id, `u` = the last) to every connection subscribed to
`<symbol>@depth@100ms`; `print_trade()` sends a `trade` event. The REST snapshot answers the book as of its
`lastUpdateId`, in the documented shape. Faults on demand: `gap(symbol)` skips update ids before the next event,
`send_raw()` sends any frame (malformed, unknown), `drop()` closes every connection.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.fakes.loopback import serve_in_loop


@dataclass
class _Book:
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    update_id: int = 1000
    skip: int = 0


class BinanceMarketFake:
    """The venue's books and the connections streaming them."""

    def __init__(self) -> None:
        self.books: dict[str, _Book] = {}
        self.connections: dict[ServerConnection, set[str]] = {}
        self.snapshots_served = 0
        self.url = ""
        self.rest_url = ""
        self._trade_id = 0

    def book(self, symbol: str) -> _Book:
        return self.books.setdefault(symbol, _Book())

    def gap(self, symbol: str, missing: int = 3) -> None:
        """The next event of `symbol` starts `missing` ids after where it should."""
        self.book(symbol).skip += missing

    async def move(self, symbol: str, bids: dict[str, str], asks: dict[str, str], *, ids: int = 1) -> None:
        """Set levels ("0" removes) and send the diff event covering `ids` update ids."""
        book = self.book(symbol)
        for side, changes in ((book.bids, bids), (book.asks, asks)):
            for price, qty in changes.items():
                if qty == "0":
                    side.pop(price, None)
                else:
                    side[price] = qty
        first = book.update_id + 1 + book.skip
        book.update_id += ids + book.skip
        book.skip = 0
        event = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + book.update_id,
            "s": symbol,
            "U": first,
            "u": book.update_id,
            "b": [[p, q] for p, q in bids.items()],
            "a": [[p, q] for p, q in asks.items()],
        }
        await self._send(f"{symbol.lower()}@depth@100ms", event)

    async def print_trade(self, symbol: str, price: str, qty: str, *, buyer_maker: bool) -> None:
        self._trade_id += 1
        event = {
            "e": "trade",
            "E": 1,
            "s": symbol,
            "t": self._trade_id,
            "p": price,
            "q": qty,
            "T": 1_700_000_000_000,
            "m": buyer_maker,
            "M": True,
        }
        await self._send(f"{symbol.lower()}@trade", event)

    async def send_raw(self, frame: str) -> None:
        for ws in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)

    async def drop(self) -> None:
        for ws in list(self.connections):
            await ws.close()

    async def _send(self, stream: str, data: dict[str, Any]) -> None:
        frame = json.dumps({"stream": stream, "data": data})
        for ws, streams in list(self.connections.items()):
            if stream in streams:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)

    def _depth(self, symbol: str, limit: int) -> Response:
        book = self.books.get(symbol)
        if book is None:
            return JSONResponse({"code": -1121, "msg": "Invalid symbol."}, status_code=400)
        self.snapshots_served += 1
        bids = sorted(book.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(book.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        body = {"lastUpdateId": book.update_id, "bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}
        return JSONResponse(body)

    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        streams = set(parse_qs(urlparse(path).query).get("streams", [""])[0].split("/"))
        self.connections[ws] = streams
        try:
            await ws.wait_closed()
        finally:
            self.connections.pop(ws, None)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[BinanceMarketFake]:
        """Serve the stream and the REST snapshot on loopback ports."""
        app = FastAPI()

        @app.get("/api/v3/depth")
        async def depth(symbol: str, limit: int = 100) -> Response:
            return self._depth(symbol, limit)

        async with serve(self._handler, "127.0.0.1", 0) as server, serve_in_loop(app) as rest_url:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url, self.rest_url = f"ws://127.0.0.1:{port}", rest_url
            yield self
