"""The live strategy worker: the backtester's `Strategy` classes, run against the platform.

Market data comes from the market-data topics, the account's order events from `oms.order-events.v1`; the strategy's
`submit` / `cancel` become `SubmitOrder` / `CancelOrder` commands on `oms.commands.v1` with deterministic client order
ids (`<prefix><strategy>-<n>`, the backtester's `<strategy>-<n>` behind a per-run prefix). Books are kept by a
`MatchingEngine` with no orders (the same book rules as the venue and the backtester), bars are built from prints at
interval boundaries, and positions and balances are the initial balances plus the fills the OMS reported.

Hooks are called only from `StrategyWorker` methods, one at a time: `run_live` calls them as records arrive;
`aether.parity` calls them in lockstep with the venue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.backtest.bars import MICROSECOND, BarBuilder, from_us, to_us
from shared.backtest.strategy import Fill, OrderUpdate, Strategy
from shared.contracts.base import ContractViolation, Message
from shared.contracts.orders import (
    CancelOrder,
    CommandRejected,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderCreate,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
)
from shared.contracts.registry import new_envelope, parse_message
from shared.domain.book import MarketDataError, OrderBook
from shared.domain.matching import MatchingEngine
from shared.domain.money import InstrumentSpec
from shared.domain.types import OrderSide, OrderType, TimeInForce
from shared.events.envelope import HEADER_AUTHORIZATION, Envelope, MessageDecodeError
from shared.events.producer import EventProducer, OutgoingMessage
from shared.events.topics import OMS_COMMANDS, OMS_ORDER_EVENTS
from shared.marketdata import BookSnapshot, MarketData, Trade, decode_marketdata
from shared.marketdata import MarketDataError as MessageError

PRODUCER = "strategy"
ZERO = Decimal(0)
FINAL = frozenset({"rejected", "denied", "canceled", "filled"})
TokenSource = Callable[[], Awaitable[str]]


class WorkerError(RuntimeError):
    """The OMS refused a command of the worker (CommandRejected): the strategy's view is no longer the account's."""


@dataclass(slots=True)
class _Order:
    symbol: str
    side: OrderSide
    status: str = "submitted"
    cancel_pending: bool = False


class LiveContext:
    """The worker's `StrategyContext`: commands are queued here and sent by `StrategyWorker.flush`."""

    def __init__(self, worker: StrategyWorker) -> None:
        self._worker = worker

    @property
    def now(self) -> datetime:
        return from_us(self._worker.now_us)

    def submit(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        *,
        type: OrderType = OrderType.MARKET,
        limit_price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
    ) -> str:
        worker = self._worker
        worker.spec(symbol)
        worker.numbers += 1
        order_id = f"{worker.prefix}{worker.strategy.name}-{worker.numbers}"
        order = OrderCreate(
            account_id=worker.account_id,
            client_order_id=order_id,
            symbol=symbol,
            side=side,
            type=type,
            quantity=quantity,
            limit_price=limit_price,
            trigger_price=trigger_price,
            time_in_force=time_in_force,
            post_only=post_only,
        )
        worker.orders[order_id] = _Order(symbol, side)
        worker.outbox.append(SubmitOrder(order=order))
        return order_id

    def cancel(self, order_id: str) -> None:
        worker = self._worker
        order = worker.orders.get(order_id)
        if order is None or order.status in FINAL:
            return
        order.cancel_pending = True
        worker.outbox.append(CancelOrder(account_id=worker.account_id, client_order_id=order_id))

    def position(self, symbol: str) -> Decimal:
        return self.balance(self._worker.spec(symbol).base)

    def balance(self, asset: str) -> Decimal:
        return self._worker.balances.get(asset, ZERO)

    def book(self, symbol: str) -> OrderBook | None:
        market = self._worker.markets.get(symbol)
        return None if market is None or market.book.updated_at is None else market.book


@dataclass
class StrategyWorker:
    """One strategy on one account: feed it market data and order events, `flush` the commands it queued."""

    strategy: Strategy
    account_id: str
    specs: Mapping[str, InstrumentSpec]
    balances: dict[str, Decimal]
    prefix: str = ""
    bar_interval: timedelta | None = None
    now_us: int = 0
    numbers: int = 0
    orders: dict[str, _Order] = field(default_factory=dict)
    outbox: deque[Message] = field(default_factory=deque)
    fills: list[Fill] = field(default_factory=list)
    markets: dict[str, MatchingEngine] = field(default_factory=dict)
    _bars: dict[str, BarBuilder] = field(default_factory=dict)
    _started: bool = False

    def __post_init__(self) -> None:
        self.ctx = LiveContext(self)

    def spec(self, symbol: str) -> InstrumentSpec:
        """The instrument rules of `symbol` (KeyError names an instrument the worker has none for)."""
        spec = self.specs.get(symbol)
        if spec is None:
            raise KeyError(f"symbol {symbol!r}: no instrument spec")
        return spec

    @property
    def pending(self) -> list[str]:
        """Orders whose submit or cancel the OMS has not answered yet."""
        return [
            oid
            for oid, o in self.orders.items()
            if o.status == "submitted" or (o.cancel_pending and o.status not in FINAL)
        ]

    def start(self, at: datetime) -> None:
        """Call `on_start` once, at `at`."""
        if not self._started:
            self._started = True
            self.now_us = to_us(at)
            self.strategy.on_start(self.ctx)

    def advance_to(self, at: datetime) -> None:
        """Close every bar that ends at or before `at` (the strategy sees a bar at its end, never earlier)."""
        at_us = to_us(at)
        if self.bar_interval is None:
            return
        for symbol in sorted(self._bars):
            builder = self._bars[symbol]
            end = builder.start + builder.interval_us
            built = builder.close_bar(builder.start) if end <= at_us else None
            if built is not None:
                self.now_us = end
                self.strategy.on_bar(self.ctx, built)

    def on_market(self, message: MarketData) -> None:
        """Apply one market-data message to the worker's book and call the strategy's hook."""
        self.advance_to(message.timestamp)
        self.now_us = to_us(message.timestamp)
        market = self.markets.get(message.symbol)
        if market is None:
            self.spec(message.symbol)
            market = self.markets[message.symbol] = MatchingEngine(message.symbol)
        if isinstance(message, Trade):
            market.on_trade(message.price, message.qty, message.side, message.timestamp)
            self._build_bar(message)
            self.strategy.on_trade(self.ctx, message)
            return
        bids = [(level.price, level.qty) for level in message.bids]
        asks = [(level.price, level.qty) for level in message.asks]
        try:
            if isinstance(message, BookSnapshot):
                market.on_book_snapshot(bids, asks, message.timestamp)
            elif market.book.updated_at is None:
                return  # deltas wait for a first snapshot, as in the venue
            else:
                market.on_book_update(bids, asks, message.timestamp)
        except MarketDataError:
            return  # the book is kept, as in the venue
        self.strategy.on_book(self.ctx, market.book)

    def _build_bar(self, trade: Trade) -> None:
        if self.bar_interval is None:
            return
        builder = self._bars.get(trade.symbol)
        if builder is None:
            builder = self._bars[trade.symbol] = BarBuilder(trade.symbol, self.bar_interval // MICROSECOND)
        builder.add(self.now_us, trade.price, trade.qty)

    def on_order_event(self, envelope: Envelope) -> bool:
        """Apply one record of `oms.order-events.v1`; True when it concerned this worker's orders."""
        try:
            message = parse_message(envelope)
        except ContractViolation:
            return False
        if isinstance(message, CommandRejected):
            if envelope.aggregate_id == self.account_id:
                raise WorkerError(f"the OMS refused a {message.command_type}: {message.code}: {message.message}")
            return False
        account = getattr(message, "account_id", None)
        client_order_id = getattr(message, "client_order_id", None)
        if account != self.account_id or client_order_id not in self.orders:
            return False
        self._apply(client_order_id, self.orders[client_order_id], message)
        return True

    def _apply(self, order_id: str, order: _Order, message: object) -> None:
        at = getattr(message, "occurred_at", None) or from_us(self.now_us)
        if isinstance(message, OrderFilled):
            self._fill(order_id, order, message)
            if message.is_final:
                self._tell(order_id, order, "filled", at, None)
        elif isinstance(message, OrderAccepted):
            if order.status == "submitted":
                self._tell(order_id, order, "accepted", at, None)
        elif isinstance(message, OrderRejected):
            self._tell(order_id, order, "rejected", at, message.reason)
        elif isinstance(message, OrderDenied):
            self._tell(order_id, order, "denied", at, message.reason)
        elif isinstance(message, OrderCanceled | OrderExpired):
            self._tell(order_id, order, "canceled", at, getattr(message, "reason", None))
        elif isinstance(message, OrderCancelRejected):
            order.cancel_pending = False
            self._tell(order_id, order, "cancel_rejected", at, message.reason, keep=True)

    def _fill(self, order_id: str, order: _Order, message: OrderFilled) -> None:
        spec = self.spec(order.symbol)
        quantity, price, fee = Decimal(message.quantity), Decimal(message.price), Decimal(message.fee)
        cost = spec.trade_cost(quantity, price)
        sign = 1 if order.side is OrderSide.BUY else -1
        self.balances[spec.base] = self.balances.get(spec.base, ZERO) + sign * quantity
        self.balances[spec.quote] = self.balances.get(spec.quote, ZERO) - sign * cost - fee
        if order.status == "submitted":
            order.status = "accepted"
        fill = Fill(
            order_id,
            message.trade_id,
            order.symbol,
            order.side,
            quantity,
            price,
            fee,
            message.liquidity,
            message.occurred_at,
        )
        self.fills.append(fill)
        self.strategy.on_fill(self.ctx, fill)

    def _tell(
        self, order_id: str, order: _Order, status: str, at: datetime, reason: str | None, *, keep: bool = False
    ) -> None:
        if not keep:
            order.status = status
        update = OrderUpdate(order_id, order.symbol, status, at, None, reason)
        self.strategy.on_order(self.ctx, update)

    def take_commands(self) -> list[tuple[Message, str]]:
        """The commands the strategy queued, oldest first, with the client order id each names."""
        taken: list[tuple[Message, str]] = []
        while self.outbox:
            command = self.outbox.popleft()
            name = command.order.client_order_id if isinstance(command, SubmitOrder) else str(command.client_order_id)  # type: ignore[attr-defined]
            taken.append((command, name))
        return taken


class CommandSender:
    """Publishes a worker's commands on `oms.commands.v1`, keyed by account (in order), with a service token."""

    def __init__(self, producer: EventProducer, token: TokenSource, account_id: str) -> None:
        self._producer = producer
        self._token = token
        self._account_id = account_id

    async def send(self, commands: Iterable[tuple[Message, str]]) -> int:
        """Publish `commands` in order; returns how many."""
        messages = []
        authorization = (HEADER_AUTHORIZATION, f"Bearer {await self._token()}".encode())
        for command, _ in commands:
            envelope = new_envelope(command, producer=PRODUCER, aggregate_id=self._account_id)
            messages.append(
                OutgoingMessage(
                    topic=OMS_COMMANDS,
                    key=self._account_id,
                    value=envelope.to_bytes(),
                    headers=(*envelope.kafka_headers(), authorization),
                )
            )
        if messages:
            await self._producer.publish_batch(messages)
        return len(messages)


async def latest_consumer(bootstrap: str, topics: Iterable[str], client_id: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer without a group at the end of `topics`, its positions resolved (nothing published later is missed)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        metadata_max_age_ms=5_000,
        **options,
    )
    await consumer.start()
    try:
        for _ in range(200):
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        else:
            raise TimeoutError(f"no partitions of {sorted(topics)} assigned")
        for partition in consumer.assignment():
            await consumer.position(partition)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


def decode_record(value: bytes | None) -> Envelope | None:
    """The envelope of a record (None for one that is not an envelope)."""
    try:
        return Envelope.from_bytes(value)
    except MessageDecodeError:
        return None


def market_message(envelope: Envelope) -> MarketData | None:
    """The market-data message in `envelope` (None for another type)."""
    try:
        return decode_marketdata(envelope)
    except MessageError:  # not market data: skipped, as the venue's feed does
        return None


async def run_live(
    worker: StrategyWorker,
    sender: CommandSender,
    *,
    bootstrap: str,
    market_topics: Iterable[str],
    stop: asyncio.Event,
) -> None:
    """Run the worker on the live topics until `stop` is set (market data and order events as they arrive)."""
    consumer = await latest_consumer(bootstrap, [*market_topics, OMS_ORDER_EVENTS], f"strategy-{worker.account_id}")
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    envelope = decode_record(record.value)
                    if envelope is None:
                        continue
                    if record.topic == OMS_ORDER_EVENTS:
                        worker.on_order_event(envelope)
                    else:
                        message = market_message(envelope)
                        if message is not None:
                            worker.start(message.timestamp)
                            worker.on_market(message)
                    await sender.send(worker.take_commands())
    finally:
        await consumer.stop()


__all__ = [
    "CommandSender",
    "LiveContext",
    "StrategyWorker",
    "WorkerError",
    "latest_consumer",
    "run_live",
]
