"""R3: no event is lost between the database and Kafka, and none is applied twice, when the relay is SIGKILLed.

1,000 events are written to an outbox in 100 transactions of 10 while a relay in a separate process
(`outbox_worker.py`) is killed with SIGKILL 20 times at seeded random moments and restarted each time.
A ConsumerLoop applies each event's side effect (a counter keyed by business id) in the same transaction
as its inbox claim. Kafka sees duplicates (rows published but not marked sent when the relay died); the
inbox must absorb every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import UnitOfWork, sessionmaker_for
from shared.events import ConsumerLoop, Envelope, EventProducer, EventTables, add_to_outbox
from tests.helpers import eventually
from tests.reliability.outbox_kit import (
    applied_effects,
    effect_applier,
    out_of_order_applications,
    read_topic,
    unsent_rows,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTS = 1_000
EVENTS_PER_TRANSACTION = 10
KILLS = 20
AGGREGATES = 25
RELAY_BATCH_SIZE = 10
# Injected pause between the broker's acks and the `sent_at` update: the window the kills aim at.
ACK_TO_MARK_DELAY_MS = 30
MAX_KILL_DELAY_S = 0.4
MAX_WRITE_PAUSE_S = 0.4


async def write_events(
    sessions: async_sessionmaker[AsyncSession], tables: EventTables, topic: str, rng: random.Random
) -> None:
    """100 transactions of 10 events, each with a business id and a per-aggregate sequence number."""
    seq: dict[str, int] = defaultdict(int)
    for first in range(0, EVENTS, EVENTS_PER_TRANSACTION):
        async with UnitOfWork(sessions) as uow:
            for number in range(first, first + EVENTS_PER_TRANSACTION):
                aggregate = f"acct-{rng.randrange(AGGREGATES):02d}"
                seq[aggregate] += 1
                envelope = Envelope.new(
                    type="BalanceChanged",
                    producer="r3",
                    aggregate_id=aggregate,
                    payload={"business_id": f"biz-{number:04d}", "seq": seq[aggregate], "delta": "1.5"},
                )
                await add_to_outbox(uow.session, tables, topic=topic, envelope=envelope)
        await asyncio.sleep(rng.uniform(0, MAX_WRITE_PAUSE_S))  # workload pacing, not a wait for a condition


class RelayProcesses:
    """Starts `outbox_worker.py` processes and kills them; counts what it did."""

    def __init__(self, database_url: str, bootstrap: str, schema: str, log_path: Path) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "tests.reliability.outbox_worker",
            "--bootstrap",
            bootstrap,
            "--schema",
            schema,
            "--batch-size",
            str(RELAY_BATCH_SIZE),
            "--ack-to-mark-delay-ms",
            str(ACK_TO_MARK_DELAY_MS),
        ]
        self._env = {**os.environ, "AETHER_DATABASE_URL": database_url}
        self._log_path = log_path
        self.current: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0

    async def start(self) -> None:
        with self._log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *self._argv, cwd=REPO_ROOT, env=self._env, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        self.current = process
        self.starts += 1
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert line == b"ready\n", f"relay worker did not start: {self._log_path.read_text()[-2_000:]}"

    async def kill(self) -> None:
        process, self.current = self.current, None
        assert process is not None
        assert process.returncode is None, f"relay worker died by itself: {self._log_path.read_text()[-2_000:]}"
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
        self.kills += 1

    async def stop(self) -> int | None:
        process, self.current = self.current, None
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(process.wait(), timeout=15)


async def kill_repeatedly(relays: RelayProcesses, rng: random.Random) -> list[float]:
    delays_s = []
    for _ in range(KILLS):
        await relays.start()
        delay_s = rng.uniform(0, MAX_KILL_DELAY_S)
        delays_s.append(delay_s)
        await asyncio.sleep(delay_s)  # the seeded kill point in this relay's life
        await relays.kill()
    return delays_s


async def test_sigkilled_relay_loses_nothing_and_the_inbox_absorbs_every_duplicate(
    engine: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    outbox_schema: tuple[EventTables, sa.Table],
    reliability_seed: int,
    write_reliability_record: Callable[[dict[str, Any]], Path],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    tables, effects = outbox_schema
    sessions = sessionmaker_for(engine)

    apply_effect = effect_applier(effects)

    dead_letters = EventProducer(kafka_bootstrap, client_id="r3-dead-letters")
    await dead_letters.start()
    consumer = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"r3-{uuid.uuid4().hex[:8]}",
        topics=[unique_topic],
        sessionmaker=sessions,
        tables=tables,
        handler=apply_effect,
        consumer_name="r3-consumer",
        dead_letter_producer=dead_letters,
    )
    relays = RelayProcesses(database_url, kafka_bootstrap, tables.schema, tmp_path / "relay.log")
    stop_consumer = asyncio.Event()
    await consumer.start()
    consumer_task = asyncio.create_task(consumer.run(stop_consumer))
    try:
        _, kill_delays_s = await asyncio.gather(
            write_events(sessions, tables, unique_topic, random.Random(f"{reliability_seed}:writes")),
            kill_repeatedly(relays, random.Random(f"{reliability_seed}:kills")),
        )
        await relays.start()  # the survivor drains what is left
        await eventually(lambda: _drained(sessions, tables), timeout_s=60, message="outbox drained")
        with contextlib.suppress(AssertionError):  # a shortfall is measured and reported below
            await eventually(lambda: _all_applied(sessions, effects), timeout_s=30, message="all effects applied")
        assert await relays.stop() == 0, "the last relay did not stop cleanly on SIGTERM"
    finally:
        stop_consumer.set()
        await asyncio.wait_for(consumer_task, timeout=15)
        await consumer.stop()
        await dead_letters.stop()
        if relays.current is not None and relays.current.returncode is None:
            relays.current.kill()
            await relays.current.wait()

    applied = await applied_effects(sessions, effects)
    on_topic = [Envelope.from_bytes(record.value) for record in await read_topic(kafka_bootstrap, unique_topic)]
    duplicate_records = len(on_topic) - len({envelope.event_id for envelope in on_topic})
    lost = EVENTS - len(applied)
    duplicated_effects = sum(1 for row in applied if row.applied_count != 1)
    out_of_order = out_of_order_applications(applied)
    record = {
        "id": "R3-outbox-sigkill",
        "seed": reliability_seed,
        "cases": EVENTS,
        "kills": relays.kills,
        "violations": lost + duplicated_effects + out_of_order,
        "lost": lost,
        "duplicated_effects": duplicated_effects,
        "out_of_order_effects": out_of_order,
        "duplicate_deliveries_absorbed": consumer.stats.duplicates,
        "duplicate_records_on_topic": duplicate_records,
        "records_on_topic": len(on_topic),
        "dead_lettered": consumer.stats.dead_lettered,
        "relay_starts": relays.starts,
        "transactions": EVENTS // EVENTS_PER_TRANSACTION,
        "relay_batch_size": RELAY_BATCH_SIZE,
        "ack_to_mark_delay_ms": ACK_TO_MARK_DELAY_MS,
        "kill_delay_s_max": round(max(kill_delays_s), 3),
        "duration_s": round(time.monotonic() - started, 2),
    }
    write_reliability_record(record)

    assert relays.kills == KILLS
    assert lost == 0
    assert duplicated_effects == 0
    assert out_of_order == 0
    assert consumer.stats.dead_lettered == 0
    assert consumer.stats.duplicates == duplicate_records, "every duplicate on the topic reached the inbox"
    assert duplicate_records > 0, "no kill landed between publish and mark-sent: the scenario proved nothing"


async def _drained(sessions: async_sessionmaker[AsyncSession], tables: EventTables) -> bool:
    return await unsent_rows(sessions, tables) == 0


async def _all_applied(sessions: async_sessionmaker[AsyncSession], effects: sa.Table) -> bool:
    async with UnitOfWork(sessions) as uow:
        return await uow.session.scalar(sa.select(sa.func.count()).select_from(effects)) == EVENTS
