from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE, compute_fee
from shared.domain.ledger import (
    Balance,
    EntryReason,
    InsufficientBalance,
    InvalidAmount,
    Ledger,
    LedgerEntry,
    LedgerInconsistent,
    LedgerUpdate,
    Position,
    Reservation,
    ReservationConflict,
    balances_from_entries,
    required_reservation,
)
from shared.domain.money import InstrumentSpec
from shared.domain.types import AccountId, Asset, Liquidity, OrderId, OrderSide, Symbol

D = Decimal
ACCOUNT = AccountId("acc-1")
USD = Asset("USD")
BTC = Asset("BTC")
BTC_USD = Symbol("BTC/USD")
CENT = D("0.01")
SPEC = InstrumentSpec(
    "BTC/USD", "BTC", "USD", D("0.1"), D("0.00000001"), D("0.0001"), base_step=D("1e-10"), quote_step=CENT
)
TAKER_RATE = D("0.004")
BUY = OrderSide.BUY
SELL = OrderSide.SELL
O1 = OrderId("o-1")
O2 = OrderId("o-2")


def funded(*deposits: tuple[Asset, str]) -> Ledger:
    ledger = Ledger(ACCOUNT)
    for asset, amount in deposits:
        ledger = ledger.deposit(asset, D(amount)).ledger
    return ledger


def buy_fill(ledger: Ledger, order_id: OrderId, quantity: str, price: str, fee: str) -> Ledger:
    return ledger.apply_fill(order_id, BUY, BTC_USD, BTC, USD, D(quantity), D(price), D(fee), quote_step=CENT).ledger


def sell_fill(ledger: Ledger, order_id: OrderId, quantity: str, price: str, fee: str) -> Ledger:
    return ledger.apply_fill(order_id, SELL, BTC_USD, BTC, USD, D(quantity), D(price), D(fee), quote_step=CENT).ledger


def test_deposit_credits_total_and_free() -> None:
    update = Ledger(ACCOUNT).deposit(USD, D(10_000), reference="dep-1")
    assert update.ledger.balance(USD) == Balance(USD, D(10_000), D(0))
    assert update.ledger.balance(USD).free == D(10_000)
    assert update.entries == (LedgerEntry(ACCOUNT, USD, D(10_000), D(0), EntryReason.DEPOSIT, "dep-1"),)


def test_buy_reservation_includes_the_taker_fee_and_is_refused_when_short() -> None:
    ledger = funded((USD, "10000"))
    requirement = required_reservation(BUY, D("0.5"), D(20_000), TAKER_RATE, SPEC)
    # 0.5 * 20,000 = 10,000; fee 10,000 * 0.40 % = 40; 10,000 + 40 = 10,040
    assert (requirement.asset, requirement.amount) == (USD, D("10040.00"))
    with pytest.raises(InsufficientBalance) as caught:
        ledger.reserve(O1, requirement.asset, requirement.amount)
    assert caught.value.code == "insufficient_balance"
    assert (caught.value.asset, caught.value.needed, caught.value.free) == (USD, D(10_040), D(10_000))
    assert "USD" in str(caught.value)


def test_required_reservation_rounds_up() -> None:
    # cost 0.123 * 101.7 = 12.5091 -> 12.51 (up, to the quote step); fee 12.51 * 0.40 % = 0.05004 -> 0.06
    assert required_reservation(BUY, D("0.123"), D("101.7"), TAKER_RATE, SPEC).amount == D("12.57")
    sell = required_reservation(SELL, D("0.123"), D("101.7"), TAKER_RATE, SPEC)
    assert (sell.asset, sell.amount) == (BTC, D("0.123"))


def test_partial_fill_then_cancel_releases_exactly_the_remainder() -> None:
    ledger = funded((USD, "10100")).reserve(O1, USD, D(10_040)).ledger
    assert ledger.balance(USD) == Balance(USD, D(10_100), D(10_040))
    update = ledger.apply_fill(O1, BUY, BTC_USD, BTC, USD, D("0.2"), D(20_000), D(16), quote_step=CENT)
    # 0.2 * 20,000 = 4,000 + fee 16 (4,000 * 0.40 %) = 4,016 out of the reservation
    assert update.entries == (
        LedgerEntry(ACCOUNT, USD, D(-4_000), D(-4_000), EntryReason.TRADE, O1),
        LedgerEntry(ACCOUNT, USD, D(-16), D(-16), EntryReason.FEE, O1),
        LedgerEntry(ACCOUNT, BTC, D("0.2"), D(0), EntryReason.TRADE, O1),
    )
    ledger = update.ledger
    # total 10,100 - 4,016 = 6,084; reserved 10,040 - 4,016 = 6,024; free 60
    assert ledger.balance(USD) == Balance(USD, D(6_084), D(6_024))
    assert ledger.balance(BTC) == Balance(BTC, D("0.2"), D(0))
    assert ledger.reservations[O1] == Reservation(O1, USD, D(6_024))

    cancel = ledger.release(O1)
    assert cancel.entries == (LedgerEntry(ACCOUNT, USD, D(0), D(-6_024), EntryReason.RELEASE, O1),)
    assert cancel.ledger.balance(USD) == Balance(USD, D(6_084), D(0))
    assert O1 not in cancel.ledger.reservations
    again = cancel.ledger.release(O1)
    assert again.entries == ()
    assert again.ledger == cancel.ledger


def test_partial_release_keeps_the_reservation_open() -> None:
    ledger = funded((USD, "100")).reserve(O1, USD, D(60)).ledger
    ledger = ledger.release(O1, D(25)).ledger
    assert ledger.reservations[O1].remaining == D(35)
    assert ledger.balance(USD) == Balance(USD, D(100), D(35))
    with pytest.raises(ReservationConflict) as caught:
        ledger.release(O1, D(36))
    assert caught.value.code == "reservation_conflict"
    assert ledger.release(O1).ledger.balance(USD) == Balance(USD, D(100), D(0))


def test_sell_without_base_is_refused() -> None:
    ledger = funded((USD, "50000"))
    requirement = required_reservation(SELL, D("0.1"), D(20_000), TAKER_RATE, SPEC)
    with pytest.raises(InsufficientBalance) as caught:
        ledger.reserve(O1, requirement.asset, requirement.amount)
    assert (caught.value.asset, caught.value.needed, caught.value.free) == (BTC, D("0.1"), D(0))
    with pytest.raises(InsufficientBalance):
        sell_fill(ledger, O1, "0.1", "20000", "8")


def test_realized_pnl_of_a_round_trip_includes_both_fees() -> None:
    ledger = funded((USD, "30000")).reserve(O1, USD, D(10_040)).ledger
    ledger = buy_fill(ledger, O1, "0.5", "20000", "40")  # taker: 10,000 * 0.40 % = 40
    position = ledger.position(BTC_USD)
    # cost basis 0.5 * 20,000 + 40 = 10,040; average entry 10,040 / 0.5 = 20,080 (the break-even price)
    assert (position.quantity, position.cost_basis, position.average_entry_price) == (D("0.5"), D(10_040), D(20_080))
    ledger = ledger.release(O1).ledger  # nothing left: the fill used the whole 10,040
    ledger = ledger.reserve(O2, BTC, D("0.5")).ledger
    ledger = sell_fill(ledger, O2, "0.5", "22000", "27.50")  # maker: 11,000 * 0.25 % = 27.50
    position = ledger.position(BTC_USD)
    # realized = 0.5 * 22,000 - 10,040 - 27.50 = 11,000 - 10,067.50 = 932.50
    assert position == Position(BTC_USD, D(0), D(0), D("932.50"), D("67.50"))
    assert position.average_entry_price is None
    # cash: 30,000 - 10,040 + 11,000 - 27.50 = 30,932.50 = deposit + realized PnL
    assert ledger.balance(USD) == Balance(USD, D("30932.50"), D(0))
    assert ledger.balance(BTC) == Balance(BTC, D(0), D(0))


def test_average_entry_is_weighted_on_buys_and_unchanged_on_sells() -> None:
    ledger = funded((USD, "1000"))
    ledger = buy_fill(ledger, O1, "1", "100", "0")
    ledger = buy_fill(ledger, O1, "2", "130", "0")
    # (1 * 100 + 2 * 130) / 3 = 360 / 3 = 120
    assert ledger.position(BTC_USD).average_entry_price == D(120)
    ledger = sell_fill(ledger, O2, "1", "150", "0.60")
    position = ledger.position(BTC_USD)
    # released cost 360 / 3 = 120; realized = 150 - 120 - 0.60 = 29.40; 2 left at cost 240, still 120 each
    assert position == Position(BTC_USD, D(2), D(240), D("29.40"), D("0.60"))
    assert position.average_entry_price == D(120)


def test_partial_sells_of_a_non_terminating_average_add_up_exactly() -> None:
    ledger = funded((USD, "100"))
    ledger = buy_fill(ledger, O1, "3", "10", "0.01")  # cost 30.01, average 10.00333...
    assert ledger.position(BTC_USD).average_entry_price == D("10.003333333333333333")
    ledger = sell_fill(ledger, O2, "1", "11", "0")
    # released cost 30.01 / 3 = 10.003333333333333333 (18 places); realized 11 - that = 0.996666666666666667
    assert ledger.position(BTC_USD).realized_pnl == D("0.996666666666666667")
    ledger = sell_fill(ledger, O2, "2", "11", "0")
    # the last sell releases what is left (20.006666666666666667): realized in all 33 - 30.01 = 2.99
    assert ledger.position(BTC_USD) == Position(BTC_USD, D(0), D(0), D("2.99"), D("0.01"))


def test_selling_deposited_base_realizes_only_the_fee_and_never_goes_short() -> None:
    ledger = funded((BTC, "1"))
    ledger = sell_fill(ledger, O1, "1", "20000", "20")
    # no buy on record: the position stays flat, realized PnL is -20 (the fee); USD 20,000 - 20 = 19,980
    assert ledger.position(BTC_USD) == Position(BTC_USD, D(0), D(0), D(-20), D(20))
    assert ledger.balance(USD) == Balance(USD, D(19_980), D(0))


def test_fill_beyond_the_reservation_draws_on_free_balance_or_is_refused() -> None:
    # reserved for 0.5 at 20,000 (10,040); filled at 20,100: 10,050 + fee 40.20 = 10,090.20, 50.20 over
    short = funded((USD, "10050")).reserve(O1, USD, D(10_040)).ledger
    with pytest.raises(InsufficientBalance) as caught:
        buy_fill(short, O1, "0.5", "20100", "40.20")
    assert (caught.value.needed, caught.value.free) == (D("50.20"), D(10))
    enough = funded((USD, "10100")).reserve(O1, USD, D(10_040)).ledger
    ledger = buy_fill(enough, O1, "0.5", "20100", "40.20")
    # total 10,100 - 10,090.20 = 9.80; the reservation is used up
    assert ledger.balance(USD) == Balance(USD, D("9.80"), D(0))
    assert ledger.reservations[O1].remaining == D(0)


def test_sell_fill_consumes_the_base_reservation() -> None:
    ledger = funded((BTC, "1")).reserve(O1, BTC, D("0.4")).ledger
    update = ledger.apply_fill(O1, SELL, BTC_USD, BTC, USD, D("0.4"), D(20_000), D(32), quote_step=CENT)
    # 0.4 * 20,000 = 8,000 proceeds, fee 32
    assert update.entries == (
        LedgerEntry(ACCOUNT, BTC, D("-0.4"), D("-0.4"), EntryReason.TRADE, O1),
        LedgerEntry(ACCOUNT, USD, D(8_000), D(0), EntryReason.TRADE, O1),
        LedgerEntry(ACCOUNT, USD, D(-32), D(0), EntryReason.FEE, O1),
    )
    assert update.ledger.balance(BTC) == Balance(BTC, D("0.6"), D(0))
    assert update.ledger.balance(USD) == Balance(USD, D(7_968), D(0))


def test_dust_sell_whose_fee_exceeds_its_proceeds_needs_free_quote() -> None:
    ledger = funded((BTC, "0.00000001"))
    # proceeds 0.00000001 * 1.00 = 0.00000001 USD, booked to the cent (the quote step): 0.00; a fee of 0.01 is short
    with pytest.raises(InsufficientBalance) as caught:
        sell_fill(ledger, O1, "0.00000001", "1.00", "0.01")
    assert (caught.value.asset, caught.value.needed, caught.value.free) == (USD, D("0.01"), D(0))
    ledger = ledger.deposit(USD, D("0.01")).ledger
    assert sell_fill(ledger, O1, "0.00000001", "1.00", "0.01").balance(USD) == Balance(USD, D(0), D(0))


def test_a_fill_books_its_cost_rounded_to_the_quote_step() -> None:
    # Kraken's own example: 50,123 x 0.00002901 = 1.45406823 USD is booked as 1.4541 (USD kept to 4 decimals)
    ledger = funded((USD, "10"))
    update = ledger.apply_fill(
        O1, BUY, BTC_USD, BTC, USD, D(50_123), D("0.00002901"), D("0.0058"), quote_step=D("0.0001")
    )
    assert update.ledger.balance(USD) == Balance(USD, D("8.5401"), D(0))  # 10 - 1.4541 - 0.0058
    assert update.ledger.position(BTC_USD).cost_basis == D("1.4599")


def test_withdraw_only_from_free_balance() -> None:
    ledger = funded((USD, "100")).reserve(O1, USD, D(70)).ledger
    with pytest.raises(InsufficientBalance) as caught:
        ledger.withdraw(USD, D(31))
    assert (caught.value.needed, caught.value.free) == (D(31), D(30))
    update = ledger.withdraw(USD, D(30), reference="wd-1")
    assert update.ledger.balance(USD) == Balance(USD, D(70), D(70))
    assert update.entries == (LedgerEntry(ACCOUNT, USD, D(-30), D(0), EntryReason.WITHDRAWAL, "wd-1"),)


def test_reservation_conflicts() -> None:
    ledger = funded((USD, "100"), (BTC, "1")).reserve(O1, USD, D(10)).ledger
    with pytest.raises(ReservationConflict):
        ledger.reserve(O1, USD, D(10))
    with pytest.raises(ReservationConflict):
        sell_fill(ledger, O1, "0.1", "100", "0")  # the order reserved USD, a sell pays BTC


@pytest.mark.parametrize("amount", [D(0), D(-1), D("0.0000000000000000001"), D("1e21")])
def test_invalid_amounts_are_refused(amount: Decimal) -> None:
    with pytest.raises(InvalidAmount) as caught:
        Ledger(ACCOUNT).deposit(USD, amount)
    assert caught.value.code == "invalid_amount"


def test_float_amounts_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        Ledger(ACCOUNT).deposit(USD, 0.1)  # type: ignore[arg-type]


def test_a_notional_too_precise_to_store_is_refused() -> None:
    ledger = funded((USD, "100"))
    # a quote step of 1e-20 would book the cost to more than 18 decimal places
    with pytest.raises(InvalidAmount):
        ledger.apply_fill(O1, BUY, BTC_USD, BTC, USD, D("0.1"), D("1.5"), D(0), quote_step=D("1e-20"))


def test_verify_detects_reserved_balance_without_reservation() -> None:
    ledger = Ledger(ACCOUNT, balances={USD: Balance(USD, D(10), D(5))})
    with pytest.raises(LedgerInconsistent):
        ledger.verify()
    Ledger(ACCOUNT, {USD: Balance(USD, D(10), D(5))}, {O1: Reservation(O1, USD, D(5))}).verify()


def test_balance_bounds() -> None:
    with pytest.raises(LedgerInconsistent):
        Balance(USD, D(1), D(2))
    with pytest.raises(LedgerInconsistent):
        Balance(USD, D(-1), D(0))


def test_ledger_is_immutable() -> None:
    ledger = funded((USD, "10"))
    ledger.deposit(USD, D(5))
    assert ledger.balance(USD).total == D(10)
    with pytest.raises(TypeError):
        ledger.balances[USD] = Balance(USD)  # type: ignore[index]


def test_journal_of_a_session_sums_to_the_balances() -> None:
    ledger = Ledger(ACCOUNT)
    journal: list[LedgerEntry] = []
    steps: tuple[Callable[[Ledger], LedgerUpdate], ...] = (
        lambda lg: lg.deposit(USD, D(10_100)),
        lambda lg: lg.reserve(O1, USD, D(10_040)),
        lambda lg: lg.apply_fill(O1, BUY, BTC_USD, BTC, USD, D("0.2"), D(20_000), D(16), quote_step=CENT),
        lambda lg: lg.release(O1),
        lambda lg: lg.reserve(O2, BTC, D("0.2")),
        lambda lg: lg.apply_fill(O2, SELL, BTC_USD, BTC, USD, D("0.2"), D(21_000), D("10.50"), quote_step=CENT),
        lambda lg: lg.release(O2),
    )
    for step in steps:
        update = step(ledger)
        ledger = update.ledger
        journal.extend(update.entries)
    assert balances_from_entries(journal) == dict(ledger.balances)
    # USD: 10,100 - 4,016 + 4,200 - 10.50 = 10,273.50
    assert ledger.balance(USD) == Balance(USD, D("10273.50"), D(0))


ASSETS = (USD, BTC)
PRICE_CENTS = st.integers(min_value=100, max_value=5_000_000)  # 1.00 .. 50,000.00
QUANTITY_UNITS = st.integers(min_value=1, max_value=50_000_000)  # 0.00000001 .. 0.5 BTC


class LedgerMachine(RuleBasedStateMachine):
    """Random deposits, withdrawals, orders, fills and releases; the ledger's invariants hold after each."""

    @initialize(cents=st.integers(min_value=0, max_value=10**9))
    def start(self, cents: int) -> None:
        self.ledger = Ledger(ACCOUNT)
        self.journal: list[LedgerEntry] = []
        if cents:
            update = self.ledger.deposit(USD, D(cents).scaleb(-2))
            self._apply(update.entries, update.ledger)
        self.open_orders: dict[OrderId, tuple[OrderSide, int, Decimal]] = {}  # side, units left, limit price
        self.closed_orders: list[OrderId] = []
        self.bought = D(0)
        self.sold = D(0)
        self.quote_flow = D(0)
        self.next_order = 0
        self.refused_fills = 0
        self.fills = 0

    def _apply(self, update_entries: tuple[LedgerEntry, ...], ledger: Ledger) -> None:
        self.ledger = ledger
        self.journal.extend(update_entries)

    @rule(cents=st.integers(min_value=1, max_value=100_000_000))
    def deposit(self, cents: int) -> None:
        update = self.ledger.deposit(USD, D(cents).scaleb(-2))
        self._apply(update.entries, update.ledger)

    @rule(asset=st.sampled_from(ASSETS), units=st.integers(min_value=1, max_value=10**12))
    def withdraw(self, asset: Asset, units: int) -> None:
        amount = D(units).scaleb(-8)
        try:
            update = self.ledger.withdraw(asset, amount)
        except InsufficientBalance:
            assert amount > self.ledger.balance(asset).free
            return
        self._apply(update.entries, update.ledger)

    @rule(asset=st.sampled_from(ASSETS))
    def withdraw_all_free(self, asset: Asset) -> None:
        free = self.ledger.balance(asset).free
        if free > 0:
            update = self.ledger.withdraw(asset, free)
            self._apply(update.entries, update.ledger)
            assert self.ledger.balance(asset).free == 0

    @rule(side=st.sampled_from(OrderSide), price_cents=PRICE_CENTS, data=st.data())
    def place(self, side: OrderSide, price_cents: int, data: st.DataObject) -> None:
        free_btc_units = int(self.ledger.balance(BTC).free.scaleb(8))
        if side is OrderSide.SELL and free_btc_units > 0:
            units = data.draw(st.integers(min_value=1, max_value=free_btc_units + free_btc_units // 10 + 1))
        else:
            units = data.draw(QUANTITY_UNITS)
        order_id = OrderId(f"o-{self.next_order}")
        self.next_order += 1
        price = D(price_cents).scaleb(-2)
        requirement = required_reservation(side, D(units).scaleb(-8), price, TAKER_RATE, SPEC)
        try:
            update = self.ledger.reserve(order_id, requirement.asset, requirement.amount)
        except InsufficientBalance:
            assert requirement.amount > self.ledger.balance(requirement.asset).free
            return
        self._apply(update.entries, update.ledger)
        self.open_orders[order_id] = (side, units, price)

    @precondition(lambda self: bool(self.open_orders))
    @rule(data=st.data())
    def fill(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.open_orders)))
        side, units_left, limit = self.open_orders[order_id]
        units = data.draw(st.integers(min_value=1, max_value=units_left))
        # mostly at or inside the limit; sometimes 5 % beyond it, as a market order slipping past its buffer
        slip = data.draw(st.sampled_from([D(1), D("0.99"), D("1.05")]))
        price = (limit * slip).quantize(CENT)
        quantity = D(units).scaleb(-8)
        liquidity = data.draw(st.sampled_from(Liquidity))
        cost = SPEC.trade_cost(quantity, price)
        fee = KRAKEN_SPOT_FEE_SCHEDULE.fee(cost, liquidity, D(0), CENT)
        paid = cost + fee if side is OrderSide.BUY else quantity
        outcome = self._try_fill(order_id, side, quantity, price, fee)
        if isinstance(outcome, InsufficientBalance):
            # refused only when reservation and free balance together fall short, or when a dust sell's
            # fee exceeds its proceeds (both booked to the cent) plus the free quote
            if side is OrderSide.SELL and outcome.asset == USD:
                assert outcome.needed == fee - cost
            else:
                assert outcome.asset == (USD if side is OrderSide.BUY else BTC)
                assert outcome.needed == paid - self.ledger.reservations[order_id].remaining
            assert outcome.free == self.ledger.balance(outcome.asset).free
            assert outcome.needed > outcome.free
            self.refused_fills += 1
            return
        update = outcome
        self._apply(update.entries, update.ledger)
        self.fills += 1
        if side is OrderSide.BUY:
            self.bought += quantity
            self.quote_flow -= cost + fee
        else:
            self.sold += quantity
            self.quote_flow += cost - fee
        if units == units_left:
            self._release(order_id)
        else:
            self.open_orders[order_id] = (side, units_left - units, limit)

    def _try_fill(
        self, order_id: OrderId, side: OrderSide, quantity: Decimal, price: Decimal, fee: Decimal
    ) -> LedgerUpdate | InsufficientBalance:
        try:
            return self.ledger.apply_fill(order_id, side, BTC_USD, BTC, USD, quantity, price, fee, quote_step=CENT)
        except InsufficientBalance as refused:
            return refused

    @precondition(lambda self: bool(self.open_orders))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        self._release(data.draw(st.sampled_from(sorted(self.open_orders))))

    @precondition(lambda self: bool(self.closed_orders))
    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        update = self.ledger.release(data.draw(st.sampled_from(self.closed_orders)))
        assert update.entries == ()
        assert update.ledger == self.ledger

    def _release(self, order_id: OrderId) -> None:
        update = self.ledger.release(order_id)
        self._apply(update.entries, update.ledger)
        del self.open_orders[order_id]
        self.closed_orders.append(order_id)

    @invariant()
    def balances_are_never_negative(self) -> None:
        for balance in self.ledger.balances.values():
            assert balance.total >= 0
            assert balance.free >= 0
            assert 0 <= balance.reserved <= balance.total

    @invariant()
    def journal_sums_to_the_balances(self) -> None:
        assert balances_from_entries(self.journal) == dict(self.ledger.balances)
        self.ledger.verify()

    @invariant()
    def position_follows_the_fills(self) -> None:
        position = self.ledger.position(BTC_USD)
        assert position.quantity == self.bought - self.sold
        # realized PnL minus the cost still open is exactly the quote the fills moved, fees included
        assert position.realized_pnl - position.cost_basis == self.quote_flow


LedgerMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=60, deadline=None)
test_ledger_machine = LedgerMachine.TestCase


@given(
    units=QUANTITY_UNITS,
    price_cents=PRICE_CENTS,
    rate=st.sampled_from([tier.taker_rate for tier in KRAKEN_SPOT_FEE_SCHEDULE.tiers]),
)
def test_buy_reservation_covers_one_full_fill_at_its_price(units: int, price_cents: int, rate: Decimal) -> None:
    quantity, price = D(units).scaleb(-8), D(price_cents).scaleb(-2)
    exact = quantity * price * (1 + rate)
    reserved = required_reservation(BUY, quantity, price, rate, SPEC).amount
    assert exact <= reserved < exact + 2 * CENT
    cost = SPEC.trade_cost(quantity, price)
    fee = compute_fee(cost, rate, CENT)
    ledger = Ledger(ACCOUNT).deposit(USD, reserved).ledger.reserve(O1, USD, reserved).ledger
    ledger = ledger.apply_fill(O1, BUY, BTC_USD, BTC, USD, quantity, price, fee, quote_step=CENT).ledger
    assert ledger.balance(USD).free == 0  # paid entirely from the reservation
    ledger = ledger.release(O1).ledger
    # what is left is the rounding headroom: cost and fee reserved rounded up, charged rounded to the nearest step
    assert ledger.balance(USD) == Balance(USD, reserved - cost - fee, D(0))
    assert ledger.balance(USD).total < 3 * CENT
