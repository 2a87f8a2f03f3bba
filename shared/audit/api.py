"""`GET /audit` and `GET /audit/anchors`: the audit log and its signed anchors, for the `auditor` role only.

Mounted by the reports service. Admins are deliberately not admitted: they make most of the audited changes, so
reading the log is a separate grant (give a person both roles when that is wanted).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.audit.anchors import Anchor
from shared.audit.log import AuditRecord
from shared.audit.query import EntryFilter, list_anchors, list_entries
from shared.db import UnitOfWork
from shared.errors import COMMON_RESPONSES, Unprocessable
from shared.web import AuditReader as Auditor
from shared.web import Cursor, DateTimeQuery, JsonBounds, Limit, readable_json
from shared.web import NameQuery as Name


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    chain: str
    position: int
    occurred_at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    correlation_id: str | None
    prev_hash: str
    hash: str


class AuditEntryPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[AuditEntryRead]
    next_cursor: int | None = Field(description="pass as `cursor` to read the next page; null on the last page")


class AnchorRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    chain: str
    length: int
    head_hash: str
    anchored_at: datetime
    key_id: str
    signature: str = Field(
        description="base64url Ed25519 over RFC 8785 JSON of type, chain, length, head_hash, anchored_at, key_id"
    )


class AnchorPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[AnchorRead]
    next_cursor: int | None


# What an entry's details may hold to be shown as they are: far beyond anything the services write today. An entry
# an older version let in beyond it (a payload nested hundreds deep) reads as an opaque marker with a code: the log
# is append-only, so one such entry must never turn every page that holds it into a 500.
DETAILS_BOUNDS = JsonBounds(max_depth=32, max_entries=10_000, max_text=100_000, max_key=1_000, max_bytes=4 * 2**20)


def _entry(record: AuditRecord) -> AuditEntryRead:
    return AuditEntryRead(
        seq=record.seq,
        chain=record.chain,
        position=record.position,
        occurred_at=record.occurred_at,
        actor=record.actor,
        action=record.action,
        target=record.target,
        details=readable_json(record.details, DETAILS_BOUNDS),
        correlation_id=record.correlation_id,
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def _anchor(anchor_id: int, anchor: Anchor) -> AnchorRead:
    return AnchorRead(
        id=anchor_id,
        chain=anchor.chain,
        length=anchor.length,
        head_hash=anchor.head_hash,
        anchored_at=anchor.anchored_at,
        key_id=anchor.key_id,
        signature=anchor.signature,
    )


router = APIRouter(prefix="/audit", tags=["audit"], responses=COMMON_RESPONSES)


@router.get("", response_model=AuditEntryPage)
async def get_audit_entries(
    request: Request,
    _principal: Auditor,
    chain: Name = None,
    actor: Name = None,
    action: Name = None,
    since: DateTimeQuery = None,
    until: DateTimeQuery = None,
    cursor: Cursor = 0,
    limit: Limit = 100,
) -> AuditEntryPage:
    """Audit entries in log order, filtered by chain, actor, action and time (`since` <= occurred_at < `until`)."""
    if since is not None and until is not None and until <= since:
        raise Unprocessable("until must be later than since")
    where = EntryFilter(chain=chain, actor=actor, action=action, since=since, until=until)
    async with UnitOfWork(request.app.state.runtime.sessionmaker) as uow:
        records, next_cursor = await list_entries(uow.session, where, after_seq=cursor, limit=limit)
    return AuditEntryPage(items=[_entry(record) for record in records], next_cursor=next_cursor)


@router.get("/anchors", response_model=AnchorPage)
async def get_audit_anchors(
    request: Request, _principal: Auditor, chain: Name = None, cursor: Cursor = 0, limit: Limit = 100
) -> AnchorPage:
    """Stored anchors in the order they were made; verify them with the anchor public key (docs/audit.md)."""
    async with UnitOfWork(request.app.state.runtime.sessionmaker) as uow:
        anchors, next_cursor = await list_anchors(uow.session, chain=chain, after_id=cursor, limit=limit)
    return AnchorPage(items=[_anchor(anchor_id, anchor) for anchor_id, anchor in anchors], next_cursor=next_cursor)
