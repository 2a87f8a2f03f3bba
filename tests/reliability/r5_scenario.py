"""R5's harness: the world of a scenario module (its database, its instruments, an admin OMS for deposits), the
`Scenario` handle on OMS incarnations and the venue, and the record of which scenarios passed.

Each scenario drives an OMS into one divergence from the paper venue, restarts it and reconciles; the
scenarios are in test_r5_reconcile_fills.py and test_r5_reconcile_orders.py, the R5 record is written by
test_r5_reconcile_record.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.config import OmsSettings
from services.oms.schemas import OrderCreate
from services.oms.service import ReconcileReport
from shared.db import UnitOfWork
from shared.domain.types import Asset, OrderSide
from shared.marketdata import Trade
from shared.venues.base import UpdateListener, VenueAdapter, VenueUpdate
from shared.venues.paper import PaperVenue
from tests.reliability.oms_crash_worker import (
    ACTOR,
    QUOTE,
    Divergences,
    OmsProcess,
    divergences,
    oms_settings,
    publish_book,
    start_oms,
    start_venue,
)

USD = Asset(QUOTE)
ZERO = Decimal(0)
DEPOSIT = Decimal("10000")
REPAIRS = ("fills_applied", "statuses_applied", "resubmitted", "unknown_to_venue", "external_canceled")
# Scenario name -> passed; filled in by the scenario modules, read by the record (the last R5 module).
PASSED: dict[str, bool] = {}
ScenarioFn = Callable[["Scenario"], Awaitable[None]]


@dataclass
class World:
    settings: OmsSettings
    engine: AsyncEngine
    redis: Redis
    symbols: dict[str, str]  # scenario name -> its instrument
    admin: OmsProcess  # deposits (the paper venue credits, the ledger follows)


@asynccontextmanager
async def open_world(database_url: str, redis_url: str, names: Sequence[str]) -> AsyncIterator[World]:
    """One instrument per scenario name (with a book in Redis), an engine, and an admin OMS, for the with-block."""
    tag = uuid.uuid4().hex[:6].upper()
    symbols = {name: f"R5{tag}{index:02d}/{QUOTE}" for index, name in enumerate(names)}
    settings = oms_settings(database_url, redis_url, list(symbols.values()))
    redis = Redis.from_url(redis_url)
    await publish_book(redis, list(symbols.values()))
    engine = create_async_engine(database_url, pool_size=2)
    admin = await start_oms(settings)
    yield World(settings, engine, redis, symbols, admin)
    await admin.close()
    await engine.dispose()
    await redis.delete(*(f"marketdata:book:{symbol}" for symbol in symbols.values()))
    await redis.aclose()


class Gate:
    """Between the venue and the OMS's listener: `open` forwards, `closed` drops, `failing` raises."""

    def __init__(self) -> None:
        self.mode = "open"

    def wrap(self, listener: UpdateListener) -> UpdateListener:
        async def forward(update: VenueUpdate) -> None:
            if self.mode == "failing":
                raise RuntimeError("injected: the OMS listener failed")
            if self.mode == "open":
                await listener(update)

        return forward


@dataclass
class Scenario:
    """One scenario's instrument, accounts and OMS incarnations."""

    world: World
    name: str
    accounts: list[str] = field(default_factory=list)
    processes: list[OmsProcess] = field(default_factory=list)
    exchanges: list[AsyncEngine] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return self.world.symbols[self.name]

    @property
    def base(self) -> Asset:
        return Asset(self.symbol.split("/")[0])

    async def boot(
        self, *, gate: Gate | None = None, wrap_venue: Callable[[PaperVenue], VenueAdapter] | None = None
    ) -> OmsProcess:
        """Start an OMS incarnation (the previous ones keep running until `down`)."""
        oms = await start_oms(
            self.world.settings, wrap_venue=wrap_venue, wrap_listener=None if gate is None else gate.wrap
        )
        self.processes.append(oms)
        return oms

    async def down(self) -> None:
        """Every OMS incarnation of the scenario stops (as a process would: nothing more is applied)."""
        for oms in self.processes:
            await oms.close()
        for engine in self.exchanges:
            await engine.dispose()
        self.processes.clear()
        self.exchanges.clear()

    async def exchange(self) -> PaperVenue:
        """The venue while the OMS is down: its books restored from its tables, its market fed, nobody listening."""
        venue, engine = await start_venue(self.world.settings)
        self.exchanges.append(engine)
        return venue

    async def account(self, usd: Decimal = DEPOSIT) -> str:
        account = f"r5-{uuid.uuid4().hex[:10]}"
        await self.world.admin.service.deposit(account, QUOTE, usd, ACTOR, reference=uuid.uuid4().hex)
        self.accounts.append(account)
        return account

    def body(self, account: str, client_order_id: str, **fields: Any) -> OrderCreate:
        values: dict[str, Any] = {"side": "buy", "type": "limit", "quantity": "1", "limit_price": "99.0"}
        values.update(fields)
        return OrderCreate(account_id=account, client_order_id=client_order_id, symbol=self.symbol, **values)

    async def place(self, oms: OmsProcess, account: str, client_order_id: str, **fields: Any) -> str:
        """Place through the OMS; returns the order id."""
        placed = await oms.service.place(self.body(account, client_order_id, **fields), ACTOR)
        return placed.stored.order.id

    async def record_only(self, oms: OmsProcess, account: str, client_order_id: str, **fields: Any) -> str:
        """Record the order (SUBMITTED, reservation taken) and commit, but never send it: a crash right after commit."""
        async with UnitOfWork(oms.service.sessionmaker) as uow:
            placed = await oms.service.record(uow.session, self.body(account, client_order_id, **fields), ACTOR, "rest")
        return placed.stored.order.id

    async def trade(self, venue: PaperVenue, price: str, qty: str, aggressor: OrderSide = OrderSide.SELL) -> None:
        """A public print: resting buys above `price` (sells below it) fill as maker."""
        await venue.on_trade(
            Trade(
                venue="test",
                symbol=self.symbol,
                trade_id=uuid.uuid4().hex,
                price=Decimal(price),
                qty=Decimal(qty),
                side=aggressor,
                timestamp=datetime.now(UTC),
            )
        )

    async def restart_and_reconcile(self) -> tuple[OmsProcess, ReconcileReport]:
        """Stop every incarnation, start a fresh OMS, reconcile."""
        await self.down()
        oms = await self.boot()
        return oms, await oms.service.reconcile()

    async def oms_order(self, account: str, client_order_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM oms.orders WHERE account_id = :a AND client_order_id = :c", account, client_order_id
        )

    async def venue_order(self, account: str, client_order_id: str) -> dict[str, Any]:
        return await self._one(
            "SELECT * FROM paper.orders WHERE account_id = :a AND client_order_id = :c", account, client_order_id
        )

    async def _one(self, sql: str, account: str, client_order_id: str) -> dict[str, Any]:
        async with self.world.engine.connect() as conn:
            row = (await conn.execute(sa.text(sql), {"a": account, "c": client_order_id})).mappings().first()
        return {} if row is None else dict(row)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.world.engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params)

    async def execute(self, sql: str, **params: Any) -> None:
        """Write in a transaction of its own (the test standing in for something outside the OMS)."""
        async with self.world.engine.begin() as conn:
            await conn.execute(sa.text(sql), params)

    async def ledger(self, account: str) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (total, reserved) in the OMS ledger."""
        async with self.world.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT asset, total, reserved FROM oms.balances WHERE account_id = :a"), {"a": account}
            )
            return {r.asset: (r.total, r.reserved) for r in rows}

    async def venue_balances(self, account: str) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (total, reserved) at the venue."""
        async with self.world.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT asset, total, reserved FROM paper.balances WHERE account_id = :a"), {"a": account}
            )
            return {r.asset: (r.total, r.reserved) for r in rows}

    async def audit(self, action: str, target: str) -> list[dict[str, Any]]:
        async with self.world.engine.connect() as conn:
            rows = await conn.execute(
                sa.text("SELECT actor, details FROM audit.audit_log WHERE action = :action AND target = :target"),
                {"action": action, "target": target},
            )
            return [dict(r._mapping) for r in rows]

    async def agrees(self, oms: OmsProcess) -> Divergences:
        """The repaired state: OMS and venue agree for the scenario's accounts, and reconciling again changes nothing."""
        found = await divergences(self.world.engine, self.accounts)
        assert found.total == 0, found.summary()
        again = await oms.service.reconcile()
        assert repairs(again) == {}, f"a second reconcile still changed things: {again}"
        return found


def repairs(report: ReconcileReport) -> dict[str, int]:
    counts = {name: getattr(report, name) for name in (*REPAIRS, "balance_adjustments")}
    return {name: count for name, count in counts.items() if count}


def reserved(ledger: dict[str, tuple[Decimal, Decimal]], asset: str) -> Decimal:
    return ledger.get(asset, (Decimal(0), Decimal(0)))[1]


async def play(world: World, name: str, scenario: ScenarioFn) -> None:
    """Run one scenario on its own `Scenario`, stop its OMS incarnations, and record whether it passed."""
    PASSED[name] = False
    handle = Scenario(world, name)
    try:
        await scenario(handle)
    finally:
        await handle.down()
    PASSED[name] = True
