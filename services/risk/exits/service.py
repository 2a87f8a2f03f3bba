"""Use cases of the exit brackets: arm from entry fills, follow exit orders, watch prices, move stops, policies.

Every change is one transaction: the bracket row (version checked), its exit-order rows, the OMS commands and
the bracket events in `risk.outbox`. Exit client order ids and outbox event ids are derived from the bracket
(id, sequence, version), so a replayed input can never produce a second, different exit order.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.risk.exits.config import ExitSettings
from services.risk.exits.repository import ExitRepository, StoredPolicy
from shared.audit.log import append as audit_append
from shared.contracts.exits import ExitInstructions
from shared.db import UnitOfWork
from shared.domain.brackets import (
    Bracket,
    BracketError,
    BracketEvent,
    BracketInput,
    CancelExit,
    ClockTick,
    Decision,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOutcome,
    ExitPolicy,
    PriceTick,
    Step,
    SubmitExit,
    move_stop,
    open_bracket,
    rearm,
    step,
)
from shared.domain.money import format_decimal
from shared.errors import Conflict, DomainError, NotFound, Unprocessable
from shared.events import Envelope, EventTables, add_to_outbox
from shared.mirror_keys import exit_policy_key
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
ENDED = {
    "OrderCanceled": ExitOutcome.CANCELED,
    "OrderExpired": ExitOutcome.EXPIRED,
    "OrderRejected": ExitOutcome.REJECTED,
    "OrderDenied": ExitOutcome.DENIED,
}


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


def _decimal(payload: Mapping[str, Any], name: str) -> Decimal:
    try:
        return Decimal(str(payload[name]))
    except (KeyError, InvalidOperation) as exc:
        raise ValueError(f"order event without a valid {name!r}") from exc


@dataclass(frozen=True, slots=True)
class MoveStopRequest:
    stop_loss: Decimal | None
    allow_unfavourable: bool
    reason: str | None
    rearm: bool = False


def _domain(change: Callable[[], Step]) -> tuple[Bracket, tuple[Decision, ...]]:
    """Run a domain change; its BracketError becomes a 409 (bracket not in the right state) or 422 (bad level)."""
    try:
        result = change()
    except BracketError as exc:
        error = BracketClosed if exc.field == "rearm" or "bracket is" in str(exc) else Unprocessable
        raise error(str(exc), details={"field": exc.field}) from None
    return result.bracket, result.decisions


class ExitService:
    """The exit engine's use cases; one instance per process (REST, consumers, clock)."""

    def __init__(
        self,
        *,
        settings: ExitSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        clock: Callable[[], datetime],
        on_commit: Callable[[], Awaitable[None] | None] | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.clock = clock
        self.on_commit = on_commit

    # --- order events (inside the consumer's inbox transaction) ---------------------------------------------

    async def handle_order_event(self, session: AsyncSession, envelope: Envelope) -> None:
        """Entry fills arm or grow brackets; accepts, fills and ends of exit orders move their bracket."""
        payload = envelope.payload
        now = self.clock()
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
        return (now - envelope.occurred_at).total_seconds() > self.settings.exits_entry_max_age_s

    @staticmethod
    def _exit_input(event_type: str, client_order_id: str, payload: Mapping[str, Any]) -> BracketInput | None:
        if event_type == "OrderAccepted":
            return ExitAccepted(client_order_id)
        if event_type == "OrderFilled":
            return ExitFilled(client_order_id, _decimal(payload, "quantity"), _decimal(payload, "price"))
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
        await self._persist(session, bracket, step(bracket, event, now), now)

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
        fill = EntryFilled(_decimal(payload, "quantity"), _decimal(payload, "price"))
        repo = ExitRepository(session)
        bracket_id = bracket_id_for(account_id, entry_order_id)
        existing = await repo.get(bracket_id, for_update=True)
        if existing is not None:
            await self._persist(session, existing, step(existing, fill, now), now)
            return
        if stale:
            log.warning("exits_stale_entry_fill_not_armed", account_id=account_id, order_id=entry_order_id)
            return
        symbol = str(payload["symbol"])
        policy = await self.policy_of(session, account_id)
        levels, from_policy, note = self._levels(payload.get("exits"), policy.policy, fill.price, symbol)
        opened = open_bracket(
            bracket_id=bracket_id,
            account_id=account_id,
            symbol=symbol,
            entry_order_id=entry_order_id,
            levels=levels,
            from_policy=from_policy,
            swap_band_pct=policy.policy.swap_band_pct,
            price_increment=self.settings.exits_price_increment(symbol),
            fill=fill,
            now=now,
        )
        if note is not None:
            opened = Step(opened.bracket, (*opened.decisions, BracketEvent(bracket_id, "ExplicitExitsReplaced", note)))
        await self._persist(session, None, opened, now)

    def _levels(
        self, raw: object, policy: ExitPolicy, price: Decimal, symbol: str
    ) -> tuple[ExitLevels, bool, dict[str, str | None] | None]:
        """Explicit exits when the entry carried usable ones, else the account's defaults (with the reason)."""
        defaults = policy.levels_for(price, self.settings.exits_price_increment(symbol))
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

    # --- market data and clock ------------------------------------------------------------------------------

    async def apply_prices(self, session: AsyncSession, prices: Mapping[str, Sequence[Decimal]], now: datetime) -> int:
        """Run each open bracket of these symbols through its prices in order; return the decisions made."""
        if not prices:
            return 0
        decisions = 0
        for bracket in await ExitRepository(session).open_for_symbols(sorted(prices)):
            current = bracket
            made: list[Decision] = []
            for price in prices[bracket.symbol]:
                result = step(current, PriceTick(price), now)
                current = result.bracket
                made.extend(result.decisions)
            if current != bracket:
                await self._persist(session, bracket, Step(current, tuple(made)), now)
                decisions += len(made)
        return decisions

    async def tick_clock(self) -> int:
        """Check the time limits of open brackets; return the decisions made."""
        now = self.clock()
        decisions = 0
        async with UnitOfWork(self.sessionmaker) as uow:
            for bracket in await ExitRepository(uow.session).open_with_time_limit():
                result = step(bracket, ClockTick(), now)
                if result.bracket != bracket:
                    await self._persist(uow.session, bracket, result, now)
                    decisions += len(result.decisions)
            if decisions:
                self._wake(uow)
        return decisions

    # --- persistence ---------------------------------------------------------------------------------------

    async def _persist(self, session: AsyncSession, before: Bracket | None, result: Step, now: datetime) -> None:
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
        event_id = uuid.uuid5(BRACKET_NAMESPACE, f"{bracket.bracket_id}:{bracket.version}:{index}")
        EXIT_DECISIONS.labels(
            type(decision).__name__ if not isinstance(decision, BracketEvent) else decision.type
        ).inc()
        if isinstance(decision, SubmitExit):
            working = bracket.working
            if working is not None and working.client_order_id == decision.client_order_id:
                await repo.record_exit_order(bracket, working, now)
            envelope = Envelope.new(
                type="SubmitOrder",
                producer=PRODUCER,
                aggregate_id=decision.client_order_id,
                payload={"order": submit_order_body(decision)},
                now=now,
                event_id=event_id,
            )
            await add_to_outbox(
                session,
                self.tables,
                topic=self.settings.exits_commands_topic,
                envelope=envelope,
                key=bracket.account_id,
            )
        elif isinstance(decision, CancelExit):
            await repo.mark_exit_order(decision.client_order_id, "cancel_requested", now)
            envelope = Envelope.new(
                type="CancelOrder",
                producer=PRODUCER,
                aggregate_id=decision.client_order_id,
                payload={"account_id": decision.account_id, "client_order_id": decision.client_order_id},
                now=now,
                event_id=event_id,
            )
            await add_to_outbox(
                session,
                self.tables,
                topic=self.settings.exits_commands_topic,
                envelope=envelope,
                key=bracket.account_id,
            )
        else:
            envelope = Envelope.new(
                type=decision.type,
                producer=PRODUCER,
                aggregate_id=bracket.bracket_id,
                payload=event_payload(bracket, decision),
                now=now,
                event_id=event_id,
            )
            await add_to_outbox(
                session, self.tables, topic=self.settings.exits_events_topic, envelope=envelope, key=bracket.bracket_id
            )

    def _wake(self, uow: UnitOfWork) -> None:
        if self.on_commit is not None:
            uow.after_commit(self.on_commit)

    # --- REST use cases ------------------------------------------------------------------------------------

    async def get(self, bracket_id: str) -> tuple[Bracket, list[dict[str, Any]]]:
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = ExitRepository(uow.session)
            bracket = await repo.get(bracket_id)
            if bracket is None:
                raise BracketNotFound(f"exit bracket {bracket_id} does not exist")
            return bracket, await repo.exit_orders_of(bracket_id)

    async def list_brackets(self, accounts: Sequence[str] | None, status: str | None, limit: int) -> list[Bracket]:
        async with UnitOfWork(self.sessionmaker) as uow:
            return await ExitRepository(uow.session).list_brackets(accounts, status, limit)

    async def amend(
        self, bracket_id: str, request: MoveStopRequest, actor: str, *, may_loosen: bool, check: Callable[[str], None]
    ) -> Bracket:
        """Re-arm a failed bracket and/or move its stop-loss (each audited); lowering the stop needs the flag and
        `may_loosen`. The rules are applied again at once (a stop above the price exits)."""
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = ExitRepository(uow.session)
            bracket = await repo.get(bracket_id, for_update=True)
            if bracket is None:
                raise BracketNotFound(f"exit bracket {bracket_id} does not exist")
            check(bracket.account_id)
            current: Bracket = bracket
            decisions: list[Decision] = []
            if request.rearm:
                current, made = _domain(lambda: rearm(current, actor, now))
                decisions.extend(made)
                await self._audit(uow.session, actor, "risk.exit.rearmed", bracket, {"reason": request.reason}, now)
            if request.stop_loss is not None:
                self._check_direction(current, request, may_loosen)
                previous = current.levels.stop_loss
                stop_loss = request.stop_loss
                current, made = _domain(lambda: move_stop(current, stop_loss, actor, now))
                decisions.extend(made)
                details = {
                    "previous": None if previous is None else format_decimal(previous),
                    "stop_loss": format_decimal(request.stop_loss),
                    "allow_unfavourable": request.allow_unfavourable,
                    "reason": request.reason,
                }
                await self._audit(uow.session, actor, "risk.exit.stop_moved", bracket, details, now)
            await self._persist(uow.session, bracket, Step(current, tuple(decisions)), now)
            self._wake(uow)
        return current

    @staticmethod
    async def _audit(
        session: AsyncSession, actor: str, action: str, bracket: Bracket, details: dict[str, Any], now: datetime
    ) -> None:
        await audit_append(
            session,
            actor=actor,
            action=action,
            target=bracket.bracket_id,
            details={"account_id": bracket.account_id, **details},
            chain=f"risk:{bracket.account_id}",
            occurred_at=now,
        )

    @staticmethod
    def _check_direction(bracket: Bracket, request: MoveStopRequest, may_loosen: bool) -> None:
        previous = bracket.levels.stop_loss
        if previous is None or request.stop_loss is None or request.stop_loss >= previous:
            return
        if not request.allow_unfavourable:
            raise UnfavourableStopMove(
                "stop_loss: lowering the stop of a long needs allow_unfavourable=true",
                details={"field": "allow_unfavourable"},
            )
        if not may_loosen:
            raise StopLooseningForbidden(
                "lowering the stop of a long needs the risk role", details={"field": "stop_loss"}
            )

    async def policy_of(self, session: AsyncSession, account_id: str) -> StoredPolicy:
        """The account's policy, or the built-in defaults (version 0) when it has none."""
        stored = await ExitRepository(session).policy(account_id)
        return stored or StoredPolicy(account_id, ExitPolicy(), 0, "default", None)

    async def get_policy(self, account_id: str) -> StoredPolicy:
        async with UnitOfWork(self.sessionmaker) as uow:
            return await self.policy_of(uow.session, account_id)

    async def put_policy(self, account_id: str, policy: ExitPolicy, actor: str) -> StoredPolicy:
        """Replace the account's exit policy (versioned, audited)."""
        now = self.clock()
        stored: StoredPolicy | None = None
        async with UnitOfWork(self.sessionmaker) as uow:
            version = await ExitRepository(uow.session).save_policy(account_id, policy, actor, now)
            stored = StoredPolicy(account_id, policy, version, actor, now)
            uow.after_commit(lambda: self._mirror_quietly(stored))
            await audit_append(
                uow.session,
                actor=actor,
                action="risk.exit_policy.updated",
                target=account_id,
                details={"version": version, **policy_json(policy)},
                chain=f"risk:{account_id}",
                occurred_at=now,
            )
        return stored

    # --- the Redis mirror of exit policies (the OMS may refuse entries without exits when a policy says so) ----

    async def mirror_policy(self, stored: StoredPolicy) -> None:
        if self.redis is None:
            return
        value = json.dumps({"version": stored.version, **policy_json(stored.policy)}, sort_keys=True)
        await self.redis.set(exit_policy_key(stored.account_id), value)

    async def _mirror_quietly(self, stored: StoredPolicy | None) -> None:
        if stored is None:
            return
        try:
            await self.mirror_policy(stored)
        except RedisError as exc:  # the periodic mirror writes it again; PostgreSQL stays the source of truth
            log.error("exit_policy_mirror_failed", account_id=stored.account_id, error_type=type(exc).__name__)

    async def mirror_policies(self) -> int:
        """Write every stored exit policy to Redis again (Redis holds rebuildable state only)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            policies = await ExitRepository(uow.session).all_policies()
        for stored in policies:
            await self.mirror_policy(stored)
        return len(policies)


def submit_order_body(decision: SubmitExit) -> dict[str, Any]:
    """The OMS `OrderCreate` JSON of an exit: a sell, limit at the take-profit or market."""
    body: dict[str, Any] = {
        "account_id": decision.account_id,
        "client_order_id": decision.client_order_id,
        "symbol": decision.symbol,
        "side": "sell",
        "type": "market" if decision.limit_price is None else "limit",
        "quantity": format_decimal(decision.quantity),
    }
    if decision.limit_price is not None:
        body["limit_price"] = format_decimal(decision.limit_price)
    return body


def event_payload(bracket: Bracket, event: BracketEvent) -> dict[str, Any]:
    return {
        "bracket_id": bracket.bracket_id,
        "account_id": bracket.account_id,
        "symbol": bracket.symbol,
        "entry_order_id": bracket.entry_order_id,
        "status": bracket.status.value,
        "open_quantity": format_decimal(bracket.open_quantity),
        "version": bracket.version,
        **event.details,
    }


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
