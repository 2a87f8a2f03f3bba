"""R1: an order is placed once.

Through the real REST path (`create_app` on the paper venue, in-process HTTP): 500 seeded order intents,
each POSTed 5 times concurrently with the same client order id and body, spread over several accounts
(duplicates of one intent race on one account's row lock; intents of different accounts race each other).
Then 100 of them are re-sent with the same client id and a DIFFERENT body, and 100 once more with the
same body. Checked against the OMS tables, the paper venue's own tables and the calls that reached it:
one `oms.orders` row and one `paper.orders` row per (account, client id), one venue submit per intent,
each intent answered 201 exactly once and 200 otherwise (all with the same order id), the different
bodies answered 409 `duplicate_client_order_id`, late same-body retries 200 with the same order. A 503 (a
backend answering late on a saturated machine) is retried with the same body up to 3 times, as API clients are told
to; the record counts those retries by error code, and a 503 that outlasts them is a violation like any 5xx.

Size: 500 x 5 + 100 + 100 requests (`AETHER_RELIABILITY_SCALE` multiplies the counts).

`R1-duplicates-2-oms` runs the same checks with several OMS processes: two OMS apps (`create_app`, each with
`AETHER_PAPER_VENUE_URL`) on one database, trading on one paper venue process served by uvicorn on a loopback
port; the copies of each intent go to the two apps alternately (so they race each other on the account row lock
and at the venue). Size: 200 x 5 + 40 + 40 requests (scaled likewise).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.oms.config import OmsSettings
from tests.helpers import own_database
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_harness import (
    SCALE,
    base_asset,
    book_levels,
    oms_settings,
    order_rows,
    paper_stack,
    rest_client,
    scaled,
    unique_symbol,
)
from tests.reliability.oms_processes import oms_processes

pytestmark = pytest.mark.slow

INTENTS = scaled(500)
COPIES = 5
CONFLICTS = min(INTENTS, scaled(100))
LATE_RETRIES = min(INTENTS, scaled(100))
ACCOUNTS = 12
INTENTS_IN_FLIGHT = 16  # intents whose 5 copies are in flight at once (80 concurrent requests)
# Two OMS processes: fewer intents (each crosses the loopback network twice), the same races.
INTENTS_2_OMS = scaled(200)
CONFLICTS_2_OMS = min(INTENTS_2_OMS, scaled(40))
DEPOSIT = {"USD": Decimal("10000000"), "BASE": Decimal("100000")}


@pytest.fixture
def r1_database_url(database_url: str, processes: int) -> Iterator[str]:
    """The app reconciles every account of its database at startup (with the instruments of its own run): each
    variant gets a database of its own."""
    with own_database(database_url, f"r1_{processes}p") as url:
        yield url


def order_body(rng: random.Random, account: str, client_order_id: str, symbol: str) -> dict[str, Any]:
    """A seeded intent: resting limits, market orders and a marketable limit, small enough never to be denied."""
    kind = rng.choices(["rest_buy", "rest_sell", "market_buy", "market_sell", "taker_buy"], [3, 2, 2, 2, 1])[0]
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
    elif kind == "taker_buy":
        body.update(side="buy", type="limit", limit_price="100.4", time_in_force="ioc")
    else:
        body.update(side="buy" if kind == "market_buy" else "sell", type="market")
    return body


def conflicting(body: dict[str, Any]) -> dict[str, Any]:
    """The same client id with a different request (another quantity)."""
    return {**body, "quantity": str(Decimal(body["quantity"]) + Decimal("0.01"))}


@dataclass
class Answers:
    """Every response, by intent."""

    codes: dict[str, list[int]] = field(default_factory=dict)
    order_ids: dict[str, set[str]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    retried_503: Counter[str] = field(default_factory=Counter)
    retried_intents: set[str] = field(default_factory=set)

    def add(self, client_order_id: str, response: httpx.Response, latency_s: float) -> None:
        self.latencies_ms.append(latency_s * 1000)
        self.codes.setdefault(client_order_id, []).append(response.status_code)
        if response.status_code >= 500:
            self.server_errors.append(f"{client_order_id}: {response.status_code} {response.text[:200]}")
        if response.status_code in {200, 201}:
            order = response.json()
            self.order_ids.setdefault(client_order_id, set()).add(order["order_id"])
            if response.status_code == 201:
                self.statuses[order["status"]] += 1


BUSY_RETRIES = 3  # a 503 (a backend answering late on a saturated machine) is retried, as API clients are told to
BUSY_BACKOFF_S = 0.5


async def post_as_client(client: httpx.AsyncClient, body: dict[str, Any], answers: Answers) -> httpx.Response:
    """POST /orders as a client does: a 503 is retried with the same client order id and body (that is what the
    idempotency promise is for); the retries are counted by error code in the record, never hidden."""
    for attempt in range(BUSY_RETRIES + 1):
        response = await client.post("/orders", json=body)
        if response.status_code != 503 or attempt == BUSY_RETRIES:
            return response
        answers.retried_503[error_code(response)] += 1
        answers.retried_intents.add(body["client_order_id"])
        await asyncio.sleep(BUSY_BACKOFF_S * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns")


def error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}"


async def post(client: httpx.AsyncClient, body: dict[str, Any], answers: Answers) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await post_as_client(client, body, answers)
    return response, time.perf_counter() - started


async def submit_duplicates(
    clients: Sequence[httpx.AsyncClient], intents: list[dict[str, Any]], answers: Answers
) -> None:
    """Each intent's copies at once, to the OMS processes alternately; INTENTS_IN_FLIGHT intents at a time."""
    gate = asyncio.Semaphore(INTENTS_IN_FLIGHT)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            copies = (post(clients[n % len(clients)], body, answers) for n in range(COPIES))
            for response, latency_s in await asyncio.gather(*copies):
                answers.add(body["client_order_id"], response, latency_s)

    await asyncio.gather(*(one(body) for body in intents))


async def resend(
    clients: Sequence[httpx.AsyncClient], bodies: list[dict[str, Any]], answers: Answers
) -> list[httpx.Response]:
    gate = asyncio.Semaphore(INTENTS_IN_FLIGHT * COPIES)

    async def one(n: int, body: dict[str, Any]) -> httpx.Response:
        async with gate:
            return await post_as_client(clients[n % len(clients)], body, answers)

    return list(await asyncio.gather(*(one(n, body) for n, body in enumerate(bodies))))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0


@asynccontextmanager
async def oms_clients(
    processes: int, settings: OmsSettings, symbol: str
) -> AsyncIterator[tuple[list[httpx.AsyncClient], Counter[tuple[str, str]]]]:
    """The OMS REST clients and the venue submits counted per (account, client id), live.

    One process: the app on the in-process paper venue. Several: that many apps on one paper venue process."""
    if processes == 1:
        async with paper_stack(settings) as stack:
            await stack.set_book(symbol, *book_levels())
            async with rest_client(settings, stack.counting) as client:
                yield [client], stack.counting.calls.submits
    else:
        async with oms_processes(settings, processes) as platform:
            await platform.set_book(symbol, *book_levels())
            yield platform.clients, platform.counter.submits


@pytest.mark.parametrize("processes", [1, 2], ids=["1-oms", "2-oms"])
async def test_r1_an_order_is_placed_once(
    processes: int,
    r1_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    intent_count = INTENTS if processes == 1 else INTENTS_2_OMS
    conflict_count = CONFLICTS if processes == 1 else CONFLICTS_2_OMS
    late_count = LATE_RETRIES if processes == 1 else CONFLICTS_2_OMS
    rng = random.Random(reliability_seed)
    symbol = unique_symbol("RA")
    settings = oms_settings(r1_database_url, redis_url, kafka_bootstrap, [symbol], database_pool_size=12)
    prefix = f"r1-{processes}p-{reliability_seed}"
    accounts = [f"{prefix}-{i}" for i in range(ACCOUNTS)]
    intents = [order_body(rng, rng.choice(accounts), f"{prefix}-{n:05d}", symbol) for n in range(intent_count)]
    answers = Answers()
    async with oms_clients(processes, settings, symbol) as (clients, counted_submits):
        for account in accounts:
            for asset, amount in DEPOSIT.items():
                asset_name = base_asset(symbol) if asset == "BASE" else asset
                deposit = {"asset": asset_name, "amount": str(amount), "reference": uuid.uuid4().hex}
                response = await clients[0].post(f"/accounts/{account}/paper/deposits", json=deposit)
                assert response.status_code == 201, response.text

        started = time.perf_counter()
        await submit_duplicates(clients, intents, answers)
        duplicate_phase_s = time.perf_counter() - started

        conflict_bodies = [conflicting(body) for body in rng.sample(intents, conflict_count)]
        conflicts = await resend(clients, conflict_bodies, answers)
        late_bodies = rng.sample(intents, late_count)
        late = await resend(clients, late_bodies, answers)
        venue_submits = dict(counted_submits)

    engine = create_async_engine(r1_database_url, pool_size=1)
    try:
        rows = await order_rows(engine, accounts)
    finally:
        await engine.dispose()
    keys = [(body["account_id"], body["client_order_id"]) for body in intents]
    # One 201, four 200s; an intent with a copy answered 503 and retried may see only 200s (the 503 came after the
    # order was recorded, and the retry found it): the same order id throughout is still checked below.
    not_201_once = [
        f"{cid}: {sorted(codes)}"
        for cid, codes in answers.codes.items()
        if sorted(codes) != [200] * (COPIES - 1) + [201]
        and not (cid in answers.retried_intents and sorted(codes) == [200] * COPIES)
    ]
    several_order_ids = [cid for cid, ids in answers.order_ids.items() if len(ids) != 1]
    duplicate_oms_orders = sum(max(0, rows.oms.get(key, 0) - 1) for key in keys)
    missing_oms_orders = [key for key in keys if rows.oms.get(key, 0) == 0]
    extra_oms_orders = sum(n for key, n in rows.oms.items() if key not in set(keys))
    duplicate_venue_orders = sum(max(0, n - 1) for n in rows.venue.values())
    # Every intent passes the pre-trade checks and is valid at the venue: each must be there, once.
    missing_venue_orders = [key for key in keys if rows.venue.get(key, 0) == 0]
    submits_not_once = [key for key in keys if venue_submits.get(key, 0) != 1]
    conflicts_wrong = [
        f"{body['client_order_id']}: {r.status_code} {r.text[:120]}"
        for body, r in zip(conflict_bodies, conflicts, strict=True)
        if r.status_code != 409 or r.json()["error"]["code"] != "duplicate_client_order_id"
    ]
    late_wrong = [
        f"{body['client_order_id']}: {r.status_code}"
        for body, r in zip(late_bodies, late, strict=True)
        if r.status_code != 200 or {r.json()["order_id"]} != answers.order_ids.get(body["client_order_id"])
    ]
    violations = {
        "intents_not_201_once": len(not_201_once),
        "intents_with_several_order_ids": len(several_order_ids),
        "duplicate_oms_orders": duplicate_oms_orders,
        "missing_oms_orders": len(missing_oms_orders),
        "unexpected_oms_orders": extra_oms_orders,
        "duplicate_venue_orders": duplicate_venue_orders,
        "missing_venue_orders": len(missing_venue_orders),
        "venue_submits_not_once": len(submits_not_once),
        "different_body_not_409": len(conflicts_wrong),
        "late_retry_not_200_same_order": len(late_wrong),
        "server_errors": len(answers.server_errors),
    }
    requests = intent_count * COPIES
    record = {
        "id": "R1-duplicates" if processes == 1 else f"R1-duplicates-{processes}-oms",
        "seed": reliability_seed,
        "cases": requests + conflict_count + late_count,
        "violations": sum(violations.values()),
        "oms_processes": processes,
        "intents": intent_count,
        "copies_per_intent": COPIES,
        "accounts": ACCOUNTS,
        "duplicate_orders": duplicate_oms_orders,
        "venue_duplicates": duplicate_venue_orders,
        "different_body_409": f"{conflict_count - len(conflicts_wrong)}/{conflict_count}",
        "late_same_body_200": f"{late_count - len(late_wrong)}/{late_count}",
        "venue_submit_calls": sum(venue_submits.values()),
        "created_order_statuses": dict(sorted(answers.statuses.items())),
        "duplicate_phase_s": round(duplicate_phase_s, 2),
        "requests_per_s": round(requests / duplicate_phase_s, 1),
        "latency_ms_p50": round(statistics.median(answers.latencies_ms), 2),
        "latency_ms_p99": percentile(answers.latencies_ms, 0.99),
        "violation_kinds": violations,
        "retried_503_by_code": dict(sorted(answers.retried_503.items())),
        "examples": (not_201_once + conflicts_wrong + late_wrong + answers.server_errors)[:5],
        "scale": SCALE,
    }
    write_reliability_record(record)
    assert record["violations"] == 0, violations
