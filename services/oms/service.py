"""Use cases of the OMS: place, send, cancel, apply venue updates, resolve ambiguity, reconcile, deposit.

The order row (state SUBMITTED), its reservation, outbox events and audit entries commit together
*before* the venue is called (ARCHITECTURE.md 4.3). Everything the venue tells us is applied
idempotently: fills by (venue, trade id), statuses by comparing with the order's state. An ambiguous
venue answer leaves the order SUBMITTED; the resolver queries the venue by client order id and
resubmits only under the same id, which the venue deduplicates.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.oms.approval_policy import ApprovalPolicyReader, OrderFacts, approval_reasons, threshold_reasons
from services.oms.config import OmsSettings
from services.oms.errors import (
    AccountNotFound,
    DuplicateClientOrderId,
    InvalidOrder,
    MarketDataUnavailable,
    NotAPaperAccount,
    OrderDenied,
    OrderNotCancelable,
    OrderNotFound,
)
from services.oms.metrics import ORDER_TRANSITIONS, SUBMIT_TO_ACK, SUBMIT_TO_FILL, VENUE_ERRORS
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.risk_limits import RiskLimitsReader, mid_price, start_of_utc_day
from services.oms.schemas import OrderCreate
from services.oms.trading_state import TradingStateReader, denial_for_state
from shared.audit import append as audit_append
from shared.db import UnitOfWork
from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE
from shared.domain.ledger import Ledger, LedgerUpdate, required_reservation
from shared.domain.money import MONEY_CONTEXT, InstrumentSpec, format_decimal
from shared.domain.orders import Order, OrderEvent, OrderRequest, OrderRuleError, validate_request
from shared.domain.risk_limits import (
    Exposure,
    FillRecord,
    LimitViolation,
    OrderToCheck,
    check_order,
    realized_loss_since,
)
from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderId,
    OrderSide,
    OrderStatus,
    Symbol,
    VenueOrderId,
)
from shared.events import Envelope, add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import OMS_ORDER_EVENTS
from shared.observability.logging import get_logger
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueAdapter,
    VenueError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper_feed import book_key

log = get_logger(__name__)
SYSTEM_ACTOR = "system:oms"
CLOSING_STATUSES = frozenset({VenueOrderStatus.FILLED, VenueOrderStatus.CANCELED, VenueOrderStatus.EXPIRED})


class ReconcileIncomplete(RuntimeError):
    """Some accounts could not be reconciled; the others were."""


@dataclass(frozen=True, slots=True)
class PlaceResult:
    stored: StoredOrder
    created: bool


@dataclass
class ReconcileReport:
    """What startup reconciliation repaired, per kind."""

    fills_applied: int = 0
    statuses_applied: int = 0
    resubmitted: int = 0
    unknown_to_venue: int = 0
    external_canceled: int = 0
    balance_adjustments: int = 0
    details: list[str] = field(default_factory=list)


def request_hash(body: OrderCreate) -> str:
    """Fingerprint of the exact request, to tell a retry (same body) from a reused client id (409)."""
    # An order without exits hashes as it did before `exits` existed: retries across the upgrade stay retries.
    fields = body.model_dump(mode="json", exclude={"exits"} if body.exits is None else None)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_payload(order: Order, event: OrderEvent, exits: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The payload of an order event on oms.order-events.v1: the event, the order's identity and its exits."""
    payload: dict[str, Any] = dict(event.to_payload())
    payload.update(
        account_id=order.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side.value,
        status=order.status.value,
        exits=None if exits is None else dict(exits),
    )
    return payload


def exits_problem(body: OrderCreate) -> tuple[str, str] | None:
    """(field, sentence) when a limit buy's exits are on the wrong side of its limit price."""
    exits, price = body.exits, body.limit_price
    if exits is None or price is None or body.side is not OrderSide.BUY:
        return None
    if exits.stop_loss is not None and exits.stop_loss >= price:
        return "exits.stop_loss", "exits.stop_loss must be below the limit price of a buy"
    if exits.take_profit is not None and exits.take_profit <= price:
        return "exits.take_profit", "exits.take_profit must be above the limit price of a buy"
    return None


class OrderService:
    """The OMS's use cases; one instance per process, shared by REST, consumers and background loops."""

    def __init__(
        self,
        *,
        settings: OmsSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        venue: VenueAdapter,
        redis: Redis,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.venue = venue
        self.redis = redis
        self.clock = clock
        self.on_commit = on_commit
        self.trading_state = TradingStateReader(redis)
        self.risk_limits = RiskLimitsReader(redis)
        self.approval_policy = ApprovalPolicyReader(redis)
        self.instruments: Mapping[str, InstrumentSpec] = {
            symbol: config.spec(symbol) for symbol, config in settings.instruments.items()
        }

    # --- placing -------------------------------------------------------------------------------------------

    async def place(self, body: OrderCreate, actor: str, origin: str = "rest") -> PlaceResult:
        """Record the order (SUBMITTED, PENDING_APPROVAL or DENIED), then send it to the venue."""
        try:
            result = await self._record_in_own_transaction(body, actor, origin)
        except IntegrityError:
            # A concurrent request with the same client order id won the insert: answer as a retry would.
            result = await self._existing(body)
        order = result.stored.order
        if order.status is OrderStatus.DENIED and result.created:
            raise OrderDenied(_denial_code(order), order.reason or "denied", order.id, _denial_status(order))
        if result.created and order.status is OrderStatus.SUBMITTED:
            await self.send(order.id)
            return PlaceResult(await self.get(order.id), created=True)
        return result

    async def _record_in_own_transaction(self, body: OrderCreate, actor: str, origin: str) -> PlaceResult:
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            return await self.record(uow.session, body, actor, origin)

    async def _existing(self, body: OrderCreate) -> PlaceResult:
        async with UnitOfWork(self.sessionmaker) as uow:
            existing = await OmsRepository(uow.session).find_by_client_id(body.account_id, body.client_order_id)
        if existing is None:
            raise RuntimeError("client order id conflict without an existing order")
        if existing.request_hash != request_hash(body):
            raise DuplicateClientOrderId(
                f"client_order_id {body.client_order_id!r} was already used with a different request",
                details={"order_id": existing.order.id},
            )
        return PlaceResult(existing, created=False)

    async def record(self, session: AsyncSession, body: OrderCreate, actor: str, origin: str) -> PlaceResult:
        """Inside the caller's transaction: validate, run the pre-trade checks and persist the order."""
        repo = OmsRepository(session)
        account = await repo.lock_account(body.account_id)
        if account is None:
            raise AccountNotFound(f"trading account {body.account_id!r} does not exist")
        existing = await repo.find_by_client_id(body.account_id, body.client_order_id)
        if existing is not None:
            if existing.request_hash != request_hash(body):
                raise DuplicateClientOrderId(
                    f"client_order_id {body.client_order_id!r} was already used with a different request",
                    details={"order_id": existing.order.id},
                )
            return PlaceResult(existing, created=False)
        now = self.clock()
        request, spec = self._validated(body, now)
        order, events = Order.create(OrderId(str(uuid.uuid4())), request, now)
        ledger = await repo.load_ledger(AccountId(body.account_id))
        has_exits = body.exits is not None and not body.exits.is_empty()
        decision = await self._pre_trade(
            repo, order, spec, ledger, account.approval_threshold, account.volume_30d, has_exits
        )
        ledger_update: LedgerUpdate | None = None
        if isinstance(decision, _Denial):
            order, more = order.deny(f"{decision.code}: {decision.sentence}", now)
        else:
            ledger_update = ledger.reserve(order.id, decision.asset, decision.amount)
            if decision.needs_approval:
                order, more = order.request_approval(now)
            else:
                order, more = order.submit(now)
        events += more
        exits = None if body.exits is None else body.exits.model_dump(mode="json")
        stored = StoredOrder(order, request_hash(body), account.venue, origin, now, exits)
        await repo.insert(stored, events)
        if ledger_update is not None:
            await repo.save_ledger(ledger, ledger_update)
        await self._publish(session, order, events, actor)
        if isinstance(decision, _Reserve) and decision.needs_approval:
            await self._request_approval(session, order, decision, actor)
        return PlaceResult(stored, created=True)

    def _validated(self, body: OrderCreate, now: datetime) -> tuple[OrderRequest, InstrumentSpec]:
        """The domain request and its instrument, or InvalidOrder (422) naming the first bad field."""
        request = self._request(body, now)
        spec = self.instruments.get(body.symbol)
        problems = validate_request(request, spec)
        if problems:
            first = problems[0]
            raise InvalidOrder(first.code, first.message, first.field)
        if spec is None:  # validate_request reports an unknown instrument; this keeps the type checker informed
            raise InvalidOrder("unknown_instrument", f"unknown instrument {body.symbol}", "symbol")
        wrong_exits = exits_problem(body)
        if wrong_exits is not None:
            raise InvalidOrder("invalid_exits", wrong_exits[1], wrong_exits[0])
        return request, spec

    def _request(self, body: OrderCreate, now: datetime) -> OrderRequest:
        return OrderRequest(
            account_id=AccountId(body.account_id),
            client_order_id=ClientOrderId(body.client_order_id),
            symbol=Symbol(body.symbol),
            side=body.side,
            type=body.type,
            quantity=body.quantity,
            limit_price=body.limit_price,
            trigger_price=body.trigger_price,
            time_in_force=body.time_in_force,
            post_only=body.post_only,
            created_at=now,
        )

    async def _pre_trade(
        self,
        repo: OmsRepository,
        order: Order,
        spec: InstrumentSpec,
        ledger: Ledger,
        approval_threshold: Decimal | None,
        volume_30d: Decimal,
        has_exits: bool = False,
    ) -> _Reserve | _Denial:
        """The pre-trade check chain: trading state, risk limits, price reference, free balance, approval (the hitl
        policy mirrored to Redis, else the account's approval threshold)."""
        state = await self.trading_state.get(order.account_id)
        denial = denial_for_state(state, order, ledger.position(order.symbol).quantity)
        if denial is not None:
            return _Denial(*denial)
        violation = await self._limit_violation(repo, order, ledger, has_exits)
        if violation is not None:
            return _Denial(violation.code, violation.sentence)
        price = await self._reservation_price(order)
        if price is None:
            return _Denial("no_market_data", f"no market price for {order.symbol} yet: a market buy cannot be sized")
        rate = KRAKEN_SPOT_FEE_SCHEDULE.rate(Liquidity.TAKER, volume_30d)
        quote_step = self.settings.instruments[order.symbol].quote_step
        need = required_reservation(order.side, order.quantity, price, rate, spec, quote_step)
        free = ledger.balance(need.asset).free
        if need.amount > free:
            return _Denial(
                "insufficient_balance",
                f"insufficient {need.asset}: needs {format_decimal(need.amount)}, free {format_decimal(free)}",
            )
        notional = order.quantity * price
        reasons = await self._approval_reasons(repo, order, ledger, notional, approval_threshold)
        return _Reserve(need.asset, need.amount, notional, tuple(reasons))

    async def _approval_reasons(
        self, repo: OmsRepository, order: Order, ledger: Ledger, notional: Decimal, approval_threshold: Decimal | None
    ) -> list[str]:
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
        mid = mid_price(await self._latest_book(order.symbol))
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
            loss = realized_loss_since(fills, start_of_utc_day(self.clock()))
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
        reference = await self._book_price(order.symbol, order.side, order.quantity)
        if reference is None:
            return order.trigger_price if order.side is OrderSide.SELL else None
        if order.side is OrderSide.BUY:
            return reference * (1 + self.settings.market_buy_slippage)
        return reference

    async def _latest_book(self, symbol: str) -> bytes | str | None:
        """The paper feed's latest book of `symbol` in Redis; Redis unreachable is a 503, never "no market data"."""
        try:
            raw: bytes | str | None = await self.redis.get(book_key(symbol))
        except RedisError as exc:
            raise MarketDataUnavailable(f"latest book unavailable: {type(exc).__name__}") from None
        return raw

    async def _book_price(self, symbol: str, side: OrderSide, quantity: Decimal) -> Decimal | None:
        """The worst price a market order of `quantity` would reach in the latest book (Redis), or None."""
        raw = await self._latest_book(symbol)
        if raw is None:
            return None
        book = json.loads(raw)  # the paper feed's `book_json` format: levels of {"price", "qty"}, best first
        levels = book["asks"] if side is OrderSide.BUY else book["bids"]
        remaining, worst = quantity, None
        for level in levels:
            price, qty = Decimal(level["price"]), Decimal(level["qty"])
            worst = price
            remaining -= qty
            if remaining <= 0:
                break
        return worst

    async def _request_approval(self, session: AsyncSession, order: Order, decision: _Reserve, actor: str) -> None:
        envelope = Envelope.new(
            type="ApprovalRequested",
            producer="oms",
            aggregate_id=order.id,
            payload={
                "subject_type": "order",
                "subject_id": order.id,
                "account_id": order.account_id,
                "requested_by": actor,
                "symbol": order.symbol,
                "side": order.side.value,
                "type": order.type.value,
                "quantity": format_decimal(order.quantity),
                "limit_price": None if order.limit_price is None else format_decimal(order.limit_price),
                "notional": format_decimal(decision.notional),
                "reason": decision.reasons[0],
                "reasons": list(decision.reasons),
            },
            now=order.updated_at,
        )
        await add_to_outbox(session, self.tables, topic=OMS_ORDER_EVENTS, envelope=envelope, key=order.id)

    # --- sending -------------------------------------------------------------------------------------------

    async def send(self, order_id: OrderId) -> None:
        """Send a SUBMITTED order to the venue and apply the answer; an ambiguous answer is left to the resolver."""
        stored = await self.get(order_id)
        order = stored.order
        if order.status is not OrderStatus.SUBMITTED:
            return
        started = time.perf_counter()
        try:
            update = await self.venue.submit(_venue_request(order))
        except VenueRejected as exc:
            reason = f"{exc.code}: {exc.message}"
            await self._transition(order_id, lambda o, now: o.reject(reason, now), "venue")
            return
        except (AmbiguousOutcome, TemporaryError) as exc:
            VENUE_ERRORS.labels(operation="submit", kind=type(exc).__name__).inc()
            log.warning("venue_submit_unresolved", order_id=order_id, error_type=type(exc).__name__)
            return
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="submit", kind=type(exc).__name__).inc()
            log.error("venue_submit_failed", order_id=order_id, error_type=type(exc).__name__, error=str(exc))
            return
        SUBMIT_TO_ACK.observe(time.perf_counter() - started)
        await self.apply_update(update)

    # --- applying what the venue says ----------------------------------------------------------------------

    async def apply_update(self, update: VenueUpdate) -> None:
        """Apply a venue fill or status change (idempotent).

        A closing status that overtook some of its order's fills (redelivery, reordering) is not dropped:
        the missing fills are fetched from the venue (by sequence, idempotent), then the status is applied.
        """
        if isinstance(update, VenueFill):
            await self.apply_fill(update)
        elif not await self.apply_status(update) and await self._fills_behind(update):
            try:
                await self.catch_up_fills(AccountId(update.account_id))
            except VenueError as exc:
                VENUE_ERRORS.labels(operation="fills_since", kind=type(exc).__name__).inc()
                log.warning("venue_status_ahead_of_fills", client_order_id=update.client_order_id, error=str(exc))
                return
            await self.apply_status(update)

    async def _fills_behind(self, update: VenueOrder) -> bool:
        """True when the venue closed the order with more filled than we have recorded."""
        if update.status not in CLOSING_STATUSES:
            return False
        async with UnitOfWork(self.sessionmaker) as uow:
            stored = await OmsRepository(uow.session).find_by_client_id(update.account_id, update.client_order_id)
        return stored is not None and update.filled_quantity > stored.order.filled_quantity

    async def apply_fill(self, fill: VenueFill) -> bool:
        """Apply one fill exactly once (unique on venue + trade id); True when it changed something."""
        fill = _without_trailing_zeros(fill)
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            repo = OmsRepository(uow.session)
            await repo.lock_account(fill.account_id)
            stored = await repo.find_by_client_id(fill.account_id, fill.client_order_id)
            if stored is None:
                log.warning("fill_for_unknown_order", client_order_id=fill.client_order_id, trade_id=fill.trade_id)
                return False
            order = stored.order
            inserted = await repo.insert_fill(_fill_row(self.venue.name, order.id, fill))
            if not inserted:
                return False
            now = self.clock()
            events: list[OrderEvent] = []
            if order.status is OrderStatus.SUBMITTED:
                # The fill beat the venue's acknowledgement: accept with the venue's order id first.
                order, events = order.accept(VenueOrderId(fill.venue_order_id), now)
            order, more = order.fill(fill.trade_id, fill.quantity, fill.price, fill.fee, fill.liquidity, now)
            events += more
            ledger = await repo.load_ledger(order.account_id)
            spec = self.instruments[order.symbol]
            update = ledger.apply_fill(
                order.id,
                order.side,
                order.symbol,
                Asset(spec.base),
                Asset(spec.quote),
                fill.quantity,
                fill.price,
                fill.fee,
            )
            if order.is_terminal and order.id in update.ledger.reservations:
                update = _chain(update, update.ledger.release(order.id))
            await repo.save(order, events)
            await repo.save_ledger(ledger, update)
            await repo.add_volume(order.account_id, fill.quantity * fill.price)
            await self._publish(uow.session, order, events, f"venue:{self.venue.name}")
        SUBMIT_TO_FILL.observe(max(0.0, (self.clock() - stored.created_at).total_seconds()))
        return True

    async def apply_status(self, update: VenueOrder) -> bool:
        """Move the order to what the venue reports, when that is a legal step; True when it changed."""
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            repo = OmsRepository(uow.session)
            await repo.lock_account(update.account_id)
            stored = await repo.find_by_client_id(update.account_id, update.client_order_id)
            if stored is None:
                return False
            order, now = stored.order, self.clock()
            outcome = _status_step(order, update, now)
            if outcome is None:
                return False
            order, events = outcome
            if order.is_terminal:
                await self._release(repo, order)
            await repo.save(order, events)
            await self._publish(uow.session, order, events, f"venue:{self.venue.name}")
        return True

    async def _release(self, repo: OmsRepository, order: Order) -> None:
        ledger = await repo.load_ledger(order.account_id)
        if order.id in ledger.reservations:
            await repo.save_ledger(ledger, ledger.release(order.id))

    async def _transition(
        self, order_id: OrderId, step: Callable[[Order, datetime], tuple[Order, list[OrderEvent]]], actor: str
    ) -> Order:
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            repo = OmsRepository(uow.session)
            stored = await self._locked(repo, order_id)
            order, events = step(stored.order, self.clock())
            if order.is_terminal:
                await self._release(repo, order)
            await repo.save(order, events)
            await self._publish(uow.session, order, events, actor)
        return order

    async def _locked(self, repo: OmsRepository, order_id: OrderId) -> StoredOrder:
        row = await repo.order_row(order_id)
        if row is None:
            raise OrderNotFound(f"order {order_id} does not exist")
        await repo.lock_account(row["account_id"])
        stored = await repo.load(order_id)
        if stored is None:
            raise OrderNotFound(f"order {order_id} does not exist")
        return stored

    # --- cancel --------------------------------------------------------------------------------------------

    async def cancel(self, order_id: OrderId, actor: str) -> StoredOrder:
        """Cancel: withdrawn at once while awaiting approval, otherwise requested at the venue."""
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            repo = OmsRepository(uow.session)
            stored = await self._locked(repo, order_id)
            order, now = stored.order, self.clock()
            if order.status is OrderStatus.PENDING_APPROVAL:
                order, events = order.cancel("withdrawn before approval", now)
                await self._release(repo, order)
            elif order.status in {OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED}:
                order, events = order.request_cancel(now)
            elif order.status is OrderStatus.PENDING_CANCEL:
                events = []
            else:
                raise OrderNotCancelable(
                    f"order {order_id} is {order.status.value}: it cannot be canceled now",
                    details={"status": order.status.value},
                )
            await repo.save(order, events)
            await self._publish(uow.session, order, events, actor)
        if order.status is OrderStatus.PENDING_CANCEL:
            await self._send_cancel(order)
        return await self.get(order_id)

    async def _send_cancel(self, order: Order) -> None:
        try:
            update = await self.venue.cancel(order.account_id, order.client_order_id)
        except VenueRejected as exc:
            code = exc.code
            await self._transition(order.id, lambda o, now: o.cancel_rejected(now, code), "venue")
            return
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="cancel", kind=type(exc).__name__).inc()
            log.warning("venue_cancel_unresolved", order_id=order.id, error_type=type(exc).__name__)
            return
        await self.apply_status(update)

    # --- ambiguity and reconciliation ----------------------------------------------------------------------

    async def resolve(self, order_id: OrderId, *, at_startup: bool = False) -> str:
        """Ask the venue about one unresolved order by client id and apply the answer; never a new client id."""
        stored = await self.get(order_id)
        order = stored.order
        if order.is_terminal or order.status is OrderStatus.PENDING_APPROVAL:
            return "settled"
        try:
            seen = await self.venue.query(order.account_id, order.client_order_id)
        except VenueError as exc:
            VENUE_ERRORS.labels(operation="query", kind=type(exc).__name__).inc()
            return "venue_unavailable"
        if seen is None:
            return await self._unknown_to_venue(order, at_startup=at_startup)
        if seen.filled_quantity > order.filled_quantity:
            await self.catch_up_fills(order.account_id)
        if seen.status is VenueOrderStatus.OPEN and order.status is OrderStatus.PENDING_CANCEL:
            await self._send_cancel(order)
            return "cancel_resent"
        changed = await self.apply_status(seen)
        return "applied" if changed else "in_sync"

    async def _unknown_to_venue(self, order: Order, *, at_startup: bool) -> str:
        if order.status is OrderStatus.SUBMITTED:
            # The submit never reached the venue: send it again under the same client order id.
            await self.send(order.id)
            return "resubmitted"
        if order.status is OrderStatus.PENDING_CANCEL or at_startup:
            await self._transition(order.id, lambda o, now: o.cancel("unknown_to_venue", now), SYSTEM_ACTOR)
            return "unknown_to_venue"
        return "in_sync"

    async def catch_up_fills(self, account_id: AccountId) -> int:
        """Apply every venue fill after the account's cursor, in sequence, then advance the cursor."""
        async with UnitOfWork(self.sessionmaker) as uow:
            account = await OmsRepository(uow.session).get_account(account_id)
        if account is None:
            return 0
        applied, cursor = 0, account.fill_cursor
        for fill in await self.venue.fills_since(account_id, account.fill_cursor):
            if await self.apply_fill(fill):
                applied += 1
            cursor = max(cursor, fill.sequence)
        if cursor > account.fill_cursor:
            async with UnitOfWork(self.sessionmaker) as uow:
                await OmsRepository(uow.session).set_fill_cursor(account_id, cursor)
        return applied

    async def reconcile(self) -> ReconcileReport:
        """Startup reconciliation of every account with the venue: fills, order states, orphans, balances."""
        report = ReconcileReport()
        async with UnitOfWork(self.sessionmaker) as uow:
            accounts = await OmsRepository(uow.session).list_accounts()
        failed: list[str] = []
        for account in accounts:
            if account.venue != self.venue.name:
                continue
            try:
                await self._reconcile_account(account.account_id, report)
            except Exception as exc:
                log.error(
                    "reconcile_account_failed",
                    account_id=account.account_id,
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                )
                failed.append(account.account_id)
        log.info("reconciled", failed=len(failed), **{k: v for k, v in report.__dict__.items() if k != "details"})
        if failed:
            # Readiness stays red and the reconciler retries: trading on an unreconciled account is unsafe.
            raise ReconcileIncomplete(f"{len(failed)} account(s) could not be reconciled: {', '.join(failed[:5])}")
        return report

    async def _reconcile_account(self, account_id: AccountId, report: ReconcileReport) -> None:
        report.fills_applied += await self.catch_up_fills(account_id)
        async with UnitOfWork(self.sessionmaker) as uow:
            unresolved = await OmsRepository(uow.session).unresolved_orders(account_id)
        for order_id in unresolved:
            outcome = await self.resolve(OrderId(order_id), at_startup=True)
            if outcome == "applied":
                report.statuses_applied += 1
            elif outcome == "resubmitted":
                report.resubmitted += 1
            elif outcome == "unknown_to_venue":
                report.unknown_to_venue += 1
        report.fills_applied += await self.catch_up_fills(account_id)
        report.external_canceled += await self._cancel_external(account_id)
        report.balance_adjustments += await self._reconcile_balances(account_id, report)

    async def _cancel_external(self, account_id: AccountId) -> int:
        """Orders open at the venue that we never placed are canceled there (and audited)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            ours = await OmsRepository(uow.session).client_order_ids(account_id)
        canceled = 0
        for venue_order in await self.venue.open_orders(account_id):
            if venue_order.client_order_id in ours:
                continue
            await self.venue.cancel(account_id, venue_order.client_order_id)
            async with UnitOfWork(self.sessionmaker) as uow:
                await audit_append(
                    uow.session,
                    actor=SYSTEM_ACTOR,
                    action="order.external_canceled",
                    target=f"{account_id}/{venue_order.client_order_id}",
                    details={"venue": self.venue.name, "venue_order_id": venue_order.venue_order_id},
                    chain=f"oms:{account_id}",
                )
            canceled += 1
        return canceled

    async def _reconcile_balances(self, account_id: AccountId, report: ReconcileReport) -> int:
        """Align ledger totals with the venue's (the venue holds the money); each adjustment is journaled and audited."""
        venue_totals = {b.asset: b.total for b in await self.venue.balances(account_id)}
        adjustments = 0
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = OmsRepository(uow.session)
            await repo.lock_account(account_id)
            ledger = await repo.load_ledger(account_id)
            for asset in sorted(set(venue_totals) | set(ledger.balances)):
                drift = venue_totals.get(asset, Decimal(0)) - ledger.balance(asset).total
                if drift == 0:
                    continue
                update = (
                    ledger.deposit(asset, drift, "reconcile")
                    if drift > 0
                    else ledger.withdraw(asset, -drift, "reconcile")
                )
                await repo.save_ledger(ledger, update)
                ledger = update.ledger
                await audit_append(
                    uow.session,
                    actor=SYSTEM_ACTOR,
                    action="balance.reconciled",
                    target=f"{account_id}/{asset}",
                    details={"drift": format_decimal(drift), "venue": self.venue.name},
                    chain=f"oms:{account_id}",
                )
                report.details.append(f"{account_id} {asset} drift {format_decimal(drift)}")
                adjustments += 1
        return adjustments

    # --- approvals ------------------------------------------------------------------------------------------

    async def decide(
        self, session: AsyncSession, order_id: OrderId, decision: str, reason: str | None, actor: str
    ) -> bool:
        """Apply a director decision to an order awaiting approval, in the caller's transaction.

        Approved: the order becomes SUBMITTED and the resolver sends it (after this transaction commits).
        Rejected or expired: the order is denied/expired and its reservation released. A decision about an
        order that no longer awaits approval changes nothing (False).
        """
        repo = OmsRepository(session)
        stored = await self._locked(repo, order_id)
        order, now = stored.order, self.clock()
        if order.status is not OrderStatus.PENDING_APPROVAL:
            return False
        if decision == "approved":
            order, events = order.approve(now)
        elif decision == "expired":
            order, events = order.expire(now)
        else:
            order, events = order.deny(f"approval_rejected: {reason or 'rejected by a director'}", now)
        if order.is_terminal:
            await self._release(repo, order)
        await repo.save(order, events)
        await self._publish(session, order, events, actor)
        return True

    # --- paper deposits ------------------------------------------------------------------------------------

    async def deposit(self, account_id: str, asset: str, amount: Decimal, actor: str) -> Ledger:
        """Credit a paper account at the paper venue and in the ledger (creating the account on first use)."""
        deposit_at_venue = getattr(self.venue, "deposit", None)
        if self.venue.name != "paper" or deposit_at_venue is None:
            raise NotAPaperAccount("deposits are only possible on the paper venue")
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = OmsRepository(uow.session)
            account = await repo.get_account(account_id)
            if account is not None and account.venue != "paper":
                raise NotAPaperAccount(f"account {account_id!r} trades on {account.venue}, not on paper")
        await deposit_at_venue(AccountId(account_id), Asset(asset), amount)
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = OmsRepository(uow.session)
            await repo.ensure_account(account_id, "paper", self.settings.default_approval_threshold)
            await repo.lock_account(account_id)
            ledger = await repo.load_ledger(AccountId(account_id))
            update = ledger.deposit(Asset(asset), amount, "paper-deposit")
            await repo.save_ledger(ledger, update)
            await audit_append(
                uow.session,
                actor=actor,
                action="paper.deposit",
                target=f"{account_id}/{asset}",
                details={"amount": format_decimal(amount)},
                chain=f"oms:{account_id}",
            )
        return update.ledger

    # --- reading -------------------------------------------------------------------------------------------

    async def get(self, order_id: OrderId) -> StoredOrder:
        async with UnitOfWork(self.sessionmaker) as uow:
            stored = await OmsRepository(uow.session).load(order_id)
        if stored is None:
            raise OrderNotFound(f"order {order_id} does not exist")
        return stored

    # --- events and audit ----------------------------------------------------------------------------------

    async def _publish(self, session: AsyncSession, order: Order, events: list[OrderEvent], actor: str) -> None:
        """Outbox event and audit entry for every transition, in the caller's transaction."""
        exits = await OmsRepository(session).order_exits(order.id)
        for event in events:
            payload = order_payload(order, event, exits)
            envelope = Envelope.new(
                type=event.event_type, producer="oms", aggregate_id=order.id, payload=payload, now=event.occurred_at
            )
            await add_to_outbox(session, self.tables, topic=OMS_ORDER_EVENTS, envelope=envelope, key=order.id)
            await audit_append(
                session,
                actor=actor,
                action=f"order.{event.event_type}",
                target=order.id,
                details=payload,
                chain=f"oms:{order.account_id}",
                occurred_at=event.occurred_at,
            )
            ORDER_TRANSITIONS.labels(event=event.event_type).inc()


@dataclass(frozen=True, slots=True)
class _Denial:
    code: str
    sentence: str


@dataclass(frozen=True, slots=True)
class _Reserve:
    asset: Asset
    amount: Decimal
    notional: Decimal
    reasons: tuple[str, ...] = ()  # why the order waits for a director (empty: it goes on)

    @property
    def needs_approval(self) -> bool:
        return bool(self.reasons)


def _denial_code(order: Order) -> str:
    reason = order.reason or ""
    return reason.split(":", 1)[0] if ":" in reason else "order_denied"


def _denial_status(order: Order) -> int:
    return 409 if _denial_code(order) in {"trading_halted", "trading_reducing"} else 422


def _venue_request(order: Order) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=order.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        trigger_price=order.trigger_price,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
    )


def _without_trailing_zeros(fill: VenueFill) -> VenueFill:
    """The same fill with its amounts normalized: read back from NUMERIC(38,18) (the paper venue's `fills_since`)
    they carry 18 decimal places, and quantity x price would then exceed the 18 places the ledger accepts."""
    return replace(
        fill,
        quantity=fill.quantity.normalize(MONEY_CONTEXT),
        price=fill.price.normalize(MONEY_CONTEXT),
        fee=fill.fee.normalize(MONEY_CONTEXT),
    )


def _fill_row(venue: str, order_id: OrderId, fill: VenueFill) -> dict[str, Any]:
    return {
        "venue": venue,
        "trade_id": fill.trade_id,
        "order_id": order_id,
        "account_id": fill.account_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "quantity": fill.quantity,
        "price": fill.price,
        "fee": fill.fee,
        "fee_asset": fill.fee_asset,
        "liquidity": fill.liquidity.value,
        "filled_at": fill.filled_at,
    }


def _chain(first: LedgerUpdate, second: LedgerUpdate) -> LedgerUpdate:
    return LedgerUpdate(second.ledger, first.entries + second.entries)


def _status_step(order: Order, update: VenueOrder, now: datetime) -> tuple[Order, list[OrderEvent]] | None:
    """The order's next step towards the venue's status, or None when nothing needs to (or may yet) change."""
    if order.is_terminal or order.status is OrderStatus.PENDING_APPROVAL:
        return None
    try:
        if update.status in {VenueOrderStatus.OPEN, VenueOrderStatus.FILLED}:
            if order.status is OrderStatus.SUBMITTED:
                return order.accept(VenueOrderId(update.venue_order_id), now)
            return None
        if update.status is VenueOrderStatus.REJECTED and order.status is OrderStatus.SUBMITTED:
            return order.reject(update.reason or "rejected by the venue", now)
        if update.filled_quantity > order.filled_quantity:
            return None  # fills still on their way: close the order once they are applied
        if update.status is VenueOrderStatus.CANCELED:
            return order.cancel(update.reason, now)
        if update.status is VenueOrderStatus.EXPIRED:
            return order.expire(now)
    except OrderRuleError as exc:
        log.error("venue_status_not_applicable", order_id=order.id, status=update.status.value, error=str(exc))
    return None
