"""Use cases of the risk service: repositories, shared.domain and the outbox inside one unit of work.

PostgreSQL (schema `risk`) is the source of truth for limits and trading state. Each change commits its row,
its history, its audit entry and its event together; Redis, which the OMS reads on every order, is written
after the commit and re-written from PostgreSQL every `mirror_interval_s` (a Redis that lost its keys would
otherwise read as ACTIVE / no limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
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
from shared.contracts.mirror import encode_mirror
from shared.contracts.registry import new_envelope
from shared.contracts.risk import RiskLimitsValue, TradingScope, TradingStateChanged, TradingStateValue
from shared.controls import publish_control
from shared.db import UnitOfWork
from shared.domain.risk_limits import limits_from_json, limits_to_json, raised_limits
from shared.domain.trading_state import TradingState, is_tightening, leaves_halted
from shared.events import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import RISK_TRADING_STATE_EVENTS
from shared.mirror_keys import GLOBAL_TRADING_STATE_KEY, risk_limits_key, trading_state_key
from shared.observability.logging import get_logger

log = get_logger(__name__)

AUDIT_CHAIN = "risk"
OPERATORS_OF_THE_SWITCH = frozenset({Role.RISK, Role.DIRECTOR})
DIRECTORS = frozenset({Role.DIRECTOR})
ACTIONS = {TradingState.HALTED: "kill_switch", TradingState.REDUCING: "safe_mode", TradingState.ACTIVE: "resume"}


def state_key(scope: str, account_id: str | None) -> str:
    """Redis key of a scope's trading state (the OMS reads it: services/oms/trading_state.py)."""
    return GLOBAL_TRADING_STATE_KEY if scope == "global" else trading_state_key(str(account_id))


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
    mirrored: bool = True
    pending: PendingApproval | None = None  # held for a director (the account's approval policy)


class RiskService:
    """The risk service's use cases; one instance per process, shared by REST, consumers and the mirror loop."""

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
        self.mirrored_once = False
        self.mirror_wake = asyncio.Event()  # set after a consumer's commit: re-mirror now, not at the next tick
        self.last_mirror_error: str | None = None

    # --- limits --------------------------------------------------------------------------------------------

    async def limits(self, account_id: str) -> StoredLimits | None:
        """The account's current limits (None: never set, no limits apply)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            return await RiskRepository(uow.session).current_limits(account_id)

    async def put_limits(
        self, account_id: str, values: LimitValues, reason: str, actor: str
    ) -> StoredLimits | PendingApproval:
        """Store a new version of the account's limits (audited), then mirror it to Redis; a raise that the
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
            uow.after_commit(lambda: self._mirror_limits_quietly(account_id))
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
        mirrored: list[bool] = []

        async def mirror() -> None:
            mirrored.append(await self.mirror_state(scope, account_id))

        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            uow.after_commit(mirror)
            change = await self.change_state_in(uow.session, scope, account_id, target, reason, actor, roles)
        return StateChange(change.state, change.previous, change.changed, all(mirrored), change.pending)

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

    # --- the Redis mirror ----------------------------------------------------------------------------------

    async def mirror_state(self, scope: str, account_id: str | None) -> bool:
        """Write the scope's committed state (read back from PG) to Redis; False when Redis failed."""
        stored = await self.state(scope, account_id)
        try:
            await self.redis.set(state_key(scope, account_id), encode_mirror(TradingStateValue(state=stored.state)))
        except RedisError as exc:
            log.error("trading_state_mirror_failed", scope=stored.scope_key, error_type=type(exc).__name__)
            return False
        return True

    async def _mirror_limits_quietly(self, account_id: str) -> None:
        stored = await self.limits(account_id)
        if stored is None:
            return
        try:
            await self.redis.set(risk_limits_key(account_id), limits_mirror(stored))
        except RedisError as exc:
            log.error("limits_mirror_failed", account_id=account_id, error_type=type(exc).__name__)

    async def mirror_all(self) -> int:
        """Re-write every stored state and every account's current limits from PG to Redis; the number of keys.

        Keys without a PG row are left alone: no row means ACTIVE / no limits, and a stricter stray key fails safe.
        """
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = RiskRepository(uow.session)
            states = await repo.all_states()
            limits = await repo.all_current_limits()
        mapping: dict[str, str] = {
            state_key(s.scope, s.account_id): encode_mirror(TradingStateValue(state=s.state)) for s in states
        }
        mapping.update({risk_limits_key(row.account_id): limits_mirror(row) for row in limits})
        try:
            if mapping:
                await self.redis.mset(mapping)
        except RedisError as exc:
            self.last_mirror_error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        self.mirrored_once, self.last_mirror_error = True, None
        return len(mapping)


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


def limits_mirror(stored: StoredLimits) -> str:
    """The Redis text of an account's current limits (the stored JSON, checked against its contract)."""
    return encode_mirror(RiskLimitsValue.model_validate(stored.values))


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
