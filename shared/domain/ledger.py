"""The spot ledger of one account: balances with reservations, positions, and the journal of every change.

Spot only: a buy spends free (or reserved) quote, a sell free (or reserved) base; nothing goes negative.
`Ledger` is an immutable value: every operation returns a `LedgerUpdate` with the new ledger and the
`LedgerEntry` rows to append to the journal, so the OMS persists exactly what the domain computed.

Cost basis: a buy's fee is part of the position's cost (`cost_basis`, so `average_entry_price` is the
break-even price), a sell's fee is charged to that sell's realized PnL. On a round trip back to flat,
`realized_pnl` is therefore the quote cash the fills made or lost, fees included. `fees_paid` counts
both sides' fees for reporting.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from types import MappingProxyType
from typing import ParamSpec, TypeVar

from shared.domain.fees import MAX_FEE_RATE, UPWARD_CONTEXT, FeeScheduleError, quantize_up
from shared.domain.money import (
    MONEY_CONTEXT,
    InstrumentSpec,
    MoneyError,
    format_decimal,
    quantize_nearest,
    to_decimal,
)
from shared.domain.types import AccountId, Asset, OrderId, OrderSide, Symbol

ZERO = Decimal(0)
# Positions divide (a partial sell releases a share of the cost); shares are kept to NUMERIC(38,18).
POSITION_STEP = Decimal("1e-18")
# Balance arithmetic must be exact: a result that needs rounding is refused, never silently rounded.
_EXACT_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])

_P = ParamSpec("_P")
_R = TypeVar("_R")


class LedgerError(ValueError):
    """A ledger operation that was refused; `code` is machine-readable."""

    code = "ledger_error"


class InsufficientBalance(LedgerError):
    """The free balance of `asset` does not cover `needed`."""

    code = "insufficient_balance"

    def __init__(self, asset: Asset, needed: Decimal, free: Decimal) -> None:
        super().__init__(f"insufficient {asset}: needs {format_decimal(needed)}, {format_decimal(free)} free")
        self.asset = asset
        self.needed = needed
        self.free = free


class InvalidAmount(LedgerError):
    """An amount that is not positive, or too large or too precise for NUMERIC(38,18)."""

    code = "invalid_amount"


class ReservationConflict(LedgerError):
    """A reservation that already exists, is in another asset, or is smaller than a release."""

    code = "reservation_conflict"


class LedgerInconsistent(LedgerError):
    """Reserved balances that do not match the open reservations."""

    code = "ledger_inconsistent"


class EntryReason(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    RESERVE = "reserve"
    RELEASE = "release"
    TRADE = "trade"
    FEE = "fee"


def _exact(method: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(_EXACT_CONTEXT):
            try:
                return method(*args, **kwargs)
            except (Inexact, InvalidOperation, Overflow) as error:
                raise InvalidAmount("amounts too large or too precise to be kept exactly") from error

    return wrapper


def _money(name: str, value: Decimal) -> Decimal:
    try:
        return to_decimal(value)
    except MoneyError as error:
        raise InvalidAmount(f"{name}: {error}") from None


def _positive(name: str, value: Decimal) -> Decimal:
    amount = _money(name, value)
    if amount <= 0:
        raise InvalidAmount(f"{name} must be positive: {format_decimal(amount)}")
    return amount


@dataclass(frozen=True, slots=True)
class Balance:
    """Holdings of one asset: `total`, of which `reserved` backs open orders."""

    asset: Asset
    total: Decimal = ZERO
    reserved: Decimal = ZERO

    def __post_init__(self) -> None:
        if not ZERO <= self.reserved <= self.total:
            raise LedgerInconsistent(
                f"{self.asset}: need 0 <= reserved <= total, got reserved {self.reserved}, total {self.total}"
            )

    @property
    def free(self) -> Decimal:
        """`total - reserved`, exact in the money context whatever context the caller runs in (the default 28
        digits would round a NUMERIC(38,18) balance)."""
        return MONEY_CONTEXT.subtract(self.total, self.reserved)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What is still reserved for one open order, in the asset the order pays with."""

    order_id: OrderId
    asset: Asset
    remaining: Decimal

    def __post_init__(self) -> None:
        if self.remaining < 0:
            raise LedgerInconsistent(f"reservation of {self.order_id} is negative: {self.remaining}")


@dataclass(frozen=True, slots=True)
class Position:
    """Spot position of one symbol: open quantity, its cost (buy fees included), realized PnL, fees."""

    symbol: Symbol
    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO

    @property
    def average_entry_price(self) -> Decimal | None:
        """Cost per unit held, buy fees included; None when flat."""
        if self.quantity == 0:
            return None
        return MONEY_CONTEXT.divide(self.cost_basis, self.quantity).quantize(POSITION_STEP, context=MONEY_CONTEXT)

    @_exact
    def after_buy(self, quantity: Decimal, cost: Decimal, fee: Decimal) -> Position:
        """The position after buying `quantity` for `cost` quote (as booked) and `fee` quote."""
        return Position(
            self.symbol,
            self.quantity + quantity,
            self.cost_basis + cost + fee,
            self.realized_pnl,
            self.fees_paid + fee,
        )

    @_exact
    def after_sell(self, quantity: Decimal, proceeds: Decimal, fee: Decimal) -> Position:
        """The position after selling `quantity` for `proceeds` quote (as booked) and `fee` quote."""
        # Base that did not come from this symbol's buys (a deposit) has no known cost: that part of a sell
        # realizes no gain or loss (the whole fee still does), and the position never goes below zero.
        covered = min(quantity, self.quantity)
        if covered == self.quantity:
            released_cost = self.cost_basis
        else:
            share = MONEY_CONTEXT.divide(MONEY_CONTEXT.multiply(self.cost_basis, covered), self.quantity)
            released_cost = share.quantize(POSITION_STEP, context=MONEY_CONTEXT)
        if covered == quantity:
            covered_proceeds = proceeds
        else:
            part = MONEY_CONTEXT.divide(MONEY_CONTEXT.multiply(proceeds, covered), quantity)
            covered_proceeds = part.quantize(POSITION_STEP, context=MONEY_CONTEXT)
        return Position(
            self.symbol,
            self.quantity - covered,
            self.cost_basis - released_cost,
            self.realized_pnl + covered_proceeds - released_cost - fee,
            self.fees_paid + fee,
        )


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One journal row: how one operation changed one asset's total and reserved balance."""

    account_id: AccountId
    asset: Asset
    delta_total: Decimal
    delta_reserved: Decimal
    reason: EntryReason
    reference: str | None


@dataclass(frozen=True, slots=True)
class ReservationRequirement:
    """What an order must reserve before it may rest at the venue."""

    asset: Asset
    amount: Decimal


@_exact
def required_reservation(
    side: OrderSide,
    quantity: Decimal,
    price_for_reservation: Decimal,
    fee_rate: Decimal,
    spec: InstrumentSpec,
) -> ReservationRequirement:
    """Amount to reserve: a buy its quote cost and fee at `fee_rate`, each rounded up; a sell its base quantity.

    A limit buy passes its limit price. A market buy passes the walk of the levels it may take (see
    `walked_reservation`), or a reference price with a slippage buffer; a fill beyond the reservation draws on
    free quote or is refused. Pass the taker rate: it is the higher one, so a fill as maker leaves a remainder
    that `release` returns. Amounts are rounded up to the quote asset's precision (`spec.quote_step`): the venue
    rounds each fill's cost and fee to the nearest step, so many partial fills can cost a few steps more than
    one fill would; that excess is taken from free quote.
    """
    quantity = _positive("quantity", quantity)
    if side is OrderSide.SELL:
        return ReservationRequirement(Asset(spec.base), quantity)
    price = _positive("price_for_reservation", price_for_reservation)
    if not ZERO <= fee_rate <= MAX_FEE_RATE:
        raise FeeScheduleError(f"fee rate must be within [0, {MAX_FEE_RATE}]: {fee_rate}")
    step = spec.quote_step
    cost = quantize_up(UPWARD_CONTEXT.multiply(quantity, price), step)
    amount = cost + quantize_up(UPWARD_CONTEXT.multiply(cost, fee_rate), step)
    return ReservationRequirement(Asset(spec.quote), _money("reservation", amount))


@_exact
def walked_reservation(
    levels: Iterable[tuple[Decimal, Decimal]], quantity: Decimal, fee_rate: Decimal, spec: InstrumentSpec
) -> ReservationRequirement:
    """What a market buy of `quantity` reserves when it walks `levels` (ask price and free quantity, best first):
    per level it takes, `required_reservation` of that part at that price, as each fill will be charged. Levels
    that do not cover the quantity reserve what they cover."""
    remaining, amount = _positive("quantity", quantity), ZERO
    for price, available in levels:
        taken = min(remaining, available)
        if taken <= 0:
            continue
        amount += required_reservation(OrderSide.BUY, taken, price, fee_rate, spec).amount
        remaining -= taken
        if remaining <= 0:
            break
    return ReservationRequirement(Asset(spec.quote), _money("reservation", amount))


def reservation_excess(reserved_remaining: Decimal, still_needed: Decimal) -> Decimal:
    """What an open order's reservation holds beyond what its unfilled part still needs (a limit buy that filled
    below its limit price): the amount to release now rather than when the order ends."""
    return max(MONEY_CONTEXT.subtract(reserved_remaining, still_needed), ZERO)


@dataclass(frozen=True, slots=True)
class FillPayment:
    """What one fill takes from the account in the asset it pays (a buy: notional + fee in quote; a sell: the
    base quantity), and the part of it the order's reservation covers; the rest comes from free balance."""

    paid: Decimal
    from_reservation: Decimal

    @property
    def shortfall(self) -> Decimal:
        """The part not covered by the reservation."""
        return self.paid - self.from_reservation


@_exact
def fill_payment(
    side: OrderSide, quantity: Decimal, notional: Decimal, fee: Decimal, reserved_remaining: Decimal
) -> FillPayment:
    """How a fill is paid: the reservation first (never more than it still holds), then free balance."""
    paid = notional + fee if side is OrderSide.BUY else quantity
    return FillPayment(paid, min(paid, max(reserved_remaining, ZERO)))


def balances_from_entries(entries: Iterable[LedgerEntry]) -> dict[Asset, Balance]:
    """Balances that a journal of one account sums to (for reconciliation and invariant checks)."""
    totals: dict[Asset, tuple[Decimal, Decimal]] = {}
    with localcontext(_EXACT_CONTEXT):
        for entry in entries:
            total, reserved = totals.get(entry.asset, (ZERO, ZERO))
            totals[entry.asset] = (total + entry.delta_total, reserved + entry.delta_reserved)
    return {asset: Balance(asset, total, reserved) for asset, (total, reserved) in totals.items()}


@dataclass(frozen=True, slots=True)
class LedgerUpdate:
    """The ledger after an operation and the journal entries that record it (empty when nothing changed)."""

    ledger: Ledger
    entries: tuple[LedgerEntry, ...]


@dataclass(frozen=True, slots=True)
class Ledger:
    """Balances, open reservations (by order) and positions (by symbol) of one account."""

    account_id: AccountId
    balances: Mapping[Asset, Balance] = field(default_factory=dict)
    reservations: Mapping[OrderId, Reservation] = field(default_factory=dict)
    positions: Mapping[Symbol, Position] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "balances", MappingProxyType(dict(self.balances)))
        object.__setattr__(self, "reservations", MappingProxyType(dict(self.reservations)))
        object.__setattr__(self, "positions", MappingProxyType(dict(self.positions)))

    def balance(self, asset: Asset) -> Balance:
        """Balance of `asset` (zero when the account never held it)."""
        return self.balances.get(asset) or Balance(asset)

    def position(self, symbol: Symbol) -> Position:
        """Position in `symbol` (flat when the account never traded it)."""
        return self.positions.get(symbol) or Position(symbol)

    def verify(self) -> None:
        """Raise `LedgerInconsistent` unless every reserved balance equals the sum of its open reservations."""
        reserved: dict[Asset, Decimal] = {}
        for reservation in self.reservations.values():
            reserved[reservation.asset] = reserved.get(reservation.asset, ZERO) + reservation.remaining
        for asset in sorted(reserved.keys() | self.balances.keys()):
            if reserved.get(asset, ZERO) != self.balance(asset).reserved:
                raise LedgerInconsistent(f"{asset}: reserved balance does not match the open reservations")

    @_exact
    def deposit(self, asset: Asset, amount: Decimal, reference: str | None = None) -> LedgerUpdate:
        """Credit `amount` of `asset`."""
        amount = _positive("amount", amount)
        return self._updated([self._entry(asset, amount, ZERO, EntryReason.DEPOSIT, reference)])

    @_exact
    def withdraw(self, asset: Asset, amount: Decimal, reference: str | None = None) -> LedgerUpdate:
        """Debit `amount` of `asset` from its free balance."""
        amount = _positive("amount", amount)
        free = self.balance(asset).free
        if amount > free:
            raise InsufficientBalance(asset, amount, free)
        return self._updated([self._entry(asset, -amount, ZERO, EntryReason.WITHDRAWAL, reference)])

    @_exact
    def reserve(self, order_id: OrderId, asset: Asset, amount: Decimal) -> LedgerUpdate:
        """Move `amount` of free `asset` into a reservation for `order_id` (one reservation per order)."""
        amount = _positive("amount", amount)
        if order_id in self.reservations:
            raise ReservationConflict(f"order {order_id} already holds a reservation")
        free = self.balance(asset).free
        if amount > free:
            raise InsufficientBalance(asset, amount, free)
        reservations = {**self.reservations, order_id: Reservation(order_id, asset, amount)}
        entry = self._entry(asset, ZERO, amount, EntryReason.RESERVE, order_id)
        return self._updated([entry], reservations=reservations)

    @_exact
    def release(self, order_id: OrderId, amount: Decimal | None = None) -> LedgerUpdate:
        """Return `amount` (default: all that remains, closing the reservation) of `order_id`'s reservation.

        Call it without `amount` whenever the order reaches a terminal state, filled included (a fill
        at a better price leaves a remainder). An order without an open reservation releases nothing,
        so a repeated release changes nothing.
        """
        reservation = self.reservations.get(order_id)
        if reservation is None:
            return LedgerUpdate(self, ())
        reservations = dict(self.reservations)
        if amount is None:
            amount = reservation.remaining
            del reservations[order_id]
        else:
            amount = _positive("amount", amount)
            if amount > reservation.remaining:
                raise ReservationConflict(
                    f"order {order_id} has {format_decimal(reservation.remaining)} reserved,"
                    f" cannot release {format_decimal(amount)}"
                )
            reservations[order_id] = Reservation(order_id, reservation.asset, reservation.remaining - amount)
        entry = self._entry(reservation.asset, ZERO, -amount, EntryReason.RELEASE, order_id)
        return self._updated([entry], reservations=reservations)

    @_exact
    def apply_fill(
        self,
        order_id: OrderId,
        side: OrderSide,
        symbol: Symbol,
        base: Asset,
        quote: Asset,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal,
        *,
        quote_step: Decimal,
    ) -> LedgerUpdate:
        """Settle a fill of `quantity` base at `price` with `fee` in quote, consuming the order's reservation first.

        The trade's cost is `quantity * price` rounded to the nearest `quote_step` (the quote asset's precision,
        as the venue books it). A buy pays cost + fee quote and receives `quantity` base; a sell pays `quantity`
        base and receives cost - fee quote. What the reservation does not cover comes from the free balance;
        when that is short too, the fill is refused with `InsufficientBalance`.
        """
        if base == quote:
            raise InvalidAmount(f"base and quote must differ: {base}")
        quantity = _positive("quantity", quantity)
        price = _positive("price", price)
        fee = _money("fee", fee)
        if fee < 0:
            raise InvalidAmount(f"fee must not be negative: {format_decimal(fee)}")
        notional = _money("notional", quantize_nearest(MONEY_CONTEXT.multiply(quantity, price), quote_step))
        paid_asset = quote if side is OrderSide.BUY else base
        reservation = self.reservations.get(order_id)
        if reservation is not None and reservation.asset != paid_asset:
            raise ReservationConflict(f"order {order_id} reserved {reservation.asset}, the fill pays {paid_asset}")
        payment = fill_payment(side, quantity, notional, fee, ZERO if reservation is None else reservation.remaining)
        from_reservation = payment.from_reservation
        if payment.shortfall > self.balance(paid_asset).free:
            raise InsufficientBalance(paid_asset, payment.shortfall, self.balance(paid_asset).free)
        reservations = dict(self.reservations)
        if reservation is not None:
            reservations[order_id] = Reservation(order_id, paid_asset, reservation.remaining - from_reservation)
        position = self.position(symbol)
        if side is OrderSide.BUY:
            entries = self._buy_entries(order_id, base, quote, quantity, notional, fee, from_reservation)
            position = position.after_buy(quantity, notional, fee)
        else:
            entries = self._sell_entries(order_id, base, quote, quantity, notional, fee, from_reservation)
            position = position.after_sell(quantity, notional, fee)
        positions = {**self.positions, symbol: position}
        return self._updated(entries, reservations=reservations, positions=positions)

    def _buy_entries(
        self,
        order_id: OrderId,
        base: Asset,
        quote: Asset,
        quantity: Decimal,
        notional: Decimal,
        fee: Decimal,
        from_reservation: Decimal,
    ) -> list[LedgerEntry]:
        trade_reserved = min(from_reservation, notional)
        return [
            self._entry(quote, -notional, -trade_reserved, EntryReason.TRADE, order_id),
            self._entry(quote, -fee, trade_reserved - from_reservation, EntryReason.FEE, order_id),
            self._entry(base, quantity, ZERO, EntryReason.TRADE, order_id),
        ]

    def _sell_entries(
        self,
        order_id: OrderId,
        base: Asset,
        quote: Asset,
        quantity: Decimal,
        notional: Decimal,
        fee: Decimal,
        from_reservation: Decimal,
    ) -> list[LedgerEntry]:
        quote_free = self.balance(quote).free
        if fee > notional + quote_free:
            raise InsufficientBalance(quote, fee - notional, quote_free)
        return [
            self._entry(base, -quantity, -from_reservation, EntryReason.TRADE, order_id),
            self._entry(quote, notional, ZERO, EntryReason.TRADE, order_id),
            self._entry(quote, -fee, ZERO, EntryReason.FEE, order_id),
        ]

    def _entry(
        self, asset: Asset, delta_total: Decimal, delta_reserved: Decimal, reason: EntryReason, reference: str | None
    ) -> LedgerEntry:
        return LedgerEntry(self.account_id, asset, delta_total, delta_reserved, reason, reference)

    def _updated(
        self,
        entries: list[LedgerEntry],
        *,
        reservations: Mapping[OrderId, Reservation] | None = None,
        positions: Mapping[Symbol, Position] | None = None,
    ) -> LedgerUpdate:
        kept = tuple(entry for entry in entries if entry.delta_total != 0 or entry.delta_reserved != 0)
        deltas: dict[Asset, tuple[Decimal, Decimal]] = {}
        for entry in kept:
            total, reserved = deltas.get(entry.asset, (ZERO, ZERO))
            deltas[entry.asset] = (total + entry.delta_total, reserved + entry.delta_reserved)
        balances = dict(self.balances)
        for asset, (delta_total, delta_reserved) in deltas.items():
            current = self.balance(asset)
            balances[asset] = Balance(
                asset,
                _money(f"{asset} total", current.total + delta_total),
                _money(f"{asset} reserved", current.reserved + delta_reserved),
            )
        ledger = Ledger(
            self.account_id,
            balances,
            self.reservations if reservations is None else reservations,
            self.positions if positions is None else positions,
        )
        return LedgerUpdate(ledger, kept)
