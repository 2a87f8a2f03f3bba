"""Hedge sizing (shared/domain/hedge.py): properties of the target, the band, drawdown, EWMA and the levels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.hedge import (
    DRAWDOWN_STEP,
    HedgeLevel,
    HedgePolicy,
    HedgePolicyError,
    HedgeTrade,
    cap_to_free_balance,
    drawdown,
    hedge_client_order_id,
    hedge_fraction,
    hedge_trade,
    levels_to_raise,
    levels_to_rearm,
    next_peak,
    rebalance_to,
    target_fraction,
    update_volatility,
    value_balances,
)
from shared.domain.ledger import Balance
from shared.domain.types import Asset, OrderSide

T0 = datetime(2026, 1, 1, tzinfo=UTC)

unit = st.decimals(min_value=0, max_value=1, places=4)
positive = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.5"), places=4)
weight = st.decimals(min_value=0, max_value=10, places=3)
vol = st.decimals(min_value=0, max_value=Decimal("0.2"), places=6)


@st.composite
def policies(draw: st.DrawFn) -> HedgePolicy:
    floor, cap = sorted((draw(unit), draw(unit)))
    return HedgePolicy(
        vol_weight=draw(weight),
        drawdown_weight=draw(weight),
        vol_saturation=draw(positive),
        drawdown_saturation=draw(positive),
        floor=floor,
        cap=cap,
        band=draw(st.decimals(min_value=0, max_value=Decimal("0.2"), places=3)),
    )


@settings(max_examples=500)
@given(policies(), vol, vol, unit)
def test_target_never_decreases_when_volatility_rises(policy: HedgePolicy, a: Decimal, b: Decimal, dd: Decimal) -> None:
    low, high = sorted((a, b))
    assert target_fraction(policy, low, dd) <= target_fraction(policy, high, dd)


@settings(max_examples=500)
@given(policies(), vol, unit, unit)
def test_target_never_decreases_when_drawdown_rises(policy: HedgePolicy, v: Decimal, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert target_fraction(policy, v, low) <= target_fraction(policy, v, high)


@settings(max_examples=500)
@given(policies(), vol, unit)
def test_target_stays_within_floor_and_cap(policy: HedgePolicy, v: Decimal, dd: Decimal) -> None:
    assert policy.floor <= target_fraction(policy, v, dd) <= policy.cap


def test_target_reaches_the_cap_when_both_inputs_saturate() -> None:
    policy = HedgePolicy(floor=Decimal("0.1"), cap=Decimal("0.7"))
    assert target_fraction(policy, Decimal(0), Decimal(0)) == Decimal("0.1")
    assert target_fraction(policy, Decimal("0.02"), Decimal("0.2")) == Decimal("0.7")
    # half weight each: volatility saturated alone gives the midpoint
    assert target_fraction(policy, Decimal("0.05"), Decimal(0)) == Decimal("0.4")


@settings(max_examples=300)
@given(unit, unit, st.decimals(min_value=0, max_value=Decimal("0.3"), places=3))
def test_rebalance_only_outside_the_band_and_to_its_edge(current: Decimal, target: Decimal, band: Decimal) -> None:
    new = rebalance_to(current, target, band)
    if abs(current - target) <= band:
        assert new is None
    else:
        assert new is not None
        assert abs(new - target) == band
        # the trade moves towards the target and never past it
        assert (new - current) * (target - current) > 0


@given(st.lists(st.decimals(min_value=1, max_value=10**6, places=2), min_size=1, max_size=30))
def test_drawdown_is_peak_to_trough(navs: list[Decimal]) -> None:
    peak = None
    for seen, nav in enumerate(navs, start=1):
        peak = next_peak(peak, nav)
        dd = drawdown(peak, nav)
        assert Decimal(0) <= dd <= Decimal(1)
        assert peak == max(navs[:seen])
        assert dd == ((peak - nav) / peak).quantize(DRAWDOWN_STEP)  # to the 18 places it is stored with
    assert drawdown(Decimal(100), Decimal(80)) == Decimal("0.2")


def test_ewma_variance_follows_the_recursion() -> None:
    lam = Decimal("0.9")
    state = update_volatility(None, Decimal(100), T0, lam)
    state = update_volatility(state, Decimal(110), T0 + timedelta(seconds=1), lam)
    assert state.variance == Decimal("0.01")  # first return seeds: 0.1^2
    state = update_volatility(state, Decimal(99), T0 + timedelta(seconds=2), lam)
    assert state.variance == lam * Decimal("0.01") + (1 - lam) * Decimal("0.01")  # r = -0.1
    assert state.volatility == Decimal("0.1")
    assert state.samples == 2


def test_ewma_skips_prices_closer_than_the_sample_interval() -> None:
    lam = Decimal("0.94")
    state = update_volatility(None, Decimal(100), T0, lam, min_interval_s=60)
    same = update_volatility(state, Decimal(150), T0 + timedelta(seconds=30), lam, min_interval_s=60)
    assert same == state
    moved = update_volatility(state, Decimal(150), T0 + timedelta(seconds=60), lam, min_interval_s=60)
    assert moved.samples == 1
    replayed = update_volatility(moved, Decimal(140), T0 - timedelta(hours=1), lam, min_interval_s=60)
    assert (replayed.samples, replayed.sampled_at) == (2, T0 - timedelta(hours=1))  # a replay starts over in time


def test_hedge_trade_sells_base_to_raise_the_fraction_and_buys_back_to_lower_it() -> None:
    sell = hedge_trade(Decimal(0), Decimal(100), Decimal("0.55"), Decimal("0.001"), Decimal("0.01"))
    assert sell is not None
    assert (sell.side, sell.quantity) == (OrderSide.SELL, Decimal("55.000"))
    buy = hedge_trade(Decimal(55), Decimal(45), Decimal("0.3333"), Decimal("0.001"), Decimal(0))
    assert buy is not None
    assert (buy.side, buy.quantity) == (OrderSide.BUY, Decimal("21.670"))
    assert hedge_trade(Decimal(10), Decimal(90), Decimal("0.1001"), Decimal("0.001"), Decimal(1)) is None
    assert hedge_fraction(Decimal(55), Decimal(45)) == Decimal("0.55")
    assert hedge_fraction(Decimal(0), Decimal(0)) == Decimal(0)


quantities = st.decimals(min_value=0, max_value=10**6, places=8)


@settings(max_examples=500)
@given(quantities, quantities, unit)
def test_hedge_trades_never_short_and_never_buy_back_more_than_was_hedged(
    hedged: Decimal, held: Decimal, fraction: Decimal
) -> None:
    trade = hedge_trade(hedged, held, fraction, Decimal("0.00000001"), Decimal(0))
    if trade is None:
        return
    if trade.side is OrderSide.SELL:
        assert trade.quantity <= held
        assert hedge_fraction(hedged + trade.quantity, held - trade.quantity) <= fraction
    else:
        assert trade.quantity <= hedged
        assert hedge_fraction(hedged - trade.quantity, held + trade.quantity) >= fraction


def test_levels_are_raised_once_and_rearmed_past_the_hysteresis() -> None:
    policy = HedgePolicy()
    assert levels_to_raise(policy, Decimal("0.12"), set()) == [HedgeLevel.PAUSE, HedgeLevel.REDUCE_ONLY]
    assert levels_to_raise(policy, Decimal("0.12"), {HedgeLevel.PAUSE, HedgeLevel.REDUCE_ONLY}) == []
    raised = {HedgeLevel.PAUSE, HedgeLevel.REDUCE_ONLY}
    assert levels_to_rearm(policy, Decimal("0.09"), raised) == []  # 0.09 >= 0.10 - 0.02
    assert levels_to_rearm(policy, Decimal("0.079"), raised) == [HedgeLevel.REDUCE_ONLY]
    assert levels_to_rearm(policy, Decimal("0.01"), raised) == [HedgeLevel.PAUSE, HedgeLevel.REDUCE_ONLY]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"floor": Decimal("0.6"), "cap": Decimal("0.5")}, "cap"),
        ({"vol_weight": Decimal(-1)}, "vol_weight"),
        ({"drawdown_weight": Decimal("-0.1")}, "drawdown_weight"),
        ({"cap": Decimal("1.5")}, "cap"),
        ({"band": Decimal(-1)}, "band"),
        ({"vol_saturation": Decimal(0)}, "vol_saturation"),
        ({"ewma_lambda": Decimal(1)}, "ewma_lambda"),
        ({"levels": ((HedgeLevel.PAUSE, Decimal("0.2")), (HedgeLevel.FLATTEN, Decimal("0.1")))}, "levels"),
    ],
)
def test_contradicting_policies_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(HedgePolicyError) as caught:
        HedgePolicy(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_client_order_ids_are_deterministic_and_fit_the_oms_limit() -> None:
    assert hedge_client_order_id("acct-1", 7) == "hedge-acct-1-7"
    assert hedge_client_order_id("acct-1", 7) == hedge_client_order_id("acct-1", 7)
    long = hedge_client_order_id("a" * 64, 12)
    assert len(long) <= 64
    assert long == hedge_client_order_id("a" * 64, 12)
    assert long != hedge_client_order_id("b" * 64, 12)


def _balances(**totals: str) -> dict[str, Balance]:
    return {asset: Balance(Asset(asset), Decimal(total)) for asset, total in totals.items()}


def test_nav_sums_priced_balances_and_lists_the_unpriced() -> None:
    prices = {"BTC/USD": Decimal(100)}
    valuation = value_balances(_balances(USD="50", BTC="2", DOGE="0", XYZ="3"), prices, "USD")
    assert (valuation.nav, valuation.quote_value, valuation.unpriced) == (Decimal(250), Decimal(50), ("XYZ",))


@pytest.mark.parametrize(
    ("side", "free_base", "free_quote", "expected"),
    [
        (OrderSide.SELL, "3", "0", Decimal(3)),  # capped at the free base
        (OrderSide.SELL, "10", "0", Decimal(5)),
        (OrderSide.BUY, "0", "212", Decimal(2)),  # 212 / 105.5 = 2.009..., rounded down to 0.01
        (OrderSide.BUY, "0", "10", None),  # 0.0947... rounds below the minimum
    ],
)
def test_a_trade_never_exceeds_the_free_balance(
    side: OrderSide, free_base: str, free_quote: str, expected: Decimal | None
) -> None:
    capped = cap_to_free_balance(
        HedgeTrade(side=side, quantity=Decimal(5)),
        free_base=Decimal(free_base),
        free_quote=Decimal(free_quote),
        buy_price=Decimal("105.5"),
        quantity_increment=Decimal("0.01"),
        min_quantity=Decimal("0.1"),
    )
    assert (capped.quantity if capped else None) == expected
