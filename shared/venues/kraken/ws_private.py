"""Kraken WebSocket v2 private `executions` (https://docs.kraken.com/api/docs/websocket-v2/executions): each Kraken
account's fills and order states, told to the adapter's listeners (the OMS's venue-update path) as they happen.

One connection per account to the authenticated endpoint (https://docs.kraken.com/api/docs/guides/spot-ws-auth):
before every connection a fresh token from `GetWebSocketsToken` (signed REST through `KrakenVenue`; a token must be
used within its lifetime and stays valid for the connection it opened), then `subscribe` `executions` with
`snap_orders` and `snap_trades` (the last 50 fills: what happened while disconnected is told on reconnecting).
`trade` events become `VenueFill`s (trade id = `exec_id`, fees from `fees`, maker/taker from `liquidity_ind`);
`filled` / `canceled` / `expired` become `VenueOrder`s. Both go through `KrakenVenue.deliver`, which tells a trade
id once whichever of the stream and the REST sync saw it first. Malformed frames, refused subscriptions (an expired
token), silence beyond `idle_timeout_s` (Kraken sends a heartbeat every second) and closed connections are logged,
counted and recovered from by reconnecting after an exponential backoff with full jitter. While an account's stream
is not subscribed, `up()` is False and the OMS runs the REST sync more often (the backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TradeId,
    VenueOrderId,
)
from shared.observability.logging import get_logger
from shared.observability.metrics import counter
from shared.venues.backoff import full_jitter_s
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueFill,
    VenueOperationalError,
    VenueOrder,
    VenueOrderStatus,
    VenueRejected,
)
from shared.venues.kraken.adapter import KrakenVenue, sequence_at
from shared.venues.kraken.ws_wire import (
    ExecutionRecord,
    ExecutionsMessage,
    MethodResponse,
    Unknown,
    WireError,
    decode_frame,
)

log = get_logger(__name__)

AUTH_URL = "wss://ws-auth.kraken.com/v2"
CHANNEL = "executions"
FAULTS = counter(
    "aether_kraken_executions_faults_total",
    "Kraken executions-stream faults recovered from, by kind (malformed, unknown, invalid_execution, "
    "subscribe_refused, token_unavailable, idle_timeout, disconnect, duplicate)",
    ["kind"],
)
FINAL_STATES = {
    "filled": VenueOrderStatus.FILLED,
    "canceled": VenueOrderStatus.CANCELED,
    "expired": VenueOrderStatus.EXPIRED,
}
_ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop-loss": OrderType.STOP_LOSS,
    "take-profit": OrderType.TAKE_PROFIT,
    "stop-loss-limit": OrderType.STOP_LOSS_LIMIT,
}


_ORDER_FIELDS = ("cl_ord_id", "order_userref", "symbol", "side", "order_type", "order_qty", "cum_qty", "order_status")


class SubscriptionRefused(Exception):
    """Kraken refused the subscription (an expired or unknown token): end this session, connect with a new token."""


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Connection behaviour; the defaults suit the real venue."""

    url: str = AUTH_URL
    idle_timeout_s: float = 10.0
    open_timeout_s: float = 10.0
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass
class StreamStats:
    """What one account's stream has seen (the fault counts go to Prometheus too)."""

    connections: int = 0
    tokens: int = 0
    fills: int = 0
    orders: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        FAULTS.labels(kind).inc()


class KrakenExecutions:
    """The `executions` stream of one account, until stopped; never raises for what the venue sends."""

    def __init__(
        self,
        venue: KrakenVenue,
        account_id: AccountId,
        options: StreamOptions | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.account_id = account_id
        self.options = options or StreamOptions()
        self.rng = rng or random.Random()  # noqa: S311  # reconnect jitter, not a secret
        self.stats = StreamStats()
        self._subscribed = False
        self._session_subscribed = False
        self._orders: dict[str, ExecutionRecord] = {}  # order id -> what its events said, merged
        self._req_id = 0

    def up(self) -> bool:
        """Connected and subscribed: fills arrive as they happen."""
        return self._subscribed

    def backoff_s(self, failures: int) -> float:
        """The delay before reconnect number `failures` (full jitter, shared.venues.backoff)."""
        return full_jitter_s(self.rng, failures, self.options.initial_backoff_s, self.options.max_backoff_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch a token, connect, stream, reconnect with backoff, until `stop` is set."""
        failures = 0
        while not stop.is_set():
            healthy = await self._connection(stop)
            failures = 0 if healthy else failures + 1
            if stop.is_set():
                break
            delay = self.backoff_s(max(failures, 1))
            log.info("kraken_executions_reconnecting", account_id=self.account_id, delay_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connection(self, stop: asyncio.Event) -> bool:
        """One connection with a fresh token; True when it got subscribed."""
        self._subscribed = self._session_subscribed = False
        self._orders.clear()  # the snapshot lists the open orders again
        try:
            token, _expires_s = await self.venue.websockets_token(self.account_id)
        except (TemporaryError, AmbiguousOutcome, VenueRejected, VenueOperationalError) as exc:
            self.stats.count("token_unavailable")  # an account whose keys are unusable stays here, not ready
            log.warning("kraken_executions_no_token", account_id=self.account_id, error=type(exc).__name__)
            return False
        self.stats.tokens += 1
        try:
            async with connect(
                self.options.url, open_timeout=self.options.open_timeout_s, max_size=2**22, ping_interval=20
            ) as ws:
                self.stats.connections += 1
                await self._send(
                    ws,
                    {
                        "method": "subscribe",
                        "params": {"channel": CHANNEL, "token": token, "snap_orders": True, "snap_trades": True},
                    },
                )
                await self._session(ws, stop)
        except SubscriptionRefused:
            pass  # refused: counted where it was seen; not a healthy session
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
            self.stats.count("disconnect")
            log.warning("kraken_executions_disconnected", account_id=self.account_id, error_type=type(exc).__name__)
        finally:
            self._subscribed = False
        return self._session_subscribed  # a session that got subscribed resets the backoff, however it ended

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> None:
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
                        break
                    self.stats.count("idle_timeout")
                    log.warning("kraken_executions_idle_timeout", account_id=self.account_id)
                    break
                await self._frame(receiver.result())
        finally:
            stopper.cancel()

    async def _send(self, ws: ClientConnection, request: dict[str, Any]) -> None:
        self._req_id += 1
        await ws.send(json.dumps({**request, "req_id": self._req_id}))

    async def _frame(self, frame: str | bytes) -> None:
        try:
            message = decode_frame(frame)
        except WireError as exc:
            self.stats.count("malformed")
            log.warning("kraken_executions_malformed_frame", account_id=self.account_id, error=str(exc)[:200])
            return
        if isinstance(message, ExecutionsMessage):
            for record in message.executions:
                await self._execution(record)
        elif isinstance(message, MethodResponse):
            if message.method != "subscribe" or message.channel not in (CHANNEL, None):
                return
            if message.success:
                self._subscribed = self._session_subscribed = True
                log.info("kraken_executions_subscribed", account_id=self.account_id)
            else:  # an expired or unknown token: a new token on the next connection
                self.stats.count("subscribe_refused")
                log.error("kraken_executions_refused", account_id=self.account_id, error=message.error)
                raise SubscriptionRefused
        elif isinstance(message, Unknown):
            self.stats.count("unknown")

    async def _execution(self, record: ExecutionRecord) -> None:
        self._remember(record)
        try:
            if record.exec_type == "trade":
                fill = self._fill(record)
                if fill is None:
                    return  # an order placed outside the platform (no client id): the REST sync skips it too
                if await self.venue.deliver(fill, "stream"):
                    self.stats.fills += 1
                else:
                    self.stats.count("duplicate")
            elif record.exec_type in FINAL_STATES:
                order = await self._final(record)
                if order is not None:
                    self.stats.orders += 1
                    await self.venue.deliver(order, "stream")
                self._orders.pop(record.order_id, None)
        except (ValueError, ArithmeticError) as exc:
            self.stats.count("invalid_execution")
            log.warning("kraken_executions_invalid", account_id=self.account_id, error=str(exc)[:200])

    def _remember(self, record: ExecutionRecord) -> None:
        """Keep what the events of an open order said about it (Kraken sends only what changed, e.g. `amended`)."""
        known = self._orders.get(record.order_id)
        if known is None:
            self._orders[record.order_id] = record
            return
        changed = {name: getattr(record, name) for name in _ORDER_FIELDS if getattr(record, name) is not None}
        self._orders[record.order_id] = replace(known, **changed)

    def _client_id(self, record: ExecutionRecord) -> str | None:
        known = self._orders.get(record.order_id)
        return record.cl_ord_id or (known.cl_ord_id if known is not None else None)

    def _fill(self, record: ExecutionRecord) -> VenueFill | None:
        client_id = self._client_id(record)
        if client_id is None:
            return None
        if (  # the decoder refuses a trade without them; checked again for the type checker
            record.exec_id is None
            or record.symbol is None
            or record.side is None
            or record.trade_id is None
            or record.last_qty is None
            or record.last_price is None
        ):
            raise ValueError(f"trade {record.order_id}: execution fields missing")
        symbol = Symbol(record.symbol)
        quote = self.venue.pair_quote(symbol) or Asset(record.symbol.rpartition("/")[2])
        fee, fee_asset = _fee(record.fees, quote)
        return VenueFill(
            account_id=self.account_id,
            client_order_id=ClientOrderId(client_id),
            venue_order_id=VenueOrderId(record.order_id),
            trade_id=TradeId(record.exec_id),
            symbol=symbol,
            side=OrderSide(record.side),
            quantity=record.last_qty,
            price=record.last_price,
            fee=fee,
            fee_asset=fee_asset,
            liquidity=Liquidity.MAKER if record.liquidity_ind == "m" else Liquidity.TAKER,
            filled_at=record.timestamp,
            sequence=sequence_at(Decimal(str(record.timestamp.timestamp())), record.trade_id),
        )

    async def _final(self, record: ExecutionRecord) -> VenueOrder | None:
        """The order's final state; fields the event leaves out come from earlier events, else a REST query."""
        known = self._orders.get(record.order_id)  # this event merged in already
        client_id = self._client_id(record)
        if client_id is None:
            return None
        if known is None or known.symbol is None or known.side is None or known.order_qty is None:
            try:
                return await self.venue.query(self.account_id, ClientOrderId(client_id))
            except (TemporaryError, AmbiguousOutcome, VenueRejected, VenueOperationalError) as exc:
                log.warning("kraken_executions_query_failed", account_id=self.account_id, error=type(exc).__name__)
                return None  # the REST sync tells the order's fills and the state they leave
        filled = record.cum_qty if record.cum_qty is not None else known.cum_qty
        return VenueOrder(
            account_id=self.account_id,
            client_order_id=ClientOrderId(client_id),
            venue_order_id=VenueOrderId(record.order_id),
            symbol=Symbol(known.symbol),
            side=OrderSide(known.side),
            type=_ORDER_TYPES.get(known.order_type or "", OrderType.LIMIT),
            quantity=known.order_qty,
            filled_quantity=filled if filled is not None else Decimal(0),
            status=FINAL_STATES[record.exec_type],
            reason=record.reason,
            updated_at=record.timestamp,
        )


def _fee(fees: tuple[tuple[str, Decimal], ...], quote: Asset) -> tuple[Decimal, Asset]:
    """The fee of a trade in one asset; fees in several assets are refused (ValueError)."""
    if not fees:
        return Decimal(0), quote
    assets = {asset for asset, _ in fees}
    if len(assets) > 1:
        raise ValueError(f"fees in several assets: {sorted(assets)}")
    return sum((qty for _, qty in fees), Decimal(0)), Asset(assets.pop())


class KrakenExecutionStreams:
    """One `KrakenExecutions` per account the adapter acts for, started as accounts appear."""

    def __init__(
        self,
        venue: KrakenVenue,
        options: StreamOptions | None = None,
        *,
        accounts: Callable[[], Iterable[AccountId]] | None = None,
        scan_s: float = 1.0,
    ) -> None:
        self.venue = venue
        self.options = options or StreamOptions()
        self.streams: dict[AccountId, KrakenExecutions] = {}
        self._accounts = accounts or venue.accounts
        self._scan_s = scan_s

    def up(self) -> bool:
        """Every started stream is subscribed (no stream started yet: nothing to miss, up)."""
        return all(stream.up() for stream in self.streams.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Start a stream for every account as it appears; until `stop`."""
        tasks: list[asyncio.Task[None]] = []
        try:
            while not stop.is_set():
                for account_id in sorted(set(self._accounts()) - self.streams.keys()):
                    stream = self.streams[account_id] = KrakenExecutions(self.venue, account_id, self.options)
                    tasks.append(asyncio.create_task(stream.run(stop), name=f"kraken-executions-{account_id}"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._scan_s)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
