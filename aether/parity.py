"""Parity: one recorded stream through paper trading (the real OMS and paper venue over Kafka, the strategy in a live
`StrategyWorker`) and through the backtester, same strategy and seed; the fills compared one by one.

The live side is made deterministic by a lockstep replay: before each recorded event the worker closes the bars that
end by then and every order it sends is answered; the event is then published on the OMS's market-data topic, and
the next step waits until the paper venue applied it (its feed wrote the latest book or trade to Redis after applying),
until every fill the venue made for the account came back through `oms.order-events.v1`, and until the worker read the
event itself from Kafka; only then does the strategy see it. The backtester runs with zero latency: an order arrives
before the next market event, as in the lockstep.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from aether.strategy_worker import (
    CommandSender,
    StrategyWorker,
    TokenSource,
    decode_record,
    latest_consumer,
    market_message,
)
from services.oms.adapters import oms_adapters
from services.oms.app import create_app as create_oms_app
from services.oms.config import OmsSettings
from shared.backtest.engine import BacktestConfig, BacktestEngine, BacktestRun, Latency
from shared.backtest.strategies import make_strategy
from shared.backtest.strategy import Fill
from shared.clock import utc_now
from shared.domain.money import InstrumentSpec
from shared.events.producer import EventProducer
from shared.events.topics import OMS_ORDER_EVENTS
from shared.marketdata import MarketData, Trade, to_envelope
from shared.venues.base import VenueFill, VenueUpdate
from shared.venues.paper import PaperVenue
from shared.venues.paper_feed import book_key, trade_key

ZERO_LATENCY = Latency(timedelta(0), timedelta(0))
ACTOR = "parity"


class ParityError(RuntimeError):
    """The live side did not get through the stream (a step not answered in time, a refused command)."""


@dataclass(frozen=True, slots=True)
class FillRow:
    """What parity compares of one fill (the order named by its backtester id `<strategy>-<n>`)."""

    order_id: str
    side: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: str

    def text(self) -> str:
        return f"{self.order_id} {self.side} {self.quantity} @ {self.price} fee {self.fee} {self.liquidity}"


def fill_rows(fills: Sequence[Fill], prefix: str = "") -> list[FillRow]:
    """The compared fields of `fills`, in order (the live prefix taken off the order ids)."""
    return [
        FillRow(
            f.order_id.removeprefix(prefix),
            f.side.value,
            f.quantity.normalize(),
            f.price.normalize(),
            f.fee.normalize(),
            f.liquidity.value,
        )
        for f in fills
    ]


def diff_fills(backtest: Sequence[FillRow], live: Sequence[FillRow]) -> list[str]:
    """One line per differing position of the two fill sequences (empty: identical, order included)."""
    lines: list[str] = []
    for number in range(max(len(backtest), len(live))):
        left = backtest[number] if number < len(backtest) else None
        right = live[number] if number < len(live) else None
        if left != right:
            lines.append(
                f"fill {number + 1}: backtest {left.text() if left else '-'} | live {right.text() if right else '-'}"
            )
    return lines


def run_backtest(
    strategy: str,
    params: Mapping[str, str],
    messages: Sequence[MarketData],
    *,
    specs: Mapping[str, InstrumentSpec],
    balances: Mapping[str, Decimal],
    seed: int,
    bar_interval: timedelta,
    account_id: str,
) -> BacktestRun:
    """The backtester's run of the stream with zero latency (an order arrives before the next market event)."""
    config = BacktestConfig(
        specs=specs,
        initial_balances=balances,
        seed=seed,
        latency=ZERO_LATENCY,
        bar_interval=bar_interval,
        account_id=account_id,
        max_gap=timedelta(days=3650),
    )
    return BacktestEngine(config, make_strategy(strategy, params)).run([list(messages)], bar_interval=bar_interval)


@asynccontextmanager
async def serving_oms(settings: OmsSettings, timeout_s: float = 60.0) -> AsyncIterator[FastAPI]:
    """The OMS (with the paper venue and its feed in this process) started, yielded once /readyz answers 200."""
    app = create_oms_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://oms") as client,
    ):
        deadline = time.monotonic() + timeout_s
        while (await client.get("/readyz")).status_code != 200:
            if time.monotonic() > deadline:
                raise ParityError(f"the OMS was not ready within {timeout_s:.0f}s")
            await asyncio.sleep(0.1)
        yield app


PHASES = ("bars", "publish", "venue", "fills", "orders")


class _PhaseClock:
    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings
        self._at = time.monotonic()

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self._timings[phase] += now - self._at
        self._at = now


class Lockstep:
    """Drives one `StrategyWorker` through a recorded stream against the OMS and paper venue, one event at a time."""

    def __init__(
        self,
        app: FastAPI,
        worker: StrategyWorker,
        sender: CommandSender,
        producer: EventProducer,
        redis: Redis,
        settings: OmsSettings,
        *,
        step_timeout_s: float = 30.0,
    ) -> None:
        adapters = oms_adapters(app.state.runtime)
        venue = adapters.venue
        if not isinstance(venue, PaperVenue):
            raise ParityError("parity needs the paper venue inside the OMS process (AETHER_PAPER_VENUE_URL unset)")
        self.app = app
        self.relay = app.state.runtime.relay
        self.orders = adapters.orders
        self.venue = venue
        self.worker = worker
        self.sender = sender
        self.producer = producer
        self.redis = redis
        self.settings = settings
        self.step_timeout_s = step_timeout_s
        self.venue_fills = 0
        self.timings: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._market: deque[tuple[uuid.UUID, MarketData]] = deque()
        venue.subscribe(self._count)

    async def _count(self, update: VenueUpdate) -> None:
        if isinstance(update, VenueFill) and update.account_id == self.worker.account_id:
            self.venue_fills += 1

    async def fund(self, balances: Mapping[str, Decimal]) -> None:
        """Deposit the initial balances at the venue and in the ledger, as the deposit route does."""
        for asset, amount in sorted(balances.items()):
            if amount > 0:
                await self.orders.deposit(self.worker.account_id, asset, amount, ACTOR, reference=uuid.uuid4().hex)

    async def run(self, messages: Sequence[MarketData], bootstrap: str) -> None:
        """Replay `messages` in lockstep."""
        topics = (self.settings.marketdata_book_topic, self.settings.marketdata_trade_topic, OMS_ORDER_EVENTS)
        self._consumer = await latest_consumer(bootstrap, topics, f"parity-{self.worker.account_id}")
        try:
            if messages:
                self.worker.start(messages[0].timestamp)
            await self._settle(None)
            for message in messages:
                await self._step(message)
        finally:
            await self._consumer.stop()

    async def _step(self, message: MarketData) -> None:
        clock = _PhaseClock(self.timings)
        self.worker.advance_to(message.timestamp)  # bars ending by now: the strategy's orders arrive first
        await self._settle(None)
        clock.lap("bars")
        event = to_envelope(message, "parity")
        trade = isinstance(message, Trade)
        topic = self.settings.marketdata_trade_topic if trade else self.settings.marketdata_book_topic
        sent_at = utc_now()
        await self.producer.send(topic, event, key=message.symbol)
        clock.lap("publish")
        await self._applied(message, sent_at)
        clock.lap("venue")
        await self._settle(event.event_id)  # the fills the event made reach the strategy before the event
        clock.lap("fills")
        event_id, received = self._market.popleft()
        if event_id != event.event_id:
            raise ParityError(f"the worker read {event_id} where {event.event_id} was published")
        self.worker.on_market(received)
        await self._settle(None)
        clock.lap("orders")

    async def _applied(self, message: MarketData, sent_at: datetime) -> None:
        """Wait until the paper venue's feed applied `message` (it writes Redis after applying a batch)."""
        deadline = time.monotonic() + self.step_timeout_s
        while True:
            if isinstance(message, Trade):
                raw = await self.redis.get(trade_key(message.symbol))
                if raw is not None and json.loads(raw)["trade_id"] == message.trade_id:
                    return
            else:
                raw = await self.redis.get(book_key(message.symbol))
                updated_at = None if raw is None else json.loads(raw).get("updated_at")
                if updated_at is not None and datetime.fromisoformat(updated_at) >= sent_at:
                    return
            if time.monotonic() > deadline:
                raise ParityError(f"the paper venue did not apply {message.TYPE} at {message.timestamp}")
            await asyncio.sleep(0.002)

    async def _settle(self, market_event: uuid.UUID | None) -> None:
        """Read order events (and the market event `market_event`) until every command is answered and every venue
        fill came back; the commands the strategy sends meanwhile are published and waited for too."""
        worker = self.worker
        deadline = time.monotonic() + self.step_timeout_s
        while True:
            await self.sender.send(worker.take_commands())
            seen = market_event is None or any(event_id == market_event for event_id, _ in self._market)
            if seen and not worker.pending and len(worker.fills) >= self.venue_fills:
                return
            if time.monotonic() > deadline:
                raise ParityError(
                    f"step not settled in {self.step_timeout_s:.0f}s: pending {worker.pending[:5]}, "
                    f"{len(worker.fills)} of {self.venue_fills} venue fills read, market event read: {seen}"
                )
            self.relay.wake()  # the OMS's outbox relay publishes the answers now, not at its next idle poll
            batches = await self._consumer.getmany(timeout_ms=50, max_records=500)
            for records in batches.values():
                for record in records:
                    envelope = decode_record(record.value)
                    if envelope is None:
                        continue
                    if record.topic == OMS_ORDER_EVENTS:
                        worker.on_order_event(envelope)
                        await self.sender.send(worker.take_commands())
                    else:
                        message = market_message(envelope)
                        if message is not None:
                            self._market.append((envelope.event_id, message))


@dataclass(frozen=True)
class ParityReport:
    """Both sides' fills and the lines where they differ."""

    backtest: list[FillRow]
    live: list[FillRow]
    differences: list[str]
    events: int
    seconds: float
    timings: dict[str, float]  # seconds of the live side by phase (publish, venue applied, settles)


async def run_parity(
    strategy: str,
    params: Mapping[str, str],
    messages: Sequence[MarketData],
    *,
    settings: OmsSettings,
    token: TokenSource,
    balances: Mapping[str, Decimal],
    seed: int,
    bar_interval: timedelta,
    account_id: str | None = None,
) -> ParityReport:
    """Run `messages` through the backtester and, in lockstep, through the OMS and paper venue; compare the fills."""
    account = account_id or f"parity-{uuid.uuid4().hex[:10]}"
    specs = {str(symbol): spec for symbol, spec in settings.instrument_specs().items()}
    backtest = run_backtest(
        strategy,
        params,
        messages,
        specs=specs,
        balances=balances,
        seed=seed,
        bar_interval=bar_interval,
        account_id=account,
    )
    prefix = f"{account}."
    worker = StrategyWorker(
        make_strategy(strategy, params),
        account_id=account,
        specs=specs,
        balances=dict(balances),
        prefix=prefix,
        bar_interval=bar_interval,
    )
    started = time.monotonic()
    producer = EventProducer(settings.kafka_bootstrap, client_id="parity")
    await producer.start()
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    try:
        async with serving_oms(settings) as app:
            lockstep = Lockstep(app, worker, CommandSender(producer, token, account), producer, redis, settings)
            await lockstep.fund(balances)
            await lockstep.run(messages, settings.kafka_bootstrap)
    finally:
        await producer.stop()
        await redis.aclose()
    left, right = fill_rows(backtest.fills), fill_rows(worker.fills, prefix)
    seconds = time.monotonic() - started
    return ParityReport(left, right, diff_fills(left, right), len(messages), seconds, dict(lockstep.timings))
