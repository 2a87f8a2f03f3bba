"""R4, part 1 (venue updates): the messages the paper venue sends the OMS, captured and delivered again.

Seeded orders are recorded in the OMS and sent to the real paper venue, prints fill them in small lots, some
are canceled; every message the OMS would receive is captured, then delivered 1 to 3 times, partly reordered,
some closing statuses ahead of their order's last fill, accounts concurrently, and once more to a restarted
OrderService. `venue_stream_part` returns the counts and the violations for the R4 record
(test_r4_redelivery.py, whose docstring tells the whole scenario). The redelivery shape (MAX_COPIES,
LATE_COPY_SPAN, REORDER_RATE) is shared with part 2 (r4_commands.py).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.db import UnitOfWork
from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderStatus
from shared.venues.base import VenueFill, VenueOrder, VenueOrderStatus, VenueUpdate
from tests.reliability.oms_crash_worker import divergences
from tests.reliability.oms_harness import (
    ACTOR,
    PaperStack,
    SteppingClock,
    book_levels,
    oms_settings,
    paper_stack,
    scaled,
    unique_symbol,
    update_key,
    venue_request,
)

ORDERS = scaled(150)
ACCOUNTS = 6
PRINTS_PER_ORDER = 2  # trade prints after each order (about 300 in all)
MAX_COPIES = 3
LATE_COPY_SPAN = 30  # a redelivered copy lands up to this many messages later
REORDER_RATE = 0.05
DEPOSIT_USD = Decimal("1000000")
# Part 1 holds base only from fills (a bootstrap buy applied live), more than all its sells: a sold deposit has no
# cost basis and the position never goes below zero, so only then is `position == buys - sells` the invariant.
BOOTSTRAP_BASE = Decimal(max(50, 3 * ORDERS // ACCOUNTS))
OVERTAKE_RATE = 0.1  # closing statuses of orders with fills delivered (every copy) ahead of their last fill
CLOSING = frozenset({VenueOrderStatus.FILLED, VenueOrderStatus.CANCELED, VenueOrderStatus.EXPIRED})
BOOK_QTY = Decimal("2")  # a thin book: IOC orders larger than a level fill partly


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
