"""The paper venue: a simulated exchange on the matching engine, with its own books in schema `paper`.

It stands for an exchange, so it keeps its own state and never joins the OMS's transactions: every
operation commits in its own transaction through the venue's sessionmaker. PostgreSQL is the truth;
the in-memory engines hold the market (books) and our resting orders, and are rebuilt from
`paper.orders` by `restore()` at startup (or after a failed write, before the symbol is used again).

Rules worth knowing:
- `submit` is idempotent by (account, client order id): a repeat returns the stored order.
- Refusals raise `VenueRejected` and store nothing: `unknown_instrument`, `invalid_order`,
  `invalid_quantity`, `invalid_price`, `no_market_data` (market order before any book),
  `insufficient_funds`, `post_only_would_cross`. (With a latency model the engine decides later; an
  order it then refuses is reported CANCELED with that reason, since OPEN was already answered.)
- Precision: each instrument's `InstrumentSpec` (from `shared.venues.instruments`) carries the precision the
  venue keeps balances to; a fill's cost and fee are rounded to the nearest quote step (USD 0.0001), as Kraken.
- Reservations: a sell holds its base quantity; a buy holds quantity x price plus the taker fee at the
  account's tier, each rounded up to the quote step (limit price; trigger price for stop/take-profit;
  for a market buy the walk of the asks that are free to take, level by level, as the fills will be charged).
  A limit buy that fills below its limit releases what its unfilled part no longer needs at once. The funds
  check runs before the engine moves (`MatchingEngine.preview`), so a refused order leaves no trace in it.
- Fees are in quote, from the account's own fee schedule (`AccountFeeSchedules`) at its rolling 30-day volume
  at this venue; a fee is never lowered because the balance is short (the fill is refused instead).
- Fills commit (order, fill rows, balances), THEN listeners hear of them; a failing listener is logged.
  The answer to `submit`/`cancel` is not repeated to listeners, the fills it produced are (before it).
- Per symbol, one asyncio lock orders the engine and the writes; submits queued behind it are placed
  in one transaction (group commit). Fills of one account commit in `sequence` order (a row lock on
  the account), so `fills_since(cursor)` never skips a fill that commits later.

This module is the venue's surface (the protocol, reads, deposits, taking the locks, batching submits, telling
listeners); each symbol's engine and the operations run under its lock are `SymbolMarket` in
`shared/venues/paper_market.py`, and engine reports are settled into the books in `shared/venues/paper_settlement.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.uow import UnitOfWork
from shared.domain.book import MarketDataError, OrderBook
from shared.domain.fees import AccountFeeSchedules
from shared.domain.matching import ExecutionReport, LatencyModel, MatchingEngine
from shared.domain.money import InstrumentSpec, MoneyError, format_decimal, to_decimal
from shared.domain.types import AccountId, Asset, ClientOrderId, Liquidity, OrderSide, Symbol
from shared.marketdata import BookDelta, BookSnapshot, Trade
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
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_market import STORAGE_ERRORS, MarketContext, SymbolMarket, Ticket
from shared.venues.paper_settlement import validate_request
from shared.venues.paper_store import (
    DepositReferenceReused,
    HoldingKey,
    PaperOrder,
    PaperStore,
    TransferExceedsFree,
    TransferReferenceReused,
    WithdrawalReferenceReused,
)

log = get_logger(__name__)


def _positive(amount: Decimal, what: str) -> Decimal:
    """The amount of a money movement as a money Decimal; `invalid_amount` when it is not one or not positive."""
    try:
        amount = to_decimal(amount)
    except MoneyError as exc:
        raise VenueRejected("invalid_amount", str(exc)) from None
    if amount <= 0:
        raise VenueRejected("invalid_amount", f"a {what} must be positive: {format_decimal(amount)}")
    return amount


@asynccontextmanager
async def _moving_money(what: str) -> AsyncIterator[None]:
    """The venue's answer to a refused or failed deposit, transfer or withdrawal (storage errors typed)."""
    try:
        yield
    except (DepositReferenceReused, TransferReferenceReused, WithdrawalReferenceReused) as exc:
        raise VenueRejected("reference_reused", str(exc)) from None
    except TransferExceedsFree as exc:
        raise VenueRejected("insufficient_balance", str(exc)) from None
    except IntegrityError as exc:
        raise VenueOperationalError(f"paper venue storage refused a {what}: {exc.orig}") from exc
    except STORAGE_ERRORS as exc:
        raise AmbiguousOutcome(f"paper venue storage failed during a {what}: {exc}") from exc


class PaperVenue:
    """A simulated exchange implementing `VenueAdapter`; market data comes in through `on_*`."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        instruments: Mapping[Symbol, InstrumentSpec],
        fee_schedules: AccountFeeSchedules,
        clock: Callable[[], datetime],
        latency: LatencyModel | None = None,
        name: str = "paper",
    ) -> None:
        self.name = name
        self._sessionmaker = sessionmaker
        self._instruments = dict(instruments)
        self._fees = fee_schedules
        self._clock = clock
        self._listeners: list[UpdateListener] = []
        self.known_holdings: set[HoldingKey] = set()  # balance rows known to exist (never deleted)
        context = MarketContext(sessionmaker, clock, latency, self)
        self._markets = {symbol: SymbolMarket(symbol, context) for symbol in self._instruments}

    # --- protocol --------------------------------------------------------------------------------------

    def subscribe(self, listener: UpdateListener) -> None:
        """Receive fills and order status changes after they are committed."""
        self._listeners.append(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        """Place an order; idempotent by (account, client order id).

        Submits that queue up behind a symbol's lock are placed together in one transaction (group commit),
        in arrival order; each caller gets its own answer once the batch has committed and its fills were
        passed to the listeners.
        """
        spec = self._spec(request.symbol)
        validate_request(request, spec)
        market = self._markets[request.symbol]
        ticket = Ticket(request, asyncio.get_running_loop().create_future())
        market.pending.append(ticket)
        batch: list[Ticket] = []
        try:
            async with market.lock:
                if not ticket.taken:
                    batch, market.pending = market.pending, []
                    for taken in batch:
                        taken.taken = True
                    answers, updates = await market.run_submits(spec, [t.request for t in batch])
            if batch:
                await self._notify(updates)
                for taken, answer in zip(batch, answers, strict=True):
                    _resolve(taken.future, answer)
        finally:
            for taken in batch:  # only when interrupted: nobody may wait forever
                _resolve(taken.future, AmbiguousOutcome("the batch was interrupted"))
        return (await ticket.future).to_venue()

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        """Cancel an open order; a closed one answers its final state, an unknown one `unknown_order`."""
        order = await self._existing(account_id, client_order_id)
        if not order.is_open:
            return order.to_venue()
        market = self._markets[order.symbol]
        async with market.lock:
            before = await market.catch_up()
            try:
                outcome, order = await market.cancel(order)
            except STORAGE_ERRORS as exc:
                raise market.write_failed("cancel", exc) from exc
            except BaseException:
                market.needs_restore = True  # the engine may have moved, the books did not
                raise
        await self._notify([*before.updates(), *outcome.updates(answered={order.venue_order_id})])
        return order.to_venue()

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        """The order with this client id, or None when the venue never accepted it."""
        async with self._reading() as store:
            order = await store.find_order(account_id, client_order_id)
        return None if order is None else order.to_venue()

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        """Every open order of the account, oldest first."""
        async with self._reading() as store:
            orders = await store.open_orders(account_id)
        return [order.to_venue() for order in orders]

    async def fills_since(
        self, account_id: AccountId, after_sequence: int, limit: int | None = None
    ) -> Sequence[VenueFill]:
        """Fills of the account with a sequence above `after_sequence`, oldest first."""
        async with self._reading() as store:
            return await store.fills_since(account_id, after_sequence, limit)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        """Balances of the account (total and available = total - reserved)."""
        async with self._reading() as store:
            return await store.balances_of(account_id)

    async def fills_after(self, after_sequence: int, limit: int) -> tuple[list[VenueFill], list[VenueOrder]]:
        """Fills of every account above `after_sequence` (oldest first, at most `limit`) and the current state of
        their orders: what a follower of the venue's updates replays after it lost its stream."""
        async with self._reading() as store:
            found = await store.fills_after(after_sequence, limit)
            orders = await store.orders_by_venue_id({fill.venue_order_id for fill in found})
        return found, [order.to_venue() for order in orders.values()]

    async def last_sequence(self) -> int:
        """The highest fill sequence of the venue so far (0 before any fill)."""
        async with self._reading() as store:
            return await store.last_sequence()

    # --- paper only ------------------------------------------------------------------------------------

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Credit `amount` of `asset` once per `reference` (creating the account on first use); returns the balance.
        A reference credited before changes nothing; with another asset or amount it is `reference_reused`."""
        amount = _positive(amount, "deposit")
        async with _moving_money("deposit"), UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            now = self._clock()
            await store.ensure_accounts([account_id], now)
            holding = await store.record_deposit(account_id, asset, amount, reference, now)
        return VenueBalance(account_id, asset, holding.total, holding.free)

    async def transfer(
        self, source: AccountId, destination: AccountId, asset: Asset, amount: Decimal, reference: str
    ) -> tuple[VenueBalance, VenueBalance]:
        """Move `amount` of `asset` from `source`'s free balance to `destination` in one transaction, once per
        `reference`; a repeat moves nothing, with other terms it is `reference_reused`."""
        amount = _positive(amount, "transfer")
        if source == destination:
            raise VenueRejected("same_account", "a transfer needs two different accounts")
        async with _moving_money("transfer"), UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            now = self._clock()
            await store.ensure_accounts([source, destination], now)
            debited, credited = await store.record_transfer(source, destination, asset, amount, reference, now)
        return (
            VenueBalance(source, asset, debited.total, debited.free),
            VenueBalance(destination, asset, credited.total, credited.free),
        )

    async def withdraw(self, account_id: AccountId, asset: Asset, amount: Decimal, reference: str) -> VenueBalance:
        """Debit `amount` of `asset` from the account's free balance once per `reference`; returns the balance.
        A repeat debits nothing; with another asset or amount it is `reference_reused`; reserved money stays."""
        amount = _positive(amount, "withdrawal")
        async with _moving_money("withdrawal"), UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            now = self._clock()
            await store.ensure_accounts([account_id], now)
            holding = await store.record_withdrawal(account_id, asset, amount, reference, now)
        return VenueBalance(account_id, asset, holding.total, holding.free)

    async def restore(self) -> int:
        """Rebuild every engine's resting orders from `paper.orders` (at startup); returns how many."""
        restored = 0
        for market in self._markets.values():
            async with market.lock:
                restored += await market.restore()
        return restored

    def book(self, symbol: Symbol) -> OrderBook | None:
        """The venue's current view of the market for `symbol` (None for an instrument it does not list)."""
        market = self._markets.get(symbol)
        return None if market is None else market.engine.book

    def has_market_data(self, symbol: Symbol) -> bool:
        """True once a book for `symbol` has arrived."""
        book = self.book(symbol)
        return book is not None and book.updated_at is not None

    # --- market data -----------------------------------------------------------------------------------

    async def on_book_snapshot(self, snapshot: BookSnapshot) -> list[VenueUpdate]:
        """Replace the book; resting orders the opposite side now crosses fill as maker."""
        bids = [(level.price, level.qty) for level in snapshot.bids]
        asks = [(level.price, level.qty) for level in snapshot.asks]

        def drive(engine: MatchingEngine, now: datetime) -> list[ExecutionReport]:
            return engine.on_book_snapshot(bids, asks, now)

        return await self._drive(Symbol(snapshot.symbol), drive)

    async def on_book_delta(self, delta: BookDelta) -> list[VenueUpdate]:
        """Update changed levels (ignored until a snapshot has given the venue a whole book)."""
        symbol = Symbol(delta.symbol)
        if not self.has_market_data(symbol):
            return []

        bids = [(level.price, level.qty) for level in delta.bids]
        asks = [(level.price, level.qty) for level in delta.asks]

        def drive(engine: MatchingEngine, now: datetime) -> list[ExecutionReport]:
            return engine.on_book_update(bids, asks, now)

        return await self._drive(symbol, drive)

    async def on_trade(self, trade: Trade) -> list[VenueUpdate]:
        """A public trade: resting orders it prints through fill as maker, stop orders trigger."""

        def drive(engine: MatchingEngine, now: datetime) -> list[ExecutionReport]:
            return engine.on_trade(trade.price, trade.qty, OrderSide(trade.side), now)

        return await self._drive(Symbol(trade.symbol), drive)

    # --- internals ---------------------------------------------------------------------------------------

    async def _drive(
        self, symbol: Symbol, drive: Callable[[MatchingEngine, datetime], list[ExecutionReport]]
    ) -> list[VenueUpdate]:
        market = self._markets.get(symbol)
        if market is None:
            return []
        async with market.lock:
            if market.needs_restore:
                try:
                    await market.restore()
                except STORAGE_ERRORS as exc:
                    raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc
            now = self._clock()
            try:
                reports = drive(market.engine, now)
            except MarketDataError as exc:  # a crossed snapshot, a bad level or print: nothing changed
                log.warning("paper_market_data_refused", symbol=symbol, code=exc.code, error=str(exc))
                return []
            try:
                outcome = await market.settle(reports, now)
            except STORAGE_ERRORS as exc:
                raise market.write_failed("market_data", exc) from exc
            except BaseException:
                market.needs_restore = True  # the engine moved, the books did not
                raise
        updates = outcome.updates()
        await self._notify(updates)
        return updates

    # --- helpers -----------------------------------------------------------------------------------------

    def _spec(self, symbol: Symbol) -> InstrumentSpec:
        spec = self._instruments.get(symbol)
        if spec is None:
            raise VenueRejected("unknown_instrument", f"{symbol} is not listed on the {self.name} venue")
        return spec

    def fee_rate(self, account_id: AccountId, liquidity: Liquidity, volume_30d: Decimal) -> Decimal:
        """The account's maker or taker rate at its 30-day volume."""
        return self._fees.for_account(account_id).rate(liquidity, volume_30d)

    def fee(
        self, account_id: AccountId, symbol: Symbol, cost: Decimal, liquidity: Liquidity, volume_30d: Decimal
    ) -> Decimal:
        """Fee in quote for a fill of `cost` quote, at the account's schedule and 30-day volume, rounded to the
        nearest step of the quote asset's precision."""
        return self._fees.for_account(account_id).fee(cost, liquidity, volume_30d, self._spec(symbol).quote_step)

    def spec(self, symbol: Symbol) -> InstrumentSpec:
        """The instrument's trading rules."""
        return self._spec(symbol)

    async def _existing(self, account_id: AccountId, client_order_id: ClientOrderId) -> PaperOrder:
        async with self._reading() as store:
            order = await store.find_order(account_id, client_order_id)
        if order is None:
            raise VenueRejected("unknown_order", f"no order {client_order_id!r} for account {account_id!r}")
        return order

    def _reading(self) -> _Reading:
        return _Reading(self._sessionmaker)

    async def _notify(self, updates: Iterable[VenueUpdate]) -> None:
        for update in updates:
            for listener in self._listeners:
                try:
                    await listener(update)
                except Exception as exc:  # a listener's failure never undoes the venue's state
                    log.exception("paper_listener_failed", update_type=type(update).__name__, error=str(exc)[:300])


class _Reading:
    """A read-only transaction; storage failures become `TemporaryError` (reads are safe to retry)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._uow = UnitOfWork(sessionmaker)

    async def __aenter__(self) -> PaperStore:
        try:
            await self._uow.__aenter__()
        except STORAGE_ERRORS as exc:
            raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc
        return PaperStore(self._uow.session)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            await self._uow.__aexit__(exc_type, exc, None)
        except STORAGE_ERRORS as error:
            raise TemporaryError(f"paper venue storage unavailable: {error}") from error
        if exc is not None and isinstance(exc, STORAGE_ERRORS):
            raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc


def _resolve(future: asyncio.Future[PaperOrder], answer: PaperOrder | BaseException) -> None:
    if future.done():
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)
