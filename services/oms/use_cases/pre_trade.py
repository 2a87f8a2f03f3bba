"""The pre-trade chain every order passes when it is placed and again when it is released (a director's approval,
a resubmit): trading state, risk limits, a price to reserve at, free balance, and whether a director must approve
it. Decisions are data: `Reserve` or `Denial`. The trading state, limits and policies come from the OMS's own copy
(`services/oms/controls.py`), read in the order's transaction: unknown is a 503, never a pass."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.oms.approval_policy import OrderFacts, approval_reasons, threshold_reasons
from services.oms.controls import AccountControls, ControlsRepository
from services.oms.errors import AccountNotFound, MarketDataUnavailable, OrderDenied, TradingStateDenied
from services.oms.ledger_repository import LedgerRepository
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.use_cases.context import OmsContext
from shared.clock import utc_day
from shared.contracts.approvals import ApprovalReason
from shared.contracts.exits import ExitInstructions
from shared.domain.fees import FEE_VOLUME_WINDOW
from shared.domain.ledger import Ledger, required_reservation
from shared.domain.money import InstrumentSpec, format_decimal
from shared.domain.orders import Order
from shared.domain.pricing import market_buy_reservation_price
from shared.domain.risk_limits import (
    Exposure,
    LimitViolation,
    OrderToCheck,
    check_order,
)
from shared.domain.trading_state import StateDenialCode, denial_for_state
from shared.domain.types import Asset, Liquidity, OrderSide, OrderType, Symbol
from shared.venues.base import LatestBook, LatestBookUnavailable, LatestBookView


class DenialCode(StrEnum):
    """Denials of the OMS's own checks (the trading state and the risk limits bring their own codes)."""

    NO_MARKET_DATA = "no_market_data"
    STALE_MARKET_DATA = "stale_market_data"
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
    model_confidence: Decimal | None = None  # a model-driven order's (the policy's model_confidence_min applies)


class PreTradeChain:
    """Runs the checks in order; the first refusal wins. Unknown controls are a 503, never a pass."""

    def __init__(self, ctx: OmsContext, latest_book: LatestBook) -> None:
        self.ctx = ctx
        self.latest_book = latest_book

    async def decide(
        self, repo: OmsRepository, order: Order, spec: InstrumentSpec, ledger: Ledger, terms: AccountTerms
    ) -> Reserve | Denial:
        """The pre-trade check chain: trading state, risk limits, price reference, free balance, approval (the hitl
        policy, else the account's approval threshold)."""
        controls = await ControlsRepository(repo.session).for_account(order.account_id)
        book = BookOnce(self, order.symbol)
        denial = await self.release_denial(repo, order, ledger, terms, controls, book=book)
        if denial is not None:
            return denial
        price = await self._reservation_price(order, book)
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
        reasons = await self._approval_reasons(repo, order, ledger, notional, terms, controls)
        return Reserve(need.asset, need.amount, notional, tuple(reasons))

    async def release_check(self, repo: OmsRepository, stored: StoredOrder) -> Denial | None:
        """The trading state and limits against a recorded order about to be released to the venue (after a
        director's approval, before a resubmit), as they are now; the order itself is not counted twice."""
        order = stored.order
        account = await repo.get_account(order.account_id)
        if account is None:
            raise AccountNotFound(f"trading account {order.account_id!r} does not exist")
        ledger = await LedgerRepository(repo.session).load_ledger(order.account_id)
        controls = await ControlsRepository(repo.session).for_account(order.account_id)
        exits = None if stored.exits is None else ExitInstructions.model_validate(stored.exits)
        terms = AccountTerms(account.approval_threshold, exits is not None and not exits.is_empty())
        return await self.release_denial(repo, order, ledger, terms, controls, excluding=order.id)

    async def release_denial(
        self,
        repo: OmsRepository,
        order: Order,
        ledger: Ledger,
        terms: AccountTerms,
        controls: AccountControls,
        *,
        excluding: str | None = None,
        book: BookOnce | None = None,
    ) -> Denial | None:
        """The trading state and the risk limits against `order` now (at placement, and again at its release after
        an approval or before a resubmit, `excluding` the order itself from the live orders); None: they let it
        go."""
        book = book or BookOnce(self, order.symbol)
        state = controls.trading_state()
        state_denial = denial_for_state(state, order, ledger.position(order.symbol).quantity)
        if state_denial is not None:
            return Denial(state_denial.code, state_denial.sentence)
        stale = await self._stale_market_data(order, book)
        if stale is not None:
            return stale
        violation = await self._limit_violation(repo, order, ledger, terms.has_exits, controls, book, excluding)
        if violation is not None:
            return Denial(violation.code, violation.sentence)
        return None

    async def _stale_market_data(self, order: Order, latest: BookOnce) -> Denial | None:
        """A market order executes on the book as it is now: one not updated for `market_data_max_age_s` (a feed
        stopped, a venue feed resyncing) is not a price to trade on. No book at all is `no_market_data` later."""
        if order.type is not OrderType.MARKET:
            return None
        book = await latest()
        max_age_s = self.ctx.settings.market_data_max_age_s
        if book is None or not book.is_stale(self.ctx.clock(), max_age_s):
            return None
        age = "unknown" if book.updated_at is None else f"{(self.ctx.clock() - book.updated_at).total_seconds():.0f} s"
        return Denial(
            DenialCode.STALE_MARKET_DATA,
            f"the latest {order.symbol} book is stale (age {age}, limit {max_age_s:g} s): a market order cannot be priced",
        )

    async def _taker_rate(self, repo: OmsRepository, order: Order) -> Decimal:
        """The account's own taker rate at its rolling 30-day volume (what the venue will charge at most)."""
        volume = await repo.traded_volume_since(order.account_id, self.ctx.clock() - FEE_VOLUME_WINDOW)
        return self.ctx.fee_schedules.for_account(order.account_id).rate(Liquidity.TAKER, volume)

    async def _approval_reasons(
        self,
        repo: OmsRepository,
        order: Order,
        ledger: Ledger,
        notional: Decimal,
        terms: AccountTerms,
        controls: AccountControls,
    ) -> list[ApprovalReason]:
        """Why the order waits for a director: the account's hitl policy when the approval service has one, else
        the OMS account's own threshold."""
        controls.check_known()
        policy = controls.approval_policy
        if policy is None:
            return threshold_reasons(terms.approval_threshold, notional)
        held = ledger.position(order.symbol).quantity
        reduces = order.side is OrderSide.SELL and order.quantity <= held
        known = True
        if policy.new_instrument and not reduces:
            known = await repo.has_submitted_in_symbol(order.account_id, order.symbol)
        facts = OrderFacts(notional, known, reduces, model_confidence=terms.model_confidence)
        return approval_reasons(policy, facts)

    async def _limit_violation(
        self,
        repo: OmsRepository,
        order: Order,
        ledger: Ledger,
        has_exits: bool,
        controls: AccountControls,
        latest: BookOnce,
        excluding: str | None = None,
    ) -> LimitViolation | None:
        """The account's limits (as the risk service published them) against this order; none set: None."""
        limits = controls.effective_limits()
        if limits is None:
            return None
        book = await latest()
        mid = None if book is None else book.mid()
        held = ledger.position(order.symbol).quantity
        # Exposure in the symbol: what is held plus what live buys may still add, valued at mid (else the limit).
        value_at = mid if mid is not None else order.limit_price or Decimal(0)
        exposure_quantity = held + await repo.open_buy_quantity(order.account_id, order.symbol, excluding=excluding)
        loss = Decimal(0)
        if limits.daily_loss_limit is not None:  # one row, kept in each fill's transaction: O(1) in the history
            pnl = await LedgerRepository(repo.session).realized_pnl_on(order.account_id, utc_day(self.ctx.clock()))
            loss = max(Decimal(0), -pnl)
        exposure = Exposure(
            mid_price=mid,
            position_quantity=held,
            position_notional=exposure_quantity * value_at,
            open_orders=await repo.live_order_count(order.account_id, excluding=excluding),
            realized_loss_today=loss,
        )
        candidate = OrderToCheck(order.symbol, order.side, order.quantity, order.limit_price, has_exits)
        return check_order(limits, candidate, exposure)

    async def _reservation_price(self, order: Order, latest: BookOnce) -> Decimal | None:
        if order.limit_price is not None:
            return order.limit_price
        book = await latest()
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


class BookOnce:
    """The latest book of one symbol for one decision, read (from Redis) at most once: the staleness check, the
    limits and the reservation price of an order judge it on the same book."""

    def __init__(self, chain: PreTradeChain, symbol: Symbol) -> None:
        self._chain = chain
        self._symbol = symbol
        self._read = False
        self._view: LatestBookView | None = None

    async def __call__(self) -> LatestBookView | None:
        if not self._read:
            self._view = await self._chain.book(self._symbol)
            self._read = True
        return self._view
