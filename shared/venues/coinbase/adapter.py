"""The Coinbase Advanced Trade venue adapter over REST (httpx): `VenueAdapter` for many accounts, each with its key.

Rules worth knowing (docs/venues.md, "Coinbase"):
- Every request carries `Authorization: Bearer <JWT>`, a fresh ES256/EdDSA JWT for that method and path (auth.py).
- Create Order is idempotent by `client_order_id` at Coinbase (a repeat answers the existing order), so a 429 or a
  refusal before sending is retried after the wait; a timeout or a 5xx after sending is resolved by querying the
  client id (found: that order; not found: `AmbiguousOutcome`), never resubmitted.
- Reads and cancels meeting 429 wait `Retry-After` (or one second) and retry; 401/403 stop the account (operational).
- The client id -> order id mapping is kept in memory; after a restart it is rebuilt from List Orders.
- Fills reach listeners from `sync()` (REST reconciliation, the backstop of the `user` channel) and from submits that
  filled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import httpx

from shared.crypto.secrets_dir import VenueCredentials
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
from shared.venues.coinbase import errors, wire
from shared.venues.coinbase.auth import InvalidKey, JwtSigner
from shared.venues.kraken.credentials import AccountNotReady, CredentialSource, unusable_keys
from shared.venues.paper_settlement import validate_request

log = get_logger(__name__)
_T = TypeVar("_T")

COINBASE_URL = "https://api.coinbase.com"
API = "/api/v3/brokerage"
DEFAULT_RETRY_AFTER_S = 1.0
MAX_ATTEMPTS = 4
PAGE_LIMIT = 100
_STATUSES = {
    "PENDING": VenueOrderStatus.OPEN,
    "QUEUED": VenueOrderStatus.OPEN,
    "OPEN": VenueOrderStatus.OPEN,
    "CANCEL_QUEUED": VenueOrderStatus.OPEN,
    "FILLED": VenueOrderStatus.FILLED,
    "CANCELLED": VenueOrderStatus.CANCELED,
    "EXPIRED": VenueOrderStatus.EXPIRED,
    "FAILED": VenueOrderStatus.REJECTED,
    "UNKNOWN_ORDER_STATUS": VenueOrderStatus.OPEN,
}
_TYPES_BACK = {
    "MARKET": OrderType.MARKET,
    "LIMIT": OrderType.LIMIT,
    "STOP_LIMIT": OrderType.STOP_LOSS_LIMIT,
}


def product_id(symbol: Symbol) -> str:
    """Aether's `BTC/USD` as Coinbase's product id `BTC-USD`."""
    return symbol.replace("/", "-")


def fill_sequence(fill: wire.CoinbaseFill) -> int:
    """An increasing number for a fill: its matching time in microseconds, then 3 digits of its trade id's CRC
    (ties within one microsecond); fits PostgreSQL BIGINT."""
    micros = int(fill.sequence_timestamp.timestamp()) * 1_000_000 + fill.sequence_timestamp.microsecond
    return micros * 1000 + zlib.crc32(fill.trade_id.encode()) % 1000


def check_credentials(credentials: VenueCredentials) -> VenueCredentials:
    """The pair, once its secret is known to be a usable signing key (`AccountNotReady` otherwise)."""
    try:
        JwtSigner.of(credentials.api_key, credentials.api_secret)
    except InvalidKey as exc:
        raise AccountNotReady(credentials.account_id, str(exc), venue="coinbase") from None
    return credentials


@dataclass(frozen=True, slots=True)
class ProductInfo:
    symbol: Symbol
    product_id: str
    spec: InstrumentSpec


class _Call:
    READ = "read"
    CANCEL = "cancel"
    CREATE = "create"


class CoinbaseVenue:
    """Coinbase Advanced Trade over REST; accounts' keys come from `credentials` and are used only to sign here."""

    name = "coinbase"

    def __init__(
        self,
        credentials: CredentialSource,
        *,
        base_url: str = COINBASE_URL,
        timeout_s: float = 10.0,
        max_wait_s: float = 30.0,
    ) -> None:
        self._credentials = credentials
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers={"User-Agent": "aether-coinbase/1"}
        )
        self._host = urlsplit(base_url).netloc
        self._max_wait_s = max_wait_s
        self._signers: dict[AccountId, JwtSigner] = {}
        self._listeners: list[UpdateListener] = []
        self._products: dict[Symbol, ProductInfo] = {}
        self._by_product: dict[str, ProductInfo] = {}
        self._order_ids: dict[tuple[AccountId, ClientOrderId], str] = {}
        self._client_ids: dict[str, ClientOrderId] = {}
        self._accounts: set[AccountId] = set()
        self._delivered: set[str] = set()
        self._cursors: dict[AccountId, int] = {}
        self.retries: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the products (increments and minimums) from the public List Public Products endpoint."""
        try:
            response = await self._http.get("/api/v3/brokerage/market/products")
        except httpx.HTTPError as exc:
            raise TemporaryError(f"coinbase products: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise TemporaryError(f"coinbase products: HTTP {response.status_code}")
        try:
            products = wire.list_products(wire.body(response.content))
        except wire.CoinbaseWireError as exc:
            raise TemporaryError(f"coinbase products: {exc}") from exc
        for product in products:
            symbol = Symbol(f"{product.base}/{product.quote}")
            spec = InstrumentSpec(
                symbol=symbol,
                base=product.base,
                quote=product.quote,
                price_increment=product.price_increment,
                quantity_increment=product.base_increment,
                min_quantity=product.base_min_size,
                min_notional=product.quote_min_size,
                base_step=product.base_increment,
                quote_step=product.quote_increment,
            )
            info = ProductInfo(symbol, product.product_id, spec)
            self._products[symbol] = info
            self._by_product[product.product_id] = info

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def spec(self, symbol: Symbol) -> InstrumentSpec:
        """The trading rules of `symbol` as Coinbase's products gave them."""
        return self._product(symbol).spec

    # --- protocol ------------------------------------------------------------------------------------------

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and final order states (from `sync()`, the user channel and submits that filled at once)."""
        self._listeners.append(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """Create Order with `client_order_id`; a repeat of a client id answers that order."""
        info = self._product(request.symbol)
        validate_request(request, info.spec)
        payload = {
            "client_order_id": request.client_order_id,
            "product_id": info.product_id,
            "side": request.side.value.upper(),
            "order_configuration": _configuration(request),
        }
        try:
            result = await self._call(request.account_id, "POST", "/orders", _Call.CREATE, payload, wire.create_result)
        except AmbiguousOutcome:
            return await self._resolve(request)
        if not result.success or result.order_id is None:
            reason = result.error or errors.UNKNOWN_FAILURE
            raise VenueRejected(errors.rejection_code(reason), f"coinbase create: {reason} {result.message}".strip())
        self._remember(request.account_id, request.client_order_id, result.order_id)
        try:  # placed: from here on, a failed read leaves the order's state unknown, not "nothing happened"
            order = await self._order_by_id(request.account_id, result.order_id)
            if order.filled_quantity > 0:
                await self._deliver_fills(request.account_id, {order.venue_order_id})
        except TemporaryError as exc:
            raise AmbiguousOutcome(f"{request.client_order_id}: placed as {result.order_id}, state unknown") from exc
        return order

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """Cancel Orders (batch of one) by the order id of the client id; a closed order answers its final state."""
        found = await self._query_raw(account_id, client_order_id)
        if found is None:
            raise VenueRejected("unknown_order", f"no order with client id {client_order_id}")
        if _STATUSES[found.status] is not VenueOrderStatus.OPEN:
            return self._order(account_id, found)
        payload = {"order_ids": [found.order_id]}
        try:
            results = await self._call(account_id, "POST", "/orders/batch_cancel", _Call.CANCEL, payload, _cancels)
            for result in results:
                if not result.success and result.failure_reason not in (None, errors.UNKNOWN_CANCEL_ORDER):
                    raise VenueRejected(
                        errors.rejection_code(result.failure_reason or errors.UNKNOWN_FAILURE),
                        f"coinbase cancel of {client_order_id}: {result.failure_reason}",
                    )
        except AmbiguousOutcome:
            pass  # the query below tells
        try:
            after = await self._get_order(account_id, found.order_id)
        except TemporaryError as exc:
            raise AmbiguousOutcome(f"cancel of {client_order_id}: state unknown ({exc})") from exc
        if _STATUSES[after.status] is VenueOrderStatus.OPEN:
            raise AmbiguousOutcome(f"cancel of {client_order_id}: the order is still open")
        return self._order(account_id, after)

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """The order with this client id (Get Order by the remembered id, else a search of List Orders), or None."""
        found = await self._query_raw(account_id, client_order_id)
        return None if found is None else self._order(account_id, found)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """List Orders with `order_status=OPEN`, oldest first."""
        found = await self._list_orders(account_id, {"order_status": "OPEN"})
        return [self._order(account_id, o) for o in sorted(found, key=lambda o: o.created_time)]

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """List Fills from the cursor's matching time on, paged, deduplicated by trade id, oldest first."""
        params: dict[str, str] = {"limit": str(PAGE_LIMIT)}
        if after_sequence > 0:
            micros = after_sequence // 1000
            params["start_sequence_timestamp"] = _rfc3339_micros(micros - 1_000_000)
        seen: dict[str, wire.CoinbaseFill] = {}
        cursor: str | None = None
        while True:
            page_params = {**params, **({"cursor": cursor} if cursor else {})}
            page, cursor = await self._call(
                account_id, "GET", "/orders/historical/fills", _Call.READ, page_params, wire.list_fills
            )
            for item in page:
                seen.setdefault(item.trade_id, item)
            if not page or not cursor:
                break
        fills = sorted((f for f in seen.values() if fill_sequence(f) > after_sequence), key=fill_sequence)
        out = []
        for item in fills:
            client_id = await self._client_id(account_id, item.order_id)
            if client_id is not None:
                out.append(self._fill(account_id, client_id, item))
        return out

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """List Accounts: total = available + hold."""
        out: list[VenueBalance] = []
        cursor: str | None = None
        while True:
            params = {"limit": "250", **({"cursor": cursor} if cursor else {})}
            accounts, page = await self._call(account_id, "GET", "/accounts", _Call.READ, params, wire.list_accounts)
            out += [VenueBalance(account_id, Asset(a.currency), a.available + a.hold, a.available) for a in accounts]
            cursor = page.cursor
            if not page.has_next or not cursor:
                return out

    # --- reconciliation ----------------------------------------------------------------------------------

    async def sync(self, accounts: Iterable[AccountId] | None = None) -> int:
        """Tell listeners of fills not told yet and of the orders they closed; answers how many fills."""
        told = 0
        for account_id in list(accounts if accounts is not None else self._accounts):
            told += await self._deliver_fills(account_id, None)
        return told

    async def not_ready(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str]:
        """Accounts whose keys are unusable, with the reason."""
        return {AccountId(a): reason for a, reason in (await unusable_keys(self._credentials, account_ids)).items()}

    async def maintain(self, stop: asyncio.Event, interval_s: float = 15.0) -> None:
        """Reconcile every `interval_s` until `stop` (the backstop of the user channel)."""
        while not stop.is_set():
            try:
                await self.sync()
            except (TemporaryError, AmbiguousOutcome, VenueRejected) as exc:
                log.warning("coinbase_sync_failed", error=type(exc).__name__, detail=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def websocket_jwt(self, account_id: AccountId) -> str:
        """A JWT for the `user` channel's subscribe message."""
        return (await self._signer(account_id)).websocket()

    async def on_user_update(self, account_id: AccountId, order_id: str) -> None:
        """The user channel reported a change of `order_id`: deliver its fills (and final state) now."""
        self._accounts.add(account_id)
        await self._deliver_fills(account_id, {VenueOrderId(order_id)})
        order = await self._get_order(account_id, order_id)
        if _STATUSES[order.status] is not VenueOrderStatus.OPEN:
            await self._notify(self._order(account_id, order))

    # --- internals -----------------------------------------------------------------------------------------

    def _product(self, symbol: Symbol) -> ProductInfo:
        info = self._products.get(symbol)
        if info is None:
            raise VenueRejected("unknown_instrument", f"{symbol} is not a Coinbase product")
        return info

    def _remember(self, account_id: AccountId, client_order_id: ClientOrderId, order_id: str) -> None:
        self._order_ids[(account_id, client_order_id)] = order_id
        self._client_ids[order_id] = client_order_id

    async def _resolve(self, request: VenueOrderRequest) -> VenueOrder:
        """After a Create Order whose answer was lost: the order with this client id, or `AmbiguousOutcome`."""
        self.retries["resolve"] = self.retries.get("resolve", 0) + 1
        try:
            found = await self.query(request.account_id, request.client_order_id)
        except (TemporaryError, AmbiguousOutcome) as exc:
            raise AmbiguousOutcome(f"{request.client_order_id}: outcome unknown ({exc})") from exc
        if found is None:
            raise AmbiguousOutcome(f"{request.client_order_id}: not found after an unanswered Create Order")
        if found.filled_quantity > 0:
            await self._deliver_fills(request.account_id, {found.venue_order_id})
        return found

    async def _query_raw(self, account_id: AccountId, client_order_id: ClientOrderId) -> wire.CoinbaseOrder | None:
        order_id = self._order_ids.get((account_id, client_order_id))
        if order_id is not None:
            return await self._get_order(account_id, order_id)
        matches = [o for o in await self._list_orders(account_id, {}) if o.client_order_id == client_order_id]
        if not matches:
            return None
        latest = max(matches, key=lambda o: o.created_time)
        self._remember(account_id, client_order_id, latest.order_id)
        return latest

    async def _get_order(self, account_id: AccountId, order_id: str) -> wire.CoinbaseOrder:
        return await self._call(account_id, "GET", f"/orders/historical/{order_id}", _Call.READ, None, wire.get_order)

    async def _order_by_id(self, account_id: AccountId, order_id: str) -> VenueOrder:
        return self._order(account_id, await self._get_order(account_id, order_id))

    async def _list_orders(self, account_id: AccountId, params: Mapping[str, str]) -> list[wire.CoinbaseOrder]:
        found: list[wire.CoinbaseOrder] = []
        cursor: str | None = None
        while True:
            page_params = {"limit": str(PAGE_LIMIT), **params, **({"cursor": cursor} if cursor else {})}
            orders, page = await self._call(
                account_id, "GET", "/orders/historical/batch", _Call.READ, page_params, wire.list_orders
            )
            found += orders
            cursor = page.cursor
            if not page.has_next or not cursor:
                return found

    async def _client_id(self, account_id: AccountId, order_id: str) -> ClientOrderId | None:
        known = self._client_ids.get(order_id)
        if known is not None:
            return known
        order = await self._get_order(account_id, order_id)
        self._remember(account_id, ClientOrderId(order.client_order_id), order.order_id)
        return ClientOrderId(order.client_order_id)

    async def _deliver_fills(self, account_id: AccountId, orders: set[VenueOrderId] | None) -> int:
        fills = [
            f
            for f in await self.fills_since(account_id, self._cursors.get(account_id, 0) if orders is None else 0)
            if f.trade_id not in self._delivered and (orders is None or f.venue_order_id in orders)
        ]
        if not fills:
            return 0
        for item in fills:
            self._delivered.add(item.trade_id)
            await self._notify(item)
        if orders is None:
            self._cursors[account_id] = max(self._cursors.get(account_id, 0), max(f.sequence for f in fills))
            for order_id in sorted({f.venue_order_id for f in fills}):
                order = await self._order_by_id(account_id, order_id)
                if order.status is not VenueOrderStatus.OPEN:
                    await self._notify(order)
        return len(fills)

    async def _notify(self, update: VenueUpdate) -> None:
        for listener in list(self._listeners):
            try:
                await listener(update)
            except Exception:  # a listener's failure loses nothing: reconciliation catches up
                log.exception("coinbase_listener_failed", kind=type(update).__name__)

    def _order(self, account_id: AccountId, order: wire.CoinbaseOrder) -> VenueOrder:
        info = self._by_product.get(order.product_id)
        status = _STATUSES[order.status]
        if status is VenueOrderStatus.FILLED and order.filled_size < order.base_size:
            status = VenueOrderStatus.CANCELED
        return VenueOrder(
            account_id=account_id,
            client_order_id=ClientOrderId(order.client_order_id),
            venue_order_id=VenueOrderId(order.order_id),
            symbol=info.symbol if info is not None else Symbol(order.product_id.replace("-", "/")),
            side=OrderSide(order.side.lower()),
            type=_TYPES_BACK.get(order.order_type, OrderType.LIMIT),
            quantity=order.base_size,
            filled_quantity=order.filled_size,
            status=status,
            reason=order.reject_reason,
            updated_at=order.last_time,
        )

    def _fill(self, account_id: AccountId, client_id: ClientOrderId, item: wire.CoinbaseFill) -> VenueFill:
        info = self._by_product.get(item.product_id)
        symbol = info.symbol if info is not None else Symbol(item.product_id.replace("-", "/"))
        return VenueFill(
            account_id=account_id,
            client_order_id=client_id,
            venue_order_id=VenueOrderId(item.order_id),
            trade_id=TradeId(item.trade_id),
            symbol=symbol,
            side=OrderSide(item.side.lower()),
            quantity=item.size,
            price=item.price,
            fee=item.commission,
            fee_asset=Asset(symbol.split("/")[1]),
            liquidity=Liquidity.MAKER if item.liquidity == "MAKER" else Liquidity.TAKER,
            filled_at=item.trade_time,
            sequence=fill_sequence(item),
        )

    async def _signer(self, account_id: AccountId) -> JwtSigner:
        signer = self._signers.get(account_id)
        if signer is None:
            creds = await self._credentials.get(account_id)
            try:
                signer = JwtSigner.of(creds.api_key, creds.api_secret)
            except InvalidKey as exc:
                raise AccountNotReady(account_id, str(exc), venue="coinbase") from None
            self._signers[account_id] = signer
        return signer

    async def _call(
        self,
        account_id: AccountId,
        method: str,
        path: str,
        call: str,
        payload: Mapping[str, Any] | None,
        parse: Callable[[Mapping[str, Any]], _T],
    ) -> _T:
        """Sign and send one request; a 429 waits and retries (any call: Create Order is idempotent by client id)."""
        signer = await self._signer(account_id)
        self._accounts.add(account_id)
        full = f"{API}{path}"
        waited = 0.0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            token = signer.rest(method, self._host, full)
            headers = {"Authorization": f"Bearer {token}"}
            try:
                if method == "GET":
                    query = f"?{urlencode(payload)}" if payload else ""
                    response = await self._http.get(full + query, headers=headers)
                else:
                    response = await self._http.post(full, json=payload, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise TemporaryError(f"coinbase {method} {path}: not sent ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:  # sent: the venue may have acted
                if call == _Call.READ:
                    raise TemporaryError(f"coinbase {method} {path}: {type(exc).__name__}") from exc
                raise AmbiguousOutcome(f"coinbase {method} {path}: no answer ({type(exc).__name__})") from exc
            if response.status_code == 429:
                wait = _retry_after(response)
                self.retries["rate_limited"] = self.retries.get("rate_limited", 0) + 1
                if attempt == MAX_ATTEMPTS or waited + wait > self._max_wait_s:
                    raise (
                        TemporaryError(f"coinbase {method} {path}: rate limited")
                        if call != _Call.CREATE
                        else (VenueRejected("rate_limited", f"coinbase {method} {path}: rate limited, nothing created"))
                    )
                waited += wait
                await asyncio.sleep(wait)
                continue
            return self._answer(account_id, response, method, path, call, parse)
        raise TemporaryError(f"coinbase {method} {path}: no attempt left")  # pragma: no cover (the loop raises)

    def _answer(
        self,
        account_id: AccountId,
        response: httpx.Response,
        method: str,
        path: str,
        call: str,
        parse: Callable[[Mapping[str, Any]], _T],
    ) -> _T:
        where = f"coinbase {method} {path}"
        status = response.status_code
        if status >= 500:
            if call == _Call.READ:
                raise TemporaryError(f"{where}: HTTP {status}")
            raise AmbiguousOutcome(f"{where}: HTTP {status}")
        if status in (401, 403):
            self._signers.pop(account_id, None)
            forget = getattr(self._credentials, "forget", None)
            if forget is not None:
                forget(account_id)
            raise VenueOperationalError(f"{where}: {wire.error_answer(response.content).error} (HTTP {status})")
        if status == 404 and call == _Call.READ:
            raise VenueRejected("unknown_order", f"{where}: not found")
        if status >= 400:
            answer = wire.error_answer(response.content)
            raise VenueRejected(errors.rejection_code(answer.error), f"{where}: {answer.error} {answer.message}")
        try:
            return parse(wire.body(response.content))
        except wire.CoinbaseWireError as exc:
            if call == _Call.READ:
                raise TemporaryError(f"{where}: {exc}") from exc
            raise AmbiguousOutcome(f"{where}: unreadable answer ({exc})") from exc


def _cancels(obj: Mapping[str, Any]) -> list[wire.CancelResult]:
    return wire.cancel_results(obj)


def _retry_after(response: httpx.Response) -> float:
    """The wait a 429 asks for: its `Retry-After` seconds (bounded), else one second."""
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), 60.0) if seconds == seconds else DEFAULT_RETRY_AFTER_S


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _rfc3339_micros(micros: int) -> str:
    stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=max(0, micros))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _configuration(request: VenueOrderRequest) -> dict[str, dict[str, Any]]:
    """The `order_configuration` of a request (market_market_ioc, limit_limit_gtc, ...)."""
    size = _plain(request.quantity)
    tif = request.time_in_force
    if request.type is OrderType.MARKET:
        if tif is TimeInForce.FOK:
            return {"market_market_fok": {"base_size": size}}
        return {"market_market_ioc": {"base_size": size}}
    if request.type is OrderType.LIMIT and request.limit_price is not None:
        price = _plain(request.limit_price)
        if tif is TimeInForce.IOC:
            return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
        if tif is TimeInForce.FOK:
            return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
        return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": request.post_only}}
    if request.type is OrderType.STOP_LOSS_LIMIT and request.limit_price is not None and request.trigger_price:
        direction = "STOP_DIRECTION_STOP_DOWN" if request.side is OrderSide.SELL else "STOP_DIRECTION_STOP_UP"
        return {
            "stop_limit_stop_limit_gtc": {
                "base_size": size,
                "limit_price": _plain(request.limit_price),
                "stop_price": _plain(request.trigger_price),
                "stop_direction": direction,
            }
        }
    raise VenueRejected("invalid_order", f"Coinbase spot has no {request.type.value} orders")
