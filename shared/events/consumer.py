"""The consumer loop: inbox claim + handler in one transaction, then the Kafka offset commit.

Per record: decode (undecodable -> dead letter), claim the event in the inbox and run the handler in one
unit of work, commit it, and only then commit the Kafka offset. A crash anywhere before the offset commit
redelivers the record; the inbox turns the redelivery into a no-op (exactly-once effect). A handler that
keeps failing is retried in-process (stamina: exponential backoff with jitter), then dead-lettered to
`<topic>.dlq` with its diagnosis in the headers, and its offset committed so the partition moves on. A
payload that breaks its contract (the handler raises pydantic's ValidationError or a ContractViolation from
`shared.contracts`) is dead-lettered at once with reason `contract_violation`: retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contracts.base import ContractViolation
from shared.db.uow import UnitOfWork
from shared.events.envelope import (
    HEADER_CORRELATION_ID,
    Envelope,
    MessageDecodeError,
    correlation_id_from_headers,
    header_value,
)
from shared.events.inbox import claim
from shared.events.producer import EventProducer, OutgoingMessage
from shared.events.retry import RetryStopped, attempts_until_stopped
from shared.events.tables import EventTables
from shared.events.topics import dead_letter
from shared.observability.correlation import correlation_scope
from shared.observability.logging import get_logger
from shared.observability.metrics import counter, gauge

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
# The Kafka headers of the record a handler is applying (the envelope is the record's value).
_RECORD_HEADERS: ContextVar[tuple[tuple[str, bytes], ...]] = ContextVar("record_headers", default=())


def record_header(name: str) -> str | None:
    """A header of the record the running handler applies (e.g. a command's authorization); None when absent."""
    return header_value(_RECORD_HEADERS.get(), name)


MESSAGES = counter("aether_consumer_messages_total", "Records handled, by outcome.", ["consumer", "outcome"])
LAG = gauge(
    "aether_consumer_lag_records",
    "Records on the broker not yet handled (high watermark of the last fetch minus the position), per partition.",
    ["consumer", "topic", "partition"],
)

# Headers added to a dead letter (the original record's headers are kept too).
DLQ_HEADER_REASON = "reason"
DLQ_HEADER_ERROR = "error"
DLQ_HEADER_ATTEMPTS = "attempts"
DLQ_HEADER_ORIGINAL_TOPIC = "original_topic"
DLQ_HEADER_ORIGINAL_PARTITION = "original_partition"
DLQ_HEADER_ORIGINAL_OFFSET = "original_offset"
_DLQ_HEADERS = frozenset(
    {
        DLQ_HEADER_REASON,
        DLQ_HEADER_ERROR,
        DLQ_HEADER_ATTEMPTS,
        DLQ_HEADER_ORIGINAL_TOPIC,
        DLQ_HEADER_ORIGINAL_PARTITION,
        DLQ_HEADER_ORIGINAL_OFFSET,
        HEADER_CORRELATION_ID,
    }
)


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"
    CONTRACT_VIOLATION = "contract_violation"
    HANDLER_FAILED = "handler_failed"


@dataclass
class ConsumerStats:
    """What one loop has done since it was built (also exported as aether_consumer_messages_total)."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0


class _StopRequested(Exception):
    pass


class _GiveUp(Exception):
    """A handler failed `max_attempts` times while the database answered: a poison message."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Failures:
    count: int = 0


# What a handler raises for a payload that breaks its contract (pydantic's error, or ours from the registry).
_CONTRACT_ERRORS = (ValidationError, ContractViolation)


def _retryable(error: BaseException) -> bool:
    return not isinstance(error, (_GiveUp, *_CONTRACT_ERRORS))


def _as_violation(envelope: Envelope, error: Exception) -> ContractViolation:
    if isinstance(error, ContractViolation):
        return error
    assert isinstance(error, ValidationError)  # noqa: S101 - _CONTRACT_ERRORS has two members
    # Location and message only: pydantic's own text repeats the (possibly sensitive) input.
    return ContractViolation.from_validation(f"{envelope.type} {envelope.event_id}", error)


class ConsumerLoop:
    """Consume `topics` as `group_id`; apply each record once through the inbox of `tables`, then commit its offset."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        handler: Handler,
        consumer_name: str,
        dead_letter_producer: EventProducer,
        max_attempts: int = 5,
        retry_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        client_id: str | None = None,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        poll_timeout_ms: int = 200,
        max_poll_records: int = 100,
        auto_offset_reset: str = "earliest",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._topics = list(topics)
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": client_id or consumer_name,
            "security_protocol": security_protocol,
            "ssl_context": ssl_context,
            "enable_auto_commit": False,
            # Where a group without committed offsets starts: "earliest" (nothing missed) or "latest".
            "auto_offset_reset": auto_offset_reset,
        }
        self._sessionmaker = sessionmaker
        self._tables = tables
        self._handler = handler
        self._name = consumer_name
        self._dead_letters = dead_letter_producer
        self._max_attempts = max_attempts
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        self._poll_timeout_ms = poll_timeout_ms
        self._max_poll_records = max_poll_records
        self._consumer: AIOKafkaConsumer | None = None
        self._lag_series: set[tuple[str, int]] = set()
        self.stats = ConsumerStats()

    async def start(self) -> None:
        """Join the group (a no-op when already started, retryable after a failure)."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(*self._topics, **self._options)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group; records handled but not yet committed come again to the next owner (inbox absorbs them)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        self._forget_lag(set())

    async def run(self, stop_event: asyncio.Event) -> None:
        """Handle records until `stop_event` is set; a record is never skipped without being applied or dead-lettered."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ConsumerLoop.start() has not been called")
        while not stop_event.is_set():
            batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_poll_records)
            next_offsets: dict[Any, int] = {tp: records[0].offset for tp, records in batches.items() if records}
            try:
                for tp, records in batches.items():
                    await self._handle_partition_batch(consumer, tp, records, next_offsets, stop_event)
                await self._export_lag(consumer)
            except BaseException as exc:
                # Fetch positions already moved past what was not handled; move them back for a later run().
                for tp, offset in next_offsets.items():
                    if tp in consumer.assignment():
                        consumer.seek(tp, offset)
                if isinstance(exc, _StopRequested):
                    return
                raise

    async def _export_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag of every assigned partition from what the last fetch said (no broker round trip)."""
        assigned: set[tuple[str, int]] = set()
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:  # nothing fetched from it yet
                continue
            position = await consumer.position(tp)  # known after a fetch: answered locally
            LAG.labels(self._name, tp.topic, str(tp.partition)).set(max(highwater - position, 0))
            assigned.add((tp.topic, tp.partition))
        self._forget_lag(assigned)

    def _forget_lag(self, assigned: set[tuple[str, int]]) -> None:
        # A revoked partition's lag is its new owner's to report: drop the stale series.
        for topic, partition in self._lag_series - assigned:
            LAG.remove(self._name, topic, str(partition))
        self._lag_series = assigned

    async def _handle_partition_batch(
        self,
        consumer: AIOKafkaConsumer,
        tp: Any,
        records: list[Any],
        next_offsets: dict[Any, int],
        stop_event: asyncio.Event,
    ) -> None:
        for record in records:
            if stop_event.is_set():
                raise _StopRequested
            if tp not in consumer.assignment():
                return  # revoked mid-batch: the new owner starts from the committed offset
            await self._handle(record, stop_event)
            next_offsets[tp] = record.offset + 1
            await self._commit(consumer, tp, record.offset + 1)

    async def _handle(self, record: Any, stop_event: asyncio.Event) -> None:
        header_cid = correlation_id_from_headers(record.headers)
        try:
            envelope = Envelope.from_bytes(record.value)
        except MessageDecodeError as exc:
            with correlation_scope(header_cid):
                log.error("consumer_undecodable_record", consumer=self._name, **_where(record), error=str(exc)[:300])
                await self._dead_letter(record, DeadLetterReason.UNDECODABLE, exc, 0, header_cid, stop_event)
            MESSAGES.labels(self._name, Outcome.DEAD_LETTERED.value).inc()
            return
        correlation_id = header_cid or envelope.correlation_id
        with correlation_scope(correlation_id):
            outcome = await self._apply_with_retries(record, envelope, correlation_id, stop_event)
        MESSAGES.labels(self._name, outcome.value).inc()

    async def _apply_with_retries(
        self, record: Any, envelope: Envelope, correlation_id: str, stop_event: asyncio.Event
    ) -> Outcome:
        failures = _Failures()
        try:
            async for attempt in attempts_until_stopped(
                stop_event, on=_retryable, initial_s=self._retry_backoff_s, max_s=self._max_backoff_s
            ):
                with attempt:
                    claimed = await self._attempt(record, envelope, failures)
        except RetryStopped:
            raise _StopRequested from None
        except _CONTRACT_ERRORS as exc:
            # A payload that breaks its contract fails the same way every time: dead-letter it at once.
            violation = _as_violation(envelope, exc)
            log.error(
                "consumer_contract_violation",
                consumer=self._name,
                event_id=str(envelope.event_id),
                event_type=envelope.type,
                error=violation.reason[:300],
            )
            await self._dead_letter(
                record, DeadLetterReason.CONTRACT_VIOLATION, violation, failures.count + 1, correlation_id, stop_event
            )
            return Outcome.DEAD_LETTERED
        except _GiveUp as give_up:
            await self._dead_letter(
                record, DeadLetterReason.HANDLER_FAILED, give_up.error, failures.count, correlation_id, stop_event
            )
            return Outcome.DEAD_LETTERED
        if claimed:
            self.stats.applied += 1
            return Outcome.APPLIED
        self.stats.duplicates += 1
        log.debug("consumer_duplicate_absorbed", consumer=self._name, event_id=str(envelope.event_id))
        return Outcome.DUPLICATE

    async def _attempt(self, record: Any, envelope: Envelope, failures: _Failures) -> bool:
        try:
            return await self._apply(record, envelope)
        except _CONTRACT_ERRORS:
            raise
        except Exception as exc:  # any other handler failure is retried, then dead-lettered
            failures.count += 1
            self.stats.failed_attempts += 1
            log.warning(
                "consumer_handler_failed",
                consumer=self._name,
                event_id=str(envelope.event_id),
                event_type=envelope.type,
                attempt=failures.count,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
            # With the database down every message would fail: that is an outage, not a poison message.
            if failures.count >= self._max_attempts and await self._database_answers():
                raise _GiveUp(exc) from exc
            raise

    async def _apply(self, record: Any, envelope: Envelope) -> bool:
        async with UnitOfWork(self._sessionmaker) as uow:
            claimed = await claim(
                uow.session,
                self._tables,
                consumer=self._name,
                envelope=envelope,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            if claimed:
                headers = _RECORD_HEADERS.set(tuple(record.headers or ()))
                try:
                    await self._handler(uow.session, envelope)
                finally:
                    _RECORD_HEADERS.reset(headers)
        return claimed

    async def _dead_letter(
        self,
        record: Any,
        reason: DeadLetterReason,
        error: BaseException,
        attempts: int,
        correlation_id: str | None,
        stop_event: asyncio.Event,
    ) -> None:
        headers = [(name, value) for name, value in record.headers or () if name not in _DLQ_HEADERS]
        headers += [
            (DLQ_HEADER_REASON, reason.value.encode()),
            (DLQ_HEADER_ERROR, f"{type(error).__name__}: {error}"[:1_000].encode()),
            (DLQ_HEADER_ATTEMPTS, str(attempts).encode()),
            (DLQ_HEADER_ORIGINAL_TOPIC, record.topic.encode()),
            (DLQ_HEADER_ORIGINAL_PARTITION, str(record.partition).encode()),
            (DLQ_HEADER_ORIGINAL_OFFSET, str(record.offset).encode()),
        ]
        if correlation_id is not None:
            headers.append((HEADER_CORRELATION_ID, correlation_id.encode()))
        message = OutgoingMessage(dead_letter(record.topic), record.key, record.value, tuple(headers))
        # The offset is committed only once the dead letter is safely on the broker: retry until it is.
        try:
            async for attempt in attempts_until_stopped(
                stop_event, on=Exception, initial_s=self._retry_backoff_s, max_s=self._max_backoff_s
            ):
                with attempt:
                    await self._send_dead_letter(message)
        except RetryStopped:
            raise _StopRequested from None
        self.stats.dead_lettered += 1
        log.error(
            "consumer_dead_lettered", consumer=self._name, reason=reason.value, attempts=attempts, **_where(record)
        )

    async def _send_dead_letter(self, message: OutgoingMessage) -> None:
        try:
            await self._dead_letters.send_raw(message)
        except Exception as exc:  # keep the record until its dead letter is stored
            log.error("consumer_dead_letter_failed", consumer=self._name, error=str(exc)[:300])
            raise

    async def _database_answers(self) -> bool:
        try:
            async with UnitOfWork(self._sessionmaker) as uow:
                await uow.session.execute(text("SELECT 1"))
        except Exception:  # any failure means "not reachable"
            return False
        return True

    async def _commit(self, consumer: AIOKafkaConsumer, tp: Any, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:
            # Rebalanced away or coordinator gone: the record comes again and the inbox absorbs it.
            log.warning("consumer_commit_failed", consumer=self._name, partition=str(tp), error=str(exc)[:300])


def _where(record: Any) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}
