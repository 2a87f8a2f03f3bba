"""Verify audit chains against signed anchors, with the anchor public key only.

For each chain: every anchor's signature must verify (else `anchor_invalid`); the chain itself must verify
(`shared.audit.verify`: modified, deleted, reordered, inserted, truncated against its head); the verified chain
must be at least as long as every anchor (else `truncated`, even when `audit.chain_heads` was moved back too);
and the verified hash at each anchored length must equal the anchored head hash (else `rewritten`: the chain was
rewritten with recomputed hashes at or before that position). Entries appended after the newest anchor are
covered by the chain check only: that tail is the exposure window (see docs/audit.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.audit.anchors import Anchor, InvalidAnchor, anchor_signature_valid
from shared.audit.verify import BreakKind, BrokenLink, VerificationReport, list_chains, walk_chain
from shared.contracts.audit import AuditAnchored
from shared.contracts.base import ContractViolation, outbox_payload
from shared.contracts.registry import parse_as
from shared.events.envelope import Envelope, MessageDecodeError


@dataclass(frozen=True, slots=True)
class AnchoredReport:
    """Outcome of verifying one chain and its anchors."""

    chain: str
    ok: bool
    checked_rows: int
    head_length: int | None
    anchors_checked: int
    anchored_length: int | None
    first_break: BrokenLink | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's `--json` output)."""
        return asdict(self)


def _invalid_anchor(anchors: Sequence[Anchor], public_key: Ed25519PublicKey) -> BrokenLink | None:
    for anchor in anchors:
        if not anchor_signature_valid(public_key, anchor):
            return BrokenLink(
                position=anchor.length,
                seq=None,
                kind=BreakKind.ANCHOR_INVALID,
                expected="a signature by the anchor key",
                found=f"signature {anchor.signature[:16]}... (key id {anchor.key_id})",
                detail="the anchor was forged or altered: its signature does not verify with the public key",
            )
    return None


def _rewritten(anchors: Sequence[Anchor], report: VerificationReport, captured: dict[int, str]) -> BrokenLink | None:
    last_good = 0
    for anchor in anchors:
        if anchor.length > report.checked_rows:
            break
        found = captured.get(anchor.length)
        if found != anchor.head_hash:
            return BrokenLink(
                position=anchor.length,
                seq=None,
                kind=BreakKind.REWRITTEN,
                expected=f"hash {anchor.head_hash} (anchored {anchor.anchored_at.isoformat()})",
                found=f"hash {found}",
                detail=f"entries {last_good + 1}..{anchor.length} were rewritten with recomputed hashes",
            )
        last_good = anchor.length
    return None


def _truncated(anchors: Sequence[Anchor], report: VerificationReport) -> BrokenLink | None:
    longest = anchors[-1]
    if longest.length <= report.checked_rows:
        return None
    return BrokenLink(
        position=report.checked_rows + 1,
        seq=None,
        kind=BreakKind.TRUNCATED,
        expected=f"length >= {longest.length} (anchored {longest.anchored_at.isoformat()})",
        found=f"length {report.checked_rows}",
        detail=f"entries {report.checked_rows + 1}..{longest.length} are gone although they were anchored",
    )


async def verify_chain_with_anchors(
    connection: AsyncConnection | AsyncSession,
    chain: str,
    anchors: Iterable[Anchor],
    public_key: Ed25519PublicKey,
) -> AnchoredReport:
    """Verify `chain` and check it against its `anchors` (others are ignored); report the first break."""
    mine = sorted((anchor for anchor in anchors if anchor.chain == chain), key=lambda anchor: anchor.length)
    report, captured = await walk_chain(connection, chain, frozenset(anchor.length for anchor in mine))
    broken = _invalid_anchor(mine, public_key)
    if broken is None and mine:
        # A rewrite inside the verified prefix comes before any break the chain check found further on.
        broken = _rewritten(mine, report, captured)
    if broken is None:
        broken = report.first_break
    if broken is None and mine:
        broken = _truncated(mine, report)
    return AnchoredReport(
        chain=chain,
        ok=broken is None,
        checked_rows=report.checked_rows,
        head_length=report.head_length,
        anchors_checked=len(mine),
        anchored_length=mine[-1].length if mine else None,
        first_break=broken,
    )


async def verify_all_with_anchors(
    connection: AsyncConnection | AsyncSession,
    anchors: Sequence[Anchor],
    public_key: Ed25519PublicKey,
    *,
    chains: Sequence[str] | None = None,
) -> list[AnchoredReport]:
    """Every chain named by the log, its heads or an anchor (a chain that vanished entirely is still checked)."""
    names = sorted(set(chains)) if chains else sorted(set(await list_chains(connection)) | {a.chain for a in anchors})
    return [await verify_chain_with_anchors(connection, name, anchors, public_key) for name in names]


def anchors_from_envelopes(values: Iterable[bytes | None]) -> tuple[list[Anchor], int]:
    """Anchors carried by `AuditAnchored` envelopes; also how many records could not be read as anchors."""
    anchors: list[Anchor] = []
    unreadable = 0
    for value in values:
        try:
            envelope = Envelope.from_bytes(value)
            if envelope.type != AuditAnchored.TYPE:
                continue
            message = parse_as(AuditAnchored, envelope)
            anchors.append(Anchor.from_payload(outbox_payload(message)))
        except (MessageDecodeError, ContractViolation, InvalidAnchor):
            unreadable += 1
    return anchors, unreadable


async def read_anchor_topic(
    bootstrap: str, topic: str, *, security_protocol: str = "PLAINTEXT", timeout_s: float = 30.0
) -> list[bytes | None]:
    """Every record value of `topic` from the earliest retained offset to the current end (no consumer group)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partition_ids = await _partitions_of(bootstrap, topic, security_protocol)
    if not partition_ids:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        security_protocol=security_protocol,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, partition) for partition in partition_ids]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        return await asyncio.wait_for(_drain(consumer, ends), timeout=timeout_s)
    finally:
        await consumer.stop()


async def _partitions_of(bootstrap: str, topic: str, security_protocol: str) -> list[int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, security_protocol=security_protocol)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []
        [description] = await admin.describe_topics([topic])
        return sorted(int(partition["partition"]) for partition in description["partitions"])
    finally:
        await admin.close()


async def _drain(consumer: Any, ends: dict[Any, int]) -> list[bytes | None]:
    values: list[bytes | None] = []
    remaining = {tp: end for tp, end in ends.items() if end > await consumer.position(tp)}
    while remaining:
        batches = await consumer.getmany(timeout_ms=500)
        for tp, records in batches.items():
            values.extend(record.value for record in records)
            if tp in remaining and await consumer.position(tp) >= remaining[tp]:
                del remaining[tp]
    return values
