"""Use cases of the risk service: repositories, shared.domain and the outbox inside one unit of work.

PostgreSQL (schema `risk`) is the source of truth for limits and trading state. Each change commits its row,
its history, its audit entry, its event and its record on the compacted controls topic (`risk.controls.v1`,
services/risk/controls.py) together; the OMS enforces its own copy of those records (services/oms/controls.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.risk.approvals import (
    PendingApproval,
    approval_needed,
    hold_for_approval,
    limit_raise_request,
    resume_request,
)
from services.risk.config import RiskSettings
from services.risk.controls import limits_record, state_record
from services.risk.errors import InvalidLimits, TransitionForbidden
from services.risk.repository import RiskRepository, StoredLimits, StoredState, scope_key
from services.risk.schemas import LimitValues
from shared.audit import append as audit_append
from shared.auth.roles import Role
from shared.contracts.base import outbox_payload
from shared.contracts.registry import new_envelope
from shared.contracts.risk import TradingScope, TradingStateChanged
from shared.controls import publish_control
from shared.db import UnitOfWork
from shared.domain.risk_limits import limits_from_json, limits_to_json, raised_limits
from shared.domain.trading_state import TradingState, is_tightening, leaves_halted
from shared.events import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import RISK_TRADING_STATE_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

AUDIT_CHAIN = "risk"
OPERATORS_OF_THE_SWITCH = frozenset({Role.RISK, Role.DIRECTOR})
DIRECTORS = frozenset({Role.DIRECTOR})
ACTIONS = {TradingState.HALTED: "kill_switch", TradingState.REDUCING: "safe_mode", TradingState.ACTIVE: "resume"}


def roles_allowed(current: TradingState, target: TradingState) -> frozenset[Role]:
    """Who may move a scope from `current` to `target`: tightening needs risk or director, leaving HALTED a director."""
    if leaves_halted(current, target):
        return DIRECTORS
    return OPERATORS_OF_THE_SWITCH


@dataclass(frozen=True, slots=True)
class StateChange:
    """The scope's state after a request, what it was before, and whether anything changed."""

    state: StoredState
    previous: TradingState
    changed: bool
    pending: PendingApproval | None = None  # held for a director (the account's approval policy)


class RiskService:
    """The risk service's use cases; one instance per process, shared by REST, consumers and workers."""

    def __init__(
        self,
        *,
        settings: RiskSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        redis: Redis,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.redis = redis
        self.clock = clock
        self.on_commit = on_commit

    # --- limits --------------------------------------------------------------------------------------------

    async def limits(self, account_id: str) -> StoredLimits | None:
        """The account's current limits (None: never set, no limits apply)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            return await RiskRepository(uow.session).current_limits(account_id)

    async def put_limits(
        self, account_id: str, values: LimitValues, reason: str, actor: str
    ) -> StoredLimits | PendingApproval:
        """Store a new version of the account's limits (audited, published for the OMS); a raise that the
        account's approval policy holds back waits for a director instead (services/risk/approvals.py)."""
        stored_json = _limits_json(values)
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = RiskRepository(uow.session)
            await repo.lock_limits(account_id)
            current = await repo.current_limits(account_id)
            previous = None if current is None else limits_from_json(current.values)
            raised = raised_limits(previous, limits_from_json(stored_json))
            if current is not None and raised and await approval_needed(self.redis, account_id, "limit_raise"):
                uow.after_commit(self.on_commit)
                message = limit_raise_request(account_id, stored_json, current.values, raised, reason, actor)
                return await hold_for_approval(uow.session, self.tables, message, self.clock())
            uow.after_commit(self.on_commit)
            return await self.store_limits_in(uow.session, account_id, stored_json, reason, actor)

    async def store_limits_in(
        self, session: AsyncSession, account_id: str, stored_json: dict[str, Any], reason: str, actor: str
    ) -> StoredLimits:
        """The next version of the account's limits and its audit entry, in the caller's transaction (which holds
        the account's limits lock)."""
        repo = RiskRepository(session)
        current = await repo.current_limits(account_id)
        version = 1 if current is None else current.version + 1
        stored = await repo.insert_limits(account_id, version, stored_json, actor, reason)
        await publish_control(
            session,
            self.tables,
            self.settings.risk_controls_topic,
            limits_record(stored),
            producer="risk",
            now=stored.created_at,
        )
        await audit_append(
            session,
            actor=actor,
            action="risk.limits_changed",
            target=f"account:{account_id}",
            details={
                "version": version,
                "reason": reason,
                "limits": stored_json,
                "previous": None if current is None else current.values,
            },
            chain=AUDIT_CHAIN,
        )
        return stored

    # --- trading state -------------------------------------------------------------------------------------

    async def states(self, account_ids: list[str] | None) -> tuple[StoredState, list[StoredState]]:
        """The global state and the account states that were ever set (of `account_ids`, None: all)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await RiskRepository(uow.session).all_states(account_ids)
        global_state = next((row for row in rows if row.scope == "global"), None) or _never_changed("global", None)
        return global_state, [row for row in rows if row.scope == "account"]

    async def state(self, scope: str, account_id: str | None) -> StoredState:
        async with UnitOfWork(self.sessionmaker) as uow:
            row = await RiskRepository(uow.session).get_state(scope, account_id)
        return row or _never_changed(scope, account_id)

    async def change_state(
        self,
        scope: str,
        account_id: str | None,
        target: TradingState,
        reason: str,
        actor: str,
        roles: Collection[Role],
    ) -> StateChange:
        """Kill switch (HALTED), safe mode (REDUCING) or resume (ACTIVE) of one scope, by a person."""
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            return await self.change_state_in(uow.session, scope, account_id, target, reason, actor, roles)

    async def change_state_in(
        self,
        session: AsyncSession,
        scope: str,
        account_id: str | None,
        target: TradingState,
        reason: str,
        actor: str,
        roles: Collection[Role] | None,
        *,
        approved: bool = False,
    ) -> StateChange:
        """The change inside the caller's transaction: row, history, audit entry and outbox event.

        `roles` None: a system actor (an applied recommendation) that may only tighten, never loosen. An account
        leaving HALTED waits for a director when its approval policy says so, unless `approved` (the decision).
        """
        repo = RiskRepository(session)
        current = await repo.lock_state(scope, account_id) or _never_changed(scope, account_id)
        if roles is None:
            if not is_tightening(current.state, target):
                return StateChange(current, current.state, changed=False)
        elif not set(roles) & roles_allowed(current.state, target):
            needed = " or ".join(sorted(roles_allowed(current.state, target)))
            raise TransitionForbidden(
                f"moving {scope_key(scope, account_id)} from {current.state.value} to {target.value} needs: {needed}"
            )
        if target is current.state:
            return StateChange(current, current.state, changed=False)
        if await self._resume_held(scope, account_id, current.state, target, approved):
            held = resume_request(str(account_id), current.state, target, reason, actor)
            pending = await hold_for_approval(session, self.tables, held, self.clock())
            return StateChange(current, current.state, changed=False, pending=pending)
        new = StoredState(scope, account_id, target, current.version + 1, reason, actor, self.clock())
        await repo.save_state(new, current.state)
        message = state_changed(new, current.state)
        await audit_append(
            session,
            actor=actor,
            action=f"risk.{ACTIONS[target]}",
            target=new.scope_key,
            details=outbox_payload(message),
            chain=AUDIT_CHAIN,
            occurred_at=new.changed_at,
        )
        envelope = new_envelope(message, producer="risk", aggregate_id=new.scope_key, now=new.changed_at)
        await add_to_outbox(session, self.tables, topic=RISK_TRADING_STATE_EVENTS, envelope=envelope, key=new.scope_key)
        await publish_control(
            session,
            self.tables,
            self.settings.risk_controls_topic,
            state_record(new),
            producer="risk",
            now=new.changed_at,
        )
        log.info("trading_state_changed", scope=new.scope_key, state=target.value, previous=current.state.value)
        return StateChange(new, current.state, changed=True)

    async def _resume_held(
        self, scope: str, account_id: str | None, current: TradingState, target: TradingState, approved: bool
    ) -> bool:
        if approved or scope != "account" or account_id is None or not leaves_halted(current, target):
            return False
        return await approval_needed(self.redis, account_id, "resume_from_halted")


def state_changed(state: StoredState, previous: TradingState) -> TradingStateChanged:
    """The `TradingStateChanged` message (its payload is also the audit entry's details)."""
    return TradingStateChanged(
        scope=TradingScope(state.scope),
        account_id=state.account_id,
        state=state.state,
        previous=previous,
        reason=state.reason,
        actor=state.actor,
        version=state.version,
        changed_at=state.changed_at,
    )


def _never_changed(scope: str, account_id: str | None) -> StoredState:
    return StoredState(scope, account_id, TradingState.ACTIVE, 0, "", "", datetime.min.replace(tzinfo=UTC))


def _limits_json(values: LimitValues) -> dict[str, Any]:
    """Domain check of the values (422 naming the first bad field), then the stored JSON form."""
    domain = limits_from_json(values.model_dump(mode="json"))
    problems = domain.contradictions()
    if problems:
        field, sentence = problems[0]
        raise InvalidLimits(
            f"{field}: {sentence}",
            details={"field": field, "fields": [{"field": f, "message": m} for f, m in problems]},
        )
    return limits_to_json(domain)
