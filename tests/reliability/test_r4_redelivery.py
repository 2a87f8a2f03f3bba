"""R4: a redelivered or reordered message changes nothing twice.

Venue updates. Seeded orders are recorded in the OMS (SUBMITTED, funds reserved) and sent to the real
paper venue; public trades then print through the resting ones in small lots (many partial fills), some
are canceled at the venue, IOC orders fill partly and lose their remainder. Every message the OMS would
receive from the venue (the submit and cancel answers, and every fill and status the venue publishes to
its listeners) is captured instead of being applied. The stream is then delivered to the OMS through
`apply_update`: each message 1 to 3 times (a later copy up to 30 messages later), about 5 % of each
order's messages swapped with the next one of the same order, and 10 % of the closing statuses of orders
with fills moved, every copy, ahead of their order's last fill; accounts are applied concurrently, each in
its delivery order. Then a second OrderService ("after a restart") applies the whole stream again, which
must change no row. Checked: no fill recorded or applied twice, every order's filled quantity = the sum
of its fills, every position = buys - sells of its fills, ledger totals = the paper venue's balances,
order states = the venue's (the `divergences` comparison shared with R2). The accounts hold base only
from fills (bought before the capture), since a sold deposit never takes a position below zero.

Commands. `SubmitOrder` commands go to a topic of the test's own, each published 1 to 3 times, some
re-issued under a new event id with the same body (and some with another body), 5 % reordered; a
ConsumerLoop with the OMS's `handle_command` consumes them, the resolver sends the recorded orders, then
`CancelOrder` commands arrive the same way; finally a consumer of a new group replays the whole topic
(offsets lost in a rebalance). Checked: one order and one venue order per client id, one venue submit per
order, one cancel per canceled order, each different-body re-issue rejected once, the replay absorbed.

Size: 150 orders on 6 accounts with 300 trade prints, 160 submit commands (`AETHER_RELIABILITY_SCALE`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.consumers import handle_command, resolve_stale
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.db import UnitOfWork
from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderStatus
from shared.events import ConsumerLoop, Envelope, EventProducer
from shared.events.tables import event_tables
from shared.venues.base import VenueFill, VenueOrder, VenueOrderStatus, VenueUpdate
from tests.helpers import eventually, own_database
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_crash_worker import divergences
from tests.reliability.oms_harness import (
    ACTOR,
    SCALE,
    PaperStack,
    SteppingClock,
    base_asset,
    book_levels,
    oms_settings,
    paper_stack,
    scaled,
    unique_symbol,
    update_key,
    venue_request,
)

pytestmark = pytest.mark.slow

ORDERS = scaled(150)
ACCOUNTS = 6
PRINTS_PER_ORDER = 2  # trade prints after each order (about 300 in all)
MAX_COPIES = 3
LATE_COPY_SPAN = 30  # a redelivered copy lands up to this many messages later
REORDER_RATE = 0.05
COMMANDS = scaled(160)
COMMAND_ACCOUNTS = 4
DEPOSIT_USD = Decimal("1000000")
DEPOSIT_BASE = Decimal("10000")
# Part 1 holds base only from fills (a bootstrap buy applied live), more than all its sells: a sold deposit has no
# cost basis and the position never goes below zero, so only then is `position == buys - sells` the invariant.
BOOTSTRAP_BASE = Decimal(max(50, 3 * ORDERS // ACCOUNTS))
OVERTAKE_RATE = 0.1  # closing statuses of orders with fills delivered (every copy) ahead of their last fill
CLOSING = frozenset({VenueOrderStatus.FILLED, VenueOrderStatus.CANCELED, VenueOrderStatus.EXPIRED})
BOOK_QTY = Decimal("2")  # a thin book: IOC orders larger than a level fill partly


@pytest.fixture(scope="module")
def r4_database_url(database_url: str) -> Iterator[str]:
    """`resolve_stale` sends every stale SUBMITTED order of its database: give it one of its own."""
    with own_database(database_url, "r4") as url:
        yield url


# --- seeded order bodies ---------------------------------------------------------------------------------


def order_body(rng: random.Random, account: str, client_order_id: str, symbol: str) -> OrderCreate:
    """Resting limits (most), market orders and IOC limits that cross the thin book partly."""
    kind = rng.choices(
        ["rest_buy", "rest_sell", "market_buy", "market_sell", "ioc_buy", "ioc_sell"], [4, 4, 1, 1, 1, 1]
    )[0]
    quantity = Decimal(rng.randint(20, 100)) / 100
    body: dict[str, Any] = {"account_id": account, "client_order_id": client_order_id, "symbol": symbol}
    if kind == "rest_buy":
        body.update(side="buy", type="limit", limit_price=str(Decimal(rng.randint(970, 995)) / 10))
    elif kind == "rest_sell":
        body.update(side="sell", type="limit", limit_price=str(Decimal(rng.randint(1005, 1030)) / 10))
    elif kind == "ioc_buy":
        quantity = BOOK_QTY + quantity  # more than the best level holds
        body.update(side="buy", type="limit", limit_price="100.0", time_in_force="ioc")
    elif kind == "ioc_sell":
        quantity = BOOK_QTY + quantity
        body.update(side="sell", type="limit", limit_price="99.9", time_in_force="ioc")
    else:
        body.update(side="buy" if kind == "market_buy" else "sell", type="market")
    body["quantity"] = str(quantity)
    return OrderCreate.model_validate(body)


# --- capturing the venue's messages ----------------------------------------------------------------------


@dataclass
class Capture:
    """The messages the OMS would have received from the venue, in the order the venue produced them."""

    stream: list[VenueUpdate] = field(default_factory=list)
    resting: list[tuple[str, str]] = field(default_factory=list)

    async def listen(self, update: VenueUpdate) -> None:
        self.stream.append(update)


async def record_order(service: OrderService, body: OrderCreate) -> None:
    """What `place` does before it calls the venue: the order row (SUBMITTED), its reservation, its events."""
    async with UnitOfWork(service.sessionmaker) as uow:
        result = await service.record(uow.session, body, ACTOR, "rest")
    assert result.stored.order.status is OrderStatus.SUBMITTED, result.stored.order.reason


async def drive_market(
    stack: PaperStack, service: OrderService, rng: random.Random, accounts: list[str], symbol: str
) -> Capture:
    """Record and send ORDERS orders, print trades through the resting ones, cancel some; capture everything."""
    capture = Capture()
    stack.venue.subscribe(capture.listen)
    bids, asks = book_levels(qty=BOOK_QTY)
    for n in range(ORDERS):
        await stack.set_book(symbol, bids, asks)  # fresh liquidity for the takers; crosses no resting order
        body = order_body(rng, rng.choice(accounts), f"r4-{n:05d}-{rng.getrandbits(24):06x}", symbol)
        await record_order(service, body)
        answer = await stack.venue.submit(venue_request(body))
        capture.stream.append(answer)  # the answer comes after the fills it produced, as the OMS hears them
        if answer.status is VenueOrderStatus.OPEN:
            capture.resting.append((body.account_id, body.client_order_id))
        for _ in range(PRINTS_PER_ORDER):
            if rng.random() < 0.5:  # a seller prints below the bids: resting buys above it fill, best first
                price, aggressor = Decimal(rng.randint(965, 998)) / 10, OrderSide.SELL
            else:
                price, aggressor = Decimal(rng.randint(1002, 1035)) / 10, OrderSide.BUY
            await stack.trade(symbol, price, Decimal(rng.randint(5, 40)) / 100, aggressor)
        if capture.resting and rng.random() < 0.2:
            account, client_order_id = capture.resting.pop(rng.randrange(len(capture.resting)))
            capture.stream.append(await stack.venue.cancel(AccountId(account), ClientOrderId(client_order_id)))
    return capture


@dataclass
class Delivery:
    """The delivered sequence and what was done to it."""

    messages: list[VenueUpdate]
    swaps: int
    overtakes: int


def deliveries(stream: Sequence[VenueUpdate], rng: random.Random) -> Delivery:
    """Each message 1-3 times (later copies up to LATE_COPY_SPAN later), ~5 % swapped with the next message of
    their order, and ~10 % of the closing statuses of orders with fills moved (every copy) ahead of the last fill."""
    slots: list[tuple[float, int, VenueUpdate]] = []
    for position, update in enumerate(stream):
        slots.append((position, 0, update))
        for copy in range(1, rng.randint(1, MAX_COPIES)):
            slots.append((position + rng.randint(1, LATE_COPY_SPAN) + rng.random(), copy, update))
    delivered = [update for _, _, update in sorted(slots, key=lambda slot: (slot[0], slot[1]))]
    by_order: dict[tuple[str, str], list[int]] = defaultdict(list)
    for position, update in enumerate(delivered):
        by_order[update_key(update)].append(position)
    swaps = 0
    for positions in by_order.values():
        for first, second in itertools.pairwise(positions):
            if rng.random() < REORDER_RATE:
                delivered[first], delivered[second] = delivered[second], delivered[first]
                swaps += 1
    closing = [u for u in stream if isinstance(u, VenueOrder) and u.status in CLOSING and u.filled_quantity > 0]
    overtaking = [status for status in closing if rng.random() < OVERTAKE_RATE]
    for status in overtaking:
        delivered = overtake(delivered, status)
    return Delivery(delivered, swaps, len(overtaking))


def overtake(delivered: list[VenueUpdate], status: VenueOrder) -> list[VenueUpdate]:
    """Every copy of `status` moved just ahead of the first delivery of its order's last fill."""
    copies = sum(1 for u in delivered if u is status)
    rest = [u for u in delivered if u is not status]
    first_fills: dict[str, int] = {}
    for index, u in enumerate(rest):
        if isinstance(u, VenueFill) and update_key(u) == update_key(status):
            first_fills.setdefault(u.trade_id, index)
    ahead_of = max(first_fills.values())
    rest[ahead_of:ahead_of] = [status] * copies
    return rest


def statuses_ahead_of_fills(delivered: Sequence[VenueUpdate]) -> int:
    """Closing statuses whose every copy arrives before the first copy of some fill of their order."""
    first_copy: dict[str, tuple[int, tuple[str, str]]] = {}
    last_copy: dict[int, tuple[int, VenueOrder]] = {}
    for position, update in enumerate(delivered):
        if isinstance(update, VenueFill):
            first_copy.setdefault(update.trade_id, (position, update_key(update)))
        elif update.status in CLOSING and update.filled_quantity > 0:
            last_copy[id(update)] = (position, update)
    latest_fill: dict[tuple[str, str], int] = defaultdict(lambda: -1)
    for position, key in first_copy.values():
        latest_fill[key] = max(latest_fill[key], position)
    return sum(1 for position, status in last_copy.values() if position < latest_fill[update_key(status)])


async def apply_per_account(service: OrderService, delivered: Sequence[VenueUpdate]) -> None:
    """Accounts concurrently (as partitions are), each account's messages one after another in delivery order."""
    per_account: dict[str, list[VenueUpdate]] = defaultdict(list)
    for update in delivered:
        per_account[update.account_id].append(update)

    async def apply_all(updates: list[VenueUpdate]) -> None:
        for update in updates:
            await service.apply_update(update)

    await asyncio.gather(*(apply_all(updates) for updates in per_account.values()))


# --- checking the database ---------------------------------------------------------------------------------

SNAPSHOT_QUERIES = {
    "orders": "SELECT order_id, status, filled_quantity, fees_paid, version FROM oms.orders WHERE account_id = ANY(:a)",
    "order_events": "SELECT e.order_id, e.version, e.event_type FROM oms.order_events e JOIN oms.orders o USING (order_id) WHERE o.account_id = ANY(:a)",
    "fills": "SELECT venue, trade_id, order_id, quantity, price, fee FROM oms.fills WHERE account_id = ANY(:a)",
    "balances": "SELECT account_id, asset, total, reserved FROM oms.balances WHERE account_id = ANY(:a)",
    "reservations": "SELECT order_id, asset, remaining FROM oms.reservations WHERE account_id = ANY(:a)",
    "positions": "SELECT account_id, symbol, quantity, cost_basis, realized_pnl, fees_paid FROM oms.positions WHERE account_id = ANY(:a)",
    "journal": "SELECT count(*) FROM oms.balance_journal WHERE account_id = ANY(:a)",
    "outbox": "SELECT count(*) FROM oms.outbox",
}


async def snapshot(engine: AsyncEngine, accounts: list[str]) -> dict[str, set[tuple[Any, ...]]]:
    """Every OMS row of these accounts, to prove that a replay changed none."""
    async with engine.connect() as conn:
        return {
            name: {tuple(row) for row in await conn.execute(sa.text(sql), {"a": accounts})}
            for name, sql in SNAPSHOT_QUERIES.items()
        }


async def fill_violations(engine: AsyncEngine, accounts: list[str]) -> dict[str, list[str]]:
    """Fills recorded or applied twice; orders whose filled quantity or fill events disagree with their fills."""
    async with engine.connect() as conn:
        twice = (
            await conn.execute(
                sa.text(
                    "SELECT venue, trade_id, count(*) FROM oms.fills WHERE account_id = ANY(:a)"
                    " GROUP BY venue, trade_id HAVING count(*) > 1"
                ),
                {"a": accounts},
            )
        ).all()
        events_twice = (
            await conn.execute(
                sa.text(
                    "SELECT e.order_id, e.payload->>'trade_id', count(*) FROM oms.order_events e"
                    " JOIN oms.orders o USING (order_id) WHERE o.account_id = ANY(:a) AND e.event_type = 'OrderFilled'"
                    " GROUP BY 1, 2 HAVING count(*) > 1"
                ),
                {"a": accounts},
            )
        ).all()
        not_sum = (
            await conn.execute(
                sa.text(
                    "SELECT o.client_order_id, o.filled_quantity, COALESCE(SUM(f.quantity), 0) FROM oms.orders o"
                    " LEFT JOIN oms.fills f USING (order_id) WHERE o.account_id = ANY(:a)"
                    " GROUP BY o.order_id HAVING o.filled_quantity <> COALESCE(SUM(f.quantity), 0)"
                ),
                {"a": accounts},
            )
        ).all()
    return {
        "fills_recorded_twice": [f"{r[1]} x{r[2]}" for r in twice],
        "fills_applied_twice": [f"{r[0]}/{r[1]} x{r[2]}" for r in events_twice],
        "order_filled_not_sum_of_fills": [f"{r[0]} {r[1]} != {r[2]}" for r in not_sum],
    }


FILL_COUNTS = {
    "oms": "SELECT count(*) FROM oms.fills WHERE account_id = ANY(:a)",
    "paper": "SELECT count(*) FROM paper.fills WHERE account_id = ANY(:a)",
}


async def fill_count(engine: AsyncEngine, schema: str, accounts: list[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(sa.text(FILL_COUNTS[schema]), {"a": accounts})
    return int(count or 0)


# --- part 1: venue updates -----------------------------------------------------------------------------------


async def venue_stream_part(
    database_url: str, redis_url: str, kafka_bootstrap: str, seed: int, engine: AsyncEngine
) -> dict[str, Any]:
    rng = random.Random(seed)
    symbol = unique_symbol("RD")
    settings = oms_settings(database_url, redis_url, kafka_bootstrap, [symbol])
    accounts = [f"r4-{seed}-{i}" for i in range(ACCOUNTS)]
    async with paper_stack(settings, SteppingClock()) as stack:
        for account in accounts:
            await stack.fund(account, {"USD": DEPOSIT_USD})
        await stack.set_book(symbol, *book_levels(qty=BOOK_QTY))
        receiver = stack.service(listen=False)
        await stack.buy_positions(receiver, accounts, symbol, BOOTSTRAP_BASE)
        started = time.perf_counter()
        capture = await drive_market(stack, receiver, rng, accounts, symbol)
        capture_s = time.perf_counter() - started
        delivery = deliveries(capture.stream, rng)
        calls_before = stack.counting.calls.operations.copy()
        started = time.perf_counter()
        await apply_per_account(receiver, delivery.messages)
        apply_s = time.perf_counter() - started
        calls_during_apply = stack.counting.calls.operations - calls_before

        found = await divergences(engine, accounts)
        violations = await fill_violations(engine, accounts)
        oms_fills, venue_fills = await fill_count(engine, "oms", accounts), await fill_count(engine, "paper", accounts)

        before = await snapshot(engine, accounts)
        restarted = stack.service(listen=False)  # a new instance: nothing of the first one's memory
        started = time.perf_counter()
        await apply_per_account(restarted, capture.stream)
        replay_s = time.perf_counter() - started
        after = await snapshot(engine, accounts)
    replay_changes = {name: len(before[name] ^ after[name]) for name in before if before[name] != after[name]}
    kinds = Counter(type(update).__name__ for update in capture.stream)
    return {
        "orders": ORDERS,
        "accounts": ACCOUNTS,
        "messages": len(capture.stream),
        "fills": kinds["VenueFill"],
        "statuses": kinds["VenueOrder"],
        "deliveries": len(delivery.messages),
        "reordered_pairs": delivery.swaps,
        "statuses_moved_ahead_of_fills": delivery.overtakes,
        "statuses_ahead_of_fills": statuses_ahead_of_fills(delivery.messages),
        "fills_caught_up_from_venue": calls_during_apply["fills_since"],
        "oms_fills": oms_fills,
        "venue_fills": venue_fills,
        "venue_submits_or_cancels_by_apply": calls_during_apply["submit"] + calls_during_apply["cancel"],
        "replay_messages": len(capture.stream),
        "replay_changed_rows": sum(replay_changes.values()),
        "divergences": found.summary(),
        "capture_s": round(capture_s, 2),
        "apply_s": round(apply_s, 2),
        "replay_s": round(replay_s, 2),
        "_violations": {
            **{name: len(items) for name, items in violations.items()},
            "fills_missing_or_extra": abs(oms_fills - venue_fills),
            "position_not_sum_of_fills": len(found.position_mismatches),
            "ledger_not_venue": len(found.balance_mismatches),
            "state_not_venue": found.total - len(found.position_mismatches) - len(found.balance_mismatches),
            "replay_changed_rows": sum(replay_changes.values()),
            "venue_calls_by_apply": calls_during_apply["submit"] + calls_during_apply["cancel"],
        },
        "_examples": [*(item for items in violations.values() for item in items), *found.status_mismatches][:5],
    }


# --- part 2: commands through Kafka --------------------------------------------------------------------------


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
    for envelope in records:  # one by one: the delivery order is the partition's order
        await producer.send(topic, envelope, key=envelope.aggregate_id)


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
        handler=lambda session, envelope: handle_command(service, session, envelope),
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


async def test_r4_redelivered_or_reordered_messages_change_nothing_twice(
    r4_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    engine = create_async_engine(r4_database_url, pool_size=2)
    try:
        stream = await venue_stream_part(r4_database_url, redis_url, kafka_bootstrap, reliability_seed, engine)
        commands = await command_part(r4_database_url, redis_url, kafka_bootstrap, reliability_seed, engine)
    finally:
        await engine.dispose()
    stream_violations, commands_violations = stream.pop("_violations"), commands.pop("_violations")
    examples = [*stream.pop("_examples"), *commands.pop("_examples")]
    violations = {
        **{f"stream.{name}": n for name, n in stream_violations.items()},
        **{f"commands.{name}": n for name, n in commands_violations.items()},
    }
    record = {
        "id": "R4-redelivery",
        "seed": reliability_seed,
        "cases": stream["deliveries"] + stream["replay_messages"] + commands["records"] + commands["replayed_records"],
        "violations": sum(violations.values()),
        "double_applied_fills": stream_violations["fills_recorded_twice"] + stream_violations["fills_applied_twice"],
        "position_not_sum_of_fills": stream_violations["position_not_sum_of_fills"],
        "venue_stream": stream,
        "commands": commands,
        "violation_kinds": {name: n for name, n in violations.items() if n},
        "examples": examples,
        "scale": SCALE,
    }
    write_reliability_record(record)
    assert record["violations"] == 0, record["violation_kinds"]
