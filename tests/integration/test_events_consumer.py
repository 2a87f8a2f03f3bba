"""The consumer loop and the inbox against the real PostgreSQL and Kafka: a side effect applied once, offsets
committed only after success, retries, dead letters, contract violations, correlation ids, concurrent claims.

The outbox and its relay are in test_events_outbox.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.contracts.approvals import ApprovalDecided, ApprovalDecision
from shared.contracts.hedge import KillSwitchRecommended
from shared.contracts.registry import parse_as
from shared.db import UnitOfWork
from shared.events import (
    ConsumerLoop,
    Envelope,
    EventProducer,
    EventTables,
    OutboxRelay,
    OutgoingMessage,
    claim,
    header_value,
)
from shared.events.envelope import HEADER_CORRELATION_ID
from shared.observability.correlation import correlation_scope, get_correlation_id
from tests.helpers import eventually
from tests.kit.events import numbered_event, read_all, write_outbox

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]


def effects_table(tables: EventTables) -> sa.Table:
    return tables.metadata.tables[f"{tables.schema}.effects"]


async def _committed_offset(bootstrap: str, group_id: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(tp)
        return committed
    finally:
        await consumer.stop()


def counting_handler(tables: EventTables) -> Handler:
    """The side effect under test: bump a per-event counter in the same transaction as the inbox claim."""

    effects = effects_table(tables)

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        statement = insert(effects).values(business_id=str(envelope.event_id), applied_count=1)
        statement = statement.on_conflict_do_update(
            index_elements=[effects.c.business_id], set_={"applied_count": effects.c.applied_count + 1}
        )
        await session.execute(statement)

    return handle


async def _effects(sessions: async_sessionmaker[AsyncSession], tables: EventTables) -> dict[str, int]:
    effects = effects_table(tables)
    async with UnitOfWork(sessions) as uow:
        rows = await uow.session.execute(select(effects.c.business_id, effects.c.applied_count))
        return {row.business_id: row.applied_count for row in rows}


@asynccontextmanager
async def running(loop: ConsumerLoop) -> AsyncIterator[ConsumerLoop]:
    """Run a consumer loop in the background for the with-block; leave the group on exit."""
    stop = asyncio.Event()
    await loop.start()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await loop.stop()


def consumer_loop(
    kafka_bootstrap: str,
    topic: str,
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    handler: Handler,
    dead_letters: EventProducer,
    *,
    group_id: str | None = None,
    max_attempts: int = 5,
) -> ConsumerLoop:
    return ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=group_id or f"test-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        sessionmaker=sessions,
        tables=tables,
        handler=handler,
        consumer_name="test-consumer",
        dead_letter_producer=dead_letters,
        max_attempts=max_attempts,
        retry_backoff_s=0.02,
    )


# --------------------------------------------------------------------------- consumer and inbox


async def test_redelivered_event_applies_its_side_effect_once(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    twice, once = numbered_event("order-1", 1), numbered_event("order-1", 2)
    for envelope in (twice, twice, once):
        await producer.send(unique_topic, envelope)
    loop = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, counting_handler(tables), producer)
    async with running(loop):
        await eventually(lambda: _processed(loop, 3), message="3 records handled")
    assert loop.stats.applied == 2
    assert loop.stats.duplicates == 1
    assert await _effects(sessions, tables) == {str(twice.event_id): 1, str(once.event_id): 1}


async def _processed(loop: ConsumerLoop, count: int) -> bool:
    stats = loop.stats
    return stats.applied + stats.duplicates + stats.dead_lettered >= count


async def test_failed_handler_leaves_the_offset_uncommitted_and_the_record_comes_again(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    envelope = numbered_event("order-1", 1)
    delivery = await producer.send(unique_topic, envelope)
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    effect = counting_handler(tables)

    async def broken(session: AsyncSession, envelope: Envelope) -> None:
        await effect(session, envelope)  # written, then rolled back with the failure
        raise ConnectionError("downstream unavailable")

    failing = consumer_loop(
        kafka_bootstrap, unique_topic, sessions, tables, broken, producer, group_id=group_id, max_attempts=1_000
    )
    async with running(failing):
        await eventually(lambda: _attempts(failing, 3), message="handler attempted 3 times")
    tp = TopicPartition(unique_topic, delivery.partition)
    assert await _committed_offset(kafka_bootstrap, group_id, tp) is None
    assert await _effects(sessions, tables) == {}

    healthy = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, effect, producer, group_id=group_id)
    async with running(healthy):
        await eventually(lambda: _processed(healthy, 1), message="redelivered record handled")
    assert healthy.stats.applied == 1
    assert await _effects(sessions, tables) == {str(envelope.event_id): 1}
    assert await _committed_offset(kafka_bootstrap, group_id, tp) == delivery.offset + 1


async def test_stopping_mid_retry_keeps_the_record_for_the_next_run_of_the_same_loop(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    envelope = numbered_event("order-1", 1)
    await producer.send(unique_topic, envelope)
    effect = counting_handler(tables)
    broken = [True]

    async def until_repaired(session: AsyncSession, envelope: Envelope) -> None:
        if broken[0]:
            raise ConnectionError("downstream unavailable")
        await effect(session, envelope)

    loop = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, until_repaired, producer, max_attempts=1_000)
    await loop.start()
    try:
        first_stop = asyncio.Event()
        first_run = asyncio.create_task(loop.run(first_stop))
        await eventually(lambda: _attempts(loop, 2), message="handler attempted twice")
        first_stop.set()
        await asyncio.wait_for(first_run, timeout=10)

        broken[0] = False
        second_stop = asyncio.Event()
        second_run = asyncio.create_task(loop.run(second_stop))
        await eventually(lambda: _processed(loop, 1), message="record handled on the second run")
        second_stop.set()
        await asyncio.wait_for(second_run, timeout=10)
    finally:
        await loop.stop()
    assert await _effects(sessions, tables) == {str(envelope.event_id): 1}


async def _attempts(loop: ConsumerLoop, count: int) -> bool:
    return loop.stats.failed_attempts >= count


async def test_poison_and_garbage_go_to_the_dead_letter_topic_and_the_partition_moves_on(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    effect = counting_handler(tables)

    async def picky(session: AsyncSession, envelope: Envelope) -> None:
        await effect(session, envelope)
        if envelope.type == "Poison":
            raise ValueError("cannot handle poison")

    poison = numbered_event("order-1", 1, type="Poison", correlation_id="corr-poison")
    good = numbered_event("order-1", 2)
    poison_at = await producer.send(unique_topic, poison)
    garbage = OutgoingMessage(unique_topic, "order-1", b"{not an envelope", ((HEADER_CORRELATION_ID, b"corr-garbage"),))
    garbage_at = await producer.send_raw(garbage)
    await producer.send(unique_topic, good)

    loop = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, picky, producer, max_attempts=3)
    async with running(loop):
        await eventually(lambda: _processed(loop, 3), message="3 records handled")
    assert (loop.stats.applied, loop.stats.dead_lettered, loop.stats.failed_attempts) == (1, 2, 3)
    assert await _effects(sessions, tables) == {str(good.event_id): 1}

    dead = await read_all(kafka_bootstrap, f"{unique_topic}.dlq")
    by_reason = {header_value(record.headers, "reason"): record for record in dead}
    assert len(dead) == 2
    assert set(by_reason) == {"handler_failed", "undecodable"}
    failed = by_reason["handler_failed"]
    assert Envelope.from_bytes(failed.value) == poison
    assert failed.key == b"order-1"
    assert header_value(failed.headers, "attempts") == "3"
    assert header_value(failed.headers, "error") == "ValueError: cannot handle poison"
    assert header_value(failed.headers, "original_topic") == unique_topic
    assert header_value(failed.headers, "original_partition") == str(poison_at.partition)
    assert header_value(failed.headers, "original_offset") == str(poison_at.offset)
    assert header_value(failed.headers, HEADER_CORRELATION_ID) == "corr-poison"
    assert header_value(failed.headers, "event_type") == "Poison"
    undecodable = by_reason["undecodable"]
    assert undecodable.value == garbage.value
    assert header_value(undecodable.headers, "original_offset") == str(garbage_at.offset)
    assert header_value(undecodable.headers, HEADER_CORRELATION_ID) == "corr-garbage"
    assert header_value(undecodable.headers, "attempts") == "0"


def _decided(decision: str) -> Envelope:
    return Envelope.new(
        type=ApprovalDecided.TYPE,
        producer="hitl",
        aggregate_id="order-1",
        payload={
            "request_id": "req-1",
            "subject_type": "order",
            "subject_id": "order-1",
            "account_id": "acc-1",
            "decision": decision,
            "reason": None,
            "payload_hash": "a" * 64,
            "decided_at": "2026-01-02T03:04:05+00:00",
            "approvers": ["director-1"],
        },
    )


async def test_a_message_that_breaks_its_contract_is_dead_lettered_at_once_and_the_loop_goes_on(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    effect = counting_handler(tables)
    decisions: list[ApprovalDecision] = []

    async def through_the_contract(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type == KillSwitchRecommended.TYPE:
            KillSwitchRecommended.model_validate(envelope.payload)  # pydantic's ValidationError, unwrapped
        decisions.append(parse_as(ApprovalDecided, envelope).decision)
        await effect(session, envelope)

    unknown_decision = _decided("maybe")  # an enum value no consumer knows: never a default branch
    bad_level = Envelope.new(
        type=KillSwitchRecommended.TYPE,
        producer="hedge",
        aggregate_id="acc-1",
        payload={
            "recommendation_id": "rec-1",
            "account_id": "acc-1",
            "level": "explode",
            "drawdown": "0.2",
            "threshold": "0.1",
            "raised_at": "2026-01-02T03:04:05+00:00",
        },
    )
    approved = _decided("approved")
    # One key, one partition: the order on the dead-letter topic is the order sent.
    unknown_at = await producer.send(unique_topic, unknown_decision, key="acc-1")
    await producer.send(unique_topic, bad_level, key="acc-1")
    await producer.send(unique_topic, approved, key="acc-1")

    loop = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, through_the_contract, producer)
    async with running(loop):
        await eventually(lambda: _processed(loop, 3), message="3 records handled")
    assert (loop.stats.applied, loop.stats.dead_lettered, loop.stats.failed_attempts) == (1, 2, 0)
    assert decisions == [ApprovalDecision.APPROVED]
    assert await _effects(sessions, tables) == {str(approved.event_id): 1}

    dead = await read_all(kafka_bootstrap, f"{unique_topic}.dlq")
    assert [Envelope.from_bytes(record.value).event_id for record in dead] == [
        unknown_decision.event_id,
        bad_level.event_id,
    ]
    first, second = dead
    assert {header_value(record.headers, "reason") for record in dead} == {"contract_violation"}
    assert {header_value(record.headers, "attempts") for record in dead} == {"1"}
    first_error = header_value(first.headers, "error") or ""
    assert first_error.startswith("ContractViolation: ApprovalDecided ")
    assert "decision: Input should be 'approved', 'rejected' or 'expired'" in first_error
    second_error = header_value(second.headers, "error") or ""
    assert second_error.startswith("ContractViolation: KillSwitchRecommended ")
    assert "level: Input should be" in second_error
    assert "explode" not in second_error, "the reason names the field, not the (possibly sensitive) input"
    assert header_value(first.headers, "original_offset") == str(unknown_at.offset)


async def test_correlation_id_travels_from_the_request_through_outbox_and_kafka_into_the_handler(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    with correlation_scope("req-4711"):
        envelope = numbered_event("order-1", 1)
    await write_outbox(sessions, tables, unique_topic, [envelope])
    assert await OutboxRelay(sessions, tables, producer).run_once() == 1
    seen: list[str | None] = []

    async def remember(session: AsyncSession, envelope: Envelope) -> None:
        seen.append(get_correlation_id())

    loop = consumer_loop(kafka_bootstrap, unique_topic, sessions, tables, remember, producer)
    async with running(loop):
        await eventually(lambda: _processed(loop, 1), message="record handled")
    assert seen == ["req-4711"]
    assert get_correlation_id() is None, "the id is bound only while handling"


async def test_concurrent_claims_of_one_event_let_exactly_one_win(
    sessions: async_sessionmaker[AsyncSession], tables: EventTables
) -> None:
    envelope = numbered_event("order-1", 1)

    async def try_claim() -> bool:
        async with UnitOfWork(sessions) as uow:
            return await claim(uow.session, tables, consumer="c", envelope=envelope, topic="t", partition=0, offset=1)

    results = await asyncio.gather(*(try_claim() for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    async with UnitOfWork(sessions) as uow:
        other_consumer = await claim(
            uow.session, tables, consumer="d", envelope=envelope, topic="t", partition=0, offset=1
        )
    assert other_consumer, "the inbox is per consumer"
