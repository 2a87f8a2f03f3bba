"""The Kraken spot venue adapter over REST (httpx): `VenueAdapter` for one or many accounts, each with its own key.

Rules worth knowing (docs/venues.md, "Kraken"):
- Every private call takes, per API key, a Redis lock, a nonce from the key's Redis counter (max(now_us, last+1)),
  signs and sends, then releases: nonces reach Kraken in increasing order from any number of replicas.
- The REST call counter and the per-pair trading counter are in Redis; a call waits for room BEFORE it is sent.
- AddOrder is never retried by the adapter: a rate-limit or nonce refusal is a definitive `VenueRejected` (nothing
  was created; the OMS may retry under the SAME client id); a timeout or `EService:*` after sending is resolved by
  querying the client id (found: that order is the answer; not found: `AmbiguousOutcome`).
- Reads and cancels that meet `EGeneral:Too many requests` / rate limits wait out the counter's decay and retry.
- Fills reach listeners from the private `executions` stream (ws_private.py, through `deliver`) and from `sync()`
  (the REST reconciliation; `maintain()` runs it with the dead-man switch, more often while the stream is down);
  each trade id is told once, whichever path saw it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

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
from shared.venues.kraken import wire
from shared.venues.kraken.credentials import CredentialSource, unusable_keys
from shared.venues.kraken.errors import TOO_MANY_REQUESTS, UNKNOWN_ORDER, ErrorKind, error_kind, rejection_code
from shared.venues.kraken.nonce import RedisNonces
from shared.venues.kraken.rate_limit import (
    ADD_ORDER_COST,
    REST_LIMITS,
    CounterLimit,
    RateCounters,
    Tier,
    cancel_penalty,
    rest_cost,
)
from shared.venues.kraken.signing import api_sign, encode_payload
from shared.venues.paper_settlement import validate_request

log = get_logger(__name__)
_T = TypeVar("_T")

KRAKEN_URL = "https://api.kraken.com"
# Kraken calls bitcoin XBT; the platform's symbols use BTC.
ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
_ORDER_TYPES = {
    OrderType.MARKET: "market",
    OrderType.LIMIT: "limit",
    OrderType.STOP_LOSS: "stop-loss",
    OrderType.TAKE_PROFIT: "take-profit",
    OrderType.STOP_LOSS_LIMIT: "stop-loss-limit",
}
_ORDER_TYPES_BACK = {v: k for k, v in _ORDER_TYPES.items()}
_STATUSES = {
    "pending": VenueOrderStatus.OPEN,
    "open": VenueOrderStatus.OPEN,
    "closed": VenueOrderStatus.FILLED,
    "canceled": VenueOrderStatus.CANCELED,
    "expired": VenueOrderStatus.EXPIRED,
}
TRADES_PAGE = 50  # TradesHistory answers 50 trades per call; `ofs` pages
QUERY_BATCH = 50  # QueryOrders takes up to 50 txids


@dataclass(frozen=True, slots=True)
class PairInfo:
    """One Kraken pair as the platform sees it."""

    symbol: Symbol
    altname: str
    pair: wire.KrakenPair
    spec: InstrumentSpec


def fill_sequence(trade: wire.KrakenTrade) -> int:
    """An increasing number for a trade: its time in ms, then its per-pair trade id (fits PostgreSQL BIGINT)."""
    return sequence_at(trade.time, trade.trade_id)


def sequence_at(time_s: Decimal, trade_id: int) -> int:
    """The fill sequence of a trade at `time_s` (epoch seconds) with Kraken's per-pair `trade_id`."""
    return int(time_s * 1000) * 1_000_000 + trade_id % 1_000_000


class _Call:
    READ = "read"
    CANCEL = "cancel"
    CREATE = "create"


class KrakenVenue:
    """Kraken spot over REST; accounts' keys come from `credentials` and are used only to sign here."""

    name = "kraken"

    def __init__(
        self,
        credentials: CredentialSource,
        redis: Redis,
        *,
        base_url: str = KRAKEN_URL,
        tier: Tier = Tier.STARTER,
        rest_limit: CounterLimit | None = None,
        timeout_s: float = 10.0,
        max_wait_s: float = 30.0,
        dead_man_timeout_s: int = 60,
        serialize_signing: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._redis = redis
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers={"User-Agent": "aether-kraken/1"})
        self._nonces = RedisNonces(redis)
        self._counters = RateCounters(redis, tier, max_wait_s=max_wait_s)
        self._rest_limit = rest_limit or REST_LIMITS[tier]
        self._timeout_s = timeout_s
        self._serialize = serialize_signing
        self._clock = clock
        self.dead_man_timeout_s = dead_man_timeout_s
        self._listeners: list[UpdateListener] = []
        self._pairs: dict[Symbol, PairInfo] = {}
        self._by_altname: dict[str, PairInfo] = {}
        self._assets: dict[str, str] = {}
        self._accounts: set[AccountId] = set()
        self._delivered: set[str] = set()
        self.delivered_by: dict[str, int] = {}  # fills told to listeners, by path ("stream", "rest")
        self.executions: Any = None  # the executions streams (ws_private) following these accounts, when run
        self._cursors: dict[AccountId, int] = {}
        self.retries: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the pairs and assets (precision, minimums) from the public endpoints."""
        assets = wire.asset_altnames(await self._public("Assets"))
        self._assets = {name: ASSET_ALIASES.get(alt, alt) for name, alt in assets.items()}
        for pair in wire.asset_pairs(await self._public("AssetPairs")):
            base, quote = self._asset(pair.base), self._asset(pair.quote)
            symbol = Symbol(f"{base}/{quote}")
            spec = InstrumentSpec(
                symbol=symbol,
                base=base,
                quote=quote,
                price_increment=pair.tick_size,
                quantity_increment=Decimal(1).scaleb(-pair.lot_decimals),
                min_quantity=pair.ordermin,
                min_notional=pair.costmin,
                base_step=Decimal(1).scaleb(-pair.lot_decimals),
                quote_step=Decimal(1).scaleb(-pair.cost_decimals),
            )
            info = PairInfo(symbol, pair.altname, pair, spec)
            self._pairs[symbol] = info
            self._by_altname[pair.altname] = info
            self._by_altname[pair.name] = info

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def spec(self, symbol: Symbol) -> InstrumentSpec:
        """The trading rules of `symbol` as Kraken's AssetPairs gave them."""
        return self._pair(symbol).spec

    # --- protocol ------------------------------------------------------------------------------------------

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and final order states (from `sync()` and from submits that filled at once)."""
        self._listeners.append(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """AddOrder with `cl_ord_id`; a repeat of an open order's client id answers that order."""
        info = self._pair(request.symbol)
        validate_request(request, info.spec)
        fields = self._order_fields(request, info)
        creds = await self._credentials.get(request.account_id)
        await self._counters.trading(creds.api_key, info.altname, ADD_ORDER_COST)
        try:
            txid = wire.added_txid(await self._private(request.account_id, "AddOrder", fields, _Call.CREATE))
        except (AmbiguousOutcome, wire.KrakenWireError):
            return await self._resolve(request)
        except _Duplicate:
            found = await self.query(request.account_id, request.client_order_id)
            if found is None:
                raise AmbiguousOutcome(f"{request.client_order_id}: duplicate answered but not found") from None
            return found
        try:  # placed: from here on, a failed read leaves the order's state unknown, not "nothing happened"
            (order,) = await self._orders_by_txid(request.account_id, [txid])
            if order.filled_quantity > 0:
                await self._deliver_fills(request.account_id, {order.venue_order_id})
        except TemporaryError as exc:
            raise AmbiguousOutcome(f"{request.client_order_id}: placed as {txid}, state unknown ({exc})") from exc
        return order

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """CancelOrder by client id; a closed order answers its final state; unknown -> `unknown_order`."""
        found = await self._query_raw(account_id, client_order_id)
        if found is None:
            raise VenueRejected("unknown_order", f"no order with client id {client_order_id}")
        if _STATUSES[found.status] is not VenueOrderStatus.OPEN:
            return self._order(account_id, found)
        creds = await self._credentials.get(account_id)
        age = max(0.0, self._clock() - float(found.opentm))
        await self._counters.trading(creds.api_key, found.pair, cancel_penalty(age))
        try:
            await self._private(account_id, "CancelOrder", {"txid": found.txid}, _Call.CANCEL)
        except VenueRejected as exc:
            if exc.code != rejection_code(UNKNOWN_ORDER):
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
        """QueryOrders by `cl_ord_id`: the latest order with that client id, or None."""
        found = await self._query_raw(account_id, client_order_id)
        return None if found is None else self._order(account_id, found)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """OpenOrders of the account that carry a client id (orders placed outside the platform are skipped)."""
        found = sorted(await self._read(account_id, "OpenOrders", {}, lambda r: wire.orders(r, "open")), key=_opened)
        return [self._order(account_id, o) for o in found if o.cl_ord_id is not None]

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        """TradesHistory from the cursor's time on, paged, deduplicated by trade id, oldest first."""
        trades = await self._trades(account_id, after_sequence)
        by_txid = {o.txid: o for o in await self._orders_raw_by_txid(account_id, {t.ordertxid for t in trades})}
        fills = []
        for trade in trades:
            order = by_txid.get(trade.ordertxid)
            if order is None or order.cl_ord_id is None:
                continue
            fills.append(self._fill(account_id, order, trade))
        return fills

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """BalanceEx: total `balance`, available = balance - hold_trade."""
        found = await self._read(account_id, "BalanceEx", {}, wire.balances_ex)
        return [
            VenueBalance(account_id, Asset(self._asset(name)), total, total - hold)
            for name, (total, hold) in found.items()
        ]

    # --- reconciliation and the dead-man switch -----------------------------------------------------------

    async def sync(self, accounts: Iterable[AccountId] | None = None) -> int:
        """Tell listeners of fills not told yet and of the orders they closed; answers how many fills."""
        told = 0
        for account_id in list(accounts if accounts is not None else self._accounts):
            told += await self._deliver_fills(account_id, None)
        return told

    def accounts(self) -> frozenset[AccountId]:
        """The accounts this adapter acts for (the dead-man switch, `sync` and the executions streams cover them)."""
        return frozenset(self._accounts)

    def pair_quote(self, symbol: Symbol) -> Asset | None:
        """The quote asset of a Kraken pair known from AssetPairs, or None."""
        info = self._pairs.get(symbol)
        return None if info is None else Asset(info.spec.quote)

    async def deliver(self, update: VenueUpdate, source: str) -> bool:
        """Tell listeners of an update seen on `source`; a fill already told (by trade id) is not told again."""
        if isinstance(update, VenueFill):
            return await self._tell_fill(update, source)
        await self._notify(update)
        return True

    async def not_ready(self, account_ids: Iterable[AccountId]) -> dict[AccountId, str]:
        """Accounts whose keys are unusable, with the reason (for readiness: these accounts cannot trade here)."""
        return {AccountId(a): reason for a, reason in (await unusable_keys(self._credentials, account_ids)).items()}

    async def refresh_dead_man(self, account_id: AccountId) -> str:
        """CancelAllOrdersAfter(dead_man_timeout_s): Kraken cancels every open order unless refreshed in time."""
        timeout = {"timeout": str(self.dead_man_timeout_s)}
        return await self._read(account_id, "CancelAllOrdersAfter", timeout, wire.trigger_time)

    async def tick(self, healthy: Callable[[], bool]) -> None:
        """One round of `maintain`: while healthy, refresh every account's switch; then sync."""
        for account_id in sorted(self._accounts):
            if healthy():
                await self.refresh_dead_man(account_id)
        await self.sync()

    async def maintain(
        self,
        healthy: Callable[[], bool],
        stop: asyncio.Event,
        interval_s: float = 15.0,
        *,
        stream_up: Callable[[], bool] | None = None,
        backstop_interval_s: float | None = None,
    ) -> None:
        """Refresh the dead-man switch while `healthy()` and reconcile, every `interval_s` (every
        `backstop_interval_s` while `stream_up()` says the executions stream is down), until `stop`."""
        while not stop.is_set():
            try:
                await self.tick(healthy)
            except (TemporaryError, AmbiguousOutcome, VenueRejected) as exc:
                log.warning("kraken_maintain_failed", error=type(exc).__name__, detail=str(exc))
            await _pause(stop, interval_s, stream_up, backstop_interval_s)

    async def websockets_token(self, account_id: AccountId) -> tuple[str, int]:
        """A token for the private WebSocket v2 (`executions`), with its lifetime in seconds."""
        return await self._read(account_id, "GetWebSocketsToken", {}, wire.websockets_token)

    # --- internals -----------------------------------------------------------------------------------------

    def _pair(self, symbol: Symbol) -> PairInfo:
        info = self._pairs.get(symbol)
        if info is None:
            raise VenueRejected("unknown_instrument", f"{symbol} is not a Kraken pair")
        return info

    def _asset(self, name: str) -> str:
        return self._assets.get(name, ASSET_ALIASES.get(name, name))

    def _order_fields(self, request: VenueOrderRequest, info: PairInfo) -> dict[str, str]:
        fields = {
            "ordertype": _ORDER_TYPES[request.type],
            "type": request.side.value,
            "volume": _plain(request.quantity),
            "pair": info.altname,
            "cl_ord_id": request.client_order_id,
        }
        if request.type is OrderType.STOP_LOSS_LIMIT:
            if request.trigger_price is None or request.limit_price is None:
                raise VenueRejected("invalid_order", "a stop-loss-limit order needs a trigger and a limit price")
            fields["price"], fields["price2"] = _plain(request.trigger_price), _plain(request.limit_price)
        elif request.trigger_price is not None:
            fields["price"] = _plain(request.trigger_price)
        elif request.limit_price is not None:
            fields["price"] = _plain(request.limit_price)
        if request.time_in_force is TimeInForce.FOK:
            raise VenueRejected("invalid_order", "Kraken spot has no fill-or-kill orders")
        if request.time_in_force is TimeInForce.IOC:
            fields["timeinforce"] = "IOC"
        if request.post_only:
            fields["oflags"] = "post"
        return fields

    async def _resolve(self, request: VenueOrderRequest) -> VenueOrder:
        """After an AddOrder whose answer was lost: the order with this client id, or `AmbiguousOutcome`."""
        self.retries["resolve"] = self.retries.get("resolve", 0) + 1
        try:
            found = await self.query(request.account_id, request.client_order_id)
        except (TemporaryError, AmbiguousOutcome) as exc:
            raise AmbiguousOutcome(f"{request.client_order_id}: outcome unknown ({exc})") from exc
        if found is None:
            raise AmbiguousOutcome(f"{request.client_order_id}: not found after an unanswered AddOrder")
        if found.filled_quantity > 0:
            await self._deliver_fills(request.account_id, {found.venue_order_id})
        return found

    async def _query_raw(self, account_id: AccountId, client_order_id: ClientOrderId) -> wire.KrakenOrder | None:
        answer = await self._read(account_id, "QueryOrders", {"cl_ord_id": client_order_id}, wire.orders)
        found = [o for o in answer if o.cl_ord_id == client_order_id]
        return max(found, key=lambda o: o.opentm) if found else None

    async def _orders_raw_by_txid(self, account_id: AccountId, txids: Iterable[str]) -> list[wire.KrakenOrder]:
        wanted = sorted(txids)
        found: list[wire.KrakenOrder] = []
        for start in range(0, len(wanted), QUERY_BATCH):
            batch = ",".join(wanted[start : start + QUERY_BATCH])
            found += await self._read(account_id, "QueryOrders", {"txid": batch}, wire.orders)
        return found

    async def _orders_by_txid(self, account_id: AccountId, txids: Sequence[str]) -> list[VenueOrder]:
        found = {o.txid: o for o in await self._orders_raw_by_txid(account_id, txids)}
        missing = [t for t in txids if t not in found]
        if missing:
            raise AmbiguousOutcome(f"orders {missing} accepted but not found")
        return [self._order(account_id, found[t]) for t in txids]

    async def _trades(self, account_id: AccountId, after_sequence: int) -> list[wire.KrakenTrade]:
        start_s = Decimal(after_sequence // 1_000_000) / 1000
        seen: dict[str, wire.KrakenTrade] = {}
        offset = 0
        while True:
            fields = {"ofs": str(offset)}
            if after_sequence > 0:
                fields["start"] = _plain(start_s - 1)
            page, count = await self._read(account_id, "TradesHistory", fields, wire.trades)
            for trade in page:
                seen.setdefault(trade.txid, trade)
            offset += len(page)
            if not page or offset >= count:
                break
        trades = [t for t in seen.values() if fill_sequence(t) > after_sequence]
        return sorted(trades, key=fill_sequence)

    async def _deliver_fills(self, account_id: AccountId, orders: set[VenueOrderId] | None) -> int:
        fills = [
            f
            for f in await self.fills_since(account_id, self._cursors.get(account_id, 0) if orders is None else 0)
            if f.trade_id not in self._delivered and (orders is None or f.venue_order_id in orders)
        ]
        if not fills:
            return 0
        for fill in fills:
            await self._tell_fill(fill, "rest")
        if orders is None:
            self._cursors[account_id] = max(self._cursors.get(account_id, 0), max(f.sequence for f in fills))
            touched = sorted({f.venue_order_id for f in fills})
            for order in await self._orders_by_txid(account_id, touched):
                if order.status is not VenueOrderStatus.OPEN:
                    await self._notify(order)
        return len(fills)

    async def _tell_fill(self, fill: VenueFill, source: str) -> bool:
        """Tell listeners of `fill` unless its trade id was told already (checked and marked without awaiting)."""
        if fill.trade_id in self._delivered:
            return False
        self._delivered.add(fill.trade_id)
        self.delivered_by[source] = self.delivered_by.get(source, 0) + 1
        await self._notify(fill)
        return True

    async def _notify(self, update: VenueUpdate) -> None:
        for listener in list(self._listeners):
            try:
                await listener(update)
            except Exception:  # a listener's failure loses nothing: reconciliation catches up
                log.exception("kraken_listener_failed", kind=type(update).__name__)

    def _order(self, account_id: AccountId, order: wire.KrakenOrder) -> VenueOrder:
        info = self._by_altname.get(order.pair)
        symbol = info.symbol if info is not None else Symbol(order.pair)
        status = _STATUSES[order.status]
        if status is VenueOrderStatus.FILLED and order.volume_exec < order.volume:
            status = VenueOrderStatus.CANCELED  # closed with a remainder that could not execute
        stamp = order.closetm if order.closetm is not None else order.opentm
        return VenueOrder(
            account_id=account_id,
            client_order_id=ClientOrderId(order.cl_ord_id or order.txid),
            venue_order_id=VenueOrderId(order.txid),
            symbol=symbol,
            side=OrderSide(order.side),
            type=_ORDER_TYPES_BACK.get(order.ordertype, OrderType.LIMIT),
            quantity=order.volume,
            filled_quantity=order.volume_exec,
            status=status,
            reason=order.reason,
            updated_at=datetime.fromtimestamp(float(stamp), UTC),
        )

    def _fill(self, account_id: AccountId, order: wire.KrakenOrder, trade: wire.KrakenTrade) -> VenueFill:
        info = self._by_altname.get(trade.pair)
        symbol = info.symbol if info is not None else Symbol(trade.pair)
        quote = info.spec.quote if info is not None else "USD"
        return VenueFill(
            account_id=account_id,
            client_order_id=ClientOrderId(order.cl_ord_id or order.txid),
            venue_order_id=VenueOrderId(order.txid),
            trade_id=TradeId(trade.txid),
            symbol=symbol,
            side=OrderSide(trade.side),
            quantity=trade.volume,
            price=trade.price,
            fee=trade.fee,
            fee_asset=Asset(quote),
            liquidity=Liquidity.MAKER if trade.maker else Liquidity.TAKER,
            filled_at=datetime.fromtimestamp(float(trade.time), UTC),
            sequence=fill_sequence(trade),
        )

    async def _public(self, method: str) -> Any:
        try:
            response = await self._http.get(f"/0/public/{method}")
        except httpx.HTTPError as exc:
            raise TemporaryError(f"kraken {method}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise TemporaryError(f"kraken {method}: HTTP {response.status_code}")
        errors, result = wire.envelope(response.content)
        if errors:
            raise VenueOperationalError(f"kraken {method}: {errors}")
        return result

    async def _read(
        self, account_id: AccountId, method: str, fields: Mapping[str, str], parse: Callable[[Any], _T]
    ) -> _T:
        """A read: its answer parsed; a malformed one is `TemporaryError` (nothing happened; ask again)."""
        result = await self._private(account_id, method, fields, _Call.READ)
        try:
            return parse(result)
        except wire.KrakenWireError as exc:
            raise TemporaryError(f"kraken {method}: {exc}") from exc

    async def _private(self, account_id: AccountId, method: str, fields: Mapping[str, str], call: str) -> Any:
        """Sign and send one private call; reads and cancels retry what Kraken says did nothing."""
        creds = await self._credentials.get(account_id)
        self._accounts.add(account_id)  # an account we act for: `sync` and the dead-man switch cover it
        attempts = 0
        while True:
            attempts += 1
            if method not in ("AddOrder", "CancelOrder"):
                await self._counters.acquire(f"aether:kraken:rest:{creds.api_key}", rest_cost(method), self._rest_limit)
            errors, result = await self._send(creds.api_key, creds.api_secret, method, fields, call)
            if not errors:
                return result
            kind = self._refusal(account_id, method, errors, call, retry=attempts < 4)
            self.retries[kind.value] = self.retries.get(kind.value, 0) + 1
            if kind is ErrorKind.RATE_LIMITED:
                await self._wait_out(creds.api_key)

    def _refusal(self, account_id: AccountId, method: str, errors: list[str], call: str, *, retry: bool) -> ErrorKind:
        """Raise the typed error for Kraken's `errors`, or answer the kind of refusal a retry may overcome."""
        kind = error_kind(errors[0])
        message = f"kraken {method}: {', '.join(errors)}"
        if kind is ErrorKind.OPERATIONAL:
            forget = getattr(self._credentials, "forget", None)
            if forget is not None:
                forget(account_id)
            raise VenueOperationalError(message)
        if kind is ErrorKind.DUPLICATE and call == _Call.CREATE:
            raise _Duplicate(message)
        if kind is ErrorKind.UNAVAILABLE:
            raise TemporaryError(message) if call == _Call.READ else AmbiguousOutcome(message)
        if call != _Call.CREATE and kind in (ErrorKind.RATE_LIMITED, ErrorKind.NONCE):
            if retry:
                return kind
            raise TemporaryError(message)
        raise VenueRejected(rejection_code(errors[0]), message)

    async def _wait_out(self, api_key: str) -> None:
        """Kraken said the counter is full: fill ours to its maximum so that the next call waits its decay."""
        key = f"aether:kraken:rest:{api_key}"
        try:
            now = await _redis_now(self._redis)
            await self._redis.hset(key, mapping={"v": str(self._rest_limit.maximum), "t": str(now)})
        except RedisError as exc:
            raise TemporaryError(f"rate counter unavailable: {type(exc).__name__}") from exc

    @contextlib.asynccontextmanager
    async def _signing(self, api_key: str, method: str) -> AsyncIterator[None]:
        """Hold the key's signing lock from taking a nonce until the answer: nonces arrive in order."""
        if not self._serialize:
            yield
            return
        lock = self._redis.lock(
            f"aether:kraken:signing:{api_key}", timeout=self._timeout_s + 5, sleep=0.002, blocking_timeout=60
        )
        try:
            acquired = await lock.acquire()
        except (RedisError, LockError) as exc:
            raise TemporaryError(f"kraken {method}: signing lock unavailable ({type(exc).__name__})") from exc
        if not acquired:
            raise TemporaryError(f"kraken {method}: signing lock not acquired")
        try:
            yield
        finally:
            try:
                await lock.release()
            except (RedisError, LockError):
                log.warning("kraken_signing_lock_release_failed", method=method)

    async def _send(
        self, api_key: str, secret: str, method: str, fields: Mapping[str, str], call: str
    ) -> tuple[list[str], Any]:
        path = f"/0/private/{method}"
        async with self._signing(api_key, method):
            nonce = str(await self._nonces.next(api_key))
            postdata = encode_payload({"nonce": nonce, **fields})
            headers = {
                "API-Key": api_key,
                "API-Sign": api_sign(path, nonce, postdata, secret),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            try:
                response = await self._http.post(path, content=postdata, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise TemporaryError(f"kraken {method}: not sent ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:  # sent: the venue may have acted
                if call == _Call.READ:
                    raise TemporaryError(f"kraken {method}: {type(exc).__name__}") from exc
                raise AmbiguousOutcome(f"kraken {method}: no answer ({type(exc).__name__})") from exc
        return _answer(response, method, call)


def _answer(response: httpx.Response, method: str, call: str) -> tuple[list[str], Any]:
    """(errors, result) of an answer; a 5xx or an unreadable body is temporary (reads) or ambiguous (writes)."""
    if response.status_code == 429:
        return [TOO_MANY_REQUESTS], None
    problem: str | None = None
    if response.status_code >= 500:
        problem = f"HTTP {response.status_code}"
    else:
        try:
            return wire.envelope(response.content)
        except wire.KrakenWireError as exc:
            problem = f"unreadable answer ({exc})"
    if call == _Call.READ:
        raise TemporaryError(f"kraken {method}: {problem}")
    raise AmbiguousOutcome(f"kraken {method}: {problem}")


class _Duplicate(Exception):
    """AddOrder refused: an open order already has this client id."""


async def _pause(
    stop: asyncio.Event, interval_s: float, stream_up: Callable[[], bool] | None, backstop_s: float | None
) -> None:
    """Wait `interval_s`, or only until a `backstop_s` step finds the stream down (then the sync runs at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + interval_s
    step = interval_s if stream_up is None or backstop_s is None else min(interval_s, backstop_s)
    while not stop.is_set():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=min(step, remaining))
        if stream_up is not None and not stream_up():
            return


def _opened(order: wire.KrakenOrder) -> Decimal:
    return order.opentm


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


async def _redis_now(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1_000_000
