"""Building blocks of the OMS reliability tests: the paper venue with a set market, order services wired to
it, funded accounts, the real REST app, a venue wrapper that counts what crosses the OMS/venue boundary,
and both sides' orders read back.

Typical use (a module that runs the resolver, reconcile or the app uses a database of its own, since they
walk every account of their database)::

    with tests.helpers.own_database(database_url, "r7") as url:     # in a module-scoped fixture
        ...
    settings = oms_settings(url, redis_url, kafka_bootstrap, [symbol])
    async with paper_stack(settings) as stack:
        await stack.set_book(symbol, *book_levels())
        await stack.fund(account, {"USD": Decimal(100_000)})
        service = stack.service(venue=FaultyVenue(stack.counting, rng, ambiguous_rate=1.0), listen=False)

Each test trades an instrument of its own (`unique_symbol`), so that its books and the latest-book key in
Redis are never shared with another test or another run.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.oms.app import create_app
from services.oms.config import OmsSettings
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.auth.roles import Role
from shared.config import Environment
from shared.db import create_engine, sessionmaker_for
from shared.domain.book import OrderBook
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderStatus, OrderType, Symbol
from shared.events.tables import event_tables
from shared.marketdata import BookSnapshot, Level, Trade
from shared.venues.base import (
    UpdateListener,
    VenueAdapter,
    VenueBalance,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueUpdate,
)
from shared.venues.paper import PaperVenue
from shared.venues.paper_feed import book_json, book_key
from tests.helpers import eventually
from tests.kit.auth import jwt_settings, token
from tests.kit.controls import private_controls_topics, seed_defaults
from tests.reliability.oms_crash_worker import ACTOR, QUOTE, RULES

SCALE = float(os.environ.get("AETHER_RELIABILITY_SCALE", "1"))


def scaled(size: int, minimum: int = 1) -> int:
    """`size` multiplied by AETHER_RELIABILITY_SCALE (default 1), never below `minimum`."""
    return max(minimum, round(size * SCALE))


def unique_symbol(prefix: str = "R") -> str:
    """An instrument no other test or run trades (base asset `<prefix><6 hex>`, quote USD)."""
    return f"{prefix}{uuid.uuid4().hex[:6].upper()}/{QUOTE}"


def base_asset(symbol: str) -> str:
    return symbol.split("/")[0]


# --- settings -------------------------------------------------------------------------------------------


def oms_settings(
    database_url: str, redis_url: str, kafka_bootstrap: str, symbols: Sequence[str], **overrides: Any
) -> OmsSettings:
    """OMS settings for a reliability test: its instruments (BTC/USD's rules), quiet logs, the harness's JWT key."""
    values: dict[str, Any] = {
        "env": Environment.TEST,
        "database_url": SecretStr(database_url),
        "redis_url": SecretStr(redis_url),
        "kafka_bootstrap": kafka_bootstrap,
        "log_level": "WARNING",
        "instruments": dict.fromkeys(symbols, RULES),
        **jwt_settings(),
        # Controls topics of this run only (nobody publishes there: `paper_stack` seeds the defaults into the
        # OMS's copy); the platform's own topics carry other tests' states, a global HALTED included.
        **private_controls_topics(),
        # A book set once per scenario, and a clock the test moves forward: staleness is not what these measure.
        "market_data_max_age_s": 3_600.0,
    }
    values.update(overrides)
    return OmsSettings(**values)


class SteppingClock:
    """UTC wall time plus an offset the test moves forward (to age orders past `resolve_after_s` without sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


# --- venue wrappers ----------------------------------------------------------------------------------------


@dataclass
class VenueCalls:
    """What reached a venue: calls per operation, and submits/cancels per (account, client order id)."""

    operations: Counter[str] = field(default_factory=Counter)
    submits: Counter[tuple[str, str]] = field(default_factory=Counter)
    cancels: Counter[tuple[str, str]] = field(default_factory=Counter)
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)


class CountingVenue:
    """Passes everything to `inner` and counts it (put it innermost to count what really reached the venue)."""

    def __init__(self, inner: PaperVenue) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = VenueCalls()

    def subscribe(self, listener: UpdateListener) -> None:
        self.inner.subscribe(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        self.calls.operations["submit"] += 1
        self.calls.submits[(request.account_id, request.client_order_id)] += 1
        return await self.inner.submit(request)

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        self.calls.operations["cancel"] += 1
        self.calls.cancels[(account_id, client_order_id)] += 1
        return await self.inner.cancel(account_id, client_order_id)

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        self.calls.operations["query"] += 1
        self.calls.queries[(account_id, client_order_id)] += 1
        return await self.inner.query(account_id, client_order_id)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        self.calls.operations["open_orders"] += 1
        return await self.inner.open_orders(account_id)

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        self.calls.operations["fills_since"] += 1
        return await self.inner.fills_since(account_id, after_sequence)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        self.calls.operations["balances"] += 1
        return await self.inner.balances(account_id)

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Paper deposits pass through (the OMS credits paper accounts only when its venue can take them)."""
        self.calls.operations["deposit"] += 1
        return await self.inner.deposit(account_id, asset, amount, reference)


def venue_request(body: OrderCreate) -> VenueOrderRequest:
    """What the OMS sends to the venue for this order body."""
    return VenueOrderRequest(
        account_id=AccountId(body.account_id),
        client_order_id=ClientOrderId(body.client_order_id),
        symbol=Symbol(body.symbol),
        side=body.side,
        type=body.type,
        quantity=body.quantity,
        limit_price=body.limit_price,
        trigger_price=body.trigger_price,
        time_in_force=body.time_in_force,
        post_only=body.post_only,
    )


def update_key(update: VenueUpdate) -> tuple[str, str]:
    """The (account, client order id) a venue update is about."""
    return update.account_id, update.client_order_id


# --- the market --------------------------------------------------------------------------------------------

BookLevels = list[tuple[Decimal, Decimal]]


def book_levels(
    best_bid: Decimal = Decimal("99.9"),
    best_ask: Decimal = Decimal("100.0"),
    step: Decimal = Decimal("0.5"),
    levels: int = 8,
    qty: Decimal = Decimal("50"),
) -> tuple[BookLevels, BookLevels]:
    """A symmetric book, best first: (bids, asks)."""
    bids = [(best_bid - step * i, qty) for i in range(levels)]
    asks = [(best_ask + step * i, qty) for i in range(levels)]
    return bids, asks


# --- the stack: paper venue, OMS database, Redis -----------------------------------------------------------


@dataclass
class PaperStack:
    """The paper venue (its own engine, as in the OMS process), the OMS's engine, Redis, and services on them.

    `counting` wraps the venue and counts what reaches it; give it (or a wrapper of it) to the services
    whose venue traffic a test checks. `fund` credits accounts at the venue and in the ledger.
    """

    settings: OmsSettings
    venue: PaperVenue
    counting: CountingVenue
    redis: Redis
    clock: Callable[[], datetime]
    oms_engine: AsyncEngine
    venue_engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    _trades: int = 0
    _books: int = 0

    def service(
        self,
        venue: VenueAdapter | None = None,
        *,
        listen: bool = True,
        clock: Callable[[], datetime] | None = None,
        service_class: Callable[..., OrderService] = OrderService,
    ) -> OrderService:
        """A new OrderService instance on the shared OMS engine; `listen`: subscribe it to the venue's updates."""
        service = service_class(
            settings=self.settings,
            sessionmaker=self.sessionmaker,
            tables=event_tables("oms"),
            venue=venue if venue is not None else self.counting,
            redis=self.redis,
            clock=clock or self.clock,
        )
        if listen:
            self.venue.subscribe(service.apply_update)
        return service

    async def fund(self, account_id: str, amounts: Mapping[str, Decimal]) -> None:
        """Deposit at the paper venue and in the ledger (creating the trading account), as the deposit route does."""
        funder = self.service(venue=self.venue, listen=False)
        for asset, amount in amounts.items():
            await funder.deposit(account_id, asset, amount, ACTOR, reference=uuid.uuid4().hex)

    async def set_book(self, symbol: str, bids: BookLevels, asks: BookLevels) -> list[VenueUpdate]:
        """A whole book to the paper venue and, as the paper feed does, the latest book to Redis (market buys)."""
        self._books += 1
        snapshot = BookSnapshot(
            venue="test",
            symbol=symbol,
            bids=[Level(price=p, qty=q) for p, q in bids],
            asks=[Level(price=p, qty=q) for p, q in asks],
            timestamp=datetime.now(UTC),
            sequence=self._books,
        )
        book = OrderBook(symbol)
        book.apply_snapshot(bids, asks, datetime.now(UTC))
        await self.redis.set(book_key(symbol), book_json(book))  # exactly what the paper feed writes
        return await self.venue.on_book_snapshot(snapshot)

    async def trade(self, symbol: str, price: Decimal, qty: Decimal, aggressor: OrderSide) -> list[VenueUpdate]:
        """A public trade print (resting orders it passes through fill as maker); returns the venue's updates."""
        self._trades += 1
        trade = Trade(
            venue="test",
            symbol=symbol,
            trade_id=f"t{self._trades}",
            price=price,
            qty=qty,
            side=aggressor,
            timestamp=datetime.now(UTC),
        )
        return await self.venue.on_trade(trade)

    async def buy_positions(
        self,
        service: OrderService,
        account_ids: Sequence[str],
        symbol: str,
        quantity: Decimal,
        limit_price: Decimal = Decimal("99.5"),
    ) -> None:
        """Give each account `quantity` base bought through fills, applied to `service` at once.

        A deposited base asset has no cost: selling it never takes a position below zero, so tests that check
        `position == buys - sells` hold base only from fills. Each account rests a buy at `limit_price`
        (below the best bid), then one print through all of them fills them as maker.
        """
        for account_id in account_ids:
            body = OrderCreate(
                account_id=account_id,
                client_order_id=f"{account_id}-position",
                symbol=symbol,
                side=OrderSide.BUY,
                type=OrderType.LIMIT,
                quantity=quantity,
                limit_price=limit_price,
            )
            placed = await service.place(body, ACTOR)
            assert placed.stored.order.status is OrderStatus.ACCEPTED, placed.stored.order.reason
        print_price = limit_price - Decimal("0.5")
        for update in await self.trade(symbol, print_price, quantity * len(account_ids), OrderSide.SELL):
            await service.apply_update(update)

    async def close(self, symbols: Sequence[str] = ()) -> None:
        for symbol in symbols:
            await self.redis.delete(f"marketdata:book:{symbol}")
        await self.redis.aclose()
        await self.oms_engine.dispose()
        await self.venue_engine.dispose()


@asynccontextmanager
async def paper_stack(settings: OmsSettings, clock: Callable[[], datetime] | None = None) -> AsyncIterator[PaperStack]:
    """Start the paper venue (restored from its tables) and the OMS's engine; close both afterwards."""
    now = clock or SteppingClock()
    venue_engine = create_engine(settings, application_name="reliability-paper-venue")
    oms_engine = create_engine(settings, application_name="reliability-oms")
    venue = PaperVenue(
        sessionmaker_for(venue_engine),
        instruments={Symbol(symbol): rules.spec(symbol) for symbol, rules in settings.instruments.items()},
        fee_schedules=AccountFeeSchedules(),
        clock=now,
    )
    await venue.restore()
    # The defaults the risk and approval services publish at their first start (global ACTIVE, both snapshots):
    # these harnesses drive the OMS's use cases without its Kafka workers, so the controls copy is seeded directly.
    await seed_defaults(oms_engine)
    stack = PaperStack(
        settings=settings,
        venue=venue,
        counting=CountingVenue(venue),
        redis=Redis.from_url(settings.redis_url.get_secret_value()),
        clock=now,
        oms_engine=oms_engine,
        venue_engine=venue_engine,
        sessionmaker=sessionmaker_for(oms_engine),
    )
    try:
        yield stack
    finally:
        await stack.close(list(settings.instruments))


# --- reading both sides ------------------------------------------------------------------------------------

OrderKey = tuple[str, str]


@dataclass
class OrderRows:
    """Rows per (account, client order id) in `oms.orders` and at the paper venue (`paper.orders`), with status."""

    oms: Counter[OrderKey]
    venue: Counter[OrderKey]
    oms_status: dict[OrderKey, str]
    venue_status: dict[OrderKey, str]


async def order_rows(engine: AsyncEngine, account_ids: Sequence[str]) -> OrderRows:
    """Both sides' orders of these accounts, read in one snapshot."""
    rows = OrderRows(Counter(), Counter(), {}, {})
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        for counts, statuses, sql in (
            (rows.oms, rows.oms_status, "SELECT account_id, client_order_id, status FROM oms.orders"),
            (rows.venue, rows.venue_status, "SELECT account_id, client_order_id, status FROM paper.orders"),
        ):
            result = await conn.execute(sa.text(f"{sql} WHERE account_id = ANY(:a)"), {"a": list(account_ids)})
            for account_id, client_order_id, status in result:
                counts[(account_id, client_order_id)] += 1
                statuses[(account_id, client_order_id)] = status
    return rows


# --- the REST app ------------------------------------------------------------------------------------------


def operator_headers(subject: str = "reliability-operator") -> dict[str, str]:
    """A bearer token (operator, every account) that apps built from `oms_settings` accept."""
    return token(Role.OPERATOR, subject=subject)


@asynccontextmanager
async def rest_client(
    settings: OmsSettings, venue: VenueAdapter, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The real OMS app (`create_app`) on `venue`, started and ready, behind an in-process HTTP client.

    `raise_app_exceptions=False`: an unhandled error reaches the client as the app's 500 answer, as over HTTP.
    """
    app = create_app(settings, venue=venue)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://oms", headers=operator_headers(), timeout=60
        ) as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=30, message="oms ready")
            yield client
