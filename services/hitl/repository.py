"""Every SQL statement of the hitl service (schema `hitl`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.contracts.approvals import APPROVAL_PAYLOAD_BOUNDS
from shared.db.base import Money
from shared.web import readable_json_text

SCHEMA = "hitl"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("rules", JSONB),
    sa.Column("created_by", sa.Text),
    sa.Column("created_at", TS),
)
requests = sa.Table(
    "requests",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("subject_type", sa.Text),
    sa.Column("subject_id", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("requested_by", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("payload_json", sa.Text),
    sa.Column("payload_hash", sa.Text),
    sa.Column("notional", Money),
    sa.Column("policy_version", sa.Integer),
    sa.Column("quorum", sa.Integer),
    sa.Column("eligible", JSONB),
    sa.Column("status", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("expires_at", TS),
    sa.Column("decided_at", TS),
)
votes = sa.Table(
    "votes",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("voter", sa.Text, primary_key=True),
    sa.Column("vote", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("payload_hash", sa.Text),
    sa.Column("voted_at", TS),
)
decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("decision", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("payload_hash", sa.Text),
    sa.Column("approvers", JSONB),
    sa.Column("event_id", sa.Text),
    sa.Column("decided_at", TS),
)
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", sa.BigInteger, primary_key=True),
    sa.Column("recipient", sa.Text),
    sa.Column("request_id", sa.Text),
    sa.Column("kind", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("created_at", TS),
)


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    account_id: str
    version: int
    rules: dict[str, Any]
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredVote:
    voter: str
    vote: str
    reason: str | None
    payload_hash: str
    voted_at: datetime


@dataclass(frozen=True, slots=True)
class StoredDecision:
    decision: str
    reason: str | None
    payload_hash: str
    approvers: list[str]
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A request row; `payload_json` is the canonical text the hash was computed over."""

    request_id: str
    subject_type: str
    subject_id: str
    account_id: str
    requested_by: str
    source: str
    payload_json: str
    payload_hash: str
    notional: Decimal | None
    policy_version: int | None
    quorum: int
    eligible: list[str]
    status: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as readers show it: a stored one beyond today's bounds (an older version let it in) reads
        as an opaque marker with a code, never an error; the hash still binds the stored text."""
        return readable_json_text(self.payload_json, APPROVAL_PAYLOAD_BOUNDS)


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Listing filters: status (None: all), accounts (None: every account), newest first."""

    status: str | None = None
    accounts: Sequence[str] | None = None
    limit: int = 100


def _request(row: sa.Row[Any]) -> StoredRequest:
    values = dict(row._mapping)
    values["eligible"] = list(values["eligible"] or [])
    return StoredRequest(**values)


class HitlRepository:
    """SQL of schema `hitl` inside the caller's session (never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- policies --------------------------------------------------------------------------------------------

    async def current_policy(self, account_id: str) -> StoredPolicy | None:
        query = (
            sa.select(policies).where(policies.c.account_id == account_id).order_by(policies.c.version.desc()).limit(1)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else StoredPolicy(**dict(row._mapping))

    async def all_current_policies(self) -> list[StoredPolicy]:
        """The current (highest) version of every account that has a stored policy."""
        latest = sa.select(policies.c.account_id, sa.func.max(policies.c.version)).group_by(policies.c.account_id)
        query = sa.select(policies).where(sa.tuple_(policies.c.account_id, policies.c.version).in_(latest))
        return [StoredPolicy(**dict(row._mapping)) for row in (await self.session.execute(query)).all()]

    async def insert_policy(self, policy: StoredPolicy) -> None:
        await self.session.execute(sa.insert(policies).values(**vars_of(policy)))

    async def lock_policy_versions(self, account_id: str) -> None:
        """Serialize policy writers of one account (transaction-scoped advisory lock)."""
        await self.session.execute(
            sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"hitl.policy:{account_id}")))
        )

    # --- requests --------------------------------------------------------------------------------------------

    async def insert_request(self, request: StoredRequest) -> bool:
        """Insert unless a request for the same subject exists (False then)."""
        statement = pg_insert(requests).values(**vars_of(request)).on_conflict_do_nothing()
        result = await self.session.execute(statement.returning(requests.c.request_id))
        return result.first() is not None

    async def by_subject(self, subject_type: str, subject_id: str) -> StoredRequest | None:
        query = sa.select(requests).where(requests.c.subject_type == subject_type, requests.c.subject_id == subject_id)
        row = (await self.session.execute(query)).first()
        return None if row is None else _request(row)

    async def get(self, request_id: str, *, lock: bool = False) -> StoredRequest | None:
        query = sa.select(requests).where(requests.c.request_id == request_id)
        if lock:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else _request(row)

    async def list_requests(self, filters: RequestFilter) -> list[StoredRequest]:
        query = sa.select(requests).order_by(requests.c.created_at.desc(), requests.c.request_id).limit(filters.limit)
        if filters.status == "decided":
            query = query.where(requests.c.status != "pending")
        elif filters.status is not None:
            query = query.where(requests.c.status == filters.status)
        if filters.accounts is not None:
            query = query.where(requests.c.account_id.in_(list(filters.accounts)))
        return [_request(row) for row in (await self.session.execute(query)).all()]

    async def due_for_expiry(self, now: datetime, limit: int) -> list[StoredRequest]:
        """Pending requests past their expiry, locked; rows another replica holds are skipped."""
        query = (
            sa.select(requests)
            .where(requests.c.status == "pending", requests.c.expires_at <= now)
            .order_by(requests.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_request(row) for row in (await self.session.execute(query)).all()]

    async def set_status(self, request_id: str, status: str, decided_at: datetime) -> None:
        await self.session.execute(
            sa.update(requests)
            .where(requests.c.request_id == request_id, requests.c.status == "pending")
            .values(status=status, decided_at=decided_at)
        )

    # --- votes and decisions ---------------------------------------------------------------------------------

    async def votes_of(self, request_id: str) -> list[StoredVote]:
        query = sa.select(votes).where(votes.c.request_id == request_id).order_by(votes.c.voted_at, votes.c.voter)
        return [
            StoredVote(**{k: v for k, v in row._mapping.items() if k != "request_id"})
            for row in (await self.session.execute(query)).all()
        ]

    async def insert_vote(self, request_id: str, vote: StoredVote) -> bool:
        statement = pg_insert(votes).values(request_id=request_id, **vars_of(vote)).on_conflict_do_nothing()
        result = await self.session.execute(statement.returning(votes.c.voter))
        return result.first() is not None

    async def decision_of(self, request_id: str) -> StoredDecision | None:
        query = sa.select(decisions).where(decisions.c.request_id == request_id)
        row = (await self.session.execute(query)).first()
        if row is None:
            return None
        values = dict(row._mapping)
        return StoredDecision(
            decision=values["decision"],
            reason=values["reason"],
            payload_hash=values["payload_hash"],
            approvers=list(values["approvers"]),
            decided_at=values["decided_at"],
        )

    async def insert_decision(self, request_id: str, decision: StoredDecision, event_id: str) -> None:
        """Store the decision; the primary key refuses a second one for the same request."""
        await self.session.execute(
            sa.insert(decisions).values(request_id=request_id, event_id=event_id, **vars_of(decision))
        )

    async def count_decisions(self, request_id: str) -> int:
        query = sa.select(sa.func.count()).select_from(decisions).where(decisions.c.request_id == request_id)
        return int((await self.session.execute(query)).scalar_one())

    # --- notifications ---------------------------------------------------------------------------------------

    async def notify(self, recipient: str, request_id: str, kind: str, message: str, now: datetime) -> None:
        await self.session.execute(
            sa.insert(notifications).values(
                recipient=recipient, request_id=request_id, kind=kind, message=message, created_at=now
            )
        )

    async def notifications_for(self, recipient: str) -> list[dict[str, Any]]:
        query = (
            sa.select(notifications)
            .where(notifications.c.recipient == recipient)
            .order_by(notifications.c.notification_id)
        )
        return [dict(row._mapping) for row in (await self.session.execute(query)).all()]


def vars_of(record: object) -> dict[str, Any]:
    """The fields of a slotted dataclass as a dict (for inserts)."""
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]
