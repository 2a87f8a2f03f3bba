"""Evaluation: prices and balances in, NAV, peak and drawdown, then the target, the recommendations and (outside
the band) the hedge order.

Prices come from market data (`observe_price`: one row per symbol with its EWMA state). Balances come from the
OMS's `BalanceChanged` events into `hedge.balances` (`apply_balances`; a version not newer than the stored one is
dropped). `revalue` values the stored balances at the latest prices, moves the NAV peak and evaluates; the tick
runs it for every tracked account whose balances are quiet (`accounts_to_revalue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.metrics import DRAWDOWN_MAX, EFFECTIVE_TARGET_MAX
from services.hedge.repository import BalanceRepository, HedgeRepository
from services.hedge.use_cases.common import HedgeContext, override_target, total_of
from services.hedge.use_cases.orders import HedgeOrders, HedgePosition, Target
from services.hedge.use_cases.recommendations import Recommendations
from shared.domain.hedge import (
    VolatilityState,
    drawdown,
    hedge_fraction,
    next_peak,
    target_fraction,
    update_volatility,
    value_balances,
)
from shared.observability.logging import get_logger

log = get_logger(__name__)
VARIANCE_STEP = Decimal("1e-18")  # NUMERIC(38,18), as stored


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    """One asset's balance at one OMS version."""

    asset: str
    total: Decimal
    reserved: Decimal
    version: int
    changed_at: datetime


class Evaluation:
    """Values accounts and evaluates their hedge."""

    def __init__(self, context: HedgeContext, recommendations: Recommendations, orders: HedgeOrders) -> None:
        self.context = context
        self.recommendations = recommendations
        self.orders = orders

    async def observe_price(self, session: AsyncSession, symbol: str, price: Decimal, at: datetime) -> None:
        """Fold a market price into the symbol's EWMA volatility and keep it as the latest valuation price."""
        repo = HedgeRepository(session)
        row = await repo.lock_volatility(symbol)
        state = None
        if row is not None:
            state = VolatilityState(row["last_price"], row["variance"], row["samples"], row["sampled_at"])
        settings = self.context.settings
        if settings.volatility_source == "features":
            updated = state or VolatilityState(last_price=price, variance=Decimal(0), samples=0, sampled_at=at)
        else:
            updated = update_volatility(
                state, price, at, self.context.default_policy.ewma_lambda, min_interval_s=settings.vol_sample_interval_s
            )
        await repo.save_volatility(
            symbol,
            last_price=updated.last_price,
            variance=updated.variance,
            samples=updated.samples,
            sampled_at=updated.sampled_at,
            price=price,
            priced_at=at,
        )

    async def observe_realized_volatility(
        self, session: AsyncSession, symbol: str, realized: float, bars: int, at: datetime
    ) -> bool:
        """Take the symbol's variance from a realized volatility over `bars` 1-minute bars (volatility_source =
        features): variance per bar = realized^2 / bars, the scale of the EWMA's 60 s samples. False (ignored)
        before the symbol's first price, or for a bar older than the last one taken."""
        repo = HedgeRepository(session)
        row = await repo.lock_volatility(symbol)
        if row is None or (row["samples"] > 0 and at <= row["sampled_at"]):
            return False
        value = Decimal(repr(realized))
        variance = (value * value / bars).quantize(VARIANCE_STEP, rounding=ROUND_HALF_EVEN)
        await repo.save_volatility(
            symbol,
            last_price=row["last_price"],
            variance=variance,
            samples=row["samples"] + 1,
            sampled_at=at,
            price=row["price"],
            priced_at=row["priced_at"],
        )
        return True

    async def apply_balances(self, session: AsyncSession, account_id: str, updates: Sequence[BalanceUpdate]) -> bool:
        """Store the newer of `updates` (stale versions are dropped); False when every one was stale.

        Nothing is valued here: one OMS change arrives as one event per asset (a fill moves base and quote), and
        a NAV taken between them would be wrong. The tick values the account once its balances are quiet."""
        received_at = self.context.clock()
        balances = BalanceRepository(session)
        applied = [
            update
            for update in updates
            if await balances.apply(
                account_id,
                update.asset,
                version=update.version,
                total=update.total,
                reserved=update.reserved,
                changed_at=update.changed_at,
                received_at=received_at,
            )
        ]
        if not applied:
            return False
        repo = HedgeRepository(session)
        row = await repo.lock_account(account_id)
        if row is None and account_id in self.context.settings.accounts:
            await repo.ensure_account(account_id)
            row = await repo.lock_account(account_id)
        changed_at = max(update.changed_at for update in applied)
        if row is not None and (row["holdings_at"] is None or row["holdings_at"] < changed_at):
            await repo.update_account(account_id, holdings_at=changed_at)
        return True

    async def accounts_to_revalue(self) -> list[str]:
        """Tracked accounts, less those whose balances changed within `balance_quiet_s`."""
        since = self.context.clock() - timedelta(seconds=self.context.settings.balance_quiet_s)
        async with self.context.reading() as uow:
            seen = await HedgeRepository(uow.session).account_ids()
            settling = await BalanceRepository(uow.session).received_since(since)
        return sorted({*self.context.settings.accounts, *seen} - settling)

    async def revalue(self, account_id: str) -> None:
        """Value the account's stored balances at the latest prices, move the NAV peak, then evaluate."""
        async with self.context.writing() as uow:
            await HedgeRepository(uow.session).ensure_account(account_id)
            await self.revalue_in(uow.session, account_id)

    async def revalue_in(self, session: AsyncSession, account_id: str) -> None:
        """`revalue` inside the caller's transaction (the account must be tracked)."""
        now = self.context.clock()
        repo = HedgeRepository(session)
        row = await repo.lock_account(account_id)
        balances = (await BalanceRepository(session).of([account_id])).get(account_id)
        if row is None or not balances:
            return  # no balances from the OMS yet: nothing to value
        valuation = value_balances(balances, await repo.prices(), self.context.settings.quote_asset)
        if valuation.unpriced:
            # A NAV without some asset would look like a drawdown: keep the balances, judge nothing.
            log.warning("hedge_nav_incomplete", account_id=account_id, unpriced=list(valuation.unpriced))
            return
        peak = next_peak(row["peak_nav"], valuation.nav)
        values: dict[str, Any] = {"nav": valuation.nav, "peak_nav": peak}
        if peak != row["peak_nav"]:
            values["peak_at"] = now
        await repo.update_account(account_id, **values)
        if valuation.nav != row["nav"] or peak != row["peak_nav"]:
            await repo.add_nav(account_id, valuation.nav, peak, now)  # history of changes, not of revaluations
        await self.evaluate(session, account_id)

    async def evaluate(self, session: AsyncSession, account_id: str) -> None:
        """Recompute target, recommendations and (outside the band) the hedge order, in the caller's transaction."""
        repo = HedgeRepository(session)
        row = await repo.lock_account(account_id)
        if row is None or row["nav"] is None:
            return
        now = self.context.clock()
        settings = self.context.settings
        vol_row = await repo.volatility(settings.hedge_symbol)
        if settings.volatility_source == "features" and (vol_row is None or vol_row["samples"] == 0):
            # No realized volatility yet: the variance is unknown, not zero; judge nothing (no target, no order).
            log.warning("hedge_volatility_unknown", account_id=account_id, symbol=settings.hedge_symbol)
            return
        vol = VolatilityState(vol_row["last_price"], vol_row["variance"], 0, now).volatility if vol_row else Decimal(0)
        dd = drawdown(row["peak_nav"], row["nav"])
        policy = await self.context.policy_in_force(repo, account_id)
        computed = target_fraction(policy, vol, dd)
        fixed = override_target(await repo.override(account_id), now)
        effective = computed if fixed is None else fixed
        balances = (await BalanceRepository(session).of([account_id])).get(account_id, {})
        hedged = await repo.hedged_base(account_id)
        held = total_of(balances, settings.base_asset)
        current = hedge_fraction(hedged, held)
        await repo.update_account(
            account_id,
            drawdown=dd,
            volatility=vol,
            computed_target=computed,
            effective_target=effective,
            current_fraction=current,
            evaluated_at=now,
        )
        DRAWDOWN_MAX.set(account_id, float(dd))  # metrics are floats; the stored values stay Decimal
        EFFECTIVE_TARGET_MAX.set(account_id, float(effective))
        await self.recommendations.follow_drawdown(session, policy, account_id, dd, now)
        if vol_row is not None:
            position = HedgePosition(hedged=hedged, held=held, current=current)
            target = Target(fraction=effective, band=policy.band)
            await self.orders.rebalance(session, row, position, target, vol_row["price"], balances, now)
