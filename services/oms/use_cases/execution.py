"""Talking to the venue about orders: send a recorded order, and apply what the venue says (fills, statuses).

Everything the venue tells us is applied idempotently: fills by (venue, trade id), statuses by comparing with the
order's state. An ambiguous answer to a submit leaves the order SUBMITTED for the resolver (reconciliation).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from services.oms.errors import VenueNotReadyError
from services.oms.ledger_repository import LedgerRepository
from services.oms.metrics import SUBMIT_TO_ACK, SUBMIT_TO_FILL, VENUE_ERRORS
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.use_cases.context import SYSTEM_ACTOR, OmsContext
from services.oms.use_cases.order_store import load_order, release_reservation, transition
from services.oms.use_cases.publishing import persist_ledger, publish_order_events
from services.oms.use_cases.quarantine import UNKNOWN_ORDER, quarantine_fill
from shared.db import UnitOfWork
from shared.domain.fees import FEE_VOLUME_WINDOW
from shared.domain.ledger import Ledger, LedgerError, LedgerUpdate, required_reservation, reservation_excess
from shared.domain.money import MONEY_CONTEXT, InstrumentSpec
from shared.domain.order_events import OrderEvent
from shared.domain.order_requests import LIMIT_PRICED_TYPES
from shared.domain.order_rules import OrderRuleError
from shared.domain.orders import Order
from shared.domain.types import AccountId, Asset, Liquidity, OrderId, OrderSide, OrderStatus, VenueOrderId
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueError,
    VenueFill,
    VenueNotReady,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.router import account_venue_name

log = get_logger(__name__)
VENUE_NOT_READY = VenueNotReadyError.code
CLOSING_STATUSES = frozenset({VenueOrderStatus.FILLED, VenueOrderStatus.CANCELED, VenueOrderStatus.EXPIRED})


class ExecuteOrders:
    """Send orders and apply the venue's fills and statuses; subscribed to the venue's updates."""

    def __init__(self, ctx: OmsContext) -> None:
        self.ctx = ctx
        self._recorded: dict[OrderId, Order] = {}

    def hand_over(self, order: Order) -> None:
        """The order placement has just committed, for the `send` of it that follows (no re-read of it)."""
        self._recorded[order.id] = order

    def forget(self, order_id: OrderId) -> None:
        """Drop a handed-over order whose send did not take it (a wrapper of `send` that never called it)."""
        self._recorded.pop(order_id, None)

    async def send(self, order_id: OrderId) -> Order | None:
        """Send a SUBMITTED order to the venue and apply the answer; an ambiguous answer is left to the resolver.
        The order as applying the answer left it, read under the account's lock; None when that is not known."""
        order = self._recorded.pop(order_id, None) or (await load_order(self.ctx, order_id)).order
        if order.status is not OrderStatus.SUBMITTED:
            return None
        started = time.perf_counter()
        try:
            update = await self.ctx.venue.submit(_venue_request(order))
        except VenueRejected as exc:
            reason = f"{exc.code}: {exc.message}"
            return await transition(self.ctx, order_id, lambda o, now: o.reject(reason, now), "venue")
        except VenueNotReady as exc:  # nothing was sent: no venue for the account, or its keys are unusable
            VENUE_ERRORS.labels(operation="submit", kind=type(exc).__name__).inc()
            reason = f"{VENUE_NOT_READY}: {exc.reason}"
            return await transition(self.ctx, order_id, lambda o, now: o.reject(reason, now), SYSTEM_ACTOR)
        except (AmbiguousOutcome, TemporaryError) as exc:
            VENUE_ERRORS.labels(operation="submit", kind=type(exc).__name__).inc()
            log.warning("venue_submit_unresolved", order_id=order_id, error_type=type(exc).__name__)
            return None
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="submit", kind=type(exc).__name__).inc()
            log.error("venue_submit_failed", order_id=order_id, error_type=type(exc).__name__, error=str(exc))
            return None
        SUBMIT_TO_ACK.observe(time.perf_counter() - started)
        return await self._apply(update)

    async def apply_update(self, update: VenueUpdate) -> None:
        """Apply a venue fill or status change (idempotent).

        A closing status that overtook some of its order's fills (redelivery, reordering) is not dropped:
        the missing fills are fetched from the venue (by sequence, idempotent), then the status is applied.
        """
        await self._apply(update)

    async def _apply(self, update: VenueUpdate) -> Order | None:
        """`apply_update`; the order as a status update left it (None: a fill, unknown, or after a catch-up)."""
        if isinstance(update, VenueFill):
            await self.apply_fill(update)
            return None
        changed, seen = await self._apply_status(update)
        if not changed and _fills_behind(update, seen):
            try:
                await self.catch_up_fills(AccountId(update.account_id))
            except VenueError as exc:
                VENUE_ERRORS.labels(operation="fills_since", kind=type(exc).__name__).inc()
                log.warning("venue_status_ahead_of_fills", client_order_id=update.client_order_id, error=str(exc))
                return None
            await self.apply_status(update)
            return None
        return None if seen is None else seen.order

    async def apply_fill(self, fill: VenueFill) -> bool:
        """Apply one fill exactly once (unique on venue + trade id); True when it changed something."""
        fill = _without_trailing_zeros(fill)
        venue = account_venue_name(self.ctx.venue, fill.account_id)
        async with self.ctx.account_transaction(fill.account_id) as uow:
            repo = OmsRepository(uow.session)
            await repo.lock_account(fill.account_id)
            stored = await repo.find_by_client_id(fill.account_id, fill.client_order_id)
            now = self.ctx.clock()
            if stored is None:
                await quarantine_fill(uow, venue, fill, None, UNKNOWN_ORDER, "no order has this client order id", now)
                return False
            ledger_repo = LedgerRepository(uow.session)
            try:  # a fill the order or the ledger refuses is quarantined (a replay of an applied one is a no-op)
                order, events = _filled(stored.order, fill, now)
                ledger = await ledger_repo.load_ledger(order.account_id)
                spec = self.ctx.instruments[order.symbol]
                update = ledger.apply_fill(
                    order.id,
                    order.side,
                    order.symbol,
                    Asset(spec.base),
                    Asset(spec.quote),
                    fill.quantity,
                    fill.price,
                    fill.fee,
                    quote_step=spec.quote_step,
                )
            except (OrderRuleError, LedgerError) as exc:
                if not await ledger_repo.fill_recorded(venue, fill.trade_id):
                    await quarantine_fill(uow, venue, fill, stored.order.id, exc.code, str(exc), now)
                return False
            if not await repo.insert_fill(_fill_row(venue, stored.order.id, fill)):
                return False
            if order.is_terminal and order.id in update.ledger.reservations:
                update = _chain(update, update.ledger.release(order.id))
            elif _improvable(order):
                update = _chain(update, await self._release_improvement(repo, order, spec, update.ledger, now))
            await repo.save(order, events)
            balance_changes = await persist_ledger(uow.session, ledger, update, now)
            await ledger_repo.add_fill_pnl(ledger, update.ledger, order.symbol, fill.filled_at)
            await publish_order_events(
                uow.session,
                self.ctx.tables,
                order,
                events,
                f"venue:{venue}",
                exits=stored.exits,
                queued_first=balance_changes,
            )
        SUBMIT_TO_FILL.observe(max(0.0, (self.ctx.clock() - stored.created_at).total_seconds()))
        return True

    async def _release_improvement(
        self, repo: OmsRepository, order: Order, spec: InstrumentSpec, ledger: Ledger, now: datetime
    ) -> LedgerUpdate:
        """A limit buy that filled below its limit releases what its unfilled part no longer needs, now (not when
        the order ends): the unfilled part at the limit price and the account's taker rate, rounded up."""
        reservation = ledger.reservations.get(order.id)
        if reservation is None or order.limit_price is None:
            return LedgerUpdate(ledger, ())
        volume = await repo.traded_volume_since(order.account_id, now - FEE_VOLUME_WINDOW)
        rate = self.ctx.fee_schedules.for_account(order.account_id).rate(Liquidity.TAKER, volume)
        leaves = order.quantity - order.filled_quantity
        still_needed = required_reservation(OrderSide.BUY, leaves, order.limit_price, rate, spec).amount
        excess = reservation_excess(reservation.remaining, still_needed)
        return ledger.release(order.id, excess) if excess > 0 else LedgerUpdate(ledger, ())

    async def apply_status(self, update: VenueOrder) -> bool:
        """Move the order to what the venue reports, when that is a legal step; True when it changed."""
        changed, _ = await self._apply_status(update)
        return changed

    async def _apply_status(self, update: VenueOrder) -> tuple[bool, StoredOrder | None]:
        """`apply_status`, with the order as it left it, read and changed under the account's lock (None: unknown
        here)."""
        async with self.ctx.account_transaction(update.account_id) as uow:
            repo = OmsRepository(uow.session)
            await repo.lock_account(update.account_id)
            stored = await repo.find_by_client_id(update.account_id, update.client_order_id)
            if stored is None:
                return False, None
            now = self.ctx.clock()
            outcome = _status_step(stored.order, update, now)
            if outcome is None:
                return False, stored
            order, events = outcome
            if order.is_terminal:
                await release_reservation(uow.session, self.ctx.tables, order, now)
            await repo.save(order, events)
            await publish_order_events(
                uow.session,
                self.ctx.tables,
                order,
                events,
                f"venue:{account_venue_name(self.ctx.venue, update.account_id)}",
                exits=stored.exits,
            )
        return True, replace(stored, order=order)

    async def catch_up_fills(self, account_id: AccountId) -> int:
        """Apply every venue fill after the account's cursor, in sequence, then advance the cursor."""
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            account = await OmsRepository(uow.session).get_account(account_id)
        if account is None:
            return 0
        applied, cursor = 0, account.fill_cursor
        for fill in await self.ctx.venue.fills_since(account_id, account.fill_cursor):
            if await self.apply_fill(fill):
                applied += 1
            cursor = max(cursor, fill.sequence)
        if cursor > account.fill_cursor:
            async with UnitOfWork(self.ctx.sessionmaker) as uow:
                await OmsRepository(uow.session).set_fill_cursor(account_id, cursor)
        return applied


def _fills_behind(update: VenueOrder, seen: StoredOrder | None) -> bool:
    """True when the venue closed the order with more filled than we have recorded (`seen`: the order as the status
    step just read it, under the account's lock; no second read)."""
    if update.status not in CLOSING_STATUSES or seen is None:
        return False
    return update.filled_quantity > seen.order.filled_quantity


def _filled(order: Order, fill: VenueFill, now: datetime) -> tuple[Order, list[OrderEvent]]:
    events: list[OrderEvent] = []
    if order.status is OrderStatus.SUBMITTED:
        # The fill beat the venue's acknowledgement: accept with the venue's order id first.
        order, events = order.accept(VenueOrderId(fill.venue_order_id), now)
    order, more = order.fill(fill.trade_id, fill.quantity, fill.price, fill.fee, fill.liquidity, now)
    return order, events + more


def _venue_request(order: Order) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=order.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        trigger_price=order.trigger_price,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
    )


def _without_trailing_zeros(fill: VenueFill) -> VenueFill:
    """The same fill with its amounts normalized: read back from NUMERIC(38,18) (the paper venue's `fills_since`)
    they carry 18 decimal places, and quantity x price would then exceed the 18 places the ledger accepts."""
    return replace(
        fill,
        quantity=fill.quantity.normalize(MONEY_CONTEXT),
        price=fill.price.normalize(MONEY_CONTEXT),
        fee=fill.fee.normalize(MONEY_CONTEXT),
    )


def _fill_row(venue: str, order_id: OrderId, fill: VenueFill) -> dict[str, Any]:
    return {
        "venue": venue,
        "trade_id": fill.trade_id,
        "order_id": order_id,
        "account_id": fill.account_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price": fill.price,
        "fee": fill.fee,
        "fee_asset": fill.fee_asset,
        "liquidity": fill.liquidity.value,
        "filled_at": fill.filled_at,
    }


def _improvable(order: Order) -> bool:
    """An open, partly filled limit-priced buy: its fills may have come in below its limit."""
    return (
        not order.is_terminal
        and order.side is OrderSide.BUY
        and order.type in LIMIT_PRICED_TYPES
        and order.filled_quantity < order.quantity
    )


def _chain(first: LedgerUpdate, second: LedgerUpdate) -> LedgerUpdate:
    return LedgerUpdate(second.ledger, first.entries + second.entries)


def _status_step(order: Order, update: VenueOrder, now: datetime) -> tuple[Order, list[OrderEvent]] | None:
    """The order's next step towards the venue's status, or None when nothing needs to (or may yet) change."""
    if order.is_terminal or order.status is OrderStatus.PENDING_APPROVAL:
        return None
    try:
        if update.status in {VenueOrderStatus.OPEN, VenueOrderStatus.FILLED}:
            if order.status is OrderStatus.SUBMITTED:
                return order.accept(VenueOrderId(update.venue_order_id), now)
            return None
        if update.status is VenueOrderStatus.REJECTED and order.status is OrderStatus.SUBMITTED:
            return order.reject(update.reason or "rejected by the venue", now)
        if update.filled_quantity > order.filled_quantity:
            return None  # fills still on their way: close the order once they are applied
        if update.status is VenueOrderStatus.CANCELED:
            return order.cancel(update.reason, now)
        if update.status is VenueOrderStatus.EXPIRED:
            return order.expire(now)
    except OrderRuleError as exc:
        log.error("venue_status_not_applicable", order_id=order.id, status=update.status.value, error=str(exc))
    return None
