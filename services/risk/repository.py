"""Every SQL statement of the risk service (schema `risk`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.domain.types import TradingState

SCHEMA = "risk"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

limits = sa.Table(
    "limits",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("limits", JSONB),
    sa.Column("actor", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", TS),
)
trading_state = sa.Table(
    "trading_state",
    metadata,
    sa.Column("scope_key", sa.Text, primary_key=True),
    sa.Column("scope", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.Text),
    sa.Column("changed_at", TS),
)
trading_state_history = sa.Table(
    "trading_state_history",
    metadata,
    sa.Column("history_id", sa.BigInteger, primary_key=True),
    sa.Column("scope_key", sa.Text),
    sa.Column("scope", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("previous", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.Text),
    sa.Column("changed_at", TS),
)
pending_approvals = sa.Table(
    "pending_approvals",
    metadata,
    sa.Column("subject_id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("payload", JSONB),
    sa.Column("payload_hash", sa.Text),
    sa.Column("requested_by", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("outcome", sa.Text),
    sa.Column("resolved_at", TS),
)


@dataclass(frozen=True, slots=True)
class PendingRow:
    """A change waiting for a director: the `ApprovalRequested` payload sent and its hash."""

    subject_id: str
    kind: str
    account_id: str
    payload: dict[str, Any]
    payload_hash: str
    requested_by: str
    outcome: str | None


@dataclass(frozen=True, slots=True)
class StoredLimits:
    account_id: str
    version: int
    values: dict[str, Any]
    actor: str
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredState:
    scope: str
    account_id: str | None
    state: TradingState
    version: int
    reason: str
    actor: str
    changed_at: datetime

    @property
    def scope_key(self) -> str:
        return scope_key(self.scope, self.account_id)


def scope_key(scope: str, account_id: str | None) -> str:
    """The primary key of a scope's state row: `global` or `account:<id>`."""
    return "global" if scope == "global" else f"account:{account_id}"


class RiskRepository:
    """SQL of the risk service, bound to the caller's session (the unit of work commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- limits --------------------------------------------------------------------------------------------

    async def lock_limits(self, account_id: str) -> None:
        """Serialize limit changes of one account (transaction-scoped advisory lock)."""
        await self.session.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"risk.limits:{account_id}")))
        )

    async def current_limits(self, account_id: str) -> StoredLimits | None:
        query = sa.select(limits).where(limits.c.account_id == account_id).order_by(limits.c.version.desc()).limit(1)
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _limits(row)

    async def insert_limits(
        self, account_id: str, version: int, values: dict[str, Any], actor: str, reason: str
    ) -> StoredLimits:
        statement = (
            sa.insert(limits)
            .values(account_id=account_id, version=version, limits=values, actor=actor, reason=reason)
            .returning(*limits.c)
        )
        return _limits((await self.session.execute(statement)).mappings().one())

    async def all_current_limits(self) -> list[StoredLimits]:
        latest = (
            sa.select(limits.c.account_id, sa.func.max(limits.c.version).label("version"))
            .group_by(limits.c.account_id)
            .subquery()
        )
        query = sa.select(limits).join(
            latest, sa.and_(limits.c.account_id == latest.c.account_id, limits.c.version == latest.c.version)
        )
        return [_limits(row) for row in (await self.session.execute(query)).mappings()]

    # --- changes waiting for a director --------------------------------------------------------------------

    async def insert_pending(self, row: PendingRow, now: datetime) -> None:
        await self.session.execute(
            sa.insert(pending_approvals).values(
                subject_id=row.subject_id,
                kind=row.kind,
                account_id=row.account_id,
                payload=row.payload,
                payload_hash=row.payload_hash,
                requested_by=row.requested_by,
                created_at=now,
            )
        )

    async def pending(self, subject_id: str) -> PendingRow | None:
        """The row, locked (its decision is applied once)."""
        query = sa.select(pending_approvals).where(pending_approvals.c.subject_id == subject_id).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        if row is None:
            return None
        return PendingRow(
            row["subject_id"], row["kind"], row["account_id"], row["payload"], row["payload_hash"],
            row["requested_by"], row["outcome"],
        )  # fmt: skip

    async def resolve_pending(self, subject_id: str, outcome: str, now: datetime) -> None:
        await self.session.execute(
            sa.update(pending_approvals)
            .where(pending_approvals.c.subject_id == subject_id)
            .values(outcome=outcome, resolved_at=now)
        )

    # --- trading state -------------------------------------------------------------------------------------

    async def lock_state(self, scope: str, account_id: str | None) -> StoredState | None:
        """The scope's state row, locked for the change (None when the scope was never changed: ACTIVE)."""
        key = scope_key(scope, account_id)
        # Serialize first changes too (no row to lock yet).
        await self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"risk.state:{key}"))))
        query = sa.select(trading_state).where(trading_state.c.scope_key == key).with_for_update()
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _state(row)

    async def get_state(self, scope: str, account_id: str | None) -> StoredState | None:
        query = sa.select(trading_state).where(trading_state.c.scope_key == scope_key(scope, account_id))
        row = (await self.session.execute(query)).mappings().first()
        return None if row is None else _state(row)

    async def save_state(self, state: StoredState, previous: TradingState) -> None:
        """Upsert the scope's row and append its history row."""
        values = {
            "scope": state.scope,
            "account_id": state.account_id,
            "state": state.state.value,
            "version": state.version,
            "reason": state.reason,
            "actor": state.actor,
            "changed_at": state.changed_at,
        }
        upsert = pg_insert(trading_state).values(scope_key=state.scope_key, **values)
        await self.session.execute(upsert.on_conflict_do_update(index_elements=["scope_key"], set_=values))
        await self.session.execute(
            sa.insert(trading_state_history).values(scope_key=state.scope_key, previous=previous.value, **values)
        )

    async def count_states(self) -> dict[tuple[str, TradingState], int]:
        """How many scopes are in each state, by (scope, state): the global row and the accounts ever changed."""
        query = sa.select(trading_state.c.scope, trading_state.c.state, sa.func.count()).group_by(
            trading_state.c.scope, trading_state.c.state
        )
        return {(scope, TradingState(state)): count for scope, state, count in await self.session.execute(query)}

    async def all_states(self, account_ids: list[str] | None = None) -> list[StoredState]:
        query = sa.select(trading_state).order_by(trading_state.c.scope_key)
        if account_ids is not None:
            query = query.where(sa.or_(trading_state.c.scope == "global", trading_state.c.account_id.in_(account_ids)))
        return [_state(row) for row in (await self.session.execute(query)).mappings()]


def _limits(row: sa.RowMapping) -> StoredLimits:
    return StoredLimits(
        row["account_id"], row["version"], dict(row["limits"]), row["actor"], row["reason"], row["created_at"]
    )


def _state(row: sa.RowMapping) -> StoredState:
    return StoredState(
        row["scope"],
        row["account_id"],
        TradingState(row["state"]),
        row["version"],
        row["reason"],
        row["actor"],
        row["changed_at"],
    )
