"""The owners' side of the controls topics (shared/contracts/controls.py): a change goes to the outbox in the
transaction that commits it, and at start the owner publishes everything it holds, then its snapshot marker.

`publish_control` is called inside the owner's unit of work; `SnapshotPublisher.run` is the owner's start-up
worker: it makes sure the topic exists compacted, then writes the snapshot (every record and the marker) in one
transaction, retrying with backoff while Kafka or PostgreSQL is down. Nothing is lost: the outbox relay carries
both to Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contracts.controls import ControlOwner, ControlRecord, ControlsSnapshotPublished
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.events import add_to_outbox
from shared.events.admin import ensure_compacted_topic
from shared.events.tables import EventTables
from shared.observability.logging import get_logger

log = get_logger(__name__)

MAX_RETRY_S = 30.0


async def publish_control(
    session: AsyncSession, tables: EventTables, topic: str, record: ControlRecord, *, producer: str, now: datetime
) -> None:
    """Add one controls record to the outbox of the caller's transaction, keyed by its control key."""
    envelope = new_envelope(record, producer=producer, aggregate_id=record.key, now=now)
    await add_to_outbox(session, tables, topic=topic, envelope=envelope, key=record.key)


@dataclass
class SnapshotPublisher:
    """Publishes an owner's whole state at start (see the module docstring)."""

    owner: ControlOwner
    topic: str
    bootstrap: str
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    clock: Callable[[], datetime]
    records: Callable[[AsyncSession], Awaitable[Sequence[ControlRecord]]]
    on_commit: Callable[[], None] = lambda: None
    published: int | None = None  # records in the snapshot once it is committed

    async def run(self, stop_event: asyncio.Event) -> None:
        """Ensure the topic, publish the snapshot; retry (1 s doubling to 30 s, logged once) until both succeed."""
        delay, failing = 1.0, False
        while not stop_event.is_set():
            try:
                await ensure_compacted_topic(self.bootstrap, self.topic)
                self.published = await self.publish_once()
                log.info("controls_snapshot_published", owner=self.owner.value, records=self.published)
                return
            except (KafkaError, SQLAlchemyError, OSError) as exc:
                if not failing:
                    log.error("controls_snapshot_failed", owner=self.owner.value, error_type=type(exc).__name__)
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def publish_once(self) -> int:
        """Every current record and the marker, in one transaction; the number of records."""
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            uow.after_commit(self.on_commit)
            records = await self.records(uow.session)
            for record in records:
                await publish_control(uow.session, self.tables, self.topic, record, producer=self.owner.value, now=now)
            marker = ControlsSnapshotPublished(owner=self.owner, records=len(records), published_at=now)
            await publish_control(uow.session, self.tables, self.topic, marker, producer=self.owner.value, now=now)
        return len(records)
