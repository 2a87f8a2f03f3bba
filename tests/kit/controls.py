"""The controls the OMS enforces, published as their owners publish them (shared/contracts/controls.py).

`open_controls` gives a test its own pair of compacted controls topics; `Controls.publish_defaults()` publishes
what the risk and approval services publish at their first start (the global state ACTIVE, no account controls,
both snapshot markers), and the `set_*` methods publish one change as the owner would. `applied` waits until an
OMS database holds a record. `seed_defaults` writes the defaults straight into an OMS database through the OMS's
own repository, for harnesses that drive the use cases without the OMS's Kafka workers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.oms import tables as oms_tables
from services.oms.config import OmsSettings
from services.oms.controls import ControlsRepository
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.controls import (
    ApprovalPolicySet,
    ControlOwner,
    ControlRecord,
    ControlsSnapshotPublished,
    ExitPolicySet,
    RiskLimitsSet,
    TradingStateSet,
)
from shared.contracts.registry import new_envelope
from shared.contracts.risk import ExitPolicyValue, RiskLimitsValue, TradingScope
from shared.db import UnitOfWork
from shared.domain.types import TradingState
from shared.events import EventProducer
from shared.events.admin import ensure_compacted_topic
from shared.events.producer import OutgoingMessage
from tests.helpers import eventually

NEVER = datetime(1970, 1, 1, tzinfo=UTC)
GLOBAL_ACTIVE = TradingStateSet(
    scope=TradingScope.GLOBAL, account_id=None, state=TradingState.ACTIVE, version=0, changed_at=NEVER
)


@dataclass
class Controls:
    """Publishes controls on a test's own topics (`settings` points an OMS, risk or hitl service at them)."""

    producer: EventProducer
    risk_topic: str
    hitl_topic: str
    versions: dict[str, int]

    @property
    def settings(self) -> dict[str, str]:
        return {"risk_controls_topic": self.risk_topic, "hitl_controls_topic": self.hitl_topic}

    async def publish(self, record: ControlRecord, owner: ControlOwner) -> None:
        topic = self.risk_topic if owner is ControlOwner.RISK else self.hitl_topic
        envelope = new_envelope(record, producer=owner.value, aggregate_id=record.key)
        await self.producer.send(topic, envelope, key=record.key)

    async def publish_raw(self, owner: ControlOwner, key: str, value: bytes) -> None:
        """A record that is not what its owner would publish (a broken payload), under `key`."""
        topic = self.risk_topic if owner is ControlOwner.RISK else self.hitl_topic
        await self.producer.send_raw(OutgoingMessage(topic=topic, key=key, value=value))

    async def publish_defaults(self) -> None:
        """What a risk and an approval service with nothing stored publish at start."""
        await self.publish(GLOBAL_ACTIVE, ControlOwner.RISK)
        await self.snapshot_markers()

    async def snapshot_markers(self, risk_records: int = 1, hitl_records: int = 0) -> None:
        now = utc_now()
        risk = ControlsSnapshotPublished(owner=ControlOwner.RISK, records=risk_records, published_at=now)
        hitl = ControlsSnapshotPublished(owner=ControlOwner.HITL, records=hitl_records, published_at=now)
        await self.publish(risk, ControlOwner.RISK)
        await self.publish(hitl, ControlOwner.HITL)

    def _next(self, key: str) -> int:
        self.versions[key] = self.versions.get(key, 0) + 1
        return self.versions[key]

    async def set_state(self, account_id: str | None, state: TradingState) -> TradingStateSet:
        scope = TradingScope.GLOBAL if account_id is None else TradingScope.ACCOUNT
        probe = TradingStateSet(scope=scope, account_id=account_id, state=state, version=0, changed_at=NEVER)
        record = probe.model_copy(update={"version": self._next(probe.key), "changed_at": utc_now()})
        await self.publish(record, ControlOwner.RISK)
        return record

    async def set_limits(self, account_id: str, values: Mapping[str, Any]) -> RiskLimitsSet:
        limits = RiskLimitsValue.model_validate(dict(values))
        probe = RiskLimitsSet(account_id=account_id, version=0, limits=limits)
        record = probe.model_copy(update={"version": self._next(probe.key)})
        await self.publish(record, ControlOwner.RISK)
        return record

    async def set_exit_policy(self, account_id: str, values: Mapping[str, Any]) -> ExitPolicySet:
        key = ExitPolicySet(account_id=account_id, policy=ExitPolicyValue.model_validate({**values, "version": 1})).key
        policy = ExitPolicyValue.model_validate({**values, "version": self._next(key)})
        record = ExitPolicySet(account_id=account_id, policy=policy)
        await self.publish(record, ControlOwner.RISK)
        return record

    async def set_approval_policy(self, account_id: str, rules: Mapping[str, Any]) -> ApprovalPolicySet:
        def value(version: int) -> ApprovalPolicyValue:
            return ApprovalPolicyValue.model_validate(
                {**rules, "account_id": account_id, "version": version, "created_at": utc_now()}
            )

        record = ApprovalPolicySet(policy=value(self._next(ApprovalPolicySet(policy=value(1)).key)))
        await self.publish(record, ControlOwner.HITL)
        return record


async def applied(database_url: str, record: ControlRecord, *, timeout_s: float = 20.0) -> None:
    """Wait until the OMS database at `database_url` holds `record` (its key at its version, or the marker)."""
    engine = create_async_engine(database_url)
    try:
        if isinstance(record, ControlsSnapshotPublished):
            query = sa.select(sa.func.count()).where(oms_tables.control_snapshots.c.owner == record.owner.value)
        else:
            version = (
                record.policy.version if isinstance(record, (ExitPolicySet, ApprovalPolicySet)) else record.version
            )
            query = sa.select(sa.func.count()).where(
                oms_tables.controls.c.control_key == record.key,
                oms_tables.controls.c.version >= version,
                oms_tables.controls.c.violation.is_(None),
            )

        async def present() -> bool:
            async with engine.connect() as connection:
                return bool(await connection.scalar(query))

        await eventually(present, timeout_s=timeout_s, message=f"{record.key} applied by the OMS")
    finally:
        await engine.dispose()


async def seed_defaults(engine: AsyncEngine) -> None:
    """The risk and hitl defaults written into an OMS database through `ControlsRepository` (no Kafka)."""
    now = utc_now()
    async with UnitOfWork(async_sessionmaker(engine, expire_on_commit=False)) as uow:
        repo = ControlsRepository(uow.session)
        await repo.apply(GLOBAL_ACTIVE, "seed", now)
        for owner in ControlOwner:
            await repo.snapshot_seen(ControlsSnapshotPublished(owner=owner, records=0, published_at=now), now)


def oms_settings_on(settings: AetherSettings, controls: Controls) -> OmsSettings:
    """The OMS's settings from platform-wide `settings`, reading its controls from `controls`' topics."""
    return OmsSettings(**settings.model_dump(exclude={"service_name"}), **controls.settings)


def private_controls_topics() -> dict[str, str]:
    """OMS settings naming controls topics of one run (for harnesses that seed the copy with `seed_defaults`)."""
    run = uuid.uuid4().hex[:12]
    return {
        "risk_controls_topic": f"test.{run}.risk-controls.v1",
        "hitl_controls_topic": f"test.{run}.hitl-controls.v1",
    }


@asynccontextmanager
async def open_controls(kafka_bootstrap: str, *, defaults: bool = True) -> AsyncIterator[Controls]:
    """Fresh compacted controls topics and a producer on them (the defaults published unless `defaults=False`)."""
    run = uuid.uuid4().hex[:12]
    risk_topic, hitl_topic = f"test.{run}.risk-controls.v1", f"test.{run}.hitl-controls.v1"
    for topic in (risk_topic, hitl_topic):
        await ensure_compacted_topic(kafka_bootstrap, topic)
    producer = EventProducer(kafka_bootstrap, client_id="test-controls")
    await producer.start()
    try:
        controls = Controls(producer, risk_topic, hitl_topic, {})
        if defaults:
            await controls.publish_defaults()
        yield controls
    finally:
        await producer.stop()
