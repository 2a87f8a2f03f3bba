"""Verify audit chains: recompute every hash, follow every link, compare the tail with the chain head.

What this detects, without any key: modification of an entry (its hash no longer matches), deletion (a gap in
positions), reordering (an entry that links to and was hashed at another position), insertion (an entry linking
past its predecessor, or entries beyond the chain head) and truncation of the tail (fewer entries than the chain
head records). What it cannot detect: someone able to bypass the triggers (a superuser) who rewrites the chain from
some point on with recomputed hashes AND moves `audit.chain_heads` to match. Only a commitment kept outside the
database catches that: the signed `(length, head_hash)` anchors, checked by `shared.audit.anchor_verify`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.audit.canonical import CanonicalizationError
from shared.audit.log import DEFAULT_CHAIN, GENESIS_HASH, chain_hash, entry_of

STREAM_BATCH_ROWS = 2_000

# One statement, so the head and the rows come from one snapshot even while appends go on; the head is an
# uncorrelated sub-select (evaluated once) and the rows stream in position order over (chain, position).
_ROWS = sa.text(
    """
    SELECT l.seq, l.position, l.occurred_at, l.actor, l.action, l.target, l.details::text AS details,
           l.correlation_id, l.prev_hash, l.hash,
           (SELECT h.length FROM audit.chain_heads h WHERE h.chain = :chain) AS head_length,
           (SELECT h.head_hash FROM audit.chain_heads h WHERE h.chain = :chain) AS head_hash
    FROM audit.audit_log l
    WHERE l.chain = :chain
    ORDER BY l.position
    """
)
# For a chain without entries: the head and whether entries appeared since the stream's snapshot.
_EMPTY = sa.text(
    """
    SELECT (SELECT h.length FROM audit.chain_heads h WHERE h.chain = :chain) AS head_length,
           (SELECT h.head_hash FROM audit.chain_heads h WHERE h.chain = :chain) AS head_hash,
           EXISTS (SELECT 1 FROM audit.audit_log l WHERE l.chain = :chain) AS has_entries
    """
)
# Every chain named by an entry or a head; the recursive part skips through the (chain, position) index.
_CHAINS = sa.text(
    """
    WITH RECURSIVE chains(chain) AS (
        (SELECT chain FROM audit.audit_log ORDER BY chain LIMIT 1)
        UNION ALL
        SELECT (SELECT l.chain FROM audit.audit_log l WHERE l.chain > c.chain ORDER BY l.chain LIMIT 1)
        FROM chains c WHERE c.chain IS NOT NULL
    )
    SELECT chain FROM chains WHERE chain IS NOT NULL
    UNION
    SELECT chain FROM audit.chain_heads
    ORDER BY chain
    """
)


class BreakKind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    INSERTED = "inserted"
    HEAD_MISSING = "head_missing"
    # Found only against signed anchors (shared.audit.anchor_verify):
    REWRITTEN = "rewritten"  # the verified chain does not reach an anchored head hash at the anchored length
    ANCHOR_INVALID = "anchor_invalid"  # an anchor whose signature does not verify with the public key


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first place where a chain stops verifying."""

    position: int
    seq: int | None
    kind: BreakKind
    expected: str
    found: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Outcome of verifying one chain."""

    chain: str
    ok: bool
    checked_rows: int
    head_length: int | None
    head_hash: str | None
    first_break: BrokenLink | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's `--json` output)."""
        return asdict(self)


@dataclass(slots=True)
class _Walk:
    """State carried along the stream: the last two verified links."""

    chain: str
    checked: int = 0
    prev_hash: str = GENESIS_HASH
    prev_prev_hash: str | None = None
    prev_seq: int | None = None
    head_length: int | None = None
    head_hash: str | None = None
    # Positions whose verified hash the caller wants (the anchored lengths) and what was found there.
    capture: frozenset[int] = frozenset()
    captured: dict[int, str] = field(default_factory=dict)


def _recomputed_hash(chain: str, row: sa.Row[Any]) -> str | None:
    occurred_at: datetime = row.occurred_at
    try:
        details = json.loads(row.details)
        entry = entry_of(
            chain=chain,
            position=int(row.position),
            occurred_at=occurred_at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            details=details,
            correlation_id=row.correlation_id,
        )
        return chain_hash(str(row.prev_hash), entry)
    except (CanonicalizationError, ValueError, TypeError):
        return None  # stored content that could never have been appended: counts as modified


def _check_row(walk: _Walk, row: sa.Row[Any]) -> BrokenLink | None:
    expected_position = walk.checked + 1
    position, seq = int(row.position), int(row.seq)
    stored_hash, stored_prev = str(row.hash), str(row.prev_hash)
    if position > expected_position:
        return BrokenLink(
            position=expected_position,
            seq=seq,
            kind=BreakKind.DELETED,
            expected=f"position {expected_position}",
            found=f"position {position}",
            detail=f"entries {expected_position}..{position - 1} are missing",
        )
    if position < expected_position:
        return BrokenLink(
            position=position,
            seq=seq,
            kind=BreakKind.INSERTED,
            expected=f"position {expected_position}",
            found=f"position {position}",
            detail="entry outside the chain's position sequence",
        )
    linked = stored_prev == walk.prev_hash
    if not linked and walk.prev_prev_hash is not None and stored_prev == walk.prev_prev_hash:
        return BrokenLink(
            position=position - 1,
            seq=walk.prev_seq,
            kind=BreakKind.INSERTED,
            expected=f"prev_hash {walk.prev_hash}",
            found=f"prev_hash {stored_prev}",
            detail=f"entry {position} links past entry {position - 1}, which was inserted",
        )
    recomputed = _recomputed_hash(walk.chain, row)
    if recomputed != stored_hash:
        kind = BreakKind.MODIFIED if linked else BreakKind.REORDERED
        detail = (
            "stored content does not hash to the stored hash"
            if linked
            else "entry links to another predecessor and was hashed at another position"
        )
        return BrokenLink(
            position=position,
            seq=seq,
            kind=kind,
            expected="content that can be hashed" if recomputed is None else f"hash {recomputed}",
            found=f"hash {stored_hash}",
            detail=detail,
        )
    if not linked:
        # A self-consistent entry after a predecessor it never followed: that predecessor was rewritten and
        # re-hashed (or the entry itself forged); the earliest suspect is the predecessor, unless it is genesis.
        suspect, suspect_seq = (position - 1, walk.prev_seq) if position > 1 else (position, seq)
        return BrokenLink(
            position=suspect,
            seq=suspect_seq,
            kind=BreakKind.MODIFIED,
            expected=f"hash {stored_prev}",
            found=f"hash {walk.prev_hash}",
            detail=f"entry {position} links to a different version of its predecessor",
        )
    walk.checked, walk.prev_seq = position, seq
    if position in walk.capture:
        walk.captured[position] = stored_hash
    walk.prev_prev_hash, walk.prev_hash = walk.prev_hash, stored_hash
    return None


def _check_tail(walk: _Walk) -> BrokenLink | None:
    if walk.head_length is None:
        if walk.checked == 0:
            return None
        return BrokenLink(
            position=walk.checked,
            seq=None,
            kind=BreakKind.HEAD_MISSING,
            expected="a chain head",
            found="none",
            detail="the chain has entries but its audit.chain_heads row is gone",
        )
    if walk.checked < walk.head_length:
        return BrokenLink(
            position=walk.checked + 1,
            seq=None,
            kind=BreakKind.TRUNCATED,
            expected=f"length {walk.head_length}",
            found=f"length {walk.checked}",
            detail=f"entries {walk.checked + 1}..{walk.head_length} are missing from the tail",
        )
    if walk.checked > walk.head_length:
        return BrokenLink(
            position=walk.head_length + 1,
            seq=None,
            kind=BreakKind.INSERTED,
            expected=f"length {walk.head_length}",
            found=f"length {walk.checked}",
            detail="entries beyond the chain head",
        )
    if walk.head_hash != walk.prev_hash:
        return BrokenLink(
            position=walk.checked,
            seq=walk.prev_seq,
            kind=BreakKind.MODIFIED,
            expected=f"head_hash {walk.head_hash}",
            found=f"hash {walk.prev_hash}",
            detail="the newest entry differs from the one the chain head recorded",
        )
    return None


async def _walk_rows(connection: AsyncConnection | AsyncSession, walk: _Walk) -> BrokenLink | None:
    result = await connection.stream(
        _ROWS.bindparams(chain=walk.chain), execution_options={"yield_per": STREAM_BATCH_ROWS}
    )
    broken: BrokenLink | None = None
    try:
        async for row in result:
            walk.head_length = None if row.head_length is None else int(row.head_length)
            walk.head_hash = None if row.head_hash is None else str(row.head_hash)
            broken = _check_row(walk, row)
            if broken is not None:
                break
    finally:
        await result.close()
    return broken


async def verify_chain(
    session_or_connection: AsyncSession | AsyncConnection, chain: str = DEFAULT_CHAIN
) -> VerificationReport:
    """Verify one chain by streaming its entries in position order; report the first broken link."""
    report, _captured = await walk_chain(session_or_connection, chain)
    return report


async def walk_chain(
    session_or_connection: AsyncSession | AsyncConnection,
    chain: str = DEFAULT_CHAIN,
    capture: frozenset[int] = frozenset(),
) -> tuple[VerificationReport, dict[int, str]]:
    """`verify_chain`, also returning the verified hash at each position of `capture` that verified."""
    walk = _Walk(chain=chain, capture=capture)
    # A chain first seen empty may get its first entries before the head is read; look again then.
    for _attempt in range(3):
        walk = _Walk(chain=chain, capture=capture)
        broken = await _walk_rows(session_or_connection, walk)
        if walk.checked > 0 or broken is not None:
            break
        row = (await session_or_connection.execute(_EMPTY.bindparams(chain=chain))).one()
        if not row.has_entries:
            walk.head_length = None if row.head_length is None else int(row.head_length)
            walk.head_hash = None if row.head_hash is None else str(row.head_hash)
            break
    if broken is None:
        broken = _check_tail(walk)
    report = VerificationReport(
        chain=chain,
        ok=broken is None,
        checked_rows=walk.checked,
        head_length=walk.head_length,
        head_hash=walk.head_hash,
        first_break=broken,
    )
    return report, walk.captured


async def list_chains(session_or_connection: AsyncSession | AsyncConnection) -> list[str]:
    """Names of every chain that has entries or a head."""
    result = await session_or_connection.execute(_CHAINS)
    return [str(name) for name in result.scalars()]


async def verify_all_chains(session_or_connection: AsyncSession | AsyncConnection) -> list[VerificationReport]:
    """Verify every chain, in name order."""
    return [await verify_chain(session_or_connection, chain) for chain in await list_chains(session_or_connection)]
