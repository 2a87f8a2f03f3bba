"""Pre-trade limits (shared/domain/risk_limits.py) on hand-computed cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.risk_limits import (
    Exposure,
    FillRecord,
    OrderToCheck,
    RiskLimits,
    check_order,
    limits_from_json,
    limits_to_json,
    raised_limits,
    realized_loss_since,
    realized_pnl_since,
)
from shared.domain.types import OrderSide

D = Decimal
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def order(side: OrderSide = BUY, qty: str = "1", price: str | None = "100", exits: bool = False) -> OrderToCheck:
    return OrderToCheck("BTC/USD", side, D(qty), None if price is None else D(price), exits)


def exposure(
    mid: str | None = "100", held: str = "0", notional: str = "0", open_orders: int = 0, loss: str = "0"
) -> Exposure:
    return Exposure(None if mid is None else D(mid), D(held), D(notional), open_orders, D(loss))


def code(limits: RiskLimits, o: OrderToCheck, e: Exposure) -> str | None:
    violation = check_order(limits, o, e)
    return None if violation is None else violation.code


def test_no_limits_pass_everything() -> None:
    assert code(RiskLimits(), order(qty="1000000"), exposure(mid=None)) is None


def test_max_order_notional_is_inclusive() -> None:
    limits = RiskLimits(max_order_notional=D("1000"))
    assert code(limits, order(qty="10", price="100"), exposure()) is None  # 10 x 100 = 1000 == limit
    assert code(limits, order(qty="10.01", price="100"), exposure()) == "max_order_notional"  # 1001
    # a market order is valued at mid: 11 x 100 = 1100
    assert code(limits, order(qty="11", price=None), exposure(mid="100")) == "max_order_notional"


def test_position_cap_counts_what_is_held_and_uses_the_symbol_override() -> None:
    limits = RiskLimits(max_position_notional=D("500"), max_position_notional_by_symbol={"BTC/USD": D("2000")})
    # held 1500 + 5 x 100 = 2000: at the override, passes; the default 500 does not apply to BTC/USD
    assert code(limits, order(qty="5"), exposure(notional="1500")) is None
    assert code(limits, order(qty="5.1"), exposure(notional="1500")) == "max_position_notional"  # 2010
    other = OrderToCheck("ETH/USD", BUY, D("6"), D("100"), False)
    assert code(limits, other, exposure()) == "max_position_notional"  # 600 > default 500


def test_open_orders_cap() -> None:
    limits = RiskLimits(max_open_orders=3)
    assert code(limits, order(), exposure(open_orders=2)) is None
    assert code(limits, order(), exposure(open_orders=3)) == "max_open_orders"


def test_daily_loss_limit_blocks_buys_not_reducing_sells() -> None:
    limits = RiskLimits(daily_loss_limit=D("250"))
    assert code(limits, order(), exposure(loss="249.99")) is None
    assert code(limits, order(), exposure(loss="250")) == "daily_loss_limit"
    assert code(limits, order(side=SELL, qty="1"), exposure(held="2", loss="900")) is None
    # a sell of more than is held opens exposure: it meets every limit
    assert code(limits, order(side=SELL, qty="3"), exposure(held="2", loss="900")) == "daily_loss_limit"


def test_price_collar_around_mid() -> None:
    limits = RiskLimits(price_collar_pct=D("5"))
    assert code(limits, order(price="105"), exposure(mid="100")) is None  # exactly 5 %
    assert code(limits, order(price="105.01"), exposure(mid="100")) == "price_collar"
    assert code(limits, order(price="94.99"), exposure(mid="100")) == "price_collar"
    assert code(limits, order(price=None), exposure(mid="100")) is None  # market orders carry no price
    assert code(limits, order(price="100"), exposure(mid=None)) == "no_market_data"
    # the collar also guards reducing sells (fat finger)
    assert code(limits, order(side=SELL, price="50"), exposure(mid="100", held="5")) == "price_collar"


def test_allow_list_and_explicit_exits() -> None:
    limits = RiskLimits(allowed_symbols=frozenset({"ETH/USD"}), require_explicit_exits=True)
    assert code(limits, order(), exposure()) == "symbol_not_allowed"
    eth = OrderToCheck("ETH/USD", BUY, D("1"), D("100"), False)
    assert code(limits, eth, exposure()) == "exits_required"
    assert code(limits, OrderToCheck("ETH/USD", BUY, D("1"), D("100"), True), exposure()) is None
    # a held position in a symbol removed from the list can still be sold
    assert code(limits, order(side=SELL), exposure(held="1")) is None


def test_first_violation_wins_in_a_fixed_order() -> None:
    limits = RiskLimits(
        allowed_symbols=frozenset({"BTC/USD"}),
        max_open_orders=0,
        max_order_notional=D("1"),
        daily_loss_limit=D("1"),
    )
    assert code(limits, order(), exposure(loss="5")) == "max_open_orders"


def test_contradictions_name_the_field() -> None:
    limits = RiskLimits(
        max_order_notional=D("-1"),
        max_open_orders=-2,
        price_collar_pct=D("150"),
        allowed_symbols=frozenset({"ETH/USD"}),
        max_position_notional_by_symbol={"BTC/USD": D("10")},
    )
    fields = [name for name, _ in limits.contradictions()]
    assert fields == [
        "max_order_notional",
        "max_open_orders",
        "price_collar_pct",
        "max_position_notional_by_symbol.BTC/USD",
    ]
    assert RiskLimits(max_order_notional=D("1")).contradictions() == []


def test_json_round_trip() -> None:
    limits = RiskLimits(
        max_order_notional=D("1000.5"),
        max_position_notional_by_symbol={"BTC/USD": D("2000")},
        max_open_orders=4,
        allowed_symbols=frozenset({"BTC/USD"}),
        require_explicit_exits=True,
    )
    assert limits_from_json(limits_to_json(limits)) == limits
    assert limits_to_json(limits)["max_order_notional"] == "1000.5"


MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
YESTERDAY = datetime(2026, 3, 1, 15, tzinfo=UTC)
TODAY = datetime(2026, 3, 2, 9, tzinfo=UTC)


def fill(side: OrderSide, qty: str, price: str, fee: str, at: datetime, symbol: str = "BTC/USD") -> FillRecord:
    return FillRecord(symbol, side, D(qty), D(price), D(fee), at)


@pytest.mark.parametrize(
    ("fills", "pnl"),
    [
        # bought 2 at 100 + fee 1 (cost 201, 100.5 each); sold 1 at 90 fee 0.5 today: 90 - 100.5 - 0.5 = -11
        ([fill(BUY, "2", "100", "1", YESTERDAY), fill(SELL, "1", "90", "0.5", TODAY)], D("-11")),
        # a sale yesterday does not count: only today's sale (1 at 120, fee 0): 120 - 100.5 = 19.5
        (
            [
                fill(BUY, "2", "100", "1", YESTERDAY),
                fill(SELL, "1", "50", "0", YESTERDAY),
                fill(SELL, "1", "120", "0", TODAY),
            ],
            D("19.5"),
        ),
        # buys alone realize nothing
        ([fill(BUY, "1", "100", "0.4", TODAY)], D("0")),
        # two symbols: ETH loses 5 (bought 1 at 50, sold at 45), BTC gains 10 (bought at 100, sold at 110)
        (
            [
                fill(BUY, "1", "50", "0", YESTERDAY, "ETH/USD"),
                fill(BUY, "1", "100", "0", YESTERDAY),
                fill(SELL, "1", "45", "0", TODAY, "ETH/USD"),
                fill(SELL, "1", "110", "0", TODAY),
            ],
            D("5"),
        ),
    ],
)
def test_realized_pnl_of_the_utc_day(fills: list[FillRecord], pnl: Decimal) -> None:
    assert realized_pnl_since(fills, MIDNIGHT) == pnl
    assert realized_loss_since(fills, MIDNIGHT) == max(D(0), -pnl)


# --- properties -------------------------------------------------------------------------------------------

amounts = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
optional_amounts = st.none() | amounts
limits_strategy = st.builds(
    RiskLimits,
    max_order_notional=optional_amounts,
    max_position_notional=optional_amounts,
    max_open_orders=st.none() | st.integers(min_value=0, max_value=20),
    daily_loss_limit=optional_amounts,
    price_collar_pct=st.none() | st.decimals(min_value=D("0.1"), max_value=D("50"), places=1),
    allowed_symbols=st.none() | st.sets(st.sampled_from(["BTC/USD", "ETH/USD"])).map(frozenset),
    require_explicit_exits=st.booleans(),
)
orders_strategy = st.builds(
    OrderToCheck,
    symbol=st.sampled_from(["BTC/USD", "ETH/USD"]),
    side=st.sampled_from([BUY, SELL]),
    quantity=st.decimals(min_value=D("0.01"), max_value=D("50"), places=2),
    limit_price=st.none() | amounts,
    has_exits=st.booleans(),
)
exposures = st.builds(
    Exposure,
    mid_price=st.none() | amounts,
    position_quantity=st.decimals(min_value=D("0"), max_value=D("50"), places=2),
    position_notional=st.decimals(min_value=D("0"), max_value=D("100000"), places=2),
    open_orders=st.integers(min_value=0, max_value=30),
    realized_loss_today=st.decimals(min_value=D("0"), max_value=D("100000"), places=2),
)


@given(limits_strategy, orders_strategy, exposures)
def test_a_reducing_sell_is_only_ever_stopped_by_the_price_collar(
    limits: RiskLimits, candidate: OrderToCheck, situation: Exposure
) -> None:
    violation = check_order(limits, candidate, situation)
    if candidate.side is SELL and candidate.quantity <= situation.position_quantity:
        assert violation is None or violation.code in {"price_collar", "no_market_data"}


@given(limits_strategy, orders_strategy, exposures)
def test_removing_every_limit_lets_every_order_pass_and_a_pass_survives_loosening(
    limits: RiskLimits, candidate: OrderToCheck, situation: Exposure
) -> None:
    assert check_order(RiskLimits(), candidate, situation) is None
    if check_order(limits, candidate, situation) is None:
        looser = RiskLimits(
            max_order_notional=None if limits.max_order_notional is None else limits.max_order_notional * 2,
            max_position_notional=None if limits.max_position_notional is None else limits.max_position_notional * 2,
            max_open_orders=None if limits.max_open_orders is None else limits.max_open_orders + 1,
            daily_loss_limit=None if limits.daily_loss_limit is None else limits.daily_loss_limit * 2,
            price_collar_pct=limits.price_collar_pct,
            allowed_symbols=limits.allowed_symbols,
            require_explicit_exits=limits.require_explicit_exits,
        )
        assert check_order(looser, candidate, situation) is None


def test_raised_limits_names_every_loosening_and_nothing_else() -> None:
    base = RiskLimits(
        max_order_notional=Decimal(1000),
        max_position_notional=Decimal(5000),
        max_position_notional_by_symbol={"BTC/USD": Decimal(8000)},
        max_open_orders=5,
        daily_loss_limit=Decimal(250),
        price_collar_pct=Decimal(5),
        allowed_symbols=frozenset({"BTC/USD"}),
        require_explicit_exits=True,
    )
    assert raised_limits(None, base) == []  # from no limits: tighter
    assert raised_limits(base, base) == []
    assert raised_limits(base, replace(base, max_order_notional=Decimal(500), max_open_orders=1)) == []
    loosened = {
        "max_order_notional": replace(base, max_order_notional=None),
        "max_position_notional": replace(base, max_position_notional=Decimal(6000)),
        "max_open_orders": replace(base, max_open_orders=6),
        "daily_loss_limit": replace(base, daily_loss_limit=Decimal(10**9)),
        "price_collar_pct": replace(base, price_collar_pct=Decimal(6)),
        "max_position_notional_by_symbol": replace(base, max_position_notional_by_symbol={"BTC/USD": Decimal(9000)}),
        "allowed_symbols": replace(base, allowed_symbols=frozenset({"BTC/USD", "ETH/USD"})),
        "require_explicit_exits": replace(base, require_explicit_exits=False),
    }
    for name, proposed in loosened.items():
        assert name in raised_limits(base, proposed), name
