"""The venue contract fixture: one `VenueCase` per adapter, each with a way to set its market.

Adding an adapter is one line in `VENUES` (its name and an async context manager that yields a
`VenueCase`); every test in test_venue_contract.py then runs against it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import AetherSettings
from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.money import InstrumentSpec
from shared.domain.types import AccountId, Asset, OrderSide, Symbol
from shared.marketdata import BookSnapshot, Level, Trade
from shared.venues.base import VenueAdapter, VenueUpdate
from shared.venues.paper import PaperVenue
from shared.venues.paper_config import InstrumentConfig
from shared.venues.paper_http import PaperHttpVenue
from tests.fakes.binance import BinanceFake
from tests.fakes.coinbase import CoinbaseFake
from tests.fakes.kraken_rest import KrakenRestFake
from tests.kit.binance import BinanceKit, binance_kit
from tests.kit.coinbase import CoinbaseKit, coinbase_kit
from tests.kit.kraken import KrakenKit, kraken_kit
from tests.kit.paper_process import (
    PaperProcess,
    caught_up,
    following,
    free_port,
    paper_process,
    paper_settings,
    venue_token,
)

QUOTE = Asset("USD")


def instrument(symbol: Symbol) -> InstrumentSpec:
    """BTC/USD's trading rules, under a name of the test's own."""
    base, quote = symbol.split("/")
    return InstrumentSpec(
        symbol=symbol,
        base=base,
        quote=quote,
        price_increment=Decimal("0.1"),
        quantity_increment=Decimal("0.00000001"),
        min_quantity=Decimal("0.0001"),
        base_step=Decimal("1e-10"),
        quote_step=Decimal("0.0001"),
    )


# Every adapter is set up so that a fresh account trades at Kraken's entry tier: maker 0.25 %, taker 0.40 %.
MAKER_RATE = Decimal("0.0025")
TAKER_RATE = Decimal("0.0040")
QUOTE_STEP = Decimal("0.01")


class MarketDriver(Protocol):
    """Sets the market an adapter sees and funds accounts there (paper: direct calls; Kraken: its fake server)."""

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        """Publish a whole book (levels best first, as (price, qty) decimal strings)."""
        ...

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        """Print a public trade."""
        ...

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        """Give the account `amount` of `asset` at the venue."""
        ...

    async def restart(self) -> VenueAdapter:
        """A new adapter instance over the same venue state (as after a process restart), ready to use."""
        ...


class FakeClock:
    """A settable UTC clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class VenueCase:
    """An adapter under test, its market, a fresh account and instrument, and what its listener heard.

    Each test trades its own instrument (`symbol`, base asset `base`, quote USD) so that orders left
    resting by other tests in the same database never meet its market.
    """

    name: str
    venue: VenueAdapter
    market: MarketDriver
    account_id: AccountId
    symbol: Symbol
    heard: list[VenueUpdate] = field(default_factory=list)

    @property
    def base(self) -> Asset:
        return Asset(self.symbol.split("/")[0])

    def new_account(self) -> AccountId:
        return AccountId(f"acct-{uuid.uuid4().hex[:12]}")


class PaperMarket:
    """Feeds the paper venue directly with market-data messages (the Kafka path has its own test)."""

    def __init__(self, venue: PaperVenue, make_venue: Callable[[], PaperVenue]) -> None:
        self.venue = venue
        self._make_venue = make_venue
        self._sequence = 0
        self._trades = 0

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        self._sequence += 1
        snapshot = BookSnapshot(
            venue="test",
            symbol=symbol,
            bids=[Level(price=Decimal(p), qty=Decimal(q)) for p, q in bids],
            asks=[Level(price=Decimal(p), qty=Decimal(q)) for p, q in asks],
            timestamp=datetime.now(UTC),
            sequence=self._sequence,
        )
        await self.venue.on_book_snapshot(snapshot)

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        self._trades += 1
        trade = Trade(
            venue="test",
            symbol=symbol,
            trade_id=f"t{self._trades}",
            price=Decimal(price),
            qty=Decimal(qty),
            side=aggressor,
            timestamp=datetime.now(UTC),
        )
        await self.venue.on_trade(trade)

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        await self.venue.deposit(account_id, asset, Decimal(amount), uuid.uuid4().hex)

    async def restart(self) -> VenueAdapter:
        self.venue = self._make_venue()
        await self.venue.restore()
        return self.venue


def unique_symbol() -> Symbol:
    return Symbol(f"T{uuid.uuid4().hex[:8].upper()}/{QUOTE}")


@asynccontextmanager
async def paper_case(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[VenueCase]:
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    symbol = unique_symbol()

    def make_venue() -> PaperVenue:
        return PaperVenue(
            sessionmaker_for(engine),
            instruments={symbol: instrument(symbol)},
            fee_schedules=AccountFeeSchedules(),
            clock=clock,
        )

    venue = make_venue()
    await venue.restore()
    case = VenueCase("paper", venue, PaperMarket(venue, make_venue), AccountId(f"acct-{uuid.uuid4().hex[:12]}"), symbol)

    async def listen(update: VenueUpdate) -> None:
        case.heard.append(update)

    venue.subscribe(listen)
    yield case


class PaperProcessMarket(PaperMarket):
    """Drives the venue inside the paper venue process, then waits until the adapter's stream has told its
    listeners of what that did (as the in-process venue has once its call returns); funds over HTTP."""

    def __init__(self, process: PaperProcess, client: PaperHttpVenue, restart: Callable[[], Any]) -> None:
        super().__init__(process.venue, lambda: process.venue)
        self.process = process
        self.client = client
        self._restart_process = restart

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        await super().book(symbol, bids, asks)
        await caught_up(self.client, self.process)

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        await super().trade(symbol, price, qty, aggressor)
        await caught_up(self.client, self.process)

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        await self.client.deposit(account_id, asset, Decimal(amount), uuid.uuid4().hex)

    async def restart(self) -> VenueAdapter:
        """Stop the venue process and start another on the same port and database; a new adapter follows it."""
        self.process, self.client = await self._restart_process()
        self.venue = self.process.venue
        return self.client


@asynccontextmanager
async def paper_process_case(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[VenueCase]:
    """The HTTP adapter on the paper venue process (a real uvicorn server on the test database)."""
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    symbol = unique_symbol()
    venue_settings = paper_settings(settings, instruments={symbol: InstrumentConfig.of(instrument(symbol))})
    port = free_port()
    async with contextlib.AsyncExitStack() as clients:
        processes = contextlib.AsyncExitStack()

        async def start() -> tuple[PaperProcess, PaperHttpVenue]:
            process = await processes.enter_async_context(paper_process(venue_settings, port=port, clock=clock))
            client = await clients.enter_async_context(following(PaperHttpVenue(process.url, venue_token)))
            return process, client

        async def restart() -> tuple[PaperProcess, PaperHttpVenue]:
            await processes.aclose()  # the process stops; the adapters already made reconnect to the next one
            return await start()

        try:
            process, client = await start()
            market = PaperProcessMarket(process, client, restart)
            case = VenueCase("paper-process", client, market, AccountId(f"acct-{uuid.uuid4().hex[:12]}"), symbol)

            async def listen(update: VenueUpdate) -> None:
                case.heard.append(update)

            client.subscribe(listen)
            yield case
        finally:
            await processes.aclose()


class KrakenMarket(PaperMarket):
    """Sets the market inside the Kraken protocol fake (its paper engine), then lets the adapter reconcile over
    REST (`sync`), as its maintenance loop would; funding registers an API key for the account and mounts it."""

    def __init__(self, fake: KrakenRestFake, kit: KrakenKit) -> None:
        super().__init__(fake.venue, lambda: fake.venue)
        self.fake = fake
        self.kit = kit

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        await super().book(symbol, bids, asks)
        await self.kit.adapter.sync()

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        await super().trade(symbol, price, qty, aggressor)
        await self.kit.adapter.sync()

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        self.kit.ensure_account(account_id)
        await super().fund(account_id, asset, amount)

    async def restart(self) -> VenueAdapter:
        return await self.kit.new_adapter()


@asynccontextmanager
async def kraken_case(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[VenueCase]:
    """The Kraken REST adapter against the Kraken protocol fake on loopback (paper matching behind it)."""
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    symbol = unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={symbol: instrument(symbol)},
        fee_schedules=AccountFeeSchedules(),
        clock=clock,
        name="kraken-fake",
    )
    await venue.restore()
    async with kraken_kit(venue, settings) as kit:
        account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
        kit.ensure_account(account)
        case = VenueCase("kraken", kit.adapter, KrakenMarket(kit.fake, kit), account, symbol)

        async def listen(update: VenueUpdate) -> None:
            case.heard.append(update)

        kit.adapter.subscribe(listen)
        yield case


class BinanceMarket(PaperMarket):
    """Sets the market inside the Binance protocol fake (its paper engine), then lets the adapter reconcile over
    REST (`sync`); funding registers an API key for the account and mounts it."""

    def __init__(self, fake: BinanceFake, kit: BinanceKit) -> None:
        super().__init__(fake.venue, lambda: fake.venue)
        self.fake = fake
        self.kit = kit

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        await super().book(symbol, bids, asks)
        await self.kit.adapter.sync()

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        await super().trade(symbol, price, qty, aggressor)
        await self.kit.adapter.sync()

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        self.kit.ensure_account(account_id)
        await super().fund(account_id, asset, amount)

    async def restart(self) -> VenueAdapter:
        return await self.kit.new_adapter()


@asynccontextmanager
async def binance_case(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[VenueCase]:
    """The Binance REST adapter against the Binance protocol fake on loopback (paper matching behind it)."""
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    symbol = unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={symbol: instrument(symbol)},
        fee_schedules=AccountFeeSchedules(),
        clock=clock,
        name="binance-fake",
    )
    await venue.restore()
    async with binance_kit(venue, settings) as kit:
        account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
        kit.ensure_account(account)
        case = VenueCase("binance", kit.adapter, BinanceMarket(kit.fake, kit), account, symbol)

        async def listen(update: VenueUpdate) -> None:
            case.heard.append(update)

        kit.adapter.subscribe(listen)
        yield case


# One line per adapter: name -> factory of its case.
class CoinbaseMarket(PaperMarket):
    """Sets the market inside the Coinbase protocol fake (its paper engine), then lets the adapter reconcile over
    REST (`sync`); funding registers an API key for the account and mounts it."""

    def __init__(self, fake: CoinbaseFake, kit: CoinbaseKit) -> None:
        super().__init__(fake.venue, lambda: fake.venue)
        self.fake = fake
        self.kit = kit

    async def book(self, symbol: Symbol, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> None:
        await super().book(symbol, bids, asks)
        await self.kit.adapter.sync()

    async def trade(self, symbol: Symbol, price: str, qty: str, aggressor: OrderSide) -> None:
        await super().trade(symbol, price, qty, aggressor)
        await self.kit.adapter.sync()

    async def fund(self, account_id: AccountId, asset: Asset, amount: str) -> None:
        self.kit.ensure_account(account_id)
        await super().fund(account_id, asset, amount)

    async def restart(self) -> VenueAdapter:
        return await self.kit.new_adapter()


@asynccontextmanager
async def coinbase_case(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[VenueCase]:
    """The Coinbase Advanced Trade adapter against the Coinbase protocol fake on loopback (paper matching behind)."""
    clock = FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    symbol = unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={symbol: instrument(symbol)},
        fee_schedules=AccountFeeSchedules(),
        clock=clock,
        name="coinbase-fake",
    )
    await venue.restore()
    async with coinbase_kit(venue) as kit:
        account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
        kit.ensure_account(account)
        case = VenueCase("coinbase", kit.adapter, CoinbaseMarket(kit.fake, kit), account, symbol)

        async def listen(update: VenueUpdate) -> None:
            case.heard.append(update)

        kit.adapter.subscribe(listen)
        yield case


# One line per adapter: name -> factory of its case.


VENUES: dict[str, Callable[[AsyncEngine, AetherSettings], AbstractAsyncContextManager[VenueCase]]] = {
    "paper": paper_case,
    "paper-process": paper_process_case,
    "kraken": kraken_case,
    "binance": binance_case,
    "coinbase": coinbase_case,
}


@pytest.fixture(params=sorted(VENUES))
async def venue(
    request: pytest.FixtureRequest, engine: AsyncEngine, settings: AetherSettings
) -> AsyncIterator[VenueCase]:
    """The adapter under test with its market driver and a fresh account."""
    async with VENUES[request.param](engine, settings) as case:
        yield case
