"""Spot-only hedge sizing: EWMA volatility, NAV drawdown, the target hedge fraction, the rebalance band and the
kill-switch recommendation levels. Pure: no I/O, time comes in as arguments, every number is a Decimal.

The hedge fraction of an account is the share of its natural base position that the hedge has sold for quote:
natural = base held + base the hedge sold (net of buy-backs), fraction = hedged / natural. 0 leaves the traders'
position alone, 1 has moved all of it into quote. Hedging sells base for quote (never shorting); un-hedging buys
back only what the hedge sold, so the service never adds exposure the traders did not take.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, localcontext
from enum import StrEnum

from shared.domain.ledger import Balance
from shared.domain.types import OrderSide

ZERO = Decimal(0)
ONE = Decimal(1)
MAX_CLIENT_ORDER_ID = 64
FRACTION_STEP = Decimal("0.0001")  # targets and fractions are kept to 4 decimal places (0.01 %)
DRAWDOWN_STEP = Decimal("1E-18")


class HedgeLevel(StrEnum):
    """Kill-switch recommendation levels, mildest first."""

    PAUSE = "pause"
    REDUCE_ONLY = "reduce_only"
    FLATTEN = "flatten"


class HedgePolicyError(ValueError):
    """A hedge policy whose values contradict each other; `field` names the offending setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """How the target hedge fraction is computed and when recommendations are raised.

    `vol_saturation` and `drawdown_saturation` are the values at which each input counts fully (score 1);
    volatility is the EWMA standard deviation of simple returns per sample.
    """

    vol_weight: Decimal = Decimal("0.5")
    drawdown_weight: Decimal = Decimal("0.5")
    vol_saturation: Decimal = Decimal("0.02")
    drawdown_saturation: Decimal = Decimal("0.20")
    floor: Decimal = ZERO
    cap: Decimal = Decimal("0.8")
    band: Decimal = Decimal("0.05")
    ewma_lambda: Decimal = Decimal("0.94")
    levels: tuple[tuple[HedgeLevel, Decimal], ...] = (
        (HedgeLevel.PAUSE, Decimal("0.05")),
        (HedgeLevel.REDUCE_ONLY, Decimal("0.10")),
        (HedgeLevel.FLATTEN, Decimal("0.20")),
    )
    rearm_hysteresis: Decimal = Decimal("0.02")

    def __post_init__(self) -> None:
        for name in ("vol_weight", "drawdown_weight", "band", "rearm_hysteresis"):
            if getattr(self, name) < 0:
                raise HedgePolicyError(name, "must not be negative")
        for name in ("vol_saturation", "drawdown_saturation"):
            if getattr(self, name) <= 0:
                raise HedgePolicyError(name, "must be positive")
        for name in ("floor", "cap"):
            if not ZERO <= getattr(self, name) <= ONE:
                raise HedgePolicyError(name, "must be between 0 and 1")
        if self.floor > self.cap:
            raise HedgePolicyError("cap", f"must be >= floor ({self.floor})")
        if self.band >= ONE:
            raise HedgePolicyError("band", "must be below 1")
        if not ZERO < self.ewma_lambda < ONE:
            raise HedgePolicyError("ewma_lambda", "must be strictly between 0 and 1")
        self._check_levels()

    def _check_levels(self) -> None:
        names = [level for level, _ in self.levels]
        if len(set(names)) != len(names):
            raise HedgePolicyError("levels", "each level may appear once")
        for level, threshold in self.levels:
            if not ZERO < threshold <= ONE:
                raise HedgePolicyError(f"levels.{level}", "threshold must be in (0, 1]")
        ordered = [dict(self.levels).get(level) for level in HedgeLevel]
        present = [threshold for threshold in ordered if threshold is not None]
        if present != sorted(present):
            raise HedgePolicyError("levels", "thresholds must rise from pause to reduce_only to flatten")


@dataclass(frozen=True, slots=True)
class VolatilityState:
    """EWMA of squared simple returns of one price series."""

    last_price: Decimal
    variance: Decimal
    samples: int
    sampled_at: datetime

    @property
    def volatility(self) -> Decimal:
        """Standard deviation of returns per sample (0 before the first return)."""
        return self.variance.sqrt() if self.variance > 0 else ZERO


def update_volatility(
    state: VolatilityState | None, price: Decimal, at: datetime, ewma_lambda: Decimal, min_interval_s: float = 0.0
) -> VolatilityState:
    """Fold one price into the EWMA: variance' = lambda * variance + (1 - lambda) * r^2, r = price / last - 1.

    The first return seeds the variance with r^2; prices less than `min_interval_s` after the last sample
    (by their own timestamps) are skipped, so the estimate does not depend on the tick rate.
    """
    if price <= 0:
        raise ValueError("price must be positive")
    if state is None:
        return VolatilityState(last_price=price, variance=ZERO, samples=0, sampled_at=at)
    if 0 <= (at - state.sampled_at).total_seconds() < min_interval_s:
        return state  # (a clock that went backwards, as when a recording is replayed again, re-anchors instead)
    change = price / state.last_price - ONE
    squared = change * change
    variance = squared if state.samples == 0 else ewma_lambda * state.variance + (ONE - ewma_lambda) * squared
    return VolatilityState(last_price=price, variance=variance, samples=state.samples + 1, sampled_at=at)


def next_peak(peak: Decimal | None, nav: Decimal) -> Decimal:
    """The running maximum of NAV."""
    return nav if peak is None or nav > peak else peak


def drawdown(peak: Decimal | None, nav: Decimal) -> Decimal:
    """Peak-to-trough loss as a fraction of the peak, in [0, 1] (0 without a positive peak)."""
    if peak is None or peak <= 0 or nav >= peak:
        return ZERO
    # To the 18 decimal places it is stored and sent with (NUMERIC(38,18), the contracts' decimals).
    return min(ONE, (peak - max(nav, ZERO)) / peak).quantize(DRAWDOWN_STEP, rounding=ROUND_HALF_EVEN)


def _score(value: Decimal, saturation: Decimal) -> Decimal:
    return min(ONE, max(ZERO, value) / saturation)


def target_fraction(policy: HedgePolicy, volatility: Decimal, drawdown_fraction: Decimal) -> Decimal:
    """floor + (cap - floor) * weighted mean of the two saturating scores, rounded to 0.01 %.

    Non-decreasing in volatility and in drawdown (non-negative weights, monotone scores, monotone rounding)
    and always within [floor, cap].
    """
    total_weight = policy.vol_weight + policy.drawdown_weight
    if total_weight == 0:
        return policy.floor
    blend = (
        policy.vol_weight * _score(volatility, policy.vol_saturation)
        + policy.drawdown_weight * _score(drawdown_fraction, policy.drawdown_saturation)
    ) / total_weight
    with localcontext() as context:
        context.prec = 40
        raw = policy.floor + (policy.cap - policy.floor) * blend
    return min(policy.cap, max(policy.floor, raw.quantize(FRACTION_STEP, rounding=ROUND_HALF_EVEN)))


def rebalance_to(current: Decimal, target: Decimal, band: Decimal) -> Decimal | None:
    """The fraction to trade to, or None inside the band: outside it, trade to the nearer band edge (no churn)."""
    if current < target - band:
        return target - band
    if current > target + band:
        return target + band
    return None


def hedge_fraction(hedged_base: Decimal, base_held: Decimal) -> Decimal:
    """Share of the natural base position (held + hedged) that the hedge has sold (0 without a position)."""
    natural = max(ZERO, base_held) + max(ZERO, hedged_base)
    if natural <= 0:
        return ZERO
    return min(ONE, max(ZERO, hedged_base) / natural)


@dataclass(frozen=True, slots=True)
class HedgeTrade:
    """A spot trade that moves the hedge fraction: sell base for quote to hedge, buy base back to un-hedge."""

    side: OrderSide
    quantity: Decimal


def hedge_trade(
    hedged_base: Decimal,
    base_held: Decimal,
    new_fraction: Decimal,
    quantity_increment: Decimal,
    min_quantity: Decimal,
) -> HedgeTrade | None:
    """Base quantity that brings the hedged share of the natural position to `new_fraction` (rounded down).

    A sell never exceeds the base held and a buy-back never exceeds what was hedged, for any fraction in [0, 1].
    """
    hedged = max(ZERO, hedged_base)
    natural = max(ZERO, base_held) + hedged
    change = min(ONE, max(ZERO, new_fraction)) * natural - hedged
    quantity = abs(change).quantize(quantity_increment, rounding=ROUND_DOWN)
    if quantity <= 0 or quantity < min_quantity:
        return None
    return HedgeTrade(side=OrderSide.SELL if change > 0 else OrderSide.BUY, quantity=quantity)


def cap_to_free_balance(
    trade: HedgeTrade | None,
    *,
    free_base: Decimal,
    free_quote: Decimal,
    buy_price: Decimal,
    quantity_increment: Decimal,
    min_quantity: Decimal,
) -> HedgeTrade | None:
    """Spot only: a sell never exceeds the free base, a buy never the free quote at `buy_price` (what the OMS
    reserves per unit of a market buy); None when what is left rounds below `min_quantity`."""
    if trade is None:
        return None
    free = free_base if trade.side is OrderSide.SELL else free_quote / buy_price
    quantity = min(trade.quantity, max(ZERO, free)).quantize(quantity_increment, rounding=ROUND_DOWN)
    if quantity <= 0 or quantity < min_quantity:
        return None
    return HedgeTrade(side=trade.side, quantity=quantity)


@dataclass(frozen=True, slots=True)
class Valuation:
    """NAV of one account in the quote currency; `unpriced` lists held assets without a price."""

    nav: Decimal
    quote_value: Decimal
    unpriced: tuple[str, ...]


def value_balances(balances: Mapping[str, Balance], prices: Mapping[str, Decimal], quote: str) -> Valuation:
    """Sum every balance at its `<asset>/<quote>` price; assets without a price are left out and listed."""
    nav = ZERO
    quote_value = ZERO
    unpriced: list[str] = []
    for asset, balance in sorted(balances.items()):
        if asset == quote:
            quote_value += balance.total
            nav += balance.total
        elif (price := prices.get(f"{asset}/{quote}")) is not None:
            nav += balance.total * price
        elif balance.total != 0:
            unpriced.append(asset)
    return Valuation(nav=nav, quote_value=quote_value, unpriced=tuple(unpriced))


def levels_to_raise(policy: HedgePolicy, drawdown_fraction: Decimal, raised: set[HedgeLevel]) -> list[HedgeLevel]:
    """Levels whose threshold the drawdown has reached and that are not raised already (raised once)."""
    return [level for level, threshold in policy.levels if drawdown_fraction >= threshold and level not in raised]


def levels_to_rearm(policy: HedgePolicy, drawdown_fraction: Decimal, raised: set[HedgeLevel]) -> list[HedgeLevel]:
    """Raised levels the drawdown has recovered from by more than the hysteresis band."""
    return [
        level
        for level, threshold in policy.levels
        if level in raised and drawdown_fraction < threshold - policy.rearm_hysteresis
    ]


def threshold_of(policy: HedgePolicy, level: HedgeLevel) -> Decimal:
    """The drawdown threshold configured for `level`."""
    return dict(policy.levels)[level]


def hedge_client_order_id(account_id: str, target_version: int) -> str:
    """Deterministic client order id of the hedge order for one target version: retries never double-trade."""
    candidate = f"hedge-{account_id}-{target_version}"
    if len(candidate) <= MAX_CLIENT_ORDER_ID:
        return candidate
    digest = hashlib.blake2b(account_id.encode(), digest_size=12).hexdigest()
    return f"hedge-{digest}-{target_version}"
