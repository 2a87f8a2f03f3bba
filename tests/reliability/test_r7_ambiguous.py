"""R7: ambiguous outcomes are resolved, not resubmitted.

Phase 1 (accepted, answer lost): 300 seeded orders are placed through `OrderService.place` on the paper
venue behind `FaultyVenue(ambiguous_rate=1.0)`: every submit reaches the venue, which accepts it (and
fills the marketable ones), then the OMS gets `AmbiguousOutcome` and leaves the order SUBMITTED. The OMS
does not listen to the venue's feed in this phase, so nothing but a query can settle an order. Then the
resolver (`resolve_stale`) runs once. Checked: every order resolved by that pass, no submit reaching the
venue a second time and no venue order under an unknown client id (venue orders = intents, one per client
id), and the OMS's orders, fills, positions and balances equal the venue's.

Phase 2 (refused before send): 300 more orders behind `FaultyVenue(temporary_rate=1.0)`: nothing reaches the
venue and the orders stay SUBMITTED. A restarted OMS (a new OrderService, listening to the venue) resolves
them through a venue link that still fails a quarter of the submits before sending and loses the answer
of another quarter: its resolver finds each order unknown to the venue and resubmits it under the SAME
client id, or finds it there after an ambiguous resubmit, until none is left. Checked: exactly one venue
order and one submit reaching the venue per intent, states equal to the venue's.

Size: 300 + 300 orders on 6 accounts (`AETHER_RELIABILITY_SCALE` multiplies the counts).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.consumers import resolve_stale
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.domain.types import AccountId, ClientOrderId, OrderId, OrderStatus
from tests.fakes.faults import FaultyVenue
from tests.helpers import own_database
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_crash_worker import divergences
from tests.reliability.oms_harness import (
    ACTOR,
    SCALE,
    OrderKey,
    PaperStack,
    SteppingClock,
    book_levels,
    oms_settings,
    order_rows,
    paper_stack,
    scaled,
    unique_symbol,
)

pytestmark = pytest.mark.slow

INTENTS = scaled(300)
RESUBMIT_INTENTS = scaled(300)
ACCOUNTS = 6
IN_FLIGHT = 8
DEPOSIT_USD = Decimal("1000000")
# Base held only from fills (the position check), more than all sells of both phases.
POSITION_BASE = Decimal(max(50, (INTENTS + RESUBMIT_INTENTS) // ACCOUNTS))
RESOLVE_AFTER_S = 1.0
MAX_RESOLVER_PASSES = 40


@pytest.fixture(scope="module")
def r7_database_url(database_url: str) -> Iterator[str]:
    """`resolve_stale` takes every stale SUBMITTED order of its database: give it one of its own."""
    with own_database(database_url, "r7") as url:
        yield url


class ResolverProbe(OrderService):
    """The real service; counts what `resolve` answered for each order it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcomes: Counter[str] = Counter()

    async def resolve(self, order_id: OrderId, *, at_startup: bool = False) -> str:
        outcome = await super().resolve(order_id, at_startup=at_startup)
        self.outcomes[outcome] += 1
        return outcome


def order_body(rng: random.Random, account: str, client_order_id: str, symbol: str) -> OrderCreate:
    """Resting limits, market orders and marketable IOC limits (sells stay well within the bought base)."""
    kind = rng.choices(["rest_buy", "rest_sell", "market_buy", "market_sell", "ioc_buy"], [3, 2, 2, 1, 1])[0]
    body: dict[str, Any] = {
        "account_id": account,
        "client_order_id": client_order_id,
        "symbol": symbol,
        "quantity": str(Decimal(rng.randint(1, 50)) / 100),
    }
    if kind == "rest_buy":
        body.update(side="buy", type="limit", limit_price=str(Decimal(rng.randint(950, 995)) / 10))
    elif kind == "rest_sell":
        body.update(side="sell", type="limit", limit_price=str(Decimal(rng.randint(1005, 1040)) / 10))
    elif kind == "ioc_buy":
        body.update(side="buy", type="limit", limit_price="100.4", time_in_force="ioc")
    else:
        body.update(side="buy" if kind == "market_buy" else "sell", type="market")
    return OrderCreate.model_validate(body)


async def place_all(service: OrderService, bodies: Sequence[OrderCreate]) -> Counter[str]:
    """Place every order (IN_FLIGHT at a time); the statuses `place` returned."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    statuses: Counter[str] = Counter()

    async def one(body: OrderCreate) -> None:
        async with gate:
            placed = await service.place(body, ACTOR)
        statuses[placed.stored.order.status.value] += 1

    await asyncio.gather(*(one(body) for body in bodies))
    return statuses


def key(body: OrderCreate) -> OrderKey:
    return body.account_id, body.client_order_id


async def submitted(engine: AsyncEngine, accounts: list[str], bodies: Sequence[OrderCreate]) -> int:
    """How many of these orders the OMS still has as SUBMITTED."""
    rows = await order_rows(engine, accounts)
    return sum(1 for body in bodies if rows.oms_status.get(key(body)) == OrderStatus.SUBMITTED.value)


async def venue_violations(
    engine: AsyncEngine, stack: PaperStack, accounts: list[str], bodies: Sequence[OrderCreate]
) -> dict[str, int]:
    """Exactly one venue order, and one submit reaching the venue, per intent."""
    rows = await order_rows(engine, accounts)
    submits = stack.counting.calls.submits
    return {
        "venue_orders_not_one": sum(1 for body in bodies if rows.venue[key(body)] != 1),
        "submits_reaching_venue_not_one": sum(1 for body in bodies if submits[key(body)] != 1),
    }


async def phase_accepted_then_lost(
    stack: PaperStack, engine: AsyncEngine, rng: random.Random, accounts: list[str], symbol: str, clock: SteppingClock
) -> dict[str, Any]:
    bodies = [order_body(rng, rng.choice(accounts), f"r7a-{n:05d}", symbol) for n in range(INTENTS)]
    faulty = FaultyVenue(stack.counting, random.Random(rng.random()), ambiguous_rate=1.0)
    oms = stack.service(venue=faulty, listen=False, service_class=ResolverProbe)
    assert isinstance(oms, ResolverProbe)
    started = time.perf_counter()
    placed = await place_all(oms, bodies)
    place_s = time.perf_counter() - started
    unresolved_before = await submitted(engine, accounts, bodies)
    at_venue_before = 0
    for body in bodies:  # the venue's own answer, not the OMS's
        at_venue_before += (
            await stack.venue.query(AccountId(body.account_id), ClientOrderId(body.client_order_id))
        ) is not None

    clock.skip(RESOLVE_AFTER_S + 1)
    started = time.perf_counter()
    taken = await resolve_stale(oms)
    resolve_s = time.perf_counter() - started
    unresolved_after = await submitted(engine, accounts, bodies)
    clock.skip(RESOLVE_AFTER_S + 1)
    second_pass = await resolve_stale(oms)
    venue = await venue_violations(engine, stack, accounts, bodies)
    queried = sum(1 for body in bodies if stack.counting.calls.queries[key(body)] > 0)
    return {
        "intents": INTENTS,
        "ambiguous_submits": faulty.counts.total_ambiguous,
        "place_statuses": dict(placed),
        "submitted_after_place": unresolved_before,
        "accepted_by_venue_before_resolve": at_venue_before,
        "resolver_took": taken,
        "resolver_outcomes": dict(oms.outcomes),
        # Settled by the venue's answers only: its own query, or the account's fills fetched for an earlier query.
        "resolved_by": {"own_query": queried, "fills_fetched_for_an_earlier_query": oms.outcomes["settled"]},
        "resolved_by_query": f"{INTENTS - unresolved_after}/{INTENTS}",
        "second_pass_took": second_pass,
        "submits_reaching_venue": sum(stack.counting.calls.submits[key(body)] for body in bodies),
        "place_s": round(place_s, 2),
        "resolve_s": round(resolve_s, 2),
        "_violations": {
            "not_all_ambiguous": int(unresolved_before != INTENTS or at_venue_before != INTENTS),
            "unresolved_after_resolver": unresolved_after,
            "resolver_second_pass_took": second_pass,
            **venue,
        },
    }


async def phase_refused_then_resubmitted(
    stack: PaperStack, engine: AsyncEngine, rng: random.Random, accounts: list[str], symbol: str, clock: SteppingClock
) -> dict[str, Any]:
    bodies = [order_body(rng, rng.choice(accounts), f"r7b-{n:05d}", symbol) for n in range(RESUBMIT_INTENTS)]
    refusing = FaultyVenue(stack.counting, random.Random(rng.random()), temporary_rate=1.0)
    placer = stack.service(venue=refusing, listen=False)
    placed = await place_all(placer, bodies)
    unresolved_before = await submitted(engine, accounts, bodies)
    at_venue_before = sum(1 for body in bodies if stack.counting.calls.submits[key(body)] > 0)

    flaky = FaultyVenue(stack.counting, random.Random(rng.random()), ambiguous_rate=0.25, temporary_rate=0.25)
    restarted = stack.service(venue=flaky, service_class=ResolverProbe)
    assert isinstance(restarted, ResolverProbe)
    passes, left = 0, unresolved_before
    started = time.perf_counter()
    while left and passes < MAX_RESOLVER_PASSES:
        clock.skip(RESOLVE_AFTER_S + 1)
        await resolve_stale(restarted)
        passes += 1
        left = await submitted(engine, accounts, bodies)
    resolve_s = time.perf_counter() - started
    venue = await venue_violations(engine, stack, accounts, bodies)
    return {
        "intents": RESUBMIT_INTENTS,
        "refused_before_send": refusing.counts.total_temporary,
        "place_statuses": dict(placed),
        "submitted_after_place": unresolved_before,
        "resolver_passes": passes,
        "resolver_outcomes": dict(restarted.outcomes),
        "resolver_faults": {"ambiguous": flaky.counts.total_ambiguous, "temporary": flaky.counts.total_temporary},
        "resolved": f"{RESUBMIT_INTENTS - left}/{RESUBMIT_INTENTS}",
        "submits_reaching_venue": sum(stack.counting.calls.submits[key(body)] for body in bodies),
        "resolve_s": round(resolve_s, 2),
        "_violations": {
            "not_all_refused": int(unresolved_before != RESUBMIT_INTENTS or at_venue_before != 0),
            "unresolved_after_resolver": left,
            **venue,
        },
    }


async def test_r7_ambiguous_outcomes_are_resolved_not_resubmitted(
    r7_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    rng = random.Random(reliability_seed)
    symbol = unique_symbol("RF")
    clock = SteppingClock()
    settings = oms_settings(r7_database_url, redis_url, kafka_bootstrap, [symbol], resolve_after_s=RESOLVE_AFTER_S)
    accounts = [f"r7-{reliability_seed}-{i}" for i in range(ACCOUNTS)]
    engine = create_async_engine(r7_database_url, pool_size=2)
    try:
        async with paper_stack(settings, clock) as stack:
            await stack.set_book(symbol, *book_levels())
            for account in accounts:
                await stack.fund(account, {"USD": DEPOSIT_USD})
            await stack.buy_positions(stack.service(listen=False), accounts, symbol, POSITION_BASE)
            await stack.set_book(symbol, *book_levels())
            first = await phase_accepted_then_lost(stack, engine, rng, accounts, symbol, clock)
            second = await phase_refused_then_resubmitted(stack, engine, rng, accounts, symbol, clock)
            found = await divergences(engine, accounts)
            rows = await order_rows(engine, accounts)
    finally:
        await engine.dispose()
    violations = {
        **{f"accepted_then_lost.{name}": n for name, n in first.pop("_violations").items()},
        **{f"refused_then_resubmitted.{name}": n for name, n in second.pop("_violations").items()},
        # A resubmission under a new client id would be a venue order the OMS has no order for.
        "venue_orders_under_unknown_id": len(set(rows.venue) - set(rows.oms)),
        "state_not_venue": found.total,
    }
    record = {
        "id": "R7-ambiguous",
        "seed": reliability_seed,
        "cases": INTENTS + RESUBMIT_INTENTS,
        "violations": sum(violations.values()),
        "resubmits_under_new_id": violations["venue_orders_under_unknown_id"],
        "venue_orders": sum(rows.venue.values()),
        "oms_orders": sum(rows.oms.values()),
        "resolved_by_query": first["resolved_by_query"],
        "accepted_then_lost": first,
        "refused_then_resubmitted": second,
        "divergences": found.summary(),
        "violation_kinds": {name: n for name, n in violations.items() if n},
        "scale": SCALE,
    }
    write_reliability_record(record)
    assert record["violations"] == 0, record["violation_kinds"]
