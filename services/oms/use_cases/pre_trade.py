"""The pre-trade chain every new order passes: trading state, risk limits, a price to reserve at, free balance,
and whether a director must approve it. Decisions are data: `Reserve` or `Denial`."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from redis.asyncio import Redis

from services.oms.approval_policy import ApprovalPolicyReader, OrderFacts, approval_reasons, threshold_reasons
from services.oms.errors import MarketDataUnavailable, OrderDenied, TradingStateDenied
from services.oms.repository import OmsRepository
from services.oms.risk_limits import RiskLimitsReader, start_of_utc_day
from services.oms.trading_state import TradingStateReader
from services.oms.use_cases.context import OmsContext
from shared.contracts.approvals import ApprovalReason
from shared.domain.fees import FEE_VOLUME_WINDOW
from shared.domain.ledger import Ledger, required_reservation
from shared.domain.money import InstrumentSpec, format_decimal
from shared.domain.orders import Order
from shared.domain.pricing import market_buy_reservation_price
from shared.domain.risk_limits import (
    Exposure,
    FillRecord,
    LimitViolation,
    OrderToCheck,
    check_order,
    realized_loss_since,
)
from shared.domain.trading_state import StateDenialCode, denial_for_state
from shared.domain.types import Asset, Liquidity, OrderSide, Symbol
from shared.venues.base import LatestBook, LatestBookUnavailable, LatestBookView


class DenialCode(StrEnum):
    """Denials of the OMS's own checks (the trading state and the risk limits bring their own codes)."""

    NO_MARKET_DATA = "no_market_data"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_MISMATCH = "approval_mismatch"


@dataclass(frozen=True, slots=True)
class Denial:
    """A pre-trade refusal: a code (a `StateDenialCode`, a `DenialCode` or a limit's code) and a sentence."""

    code: str
    sentence: str

    @property
    def reason(self) -> str:
        """The order's recorded reason: "<code>: <sentence>"."""
        return f"{self.code}: {self.sentence}"

    def error(self, order_id: str) -> OrderDenied:
        """The error answering the request: 409 when the trading state refused, else 422."""
        kind = TradingStateDenied if isinstance(self.code, StateDenialCode) else OrderDenied
        return kind(self.code, self.reason, order_id)


@dataclass(frozen=True, slots=True)
class Reserve:
    """The order may go on: reserve `amount` of `asset`; `reasons` why it waits for a director (empty: it goes)."""

    asset: Asset
    amount: Decimal
    notional: Decimal
    reasons: tuple[ApprovalReason, ...] = ()

    @property
    def needs_approval(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True, slots=True)
class AccountTerms:
    """What the account's own row brings to the checks."""

    approval_threshold: Decimal | None
    has_exits: bool = False


class PreTradeChain:
    """Runs the checks in order; the first refusal wins. Unreadable state (Redis down) is a 503, never a pass."""

    def __init__(self, ctx: OmsContext, redis: Redis, latest_book: LatestBook) -> None:
        self.ctx = ctx
        self.latest_book = latest_book
        self.trading_state = TradingStateReader(redis)
        self.risk_limits = RiskLimitsReader(redis)
        self.approval_policy = ApprovalPolicyReader(redis)

    async def decide(
        self, repo: OmsRepository, order: Order, spec: InstrumentSpec, ledger: Ledger, terms: AccountTerms
    ) -> Reserve | Denial:
        """The pre-trade check chain: trading state, risk limits, price reference, free balance, approval (the hitl
        policy mirrored to Redis, else the account's approval threshold)."""
        state = await self.trading_state.get(order.account_id)
        state_denial = denial_for_state(state, order, ledger.position(order.symbol).quantity)
        if state_denial is not None:
            return Denial(state_denial.code, state_denial.sentence)
        violation = await self._limit_violation(repo, order, ledger, terms.has_exits)
        if violation is not None:
            return Denial(violation.code, violation.sentence)
        price = await self._reservation_price(order)
        if price is None:
            return Denial(
                DenialCode.NO_MARKET_DATA, f"no market price for {order.symbol} yet: a market buy cannot be sized"
            )
        rate = await self._taker_rate(repo, order) if order.side is OrderSide.BUY else Decimal(0)
        need = required_reservation(order.side, order.quantity, price, rate, spec)
        free = ledger.balance(need.asset).free
        if need.amount > free:
            return Denial(
                DenialCode.INSUFFICIENT_BALANCE,
                f"insufficient {need.asset}: needs {format_decimal(need.amount)}, free {format_decimal(free)}",
            )
        notional = order.quantity * price
        reasons = await self._approval_reasons(repo, order, ledger, notional, terms.approval_threshold)
        return Reserve(need.asset, need.amount, notional, tuple(reasons))

    async def _taker_rate(self, repo: OmsRepository, order: Order) -> Decimal:
        """The account's own taker rate at its rolling 30-day volume (what the venue will charge at most)."""
        volume = await repo.traded_volume_since(order.account_id, self.ctx.clock() - FEE_VOLUME_WINDOW)
        return self.ctx.fee_schedules.for_account(order.account_id).rate(Liquidity.TAKER, volume)

    async def _approval_reasons(
        self, repo: OmsRepository, order: Order, ledger: Ledger, notional: Decimal, approval_threshold: Decimal | None
    ) -> list[ApprovalReason]:
        """Why the order waits for a director: the account's hitl policy when one is mirrored (Redis
        `hitl:policy:account:<id>`), else the OMS account's own threshold."""
        policy = await self.approval_policy.get(order.account_id)
        if policy is None:
            return threshold_reasons(approval_threshold, notional)
        held = ledger.position(order.symbol).quantity
        reduces = order.side is OrderSide.SELL and order.quantity <= held
        known = True
        if policy.new_instrument and not reduces:
            known = await repo.has_submitted_in_symbol(order.account_id, order.symbol)
        return approval_reasons(policy, OrderFacts(notional, instrument_known=known, reduces_held_position=reduces))

    async def _limit_violation(
        self, repo: OmsRepository, order: Order, ledger: Ledger, has_exits: bool
    ) -> LimitViolation | None:
        """The account's limits (mirrored by the risk service) against this order; none configured: None."""
        limits = await self.risk_limits.get(order.account_id)
        if limits is None:
            return None
        book = await self.book(order.symbol)
        mid = None if book is None else book.mid()
        held = ledger.position(order.symbol).quantity
        # Exposure in the symbol: what is held plus what live buys may still add, valued at mid (else the limit).
        value_at = mid if mid is not None else order.limit_price or Decimal(0)
        exposure_quantity = held + await repo.open_buy_quantity(order.account_id, order.symbol)
        loss = Decimal(0)
        if limits.daily_loss_limit is not None:
            rows = await repo.fills_for_replay(order.account_id)
            fills = [
                FillRecord(r["symbol"], OrderSide(r["side"]), r["quantity"], r["price"], r["fee"], r["filled_at"])
                for r in rows
            ]
            loss = realized_loss_since(fills, start_of_utc_day(self.ctx.clock()))
        exposure = Exposure(
            mid_price=mid,
            position_quantity=held,
            position_notional=exposure_quantity * value_at,
            open_orders=await repo.live_order_count(order.account_id),
            realized_loss_today=loss,
        )
        candidate = OrderToCheck(order.symbol, order.side, order.quantity, order.limit_price, has_exits)
        return check_order(limits, candidate, exposure)

    async def _reservation_price(self, order: Order) -> Decimal | None:
        if order.limit_price is not None:
            return order.limit_price
        book = await self.book(order.symbol)
        reference = None if book is None else book.walk_price(order.side, order.quantity)
        if reference is None:
            return order.trigger_price if order.side is OrderSide.SELL else None
        if order.side is OrderSide.BUY:
            return market_buy_reservation_price(reference, self.ctx.settings.market_buy_slippage)
        return reference

    async def book(self, symbol: Symbol) -> LatestBookView | None:
        """The latest book; unreadable is a 503, never "no market data"."""
        try:
            return await self.latest_book.get(symbol)
        except LatestBookUnavailable as exc:
            raise MarketDataUnavailable(str(exc)) from None
