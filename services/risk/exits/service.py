"""What the exit use cases share: bracket ids, the messages they write, and the writer of one domain step.

The use cases themselves: `order_events` (arm from entry fills, follow exit orders), `prices` (market data and
time limits), `brackets` (read, move stops, re-arm) and `policies` (default exits and their Redis mirror).
Every change is one transaction: the bracket row (version checked), its exit-order rows, the OMS commands and
the bracket events in `risk.outbox`. Exit client order ids and outbox event ids are derived from the bracket
(id, sequence, version), so a replayed input can never produce a second, different exit order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.risk.exits.config import ExitSettings
from services.risk.exits.repository import ExitRepository
from shared.audit.log import append as audit_append
from shared.clock import Clock
from shared.contracts.base import ContractViolation
from shared.contracts.exits import EXIT_EVENTS, BracketEventMessage, ExitInstructions
from shared.contracts.orders import CancelOrder, OrderCreate, SubmitOrder
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.domain.bracket_model import (
    Bracket,
    BracketError,
    BracketEvent,
    CancelExit,
    Decision,
    ExitLevels,
    ExitPolicy,
    Step,
    SubmitExit,
)
from shared.domain.money import format_decimal
from shared.domain.types import OrderSide, OrderType
from shared.errors import Conflict, DomainError, NotFound, Unprocessable
from shared.events import EventTables, add_to_outbox
from shared.observability.logging import get_logger
from shared.observability.metrics import counter

log = get_logger(__name__)

EXIT_DECISIONS = counter(
    "aether_exit_decisions_total",
    "Exit bracket decisions made (commands and events written with the bracket).",
    ["type"],
)

PRODUCER = "risk"
BRACKET_NAMESPACE = uuid.UUID("6c1f9a52-3d2e-4b8a-9a51-0f3e7c2b8d11")
EXIT_ID = re.compile(r"x-([0-9a-f]{32})-(?:sl|tp|tr|tl)[0-9]+")
EXIT_EVENT_MODELS: Mapping[str, type[BracketEventMessage]] = MappingProxyType({m.TYPE: m for m in EXIT_EVENTS})


class BracketNotFound(NotFound):
    code = "bracket_not_found"


class BracketClosed(Conflict):
    code = "bracket_not_open"


class UnfavourableStopMove(Unprocessable):
    code = "unfavourable_stop_move"


class StopLooseningForbidden(DomainError):
    status_code = 403
    code = "forbidden"


def bracket_id_for(account_id: str, entry_order_id: str) -> str:
    """One bracket per entry order: the id is derived, so a redelivered first fill finds the same bracket."""
    return uuid.uuid5(BRACKET_NAMESPACE, f"{account_id}/{entry_order_id}").hex


def bracket_id_of_exit(client_order_id: str) -> str | None:
    """The bracket an exit client order id belongs to (`x-<bracket id>-<leg><sequence>`), None for other ids."""
    match = EXIT_ID.fullmatch(client_order_id)
    return None if match is None else match.group(1)


def levels_from_instructions(exits: ExitInstructions) -> ExitLevels:
    trailing = exits.trailing
    return ExitLevels(
        stop_loss=exits.stop_loss,
        take_profit=exits.take_profit,
        trailing_distance=None if trailing is None else trailing.distance,
        trailing_activation=None if trailing is None else trailing.activation_price,
        time_limit_s=exits.time_limit_s,
    )


@dataclass(frozen=True, slots=True)
class MoveStopRequest:
    stop_loss: Decimal | None
    allow_unfavourable: bool
    reason: str | None
    rearm: bool = False


def run_domain(change: Callable[[], Step]) -> tuple[Bracket, tuple[Decision, ...]]:
    """Run a domain change; its BracketError becomes a 409 (bracket not in the right state) or 422 (bad level)."""
    try:
        result = change()
    except BracketError as exc:
        error = BracketClosed if exc.field == "rearm" or "bracket is" in str(exc) else Unprocessable
        raise error(str(exc), details={"field": exc.field}) from None
    return result.bracket, result.decisions


@dataclass(frozen=True, slots=True)
class ExitContext:
    """What every exit use case shares: settings, the database, the outbox tables, the clock and the relay's wake."""

    settings: ExitSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    clock: Clock
    on_commit: Callable[[], Awaitable[None] | None] | None = None

    def wake_after_commit(self, uow: UnitOfWork) -> None:
        """Wake the outbox relay once `uow` commits (the commands and events are in the outbox)."""
        if self.on_commit is not None:
            uow.after_commit(self.on_commit)


class BracketWriter:
    """Writes one domain step: the bracket row (version checked), exit-order rows, commands and events (outbox)."""

    def __init__(self, context: ExitContext) -> None:
        self.context = context

    async def persist(self, session: AsyncSession, before: Bracket | None, result: Step, now: datetime) -> None:
        repo = ExitRepository(session)
        after = result.bracket
        if before is None:
            await repo.insert(after, now)
        elif after != before:
            await repo.save(before, after, now)
        for index, decision in enumerate(result.decisions):
            await self._emit(session, repo, after, decision, index, now)

    async def _emit(
        self,
        session: AsyncSession,
        repo: ExitRepository,
        bracket: Bracket,
        decision: Decision,
        index: int,
        now: datetime,
    ) -> None:
        settings = self.context.settings
        event_id = uuid.uuid5(BRACKET_NAMESPACE, f"{bracket.bracket_id}:{bracket.version}:{index}")
        EXIT_DECISIONS.labels(
            type(decision).__name__ if not isinstance(decision, BracketEvent) else decision.type
        ).inc()
        if isinstance(decision, SubmitExit):
            working = bracket.working
            if working is not None and working.client_order_id == decision.client_order_id:
                await repo.record_exit_order(bracket, working, now)
            envelope = new_envelope(
                SubmitOrder(order=exit_order(decision)),
                producer=PRODUCER,
                aggregate_id=decision.client_order_id,
                now=now,
                event_id=event_id,
            )
            topic, key = settings.exits_commands_topic, bracket.account_id
        elif isinstance(decision, CancelExit):
            await repo.mark_exit_order(decision.client_order_id, "cancel_requested", now)
            envelope = new_envelope(
                CancelOrder(account_id=decision.account_id, client_order_id=decision.client_order_id),
                producer=PRODUCER,
                aggregate_id=decision.client_order_id,
                now=now,
                event_id=event_id,
            )
            topic, key = settings.exits_commands_topic, bracket.account_id
        else:
            envelope = new_envelope(
                exit_event(bracket, decision),
                producer=PRODUCER,
                aggregate_id=bracket.bracket_id,
                now=now,
                event_id=event_id,
            )
            topic, key = settings.exits_events_topic, bracket.bracket_id
        await add_to_outbox(session, self.context.tables, topic=topic, envelope=envelope, key=key)


async def audit_bracket(
    session: AsyncSession, actor: str, action: str, bracket: Bracket, details: dict[str, Any], now: datetime
) -> None:
    """An audit entry about one bracket, on the account's risk chain."""
    await audit_append(
        session,
        actor=actor,
        action=action,
        target=bracket.bracket_id,
        details={"account_id": bracket.account_id, **details},
        chain=f"risk:{bracket.account_id}",
        occurred_at=now,
    )


def exit_order(decision: SubmitExit) -> OrderCreate:
    """The order of an exit (the body of its `SubmitOrder`): a sell, limit at the take-profit or market."""
    return OrderCreate(
        account_id=decision.account_id,
        client_order_id=decision.client_order_id,
        symbol=decision.symbol,
        side=OrderSide.SELL,
        type=OrderType.MARKET if decision.limit_price is None else OrderType.LIMIT,
        quantity=decision.quantity,
        limit_price=decision.limit_price,
    )


def exit_event(bracket: Bracket, event: BracketEvent) -> BracketEventMessage:
    """The `risk.exit-events.v1` message of a domain bracket event: the bracket's identity and state, then the
    event's details. ContractViolation for an event the contracts lack or details that break its model."""
    model = EXIT_EVENT_MODELS.get(event.type)
    if model is None:
        raise ContractViolation(f"bracket event {event.type!r} has no contract model")
    fields: dict[str, object] = {
        "bracket_id": bracket.bracket_id,
        "account_id": bracket.account_id,
        "symbol": bracket.symbol,
        "entry_order_id": bracket.entry_order_id,
        "status": bracket.status,
        "open_quantity": bracket.open_quantity,
        "version": bracket.version,
        **event.details,
    }
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ContractViolation.from_validation(f"{event.type} of bracket {bracket.bracket_id}", exc) from None


def policy_json(policy: ExitPolicy) -> dict[str, Any]:
    def text(value: Decimal | None) -> str | None:
        return None if value is None else format_decimal(value)

    return {
        "stop_loss_pct": text(policy.stop_loss_pct),
        "take_profit_pct": text(policy.take_profit_pct),
        "trailing_distance_pct": text(policy.trailing_distance_pct),
        "trailing_activation_pct": text(policy.trailing_activation_pct),
        "time_limit_s": policy.time_limit_s,
        "swap_band_pct": text(policy.swap_band_pct),
        "require_explicit_exits": policy.require_explicit_exits,
    }
