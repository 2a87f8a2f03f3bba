"""Read side of the audit log for auditors: filtered, keyset-paginated entries and the stored anchors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from shared.audit.anchors import Anchor, audit_anchors
from shared.audit.log import AuditRecord, audit_log


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Which entries to list; every given field must match (`since` inclusive, `until` exclusive)."""

    chain: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _conditions(where: EntryFilter) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if where.chain is not None:
        conditions.append(audit_log.c.chain == where.chain)
    if where.actor is not None:
        conditions.append(audit_log.c.actor == where.actor)
    if where.action is not None:
        conditions.append(audit_log.c.action == where.action)
    if where.since is not None:
        conditions.append(audit_log.c.occurred_at >= where.since)
    if where.until is not None:
        conditions.append(audit_log.c.occurred_at < where.until)
    return conditions


async def list_entries(
    session: AsyncSession, where: EntryFilter, *, after_seq: int, limit: int
) -> tuple[list[AuditRecord], int | None]:
    """Entries in log order (seq) after `after_seq`; also the cursor of the next page (None on the last)."""
    query = (
        sa.select(audit_log)
        .where(audit_log.c.seq > after_seq, *_conditions(where))
        .order_by(audit_log.c.seq)
        .limit(limit + 1)
    )
    rows = (await session.execute(query)).all()
    records = [
        AuditRecord(
            seq=int(row.seq),
            chain=row.chain,
            position=int(row.position),
            occurred_at=row.occurred_at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            details=row.details,
            correlation_id=row.correlation_id,
            prev_hash=str(row.prev_hash),
            hash=str(row.hash),
        )
        for row in rows[:limit]
    ]
    next_cursor = records[-1].seq if len(rows) > limit else None
    return records, next_cursor


async def list_anchors(
    session: AsyncSession, *, chain: str | None, after_id: int, limit: int
) -> tuple[list[tuple[int, Anchor]], int | None]:
    """Stored anchors in insertion order after `after_id` (optionally of one chain); also the next cursor."""
    query = sa.select(audit_anchors).where(audit_anchors.c.id > after_id).order_by(audit_anchors.c.id).limit(limit + 1)
    if chain is not None:
        query = query.where(audit_anchors.c.chain == chain)
    rows = (await session.execute(query)).all()
    anchors = [
        (
            int(row.id),
            Anchor(
                chain=row.chain,
                length=int(row.length),
                head_hash=str(row.head_hash),
                anchored_at=row.anchored_at,
                key_id=row.key_id,
                signature=row.signature,
            ),
        )
        for row in rows[:limit]
    ]
    return anchors, (anchors[-1][0] if len(rows) > limit else None)
