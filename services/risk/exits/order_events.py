"""Use case: OMS order events move brackets (inside the consumer's inbox transaction).

Entry fills arm or grow brackets; accepts, fills and ends of exit orders (and refused exit submits) move theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.policies import ExitPolicies
from services.risk.exits.repository import ExitRepository
from services.risk.exits.service import (
    ENDED,
    BracketWriter,
    ExitContext,
    bracket_id_for,
    bracket_id_of_exit,
    decimal_field,
    levels_from_instructions,
)
from shared.contracts.exits import ExitInstructions
from shared.domain.brackets import (
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
    open_bracket,
    step,
)
from shared.events import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)


class ApplyOrderEvent:
    """Runs one OMS order event through the bracket it concerns (or arms a new bracket for an entry fill)."""

    def __init__(self, context: ExitContext, writer: BracketWriter, policies: ExitPolicies) -> None:
        self.context = context
        self.writer = writer
        self.policies = policies

    async def __call__(self, session: AsyncSession, envelope: Envelope) -> None:
        payload = envelope.payload
        now = self.context.clock()
        if envelope.type == "CommandRejected":
            await self._command_rejected(session, envelope, now)
            return
        client_order_id = str(payload.get("client_order_id") or "")
        bracket_id = bracket_id_of_exit(client_order_id)
        if bracket_id is not None:
            event = self._exit_input(envelope.type, client_order_id, payload)
            if event is not None:
                await self._apply(session, bracket_id, event, now)
            return
        if envelope.type == "OrderFilled" and payload.get("side") == "buy":
            await self._entry_filled(session, payload, now, stale=self._stale(envelope, now))

    def _stale(self, envelope: Envelope, now: datetime) -> bool:
        return (now - envelope.occurred_at).total_seconds() > self.context.settings.exits_entry_max_age_s

    @staticmethod
    def _exit_input(event_type: str, client_order_id: str, payload: Mapping[str, Any]) -> BracketInput | None:
        if event_type == "OrderAccepted":
            return ExitAccepted(client_order_id)
        if event_type == "OrderFilled":
            return ExitFilled(client_order_id, decimal_field(payload, "quantity"), decimal_field(payload, "price"))
        outcome = ENDED.get(event_type)
        return None if outcome is None else ExitEnded(client_order_id, outcome)

    async def _command_rejected(self, session: AsyncSession, envelope: Envelope, now: datetime) -> None:
        # Our commands carry the exit client order id as aggregate id; a refused submit ends that exit order.
        bracket_id = bracket_id_of_exit(envelope.aggregate_id)
        if bracket_id is None or envelope.payload.get("command_type") != "SubmitOrder":
            return
        await self._apply(session, bracket_id, ExitEnded(envelope.aggregate_id, ExitOutcome.REJECTED), now)

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

    async def _entry_filled(
        self, session: AsyncSession, payload: Mapping[str, Any], now: datetime, *, stale: bool
    ) -> None:
        account_id = str(payload["account_id"])
        entry_order_id = str(payload["order_id"])
        fill = EntryFilled(decimal_field(payload, "quantity"), decimal_field(payload, "price"))
        repo = ExitRepository(session)
        bracket_id = bracket_id_for(account_id, entry_order_id)
        existing = await repo.get(bracket_id, for_update=True)
        if existing is not None:
            await self.writer.persist(session, existing, step(existing, fill, now), now)
            return
        if stale:
            log.warning("exits_stale_entry_fill_not_armed", account_id=account_id, order_id=entry_order_id)
            return
        symbol = str(payload["symbol"])
        policy = await self.policies.policy_of(session, account_id)
        levels, from_policy, note = self._levels(payload.get("exits"), policy.policy, fill.price, symbol)
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
        self, raw: object, policy: ExitPolicy, price: Decimal, symbol: str
    ) -> tuple[ExitLevels, bool, dict[str, str | None] | None]:
        """Explicit exits when the entry carried usable ones, else the account's defaults (with the reason)."""
        defaults = policy.levels_for(price, self.context.settings.exits_price_increment(symbol))
        if raw is None:  # a missing "exits" key reads as null
            return defaults, True, None
        try:
            levels = levels_from_instructions(ExitInstructions.model_validate(raw))
            if levels.is_empty():
                return defaults, True, None
            levels.check(price)
        except ValidationError as exc:
            return defaults, True, {"field": "exits", "reason": str(exc.errors()[0]["msg"])[:200]}
        except BracketError as exc:
            # A fill on the wrong side of an explicit level (e.g. a market buy filled under its stop): the
            # position still gets exits, the account's defaults, and the event says why.
            return defaults, True, {"field": exc.field, "reason": str(exc)}
        return levels, False, None
