"""Append-only, hash-chained audit log in schema `audit`; appends join the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import CHAR, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.audit.canonical import (
    CanonicalizationError,
    JsonValue,
    PlainJson,
    canonical_json,
    format_timestamp,
    to_plain_json,
)
from shared.observability.correlation import get_correlation_id

SCHEMA = "audit"
DEFAULT_CHAIN = "main"
GENESIS_HASH = "0" * 64

metadata = sa.MetaData(schema=SCHEMA)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("chain", sa.Text, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("details", JSONB(none_as_null=True), nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=True),
    sa.Column("prev_hash", CHAR(64), nullable=False),
    sa.Column("hash", CHAR(64), nullable=False),
    sa.UniqueConstraint("chain", "position", name="uq_audit_log_chain_position"),
)

chain_heads = sa.Table(
    "chain_heads",
    metadata,
    sa.Column("chain", sa.Text, primary_key=True),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("head_hash", CHAR(64), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of a chain, as stored."""

    seq: int
    chain: str
    position: int
    occurred_at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, PlainJson]
    correlation_id: str | None
    prev_hash: str
    hash: str


def entry_of(
    *,
    chain: str,
    position: int,
    occurred_at: datetime,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, JsonValue],
    correlation_id: str | None,
) -> dict[str, JsonValue]:
    """The hashed fields of an entry (everything but seq and the hashes)."""
    return {
        "chain": chain,
        "position": position,
        "occurred_at": occurred_at,
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
        "correlation_id": correlation_id,
    }


def chain_hash(prev_hash: str, entry: Mapping[str, JsonValue]) -> str:
    """`sha256(bytes.fromhex(prev_hash) || canonical_json(entry))` as 64 lowercase hex digits."""
    # The previous hash enters as its 32 raw bytes, not as hex text.
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(entry)).hexdigest()


def _require_text(name: str, value: str) -> None:
    if not value:
        raise CanonicalizationError(f"{name} must not be empty")


async def _lock_head(session: AsyncSession, chain: str) -> tuple[int, str]:
    # Create the genesis head if missing, then lock it: appends to one chain are serialized on this row lock.
    # Under READ COMMITTED a concurrent creator's row is seen once it commits; REPEATABLE READ callers get a
    # serialization failure instead and retry their transaction.
    genesis = pg_insert(chain_heads).values(chain=chain, length=0, head_hash=GENESIS_HASH)
    await session.execute(genesis.on_conflict_do_nothing(index_elements=[chain_heads.c.chain]))
    locked = sa.select(chain_heads.c.length, chain_heads.c.head_hash).where(chain_heads.c.chain == chain)
    row = (await session.execute(locked.with_for_update())).one()
    return int(row.length), str(row.head_hash)


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, JsonValue],
    chain: str = DEFAULT_CHAIN,
    occurred_at: datetime | None = None,
    correlation_id: str | None = None,
) -> AuditRecord:
    """Append one entry to `chain` inside the caller's transaction (never commits); return the stored record."""
    for name, value in (("chain", chain), ("actor", actor), ("action", action)):
        _require_text(name, value)
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    format_timestamp(occurred_at)  # refuses a naive datetime
    moment = occurred_at.astimezone(UTC)
    plain_details = to_plain_json(details)
    if not isinstance(plain_details, dict):
        raise CanonicalizationError("details must be a mapping")
    if correlation_id is None:
        correlation_id = get_correlation_id()
    # Validate every field before taking the lock: a bad value fails without touching the chain.
    canonical_json([chain, actor, action, target, correlation_id, plain_details])

    length, prev_hash = await _lock_head(session, chain)
    position = length + 1
    entry = entry_of(
        chain=chain,
        position=position,
        occurred_at=moment,
        actor=actor,
        action=action,
        target=target,
        details=plain_details,
        correlation_id=correlation_id,
    )
    digest = chain_hash(prev_hash, entry)
    inserted = sa.insert(audit_log).values(
        chain=chain,
        position=position,
        occurred_at=moment,
        actor=actor,
        action=action,
        target=target,
        details=plain_details,
        correlation_id=correlation_id,
        prev_hash=prev_hash,
        hash=digest,
    )
    seq = (await session.execute(inserted.returning(audit_log.c.seq))).scalar_one()
    advance = (
        sa.update(chain_heads)
        .where(chain_heads.c.chain == chain)
        .values(length=position, head_hash=digest, updated_at=sa.func.now())
    )
    await session.execute(advance)
    return AuditRecord(
        seq=int(seq),
        chain=chain,
        position=position,
        occurred_at=moment,
        actor=actor,
        action=action,
        target=target,
        details=plain_details,
        correlation_id=correlation_id,
        prev_hash=prev_hash,
        hash=digest,
    )
