"""A Kraken spot REST protocol fake: a real HTTP server on loopback speaking Kraken's wire format.

It checks what Kraken checks (API-Key known, API-Sign over the exact body, nonce strictly greater than the key's
last one, the REST call counter and the per-pair trading counter with Kraken's error strings), answers in the
documented shapes (`{"error": [...], "result": ...}`), and matches orders with the paper venue's engine
(`PaperVenue` on the test database) so that the contract suite's expectations hold. Faults are injected on demand:
`fail(method, Fault...)` makes the next call(s) of `method` time out after acting, answer 5xx, answer
`EService:Unavailable`, be rate limited, answer a malformed result, or (TradesHistory) report a trade twice.

Known differences from Kraken (docs/venues.md): a post-only order that would cross is refused with
`EOrder:Post only order` (Kraken accepts it, then cancels it); a repeated `cl_ord_id` of a CLOSED order answers
that order (Kraken checks uniqueness among open orders only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.venues.base import VenueFill, VenueOrder, VenueOrderRequest, VenueOrderStatus, VenueRejected
from shared.venues.kraken import errors as kerr
from shared.venues.kraken.rate_limit import (
    ADD_ORDER_COST,
    REST_LIMITS,
    TRADING_LIMITS,
    CounterLimit,
    Tier,
    cancel_penalty,
    rest_cost,
)
from shared.venues.kraken.signing import verify_sign
from shared.venues.paper import PaperVenue
from tests.helpers import eventually

# Kraken's asset names for the platform's (the rest are their own names).
KRAKEN_ASSETS = {"USD": "ZUSD", "BTC": "XXBT", "ETH": "XETH", "EUR": "ZEUR"}
_ALTNAMES = {"BTC": "XBT"}
_REFUSALS = {
    "insufficient_funds": kerr.INSUFFICIENT_FUNDS,
    "post_only_would_cross": kerr.POST_ONLY,
    "invalid_quantity": kerr.ORDER_MINIMUM,
    "unknown_instrument": kerr.UNKNOWN_PAIR,
    "no_market_data": kerr.UNAVAILABLE,
}
_STATUS = {
    VenueOrderStatus.OPEN: "open",
    VenueOrderStatus.FILLED: "closed",
    VenueOrderStatus.CANCELED: "canceled",
    VenueOrderStatus.EXPIRED: "expired",
    VenueOrderStatus.REJECTED: "canceled",
}


class Fault(StrEnum):
    TIMEOUT_AFTER = "timeout_after"  # act, then answer too late (the client times out)
    HTTP_500 = "http_500"  # answer 500 before acting
    UNAVAILABLE = "unavailable"  # `EService:Unavailable` before acting
    RATE_LIMITED = "rate_limited"  # `EGeneral:Too many requests` before acting
    DUPLICATE_FILL = "duplicate_fill"  # TradesHistory reports its newest trade twice (second page)
    MALFORMED = "malformed"  # a result of the wrong shape, before acting


@dataclass
class _Counter:
    value: float = 0.0
    at: float = 0.0

    def add(self, cost: float, limit: CounterLimit, now: float) -> bool:
        self.value = max(0.0, self.value - (now - self.at) * float(limit.decay_per_s))
        self.at = now
        if cost and self.value + cost > float(limit.maximum):
            return False
        self.value += cost
        return True


@dataclass
class _Key:
    account_id: AccountId
    secret: str
    last_nonce: int = 0
    rest: _Counter = field(default_factory=_Counter)
    trading: dict[str, _Counter] = field(default_factory=dict)
    dead_man_at: float | None = None


@dataclass
class _Placed:
    account_id: AccountId
    request: VenueOrderRequest
    opentm: float


@dataclass
class Seen:
    """What the fake saw: calls per method, refusals per error string."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    add_orders: list[str] = field(default_factory=list)  # cl_ord_id of every AddOrder that reached matching


class KrakenRestFake:
    """The fake exchange; `app` is its ASGI app, `serve()` runs it on a loopback port."""

    def __init__(
        self,
        venue: PaperVenue,
        *,
        tier: Tier = Tier.PRO,
        rest_limit: CounterLimit | None = None,
        clock: Callable[[], float] | None = None,
        late_answer_s: float = 1.0,
    ) -> None:
        self.venue = venue
        self.tier = tier
        self.rest_limit = rest_limit or REST_LIMITS[tier]
        self.trading_limit = TRADING_LIMITS[tier]
        self._offset = 0.0
        self._clock = clock or (lambda: datetime.now(UTC).timestamp())
        self.late_answer_s = late_answer_s
        self.keys: dict[str, _Key] = {}
        self.placed: dict[str, _Placed] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.seen = Seen()
        self.ws_tokens: dict[str, tuple[AccountId, float]] = {}  # GetWebSocketsToken: token -> (account, expiry)
        self.ws_token_lifetime_s = 900
        self.app = self._build()
        self.url = ""

    # --- test controls ---------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (rate counters, order ages, the dead-man switch)."""
        self._offset += seconds

    def register(self, account_id: AccountId) -> tuple[str, str]:
        """A new API key pair for the account: (public key, base64 secret)."""
        api_key = f"K{secrets.token_hex(12)}"
        secret = base64.b64encode(os.urandom(64)).decode()
        self.keys[api_key] = _Key(account_id, secret)
        return api_key, secret

    def fail(self, method: str, *faults: Fault) -> None:
        """The next calls of `method` meet these faults, in order."""
        self.faults.setdefault(method, []).extend(faults)

    async def fire_dead_man(self) -> int:
        """Cancel every open order of keys whose dead-man switch expired (Kraken does this on its own clock)."""
        canceled = 0
        for key in self.keys.values():
            if key.dead_man_at is not None and self.now() >= key.dead_man_at:
                key.dead_man_at = None
                for order in await self.venue.open_orders(key.account_id):
                    await self.venue.cancel(key.account_id, order.client_order_id)
                    canceled += 1
        return canceled

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[KrakenRestFake]:
        """Serve on a free loopback port until the block ends."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        self.url = f"http://127.0.0.1:{port}"

        async def started() -> bool:
            if task.done():
                task.result()
            return server.started

        try:
            await eventually(started, timeout_s=15, message="kraken fake listening")
            yield self
        finally:
            server.should_exit = True
            await task
            listener.close()

    # --- the wire ----------------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/0/public/Assets")
        async def assets() -> Response:
            names = {KRAKEN_ASSETS.get(a, a): _ALTNAMES.get(a, a) for a in self._assets()}
            return _ok(
                {
                    n: {"aclass": "currency", "altname": alt, "decimals": 10, "display_decimals": 5}
                    for n, alt in names.items()
                }
            )

        @app.get("/0/public/AssetPairs")
        async def asset_pairs() -> Response:
            return _ok({self._altname(s): self._pair(s) for s in self._symbols()})

        @app.post("/0/private/{method}")
        async def private(method: str, request: Request) -> Response:
            return await self._private(method, request)

        return app

    def _symbols(self) -> list[Symbol]:
        return sorted(self.venue._instruments)

    def _assets(self) -> set[str]:
        return {part for s in self._symbols() for part in s.split("/")}

    def _altname(self, symbol: Symbol) -> str:
        base, quote = symbol.split("/")
        return _ALTNAMES.get(base, base) + _ALTNAMES.get(quote, quote)

    def _symbol(self, altname: str) -> Symbol | None:
        return next((s for s in self._symbols() if self._altname(s) == altname), None)

    def _pair(self, symbol: Symbol) -> dict[str, Any]:
        spec = self.venue.spec(symbol)
        base, quote = symbol.split("/")
        return {
            "altname": self._altname(symbol),
            "wsname": symbol,
            "aclass_base": "currency",
            "base": KRAKEN_ASSETS.get(base, base),
            "aclass_quote": "currency",
            "quote": KRAKEN_ASSETS.get(quote, quote),
            "pair_decimals": -spec.price_increment.as_tuple().exponent,  # type: ignore[operator]
            "cost_decimals": -spec.quote_step.as_tuple().exponent,  # type: ignore[operator]
            "lot_decimals": -spec.quantity_increment.as_tuple().exponent,  # type: ignore[operator]
            "ordermin": str(spec.min_quantity),
            "costmin": str(spec.min_notional),
            "tick_size": str(spec.price_increment),
            "status": "online",
        }

    async def _private(self, method: str, request: Request) -> Response:
        self.seen.calls[method] = self.seen.calls.get(method, 0) + 1
        body = (await request.body()).decode()
        fields = dict(parse_qsl(body, keep_blank_values=True))
        key = self.keys.get(request.headers.get("API-Key", ""))
        refusal = self._authenticate(key, method, body, fields, request.headers.get("API-Sign", ""))
        if refusal is not None or key is None:
            return self._error(refusal or kerr.INVALID_KEY)
        fault = self.faults.get(method, []).pop(0) if self.faults.get(method) else None
        if fault is Fault.HTTP_500:
            return Response(status_code=500, content=b"<html>500 Internal Server Error</html>")
        if fault is Fault.MALFORMED:
            return _ok({"unexpected": [1, 2, 3]})
        if fault in (Fault.UNAVAILABLE, Fault.RATE_LIMITED):
            return self._error(kerr.UNAVAILABLE if fault is Fault.UNAVAILABLE else kerr.TOO_MANY_REQUESTS)
        if method not in ("AddOrder", "CancelOrder") and not key.rest.add(
            rest_cost(method), self.rest_limit, self.now()
        ):
            return self._error(kerr.API_RATE_LIMIT)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error("EGeneral:Unknown method")
        answer: Response = await handler(key, fields, fault)
        if fault is Fault.TIMEOUT_AFTER:
            await asyncio.sleep(self.late_answer_s)
        return answer

    def _authenticate(
        self, key: _Key | None, method: str, body: str, fields: dict[str, str], signature: str
    ) -> str | None:
        """Kraken's error string refusing the request's key, signature or nonce, or None (the nonce is used)."""
        if key is None:
            return kerr.INVALID_KEY
        nonce = fields.get("nonce", "")
        if not nonce.isdigit():
            return kerr.INVALID_NONCE
        if not verify_sign(f"/0/private/{method}", nonce, body, key.secret, signature):
            return kerr.INVALID_SIGNATURE
        if int(nonce) <= key.last_nonce:
            return kerr.INVALID_NONCE
        key.last_nonce = int(nonce)
        return None

    def _error(self, error: str) -> Response:
        self.seen.errors[error] = self.seen.errors.get(error, 0) + 1
        return JSONResponse({"error": [error]})

    def _trading(self, key: _Key, altname: str, cost: int) -> bool:
        counter = key.trading.setdefault(altname, _Counter())
        return counter.add(cost, self.trading_limit, self.now())

    # --- methods -------------------------------------------------------------------------------------------

    async def _m_AddOrder(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        altname = fields.get("pair", "")
        symbol = self._symbol(altname)
        if symbol is None:
            return self._error(kerr.UNKNOWN_PAIR)
        if not self._trading(key, altname, ADD_ORDER_COST):
            return self._error(kerr.ORDER_RATE_LIMIT)
        parsed = _order_request(key.account_id, symbol, fields)
        if isinstance(parsed, str):
            return self._error(parsed)
        existing = await self.venue.query(key.account_id, parsed.client_order_id)
        if existing is not None and existing.status is VenueOrderStatus.OPEN:
            return self._error(kerr.DUPLICATE_CL_ORD_ID)
        self.seen.add_orders.append(parsed.client_order_id)
        try:
            order = await self.venue.submit(parsed)
        except VenueRejected as refused:
            return self._error(_REFUSALS.get(refused.code, kerr.INVALID_ARGUMENTS + ":" + refused.code))
        self.placed.setdefault(order.venue_order_id, _Placed(key.account_id, parsed, self.now()))
        descr = f"{fields['type']} {fields['volume']} {altname} @ {fields['ordertype']} {fields.get('price', '')}"
        return _ok({"descr": {"order": descr.strip()}, "txid": [order.venue_order_id]})

    async def _m_CancelOrder(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        order = await self._find(key, fields.get("txid"), fields.get("cl_ord_id"))
        if order is None or order.status is not VenueOrderStatus.OPEN:
            return self._error(kerr.UNKNOWN_ORDER)
        placed = self.placed[order.venue_order_id]
        penalty = cancel_penalty(self.now() - placed.opentm)
        if not self._trading(key, self._altname(order.symbol), penalty):
            return self._error(kerr.ORDER_RATE_LIMIT)
        await self.venue.cancel(key.account_id, order.client_order_id)
        return _ok({"count": 1})

    async def _m_QueryOrders(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        found: list[VenueOrder] = []
        if "cl_ord_id" in fields:
            order = await self.venue.query(key.account_id, ClientOrderId(fields["cl_ord_id"]))
            found = [order] if order is not None else []
        else:
            for txid in filter(None, fields.get("txid", "").split(",")):
                order = await self._find(key, txid, None)
                if order is not None:
                    found.append(order)
        return _ok({o.venue_order_id: await self._order_wire(key, o) for o in found})

    async def _m_OpenOrders(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        open_orders = await self.venue.open_orders(key.account_id)
        return _ok({"open": {o.venue_order_id: await self._order_wire(key, o) for o in open_orders}})

    async def _m_TradesHistory(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        fills = list(await self.venue.fills_since(key.account_id, 0))
        if "start" in fields:
            start = Decimal(fields["start"])
            fills = [f for f in fills if Decimal(str(f.filled_at.timestamp())) > start]
        fills.sort(key=lambda f: f.sequence, reverse=True)  # newest first, as Kraken
        offset = int(fields.get("ofs", "0") or 0)
        page = fills[offset : offset + 50]
        count = len(fills)
        trades = {f.trade_id: self._trade_wire(f) for f in page}
        if fault is Fault.DUPLICATE_FILL and fills:
            count += 1  # the newest trade again on the next page, as when a trade lands while paging
            if offset >= len(fills):
                trades = {fills[0].trade_id: self._trade_wire(fills[0])}
            else:
                self.fail("TradesHistory", Fault.DUPLICATE_FILL)
        return _ok({"trades": trades, "count": count})

    async def _m_BalanceEx(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        answer = {
            KRAKEN_ASSETS.get(b.asset, b.asset): {"balance": _num(b.total), "hold_trade": _num(b.total - b.available)}
            for b in await self.venue.balances(key.account_id)
        }
        return _ok(answer)

    async def _m_CancelAllOrdersAfter(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        timeout = int(fields.get("timeout", "0") or 0)
        key.dead_man_at = None if timeout == 0 else self.now() + timeout
        current = datetime.fromtimestamp(self.now(), UTC)
        trigger = "0" if key.dead_man_at is None else datetime.fromtimestamp(key.dead_man_at, UTC).isoformat()
        return _ok({"currentTime": current.isoformat(), "triggerTime": trigger})

    async def _m_GetWebSocketsToken(self, key: _Key, fields: dict[str, str], fault: Fault | None) -> Response:
        token = secrets.token_urlsafe(32)
        self.ws_tokens[token] = (key.account_id, self.now() + self.ws_token_lifetime_s)
        return _ok({"token": token, "expires": self.ws_token_lifetime_s})

    def ws_token_account(self, token: str) -> AccountId | None:
        """The account a WebSocket token was issued to, or None when unknown or expired (the private WS checks)."""
        issued = self.ws_tokens.get(token)
        if issued is None or self.now() >= issued[1]:
            return None
        return issued[0]

    def expire_ws_tokens(self) -> None:
        """Every WebSocket token issued so far is expired."""
        self.ws_tokens = {token: (account, 0.0) for token, (account, _) in self.ws_tokens.items()}

    async def _find(self, key: _Key, txid: str | None, cl_ord_id: str | None) -> VenueOrder | None:
        if cl_ord_id:
            return await self.venue.query(key.account_id, ClientOrderId(cl_ord_id))
        placed = self.placed.get(txid or "")
        if placed is None or placed.account_id != key.account_id:
            return None
        return await self.venue.query(key.account_id, placed.request.client_order_id)

    async def _order_wire(self, key: _Key, order: VenueOrder) -> dict[str, Any]:
        placed = self.placed[order.venue_order_id]
        fills = [f for f in await self.venue.fills_since(key.account_id, 0) if f.venue_order_id == order.venue_order_id]
        cost = sum((f.quantity * f.price for f in fills), Decimal(0))
        fee = sum((f.fee for f in fills), Decimal(0))
        average = cost / order.filled_quantity if order.filled_quantity else Decimal(0)
        request = placed.request
        closed = order.status is not VenueOrderStatus.OPEN
        status = _STATUS[order.status]
        if order.status is VenueOrderStatus.CANCELED and order.filled_quantity == order.quantity:
            status = "closed"
        return {
            "refid": None,
            "userref": 0,
            "cl_ord_id": order.client_order_id,
            "status": status,
            "opentm": placed.opentm,
            "starttm": 0,
            "expiretm": 0,
            "closetm": order.updated_at.timestamp() if closed else 0,
            "descr": {
                "pair": self._altname(order.symbol),
                "type": order.side.value,
                "ordertype": request.type.value,
                "price": _num(request.limit_price or request.trigger_price or 0),
                "price2": "0",
                "leverage": "none",
                "order": f"{order.side.value} {order.quantity} {self._altname(order.symbol)} @ {request.type.value}",
                "close": "",
            },
            "vol": _num(order.quantity),
            "vol_exec": _num(order.filled_quantity),
            "cost": _num(cost),
            "fee": _num(fee),
            "price": _num(average),
            "stopprice": "0.00000",
            "limitprice": "0.00000",
            "misc": "",
            "oflags": "post,fciq" if request.post_only else "fciq",
            "reason": order.reason,
        }

    def _trade_wire(self, fill: VenueFill) -> dict[str, Any]:
        return {
            "ordertxid": fill.venue_order_id,
            "postxid": "TKH2SE-M7IF5-CFI7LT",
            "pair": self._altname(fill.symbol),
            "time": fill.filled_at.timestamp(),
            "type": fill.side.value,
            "ordertype": "limit",
            "price": _num(fill.price),
            "cost": _num(fill.quantity * fill.price),
            "fee": _num(fill.fee),
            "vol": _num(fill.quantity),
            "margin": "0.00000",
            "misc": "",
            "trade_id": fill.sequence,
            "maker": fill.liquidity.value == "maker",
        }


def _num(value: Decimal | int) -> str:
    """A decimal string without the database's trailing zeros."""
    return format(Decimal(value).normalize(), "f")


def _ok(result: Any) -> Response:
    return JSONResponse({"error": [], "result": result})


_ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop-loss": OrderType.STOP_LOSS,
    "take-profit": OrderType.TAKE_PROFIT,
    "stop-loss-limit": OrderType.STOP_LOSS_LIMIT,
}


def _order_request(account_id: AccountId, symbol: Symbol, fields: dict[str, str]) -> VenueOrderRequest | str:
    """The paper request for an AddOrder body, or the Kraken error string refusing it."""
    ordertype = _ORDER_TYPES.get(fields.get("ordertype", ""))
    side = fields.get("type")
    cl_ord_id = fields.get("cl_ord_id")
    if ordertype is None or side not in ("buy", "sell") or not cl_ord_id:
        return kerr.INVALID_ARGUMENTS
    try:
        volume = Decimal(fields["volume"])
        price = Decimal(fields["price"]) if "price" in fields else None
        price2 = Decimal(fields["price2"]) if "price2" in fields else None
    except (KeyError, ArithmeticError):
        return kerr.INVALID_ARGUMENTS + ":volume"
    triggered = ordertype in (OrderType.STOP_LOSS, OrderType.TAKE_PROFIT, OrderType.STOP_LOSS_LIMIT)
    limit = price2 if ordertype is OrderType.STOP_LOSS_LIMIT else (None if triggered else price)
    return VenueOrderRequest(
        account_id=account_id,
        client_order_id=ClientOrderId(cl_ord_id),
        symbol=symbol,
        side=OrderSide(side),
        type=ordertype,
        quantity=volume,
        limit_price=limit,
        trigger_price=price if triggered else None,
        time_in_force=TimeInForce.IOC if fields.get("timeinforce") == "IOC" else TimeInForce.GTC,
        post_only="post" in fields.get("oflags", "").split(","),
    )
