"""A Coinbase Advanced Trade protocol fake: a real HTTP + WebSocket server on loopback speaking Coinbase's shapes.

REST (`/api/v3/brokerage/...`): every private request must carry `Authorization: Bearer <JWT>` signed by a registered
key (ES256 or EdDSA), unexpired, for exactly that method, host and path, with a nonce never seen before (401
`UNAUTHENTICATED` otherwise); each key has a request budget per second (429 `RATE_LIMIT_EXCEEDED`). Orders are
matched by the paper venue's engine (`PaperVenue` on the test database) so that the contract suite's expectations
hold; a repeated `client_order_id` answers the existing order, as Coinbase documents.

WebSocket (`/ws`): `level2` (snapshot then updates, `sequence_num` per connection), `market_trades`, `heartbeats`
and `user` (JWT required) channels. Faults on demand: `fail(endpoint, Fault...)` (timeout after acting, 5xx before or after acting,
rate limited, malformed answer, a fill reported twice), `gap_next()` (the next level2 message skips a sequence
number), `drop_connections()` (every WebSocket closed).

Known differences from Coinbase (docs/venues.md): matching is the paper engine's (its fees, 0.25 % / 0.40 %);
`sequence_timestamp` of a fill is the fake's clock when it first reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import jwt
import uvicorn
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import VenueFill, VenueOrder, VenueOrderRequest, VenueOrderStatus, VenueRejected
from shared.venues.coinbase import errors as cberr
from shared.venues.coinbase.auth import JwtRefused, PublicKey, load_private_key, unverified_kid, verify_jwt
from shared.venues.paper import PaperVenue
from tests.helpers import eventually

API = "/api/v3/brokerage"
_REFUSALS = {
    "insufficient_funds": cberr.INSUFFICIENT_FUND,
    "post_only_would_cross": cberr.POST_ONLY_WOULD_CROSS,
    "invalid_quantity": cberr.BASE_SIZE_TOO_SMALL,
    "unknown_instrument": cberr.INVALID_PRODUCT_ID,
}
_STATUS = {
    VenueOrderStatus.OPEN: "OPEN",
    VenueOrderStatus.FILLED: "FILLED",
    VenueOrderStatus.CANCELED: "CANCELLED",
    VenueOrderStatus.EXPIRED: "EXPIRED",
    VenueOrderStatus.REJECTED: "FAILED",
}
_CONFIGS = {
    "market_market_ioc": (OrderType.MARKET, TimeInForce.IOC),
    "market_market_fok": (OrderType.MARKET, TimeInForce.FOK),
    "limit_limit_gtc": (OrderType.LIMIT, TimeInForce.GTC),
    "sor_limit_ioc": (OrderType.LIMIT, TimeInForce.IOC),
    "limit_limit_fok": (OrderType.LIMIT, TimeInForce.FOK),
    "stop_limit_stop_limit_gtc": (OrderType.STOP_LOSS_LIMIT, TimeInForce.GTC),
}


class Fault(StrEnum):
    TIMEOUT_AFTER = "timeout_after"  # act, then answer too late (the client times out)
    HTTP_500 = "http_500"  # answer 500 before acting
    HTTP_503 = "http_503"  # answer 503 before acting
    HTTP_502_AFTER = "http_502_after"  # act, then answer 502 (a gateway lost the answer)
    RATE_LIMITED = "rate_limited"  # 429 before acting
    MALFORMED = "malformed"  # an answer of the wrong shape, before acting
    DUPLICATE_FILL = "duplicate_fill"  # List Fills reports its newest fill again on a second page


@dataclass
class _Key:
    account_id: AccountId
    public_key: PublicKey
    window_start: float = 0.0
    window_count: int = 0


@dataclass
class _Placed:
    account_id: AccountId
    request: VenueOrderRequest
    configuration: dict[str, Any]
    created: datetime


@dataclass
class Seen:
    """What the fake saw: requests per endpoint, refusals per error, and every create that reached matching."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    creates: list[str] = field(default_factory=list)


class CoinbaseFake:
    """The fake exchange; `app` is its ASGI app, `serve()` runs it on a loopback port."""

    def __init__(
        self,
        venue: PaperVenue | None,
        *,
        requests_per_s: int = 30,
        retry_after_s: float | None = None,
        late_answer_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = venue
        self.requests_per_s = requests_per_s
        self.retry_after_s = retry_after_s
        self.late_answer_s = late_answer_s
        self._clock = clock
        self.keys: dict[str, _Key] = {}
        self.nonces: set[str] = set()
        self.placed: dict[str, _Placed] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.seen = Seen()
        self._stamps: dict[str, datetime] = {}
        self._last_stamp = datetime(1970, 1, 1, tzinfo=UTC)
        self.books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._sockets: list[_Subscriber] = []
        self._gap_next = False
        self._told: dict[str, tuple[VenueOrderStatus, Decimal]] = {}
        self.user_subscribed = asyncio.Event()
        self.app = self._build()
        self.url = ""

    @property
    def venue(self) -> PaperVenue:
        """The paper engine behind REST (a WebSocket-only fake has none)."""
        if self._engine is None:
            raise RuntimeError("this Coinbase fake serves market data only (no paper engine)")
        return self._engine

    # --- test controls ---------------------------------------------------------------------------------

    def register(self, account_id: AccountId, secret: str) -> str:
        """Register an API key (its secret as Coinbase hands it out) for the account; answers the key name."""
        name = f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}"
        self.keys[name] = _Key(account_id, load_private_key(secret).public_key())
        return name

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """The next requests to `endpoint` (`create`, `cancel`, `get_order`, `list_orders`, `fills`, `accounts`)
        meet these faults, in order."""
        self.faults.setdefault(endpoint, []).extend(faults)

    def gap_next(self) -> None:
        """The next level2 message to each subscriber skips one sequence number (a lost message)."""
        self._gap_next = True

    async def drop_connections(self) -> None:
        """Close every WebSocket connection (as a Coinbase disconnect)."""
        for subscriber in list(self._sockets):
            with contextlib.suppress(Exception):
                await subscriber.ws.close(code=1011)

    async def publish_book(self, symbol: Symbol, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        """Replace the book of `symbol`: subscribers get the changed levels as one level2 update."""
        product = symbol.replace("/", "-")
        old_bids, old_asks = self.books.get(product, ({}, {}))
        new_bids = {Decimal(p): Decimal(q) for p, q in bids}
        new_asks = {Decimal(p): Decimal(q) for p, q in asks}
        self.books[product] = (new_bids, new_asks)
        changes = _changes("bid", old_bids, new_bids) + _changes("offer", old_asks, new_asks)
        await self._broadcast("level2", product, "update", changes)

    async def publish_trade(self, symbol: Symbol, price: str, size: str, aggressor: OrderSide) -> None:
        """Print a public trade on `market_trades` (side is the maker's side, as Coinbase reports it)."""
        product = symbol.replace("/", "-")
        trade = {
            "trade_id": str(uuid.uuid4()),
            "product_id": product,
            "price": price,
            "size": size,
            "side": "SELL" if aggressor is OrderSide.BUY else "BUY",
            "time": _rfc3339(datetime.now(UTC)),
        }
        await self._broadcast("market_trades", product, "update", [trade])

    async def tell_users(self) -> int:
        """Send a `user` update for every order whose state changed since last told (after the market moved);
        answers how many were sent."""
        sent = 0
        for order_id, placed in list(self.placed.items()):
            order = await self.venue.query(placed.account_id, placed.request.client_order_id)
            if order is not None and self._told.get(order_id) != (order.status, order.filled_quantity):
                await self._tell_user(placed.account_id, order)
                sent += 1
        return sent

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[CoinbaseFake]:
        """Serve on a free loopback port until the block ends."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        self.url = f"http://127.0.0.1:{port}"

        async def started() -> bool:
            if task.done():
                task.result()
            return server.started

        try:
            await eventually(started, timeout_s=15, message="coinbase fake listening")
            yield self
        finally:
            await self.drop_connections()
            server.should_exit = True
            await task
            listener.close()

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    # --- REST ----------------------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get(f"{API}/market/products")
        async def products() -> Response:
            symbols = sorted(self.venue._instruments) if self._engine is not None else []
            return JSONResponse({"products": [self._product(s) for s in symbols]})

        @app.post(f"{API}/orders")
        async def create(request: Request) -> Response:
            return await self._private("create", request, self._create)

        @app.post(f"{API}/orders/batch_cancel")
        async def cancel(request: Request) -> Response:
            return await self._private("cancel", request, self._cancel)

        @app.get(f"{API}/orders/historical/batch")
        async def list_orders(request: Request) -> Response:
            return await self._private("list_orders", request, self._list_orders)

        @app.get(f"{API}/orders/historical/fills")
        async def fills(request: Request) -> Response:
            return await self._private("fills", request, self._fills)

        @app.get(f"{API}/orders/historical/{{order_id}}")
        async def get_order(request: Request) -> Response:
            return await self._private("get_order", request, self._get_order)

        @app.get(f"{API}/accounts")
        async def accounts(request: Request) -> Response:
            return await self._private("accounts", request, self._accounts)

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            await self._session(websocket)

        return app

    def _product(self, symbol: Symbol) -> dict[str, Any]:
        spec = self.venue.spec(symbol)
        base, quote = symbol.split("/")
        return {
            "product_id": f"{base}-{quote}",
            "price": "0",
            "base_increment": str(spec.quantity_increment),
            "quote_increment": str(spec.quote_step),
            "price_increment": str(spec.price_increment),
            "base_min_size": str(spec.min_quantity),
            "base_max_size": "1000000",
            "quote_min_size": str(spec.min_notional),
            "quote_max_size": "100000000",
            "base_currency_id": base,
            "quote_currency_id": quote,
            "status": "online",
            "trading_disabled": False,
            "product_type": "SPOT",
        }

    async def _private(self, endpoint: str, request: Request, handler: Callable[..., Any]) -> Response:
        self.seen.calls[endpoint] = self.seen.calls.get(endpoint, 0) + 1
        key = self._authenticate(request)
        if isinstance(key, str):
            return self._error(401, "UNAUTHENTICATED", key)
        if not self._within_budget(key):
            wait = max(0.0, key.window_start + 1.0 - self._clock())  # until the budget's second is over
            headers = {"Retry-After": f"{wait:.3f}"} if self.retry_after_s is not None else {}
            return self._error(429, cberr.RATE_LIMITED, "Too many requests", headers)
        fault = self.faults[endpoint].pop(0) if self.faults.get(endpoint) else None
        if fault in (Fault.HTTP_500, Fault.HTTP_503):
            return Response(status_code=500 if fault is Fault.HTTP_500 else 503, content=b"upstream error")
        if fault is Fault.RATE_LIMITED:
            headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}
            return self._error(429, cberr.RATE_LIMITED, "Too many requests", headers)
        if fault is Fault.MALFORMED:
            return JSONResponse({"unexpected": [1, 2, 3]})
        try:
            answer: Response = await handler(key, request, fault)
        except _BadRequest as exc:
            return self._error(400, cberr.INVALID_ARGUMENT, str(exc))
        if fault is Fault.TIMEOUT_AFTER:
            await asyncio.sleep(self.late_answer_s)
        if fault is Fault.HTTP_502_AFTER:
            return Response(status_code=502, content=b"bad gateway")
        return answer

    def _authenticate(self, request: Request) -> _Key | str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return "missing bearer token"
        token = header.removeprefix("Bearer ")
        try:
            key = self.keys.get(unverified_kid(token))
            if key is None:
                return "unknown API key"
            uri = f"{request.method} {request.headers.get('host', '')}{request.url.path}"
            verify_jwt(token, key.public_key, uri=uri, now=self._clock())
            nonce = jwt.get_unverified_header(token)["nonce"]
        except JwtRefused as exc:
            return str(exc)
        if nonce in self.nonces:
            return "nonce already used"
        self.nonces.add(nonce)
        return key

    def _within_budget(self, key: _Key) -> bool:
        now = self._clock()
        if now - key.window_start >= 1.0:
            key.window_start, key.window_count = now, 0
        key.window_count += 1
        return key.window_count <= self.requests_per_s

    def _error(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Response:
        self.seen.errors[error] = self.seen.errors.get(error, 0) + 1
        return JSONResponse({"error": error, "message": message, "error_details": message}, status, headers=headers)

    async def _create(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        payload = await _json(request)
        client_id = payload.get("client_order_id")
        product = payload.get("product_id")
        if not isinstance(client_id, str) or not client_id or not isinstance(product, str):
            raise _BadRequest("client_order_id and product_id are required")
        symbol = Symbol(product.replace("-", "/"))
        existing = await self.venue.query(key.account_id, ClientOrderId(client_id))
        if existing is not None:  # Coinbase: a client id already used answers that order, creating nothing
            return JSONResponse(_created(existing.venue_order_id, product, payload))
        if symbol not in self.venue._instruments:
            return JSONResponse(_failed(cberr.INVALID_PRODUCT_ID, "unknown product"))
        parsed = _order_request(key.account_id, symbol, client_id, payload)
        self.seen.creates.append(client_id)
        try:
            order = await self.venue.submit(parsed)
        except VenueRejected as refused:
            return JSONResponse(_failed(_REFUSALS.get(refused.code, cberr.UNKNOWN_FAILURE), refused.message))
        self.placed.setdefault(
            order.venue_order_id,
            _Placed(key.account_id, parsed, payload["order_configuration"], datetime.now(UTC)),
        )
        await self._tell_user(key.account_id, order)
        return JSONResponse(_created(order.venue_order_id, product, payload))

    async def _cancel(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        payload = await _json(request)
        ids = payload.get("order_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadRequest("order_ids must be a list of strings")
        results = []
        for order_id in ids:
            order = await self._find(key, order_id)
            if order is None or order.status is not VenueOrderStatus.OPEN:
                results.append({"success": False, "failure_reason": cberr.UNKNOWN_CANCEL_ORDER, "order_id": order_id})
                continue
            canceled = await self.venue.cancel(key.account_id, order.client_order_id)
            await self._tell_user(key.account_id, canceled)
            results.append({"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": order_id})
        return JSONResponse({"results": results})

    async def _get_order(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        order_id = request.url.path.rsplit("/", 1)[-1]
        order = await self._find(key, order_id)
        if order is None:
            return self._error(404, cberr.NOT_FOUND, "order not found")
        return JSONResponse({"order": await self._order_wire(key, order)})

    async def _list_orders(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        wanted = request.query_params.getlist("order_status")
        found = []
        for placed_id, placed in self.placed.items():
            if placed.account_id != key.account_id:
                continue
            order = await self._find(key, placed_id)
            if order is not None and (not wanted or _STATUS[order.status] in wanted):
                found.append(order)
        found.sort(key=lambda o: self.placed[o.venue_order_id].created, reverse=True)  # newest first
        limit = int(request.query_params.get("limit", "100") or 100)
        start = int(request.query_params.get("cursor", "0") or 0)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return JSONResponse(
            {
                "orders": [await self._order_wire(key, o) for o in page],
                "sequence": "0",
                "has_next": more,
                "cursor": str(start + limit) if more else "",
            }
        )

    async def _fills(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        fills = self._stamped(list(await self.venue.fills_since(key.account_id, 0)))
        start = request.query_params.get("start_sequence_timestamp")
        if start:
            since = datetime.fromisoformat(start.replace("Z", "+00:00"))
            fills = [f for f in fills if self._stamps[f.trade_id] >= since]
        fills.sort(key=lambda f: self._stamps[f.trade_id], reverse=True)  # newest first, as Coinbase
        limit = int(request.query_params.get("limit", "100") or 100)
        offset = int(request.query_params.get("cursor", "0") or 0)
        page = fills[offset : offset + limit]
        cursor = str(offset + limit) if offset + limit < len(fills) else ""
        if fault is Fault.DUPLICATE_FILL and fills:
            if offset >= len(fills):
                page, cursor = [fills[0]], ""
            else:
                cursor = str(offset + limit) if offset + limit < len(fills) else str(len(fills))
                self.fail("fills", Fault.DUPLICATE_FILL)
        return JSONResponse({"fills": [self._fill_wire(f) for f in page], "cursor": cursor})

    async def _accounts(self, key: _Key, request: Request, fault: Fault | None) -> Response:
        accounts = []
        for balance in await self.venue.balances(key.account_id):
            held = balance.total - balance.available
            accounts.append(
                {
                    "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key.account_id}/{balance.asset}")),
                    "name": f"{balance.asset} Wallet",
                    "currency": balance.asset,
                    "available_balance": {"value": _num(balance.available), "currency": balance.asset},
                    "default": False,
                    "active": True,
                    "type": "ACCOUNT_TYPE_CRYPTO",
                    "ready": True,
                    "hold": {"value": _num(held), "currency": balance.asset},
                }
            )
        return JSONResponse({"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)})

    async def _find(self, key: _Key, order_id: str) -> VenueOrder | None:
        placed = self.placed.get(order_id)
        if placed is None or placed.account_id != key.account_id:
            return None
        return await self.venue.query(key.account_id, placed.request.client_order_id)

    def _stamped(self, fills: list[VenueFill]) -> list[VenueFill]:
        """Give fills not reported yet their matching-engine time (strictly increasing, in sequence order)."""
        for item in sorted(fills, key=lambda f: f.sequence):
            if item.trade_id not in self._stamps:
                now = datetime.fromtimestamp(self._clock(), UTC)
                self._last_stamp = max(now, self._last_stamp + timedelta(microseconds=1))
                self._stamps[item.trade_id] = self._last_stamp
        return fills

    async def _order_wire(self, key: _Key, order: VenueOrder) -> dict[str, Any]:
        placed = self.placed[order.venue_order_id]
        fills = [f for f in await self.venue.fills_since(key.account_id, 0) if f.venue_order_id == order.venue_order_id]
        value = sum((f.quantity * f.price for f in fills), Decimal(0))
        fees = sum((f.fee for f in fills), Decimal(0))
        average = value / order.filled_quantity if order.filled_quantity else Decimal(0)
        status = _STATUS[order.status]
        if order.status is VenueOrderStatus.CANCELED and order.filled_quantity == order.quantity:
            status = "FILLED"
        return {
            "order_id": order.venue_order_id,
            "product_id": order.symbol.replace("/", "-"),
            "user_id": str(uuid.uuid5(uuid.NAMESPACE_URL, key.account_id)),
            "order_configuration": placed.configuration,
            "side": order.side.value.upper(),
            "client_order_id": order.client_order_id,
            "status": status,
            "time_in_force": "GOOD_UNTIL_CANCELLED",
            "created_time": _rfc3339(placed.created),
            "completion_percentage": _num(order.filled_quantity / order.quantity * 100),
            "filled_size": _num(order.filled_quantity),
            "average_filled_price": _num(average),
            "number_of_fills": str(len(fills)),
            "filled_value": _num(value),
            "total_fees": _num(fees),
            "order_type": {"market": "MARKET", "stop-loss-limit": "STOP_LIMIT"}.get(placed.request.type, "LIMIT"),
            "reject_reason": order.reason or "",
            "last_fill_time": _rfc3339(max(f.filled_at for f in fills)) if fills else None,
            "product_type": "SPOT",
        }

    def _fill_wire(self, item: VenueFill) -> dict[str, Any]:
        return {
            "entry_id": uuid.uuid5(uuid.NAMESPACE_OID, item.trade_id).hex,
            "trade_id": item.trade_id,
            "order_id": item.venue_order_id,
            "trade_time": _rfc3339(item.filled_at),
            "trade_type": "FILL",
            "price": _num(item.price),
            "size": _num(item.quantity),
            "commission": _num(item.fee),
            "product_id": item.symbol.replace("/", "-"),
            "sequence_timestamp": _rfc3339(self._stamps[item.trade_id]),
            "liquidity_indicator": item.liquidity.value.upper(),
            "size_in_quote": False,
            "user_id": str(uuid.uuid5(uuid.NAMESPACE_URL, item.account_id)),
            "side": item.side.value.upper(),
        }

    # --- WebSocket -------------------------------------------------------------------------------------

    async def _session(self, websocket: WebSocket) -> None:
        await websocket.accept()
        subscriber = _Subscriber(websocket)
        self._sockets.append(subscriber)
        try:
            while True:
                frame = await websocket.receive_text()
                await self._on_frame(subscriber, frame)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.remove(subscriber)

    async def _on_frame(self, subscriber: _Subscriber, frame: str) -> None:
        try:
            message = json.loads(frame)
        except ValueError:
            await subscriber.send({"type": "error", "message": "malformed JSON"})
            return
        channel = message.get("channel") if isinstance(message, dict) else None
        products = message.get("product_ids", []) if isinstance(message, dict) else []
        if message.get("type") != "subscribe" or not isinstance(channel, str) or not isinstance(products, list):
            await subscriber.send({"type": "error", "message": "expected a subscribe message"})
            return
        if channel == "user":
            token = message.get("jwt")
            key = self.keys.get(unverified_kid(token)) if isinstance(token, str) and token else None
            try:
                if key is None:
                    raise JwtRefused("unknown API key")
                verify_jwt(str(token), key.public_key, uri=None, now=self._clock())
            except JwtRefused as exc:
                await subscriber.send({"type": "error", "message": f"authentication failure: {exc}"})
                return
            subscriber.user = key.account_id
            self.user_subscribed.set()
        subscriber.channels.setdefault(channel, set()).update(p for p in products if isinstance(p, str))
        subscribed = {name: sorted(products) for name, products in subscriber.channels.items()}
        await subscriber.send_channel("subscriptions", {"subscriptions": subscribed})
        if channel == "level2":
            for product in products:
                bids, asks = self.books.get(product, ({}, {}))
                levels = _changes("bid", {}, bids) + _changes("offer", {}, asks)
                await subscriber.send_channel("l2_data", {"type": "snapshot", "product_id": product, "updates": levels})

    async def _broadcast(self, channel: str, product: str, kind: str, items: list[dict[str, Any]]) -> None:
        gap, self._gap_next = self._gap_next, False
        for subscriber in list(self._sockets):
            if product not in subscriber.channels.get(channel, set()):
                continue
            if gap:
                subscriber.sequence += 1
            if channel == "level2":
                event = {"type": kind, "product_id": product, "updates": items}
                await subscriber.send_channel("l2_data", event)
            else:
                await subscriber.send_channel(channel, {"type": kind, "trades": items})

    async def _tell_user(self, account_id: AccountId, order: VenueOrder) -> None:
        self._told[order.venue_order_id] = (order.status, order.filled_quantity)
        for subscriber in list(self._sockets):
            if subscriber.user != account_id or "user" not in subscriber.channels:
                continue
            event = {
                "type": "update",
                "orders": [
                    {
                        "order_id": order.venue_order_id,
                        "client_order_id": order.client_order_id,
                        "product_id": order.symbol.replace("/", "-"),
                        "status": _STATUS[order.status],
                        "cumulative_quantity": _num(order.filled_quantity),
                        "leaves_quantity": _num(order.quantity - order.filled_quantity),
                        "order_side": order.side.value.upper(),
                    }
                ],
            }
            await subscriber.send_channel("user", event)


@dataclass
class _Subscriber:
    ws: WebSocket
    channels: dict[str, set[str]] = field(default_factory=dict)
    user: AccountId | None = None
    sequence: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_text(json.dumps(message))

    async def send_channel(self, channel: str, event: dict[str, Any]) -> None:
        message = {
            "channel": channel,
            "client_id": "",
            "timestamp": _rfc3339(datetime.now(UTC)),
            "sequence_num": self.sequence,
            "events": [event],
        }
        self.sequence += 1
        await self.send(message)


class _BadRequest(Exception):
    pass


def _changes(side: str, old: dict[Decimal, Decimal], new: dict[Decimal, Decimal]) -> list[dict[str, Any]]:
    now = _rfc3339(datetime.now(UTC))
    out = [
        {"side": side, "event_time": now, "price_level": _num(p), "new_quantity": _num(q)}
        for p, q in new.items()
        if old.get(p) != q
    ]
    out += [{"side": side, "event_time": now, "price_level": _num(p), "new_quantity": "0"} for p in old if p not in new]
    return out


async def _json(request: Request) -> dict[str, Any]:
    try:
        value = json.loads(await request.body(), parse_float=Decimal)
    except ValueError:
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(value, dict):
        raise _BadRequest("the body is not a JSON object")
    return value


def _created(order_id: str, product: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "success": True,
        "success_response": {
            "order_id": order_id,
            "product_id": product,
            "side": payload.get("side"),
            "client_order_id": payload.get("client_order_id"),
        },
        "order_configuration": payload.get("order_configuration"),
    }


def _failed(reason: str, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "error_response": {
            "error": reason,
            "message": message,
            "error_details": message,
            "preview_failure_reason": "UNKNOWN_PREVIEW_FAILURE_REASON",
            "new_order_failure_reason": reason,
        },
    }


def _order_request(account_id: AccountId, symbol: Symbol, client_id: str, payload: dict[str, Any]) -> VenueOrderRequest:
    side = payload.get("side")
    configuration = payload.get("order_configuration")
    if side not in ("BUY", "SELL") or not isinstance(configuration, dict) or len(configuration) != 1:
        raise _BadRequest("side and exactly one order_configuration are required")
    ((name, fields),) = configuration.items()
    if name not in _CONFIGS or not isinstance(fields, dict):
        raise _BadRequest(f"unsupported order configuration {name}")
    order_type, tif = _CONFIGS[name]
    try:
        size = Decimal(fields["base_size"])
        limit = Decimal(fields["limit_price"]) if "limit_price" in fields else None
        stop = Decimal(fields["stop_price"]) if "stop_price" in fields else None
    except (KeyError, ArithmeticError, TypeError):
        raise _BadRequest("base_size, limit_price and stop_price must be decimal strings") from None
    return VenueOrderRequest(
        account_id=account_id,
        client_order_id=ClientOrderId(client_id),
        symbol=symbol,
        side=OrderSide(side.lower()),
        type=order_type,
        quantity=size,
        limit_price=limit,
        trigger_price=stop,
        time_in_force=tif,
        post_only=fields.get("post_only") is True,
    )


def _num(value: Decimal | int) -> str:
    return format(Decimal(value).normalize(), "f")


def _rfc3339(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
