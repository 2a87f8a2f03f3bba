"""One symbol of the paper venue (`SymbolMarket`): its matching engine, the lock that orders the engine and the
venue's writes, the submits queued for the next batch, and the operations that move the engine and the venue's books
together. Every operation here runs under the symbol's lock, which the caller holds.

`shared/venues/paper.py` keeps the venue itself (its protocol, reads, deposits, taking the locks, batching the submits,
telling the listeners); `shared/venues/paper_settlement.py` settles engine reports into the books.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.uow import UnitOfWork
from shared.domain.ledger import required_reservation, walked_reservation
from shared.domain.matching import ExecutionReport, LatencyModel, MatchingEngine, ReportKind, RestingState
from shared.domain.money import InstrumentSpec
from shared.domain.order_requests import LIMIT_PRICED_TYPES
from shared.domain.types import AccountId, Asset, ClientOrderId, Liquidity, OrderSide, OrderType, Symbol, VenueOrderId
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueError,
    VenueOperationalError,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_settlement import (
    DuplicateRace,
    Outcome,
    Settlement,
    VenueTerms,
    can_wait,
    new_order,
    sim_order,
)
from shared.venues.paper_store import PaperOrder, PaperStore

log = get_logger(__name__)

# Failures of the venue's own database: the outcome of a write in flight is unknown.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (DBAPIError, PoolTimeoutError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class MarketContext:
    """What every symbol's market shares with its venue."""

    sessionmaker: async_sessionmaker[AsyncSession]
    clock: Callable[[], datetime]
    latency: LatencyModel | None
    terms: VenueTerms  # the venue: instrument specs, each account's fees, balance rows known to exist
    known_accounts: set[AccountId] = field(default_factory=set)  # accounts known to exist (never deleted)


@dataclass
class Ticket:
    """A submit waiting for the symbol's next batch."""

    request: VenueOrderRequest
    future: asyncio.Future[PaperOrder]
    taken: bool = False


class SymbolMarket:
    """One symbol's engine and its pending submits; the caller holds `lock` around every async method."""

    def __init__(self, symbol: Symbol, context: MarketContext) -> None:
        self.engine = MatchingEngine(symbol, context.latency)
        self.lock = asyncio.Lock()
        self.needs_restore = False  # a write failed after the engine moved: rebuild from the database first
        self.pending: list[Ticket] = []
        self._ctx = context

    async def catch_up(self) -> Outcome:
        """Before a command: rebuild a market whose last write failed, carry out due delayed actions."""
        try:
            if self.needs_restore:
                await self.restore()
            now = self._ctx.clock()
            return await self.settle(self.engine.advance(now), now)
        except STORAGE_ERRORS as exc:
            self.needs_restore = True
            raise TemporaryError(f"paper venue storage unavailable: {exc}") from exc

    async def run_submits(
        self, spec: InstrumentSpec, requests: list[VenueOrderRequest]
    ) -> tuple[list[PaperOrder | VenueError], list[VenueUpdate]]:
        """Place a batch of submits in one transaction: per request its order or its error, and the updates the
        listeners are to hear (what `catch_up` settled, the fills, status changes not answered)."""
        try:
            before = await self.catch_up()
        except TemporaryError as exc:
            return [exc] * len(requests), []
        try:
            try:
                answers, outcome = await self._submit_batch(spec, requests)
            except DuplicateRace:
                # Another venue process stored one of these client ids first: rebuild, then the rows answer.
                self.needs_restore = True
                answers, outcome = await self._submit_batch(spec, requests)
        except DuplicateRace:
            self.needs_restore = True
            return [AmbiguousOutcome("concurrent submits of one client order id")] * len(requests), before.updates()
        except STORAGE_ERRORS as exc:
            return [self.write_failed("submit", exc)] * len(requests), before.updates()
        except Exception as exc:  # a bug: the engine may have moved without the books; rebuild and page
            self.needs_restore = True
            log.exception("paper_submit_failed", symbol=self.engine.symbol, error=str(exc)[:300])
            failure = VenueOperationalError(f"paper venue failed to place orders: {type(exc).__name__}")
            return [failure] * len(requests), before.updates()
        placed = {answer.venue_order_id for answer in answers if isinstance(answer, PaperOrder)}
        return answers, [*before.updates(), *outcome.updates(answered=placed)]

    async def cancel(self, order: PaperOrder) -> tuple[Outcome, PaperOrder]:
        """Cancel an order the venue's books hold as open; the outcome and the order as it now stands."""
        if self.needs_restore:
            await self.restore()
        now = self._ctx.clock()
        async with UnitOfWork(self._ctx.sessionmaker) as uow:
            store = PaperStore(uow.session)
            current = await store.orders_by_venue_id([order.venue_order_id])
            order = current[order.venue_order_id]
            if not order.is_open:
                return Outcome(), order
            reports = self.engine.cancel(order.venue_order_id, now)
            if not reports:
                return Outcome(), order  # delayed by the latency model: listeners hear of the outcome
            if all(r.kind is ReportKind.REJECTED for r in reports):
                # Not in the engine (an order that never rests): the venue's books say open, so close it there.
                reports = [ExecutionReport(ReportKind.CANCELED, order.venue_order_id, now, reason="canceled")]
            settlement = Settlement(self._ctx.terms, store, now)
            await settlement.prepare([(order.account_id, order.symbol)])
            settlement.track(order)
            settlement.apply(reports)
            outcome = await settlement.save()
        self._ctx.terms.known_holdings |= settlement.locked_keys
        return outcome, settlement.order(order.venue_order_id)

    async def settle(self, reports: list[ExecutionReport], now: datetime) -> Outcome:
        """Commit what the engine reported (fills, closes) to the venue's books in one transaction."""
        relevant = [r for r in reports if r.kind is not ReportKind.ACCEPTED]
        if not relevant:
            return Outcome()
        async with UnitOfWork(self._ctx.sessionmaker) as uow:
            settlement = Settlement(self._ctx.terms, PaperStore(uow.session), now)
            orders = await settlement.store.orders_by_venue_id(VenueOrderId(r.order_id) for r in relevant)
            for order_id in sorted({r.order_id for r in relevant} - set(orders)):
                log.warning("paper_report_for_unknown_order", order_id=order_id, symbol=self.engine.symbol)
            await settlement.prepare([(o.account_id, o.symbol) for o in orders.values()])
            for order in orders.values():
                settlement.track(order)
            settlement.apply(relevant)
            outcome = await settlement.save()
        self._ctx.terms.known_holdings |= settlement.locked_keys
        for order_id in settlement.to_withdraw:
            self.engine.cancel(order_id, now)
        return outcome

    async def restore(self) -> int:
        """Rebuild the engine's resting orders from `paper.orders`, keeping the book; returns how many rest."""
        symbol = Symbol(self.engine.symbol)
        async with UnitOfWork(self._ctx.sessionmaker) as uow:
            store = PaperStore(uow.session)
            now = self._ctx.clock()
            states: list[RestingState] = []
            for order in await store.open_orders(symbol=symbol):
                if can_wait(order):
                    states.append(RestingState(sim_order(order), order.remaining, triggered=order.triggered))
                    continue
                # A delayed market/IOC/FOK order the engine had not executed when the process stopped.
                settlement = Settlement(self._ctx.terms, store, now)
                await settlement.prepare([(order.account_id, order.symbol)])
                settlement.track(order)
                settlement.close(order, VenueOrderStatus.CANCELED, "venue_restarted")
                await settlement.save()
        engine = MatchingEngine(symbol, self._ctx.latency)
        engine.book.load(self.engine.book)  # the market stays; our consumption of it is forgotten
        engine.restore(states)
        self.engine = engine
        self.needs_restore = False
        log.info("paper_engine_restored", symbol=symbol, resting=len(states))
        return len(states)

    def write_failed(self, operation: str, exc: BaseException) -> VenueError:
        """A write of the venue's database failed after the engine moved: rebuild before next use; the error to
        answer (its outcome unknown, or refused by the storage)."""
        self.needs_restore = True
        log.error("paper_write_failed", operation=operation, symbol=self.engine.symbol, error=str(exc)[:300])
        if isinstance(exc, IntegrityError):
            return VenueOperationalError(f"paper venue storage refused a {operation}: {exc.orig}")
        return AmbiguousOutcome(f"paper venue storage failed during {operation}: {exc}")

    async def _submit_batch(
        self, spec: InstrumentSpec, requests: list[VenueOrderRequest]
    ) -> tuple[list[PaperOrder | VenueError], Outcome]:
        if self.needs_restore:
            await self.restore()
        now = self._ctx.clock()
        keys = [(r.account_id, r.client_order_id) for r in requests]
        outcome = Outcome()
        async with UnitOfWork(self._ctx.sessionmaker) as uow:
            store = PaperStore(uow.session)
            existing = await store.find_orders(keys)
            first: dict[tuple[AccountId, ClientOrderId], int] = {}
            for index, key in enumerate(keys):
                if key not in existing:
                    first.setdefault(key, index)
            answers: dict[int, PaperOrder | VenueError] = {}
            if first:
                new_accounts = {account for account, _ in first} - self._ctx.known_accounts
                await store.ensure_accounts(new_accounts, now)
                settlement = Settlement(self._ctx.terms, store, now)
                await settlement.prepare([(account, requests[0].symbol) for account, _ in first])
                for index in first.values():
                    answers[index] = self._place(spec, settlement, requests[index])
                outcome = await settlement.save()
                answers = {
                    i: settlement.order(a.venue_order_id) if isinstance(a, PaperOrder) else a
                    for i, a in answers.items()
                }
        if first:
            self._ctx.known_accounts.update(new_accounts)
            self._ctx.terms.known_holdings |= settlement.locked_keys
            for venue_order_id in settlement.to_withdraw:
                self.engine.cancel(venue_order_id, now)
        return [existing.get(key) or answers[first[key]] for key in keys], outcome

    def _place(
        self, spec: InstrumentSpec, settlement: Settlement, request: VenueOrderRequest
    ) -> PaperOrder | VenueError:
        """Reserve, run the engine and settle its reports in memory; a refusal leaves nothing behind."""
        try:
            asset, amount = self._reservation(spec, request, settlement.volume(request.account_id))
            settlement.reserve(request.account_id, asset, amount)
        except VenueRejected as exc:
            return exc
        except ValueError as exc:  # amounts the money rules refuse (too large, too precise)
            return VenueRejected("invalid_order", str(exc))
        order = new_order(request, asset, amount, settlement.now)
        # The funds check comes before the engine moves: a refused order must leave no trace in it.
        if not settlement.can_pay(order, self.engine.preview(sim_order(order))):
            settlement.unreserve(request.account_id, asset, amount)
            return VenueRejected(
                "insufficient_funds", "the fills would cost more than the reservation and free balance"
            )
        reports = self.engine.submit(sim_order(order), settlement.now)
        refusal = next((r for r in reports if r.kind is ReportKind.REJECTED), None)
        if refusal is not None:
            settlement.unreserve(request.account_id, asset, amount)
            return VenueRejected(refusal.reason or "rejected", f"order refused: {refusal.reason}")
        settlement.add_new(order)
        settlement.apply(reports)
        return settlement.order(order.venue_order_id)

    def _reservation(
        self, spec: InstrumentSpec, request: VenueOrderRequest, volume_30d: Decimal
    ) -> tuple[Asset, Decimal]:
        if request.type is OrderType.MARKET and self.engine.book.updated_at is None:
            raise VenueRejected("no_market_data", f"no book for {request.symbol} yet: a market order cannot execute")
        if request.side is OrderSide.SELL:
            return Asset(spec.base), request.quantity
        rate = self._ctx.terms.fee_rate(request.account_id, Liquidity.TAKER, volume_30d)
        if request.type is OrderType.MARKET:
            # From the depth that is free to take: what our earlier orders took is not there for this one.
            asks = self.engine.free_levels(OrderSide.BUY)
            return Asset(spec.quote), walked_reservation(asks, request.quantity, rate, spec).amount
        price = request.limit_price if request.type in LIMIT_PRICED_TYPES else request.trigger_price
        if price is None:  # validate_request guarantees one; kept for the type checker
            raise VenueRejected("invalid_price", "a price is required")
        return Asset(spec.quote), required_reservation(OrderSide.BUY, request.quantity, price, rate, spec).amount
