"""A Binance spot REST protocol fake: a real HTTP server on loopback speaking Binance's wire format.

It checks what Binance checks (X-MBX-APIKEY known; `signature` over the exact query string, HMAC-SHA256 hex or
Ed25519 base64 by the key's type; `timestamp` within `recvWindow` of its clock, else -1021), counts request weight
per minute and answers every call with `X-MBX-USED-WEIGHT-1M`, refuses past the limit with HTTP 429, -1003 and
`Retry-After`, and answers in the documented shapes (errors as `{"code": ..., "msg": ...}`). Orders are matched by
the paper venue's engine (`PaperVenue` on the test database) so that the contract suite's expectations hold.
Faults on demand, per `"METHOD /path"`: time out after acting, 500 / 503 before acting, 429 with a Retry-After,
-1021, a malformed body, and (myTrades) the newest trade reported twice.

Known differences from Binance (docs/venues.md): a repeated `newClientOrderId` of a CLOSED order answers that order
(Binance checks uniqueness among open orders only); commissions are charged in the quote asset as the paper venue
books them; there is one weight counter for all keys (Binance counts per IP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, unquote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import (
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.binance import errors as berr
from shared.venues.binance.adapter import API_KEY_HEADER, WEIGHT_HEADER, WEIGHTS
from shared.venues.binance.signing import verify_ed25519, verify_hmac
from shared.venues.paper import PaperVenue
from tests.fakes.loopback import serve_in_loop

_REFUSALS = {
    "insufficient_funds": (berr.NEW_ORDER_REJECTED, berr.MSG_INSUFFICIENT),
    "post_only_would_cross": (berr.NEW_ORDER_REJECTED, berr.MSG_WOULD_TAKE),
    "invalid_quantity": (berr.FILTER_FAILURE, "Filter failure: LOT_SIZE"),
    "invalid_price": (berr.FILTER_FAILURE, "Filter failure: PRICE_FILTER"),
    "unknown_instrument": (berr.BAD_SYMBOL, berr.MSG_BAD_SYMBOL),
}
_TYPES = {
    "MARKET": OrderType.MARKET,
    "LIMIT": OrderType.LIMIT,
    "LIMIT_MAKER": OrderType.LIMIT,
    "STOP_LOSS": OrderType.STOP_LOSS,
    "TAKE_PROFIT": OrderType.TAKE_PROFIT,
    "STOP_LOSS_LIMIT": OrderType.STOP_LOSS_LIMIT,
}


class Fault(StrEnum):
    TIMEOUT_AFTER = "timeout_after"  # act, then answer too late (the client times out)
    HTTP_500 = "http_500"  # 500 before acting
    HTTP_503 = "http_503"  # 503 before acting
    RATE_LIMITED = "rate_limited"  # 429, -1003, Retry-After before acting
    TIMESTAMP = "timestamp"  # -1021 before acting
    MALFORMED = "malformed"  # a 200 body of the wrong shape, before acting
    DUPLICATE_FILL = "duplicate_fill"  # myTrades reports its newest trade twice


@dataclass
class _Key:
    account_id: AccountId
    secret: str  # the HMAC secret, or the Ed25519 public key (PEM)
    ed25519: bool


@dataclass
class _Placed:
    account_id: AccountId
    request: VenueOrderRequest
    type: str
    order_id: int
    venue_order_id: str
    time_ms: int


@dataclass
class Seen:
    """What the fake saw: calls per endpoint, refusals per code, the client ids that reached matching."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    new_orders: list[str] = field(default_factory=list)


class BinanceFake:
    """The fake exchange; `app` is its ASGI app, `serve()` runs it on a loopback port."""

    def __init__(
        self,
        venue: PaperVenue,
        *,
        weight_limit: int = 6000,
        retry_after_s: int = 1,
        late_answer_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.venue = venue
        self.weight_limit = weight_limit
        self.retry_after_s = retry_after_s
        self.late_answer_s = late_answer_s
        self._clock = clock or (lambda: datetime.now(UTC).timestamp())
        self.skew_ms = 0  # the venue's clock ahead of the real one
        self.keys: dict[str, _Key] = {}
        self.placed: dict[int, _Placed] = {}
        self._by_paper: dict[str, int] = {}
        self._next_order_id = 10_000
        self.faults: dict[str, list[Fault]] = {}
        self.seen = Seen()
        self._weight = 0
        self._weight_minute = 0
        self.app = self._build()
        self.url = ""
        self.ws_url = ""
        self.listen_keys: dict[str, AccountId] = {}
        self.streams: dict[ServerConnection, AccountId] = {}
        self.duplicate_reports = 0  # the next N trade reports are sent twice
        venue.subscribe(self._on_paper_update)

    # --- test controls ---------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000) + self.skew_ms

    def register(self, account_id: AccountId, *, ed25519: bool = False) -> tuple[str, str]:
        """A new API key for the account: (API key, secret: the HMAC secret or the Ed25519 private key PEM)."""
        api_key = secrets.token_hex(32)
        if not ed25519:
            secret = secrets.token_hex(32)
            self.keys[api_key] = _Key(account_id, secret, False)
            return api_key, secret
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        public = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        self.keys[api_key] = _Key(account_id, public, True)
        return api_key, pem

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """The next calls of `endpoint` ("POST /api/v3/order") meet these faults, in order."""
        self.faults.setdefault(endpoint, []).extend(faults)

    def use_weight(self, weight: int) -> None:
        """Count `weight` as used this minute (as other clients on the same IP would)."""
        self._count(weight)

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[BinanceFake]:
        """Serve on a free loopback port until the block ends."""
        async with serve_in_loop(self.app) as url, serve(self._user_stream, "127.0.0.1", 0) as server:
            self.url = url
            self.ws_url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
            yield self

    async def drop_user_streams(self) -> None:
        """Close every user data stream connection."""
        for ws in list(self.streams):
            await ws.close()

    async def _user_stream(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        account = self.listen_keys.get(path.removeprefix("/ws/"))
        if account is None:
            await ws.close(code=1008, reason="invalid listenKey")
            return
        self.streams[ws] = account
        try:
            await ws.wait_closed()
        finally:
            self.streams.pop(ws, None)

    async def _on_paper_update(self, update: VenueUpdate) -> None:
        """The paper engine's fills and final states as `executionReport` events on the account's streams."""
        targets = [ws for ws, account in self.streams.items() if account == update.account_id]
        if not targets or update.venue_order_id not in self._by_paper:
            return
        placed = self.placed[self._by_paper[update.venue_order_id]]
        order = await self.venue.query(update.account_id, update.client_order_id)
        if order is None:
            return
        status = self._status(placed, order)
        if not isinstance(update, VenueFill) and status not in ("CANCELED", "EXPIRED", "REJECTED"):
            return  # a fill's own TRADE report already carried the order's new status
        report = {
            "e": "executionReport",
            "E": self.now_ms(),
            "s": self.venue_symbol(order.symbol),
            "c": order.client_order_id,
            "S": order.side.value.upper(),
            "o": placed.type,
            "f": "GTC",
            "q": _fixed(order.quantity),
            "p": _fixed(placed.request.limit_price or Decimal(0)),
            "x": "TRADE" if isinstance(update, VenueFill) else status,
            "X": status,
            "r": "NONE",
            "i": placed.order_id,
            "l": _fixed(update.quantity) if isinstance(update, VenueFill) else "0.00000000",
            "z": _fixed(order.filled_quantity),
            "L": _fixed(update.price) if isinstance(update, VenueFill) else "0.00000000",
            "n": _fixed(update.fee) if isinstance(update, VenueFill) else "0",
            "N": update.fee_asset if isinstance(update, VenueFill) else None,
            "T": _ms(update.filled_at) if isinstance(update, VenueFill) else _ms(order.updated_at),
            "t": update.sequence if isinstance(update, VenueFill) else -1,
            "w": order.status is VenueOrderStatus.OPEN,
            "m": isinstance(update, VenueFill) and update.liquidity.value == "maker",
            "O": placed.time_ms,
            "C": "",
        }
        frames = [json.dumps(report)]
        if isinstance(update, VenueFill) and self.duplicate_reports > 0:
            self.duplicate_reports -= 1
            frames.append(frames[0])
        for ws in targets:
            for frame in frames:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(frame)

    # --- the wire ----------------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/api/v3/time")
        async def server_time() -> Response:
            return self._answer(WEIGHTS["time"], {"serverTime": self.now_ms()})

        @app.get("/api/v3/exchangeInfo")
        async def exchange_info() -> Response:
            symbols = [self._symbol_info(s) for s in self._symbols()]
            body = {
                "timezone": "UTC",
                "serverTime": self.now_ms(),
                "rateLimits": self._rate_limits(),
                "symbols": symbols,
            }
            return self._answer(WEIGHTS["exchangeInfo"], body)

        @app.api_route("/api/v3/userDataStream", methods=["POST", "PUT"])
        async def user_data_stream(request: Request) -> Response:
            key = self.keys.get(request.headers.get(API_KEY_HEADER, ""))
            if key is None:
                return self._error(berr.REJECTED_MBX_KEY, berr.MSG_API_KEY, 401)
            if request.method == "PUT":
                known = self.listen_keys.get(request.query_params.get("listenKey", ""))
                if known != key.account_id:
                    return self._error(-1125, "This listenKey does not exist.")
                return self._answer(2, {})
            listen_key = next((k for k, a in self.listen_keys.items() if a == key.account_id), None)
            listen_key = listen_key or secrets.token_urlsafe(45)
            self.listen_keys[listen_key] = key.account_id
            return self._answer(2, {"listenKey": listen_key})

        @app.api_route("/api/v3/{endpoint}", methods=["GET", "POST", "DELETE"])
        async def signed(endpoint: str, request: Request) -> Response:
            return await self._signed(endpoint, request)

        return app

    def _rate_limits(self) -> list[dict[str, Any]]:
        return [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ]

    def _symbols(self) -> list[Symbol]:
        return sorted(self.venue._instruments)

    @staticmethod
    def venue_symbol(symbol: Symbol) -> str:
        """BTC/USDT -> BTCUSDT."""
        return symbol.replace("/", "")

    def _symbol(self, venue_symbol: str) -> Symbol | None:
        return next((s for s in self._symbols() if self.venue_symbol(s) == venue_symbol), None)

    def _symbol_info(self, symbol: Symbol) -> dict[str, Any]:
        spec = self.venue.spec(symbol)
        base, quote = symbol.split("/")
        return {
            "symbol": self.venue_symbol(symbol),
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": -spec.base_step.as_tuple().exponent,  # type: ignore[operator]
            "quoteAsset": quote,
            "quotePrecision": -spec.quote_step.as_tuple().exponent,  # type: ignore[operator]
            "quoteAssetPrecision": -spec.quote_step.as_tuple().exponent,  # type: ignore[operator]
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT"],
            "isSpotTradingAllowed": True,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _fixed(spec.price_increment),
                    "maxPrice": "1000000.00000000",
                    "tickSize": _fixed(spec.price_increment),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _fixed(spec.min_quantity),
                    "maxQty": "9000.00000000",
                    "stepSize": _fixed(spec.quantity_increment),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _fixed(spec.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
        }

    def _count(self, weight: int) -> bool:
        minute = self.now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight = minute, 0
        self._weight += weight
        return self._weight <= self.weight_limit

    def _headers(self) -> dict[str, str]:
        return {WEIGHT_HEADER: str(self._weight)}

    def _answer(self, weight: int, body: Any, status: int = 200) -> Response:
        if not self._count(weight):
            return self._too_many()
        return JSONResponse(body, status_code=status, headers=self._headers())

    def _too_many(self, retry_after_s: int | None = None) -> Response:
        self.seen.errors[berr.TOO_MANY_REQUESTS] = self.seen.errors.get(berr.TOO_MANY_REQUESTS, 0) + 1
        wait = retry_after_s if retry_after_s is not None else 60 - (self.now_ms() // 1000) % 60
        headers = {**self._headers(), "Retry-After": str(wait)}
        body = {"code": berr.TOO_MANY_REQUESTS, "msg": berr.MSG_TOO_MANY_REQUESTS % self.weight_limit}
        return JSONResponse(body, status_code=429, headers=headers)

    def _error(self, code: int, msg: str, status: int = 400) -> Response:
        self.seen.errors[code] = self.seen.errors.get(code, 0) + 1
        return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=self._headers())

    async def _signed(self, endpoint: str, request: Request) -> Response:
        name = f"{request.method} /api/v3/{endpoint}"
        self.seen.calls[name] = self.seen.calls.get(name, 0) + 1
        weight = WEIGHTS.get(f"{endpoint}:{request.method}", WEIGHTS.get(endpoint, 1))
        if not self._count(weight):
            return self._too_many()
        query = request.url.query
        payload, _, signature = query.rpartition("&signature=")
        fields = dict(parse_qsl(payload, keep_blank_values=True))
        key = self.keys.get(request.headers.get(API_KEY_HEADER, ""))
        if key is None:
            return self._error(berr.REJECTED_MBX_KEY, berr.MSG_API_KEY, 401)
        if not signature or not self._verify(key, payload, signature):
            return self._error(berr.INVALID_SIGNATURE, berr.MSG_SIGNATURE)
        refusal = self._check_time(fields)
        if refusal is not None:
            return refusal
        fault = self.faults.get(name, []).pop(0) if self.faults.get(name) else None
        early = self._fault_answer(fault)
        if early is not None:
            return early
        handler = getattr(self, f"_{request.method.lower()}_{endpoint}", None)
        if handler is None:
            return self._error(berr.UNKNOWN, "Unknown endpoint.", 404)
        answer: Response = await handler(key, fields, fault)
        if fault is Fault.TIMEOUT_AFTER:
            await asyncio.sleep(self.late_answer_s)
        return answer

    def _fault_answer(self, fault: Fault | None) -> Response | None:
        """The answer of a fault that strikes before acting, or None."""
        if fault in (Fault.HTTP_500, Fault.HTTP_503):
            status = 500 if fault is Fault.HTTP_500 else 503
            return Response(status_code=status, content=b"<html>Service Unavailable</html>", headers=self._headers())
        if fault is Fault.RATE_LIMITED:
            return self._too_many(self.retry_after_s)
        if fault is Fault.TIMESTAMP:
            return self._error(berr.INVALID_TIMESTAMP, berr.MSG_TIMESTAMP)
        if fault is Fault.MALFORMED:
            return JSONResponse({"unexpected": [1, 2, 3]}, headers=self._headers())
        return None

    @staticmethod
    def _verify(key: _Key, payload: str, signature: str) -> bool:
        try:
            if key.ed25519:
                return verify_ed25519(payload, key.secret, unquote(signature))
            return verify_hmac(payload, key.secret, signature)
        except ValueError:
            return False

    def _check_time(self, fields: dict[str, str]) -> Response | None:
        """Binance's rule: timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow (max 60000)."""
        raw_ts, raw_window = fields.get("timestamp", ""), fields.get("recvWindow", "5000")
        if not raw_ts.isdigit():
            return self._error(berr.MANDATORY_PARAM_EMPTY, "Mandatory parameter 'timestamp' was not sent.")
        try:
            window = Decimal(raw_window)
        except ArithmeticError:
            return self._error(berr.ILLEGAL_CHARS, "Illegal characters found in parameter 'recvWindow'.")
        if not 0 < window <= 60_000:
            return self._error(-1131, "recvWindow must be less than 60000")
        now = self.now_ms()
        if not (int(raw_ts) < now + 1000 and now - int(raw_ts) <= window):
            return self._error(berr.INVALID_TIMESTAMP, berr.MSG_TIMESTAMP)
        return None

    # --- endpoints -----------------------------------------------------------------------------------------

    async def _post_order(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        symbol = self._symbol(fields.get("symbol", ""))
        if symbol is None:
            return self._error(berr.BAD_SYMBOL, berr.MSG_BAD_SYMBOL)
        parsed = _order_request(key.account_id, symbol, fields)
        if isinstance(parsed, tuple):
            return self._error(*parsed)
        existing = await self.venue.query(key.account_id, parsed.client_order_id)
        if existing is not None:
            if existing.status is VenueOrderStatus.OPEN:
                return self._error(berr.NEW_ORDER_REJECTED, berr.MSG_DUPLICATE)
            return JSONResponse(await self._order_wire(key, existing), headers=self._headers())
        self.seen.new_orders.append(parsed.client_order_id)
        try:
            order = await self.venue.submit(parsed)
        except VenueRejected as refused:
            code, msg = _REFUSALS.get(refused.code, (berr.FILTER_FAILURE, f"Filter failure: {refused.code}"))
            return self._error(code, msg)
        self._remember(key, parsed, fields["type"], order)
        wire = await self._order_wire(key, order)
        wire["transactTime"] = wire.pop("updateTime")
        for name in ("time", "isWorking", "stopPrice", "icebergQty", "origQuoteOrderQty"):
            wire.pop(name, None)
        return JSONResponse(wire, headers=self._headers())

    def _remember(self, key: _Key, request: VenueOrderRequest, kind: str, order: VenueOrder) -> None:
        if order.venue_order_id in self._by_paper:
            return
        self._next_order_id += 1
        self._by_paper[order.venue_order_id] = self._next_order_id
        placed = _Placed(key.account_id, request, kind, self._next_order_id, order.venue_order_id, self.now_ms())
        self.placed[self._next_order_id] = placed

    async def _find(self, key: _Key, fields: dict[str, str]) -> VenueOrder | None:
        if "origClientOrderId" in fields:
            order = await self.venue.query(key.account_id, ClientOrderId(fields["origClientOrderId"]))
        else:
            placed = self.placed.get(int(fields["orderId"])) if fields.get("orderId", "").isdigit() else None
            if placed is None or placed.account_id != key.account_id:
                return None
            order = await self.venue.query(key.account_id, placed.request.client_order_id)
        if order is None or self.venue_symbol(order.symbol) != fields.get("symbol"):
            return None
        return order

    async def _get_order(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        order = await self._find(key, fields)
        if order is None:
            return self._error(berr.NO_SUCH_ORDER, berr.MSG_NO_SUCH_ORDER)
        return JSONResponse(await self._order_wire(key, order), headers=self._headers())

    async def _delete_order(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        order = await self._find(key, fields)
        if order is None or order.status is not VenueOrderStatus.OPEN:
            return self._error(berr.CANCEL_REJECTED, berr.MSG_UNKNOWN_ORDER)
        canceled = await self.venue.cancel(key.account_id, order.client_order_id)
        await self._on_paper_update(canceled)  # paper tells the canceller only; Binance streams it too
        wire = await self._order_wire(key, canceled)
        wire["origClientOrderId"] = wire["clientOrderId"]
        wire["clientOrderId"] = fields.get("newClientOrderId") or secrets.token_urlsafe(16)
        wire["transactTime"] = wire.pop("updateTime")
        return JSONResponse(wire, headers=self._headers())

    async def _get_openOrders(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        found = list(await self.venue.open_orders(key.account_id))
        if "symbol" in fields:
            found = [o for o in found if self.venue_symbol(o.symbol) == fields["symbol"]]
        return JSONResponse([await self._order_wire(key, o) for o in found], headers=self._headers())

    async def _get_myTrades(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        symbol = self._symbol(fields.get("symbol", ""))
        if symbol is None:
            return self._error(berr.BAD_SYMBOL, berr.MSG_BAD_SYMBOL)
        fills = [f for f in await self.venue.fills_since(key.account_id, 0) if f.symbol == symbol]
        fills.sort(key=lambda f: f.sequence)  # oldest first, as Binance
        if "fromId" in fields:
            fills = [f for f in fills if f.sequence >= int(fields["fromId"])]
        elif "startTime" in fields:
            fills = [f for f in fills if _ms(f.filled_at) >= int(fields["startTime"])]
        limit = min(int(fields.get("limit", "500")), 1000)
        page = [self._trade_wire(key, f) for f in fills[:limit]]
        if fault is Fault.DUPLICATE_FILL and page:
            page.append(dict(page[-1]))
        return JSONResponse(page, headers=self._headers())

    async def _get_account(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        balances = [
            {"asset": b.asset, "free": _fixed(b.available), "locked": _fixed(b.total - b.available)}
            for b in await self.venue.balances(key.account_id)
            if fields.get("omitZeroBalances") != "true" or b.total != 0
        ]
        body = {
            "makerCommission": 0,
            "takerCommission": 0,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "updateTime": self.now_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 354937868,
        }
        return JSONResponse(body, headers=self._headers())

    # --- shapes --------------------------------------------------------------------------------------------

    async def _order_wire(self, key: _Key, order: VenueOrder) -> dict[str, Any]:
        order_id = self._by_paper[order.venue_order_id]
        placed = self.placed[order_id]
        fills = [f for f in await self.venue.fills_since(key.account_id, 0) if f.venue_order_id == order.venue_order_id]
        request = placed.request
        return {
            "symbol": self.venue_symbol(order.symbol),
            "orderId": order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": _fixed(request.limit_price or Decimal(0)),
            "origQty": _fixed(order.quantity),
            "executedQty": _fixed(order.filled_quantity),
            "cummulativeQuoteQty": _fixed(sum((f.quantity * f.price for f in fills), Decimal(0))),
            "status": self._status(placed, order),
            "timeInForce": "GTC" if request.time_in_force is TimeInForce.GTC else request.time_in_force.value.upper(),
            "type": placed.type,
            "side": order.side.value.upper(),
            "stopPrice": _fixed(request.trigger_price or Decimal(0)),
            "icebergQty": "0.00000000",
            "time": placed.time_ms,
            "updateTime": _ms(order.updated_at),
            "isWorking": True,
            "workingTime": placed.time_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    @staticmethod
    def _status(placed: _Placed, order: VenueOrder) -> str:
        if order.status is VenueOrderStatus.OPEN:
            return "PARTIALLY_FILLED" if order.filled_quantity > 0 else "NEW"
        if order.status is VenueOrderStatus.CANCELED:
            if order.filled_quantity == order.quantity:
                return "FILLED"
            immediate = placed.type == "MARKET" or placed.request.time_in_force is not TimeInForce.GTC
            return "EXPIRED" if immediate else "CANCELED"
        return order.status.value.upper()

    def _trade_wire(self, key: _Key, fill: VenueFill) -> dict[str, Any]:
        return {
            "symbol": self.venue_symbol(fill.symbol),
            "id": fill.sequence,
            "orderId": self._by_paper[fill.venue_order_id],
            "orderListId": -1,
            "price": _fixed(fill.price),
            "qty": _fixed(fill.quantity),
            "quoteQty": _fixed(fill.quantity * fill.price),
            "commission": _fixed(fill.fee),
            "commissionAsset": fill.fee_asset,
            "time": _ms(fill.filled_at),
            "isBuyer": fill.side is OrderSide.BUY,
            "isMaker": fill.liquidity.value == "maker",
            "isBestMatch": True,
        }


def _fixed(value: Decimal) -> str:
    """Binance's decimal strings: eight places, zeros kept ("0.10000000"); finer values as they are."""
    exact = value.normalize()
    if isinstance(exact.as_tuple().exponent, int) and exact.as_tuple().exponent >= -8:
        return format(exact.quantize(Decimal("1e-8")), "f")
    return format(exact, "f")


def _ms(stamp: datetime) -> int:
    return int(stamp.timestamp() * 1000)


def _order_request(
    account_id: AccountId, symbol: Symbol, fields: dict[str, str]
) -> VenueOrderRequest | tuple[int, str]:
    """The paper request for a newOrder, or Binance's (code, msg) refusing it."""
    kind = _TYPES.get(fields.get("type", ""))
    side = fields.get("side")
    client = fields.get("newClientOrderId")
    if kind is None or side not in ("BUY", "SELL"):
        return berr.ILLEGAL_CHARS, "Illegal characters found in parameter 'type' or 'side'."
    if not client:
        return (
            berr.MANDATORY_PARAM_EMPTY,
            "Mandatory parameter 'newClientOrderId' was not sent.",
        )  # Binance generates one
    try:
        quantity = Decimal(fields["quantity"])
        price = Decimal(fields["price"]) if "price" in fields else None
        stop = Decimal(fields["stopPrice"]) if "stopPrice" in fields else None
    except (KeyError, ArithmeticError):
        return berr.ILLEGAL_CHARS, "Illegal characters found in parameter 'quantity'."
    tif = {"IOC": TimeInForce.IOC, "FOK": TimeInForce.FOK}.get(fields.get("timeInForce", ""), TimeInForce.GTC)
    return VenueOrderRequest(
        account_id=account_id,
        client_order_id=ClientOrderId(client),
        symbol=symbol,
        side=OrderSide(side.lower()),
        type=kind,
        quantity=quantity,
        limit_price=price,
        trigger_price=stop,
        time_in_force=tif,
        post_only=fields["type"] == "LIMIT_MAKER",
    )
