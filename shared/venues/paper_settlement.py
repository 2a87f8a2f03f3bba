"""The paper venue's books: engine reports settled into its orders, fills and balances (`Settlement`, with the
ledger's reservation and fill arithmetic), and how a request becomes a paper order and an engine order.

`shared/venues/paper.py` keeps the venue itself (its protocol, the per-symbol locks and submit batches), and
`shared/venues/paper_market.py` each symbol's engine and the operations that run under its lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from shared.domain.fees import FEE_VOLUME_WINDOW
from shared.domain.ledger import fill_payment, required_reservation, reservation_excess
from shared.domain.matching import ExecutionReport, ReportKind
from shared.domain.money import InstrumentSpec, format_decimal
from shared.domain.order_requests import LIMIT_PRICED_TYPES, TRIGGERED_TYPES
from shared.domain.sim_orders import SimOrder
from shared.domain.types import (
    AccountId,
    Asset,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TimeInForce,
    TradeId,
    VenueOrderId,
)
from shared.venues.base import (
    VenueFill,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_store import Holding, HoldingKey, PaperOrder, PaperStore

ZERO = Decimal(0)


class VenueTerms(Protocol):
    """What settlement needs from the venue: instruments, each account's fees and the balance rows known to exist."""

    known_holdings: set[HoldingKey]

    def spec(self, symbol: Symbol) -> InstrumentSpec: ...

    def fee_rate(self, account_id: AccountId, liquidity: Liquidity, volume_30d: Decimal) -> Decimal: ...

    def fee(
        self, account_id: AccountId, symbol: Symbol, cost: Decimal, liquidity: Liquidity, volume_30d: Decimal
    ) -> Decimal: ...


class DuplicateRace(Exception):
    """Another writer stored the same (account, client order id) first."""


@dataclass
class Outcome:
    """What one committed operation produced, for the listeners."""

    fills: list[VenueFill] = field(default_factory=list)
    closed: list[PaperOrder] = field(default_factory=list)  # orders that left OPEN

    def updates(self, answered: Collection[VenueOrderId] = ()) -> list[VenueUpdate]:
        """Fills first (the OMS closes an order only once its fills are in), then status changes not answered."""
        return [*self.fills, *(o.to_venue() for o in self.closed if o.venue_order_id not in answered)]


class Settlement:
    """Applies engine reports to the venue's books in memory, then writes them in the caller's transaction."""

    def __init__(self, venue: VenueTerms, store: PaperStore, now: datetime) -> None:
        self.venue = venue
        self.store = store
        self.now = now
        self._orders: dict[VenueOrderId, PaperOrder] = {}
        self._original: dict[VenueOrderId, PaperOrder] = {}
        self._new: dict[VenueOrderId, None] = {}  # insertion-ordered set of orders placed in this transaction
        self._holdings: dict[HoldingKey, Holding] = {}
        self._changed_holdings: set[HoldingKey] = set()
        self._volumes: dict[AccountId, Decimal] = {}
        self._fills: list[VenueFill] = []
        self.locked_keys: set[HoldingKey] = set()
        self.to_withdraw: list[VenueOrderId] = []  # resting orders the engine must drop (closed here)

    async def prepare(self, pairs: Iterable[tuple[AccountId, Symbol]]) -> None:
        """Lock the accounts' balances of the symbols' assets and read their 30-day volumes."""
        keys: set[HoldingKey] = set()
        for account, symbol in pairs:
            spec = self.venue.spec(symbol)
            keys |= {(account, Asset(spec.base)), (account, Asset(spec.quote))}
        locked = await self.store.lock_holdings(
            keys, self.now, volume_since=self.now - FEE_VOLUME_WINDOW, known=self.venue.known_holdings
        )
        self._holdings, self._volumes = locked.holdings, locked.volumes_30d
        self.locked_keys = keys

    def volume(self, account_id: AccountId) -> Decimal:
        return self._volumes.get(account_id, ZERO)

    def reserve(self, account_id: AccountId, asset: Asset, amount: Decimal) -> None:
        """Hold `amount` of free `asset` for a new order, or refuse with `insufficient_funds`."""
        holding = self._holdings[(account_id, asset)]
        if amount > holding.free:
            raise VenueRejected(
                "insufficient_funds",
                f"insufficient {asset}: needs {format_decimal(amount)}, {format_decimal(holding.free)} free",
            )
        self._set_holding((account_id, asset), Holding(holding.total, holding.reserved + amount))

    def unreserve(self, account_id: AccountId, asset: Asset, amount: Decimal) -> None:
        """Undo `reserve` for an order that was refused."""
        holding = self._holdings[(account_id, asset)]
        self._set_holding((account_id, asset), Holding(holding.total, holding.reserved - amount))

    def track(self, order: PaperOrder) -> None:
        """An existing order the reports may change."""
        self._orders[order.venue_order_id] = order
        self._original.setdefault(order.venue_order_id, order)

    def add_new(self, order: PaperOrder) -> None:
        """An order placed in this transaction (inserted by `save` in its final state)."""
        self._orders[order.venue_order_id] = order
        self._new[order.venue_order_id] = None

    def order(self, venue_order_id: VenueOrderId) -> PaperOrder:
        return self._orders[venue_order_id]

    def apply(self, reports: Iterable[ExecutionReport]) -> None:
        """Apply reports in engine order; reports for orders already closed here are ignored."""
        for report in reports:
            order = self._orders.get(VenueOrderId(report.order_id))
            if order is None or not order.is_open:
                continue
            if report.kind is ReportKind.FILL:
                self._fill(order, report)
            elif report.kind is ReportKind.TRIGGERED:
                self._orders[order.venue_order_id] = replace(order, triggered=True, updated_at=self.now)
            elif report.kind is ReportKind.CANCELED:
                self.close(order, VenueOrderStatus.CANCELED, report.reason)
            elif report.kind is ReportKind.EXPIRED:
                self.close(order, VenueOrderStatus.EXPIRED, report.reason)
            elif report.kind is ReportKind.REJECTED and report.reason != "unknown_order":
                # Refused after a delayed submit: OPEN was answered already, so it is reported CANCELED.
                self.close(order, VenueOrderStatus.CANCELED, report.reason)

    def close(self, order: PaperOrder, status: VenueOrderStatus, reason: str | None) -> PaperOrder:
        """Close the order and release what it still holds."""
        key = (order.account_id, order.reserved_asset)
        if order.reserved_remaining > 0:
            holding = self._holdings[key]
            self._set_holding(key, Holding(holding.total, holding.reserved - order.reserved_remaining))
        closed = replace(order, status=status, reason=reason, reserved_remaining=ZERO, updated_at=self.now)
        self._orders[order.venue_order_id] = closed
        return closed

    def can_pay(self, order: PaperOrder, takes: Iterable[tuple[Decimal, Decimal]]) -> bool:
        """Whether the account can pay for `order` taking `takes` ((price, quantity) per level) as taker, fees at
        full price: checked before the engine is asked, so a refused order leaves the engine untouched."""
        spec = self.venue.spec(order.symbol)
        quote = self._holdings[(order.account_id, Asset(spec.quote))]
        volume, paid, received = self.volume(order.account_id), ZERO, ZERO
        for price, quantity in takes:
            cost = spec.trade_cost(quantity, price)
            fee = self.venue.fee(order.account_id, order.symbol, cost, Liquidity.TAKER, volume)
            volume += cost
            if order.side is OrderSide.BUY:
                paid += cost + fee
            else:
                paid, received = paid + fee, received + cost
        if order.side is OrderSide.BUY:
            return paid - order.reserved_remaining <= quote.free
        return paid <= received + quote.free

    def _fill(self, order: PaperOrder, report: ExecutionReport) -> None:
        quantity, price, liquidity = report.quantity, report.price, report.liquidity
        if quantity is None or price is None or liquidity is None:
            raise ValueError(f"fill report without quantity, price or liquidity: {report}")
        spec = self.venue.spec(order.symbol)
        cost = spec.trade_cost(quantity, price)
        fee = self.venue.fee(order.account_id, order.symbol, cost, liquidity, self.volume(order.account_id))
        from_reservation = self._settle_balances(order, quantity, cost, fee)
        if from_reservation is None:
            if order.type in LIMIT_PRICED_TYPES and order.time_in_force is TimeInForce.GTC:
                self.to_withdraw.append(order.venue_order_id)
            self.close(order, VenueOrderStatus.CANCELED, "insufficient_funds")
            return
        self._volumes[order.account_id] = self.volume(order.account_id) + cost
        order = replace(
            order,
            filled_quantity=order.filled_quantity + quantity,
            fill_count=order.fill_count + 1,
            reserved_remaining=order.reserved_remaining - from_reservation,
            updated_at=self.now,
        )
        order = self._release_improvement(order)
        self._orders[order.venue_order_id] = order
        self._fills.append(
            VenueFill(
                account_id=order.account_id,
                client_order_id=order.client_order_id,
                venue_order_id=order.venue_order_id,
                # Unique venue-wide and stable across restarts (the engine's own trade counter is not).
                trade_id=TradeId(f"{order.venue_order_id}-{order.fill_count}"),
                symbol=order.symbol,
                side=order.side,
                quantity=quantity,
                price=price,
                fee=fee,
                fee_asset=Asset(self.venue.spec(order.symbol).quote),
                liquidity=liquidity,
                filled_at=self.now,
                sequence=0,  # assigned by the database in `save`
            )
        )
        if order.filled_quantity >= order.quantity:
            self.close(order, VenueOrderStatus.FILLED, None)

    def _release_improvement(self, order: PaperOrder) -> PaperOrder:
        """A limit buy that filled below its limit releases what its unfilled part no longer needs, now."""
        if not order.is_open or order.side is not OrderSide.BUY or order.limit_price is None:
            return order
        if order.type not in LIMIT_PRICED_TYPES or order.filled_quantity >= order.quantity:
            return order
        spec = self.venue.spec(order.symbol)
        rate = self.venue.fee_rate(order.account_id, Liquidity.TAKER, self.volume(order.account_id))
        leaves = order.quantity - order.filled_quantity
        still_needed = required_reservation(OrderSide.BUY, leaves, order.limit_price, rate, spec).amount
        excess = reservation_excess(order.reserved_remaining, still_needed)
        if excess <= 0:
            return order
        key = (order.account_id, order.reserved_asset)
        holding = self._holdings[key]
        self._set_holding(key, Holding(holding.total, holding.reserved - excess))
        return replace(order, reserved_remaining=order.reserved_remaining - excess)

    def _settle_balances(self, order: PaperOrder, quantity: Decimal, cost: Decimal, fee: Decimal) -> Decimal | None:
        """Move balances for one fill; returns what it took from the reservation, None if the account cannot pay.

        Per-fill rounding can cost a few quote steps more than the reservation holds: that comes from free
        balance. The fee is never lowered: a fill the account cannot pay in full is refused.
        """
        spec = self.venue.spec(order.symbol)
        base_key, quote_key = (order.account_id, Asset(spec.base)), (order.account_id, Asset(spec.quote))
        base, quote = self._holdings[base_key], self._holdings[quote_key]
        payment = fill_payment(order.side, quantity, cost, fee, order.reserved_remaining)
        paid, from_reservation = payment.paid, payment.from_reservation
        if order.side is OrderSide.BUY:
            if payment.shortfall > quote.free:
                return None
            self._set_holding(quote_key, Holding(quote.total - paid, quote.reserved - from_reservation))
            self._set_holding(base_key, Holding(base.total + quantity, base.reserved))
            return from_reservation
        if payment.shortfall > base.free or fee > cost + quote.free:
            return None
        self._set_holding(base_key, Holding(base.total - paid, base.reserved - from_reservation))
        self._set_holding(quote_key, Holding(quote.total + cost - fee, quote.reserved))
        return from_reservation

    def _set_holding(self, key: HoldingKey, holding: Holding) -> None:
        self._holdings[key] = holding
        self._changed_holdings.add(key)

    async def save(self) -> Outcome:
        """Write new orders, fills, changed orders and balances; returns what the listeners should hear."""
        new = [self._orders[venue_order_id] for venue_order_id in self._new]
        if len(await self.store.insert_orders(new)) != len(new):
            raise DuplicateRace
        if self._fills:
            # Per account, fills commit in the order of their sequence numbers: `fills_since` never skips one.
            await self.store.lock_accounts(fill.account_id for fill in self._fills)
        fills = await self.store.insert_fills(self._fills)
        changed = [o for vid, o in self._orders.items() if vid not in self._new and o != self._original.get(vid)]
        await self.store.update_orders(changed)
        await self.store.set_holdings({key: self._holdings[key] for key in self._changed_holdings}, self.now)
        closed = [o for o in (*new, *changed) if not o.is_open]
        return Outcome(fills, closed)


def validate_request(request: VenueOrderRequest, spec: InstrumentSpec) -> None:
    problem = spec.quantity_error(request.quantity)
    if problem is not None:
        raise VenueRejected("invalid_quantity", f"{request.symbol}: {problem}")
    needs_limit = request.type in LIMIT_PRICED_TYPES
    if needs_limit != (request.limit_price is not None):
        raise VenueRejected(
            "invalid_order", f"a {request.type.value} order {'needs' if needs_limit else 'takes no'} limit price"
        )
    needs_trigger = request.type in TRIGGERED_TYPES
    if needs_trigger != (request.trigger_price is not None):
        raise VenueRejected(
            "invalid_order", f"a {request.type.value} order {'needs' if needs_trigger else 'takes no'} trigger price"
        )
    if request.post_only and (request.type is not OrderType.LIMIT or request.time_in_force is not TimeInForce.GTC):
        raise VenueRejected("invalid_order", "post-only applies to GTC limit orders only")
    for price in (request.limit_price, request.trigger_price):
        if price is not None and (problem := spec.price_error(price)) is not None:
            raise VenueRejected("invalid_price", f"{request.symbol}: {problem}")


def new_order(request: VenueOrderRequest, reserved_asset: Asset, reserved: Decimal, now: datetime) -> PaperOrder:
    return PaperOrder(
        venue_order_id=VenueOrderId(f"P{uuid.uuid4().hex}"),
        account_id=request.account_id,
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        quantity=request.quantity,
        limit_price=request.limit_price,
        trigger_price=request.trigger_price,
        time_in_force=request.time_in_force,
        post_only=request.post_only,
        status=VenueOrderStatus.OPEN,
        filled_quantity=ZERO,
        fill_count=0,
        triggered=False,
        reason=None,
        reserved_asset=reserved_asset,
        reserved_remaining=reserved,
        created_at=now,
        updated_at=now,
    )


def sim_order(order: PaperOrder) -> SimOrder:
    return SimOrder(
        order_id=order.venue_order_id,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        trigger_price=order.trigger_price,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
    )


def can_wait(order: PaperOrder) -> bool:
    """Orders that may sit in the engine across a restart: GTC limits, stops before their trigger."""
    if order.type in TRIGGERED_TYPES and not order.triggered and order.filled_quantity == 0:
        return True
    return order.type in LIMIT_PRICED_TYPES and order.time_in_force is TimeInForce.GTC
