"""The OMS's authoritative copy of what it enforces: trading states, limits, exit and approval policies.

The owners (risk, hitl) publish every change and, at their start, a full snapshot with a marker on their
compacted controls topics (`shared/contracts/controls.py`). `ControlsFeed` reads those topics from the offsets
kept in `oms.control_offsets` and applies each batch of records in one transaction with the new offsets, so a
record is applied once and never skipped. The pre-trade chain reads the copy in the order's own transaction.

Fail closed, always: before the OMS holds both owners' snapshot markers, or when the global trading state is
missing, or when a record under one of the account's keys broke its contract, `ControlsUnknown` (503
`controls_unknown`) refuses the order. After a snapshot, an account without its own state row trades under the
global state, and an account without a limits row has no limits: the owner has said so by publishing none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.oms import tables as t
from services.oms.approval_policy import ApprovalPolicy
from services.oms.errors import ControlsUnknown
from shared.contracts.base import ContractViolation
from shared.contracts.controls import (
    ApprovalPolicySet,
    ControlKind,
    ControlOwner,
    ControlsSnapshotPublished,
    ExitPolicySet,
    RiskLimitsSet,
    TradingStateSet,
    control_key,
)
from shared.contracts.registry import parse_message
from shared.db import UnitOfWork
from shared.domain.risk_limits import RiskLimits, limits_from_json
from shared.domain.trading_state import effective_state
from shared.domain.types import TradingState
from shared.events.admin import topic_partitions
from shared.events.envelope import Envelope
from shared.observability.logging import get_logger

log = get_logger(__name__)

OWNER_OF: Mapping[ControlKind, ControlOwner] = {
    ControlKind.TRADING_STATE: ControlOwner.RISK,
    ControlKind.RISK_LIMITS: ControlOwner.RISK,
    ControlKind.EXIT_POLICY: ControlOwner.RISK,
    ControlKind.APPROVAL_POLICY: ControlOwner.HITL,
}
SetRecord = TradingStateSet | RiskLimitsSet | ExitPolicySet | ApprovalPolicySet
SET_RECORDS = (TradingStateSet, RiskLimitsSet, ExitPolicySet, ApprovalPolicySet)


@dataclass(frozen=True, slots=True)
class AccountControls:
    """What applies to one account's new orders, read from the OMS's copy in one query."""

    account_id: str
    snapshots: frozenset[ControlOwner]
    global_state: TradingState | None
    account_state: TradingState | None
    limits: RiskLimits | None
    require_explicit_exits: bool
    approval_policy: ApprovalPolicy | None
    violations: tuple[str, ...] = ()

    def check_known(self) -> None:
        """ControlsUnknown unless every control of this account is known (the 503 names what is missing)."""
        missing = sorted(owner.value for owner in ControlOwner if owner not in self.snapshots)
        if missing:
            raise ControlsUnknown(
                f"the OMS has not received the controls snapshot of {', '.join(missing)} yet: orders wait for it"
            )
        if self.global_state is None:
            raise ControlsUnknown("the global trading state is unknown: the risk service's snapshot lacks it")
        if self.violations:
            raise ControlsUnknown(f"controls of {self.account_id} are unreadable: {'; '.join(self.violations)}")

    def trading_state(self) -> TradingState:
        """The stricter of the global and the account's state (ControlsUnknown when not known)."""
        self.check_known()
        return effective_state(s for s in (self.global_state, self.account_state) if s is not None)

    def effective_limits(self) -> RiskLimits | None:
        """The account's limits with the exit policy's `require_explicit_exits`; None: no limits set."""
        self.check_known()
        if self.require_explicit_exits:
            return replace(self.limits or RiskLimits(), require_explicit_exits=True)
        return self.limits


class ControlsRepository:
    """Reads and writes the copy (`oms.controls`, `oms.control_snapshots`, `oms.control_offsets`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def for_account(self, account_id: str) -> AccountControls:
        """The account's controls and the global state, with the owners' snapshot markers."""
        keys = [
            control_key(ControlKind.TRADING_STATE, None),
            *(control_key(kind, account_id) for kind in ControlKind),
        ]
        rows = (
            await self.session.execute(
                sa.select(t.controls.c.kind, t.controls.c.account_id, t.controls.c.value, t.controls.c.violation)
                .where(t.controls.c.control_key.in_(keys))
                .union_all(
                    sa.select(
                        sa.literal("snapshot"),
                        t.control_snapshots.c.owner,
                        sa.cast(sa.null(), t.controls.c.value.type),
                        sa.cast(sa.null(), sa.Text),
                    )
                )
            )
        ).all()
        return _account_controls(account_id, rows)

    async def apply(self, record: SetRecord, event_id: str, now: datetime) -> bool:
        """Keep `record` unless the copy already holds a newer version of its key; True when stored."""
        kind, account_id, version = _identity(record)
        values = {
            "control_key": record.key,
            "kind": kind.value,
            "account_id": account_id,
            "version": version,
            "value": record.model_dump(mode="json"),
            "violation": None,
            "event_id": event_id,
            "received_at": now,
        }
        stmt = insert(t.controls).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.controls.c.control_key],
            set_={name: stmt.excluded[name] for name in values if name != "control_key"},
            # An older version never replaces a newer one; a broken record (violation) is replaced by any valid one.
            where=sa.or_(t.controls.c.violation.is_not(None), t.controls.c.version <= stmt.excluded.version),
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def poison(self, key: str, reason: str, event_id: str, now: datetime) -> bool:
        """A record under `key` broke its contract: the control is unknown until a valid record arrives.

        Keys that do not name a control (`<kind>:global` / `<kind>:account:<id>`) are not stored: False.
        """
        kind_text, _, rest = key.partition(":")
        try:
            kind = ControlKind(kind_text)
        except ValueError:
            return False
        account_id = None if rest == "global" else rest.removeprefix("account:") if rest.startswith("account:") else ""
        if account_id == "":
            return False
        values = {
            "control_key": key,
            "kind": kind.value,
            "account_id": account_id,
            "version": 0,
            "value": None,
            "violation": reason[:500],
            "event_id": event_id,
            "received_at": now,
        }
        stmt = insert(t.controls).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.controls.c.control_key],
            set_={"value": None, "violation": reason[:500], "event_id": event_id, "received_at": now},
        )
        await self.session.execute(stmt)
        return True

    async def snapshot_seen(self, marker: ControlsSnapshotPublished, now: datetime) -> None:
        values = {
            "owner": marker.owner.value,
            "records": marker.records,
            "published_at": marker.published_at,
            "received_at": now,
        }
        stmt = insert(t.control_snapshots).values(values)
        await self.session.execute(
            stmt.on_conflict_do_update(index_elements=[t.control_snapshots.c.owner], set_=values)
        )

    async def snapshots(self) -> frozenset[ControlOwner]:
        rows = (await self.session.execute(sa.select(t.control_snapshots.c.owner))).scalars().all()
        return frozenset(ControlOwner(owner) for owner in rows)

    async def offsets(self, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        rows = (
            await self.session.execute(
                sa.select(
                    t.control_offsets.c.topic, t.control_offsets.c.partition, t.control_offsets.c.next_offset
                ).where(t.control_offsets.c.topic.in_(topics))
            )
        ).all()
        return {(row.topic, row.partition): row.next_offset for row in rows}

    async def save_offset(self, topic: str, partition: int, next_offset: int) -> None:
        stmt = insert(t.control_offsets).values(topic=topic, partition=partition, next_offset=next_offset)
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.control_offsets.c.topic, t.control_offsets.c.partition],
                set_={"next_offset": stmt.excluded.next_offset},
            )
        )


def _identity(record: SetRecord) -> tuple[ControlKind, str | None, int]:
    match record:
        case TradingStateSet():
            return ControlKind.TRADING_STATE, record.account_id, record.version
        case RiskLimitsSet():
            return ControlKind.RISK_LIMITS, record.account_id, record.version
        case ExitPolicySet():
            return ControlKind.EXIT_POLICY, record.account_id, record.policy.version
        case ApprovalPolicySet():
            return ControlKind.APPROVAL_POLICY, record.policy.account_id, record.policy.version
    raise TypeError(f"not a control record: {type(record).__name__}")  # fail closed: no default branch


def _account_controls(account_id: str, rows: Sequence[Any]) -> AccountControls:
    snapshots: set[ControlOwner] = set()
    global_state = account_state = None
    limits, explicit_exits, approval = None, False, None
    violations: list[str] = []
    for kind, row_account, value, violation in rows:
        if kind == "snapshot":
            snapshots.add(ControlOwner(row_account))
            continue
        if violation is not None:
            violations.append(f"{kind}: {violation}")
            continue
        match ControlKind(kind):
            case ControlKind.TRADING_STATE:
                state = TradingStateSet.model_validate(value).state
                if row_account is None:
                    global_state = state
                else:
                    account_state = state
            case ControlKind.RISK_LIMITS:
                limits = limits_from_json(RiskLimitsSet.model_validate(value).limits.model_dump(mode="json"))
            case ControlKind.EXIT_POLICY:
                explicit_exits = ExitPolicySet.model_validate(value).policy.require_explicit_exits
            case ControlKind.APPROVAL_POLICY:
                policy = ApprovalPolicySet.model_validate(value).policy
                approval = ApprovalPolicy(
                    policy.version, policy.notional_threshold, policy.new_instrument, policy.model_confidence_min
                )
    return AccountControls(
        account_id=account_id,
        snapshots=frozenset(snapshots),
        global_state=global_state,
        account_state=account_state,
        limits=limits,
        require_explicit_exits=explicit_exits,
        approval_policy=approval,
        violations=tuple(violations),
    )


class ControlsFeed:
    """Copies the controls topics into `oms.controls`, a batch per transaction with its offsets (no consumer group:
    every OMS process reads every record, like a table)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        bootstrap: str,
        topics: Sequence[str],
        clock: Callable[[], datetime],
        security_protocol: str = "PLAINTEXT",
        retry_s: float = 1.0,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.clock = clock
        self.security_protocol = security_protocol
        self.retry_s = retry_s
        self.applied = 0
        self.violations = 0

    async def run(self, stop_event: asyncio.Event) -> None:
        """Read and apply until `stop_event`; a broker or database outage is retried (logged once per outage)."""
        failing = False
        while not stop_event.is_set():
            try:
                await self._run_once(stop_event)
            except (KafkaError, SQLAlchemyError, OSError) as exc:
                if not failing:
                    log.error("controls_feed_failed", error_type=type(exc).__name__, error=str(exc)[:300])
                failing = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=self.retry_s)
            else:
                return

    async def _run_once(self, stop_event: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            security_protocol=self.security_protocol,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="oms-controls",
        )
        await consumer.start()
        try:
            partitions = await self._assign(consumer, stop_event)
            async with UnitOfWork(self.sessionmaker) as uow:
                stored = await ControlsRepository(uow.session).offsets(self.topics)
            for partition in partitions:
                offset = stored.get((partition.topic, partition.partition))
                if offset is None:
                    await consumer.seek_to_beginning(partition)
                else:
                    consumer.seek(partition, offset)
            while not stop_event.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                if batches:
                    await self._apply(batches)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer, stop_event: asyncio.Event) -> list[TopicPartition]:
        """All partitions of the controls topics (waits until the owners have created them)."""
        while True:
            partitions = await topic_partitions(self.bootstrap, self.topics, self.security_protocol)
            if {p.topic for p in partitions} == set(self.topics):
                consumer.assign(partitions)
                return partitions
            if stop_event.is_set():
                return []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=self.retry_s)

    async def _apply(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = ControlsRepository(uow.session)
            for partition, records in batches.items():
                for record in records:
                    await self._apply_record(repo, partition.topic, record, now)
                await repo.save_offset(partition.topic, partition.partition, records[-1].offset + 1)

    async def _apply_record(self, repo: ControlsRepository, topic: str, record: Any, now: datetime) -> None:
        key = record.key.decode() if isinstance(record.key, bytes) else str(record.key or "")
        event_id = f"{topic}@{record.offset}"
        try:
            envelope = Envelope.from_bytes(record.value)
            event_id = str(envelope.event_id)
            message = parse_message(envelope, topic)
            if not isinstance(message, (*SET_RECORDS, ControlsSnapshotPublished)):
                raise ContractViolation(f"{envelope.type} is not a controls record")
            if message.key != key:
                raise ContractViolation(f"record key {key!r} is not the message's key {message.key!r}")
        except (ContractViolation, ValueError) as exc:
            self.violations += 1
            reason = getattr(exc, "reason", str(exc))
            stored = await repo.poison(key, reason, event_id, now)
            log.error(
                "controls_record_violation",
                topic=topic,
                key=key,
                offset=record.offset,
                reason=reason[:300],
                poisoned=stored,
            )
            return
        if isinstance(message, ControlsSnapshotPublished):
            await repo.snapshot_seen(message, now)
            log.info("controls_snapshot_received", owner=message.owner.value, records=message.records)
        else:
            await repo.apply(message, event_id, now)
        self.applied += 1
