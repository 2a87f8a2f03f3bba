"""Restart test: the exit engine is SIGKILLed with armed brackets, the price crosses their stops while it is down,
it starts again: exactly one exit order per bracket, none twice (counted on the commands topic and in the outbox).

The worker is this module run as a process (`python -m tests.reliability.test_exits_restart`): the risk
service's exit router and WORKERS on the platform's app factory, configured from AETHER_* variables.
After the exits are out it is killed and restarted once more, and the crossing ticks are published again:
still one exit per bracket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import AetherSettings
from shared.contracts.registry import new_envelope
from shared.events import Envelope, EventProducer
from shared.marketdata import Trade, to_envelope
from tests.helpers import eventually
from tests.integration.test_risk_exits import filled
from tests.kit.auth import PUBLIC_PEM
from tests.reliability.conftest import RecordWriter

REPO_ROOT = Path(__file__).resolve().parents[2]
BRACKETS = 5


async def serve_until_killed() -> None:
    """The worker process: the exit part of the risk service until SIGTERM (or SIGKILL)."""
    from services.risk.adapters import build_risk_adapters
    from services.risk.config import RiskSettings
    from services.risk.exits import api as exits_api
    from services.risk.exits.workers import WORKERS
    from shared.app_factory import ServiceSpec, build_service_app

    spec = ServiceSpec(
        name="risk",
        title="risk exits worker",
        description="",
        routers=[exits_api.router],
        workers=WORKERS,
        on_startup=build_risk_adapters,
    )
    app = build_service_app(spec, RiskSettings())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.router.lifespan_context(app):
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()


def topic() -> str:
    return f"test.{uuid.uuid4().hex[:12]}.v1"


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        with self.log.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.reliability.test_exits_restart",
                cwd=REPO_ROOT,
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        assert line.strip() == b"ready", f"worker did not start; see {self.log}"
        self.starts += 1

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await self.process.wait() == -signal.SIGKILL
        self.process = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[EventProducer]:
    producer = EventProducer(kafka_bootstrap, client_id="test-exits-restart")
    await producer.start()
    yield producer
    await producer.stop()


def _env(settings: AetherSettings, topics: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "AETHER_DATABASE_URL": settings.database_url.get_secret_value(),
        "AETHER_REDIS_URL": settings.redis_url.get_secret_value(),
        "AETHER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AETHER_ENV": "test",
        "AETHER_LOG_LEVEL": "WARNING",
        "AETHER_JWT_PUBLIC_KEY": PUBLIC_PEM,
        "AETHER_EXITS_CONSUMER_GROUP": f"test-exits-restart-{uuid.uuid4().hex[:8]}",
        "AETHER_EXITS_MARKETDATA_OFFSET_RESET": "earliest",
        "AETHER_EXITS_ORDER_EVENTS_OFFSET_RESET": "earliest",
        **{f"AETHER_EXITS_{name.upper()}_TOPIC": value for name, value in topics.items()},
    }


def _fill(account: str, order_id: str) -> Envelope:
    """The OMS's whole `OrderFilled` of an entry with explicit exits (built from the contract model)."""
    fill = filled(account, order_id, "buy", "0.5", "100", exits={"stop_loss": "95", "take_profit": "130"})
    return new_envelope(fill, producer="oms", aggregate_id=order_id)


def _trade(price: str, n: int) -> Envelope:
    trade = Trade(
        venue="synthetic",
        symbol="BTC/USD",
        trade_id=f"r{n}",
        price=Decimal(price),
        qty=Decimal("0.01"),
        side="sell",
        timestamp=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
    )
    return to_envelope(trade, "test")


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def _commands(bootstrap: str, commands_topic: str) -> list[Envelope]:
    consumer = AIOKafkaConsumer(
        commands_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        envelopes: list[Envelope] = []
        while batches := await consumer.getmany(timeout_ms=500):
            for records in batches.values():
                envelopes.extend(Envelope.from_bytes(record.value) for record in records)
        return envelopes
    finally:
        await consumer.stop()


async def test_restart_with_armed_brackets_sends_exactly_one_exit_each(
    settings: AetherSettings,
    engine: AsyncEngine,
    producer: EventProducer,
    tmp_path: Path,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    topics = {name: topic() for name in ("order_events", "commands", "events", "book", "trade")}
    worker = Worker(_env(settings, topics), tmp_path / "worker.log")
    accounts = [f"restart-{uuid.uuid4().hex[:8]}" for _ in range(BRACKETS)]
    open_sql = "SELECT count(*) FROM risk.exit_brackets WHERE account_id = ANY(:a) AND status = 'armed'"
    try:
        await worker.start()
        for account in accounts:
            await producer.send(topics["order_events"], _fill(account, f"entry-{account}"))
        await eventually(
            lambda: _equals(engine, open_sql, BRACKETS, a=accounts), timeout_s=30, message="brackets armed"
        )
        await producer.send(topics["trade"], _trade("99", 1))
        seen_sql = "SELECT count(*) FROM risk.exit_brackets WHERE account_id = ANY(:a) AND last_price = 99"
        await eventually(lambda: _equals(engine, seen_sql, BRACKETS, a=accounts), timeout_s=30, message="tick seen")

        await worker.kill()  # armed, down
        for n, price in enumerate(["96", "94.5", "93"], start=2):
            await producer.send(topics["trade"], _trade(price, n))
        await worker.start()
        exiting_sql = "SELECT count(*) FROM risk.exit_brackets WHERE account_id = ANY(:a) AND status = 'exiting'"
        await eventually(
            lambda: _equals(engine, exiting_sql, BRACKETS, a=accounts), timeout_s=30, message="exits after restart"
        )

        await worker.kill()  # once more, and the crossing ticks come again
        await worker.start()
        for n, price in enumerate(["94", "92"], start=5):
            await producer.send(topics["trade"], _trade(price, n))
        await eventually(lambda: _outbox_sent(engine, accounts), timeout_s=30, message="outbox published")
    finally:
        await worker.stop()

    commands = [c for c in await _commands(settings.kafka_bootstrap, topics["commands"]) if c.type == "SubmitOrder"]
    per_account = dict.fromkeys(accounts, 0)
    for command in commands:
        order = command.payload["order"]
        assert isinstance(order, dict)
        per_account[str(order["account_id"])] += 1
    client_ids = [str(c.payload["order"]["client_order_id"]) for c in commands]  # type: ignore[call-overload,index]
    outbox_rows = await _scalar(
        engine,
        "SELECT count(*) FROM risk.outbox WHERE event_type = 'SubmitOrder' AND payload->'payload'->'order'->>'account_id' = ANY(:a)",
        a=accounts,
    )
    duplicates = len(client_ids) - len(set(client_ids))
    write_reliability_record(
        {
            "id": "R-exits-restart",
            "seed": reliability_seed,
            "cases": BRACKETS,
            "violations": sum(abs(count - 1) for count in per_account.values()),
            "kills": 2,
            "starts": worker.starts,
            "submit_commands_on_topic": len(commands),
            "submit_rows_in_outbox": outbox_rows,
            "duplicate_client_order_ids": duplicates,
            "target": "exactly one exit order per armed bracket across SIGKILL restarts",
        }
    )
    assert per_account == dict.fromkeys(accounts, 1)
    assert outbox_rows == BRACKETS
    assert duplicates == 0


async def _equals(engine: AsyncEngine, sql: str, expected: int, **params: Any) -> bool:
    return bool(await _scalar(engine, sql, **params) == expected)


async def _outbox_sent(engine: AsyncEngine, accounts: list[str]) -> bool:
    unsent = await _scalar(
        engine,
        "SELECT count(*) FROM risk.outbox WHERE sent_at IS NULL AND payload->'payload'->'order'->>'account_id' = ANY(:a)",
        a=accounts,
    )
    return bool(unsent == 0)


if __name__ == "__main__":
    asyncio.run(serve_until_killed())
