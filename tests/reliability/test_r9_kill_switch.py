"""R9: the kill switch is obeyed.

1,000 seeded commands (limit buys, limit sells of less or more than the position, cancels of resting orders)
over several accounts, while the trading state moves between ACTIVE, REDUCING and HALTED, globally and per
account. States are changed through the real risk service (`RiskService.change_state`: PostgreSQL row, audit,
outbox), carried by the real outbox relay to the run's compacted controls topic and copied by the OMS's real
`ControlsFeed` into its own schema (each change is waited for before the next command), and orders go through the
real OMS service object (`OrderService.place` / `cancel`) on the paper venue. Each decision is compared with an independent oracle that knows only the states it
set and the balances it expects:

- cancel: always carried out (HALTED and REDUCING never block a cancel);
- new order, effective state (stricter of global and account) HALTED: denied `trading_halted`;
- REDUCING: only a sell of at most the held position passes, otherwise `trading_reducing`;
- otherwise: a sell larger than the free base is `insufficient_balance`, everything else is accepted.

Orders rest away from the market (buys at 95, sells at 105), so nothing fills and positions stay what the
oracle set up. Runs on a Redis database of its own: a global HALTED written here never reaches other tests. The
global state key is one per Redis database, so a run holds that database for itself (the `r9:run` lock): two
runs at once on one stack would otherwise change each other's global state and see orders accepted that their
oracle expects denied. Its PostgreSQL database and account ids are unique per run too.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oms.config import OmsSettings
from services.oms.controls import ControlsFeed
from services.oms.errors import OrderDenied
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from services.risk.config import RiskSettings
from services.risk.service import RiskService
from shared.auth.roles import Role
from shared.config import Environment
from shared.contracts.controls import ControlKind, control_key
from shared.db import create_engine, sessionmaker_for
from shared.domain.types import OrderId, OrderSide, OrderStatus, OrderType, TradingState
from shared.events import EventProducer
from shared.events.admin import ensure_compacted_topic
from shared.events.relay import OutboxRelay
from shared.events.tables import event_tables
from tests.helpers import eventually, own_database
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_crash_worker import ACTOR
from tests.reliability.oms_harness import (
    SCALE,
    PaperStack,
    book_levels,
    oms_settings,
    paper_stack,
    scaled,
    unique_symbol,
)

pytestmark = pytest.mark.slow

COMMANDS = scaled(1_000)
ACCOUNTS = 4
POSITION = Decimal("2")
REDIS_DB = 12
STATE_CHANGE_RATE = 0.08
STATES = (TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED)
STATE_WEIGHTS = (1, 2, 2)  # most commands run under REDUCING or HALTED
STRICTNESS = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}  # the oracle's own
RUN = uuid.uuid4().hex[:8]
RUN_LOCK_KEY = "r9:run"
RUN_LOCK_TTL_S = 1_200  # longer than a run; a run killed without releasing it blocks the next one this long at most


@pytest.fixture(scope="module")
def r9_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, f"r9_{RUN}") as url:  # a concurrent run's setup never drops this one
        yield url


@asynccontextmanager
async def redis_database_of_our_own(redis: Redis, keys: list[str]) -> AsyncIterator[None]:
    """Hold the run lock of this Redis database (waiting for a concurrent run to end); `keys` are deleted
    before and after, while the lock is held."""
    deadline = time.monotonic() + RUN_LOCK_TTL_S
    while not await redis.set(RUN_LOCK_KEY, RUN, nx=True, ex=RUN_LOCK_TTL_S):
        if time.monotonic() > deadline:
            pytest.fail(f"another R9 run holds {RUN_LOCK_KEY} on this Redis database")
        await asyncio.sleep(1)
    try:
        await redis.delete(*keys)
        yield
    finally:
        await redis.delete(*keys)
        if await redis.get(RUN_LOCK_KEY) == RUN.encode():
            await redis.delete(RUN_LOCK_KEY)


@dataclass
class Oracle:
    """What the rules say should happen, from the states the test set and the balances it expects."""

    global_state: TradingState = TradingState.ACTIVE
    account_states: dict[str, TradingState] = field(default_factory=dict)
    free_base: dict[str, Decimal] = field(default_factory=dict)
    resting: dict[str, tuple[str, OrderSide, Decimal]] = field(default_factory=dict)  # order id -> account...

    def effective(self, account: str) -> TradingState:
        account_state = self.account_states.get(account, TradingState.ACTIVE)
        return max(self.global_state, account_state, key=STRICTNESS.__getitem__)

    def expected_new_order(self, account: str, side: OrderSide, quantity: Decimal) -> str:
        state = self.effective(account)
        if state is TradingState.HALTED:
            return "trading_halted"
        if state is TradingState.REDUCING and not (side is OrderSide.SELL and quantity <= POSITION):
            return "trading_reducing"
        if side is OrderSide.SELL and quantity > self.free_base[account]:
            return "insufficient_balance"
        return "accepted"

    def placed(self, order_id: str, account: str, side: OrderSide, quantity: Decimal) -> None:
        self.resting[order_id] = (account, side, quantity)
        if side is OrderSide.SELL:
            self.free_base[account] -= quantity

    def canceled(self, order_id: str) -> None:
        account, side, quantity = self.resting.pop(order_id)
        if side is OrderSide.SELL:
            self.free_base[account] += quantity


@dataclass
class Tally:
    decisions: Counter[str] = field(default_factory=Counter)
    by_state: Counter[str] = field(default_factory=Counter)
    wrong: list[dict[str, str]] = field(default_factory=list)
    state_changes: int = 0


def risk_service(engine: AsyncEngine, redis: Redis, controls_topic: str) -> RiskService:
    """The real risk service on the test's database and Redis (as its process would build it)."""
    return RiskService(
        settings=RiskSettings(env=Environment.TEST, log_level="WARNING", risk_controls_topic=controls_topic),
        sessionmaker=sessionmaker_for(engine),
        tables=event_tables("risk"),
        redis=redis,
        clock=lambda: datetime.now(UTC),
    )


async def change_state(
    risk: RiskService, oracle: Oracle, tally: Tally, rng: random.Random, accounts: list[str]
) -> None:
    target = rng.choices(STATES, STATE_WEIGHTS)[0]
    scope_global = rng.random() < 0.3
    account = None if scope_global else rng.choice(accounts)
    change = await risk.change_state(
        "global" if scope_global else "account", account, target, "r9 drill", "r9-director", {Role.DIRECTOR}
    )
    tally.state_changes += 1
    if change.changed:
        await copied(risk, control_key(ControlKind.TRADING_STATE, account), change.state.version)
    if change.pending is not None:
        return  # leaving HALTED waits for a second director (no approval policy mirrored: fail closed)
    if account is None:
        oracle.global_state = target
    else:
        oracle.account_states[account] = target


async def copied(risk: RiskService, key: str, version: int) -> None:
    """Wait until the OMS's controls copy (same database) holds `key` at `version` or later."""

    async def present() -> bool:
        async with risk.sessionmaker() as session:
            found = await session.scalar(sa.text("SELECT version FROM oms.controls WHERE control_key = :k"), {"k": key})
        return found is not None and found >= version

    await eventually(present, timeout_s=30, message=f"{key} v{version} in the OMS's copy")


@asynccontextmanager
async def controls_path(engine: AsyncEngine, settings: OmsSettings) -> AsyncIterator[None]:
    """The risk service's outbox relay and the OMS's controls feed, running for the with-block."""
    producer = EventProducer(settings.kafka_bootstrap, client_id="r9-risk-relay")
    await producer.start()
    await ensure_compacted_topic(settings.kafka_bootstrap, settings.risk_controls_topic)
    await ensure_compacted_topic(settings.kafka_bootstrap, settings.hitl_controls_topic)
    stop = asyncio.Event()
    relay = OutboxRelay(engine, event_tables("risk"), producer, idle_interval_s=0.05)
    feed = ControlsFeed(
        sessionmaker=sessionmaker_for(engine),
        bootstrap=settings.kafka_bootstrap,
        topics=(settings.risk_controls_topic, settings.hitl_controls_topic),
        clock=lambda: datetime.now(UTC),
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(feed.run(stop))]
    try:
        yield
    finally:
        stop.set()
        relay.wake()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


async def new_order(
    service: OrderService, oracle: Oracle, tally: Tally, rng: random.Random, account: str, symbol: str, n: int
) -> None:
    side = rng.choice([OrderSide.BUY, OrderSide.SELL])
    if side is OrderSide.SELL and rng.random() < 0.25:
        quantity = POSITION + Decimal(rng.randint(1, 100)) / 100  # more than is held: opens exposure
    else:
        quantity = Decimal(rng.randint(1, 60)) / 100
    body = OrderCreate(
        account_id=account,
        client_order_id=f"r9-{n}",
        symbol=symbol,
        side=side,
        type=OrderType.LIMIT,
        quantity=quantity,
        limit_price=Decimal("95") if side is OrderSide.BUY else Decimal("105"),
    )
    expected = oracle.expected_new_order(account, side, quantity)
    tally.by_state[oracle.effective(account).value] += 1
    try:
        placed = await service.place(body, ACTOR)
    except OrderDenied as exc:
        actual = exc.code
    else:
        order = placed.stored.order
        actual = "accepted" if order.status is OrderStatus.ACCEPTED else order.status.value
        if order.status is OrderStatus.ACCEPTED:
            oracle.placed(order.id, account, side, quantity)
    record(tally, f"{side.value} {quantity} {account}", expected, actual)


async def cancel(service: OrderService, oracle: Oracle, tally: Tally, rng: random.Random) -> None:
    order_id = rng.choice(list(oracle.resting))  # insertion order: deterministic per seed
    account = oracle.resting[order_id][0]
    tally.by_state[oracle.effective(account).value] += 1
    stored = await service.cancel(OrderId(order_id), ACTOR)
    actual = "canceled" if stored.order.status is OrderStatus.CANCELED else stored.order.status.value
    if actual == "canceled":
        oracle.canceled(order_id)
    record(tally, f"cancel {order_id}", "canceled", actual)


def record(tally: Tally, command: str, expected: str, actual: str) -> None:
    tally.decisions[actual] += 1
    if expected != actual:
        tally.wrong.append({"command": command, "expected": expected, "actual": actual})


async def run_commands(
    stack: PaperStack, risk: RiskService, rng: random.Random, accounts: list[str], symbol: str
) -> Tally:
    service = stack.service(listen=False)
    oracle = Oracle(free_base=dict.fromkeys(accounts, POSITION))
    tally = Tally()
    for n in range(COMMANDS):
        if rng.random() < STATE_CHANGE_RATE:
            await change_state(risk, oracle, tally, rng, accounts)
        if oracle.resting and rng.random() < 0.3:
            await cancel(service, oracle, tally, rng)
        else:
            await new_order(service, oracle, tally, rng, rng.choice(accounts), symbol, n)
    return tally


async def test_r9_kill_switch_is_obeyed(
    r9_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    rng = random.Random(reliability_seed)
    symbol = unique_symbol("RK")
    own_redis = re.sub(r"/\d+$", "", redis_url) + f"/{REDIS_DB}"
    settings = oms_settings(r9_database_url, own_redis, kafka_bootstrap, [symbol])
    accounts = [f"r9-{reliability_seed}-{RUN}-{i}" for i in range(ACCOUNTS)]
    state_keys = ["risk:trading_state:global", *[f"risk:trading_state:account:{a}" for a in accounts]]
    redis = Redis.from_url(own_redis)
    risk_engine = create_engine(settings, application_name="r9-risk")
    started = time.perf_counter()
    try:
        async with redis_database_of_our_own(redis, state_keys), paper_stack(settings) as stack:
            await stack.set_book(symbol, *book_levels())
            for account in accounts:
                await stack.fund(account, {"USD": Decimal("10000000")})
            await stack.buy_positions(stack.service(listen=False), accounts, symbol, POSITION)
            await stack.set_book(symbol, *book_levels())
            risk = risk_service(risk_engine, redis, settings.risk_controls_topic)
            async with controls_path(risk_engine, settings):
                tally = await run_commands(stack, risk, rng, accounts, symbol)
    finally:
        await redis.aclose()
        await risk_engine.dispose()
    elapsed_s = time.perf_counter() - started
    under_restriction = tally.by_state["halted"] + tally.by_state["reducing"]
    result = {
        "id": "R9-kill-switch",
        "seed": reliability_seed,
        "cases": COMMANDS,
        "violations": len(tally.wrong),
        "wrong_decisions": len(tally.wrong),
        "commands_by_effective_state": dict(tally.by_state),
        "commands_under_halted_or_reducing": under_restriction,
        "decisions": dict(tally.decisions),
        "state_changes": tally.state_changes,
        "first_wrong": tally.wrong[:5],
        "elapsed_s": round(elapsed_s, 1),
        "scale": SCALE,
    }
    write_reliability_record(result)
    assert result["violations"] == 0, tally.wrong[:5]
    # the run must actually exercise the restrictions and every kind of decision
    assert under_restriction >= COMMANDS // 2
    for decision in ("accepted", "canceled", "trading_halted", "trading_reducing"):
        assert tally.decisions[decision] > 0, decision
