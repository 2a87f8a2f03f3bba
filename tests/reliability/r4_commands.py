"""R4, part 2 (commands through Kafka): SubmitOrder and CancelOrder commands published 1 to 3 times, re-issued,
reordered, consumed by the OMS's command handler, then replayed from the start by a consumer of a new group.

`command_part` returns the counts and the violations for the R4 record (test_r4_redelivery.py, whose
docstring tells the whole scenario); the redelivery shape comes from part 1 (r4_venue_stream.py).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oms.command_auth import CommandCredentials
from services.oms.consumers import handle_command, resolve_stale
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.events import ConsumerLoop, Envelope, EventProducer
from shared.events.consumer import record_header
from shared.events.envelope import HEADER_AUTHORIZATION
from shared.events.producer import OutgoingMessage
from shared.events.tables import event_tables
from tests.helpers import eventually
from tests.kit.auth import VERIFIER, worker_authorization
from tests.reliability.oms_crash_worker import divergences
from tests.reliability.oms_harness import (
    SteppingClock,
    base_asset,
    book_levels,
    oms_settings,
    paper_stack,
    scaled,
    unique_symbol,
)
from tests.reliability.r4_venue_stream import DEPOSIT_USD, LATE_COPY_SPAN, MAX_COPIES, REORDER_RATE

COMMANDS = scaled(160)
COMMAND_ACCOUNTS = 4
DEPOSIT_BASE = Decimal("10000")


@dataclass
class CommandPlan:
    """The distinct commands (event ids) and the records published for them (1-3 copies of each)."""

    records: list[Envelope] = field(default_factory=list)
    distinct: int = 0
    reissued_same_body: int = 0
    # client id -> the event ids of its two SubmitOrders with different bodies: whichever comes second is refused
    other_body: dict[str, tuple[str, str]] = field(default_factory=dict)
    swaps: int = 0

    def add(self, envelope: Envelope, rng: random.Random) -> None:
        self.distinct += 1
        self.records += [envelope] * rng.randint(1, MAX_COPIES)

    def delivered(self, rng: random.Random) -> list[Envelope]:
        """Half the records moved up to LATE_COPY_SPAN later, then ~5 % of neighbours swapped."""
        slots = []
        for index, envelope in enumerate(self.records):
            late = rng.randint(0, LATE_COPY_SPAN) + rng.random() if rng.random() < 0.5 else 0
            slots.append((index + late, index, envelope))
        ordered = [envelope for _, _, envelope in sorted(slots, key=lambda slot: (slot[0], slot[1]))]
        for index in range(len(ordered) - 1):
            if rng.random() < REORDER_RATE:
                ordered[index], ordered[index + 1] = ordered[index + 1], ordered[index]
                self.swaps += 1
        return ordered


def command(kind: str, aggregate_id: str, payload: dict[str, Any]) -> Envelope:
    return Envelope.new(type=kind, producer="strategy", aggregate_id=aggregate_id, payload=payload)


def submit_plan(
    rng: random.Random, accounts: list[str], symbol: str, seed: int
) -> tuple[CommandPlan, list[OrderCreate]]:
    """Resting limit orders as SubmitOrder commands; some re-issued (same body, or another body)."""
    plan, bodies = CommandPlan(), []
    for n in range(COMMANDS):
        side = rng.choice(["buy", "sell"])
        price = Decimal(rng.randint(950, 995) if side == "buy" else rng.randint(1005, 1050)) / 10
        body = OrderCreate.model_validate(
            {
                "account_id": rng.choice(accounts),
                "client_order_id": f"r4c-{seed}-{n:05d}",
                "symbol": symbol,
                "side": side,
                "type": "limit",
                "quantity": str(Decimal(rng.randint(1, 50)) / 100),
                "limit_price": str(price),
            }
        )
        bodies.append(body)
        payload: dict[str, Any] = {"order": body.model_dump(mode="json")}
        original = command("SubmitOrder", body.client_order_id, payload)
        plan.add(original, rng)
        draw = rng.random()
        if draw < 0.1:  # the producer rebuilt its envelope after a timeout: new event id, same order
            plan.add(command("SubmitOrder", body.client_order_id, payload), rng)
            plan.reissued_same_body += 1
        elif draw < 0.15:  # the client id reused for another order
            other = command("SubmitOrder", body.client_order_id, {"order": {**payload["order"], "quantity": "0.51"}})
            plan.add(other, rng)
            plan.other_body[body.client_order_id] = (str(original.event_id), str(other.event_id))
    return plan, bodies


def cancel_plan(rng: random.Random, bodies: list[OrderCreate]) -> tuple[CommandPlan, list[OrderCreate]]:
    """CancelOrder for a third of the orders, by client id; some re-issued under a new event id."""
    plan = CommandPlan()
    chosen = rng.sample(bodies, len(bodies) // 3)
    for body in chosen:
        payload: dict[str, Any] = {"account_id": body.account_id, "client_order_id": body.client_order_id}
        plan.add(command("CancelOrder", body.client_order_id, payload), rng)
        if rng.random() < 0.2:
            plan.add(command("CancelOrder", body.client_order_id, payload), rng)
            plan.reissued_same_body += 1
    return plan, chosen


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def publish(producer: EventProducer, topic: str, records: Sequence[Envelope]) -> None:
    """As the hedge worker's relay publishes: each command with its service identity's token."""
    for envelope in records:  # one by one: the delivery order is the partition's order
        headers = (*envelope.kafka_headers(), worker_authorization("hedge"))
        await producer.send_raw(OutgoingMessage(topic, envelope.aggregate_id, envelope.to_bytes(), headers))


@asynccontextmanager
async def consuming(
    bootstrap: str, topic: str, service: OrderService, producer: EventProducer, group_id: str
) -> AsyncIterator[ConsumerLoop]:
    """The OMS's command consumer (`handle_command` through the inbox) on `topic`, running for the with-block."""
    loop = ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        sessionmaker=service.sessionmaker,
        tables=event_tables("oms"),
        handler=lambda session, envelope: handle_command(
            service, session, envelope, CommandCredentials(VERIFIER, record_header(HEADER_AUTHORIZATION))
        ),
        consumer_name="oms.commands",
        dead_letter_producer=producer,
        retry_backoff_s=0.02,
    )
    stop = asyncio.Event()
    await loop.start()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await loop.stop()


async def wait_consumed(loop: ConsumerLoop, count: int) -> None:
    async def probe() -> bool:
        stats = loop.stats
        return stats.applied + stats.duplicates + stats.dead_lettered >= count

    await eventually(probe, timeout_s=90, message=f"{count} command records consumed")


async def command_rows(engine: AsyncEngine, accounts: list[str]) -> dict[str, Any]:
    """Orders and venue orders per client id, order events per (client id, type), rejections per command."""
    async with engine.connect() as conn:
        oms = await conn.execute(
            sa.text("SELECT client_order_id, count(*) FROM oms.orders WHERE account_id = ANY(:a) GROUP BY 1"),
            {"a": accounts},
        )
        venue = await conn.execute(
            sa.text("SELECT client_order_id, count(*) FROM paper.orders WHERE account_id = ANY(:a) GROUP BY 1"),
            {"a": accounts},
        )
        events = await conn.execute(
            sa.text(
                "SELECT o.client_order_id, e.event_type, count(*) FROM oms.order_events e"
                " JOIN oms.orders o USING (order_id) WHERE o.account_id = ANY(:a) GROUP BY 1, 2"
            ),
            {"a": accounts},
        )
        rejected = await conn.execute(
            sa.text(
                "SELECT payload->>'causation_id', count(*) FROM oms.outbox WHERE event_type = 'CommandRejected' GROUP BY 1"
            )
        )
        return {
            "oms": {r[0]: r[1] for r in oms},
            "venue": {r[0]: r[1] for r in venue},
            "events": {(r[0], r[1]): r[2] for r in events},
            "rejected": {r[0]: r[1] for r in rejected},
        }


def command_violations(
    rows: dict[str, Any],
    submits: CommandPlan,
    bodies: list[OrderCreate],
    canceled: list[OrderCreate],
    venue_submits: Counter[tuple[str, str]],
    venue_cancels: Counter[tuple[str, str]],
) -> dict[str, list[str]]:
    cids = [body.client_order_id for body in bodies]
    canceled_ids = {body.client_order_id for body in canceled}
    events = rows["events"]
    submitted_twice = [c for c in cids if events.get((c, "OrderSubmitted"), 0) != 1]
    cancel_effects = [
        c
        for c in cids
        if (events.get((c, "OrderCanceled"), 0), events.get((c, "OrderCancelRequested"), 0))
        != ((1, 1) if c in canceled_ids else (0, 0))
    ]
    rejections = rows["rejected"]
    wrong_rejections = [
        c for c, pair in submits.other_body.items() if sorted(rejections.get(e, 0) for e in pair) != [0, 1]
    ]
    expected_causes = {e for pair in submits.other_body.values() for e in pair}
    return {
        "orders_not_once": [c for c in cids if rows["oms"].get(c, 0) != 1],
        "unexpected_orders": [c for c in rows["oms"] if c not in set(cids)],
        "venue_orders_not_once": [c for c in cids if rows["venue"].get(c, 0) != 1],
        "venue_submits_not_once": [
            b.client_order_id for b in bodies if venue_submits[(b.account_id, b.client_order_id)] != 1
        ],
        "submitted_not_once": submitted_twice,
        "cancel_effect_not_once": cancel_effects,
        "venue_cancels_not_once": [
            b.client_order_id
            for b in bodies
            if venue_cancels[(b.account_id, b.client_order_id)] != (1 if b.client_order_id in canceled_ids else 0)
        ],
        "other_body_not_rejected_once": wrong_rejections,
        "unexpected_rejections": [e for e in rejections if e not in expected_causes],
    }


async def command_part(
    database_url: str, redis_url: str, kafka_bootstrap: str, seed: int, engine: AsyncEngine
) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    symbol = unique_symbol("RC")
    clock = SteppingClock()
    settings = oms_settings(database_url, redis_url, kafka_bootstrap, [symbol])
    accounts = [f"r4c-{seed}-{i}" for i in range(COMMAND_ACCOUNTS)]
    topic = f"test.r4-commands.{uuid.uuid4().hex[:10]}.v1"
    await create_topic(kafka_bootstrap, topic, partitions=3)
    producer = EventProducer(kafka_bootstrap, "r4-strategy")
    await producer.start()
    try:
        async with paper_stack(settings, clock) as stack:
            await stack.set_book(symbol, *book_levels())
            for account in accounts:
                await stack.fund(account, {"USD": DEPOSIT_USD, base_asset(symbol): DEPOSIT_BASE})
            service = stack.service(clock=clock)
            submits, bodies = submit_plan(rng, accounts, symbol, seed)
            cancels, canceled = cancel_plan(rng, bodies)
            submit_records, cancel_records = submits.delivered(rng), cancels.delivered(rng)
            started = time.perf_counter()
            async with consuming(kafka_bootstrap, topic, service, producer, f"r4-{uuid.uuid4().hex[:8]}") as loop:
                await publish(producer, topic, submit_records)
                await wait_consumed(loop, len(submit_records))
                clock.skip(settings.resolve_after_s + 1)  # the recorded orders are now stale: the resolver sends them
                sent = await resolve_stale(service)
                clock.skip(settings.resolve_after_s + 1)
                left = await resolve_stale(service)
                await publish(producer, topic, cancel_records)
                await wait_consumed(loop, len(submit_records) + len(cancel_records))
                first = loop.stats
            consume_s = time.perf_counter() - started
            total = len(submit_records) + len(cancel_records)
            started = time.perf_counter()
            # Offsets lost (a rebalance to a consumer of a new group): the whole topic comes again.
            async with consuming(
                kafka_bootstrap, topic, service, producer, f"r4-replay-{uuid.uuid4().hex[:8]}"
            ) as again:
                await wait_consumed(again, total)
                replay = again.stats
            replay_s = time.perf_counter() - started
            rows = await command_rows(engine, accounts)
            found = await divergences(engine, accounts)
            calls = stack.counting.calls
            violations = command_violations(rows, submits, bodies, canceled, calls.submits, calls.cancels)
    finally:
        await producer.stop()
    distinct = submits.distinct + cancels.distinct
    counts = {name: len(items) for name, items in violations.items()}
    counts.update(
        first_pass_not_distinct=abs(first.applied - distinct),
        replay_applied=replay.applied,
        resolver_left_submitted=left,
        dead_lettered=first.dead_lettered + replay.dead_lettered,
        state_not_venue=found.total,
    )
    return {
        "submit_commands": submits.distinct,
        "cancel_commands": cancels.distinct,
        "records": total,
        "redelivered_records": total - distinct,
        "reissued_same_body": submits.reissued_same_body + cancels.reissued_same_body,
        "reissued_other_body": len(submits.other_body),
        "reordered_pairs": submits.swaps + cancels.swaps,
        "applied": first.applied,
        "absorbed_duplicates": first.duplicates,
        "replayed_records": total,
        "replay_absorbed": replay.duplicates,
        "resolver_sent": sent,
        "venue_submit_calls": sum(calls.submits.values()),
        "venue_cancel_calls": sum(calls.cancels.values()),
        "consume_s": round(consume_s, 2),
        "replay_s": round(replay_s, 2),
        "divergences": found.summary(),
        "_violations": counts,
        "_examples": [item for items in violations.values() for item in items][:5],
    }
