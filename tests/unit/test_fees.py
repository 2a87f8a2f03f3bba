from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.fees import (
    KRAKEN_SPOT_FEE_SCHEDULE,
    AccountFeeSchedules,
    FeeSchedule,
    FeeScheduleError,
    FeeTier,
    compute_fee,
    quantize_up,
)
from shared.domain.types import AccountId, Liquidity

D = Decimal
USD_STEP = D("0.0001")  # Kraken keeps USD to 4 decimals
CENT = D("0.01")
MAKER = Liquidity.MAKER
TAKER = Liquidity.TAKER


@pytest.mark.parametrize(
    ("volume", "maker", "taker"),
    [
        (D(0), D("0.0025"), D("0.0040")),
        (D("9999.99"), D("0.0025"), D("0.0040")),
        (D(10_000), D("0.0020"), D("0.0035")),
        (D(50_000), D("0.0014"), D("0.0024")),
        (D("99999.99"), D("0.0014"), D("0.0024")),
        (D(250_000), D("0.0010"), D("0.0020")),
        (D(2_500_000), D("0.0004"), D("0.0014")),
        (D(10_000_000), D(0), D("0.0010")),
        (D(10**12), D(0), D("0.0010")),
    ],
)
def test_tier_for_picks_the_last_tier_whose_minimum_is_reached(volume: Decimal, maker: Decimal, taker: Decimal) -> None:
    tier = KRAKEN_SPOT_FEE_SCHEDULE.tier_for(volume)
    assert (tier.maker_rate, tier.taker_rate) == (maker, taker)
    assert KRAKEN_SPOT_FEE_SCHEDULE.rate(MAKER, volume) == maker
    assert KRAKEN_SPOT_FEE_SCHEDULE.rate(TAKER, volume) == taker


@pytest.mark.parametrize(
    ("volume", "liquidity", "expected_fee"),
    [
        (D(0), MAKER, D("25.00")),  # 10,000 * 0.25 % = 25
        (D(0), TAKER, D("40.00")),  # 10,000 * 0.40 % = 40
        (D(50_000), MAKER, D("14.00")),  # 10,000 * 0.14 % = 14
        (D(50_000), TAKER, D("24.00")),  # 10,000 * 0.24 % = 24
        (D(10_000_000), MAKER, D("0.00")),  # 10,000 * 0 % = 0
        (D(10_000_000), TAKER, D("10.00")),  # 10,000 * 0.10 % = 10
    ],
)
def test_fee_per_tier_on_a_10000_usd_fill(volume: Decimal, liquidity: Liquidity, expected_fee: Decimal) -> None:
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D(10_000), liquidity, volume, CENT) == expected_fee


def test_fee_rounds_to_the_nearest_quote_step() -> None:
    # 123.45 * 0.40 % = 0.4938 -> 0.49 (not up to 0.50); 123.45 * 0.25 % = 0.308625 -> 0.31
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("123.45"), TAKER, D(0), CENT) == D("0.49")
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("123.45"), MAKER, D(0), CENT) == D("0.31")
    # a tie goes to the even step: 123.75 * 0.40 % = 0.495 -> 0.50, 126.25 * 0.40 % = 0.505 -> 0.50
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("123.75"), TAKER, D(0), CENT) == D("0.50")
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("126.25"), TAKER, D(0), CENT) == D("0.50")
    # 100 * 0.40 % = 0.4 exactly: already a multiple of the step, not rounded further
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D(100), TAKER, D(0), CENT) == D("0.40")
    # a finer quote step: 123.45 * 0.40 % = 0.4938 exactly at 0.0001
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("123.45"), TAKER, D(0), D("0.0001")) == D("0.4938")
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D(0), TAKER, D(0), CENT) == D(0)


def test_quantize_up() -> None:
    assert quantize_up(D("1.231"), CENT) == D("1.24")
    assert quantize_up(D("1.23"), CENT) == D("1.23")
    assert quantize_up(D("-1.239"), CENT) == D("-1.23")  # towards +infinity
    assert quantize_up(D("1.1"), D("0.25")) == D("1.25")


@given(
    notional_cents=st.integers(min_value=0, max_value=10**14),
    volume=st.integers(min_value=0, max_value=10**9),
    liquidity=st.sampled_from(Liquidity),
)
def test_fee_is_the_exact_fee_within_half_a_step(notional_cents: int, volume: int, liquidity: Liquidity) -> None:
    notional = D(notional_cents).scaleb(-2)
    exact = notional * KRAKEN_SPOT_FEE_SCHEDULE.rate(liquidity, D(volume))
    fee = KRAKEN_SPOT_FEE_SCHEDULE.fee(notional, liquidity, D(volume), USD_STEP)
    assert abs(fee - exact) <= USD_STEP / 2
    assert fee % USD_STEP == 0


def test_a_small_fill_pays_its_fee_to_the_ten_thousandth_of_a_dollar() -> None:
    # 0.0005 BTC at 50,000.0 = 25 USD, taker 0.40 %: 0.1 exactly; 0.00049 BTC = 24.5 USD: 0.098 (not 0.10, +2 %);
    # 0.00002 BTC = 1 USD: 0.004 (rounding up to the cent charged 0.01, 150 % too much)
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D(25), TAKER, D(0), USD_STEP) == D("0.1000")
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("24.5"), TAKER, D(0), USD_STEP) == D("0.0980")
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D(1), TAKER, D(0), USD_STEP) == D("0.0040")
    # 1.45406823 * 0.25 % = 0.0036351707... -> 0.0036
    assert KRAKEN_SPOT_FEE_SCHEDULE.fee(D("1.45406823"), MAKER, D(0), USD_STEP) == D("0.0036")


@given(low=st.integers(min_value=0, max_value=10**8), extra=st.integers(min_value=0, max_value=10**8))
def test_kraken_rates_never_rise_with_volume(low: int, extra: int) -> None:
    for liquidity in Liquidity:
        assert KRAKEN_SPOT_FEE_SCHEDULE.rate(liquidity, D(low)) >= KRAKEN_SPOT_FEE_SCHEDULE.rate(
            liquidity, D(low + extra)
        )


def test_kraken_schedule_has_the_published_endpoints() -> None:
    tiers = KRAKEN_SPOT_FEE_SCHEDULE.tiers
    assert len(tiers) == 10
    assert tiers[0] == FeeTier(D(0), D("0.0025"), D("0.0040"))
    assert tiers[-1] == FeeTier(D(10_000_000), D(0), D("0.0010"))


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        (FeeTier(D(1), D("0.001"), D("0.002")),),  # does not start at 0
        (FeeTier(D(0), D("0.001"), D("0.002")), FeeTier(D(0), D("0.001"), D("0.002"))),  # duplicate minimum
        (
            FeeTier(D(0), D("0.001"), D("0.002")),
            FeeTier(D(100), D("0.001"), D("0.002")),
            FeeTier(D(50), D("0.001"), D("0.002")),
        ),  # unsorted
    ],
)
def test_invalid_schedules_are_refused(tiers: tuple[FeeTier, ...]) -> None:
    with pytest.raises(FeeScheduleError) as caught:
        FeeSchedule(tiers)
    assert caught.value.code == "invalid_fee_schedule"


@pytest.mark.parametrize(
    ("min_volume", "maker", "taker"),
    [
        (D(-1), D("0.001"), D("0.002")),
        (D(0), D("-0.0001"), D("0.002")),
        (D(0), D("0.001"), D("0.1001")),
    ],
)
def test_invalid_tiers_are_refused(min_volume: Decimal, maker: Decimal, taker: Decimal) -> None:
    with pytest.raises(FeeScheduleError):
        FeeTier(min_volume, maker, taker)


def test_rate_bounds_are_inclusive() -> None:
    tier = FeeTier(D(0), D(0), D("0.1"))
    assert FeeSchedule((tier,)).fee(D(100), TAKER, D(0), CENT) == D("10.00")


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="volume"):
        KRAKEN_SPOT_FEE_SCHEDULE.tier_for(D(-1))
    with pytest.raises(ValueError, match="notional"):
        compute_fee(D(-1), D("0.001"), CENT)
    with pytest.raises(FeeScheduleError):
        compute_fee(D(1), D("0.2"), CENT)


def test_accounts_can_have_their_own_schedule() -> None:
    vip = FeeSchedule((FeeTier(D(0), D(0), D("0.0005")),))
    schedules = AccountFeeSchedules().with_schedule(AccountId("vip"), vip)
    assert schedules.for_account(AccountId("vip")) is vip
    assert schedules.for_account(AccountId("retail")) is KRAKEN_SPOT_FEE_SCHEDULE
    # 10,000 * 0.05 % = 5 for the VIP account, 10,000 * 0.40 % = 40 for the default one
    assert schedules.for_account(AccountId("vip")).fee(D(10_000), TAKER, D(0), CENT) == D("5.00")
    assert schedules.for_account(AccountId("retail")).fee(D(10_000), TAKER, D(0), CENT) == D("40.00")
