"""Append-only, hash-chained audit log in schema `audit`; appends join the caller's transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry to append: what happened, to what, by whom (`occurred_at` None: now)."""

    actor: str
    action: str
    target: str
    details: Mapping[str, JsonValue]
    occurred_at: datetime | None = None
    correlation_id: str | None = None


# Built once: the statements of an append are compiled once per process (SQLAlchemy's compiled cache keys them on
# these objects), and the values travel as parameters.
# The triggers of migration 0002 refuse any change of a head but a one-entry advance: a missing genesis head is
# created by an insert that does nothing on conflict, then locked.
_CREATE_HEAD = (
    pg_insert(chain_heads)
    .values(chain=sa.bindparam("chain"), length=0, head_hash=GENESIS_HASH)
    .on_conflict_do_nothing(index_elements=[chain_heads.c.chain])
)
_LOCK_HEAD = (
    sa.select(chain_heads.c.length, chain_heads.c.head_hash)
    .where(chain_heads.c.chain == sa.bindparam("chain"))
    .with_for_update()
)
_INSERT_ENTRY = sa.insert(audit_log).returning(audit_log.c.seq)
_ADVANCE_HEAD = (
    sa.update(chain_heads)
    .where(chain_heads.c.chain == sa.bindparam("head_chain"))
    .values(length=sa.bindparam("new_length"), head_hash=sa.bindparam("new_hash"), updated_at=sa.func.now())
)


async def _lock_head(session: AsyncSession, chain: str) -> tuple[int, str]:
    # Lock the head (one round trip once the chain exists); create the genesis head first when it is missing.
    # Appends to one chain are serialized on this row lock. Under READ COMMITTED a concurrent creator's row is seen
    # once it commits; REPEATABLE READ callers get a serialization failure instead and retry their transaction.
    row = (await session.execute(_LOCK_HEAD, {"chain": chain})).one_or_none()
    if row is None:
        await session.execute(_CREATE_HEAD, {"chain": chain})
        row = (await session.execute(_LOCK_HEAD, {"chain": chain})).one()
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
    entry = AuditEntry(actor, action, target, details, occurred_at, correlation_id)
    (record,) = await append_many(session, [entry], chain=chain)
    return record


async def append_many(
    session: AsyncSession, entries: Sequence[AuditEntry], *, chain: str = DEFAULT_CHAIN
) -> list[AuditRecord]:
    """Append `entries`, in order, to `chain` inside the caller's transaction (never commits): one lock of the
    chain's head however many entries; the stored records."""
    if not entries:
        return []
    _require_text("chain", chain)
    prepared = [_prepared(entry, chain) for entry in entries]  # every field valid before the lock is taken
    length, prev_hash = await _lock_head(session, chain)
    records: list[AuditRecord] = []
    rows: list[dict[str, object]] = []
    for position, (moment, entry, plain_details, correlation_id) in enumerate(prepared, start=length + 1):
        hashed = entry_of(
            chain=chain,
            position=position,
            occurred_at=moment,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            details=plain_details,
            correlation_id=correlation_id,
        )
        digest = chain_hash(prev_hash, hashed)
        rows.append(
            {
                "chain": chain,
                "position": position,
                "occurred_at": moment,
                "actor": entry.actor,
                "action": entry.action,
                "target": entry.target,
                "details": plain_details,
                "correlation_id": correlation_id,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        records.append(
            AuditRecord(
                seq=0,
                chain=chain,
                position=position,
                occurred_at=moment,
                actor=entry.actor,
                action=entry.action,
                target=entry.target,
                details=plain_details,
                correlation_id=correlation_id,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest
    # The triggers of migration 0002 accept an entry only at head + 1 and a head that advances by one entry: each
    # entry is inserted, then the head advanced to it (the head's lock is taken once, above).
    seqs = []
    for row, record in zip(rows, records, strict=True):
        seqs.append((await session.execute(_INSERT_ENTRY, row)).scalar_one())
        await session.execute(
            _ADVANCE_HEAD, {"head_chain": chain, "new_length": record.position, "new_hash": record.hash}
        )
    return [replace(record, seq=int(seq)) for record, seq in zip(records, seqs, strict=True)]


def _prepared(entry: AuditEntry, chain: str) -> tuple[datetime, AuditEntry, dict[str, PlainJson], str | None]:
    """(moment in UTC, entry, details as plain JSON, correlation id), or CanonicalizationError for a bad field."""
    for name, value in (("actor", entry.actor), ("action", entry.action)):
        _require_text(name, value)
    occurred_at = datetime.now(UTC) if entry.occurred_at is None else entry.occurred_at
    format_timestamp(occurred_at)  # refuses a naive datetime
    plain_details = to_plain_json(entry.details)
    if not isinstance(plain_details, dict):
        raise CanonicalizationError("details must be a mapping")
    correlation_id = get_correlation_id() if entry.correlation_id is None else entry.correlation_id
    canonical_json([chain, entry.actor, entry.action, entry.target, correlation_id, plain_details])
    return occurred_at.astimezone(UTC), entry, plain_details, correlation_id
