"""Trading fees: maker/taker rates by 30-day USD volume tier, tiers as data, one schedule per account.

Rounding: a fee is `cost * rate` in quote, rounded to the NEAREST step of the quote asset's precision (Kraken's
Assets `decimals`: USD 0.0001), the way the venue books every amount (docs/venues.md). Rounding up to the cent
overstated the fee of a small fill by up to 10 %. Reservations are upper bounds and round up instead
(`quantize_up`, used by `shared.domain.ledger.required_reservation`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_CEILING, Context, Decimal
from itertools import pairwise
from types import MappingProxyType

from shared.domain.money import MONEY_CONTEXT, MoneyError, quantize_nearest
from shared.domain.types import AccountId, Liquidity

MAX_FEE_RATE = Decimal("0.1")
# The fee tier is set by the volume traded over the last 30 days, a rolling window (fills age out of it).
FEE_VOLUME_WINDOW = timedelta(days=30)
# Every inexact intermediate result rounds towards +infinity, so a rounded-up cost is an upper bound.
UPWARD_CONTEXT = Context(prec=38, rounding=ROUND_CEILING)


class FeeScheduleError(ValueError):
    """A fee tier or schedule that cannot be used (unsorted tiers, rate outside [0, 0.1], ...)."""

    code = "invalid_fee_schedule"


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    """Round towards +infinity to a multiple of `step` (the safe direction for costs and reservations)."""
    if step <= 0:
        raise MoneyError(f"step must be positive: {step}")
    units = UPWARD_CONTEXT.divide(value, step).to_integral_value(rounding=ROUND_CEILING)
    return (units * step).quantize(step, context=MONEY_CONTEXT)


def compute_fee(notional: Decimal, rate: Decimal, quote_step: Decimal) -> Decimal:
    """Fee in quote for a fill of `notional` quote at `rate`, rounded to the nearest `quote_step` (as the venue)."""
    if notional < 0:
        raise ValueError(f"notional must not be negative: {notional}")
    if not 0 <= rate <= MAX_FEE_RATE:
        raise FeeScheduleError(f"fee rate must be within [0, {MAX_FEE_RATE}]: {rate}")
    return quantize_nearest(MONEY_CONTEXT.multiply(notional, rate), quote_step)


@dataclass(frozen=True, slots=True)
class FeeTier:
    """Rates that apply from `min_volume_usd` of 30-day traded volume up to the next tier."""

    min_volume_usd: Decimal
    maker_rate: Decimal
    taker_rate: Decimal

    def __post_init__(self) -> None:
        if self.min_volume_usd < 0:
            raise FeeScheduleError(f"tier volume must not be negative: {self.min_volume_usd}")
        for name, rate in (("maker_rate", self.maker_rate), ("taker_rate", self.taker_rate)):
            if not 0 <= rate <= MAX_FEE_RATE:
                raise FeeScheduleError(f"{name} must be within [0, {MAX_FEE_RATE}]: {rate}")

    def rate(self, liquidity: Liquidity) -> Decimal:
        """The maker or the taker rate of this tier."""
        return self.maker_rate if liquidity is Liquidity.MAKER else self.taker_rate


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Volume tiers sorted by strictly increasing `min_volume_usd`, the first starting at 0."""

    tiers: tuple[FeeTier, ...]

    def __post_init__(self) -> None:
        if not self.tiers:
            raise FeeScheduleError("a fee schedule needs at least one tier")
        if self.tiers[0].min_volume_usd != 0:
            raise FeeScheduleError("the first tier must start at 0 volume")
        for lower, upper in pairwise(self.tiers):
            if upper.min_volume_usd <= lower.min_volume_usd:
                raise FeeScheduleError("tiers must be sorted by strictly increasing min_volume_usd")

    def tier_for(self, volume_30d_usd: Decimal) -> FeeTier:
        """The tier for a 30-day traded volume: the last one whose minimum is reached."""
        if volume_30d_usd < 0:
            raise ValueError(f"30-day volume must not be negative: {volume_30d_usd}")
        index = bisect_right([tier.min_volume_usd for tier in self.tiers], volume_30d_usd) - 1
        return self.tiers[index]

    def rate(self, liquidity: Liquidity, volume_30d_usd: Decimal) -> Decimal:
        """The maker or taker rate at a 30-day traded volume."""
        return self.tier_for(volume_30d_usd).rate(liquidity)

    def fee(self, notional: Decimal, liquidity: Liquidity, volume_30d_usd: Decimal, quote_step: Decimal) -> Decimal:
        """Fee in quote for a fill of `notional` quote, rounded to the nearest `quote_step`."""
        return compute_fee(notional, self.rate(liquidity, volume_30d_usd), quote_step)


def _tier(min_volume_usd: int, maker_percent: str, taker_percent: str) -> FeeTier:
    return FeeTier(Decimal(min_volume_usd), Decimal(maker_percent) / 100, Decimal(taker_percent) / 100)


# Kraken Pro spot schedule for crypto (non-stablecoin, non-FX) pairs, https://www.kraken.com/features/fee-schedule#spot.
# Entry (0.25 % / 0.40 %), 50K, 100K, 500K and 10M+ tiers checked 2026-05 against a public summary of that page
# (api-evangelist/kraken plans/kraken-plans-pricing.yml, 2026-05-30); the tiers in between are the widely
# published ones. Stablecoin and FX pairs have a separate, lower schedule (not modelled here).
KRAKEN_SPOT_FEE_SCHEDULE = FeeSchedule(
    (
        _tier(0, "0.25", "0.40"),
        _tier(10_000, "0.20", "0.35"),
        _tier(50_000, "0.14", "0.24"),
        _tier(100_000, "0.12", "0.22"),
        _tier(250_000, "0.10", "0.20"),
        _tier(500_000, "0.08", "0.18"),
        _tier(1_000_000, "0.06", "0.16"),
        _tier(2_500_000, "0.04", "0.14"),
        _tier(5_000_000, "0.02", "0.12"),
        _tier(10_000_000, "0.00", "0.10"),
    )
)


@dataclass(frozen=True, slots=True)
class AccountFeeSchedules:
    """The schedule each account trades under: its own where it has one, the default otherwise."""

    default: FeeSchedule = KRAKEN_SPOT_FEE_SCHEDULE
    by_account: Mapping[AccountId, FeeSchedule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_account", MappingProxyType(dict(self.by_account)))

    def for_account(self, account_id: AccountId) -> FeeSchedule:
        """The schedule of `account_id`."""
        return self.by_account.get(account_id, self.default)

    def with_schedule(self, account_id: AccountId, schedule: FeeSchedule) -> AccountFeeSchedules:
        """A copy in which `account_id` trades under `schedule`."""
        return AccountFeeSchedules(self.default, {**self.by_account, account_id: schedule})
