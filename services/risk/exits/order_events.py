"""Use case: OMS order events move brackets (inside the consumer's inbox transaction).

Entry fills arm or grow brackets; accepts, fills and ends of exit orders (and refused exit submits) move theirs.
Every record is read through its contract (`parse_message`): a payload that breaks it raises ContractViolation
and the consumer loop dead-letters the record; dispatch is on the message model, never on a type string.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.policies import ExitPolicies
from services.risk.exits.repository import ExitRepository
from services.risk.exits.service import (
    BracketWriter,
    ExitContext,
    bracket_id_for,
    bracket_id_of_exit,
    levels_from_instructions,
)
from shared.contracts import approvals
from shared.contracts.base import ContractViolation
from shared.contracts.exits import ExitInstructions
from shared.contracts.orders import (
    CommandRejected,
    OrderAccepted,
    OrderApprovalRequested,
    OrderCanceled,
    OrderCancelRejected,
    OrderCancelRequested,
    OrderDenied,
    OrderEventMessage,
    OrderExpired,
    OrderFilled,
    OrderInitialized,
    OrderRejected,
    OrderSubmitted,
    SubmitOrder,
)
from shared.contracts.registry import parse_message
from shared.domain.bracket_model import (
    BracketError,
    BracketEvent,
    BracketInput,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOutcome,
    ExitPolicy,
    Step,
)
from shared.domain.brackets import open_bracket, step
from shared.domain.types import OrderSide
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


def exit_input(event: OrderEventMessage) -> BracketInput | None:
    """What an OMS event about an exit order means to its bracket (None: nothing, e.g. the order was submitted)."""
    client_order_id = event.client_order_id
    match event:
        case OrderAccepted():
            return ExitAccepted(client_order_id)
        case OrderFilled():
            return ExitFilled(client_order_id, event.quantity, event.price)
        case OrderCanceled():
            return ExitEnded(client_order_id, ExitOutcome.CANCELED)
        case OrderExpired():
            return ExitEnded(client_order_id, ExitOutcome.EXPIRED)
        case OrderRejected():
            return ExitEnded(client_order_id, ExitOutcome.REJECTED)
        case OrderDenied():
            return ExitEnded(client_order_id, ExitOutcome.DENIED)
        case (
            OrderInitialized()
            | OrderApprovalRequested()
            | OrderSubmitted()
            | OrderCancelRequested()
            | OrderCancelRejected()
        ):
            return None
        case _:
            raise ContractViolation(f"{type(event).__name__}: an order event the exit engine has no rule for")


class ApplyOrderEvent:
    """Runs one OMS order event through the bracket it concerns (or arms a new bracket for an entry fill)."""

    def __init__(self, context: ExitContext, writer: BracketWriter, policies: ExitPolicies) -> None:
        self.context = context
        self.writer = writer
        self.policies = policies

    async def __call__(self, session: AsyncSession, envelope: Envelope) -> None:
        message = parse_message(envelope, self.context.settings.exits_order_events_topic)
        now = self.context.clock()
        match message:
            case CommandRejected():
                await self._command_rejected(session, envelope.aggregate_id, message, now)
            case OrderEventMessage():
                await self._order_event(session, envelope, message, now)
            case approvals.OrderApprovalRequested():
                return  # the hitl service's business
            case _:
                raise ContractViolation(f"{envelope.type} is not an OMS order event")

    async def _order_event(
        self, session: AsyncSession, envelope: Envelope, event: OrderEventMessage, now: datetime
    ) -> None:
        bracket_id = bracket_id_of_exit(event.client_order_id)
        if bracket_id is not None:
            bracket_input = exit_input(event)
            if bracket_input is not None:
                await self._apply(session, bracket_id, bracket_input, now)
            return
        if isinstance(event, OrderFilled) and event.side is OrderSide.BUY:
            await self._entry_filled(session, event, now, stale=self._stale(envelope, now))

    def _stale(self, envelope: Envelope, now: datetime) -> bool:
        return (now - envelope.occurred_at).total_seconds() > self.context.settings.exits_entry_max_age_s

    async def _command_rejected(
        self, session: AsyncSession, command_id: str, rejected: CommandRejected, now: datetime
    ) -> None:
        # Our commands carry the exit client order id as aggregate id; a refused submit ends that exit order.
        bracket_id = bracket_id_of_exit(command_id)
        if bracket_id is None or rejected.command_type != SubmitOrder.TYPE:
            return
        await self._apply(session, bracket_id, ExitEnded(command_id, ExitOutcome.REJECTED), now)

    async def _apply(self, session: AsyncSession, bracket_id: str, event: BracketInput, now: datetime) -> None:
        repo = ExitRepository(session)
        bracket = await repo.get(bracket_id, for_update=True)
        if bracket is None:
            log.warning("exit_event_for_unknown_bracket", bracket_id=bracket_id)
            return
        await self._record_exit_order_event(repo, event, now)
        await self.writer.persist(session, bracket, step(bracket, event, now), now)

    @staticmethod
    async def _record_exit_order_event(repo: ExitRepository, event: BracketInput, now: datetime) -> None:
        if isinstance(event, ExitAccepted):
            await repo.mark_exit_order(event.client_order_id, "accepted", now)
        elif isinstance(event, ExitFilled):
            await repo.mark_exit_order(event.client_order_id, "filled", now, filled=event.quantity)
        elif isinstance(event, ExitEnded):
            await repo.mark_exit_order(event.client_order_id, event.outcome.value, now)

    async def _entry_filled(self, session: AsyncSession, filled: OrderFilled, now: datetime, *, stale: bool) -> None:
        account_id = filled.account_id
        entry_order_id = filled.order_id
        fill = EntryFilled(filled.quantity, filled.price)
        repo = ExitRepository(session)
        bracket_id = bracket_id_for(account_id, entry_order_id)
        existing = await repo.get(bracket_id, for_update=True)
        if existing is not None:
            await self.writer.persist(session, existing, step(existing, fill, now), now)
            return
        if stale:
            log.warning("exits_stale_entry_fill_not_armed", account_id=account_id, order_id=entry_order_id)
            return
        symbol = filled.symbol
        policy = await self.policies.policy_of(session, account_id)
        levels, from_policy, note = self._levels(filled.exits, policy.policy, fill.price, symbol)
        opened = open_bracket(
            bracket_id=bracket_id,
            account_id=account_id,
            symbol=symbol,
            entry_order_id=entry_order_id,
            levels=levels,
            from_policy=from_policy,
            swap_band_pct=policy.policy.swap_band_pct,
            price_increment=self.context.settings.exits_price_increment(symbol),
            fill=fill,
            now=now,
        )
        if note is not None:
            opened = Step(opened.bracket, (*opened.decisions, BracketEvent(bracket_id, "ExplicitExitsReplaced", note)))
        await self.writer.persist(session, None, opened, now)

    def _levels(
        self, exits: ExitInstructions | None, policy: ExitPolicy, price: Decimal, symbol: str
    ) -> tuple[ExitLevels, bool, dict[str, str | None] | None]:
        """Explicit exits when the entry carried usable ones, else the account's defaults (with the reason).

        The exits themselves were checked by the contract (`ExitInstructions`); what is left to check is their
        side of the fill price.
        """
        defaults = policy.levels_for(price, self.context.settings.exits_price_increment(symbol))
        if exits is None:
            return defaults, True, None
        levels = levels_from_instructions(exits)
        if levels.is_empty():
            return defaults, True, None
        try:
            levels.check(price)
        except BracketError as exc:
            # A fill on the wrong side of an explicit level (e.g. a market buy filled under its stop): the
            # position still gets exits, the account's defaults, and the event says why.
            return defaults, True, {"field": exc.field, "reason": str(exc)}
        return levels, False, None
