"""The Binance spot venue adapter over REST (httpx): `VenueAdapter` for one or many accounts, each with its own key.

Rules worth knowing (docs/venues.md, "Binance"):
- Every SIGNED call carries `timestamp` (local clock + the offset measured against GET /api/v3/time) and
  `recvWindow`; a -1021 (outside the recvWindow) re-measures the offset and sends again (nothing was done).
- Request weight: the adapter reserves each call's weight against the last `X-MBX-USED-WEIGHT-1M` the venue
  reported and waits for the next minute when it would exceed the limit; a 429 / 418 waits the venue's
  `Retry-After` and sends again (Binance did nothing), up to `max_wait_s`.
- newOrder carries `newClientOrderId`; a timeout or 5xx after sending is resolved by querying that client id
  (found: the answer; not found: `AmbiguousOutcome`), never by resubmitting. "Duplicate order sent." answers the
  open order with that id.
- Binance's order endpoints need the symbol: the adapter remembers the symbol of each client id it placed, and
  otherwise asks each of its reconciled symbols (`symbols`, all TRADING symbols by default).
- Fills reach listeners from `sync()` (REST reconciliation over myTrades), the backstop of the user data stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from shared.domain.money import InstrumentSpec
from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    UpdateListener,
    VenueBalance,
    VenueFill,
    VenueOperationalError,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.binance import errors as berr
from shared.venues.binance import wire
from shared.venues.binance.signing import Signer, encode_params, signer_for
from shared.venues.kraken.credentials import CredentialSource, unusable_keys
from shared.venues.paper_settlement import validate_request

log = get_logger(__name__)
_T = TypeVar("_T")

BINANCE_URL = "https://api.binance.com"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
API_KEY_HEADER = "X-MBX-APIKEY"
WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute (exchangeInfo rateLimits)
# Request weights of the endpoints used (developers.binance.com spot REST, each endpoint's "Weight").
WEIGHTS = {
    "time": 1,
    "exchangeInfo": 20,
    "order:POST": 1,
    "order:GET": 4,
    "order:DELETE": 1,
    "openOrders": 80,  # without a symbol
    "myTrades": 20,
    "account": 20,
}
TRADES_PAGE = 1000
_STATUSES = {
    "NEW": VenueOrderStatus.OPEN,
    "PENDING_NEW": VenueOrderStatus.OPEN,
    "PARTIALLY_FILLED": VenueOrderStatus.OPEN,
    "PENDING_CANCEL": VenueOrderStatus.OPEN,
    "FILLED": VenueOrderStatus.FILLED,
    "CANCELED": VenueOrderStatus.CANCELED,
    "REJECTED": VenueOrderStatus.REJECTED,
    # Binance expires the unfilled rest of IOC / FOK / market orders: to the platform that is a cancel.
    "EXPIRED": VenueOrderStatus.CANCELED,
    "EXPIRED_IN_MATCH": VenueOrderStatus.CANCELED,
}
_TYPES_BACK = {
    "MARKET": OrderType.MARKET,
    "LIMIT": OrderType.LIMIT,
    "LIMIT_MAKER": OrderType.LIMIT,
    "STOP_LOSS": OrderType.STOP_LOSS,
    "TAKE_PROFIT": OrderType.TAKE_PROFIT,
    "STOP_LOSS_LIMIT": OrderType.STOP_LOSS_LIMIT,
}


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """One Binance symbol as the platform sees it."""

    symbol: Symbol
    venue_symbol: str
    spec: InstrumentSpec


def fill_sequence(trade: wire.BinanceTrade) -> int:
    """An increasing number for a trade: its time in ms, then its per-symbol trade id (fits PostgreSQL BIGINT)."""
    return trade.time * 1_000_000 + trade.trade_id % 1_000_000


class _Call:
    READ = "read"
    CANCEL = "cancel"
    CREATE = "create"


class _Duplicate(Exception):
    """newOrder refused: an open order already has this client id."""


class BinanceVenue:
    """Binance spot over REST; accounts' keys come from `credentials` and are used only to sign here."""

    name = "binance"

    def __init__(
        self,
        credentials: CredentialSource,
        *,
        base_url: str = BINANCE_URL,
        symbols: Iterable[Symbol] | None = None,
        timeout_s: float = 10.0,
        recv_window_ms: int = 5000,
        weight_limit: int = WEIGHT_LIMIT,
        max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._credentials = credentials
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers={"User-Agent": "aether-binance/1"})
        self._wanted = None if symbols is None else set(symbols)
        self._recv_window_ms = recv_window_ms
        self._weight_limit = weight_limit
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._offset_ms = 0
        self._used_weight = 0
        self._weight_minute = 0
        self._signers: dict[str, Signer] = {}
        self._listeners: list[UpdateListener] = []
        self._rules: dict[Symbol, SymbolRules] = {}
        self._by_venue: dict[str, SymbolRules] = {}
        self._placed: dict[tuple[AccountId, ClientOrderId], str] = {}
        self._accounts: set[AccountId] = set()
        self._delivered: set[tuple[str, str]] = set()
        self._cursors: dict[AccountId, int] = {}
        self.retries: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Measure the server time offset and load the symbols' filters (precision, minimums)."""
        await self.sync_time()
        info = await self._public("/api/v3/exchangeInfo", WEIGHTS["exchangeInfo"], wire.exchange_info)
        for item in info:
            symbol = Symbol(f"{item.base}/{item.quote}")
            if self._wanted is not None and symbol not in self._wanted:
                continue
            spec = InstrumentSpec(
                symbol=symbol,
                base=item.base,
                quote=item.quote,
                price_increment=item.tick_size,
                quantity_increment=item.step_size,
                min_quantity=item.min_qty,
                min_notional=item.min_notional,
                base_step=min(Decimal(1).scaleb(-item.base_precision), item.step_size),
                quote_step=Decimal(1).scaleb(-item.quote_precision),
            )
            rules = SymbolRules(symbol, item.symbol, spec)
            self._rules[symbol] = rules
            self._by_venue[item.symbol] = rules

    async def sync_time(self) -> int:
        """Measure local clock vs GET /api/v3/time (half the round trip assumed each way); the offset in ms."""
        before = self._clock()
        server_ms = await self._public("/api/v3/time", WEIGHTS["time"], wire.server_time)
        after = self._clock()
        self._offset_ms = server_ms - int((before + after) / 2 * 1000)
        return self._offset_ms

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def spec(self, symbol: Symbol) -> InstrumentSpec:
        """The trading rules of `symbol` as Binance's exchangeInfo filters gave them."""
        return self._symbol(symbol).spec

    @property
    def used_weight(self) -> int:
        """The request weight Binance last reported used in the current minute."""
        return self._used_weight

    # --- protocol ------------------------------------------------------------------------------------------

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and final order states (from `sync()`, the user data stream and immediate fills)."""
        self._listeners.append(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """POST /api/v3/order with `newClientOrderId`; a repeat of an open order's client id answers that order."""
        rules = self._symbol(request.symbol)
        validate_request(request, rules.spec)
        fields = self._order_fields(request, rules)
        self._placed[(request.account_id, request.client_order_id)] = rules.venue_symbol
        try:
            raw = await self._signed(request.account_id, "POST", "/api/v3/order", fields, _Call.CREATE, wire.order)
        except AmbiguousOutcome:
            return await self._resolve(request)
        except _Duplicate:
            found = await self.query(request.account_id, request.client_order_id)
            if found is None:
                raise AmbiguousOutcome(f"{request.client_order_id}: duplicate answered but not found") from None
            return found
        order = self._order(request.account_id, raw)
        if order.filled_quantity > 0:
            await self._deliver_fills(request.account_id, {order.venue_order_id})
        return order

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """DELETE /api/v3/order by `origClientOrderId`; a closed order answers its final state."""
        found = await self._query_raw(account_id, client_order_id)
        if found is None:
            raise VenueRejected("unknown_order", f"no order with client id {client_order_id}")
        if _STATUSES[found.status] is not VenueOrderStatus.OPEN:
            return self._order(account_id, found)
        fields = {"symbol": found.symbol, "origClientOrderId": client_order_id}
        try:
            await self._signed(account_id, "DELETE", "/api/v3/order", fields, _Call.CANCEL, wire.order)
        except VenueRejected as exc:
            if exc.code != "unknown_order":
                raise
        except AmbiguousOutcome:
            pass  # the query below tells
        try:
            after = await self._query_raw(account_id, client_order_id)
        except TemporaryError as exc:
            raise AmbiguousOutcome(f"cancel of {client_order_id}: state unknown ({exc})") from exc
        if after is None or _STATUSES[after.status] is VenueOrderStatus.OPEN:
            raise AmbiguousOutcome(f"cancel of {client_order_id}: the order is still open")
        return self._order(account_id, after)

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """GET /api/v3/order by `origClientOrderId`, or None when Binance never saw it."""
        found = await self._query_raw(account_id, client_order_id)
        return None if found is None else self._order(account_id, found)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """GET /api/v3/openOrders (every symbol) of the account's known symbols, oldest first."""
        found = await self._signed(account_id, "GET", "/api/v3/openOrders", {}, _Call.READ, wire.orders)
        found = [o for o in found if o.symbol in self._by_venue]
        for o in found:
            self._placed[(account_id, ClientOrderId(o.client_order_id))] = o.symbol
        return [self._order(account_id, o) for o in sorted(found, key=lambda o: (o.update_time, o.order_id))]

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """GET /api/v3/myTrades of each reconciled symbol from the cursor's time on, paged by id, oldest first."""
        trades: list[wire.BinanceTrade] = []
        for venue_symbol in sorted(self._by_venue):
            trades += await self._trades(account_id, venue_symbol, after_sequence)
        unique = {(t.symbol, t.trade_id): t for t in trades if fill_sequence(t) > after_sequence}
        orders: dict[tuple[str, int], wire.BinanceOrder] = {}
        for venue_symbol, order_id in sorted({(t.symbol, t.order_id) for t in unique.values()}):
            fields = {"symbol": venue_symbol, "orderId": str(order_id)}
            orders[(venue_symbol, order_id)] = await self._signed(
                account_id, "GET", "/api/v3/order", fields, _Call.READ, wire.order
            )
        fills = [self._fill(account_id, orders[(t.symbol, t.order_id)], t) for t in unique.values()]
        return sorted(fills, key=lambda f: f.sequence)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """GET /api/v3/account: total = free + locked, available = free."""
        found = await self._signed(
            account_id, "GET", "/api/v3/account", {"omitZeroBalances": "true"}, _Call.READ, wire.balances
        )
        return [VenueBalance(account_id, Asset(a), free + locked, free) for a, (free, locked) in found.items()]

    # --- reconciliation -------------------------------------------------------------------------------------

    async def sync(self, accounts: Iterable[AccountId] | None = None) -> int:
        """Tell listeners of fills not told yet and of the orders they closed; answers how many fills."""
        told = 0
        for account_id in list(accounts if accounts is not None else self._accounts):
            told += await self._deliver_fills(account_id, None)
        return told

    async def not_ready(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str]:
        """Accounts whose keys are unusable, with the reason (these accounts cannot trade here)."""
        return {AccountId(a): reason for a, reason in (await unusable_keys(self._credentials, account_ids)).items()}

    async def maintain(self, stop: asyncio.Event, interval_s: float = 15.0) -> None:
        """Reconcile every `interval_s` (and re-measure the clock offset) until `stop`."""
        while not stop.is_set():
            try:
                await self.sync_time()
                await self.sync()
            except (TemporaryError, AmbiguousOutcome, VenueRejected) as exc:
                log.warning("binance_maintain_failed", error=type(exc).__name__, detail=str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                continue

    # --- the user data stream (shared/venues/binance/user_stream.py) ----------------------------------------

    async def listen_key(self, account_id: AccountId, *, keepalive: str | None = None) -> str:
        """POST /api/v3/userDataStream (a new or the active listenKey), or PUT to keep `keepalive` alive 60 min."""
        creds = await self._credentials.get(account_id)
        await self._reserve(2)
        method = "PUT" if keepalive is not None else "POST"
        params = {"listenKey": keepalive} if keepalive is not None else None
        try:
            response = await self._http.request(
                method, "/api/v3/userDataStream", params=params, headers={API_KEY_HEADER: creds.api_key}
            )
        except httpx.HTTPError as exc:
            raise TemporaryError(f"binance userDataStream: {type(exc).__name__}") from exc
        self._observe(response)
        if response.status_code != 200:
            raise TemporaryError(f"binance userDataStream: HTTP {response.status_code}")
        if keepalive is not None:
            return keepalive
        try:
            return wire.listen_key(wire.decode(response.content))
        except wire.BinanceWireError as exc:
            raise TemporaryError(f"binance userDataStream: {exc}") from exc

    async def on_execution(self, account_id: AccountId, report: wire.ExecutionReport) -> None:
        """An `executionReport` from the stream: its fill (once, whichever of stream and `sync` saw it first) and
        the order's final state to the listeners."""
        rules = self._by_venue.get(report.symbol)
        if rules is None:
            return
        symbol = rules.symbol
        self._placed[(account_id, ClientOrderId(report.client_order_id))] = report.symbol
        if report.execution_type == "TRADE" and report.last_qty > 0:
            key = (symbol, str(report.trade_id))
            if key not in self._delivered:
                self._delivered.add(key)
                trade = wire.BinanceTrade(
                    symbol=report.symbol,
                    trade_id=report.trade_id,
                    order_id=report.order_id,
                    price=report.last_price,
                    qty=report.last_qty,
                    commission=report.commission,
                    commission_asset=report.commission_asset or rules.spec.quote,
                    time=report.time,
                    is_buyer=report.side == "BUY",
                    is_maker=report.maker,
                )
                await self._notify(self._fill(account_id, self._report_order(report), trade))
        if _STATUSES[report.status] is not VenueOrderStatus.OPEN:
            await self._notify(self._order(account_id, self._report_order(report)))

    @staticmethod
    def _report_order(report: wire.ExecutionReport) -> wire.BinanceOrder:
        return wire.BinanceOrder(
            symbol=report.symbol,
            order_id=report.order_id,
            client_order_id=report.client_order_id,
            side=report.side,
            type=report.order_type,
            status=report.status,
            orig_qty=report.quantity,
            executed_qty=report.filled,
            update_time=report.time,
        )

    # --- internals -----------------------------------------------------------------------------------------

    def _symbol(self, symbol: Symbol) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            raise VenueRejected("unknown_instrument", f"{symbol} is not a Binance symbol here")
        return rules

    def _order_fields(self, request: VenueOrderRequest, rules: SymbolRules) -> dict[str, str]:
        fields = {
            "symbol": rules.venue_symbol,
            "side": request.side.value.upper(),
            "quantity": _plain(request.quantity),
            "newClientOrderId": request.client_order_id,
            "newOrderRespType": "RESULT",
        }
        kind = request.type
        if kind is OrderType.LIMIT and request.post_only:
            fields["type"] = "LIMIT_MAKER"
        elif kind is OrderType.LIMIT:
            fields["type"] = "LIMIT"
        elif kind is OrderType.MARKET:
            fields["type"] = "MARKET"
        elif kind is OrderType.STOP_LOSS:
            fields["type"] = "STOP_LOSS"
        elif kind is OrderType.TAKE_PROFIT:
            fields["type"] = "TAKE_PROFIT"
        elif kind is OrderType.STOP_LOSS_LIMIT:
            fields["type"] = "STOP_LOSS_LIMIT"
        else:
            raise VenueRejected("invalid_order", f"Binance spot has no {kind.value} orders")
        if request.limit_price is not None:
            fields["price"] = _plain(request.limit_price)
        if request.trigger_price is not None:
            fields["stopPrice"] = _plain(request.trigger_price)
        if fields["type"] in ("LIMIT", "STOP_LOSS_LIMIT"):
            fields["timeInForce"] = {TimeInForce.IOC: "IOC", TimeInForce.FOK: "FOK"}.get(request.time_in_force, "GTC")
        return fields

    async def _resolve(self, request: VenueOrderRequest) -> VenueOrder:
        """After a newOrder whose answer was lost: the order with this client id, or `AmbiguousOutcome`."""
        self.retries["resolve"] = self.retries.get("resolve", 0) + 1
        try:
            found = await self.query(request.account_id, request.client_order_id)
        except (TemporaryError, AmbiguousOutcome) as exc:
            raise AmbiguousOutcome(f"{request.client_order_id}: outcome unknown ({exc})") from exc
        if found is None:
            raise AmbiguousOutcome(f"{request.client_order_id}: not found after an unanswered newOrder")
        if found.filled_quantity > 0:
            await self._deliver_fills(request.account_id, {found.venue_order_id})
        return found

    async def _query_raw(self, account_id: AccountId, client_order_id: ClientOrderId) -> wire.BinanceOrder | None:
        known = self._placed.get((account_id, client_order_id))
        for venue_symbol in [known] if known is not None else sorted(self._by_venue):
            fields = {"symbol": venue_symbol, "origClientOrderId": client_order_id}
            try:
                found = await self._signed(account_id, "GET", "/api/v3/order", fields, _Call.READ, wire.order)
            except VenueRejected as exc:
                if exc.code == "unknown_order":
                    continue
                raise
            self._placed[(account_id, client_order_id)] = venue_symbol
            return found
        return None

    async def _trades(self, account_id: AccountId, venue_symbol: str, after_sequence: int) -> list[wire.BinanceTrade]:
        fields = {"symbol": venue_symbol, "limit": str(TRADES_PAGE)}
        if after_sequence > 0:
            fields["startTime"] = str(after_sequence // 1_000_000)
        found: list[wire.BinanceTrade] = []
        while True:
            page = await self._signed(account_id, "GET", "/api/v3/myTrades", fields, _Call.READ, wire.trades)
            found += page
            if len(page) < TRADES_PAGE:
                return found
            fields = {
                "symbol": venue_symbol,
                "limit": str(TRADES_PAGE),
                "fromId": str(max(t.trade_id for t in page) + 1),
            }

    async def _deliver_fills(self, account_id: AccountId, orders: set[VenueOrderId] | None) -> int:
        cursor = self._cursors.get(account_id, 0) if orders is None else 0
        fills = [
            f
            for f in await self.fills_since(account_id, cursor)
            if (f.symbol, f.trade_id) not in self._delivered and (orders is None or f.venue_order_id in orders)
        ]
        for fill in fills:
            self._delivered.add((fill.symbol, fill.trade_id))
            await self._notify(fill)
        if fills and orders is None:
            self._cursors[account_id] = max(cursor, max(f.sequence for f in fills))
            for client_order_id in sorted({f.client_order_id for f in fills}):
                order = await self.query(account_id, client_order_id)
                if order is not None and order.status is not VenueOrderStatus.OPEN:
                    await self._notify(order)
        return len(fills)

    async def _notify(self, update: VenueUpdate) -> None:
        for listener in list(self._listeners):
            try:
                await listener(update)
            except Exception:  # a listener's failure loses nothing: reconciliation catches up
                log.exception("binance_listener_failed", kind=type(update).__name__)

    def _order(self, account_id: AccountId, order: wire.BinanceOrder) -> VenueOrder:
        rules = self._by_venue.get(order.symbol)
        return VenueOrder(
            account_id=account_id,
            client_order_id=ClientOrderId(order.client_order_id),
            venue_order_id=VenueOrderId(str(order.order_id)),
            symbol=rules.symbol if rules is not None else Symbol(order.symbol),
            side=OrderSide(order.side.lower()),
            type=_TYPES_BACK.get(order.type, OrderType.LIMIT),
            quantity=order.orig_qty,
            filled_quantity=order.executed_qty,
            status=_STATUSES[order.status],
            reason=order.status.lower() if order.status in ("EXPIRED", "EXPIRED_IN_MATCH", "REJECTED") else None,
            updated_at=datetime.fromtimestamp(order.update_time / 1000, UTC),
        )

    def _fill(self, account_id: AccountId, order: wire.BinanceOrder, trade: wire.BinanceTrade) -> VenueFill:
        rules = self._by_venue.get(trade.symbol)
        return VenueFill(
            account_id=account_id,
            client_order_id=ClientOrderId(order.client_order_id),
            venue_order_id=VenueOrderId(str(trade.order_id)),
            trade_id=TradeId(str(trade.trade_id)),
            symbol=rules.symbol if rules is not None else Symbol(trade.symbol),
            side=OrderSide.BUY if trade.is_buyer else OrderSide.SELL,
            quantity=trade.qty,
            price=trade.price,
            fee=trade.commission,
            fee_asset=Asset(trade.commission_asset),
            liquidity=Liquidity.MAKER if trade.is_maker else Liquidity.TAKER,
            filled_at=datetime.fromtimestamp(trade.time / 1000, UTC),
            sequence=fill_sequence(trade),
        )

    # --- the wire: weights, signing, sending ----------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000) + self._offset_ms

    async def _reserve(self, weight: int) -> None:
        """Wait for the next minute when this call's weight would pass the limit Binance counts."""
        minute = self._now_ms() // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._used_weight = minute, 0
        if self._used_weight + weight <= self._weight_limit:
            self._used_weight += weight
            return
        wait_s = (60_000 - self._now_ms() % 60_000) / 1000
        if wait_s > self._max_wait_s:
            raise TemporaryError(f"binance request weight exhausted for {wait_s:.1f}s")
        self.retries["weight_wait"] = self.retries.get("weight_wait", 0) + 1
        await self._sleep(wait_s)
        self._weight_minute, self._used_weight = self._now_ms() // 60_000, weight

    def _observe(self, response: httpx.Response) -> None:
        used = response.headers.get(WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self._weight_minute, self._used_weight = self._now_ms() // 60_000, int(used)

    async def _public(self, path: str, weight: int, parse: Callable[[Any], _T]) -> _T:
        await self._reserve(weight)
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise TemporaryError(f"binance {path}: {type(exc).__name__}") from exc
        self._observe(response)
        if response.status_code != 200:
            raise TemporaryError(f"binance {path}: HTTP {response.status_code}")
        try:
            return parse(wire.decode(response.content))
        except wire.BinanceWireError as exc:
            raise TemporaryError(f"binance {path}: {exc}") from exc

    def _signer(self, api_key: str, secret: str) -> Signer:
        signer = self._signers.get(api_key)
        if signer is None:
            signer = self._signers[api_key] = signer_for(secret)
        return signer

    async def _signed(
        self,
        account_id: AccountId,
        method: str,
        path: str,
        fields: Mapping[str, str],
        call: str,
        parse: Callable[[Any], _T],
    ) -> _T:
        """Sign and send one call; what Binance says did nothing (429/418, -1021) is sent again after its wait."""
        creds = await self._credentials.get(account_id)
        self._accounts.add(account_id)
        signer = self._signer(creds.api_key, creds.api_secret)
        endpoint = path.rsplit("/", 1)[-1]
        weight = WEIGHTS.get(f"{endpoint}:{method}", WEIGHTS.get(endpoint, 1))
        attempts = 0
        while True:
            attempts += 1
            await self._reserve(weight)
            params = {**fields, "recvWindow": str(self._recv_window_ms), "timestamp": str(self._now_ms())}
            payload = encode_params(params)
            query = f"{payload}&signature={quote(signer.sign(payload), safe='')}"
            try:
                response = await self._http.request(method, f"{path}?{query}", headers={API_KEY_HEADER: creds.api_key})
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise TemporaryError(f"binance {method} {path}: not sent ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:  # sent: the venue may have acted
                if call == _Call.READ:
                    raise TemporaryError(f"binance {method} {path}: {type(exc).__name__}") from exc
                raise AmbiguousOutcome(f"binance {method} {path}: no answer ({type(exc).__name__})") from exc
            self._observe(response)
            retry = attempts < 4
            if response.status_code in (418, 429):
                await self._wait_retry_after(response, f"{method} {path}", retry)
                continue
            if response.status_code == 200:
                try:
                    return parse(wire.decode(response.content))
                except wire.BinanceWireError as exc:
                    problem = f"binance {method} {path}: unreadable answer ({exc})"
                    if call == _Call.READ:
                        raise TemporaryError(problem) from exc
                    raise AmbiguousOutcome(problem) from exc
            if await self._refusal(account_id, method, path, response, call, retry=retry):
                continue

    async def _wait_retry_after(self, response: httpx.Response, what: str, retry: bool) -> None:
        """Binance refused for weight (429) or banned the IP (418): wait its `Retry-After`, or give up."""
        self.retries["rate_limited"] = self.retries.get("rate_limited", 0) + 1
        raw = response.headers.get("Retry-After", "")
        wait_s = float(raw) if raw.isdigit() else 1.0
        if not retry or wait_s > self._max_wait_s:
            raise TemporaryError(f"binance {what}: HTTP {response.status_code}, retry after {wait_s:.0f}s")
        log.warning("binance_rate_limited", status=response.status_code, retry_after_s=wait_s)
        await self._sleep(wait_s)

    async def _refusal(
        self, account_id: AccountId, method: str, path: str, response: httpx.Response, call: str, *, retry: bool
    ) -> bool:
        """Raise the typed error for a non-200 answer, or answer True when sending again may succeed."""
        what = f"binance {method} {path}"
        if response.status_code >= 500:
            if call == _Call.READ:
                raise TemporaryError(f"{what}: HTTP {response.status_code}")
            raise AmbiguousOutcome(f"{what}: HTTP {response.status_code}")
        try:
            refusal = wire.error(wire.decode(response.content))
        except wire.BinanceWireError:
            raise VenueRejected("venue_rejected", f"{what}: HTTP {response.status_code}") from None
        kind = berr.error_kind(refusal.code, refusal.msg)
        message = f"{what}: {refusal.code} {refusal.msg}"
        if kind is berr.ErrorKind.OPERATIONAL:
            forget = getattr(self._credentials, "forget", None)
            if forget is not None:
                forget(account_id)
            self._signers.clear()
            raise VenueOperationalError(message)
        if kind is berr.ErrorKind.DUPLICATE and call == _Call.CREATE:
            raise _Duplicate(message)
        if kind is berr.ErrorKind.UNAVAILABLE:
            raise TemporaryError(message) if call == _Call.READ else AmbiguousOutcome(message)
        if kind is berr.ErrorKind.TIMESTAMP and retry:
            self.retries["timestamp"] = self.retries.get("timestamp", 0) + 1
            await self.sync_time()
            return True
        if kind is berr.ErrorKind.RATE_LIMITED and retry:
            self.retries["rate_limited"] = self.retries.get("rate_limited", 0) + 1
            await self._sleep(min(1.0, self._max_wait_s))
            return True
        raise VenueRejected(berr.rejection_code(refusal.code, refusal.msg), message)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
