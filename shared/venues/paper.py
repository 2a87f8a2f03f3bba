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
- Reservations: a sell holds its base quantity; a buy holds quantity x price plus the taker fee at the
  account's tier, each rounded up to the quote step (limit price; trigger price for stop/take-profit;
  for a market buy the walk of the visible asks, level by level, as the fills will be charged).
- Fees are in quote, from the fee schedule at the account's 30-day volume at this venue.
- Fills commit (order, fill rows, balances), THEN listeners hear of them; a failing listener is logged.
  The answer to `submit`/`cancel` is not repeated to listeners, the fills it produced are (before it).
- Per symbol, one asyncio lock orders the engine and the writes; submits queued behind it are placed
  in one transaction (group commit). Fills of one account commit in `sequence` order (a row lock on
  the account), so `fills_since(cursor)` never skips a fill that commits later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.uow import UnitOfWork
from shared.domain.book import MarketDataError, OrderBook
from shared.domain.fees import FeeSchedule
from shared.domain.ledger import required_reservation, walked_reservation
from shared.domain.matching import ExecutionReport, LatencyModel, MatchingEngine, ReportKind, RestingState
from shared.domain.money import InstrumentSpec, MoneyError, format_decimal, to_decimal
from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    VenueOrderId,
)
from shared.marketdata import BookDelta, BookSnapshot, Trade
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    UpdateListener,
    VenueBalance,
    VenueError,
    VenueFill,
    VenueOperationalError,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_settlement import (
    LIMIT_TYPES,
    DuplicateRace,
    Outcome,
    Settlement,
    can_wait,
    new_order,
    sim_order,
    validate_request,
)
from shared.venues.paper_store import HoldingKey, PaperOrder, PaperStore

log = get_logger(__name__)

DEFAULT_QUOTE_STEP = Decimal("0.01")
# Failures of the venue's own database: the outcome of a write in flight is unknown.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeoutError, OSError, TimeoutError)


@dataclass
class _Ticket:
    """A submit waiting for the symbol's next batch."""

    request: VenueOrderRequest
    future: asyncio.Future[PaperOrder]
    taken: bool = False


@dataclass
class _Market:
    engine: MatchingEngine
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    needs_restore: bool = False  # a write failed after the engine moved: rebuild from the database first
    pending: list[_Ticket] = field(default_factory=list)


class PaperVenue:
    """A simulated exchange implementing `VenueAdapter`; market data comes in through `on_*`."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        instruments: Mapping[Symbol, InstrumentSpec],
        fee_schedule: FeeSchedule,
        clock: Callable[[], datetime],
        latency: LatencyModel | None = None,
        name: str = "paper",
        quote_steps: Mapping[Symbol, Decimal] | None = None,
    ) -> None:
        self.name = name
        self._sessionmaker = sessionmaker
        self._instruments = dict(instruments)
        self._fees = fee_schedule
        self._clock = clock
        self._latency = latency
        self._quote_steps = dict(quote_steps or {})
        self._markets = {symbol: _Market(MatchingEngine(symbol, latency)) for symbol in self._instruments}
        self._listeners: list[UpdateListener] = []
        self._known_accounts: set[AccountId] = set()
        self.known_holdings: set[HoldingKey] = set()  # balance rows known to exist (never deleted)

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
        ticket = _Ticket(request, asyncio.get_running_loop().create_future())
        market.pending.append(ticket)
        batch: list[_Ticket] = []
        try:
            async with market.lock:
                if not ticket.taken:
                    batch, market.pending = market.pending, []
                    for taken in batch:
                        taken.taken = True
                    answers, updates = await self._run_submits(market, spec, [t.request for t in batch])
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
            before = await self._catch_up(market)
            try:
                outcome, order = await self._cancel_locked(market, order)
            except STORAGE_ERRORS as exc:
                raise self._write_failed(market, "cancel", exc) from exc
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

    # --- paper only ------------------------------------------------------------------------------------

    async def deposit(self, account_id: AccountId, asset: Asset, amount: Decimal) -> VenueBalance:
        """Credit `amount` of `asset` (creating the account on first use); returns the new balance."""
        try:
            amount = to_decimal(amount)
        except MoneyError as exc:
            raise VenueRejected("invalid_amount", str(exc)) from None
        if amount <= 0:
            raise VenueRejected("invalid_amount", f"a deposit must be positive: {format_decimal(amount)}")
        try:
            async with UnitOfWork(self._sessionmaker) as uow:
                store = PaperStore(uow.session)
                now = self._clock()
                await store.ensure_accounts([account_id], now)
                holding = await store.record_deposit(account_id, asset, amount, now)
        except IntegrityError as exc:
            raise VenueOperationalError(f"paper venue storage refused a deposit: {exc.orig}") from exc
        except STORAGE_ERRORS as exc:
            raise AmbiguousOutcome(f"paper venue storage failed during a deposit: {exc}") from exc
        return VenueBalance(account_id, asset, holding.total, holding.free)

    async def restore(self) -> int:
        """Rebuild every engine's resting orders from `paper.orders` (at startup); returns how many."""
        restored = 0
        for market in self._markets.values():
            async with market.lock:
                restored += await self._restore_locked(market)
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

    # --- internals: operations under the symbol lock ---------------------------------------------------

    async def _drive(
        self, symbol: Symbol, drive: Callable[[MatchingEngine, datetime], list[ExecutionReport]]
    ) -> list[VenueUpdate]:
        market = self._markets.get(symbol)
        if market is None:
            return []
        async with market.lock:
            if market.needs_restore:
                try:
                    await self._restore_locked(market)
                except STORAGE_ERRORS as exc:
                    raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc
            now = self._clock()
            try:
                reports = drive(market.engine, now)
            except MarketDataError as exc:  # a crossed snapshot, a bad level or print: nothing changed
                log.warning("paper_market_data_refused", symbol=symbol, code=exc.code, error=str(exc))
                return []
            try:
                outcome = await self._settle_reports(market, reports, now)
            except STORAGE_ERRORS as exc:
                raise self._write_failed(market, "market_data", exc) from exc
            except BaseException:
                market.needs_restore = True  # the engine moved, the books did not
                raise
        updates = outcome.updates()
        await self._notify(updates)
        return updates

    async def _catch_up(self, market: _Market) -> Outcome:
        """Before a command: rebuild a market whose last write failed, carry out due delayed actions."""
        try:
            if market.needs_restore:
                await self._restore_locked(market)
            now = self._clock()
            return await self._settle_reports(market, market.engine.advance(now), now)
        except STORAGE_ERRORS as exc:
            market.needs_restore = True
            raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc

    async def _run_submits(
        self, market: _Market, spec: InstrumentSpec, requests: list[VenueOrderRequest]
    ) -> tuple[list[PaperOrder | VenueError], list[VenueUpdate]]:
        try:
            before = await self._catch_up(market)
        except TemporaryError as exc:
            return [exc] * len(requests), []
        try:
            try:
                answers, outcome = await self._submit_batch(market, spec, requests)
            except DuplicateRace:
                # Another venue process stored one of these client ids first: rebuild, then the rows answer.
                market.needs_restore = True
                answers, outcome = await self._submit_batch(market, spec, requests)
        except DuplicateRace:
            market.needs_restore = True
            return [AmbiguousOutcome("concurrent submits of one client order id")] * len(requests), before.updates()
        except STORAGE_ERRORS as exc:
            return [self._write_failed(market, "submit", exc)] * len(requests), before.updates()
        except Exception as exc:  # a bug: the engine may have moved without the books; rebuild and page
            market.needs_restore = True
            log.exception("paper_submit_failed", symbol=market.engine.symbol, error=str(exc)[:300])
            failure = VenueOperationalError(f"paper venue failed to place orders: {type(exc).__name__}")
            return [failure] * len(requests), before.updates()
        placed = {answer.venue_order_id for answer in answers if isinstance(answer, PaperOrder)}
        return answers, [*before.updates(), *outcome.updates(answered=placed)]

    async def _submit_batch(
        self, market: _Market, spec: InstrumentSpec, requests: list[VenueOrderRequest]
    ) -> tuple[list[PaperOrder | VenueError], Outcome]:
        if market.needs_restore:
            await self._restore_locked(market)
        now = self._clock()
        keys = [(r.account_id, r.client_order_id) for r in requests]
        outcome = Outcome()
        async with UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            existing = await store.find_orders(keys)
            first: dict[tuple[AccountId, ClientOrderId], int] = {}
            for index, key in enumerate(keys):
                if key not in existing:
                    first.setdefault(key, index)
            answers: dict[int, PaperOrder | VenueError] = {}
            if first:
                new_accounts = {account for account, _ in first} - self._known_accounts
                await store.ensure_accounts(new_accounts, now)
                settlement = Settlement(self, store, now)
                await settlement.prepare([(account, requests[0].symbol) for account, _ in first])
                for index in first.values():
                    answers[index] = self._place(market, spec, settlement, requests[index])
                outcome = await settlement.save()
                answers = {
                    i: settlement.order(a.venue_order_id) if isinstance(a, PaperOrder) else a
                    for i, a in answers.items()
                }
        if first:
            self._known_accounts |= new_accounts
            self.known_holdings |= settlement.locked_keys
            for venue_order_id in settlement.to_withdraw:
                market.engine.cancel(venue_order_id, now)
        return [existing.get(key) or answers[first[key]] for key in keys], outcome

    def _place(
        self, market: _Market, spec: InstrumentSpec, settlement: Settlement, request: VenueOrderRequest
    ) -> PaperOrder | VenueError:
        """Reserve, run the engine and settle its reports in memory; a refusal leaves nothing behind."""
        try:
            asset, amount = self._reservation(market, spec, request, settlement.volume(request.account_id))
            settlement.reserve(request.account_id, asset, amount)
        except VenueRejected as exc:
            return exc
        except ValueError as exc:  # amounts the money rules refuse (too large, too precise)
            return VenueRejected("invalid_order", str(exc))
        order = new_order(request, asset, amount, settlement.now)
        reports = market.engine.submit(sim_order(order), settlement.now)
        refusal = next((r for r in reports if r.kind is ReportKind.REJECTED), None)
        if refusal is not None:
            settlement.unreserve(request.account_id, asset, amount)
            return VenueRejected(refusal.reason or "rejected", f"order refused: {refusal.reason}")
        settlement.add_new(order)
        settlement.apply(reports)
        final = settlement.order(order.venue_order_id)
        if final.reason == "insufficient_funds" and final.filled_quantity == 0:
            settlement.discard_new(order.venue_order_id)
            return VenueRejected("insufficient_funds", "the book moved: the fills would cost more than is free")
        return final

    async def _cancel_locked(self, market: _Market, order: PaperOrder) -> tuple[Outcome, PaperOrder]:
        if market.needs_restore:
            await self._restore_locked(market)
        now = self._clock()
        async with UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            current = await store.orders_by_venue_id([order.venue_order_id])
            order = current[order.venue_order_id]
            if not order.is_open:
                return Outcome(), order
            reports = market.engine.cancel(order.venue_order_id, now)
            if not reports:
                return Outcome(), order  # delayed by the latency model: listeners hear of the outcome
            if all(r.kind is ReportKind.REJECTED for r in reports):
                # Not in the engine (an order that never rests): the venue's books say open, so close it there.
                reports = [ExecutionReport(ReportKind.CANCELED, order.venue_order_id, now, reason="canceled")]
            settlement = Settlement(self, store, now)
            await settlement.prepare([(order.account_id, order.symbol)])
            settlement.track(order)
            settlement.apply(reports)
            outcome = await settlement.save()
        self.known_holdings |= settlement.locked_keys
        return outcome, settlement.order(order.venue_order_id)

    async def _settle_reports(self, market: _Market, reports: list[ExecutionReport], now: datetime) -> Outcome:
        relevant = [r for r in reports if r.kind is not ReportKind.ACCEPTED]
        if not relevant:
            return Outcome()
        async with UnitOfWork(self._sessionmaker) as uow:
            settlement = Settlement(self, PaperStore(uow.session), now)
            orders = await settlement.store.orders_by_venue_id(VenueOrderId(r.order_id) for r in relevant)
            for order_id in sorted({r.order_id for r in relevant} - set(orders)):
                log.warning("paper_report_for_unknown_order", order_id=order_id, symbol=market.engine.symbol)
            await settlement.prepare([(o.account_id, o.symbol) for o in orders.values()])
            for order in orders.values():
                settlement.track(order)
            settlement.apply(relevant)
            outcome = await settlement.save()
        self.known_holdings |= settlement.locked_keys
        for order_id in settlement.to_withdraw:
            market.engine.cancel(order_id, now)
        return outcome

    async def _restore_locked(self, market: _Market) -> int:
        symbol = Symbol(market.engine.symbol)
        async with UnitOfWork(self._sessionmaker) as uow:
            store = PaperStore(uow.session)
            now = self._clock()
            states: list[RestingState] = []
            for order in await store.open_orders(symbol=symbol):
                if can_wait(order):
                    states.append(RestingState(sim_order(order), order.remaining, triggered=order.triggered))
                    continue
                # A delayed market/IOC/FOK order the engine had not executed when the process stopped.
                settlement = Settlement(self, store, now)
                await settlement.prepare([(order.account_id, order.symbol)])
                settlement.track(order)
                settlement.close(order, VenueOrderStatus.CANCELED, "venue_restarted")
                await settlement.save()
        engine = MatchingEngine(symbol, self._latency)
        engine.book.load(market.engine.book)  # the market stays; our consumption of it is forgotten
        engine.restore(states)
        market.engine = engine
        market.needs_restore = False
        log.info("paper_engine_restored", symbol=symbol, resting=len(states))
        return len(states)

    # --- helpers -----------------------------------------------------------------------------------------

    def _spec(self, symbol: Symbol) -> InstrumentSpec:
        spec = self._instruments.get(symbol)
        if spec is None:
            raise VenueRejected("unknown_instrument", f"{symbol} is not listed on the {self.name} venue")
        return spec

    def quote_step(self, symbol: Symbol) -> Decimal:
        """Precision of fees and reservations in the quote asset of `symbol`."""
        return self._quote_steps.get(symbol, DEFAULT_QUOTE_STEP)

    def fee(self, symbol: Symbol, notional: Decimal, liquidity: Liquidity, volume_30d: Decimal) -> Decimal:
        """Fee in quote for a fill of `notional` at the account's 30-day volume."""
        return self._fees.fee(notional, liquidity, volume_30d, self.quote_step(symbol))

    def spec(self, symbol: Symbol) -> InstrumentSpec:
        """The instrument's trading rules."""
        return self._spec(symbol)

    def _reservation(
        self, market: _Market, spec: InstrumentSpec, request: VenueOrderRequest, volume_30d: Decimal
    ) -> tuple[Asset, Decimal]:
        if request.type is OrderType.MARKET and market.engine.book.updated_at is None:
            raise VenueRejected("no_market_data", f"no book for {request.symbol} yet: a market order cannot execute")
        if request.side is OrderSide.SELL:
            return Asset(spec.base), request.quantity
        rate = self._fees.rate(Liquidity.TAKER, volume_30d)
        step = self.quote_step(request.symbol)
        if request.type is OrderType.MARKET:
            asks = market.engine.book.iter_levels(OrderSide.SELL)
            return Asset(spec.quote), walked_reservation(asks, request.quantity, rate, spec, step).amount
        price = request.limit_price if request.type in LIMIT_TYPES else request.trigger_price
        if price is None:  # _validate guarantees one; kept for the type checker
            raise VenueRejected("invalid_price", "a price is required")
        return Asset(spec.quote), required_reservation(OrderSide.BUY, request.quantity, price, rate, spec, step).amount

    async def _existing(self, account_id: AccountId, client_order_id: ClientOrderId) -> PaperOrder:
        async with self._reading() as store:
            order = await store.find_order(account_id, client_order_id)
        if order is None:
            raise VenueRejected("unknown_order", f"no order {client_order_id!r} for account {account_id!r}")
        return order

    def _reading(self) -> _Reading:
        return _Reading(self._sessionmaker)

    def _write_failed(self, market: _Market, operation: str, exc: BaseException) -> VenueError:
        market.needs_restore = True
        log.error("paper_write_failed", operation=operation, symbol=market.engine.symbol, error=str(exc)[:300])
        if isinstance(exc, IntegrityError):
            return VenueOperationalError(f"paper venue storage refused a {operation}: {exc.orig}")
        return AmbiguousOutcome(f"paper venue storage failed during {operation}: {exc}")

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
