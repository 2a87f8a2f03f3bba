"""Placing an order: validate, run the pre-trade chain, record it (SUBMITTED, PENDING_APPROVAL or DENIED) with
its reservation, events and audit entries in one transaction, then send it.

The order row commits *before* the venue is called (ARCHITECTURE.md 4.3).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.oms.errors import (
    AccountNotFound,
    AccountVenueMismatch,
    DuplicateClientOrderId,
    InvalidOrder,
    VenueNotReadyError,
)
from services.oms.ledger_repository import LedgerRepository
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.schemas import OrderCreate
from services.oms.use_cases.context import OmsContext
from services.oms.use_cases.execution import ExecuteOrders
from services.oms.use_cases.order_store import load_order
from services.oms.use_cases.pre_trade import AccountTerms, Denial, PreTradeChain, Reserve
from services.oms.use_cases.publishing import persist_ledger, publish_order_events
from shared.contracts.approvals import ApprovalReason, OrderApprovalRequested, SubjectType
from shared.contracts.base import outbox_payload
from shared.contracts.exits import ExitInstructions
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.domain.ledger import LedgerUpdate
from shared.domain.money import InstrumentSpec
from shared.domain.order_requests import OrderRequest, validate_request
from shared.domain.orders import Order
from shared.domain.types import AccountId, ClientOrderId, OrderId, OrderSide, OrderStatus, Symbol
from shared.events import add_to_outbox
from shared.events.topics import OMS_ORDER_EVENTS
from shared.venues.router import VenueRouter, account_not_ready

# Sends a recorded order; the order as the venue's answer left it (None: not known without a read).
Send = Callable[[OrderId], Awaitable[Order | None]]


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """The stored order; `created` False when the request repeated an earlier one (same client id and body)."""

    stored: StoredOrder
    created: bool
    denial: Denial | None = None  # why a newly created order was DENIED


def request_hash(body: OrderCreate) -> str:
    """Fingerprint of the exact request, to tell a retry (same body) from a reused client id (409)."""
    # An order without exits hashes as it did before `exits` existed: retries across the upgrade stay retries.
    fields = body.model_dump(mode="json", exclude={"exits"} if body.exits is None else None)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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


class PlaceOrder:
    """REST and `SubmitOrder` commands: record the order, then (REST) send it to the venue."""

    def __init__(self, ctx: OmsContext, pre_trade: PreTradeChain, execution: ExecuteOrders, send: Send) -> None:
        self.ctx = ctx
        self.pre_trade = pre_trade
        self.execution = execution
        self.send = send

    async def place(self, body: OrderCreate, actor: str, origin: str = "rest") -> PlaceResult:
        """Record the order (SUBMITTED, PENDING_APPROVAL or DENIED), then send it to the venue."""
        try:
            result = await self._record_in_own_transaction(body, actor, origin)
        except IntegrityError:
            # A concurrent request with the same client order id won the insert: answer as a retry would.
            result = await self._existing(body)
        order = result.stored.order
        if result.denial is not None:
            raise result.denial.error(order.id)
        if result.created and order.status is OrderStatus.SUBMITTED:
            self.execution.hand_over(order)  # committed just now: the send need not read it back
            try:
                answered = await self.send(order.id)
            finally:
                self.execution.forget(order.id)
            if answered is None:  # an ambiguous answer (left to the resolver), or one applied after a catch-up
                return PlaceResult(await load_order(self.ctx, order.id), created=True)
            # The order as applying the venue's answer left it (read under the account's lock): no read back.
            return PlaceResult(replace(result.stored, order=answered), created=True)
        return result

    async def _venue_takes_orders(self, account_id: AccountId, books_venue: str) -> None:
        """Refuse (before anything is recorded) an account whose venue is not ready or is not where its books are."""
        reason = self.ctx.not_ready.get(account_id) or await account_not_ready(self.ctx.venue, account_id)
        if reason is not None:
            raise VenueNotReadyError(
                f"account {account_id!r} cannot trade now: {reason}", details={"account_id": account_id}
            )
        if isinstance(self.ctx.venue, VenueRouter) and (routed := self.ctx.venue.venue_name(account_id)) != books_venue:
            raise AccountVenueMismatch(
                f"account {account_id!r} is routed to {routed} but its books are kept for {books_venue}",
                details={"account_id": account_id},
            )

    async def _record_in_own_transaction(self, body: OrderCreate, actor: str, origin: str) -> PlaceResult:
        async with self.ctx.account_transaction(body.account_id) as uow:
            return await self.record(uow.session, body, actor, origin)

    async def _existing(self, body: OrderCreate) -> PlaceResult:
        async with UnitOfWork(self.ctx.sessionmaker) as uow:
            existing = await OmsRepository(uow.session).find_by_client_id(body.account_id, body.client_order_id)
        if existing is None:
            raise RuntimeError("client order id conflict without an existing order")
        return _retry_of(existing, body)

    async def record(
        self,
        session: AsyncSession,
        body: OrderCreate,
        actor: str,
        origin: str,
        *,
        model_confidence: Decimal | None = None,
    ) -> PlaceResult:
        """Inside the caller's transaction: validate, run the pre-trade checks (a model-driven order's confidence
        among them) and persist the order."""
        repo = OmsRepository(session)
        account = await repo.lock_account(body.account_id)
        if account is None:
            raise AccountNotFound(f"trading account {body.account_id!r} does not exist")
        existing = await repo.find_by_client_id(body.account_id, body.client_order_id)
        if existing is not None:
            return _retry_of(existing, body)
        await self._venue_takes_orders(AccountId(body.account_id), account.venue)
        now = self.ctx.clock()
        request, spec = self._validated(body, now)
        order, events = Order.create(OrderId(str(uuid.uuid4())), request, now)
        ledger = await LedgerRepository(session).load_ledger(AccountId(body.account_id))
        has_exits = body.exits is not None and not body.exits.is_empty()
        terms = AccountTerms(account.approval_threshold, has_exits, model_confidence)
        decision = await self.pre_trade.decide(repo, order, spec, ledger, terms)
        ledger_update: LedgerUpdate | None = None
        if isinstance(decision, Denial):
            order, more = order.deny(decision.reason, now)
        else:
            ledger_update = ledger.reserve(order.id, decision.asset, decision.amount)
            order, more = order.request_approval(now) if decision.needs_approval else order.submit(now)
        events += more
        exits = None if body.exits is None else body.exits.model_dump(mode="json")
        requested = None
        if isinstance(decision, Reserve) and decision.needs_approval:
            requested = approval_request(order, body.exits, decision.notional, decision.reasons, actor)
        approval_payload = None if requested is None else outbox_payload(requested)
        stored = StoredOrder(order, request_hash(body), account.venue, origin, now, exits, approval_payload)
        await repo.insert(stored, events)
        balance_changes = [] if ledger_update is None else await persist_ledger(session, ledger, ledger_update, now)
        await publish_order_events(
            session, self.ctx.tables, order, events, actor, exits=exits, queued_first=balance_changes
        )
        if requested is not None:
            envelope = new_envelope(requested, producer="oms", aggregate_id=order.id, now=order.updated_at)
            await add_to_outbox(session, self.ctx.tables, topic=OMS_ORDER_EVENTS, envelope=envelope, key=order.id)
        return PlaceResult(stored, created=True, denial=decision if isinstance(decision, Denial) else None)

    def _validated(self, body: OrderCreate, now: datetime) -> tuple[OrderRequest, InstrumentSpec]:
        """The domain request and its instrument, or InvalidOrder (422) naming the first bad field."""
        request = _request(body, now)
        spec = self.ctx.instruments.get(body.symbol)
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


def approval_request(
    order: Order, exits: ExitInstructions | None, notional: Decimal, reasons: Sequence[ApprovalReason], actor: str
) -> OrderApprovalRequested:
    """The `ApprovalRequested` of a held order: every field that reaches the venue, so all of it is under the hash
    the directors approve (the release check in use_cases/approvals.py rebuilds it from the stored order)."""
    return OrderApprovalRequested(
        subject_type=SubjectType.ORDER,
        subject_id=order.id,
        account_id=order.account_id,
        requested_by=actor,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        trigger_price=order.trigger_price,
        time_in_force=order.time_in_force,
        post_only=order.post_only,
        exits=exits,
        notional=notional,
        reason=reasons[0],
        reasons=list(reasons),
    )


def _retry_of(existing: StoredOrder, body: OrderCreate) -> PlaceResult:
    if existing.request_hash != request_hash(body):
        raise DuplicateClientOrderId(
            f"client_order_id {body.client_order_id!r} was already used with a different request",
            details={"order_id": existing.order.id},
        )
    return PlaceResult(existing, created=False)


def _request(body: OrderCreate, now: datetime) -> OrderRequest:
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
