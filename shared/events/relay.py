"""The outbox relay: publishes committed outbox rows in id order and marks them sent.

At-least-once: a crash after the broker's ack and before the commit of `sent_at` publishes the batch again;
the consumers' inbox absorbs the duplicates. Several relays may run against one schema (one per replica):
a transaction-scoped advisory lock lets one of them publish at a time, so the messages of one key never
overtake each other across relays, and `FOR UPDATE SKIP LOCKED` keeps a row out of two batches regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Collection

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import sessionmaker_for
from shared.db.uow import UnitOfWork
from shared.events.envelope import HEADER_AUTHORIZATION
from shared.events.producer import EventProducer, OutgoingMessage
from shared.events.retry import RetryStopped, attempts_until_stopped
from shared.events.tables import EventTables
from shared.observability.logging import get_logger
from shared.observability.metrics import counter, gauge

log = get_logger(__name__)

PUBLISHED = counter("aether_outbox_published_total", "Outbox rows published and marked sent.", ["schema"])
PUBLISH_FAILURES = counter(
    "aether_outbox_publish_failures_total", "Relay batches that failed and were retried.", ["schema"]
)
UNSENT = gauge("aether_outbox_unsent", "Outbox rows not yet published (relay lag).", ["schema"])


Credentials = Callable[[], Awaitable[str]]  # a bearer token, fresh enough to publish with


def relay_lock_key(schema: str) -> int:
    """The advisory-lock key (signed 64-bit) that serializes the relays of one schema."""
    digest = hashlib.blake2b(f"aether.outbox-relay:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


RECONNECT_AFTER_FAILURES = 3  # consecutive failed batches before the producer is reconnected


class OutboxRelay:
    """Moves committed outbox rows to Kafka; `run()` loops until stopped, `wake()` skips the idle wait."""

    def __init__(
        self,
        sessions: AsyncEngine | async_sessionmaker[AsyncSession],
        tables: EventTables,
        producer: EventProducer,
        batch_size: int = 200,
        idle_interval_s: float = 0.2,
        *,
        max_backoff_s: float = 5.0,
        publish_timeout_s: float = 30.0,
        linger_s: float = 0.01,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._sessionmaker = sessions if isinstance(sessions, async_sessionmaker) else sessionmaker_for(sessions)
        self._tables = tables
        self._producer = producer
        self._batch_size = batch_size
        self._idle_interval_s = idle_interval_s
        self._max_backoff_s = max_backoff_s
        self._publish_timeout_s = publish_timeout_s
        self._linger_s = linger_s
        self._lock_key = relay_lock_key(tables.schema)
        self._wake = asyncio.Event()
        self._authenticated_topics: frozenset[str] = frozenset()
        self._credentials: Credentials | None = None

    def authenticate(self, topics: Collection[str], credentials: Credentials) -> None:
        """Publish the messages of `topics` with `authorization: Bearer <token>`, the token from `credentials()`
        at publish time (a refused token fails the batch: its rows stay unsent and are retried)."""
        self._authenticated_topics = frozenset(topics)
        self._credentials = credentials

    def wake(self) -> None:
        """Ask the loop to look for new rows now (call after committing outbox rows)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish one batch of unsent rows in id order, wait for the acks, mark them sent; return how many."""
        outbox = self._tables.outbox
        async with UnitOfWork(self._sessionmaker) as uow:
            session = uow.session
            if not await session.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key))):
                return 0  # another relay of this schema is publishing right now
            rows = (
                await session.execute(
                    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.headers)
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            authorization = await self._authorization({row.topic for row in rows})
            messages = [
                OutgoingMessage(
                    topic=row.topic,
                    key=row.key,
                    value=_json_bytes(row.payload),
                    headers=tuple((name, str(value).encode()) for name, value in row.headers.items())
                    + (authorization if row.topic in self._authenticated_topics else ()),
                )
                for row in rows
            ]
            await self._producer.publish_batch(messages, timeout_s=self._publish_timeout_s)
            await session.execute(
                update(outbox).where(outbox.c.id.in_([row.id for row in rows])).values(sent_at=func.now())
            )
        PUBLISHED.labels(self._tables.schema).inc(len(rows))
        return len(rows)

    async def _authorization(self, topics: set[str]) -> tuple[tuple[str, bytes], ...]:
        if self._credentials is None or topics.isdisjoint(self._authenticated_topics):
            return ()
        return ((HEADER_AUTHORIZATION, f"Bearer {await self._credentials()}".encode()),)

    async def _reconnect(self) -> None:
        """A producer that keeps failing after the broker came back (batches from the outage stuck in its queue,
        stale metadata) is replaced by a new connection; rows stay unsent until a batch is acknowledged, so nothing
        is lost or published twice with another effect (the consumers' inbox dedups a re-send)."""
        log.warning("outbox_relay_reconnecting", schema=self._tables.schema)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._producer.stop(), timeout=self._publish_timeout_s)
        with contextlib.suppress(Exception):  # still down: the next attempt tries again
            await self._producer.start()

    async def relay_lag(self) -> int:
        """Count the outbox rows not yet published (also exported as the aether_outbox_unsent gauge)."""
        outbox = self._tables.outbox
        async with UnitOfWork(self._sessionmaker) as uow:
            unsent = await uow.session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            )
        lag = int(unsent or 0)
        UNSENT.labels(self._tables.schema).set(lag)
        return lag

    async def run(self, stop_event: asyncio.Event) -> None:
        """Publish until `stop_event` is set; failures are logged and retried with jittered backoff, never raised."""
        while not stop_event.is_set():
            self._wake.clear()
            published = await self._publish_retrying(stop_event)
            if published is None:
                return
            if published < self._batch_size:
                await _wait_any(stop_event, self._wake, self._idle_interval_s)
                if self._wake.is_set() and self._linger_s > 0:
                    # Let the commits that follow the one that woke us join the same batch: one relay
                    # transaction per burst instead of one per commit.
                    await _wait_any(stop_event, None, self._linger_s)

    async def _publish_retrying(self, stop_event: asyncio.Event) -> int | None:
        """One batch, retried (stamina: exponential backoff with jitter, no limit) until it goes through; None
        when stopped first. A failed batch leaves its rows unsent, so a retry neither drops nor duplicates."""
        failures = 0
        published = 0
        try:
            async for attempt in attempts_until_stopped(
                stop_event, on=Exception, initial_s=self._idle_interval_s, max_s=self._max_backoff_s
            ):
                with attempt:
                    try:
                        published = await self.run_once()
                    except Exception as exc:  # Kafka or PostgreSQL down: rows stay unsent, retry later
                        failures += 1
                        PUBLISH_FAILURES.labels(self._tables.schema).inc()
                        if failures == 1:  # once per outage (the metric counts every attempt)
                            log.warning(
                                "outbox_relay_failed",
                                schema=self._tables.schema,
                                error_type=type(exc).__name__,
                                error=str(exc)[:300],
                            )
                        if failures % RECONNECT_AFTER_FAILURES == 0:
                            await self._reconnect()
                        raise
        except RetryStopped:
            return None
        except Exception:  # only with stamina switched off (stamina.set_active(False)): try again after the idle wait
            return 0
        if failures:
            log.info("outbox_relay_recovered", schema=self._tables.schema, failures=failures)
        return published


async def _wait_any(stop_event: asyncio.Event, wake: asyncio.Event | None, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(stop_event.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
