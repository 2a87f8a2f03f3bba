"""R8: network faults between the OMS and PostgreSQL do not corrupt state.

The OMS app (`create_app`, its paper venue in the same process as `make up` runs it) reaches PostgreSQL only
through a Toxiproxy proxy. Seeded orders (market and resting limit, several accounts) are placed through the
REST API in five phases: clean, latency with jitter, connections reset by the peer, connections that stall
and are cut (`timeout`), and a partition (the proxy disabled for a while). A client retries a 5xx or a
broken request with the same client order id, as the API asks. Then the faults stop, the OMS resolves what
it left ambiguous, a new OMS reconciles with the venue, and the history is checked offline on a direct
connection: every acknowledged order exists once; no order is in an illegal state; ledger balances equal the
sum of their journal; the OMS's orders, fills, balances and positions equal the venue's.

Between the OMS and the venue there is no network yet: the paper venue runs inside the OMS process (a venue
process of its own is issue 11 item 10); its PostgreSQL traffic goes through the same faulty proxy.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.domain.types import OrderStatus
from tests.helpers import eventually, own_database
from tests.kit.toxiproxy import Proxy, Stream, toxiproxy_server
from tests.reliability.conftest import RecordWriter
from tests.reliability.oms_crash_worker import divergences
from tests.reliability.oms_harness import (
    book_levels,
    oms_settings,
    paper_stack,
    rest_client,
    scaled,
    unique_symbol,
)

pytestmark = pytest.mark.slow

ORDERS_PER_PHASE = scaled(40, minimum=10)
ACCOUNTS = 4
IN_FLIGHT = 4
ATTEMPTS = 8  # per order: the first try and up to 7 retries after a 5xx or a broken request
RETRY_BACKOFF_S = 0.2
# Quote only: base comes from fills, so that every position is the net of its fills (a deposited base has no
# cost and would make them differ by design); a sell beyond what an account bought is refused (422).
DEPOSIT_USD = Decimal("1000000")
PARTITION_S = 2.0
SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Phase:
    name: str
    # (toxic name, type, attributes, stream, toxicity)
    toxics: tuple[tuple[str, str, dict[str, int | float], Stream, float], ...] = ()
    partition: bool = False


PHASES = (
    Phase("clean"),
    Phase(
        "latency",
        (
            ("latency-down", "latency", {"latency": 40, "jitter": 30}, "downstream", 1.0),
            ("latency-up", "latency", {"latency": 10, "jitter": 10}, "upstream", 1.0),
        ),
    ),
    Phase("reset_peer", (("reset", "reset_peer", {"timeout": 300}, "downstream", 0.5),)),
    Phase("timeout", (("stall", "timeout", {"timeout": 1_500}, "downstream", 0.3),)),
    Phase("partition", partition=True),
)


@dataclass
class Outcomes:
    """What the client saw, per client order id and in all."""

    acknowledged: dict[str, tuple[str, str]] = field(default_factory=dict)  # client id -> (account, order id)
    refused: dict[str, int] = field(default_factory=dict)  # client id -> 4xx code
    given_up: list[str] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # "201", "503", "broken" ...
    retries: int = 0


@pytest.fixture(scope="module")
def r8_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "r8") as url:
        yield url


def order_body(rng: random.Random, account: str, client_order_id: str, symbol: str) -> dict[str, Any]:
    """Half market orders, half limits resting away from the book (never crossed: the book is not moved)."""
    body: dict[str, Any] = {
        "account_id": account,
        "client_order_id": client_order_id,
        "symbol": symbol,
        "side": rng.choice(["buy", "sell"]),
        "quantity": str(Decimal(rng.randint(1, 40)) / 100),
    }
    if rng.random() < 0.5:
        body["type"] = "market"
    else:
        offset = Decimal(rng.randint(10, 50)) / 10
        body.update(type="limit", limit_price=str(Decimal("97") - offset if body["side"] == "buy" else 103 + offset))
    return body


async def place(client: httpx.AsyncClient, body: dict[str, Any], outcomes: Outcomes) -> None:
    """POST the order until it is answered for good; a 5xx or a broken request is retried with the same body."""
    client_order_id = body["client_order_id"]
    for attempt in range(ATTEMPTS):
        if attempt:
            outcomes.retries += 1
            await asyncio.sleep(RETRY_BACKOFF_S * 2 ** min(attempt - 1, 4))  # the client's backoff, not a wait
        try:
            response = await client.post("/orders", json=body)
        except httpx.TransportError:
            outcomes.answers["broken"] += 1
            continue
        outcomes.answers[str(response.status_code)] += 1
        if response.status_code in {200, 201}:
            outcomes.acknowledged[client_order_id] = (body["account_id"], response.json()["order_id"])
            return
        if response.status_code < 500:
            outcomes.refused[client_order_id] = response.status_code
            return
    outcomes.given_up.append(client_order_id)


async def run_phase(
    phase: Phase, proxy: Proxy, client: httpx.AsyncClient, bodies: list[dict[str, Any]], outcomes: Outcomes
) -> None:
    for name, kind, attributes, stream, toxicity in phase.toxics:
        await proxy.add_toxic(name, kind, attributes, stream=stream, toxicity=toxicity)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await place(client, body, outcomes)

    async def partition() -> None:
        await asyncio.sleep(0.2)  # let a few orders start first: the cut lands mid-stream
        await proxy.set_enabled(False)
        await asyncio.sleep(PARTITION_S)  # the partition itself: a fixed duration
        await proxy.set_enabled(True)

    try:
        await asyncio.gather(*(one(body) for body in bodies), *([partition()] if phase.partition else []))
    finally:
        for name, *_ in phase.toxics:
            await proxy.remove_toxic(name)
        await proxy.set_enabled(True)


async def open_ambiguities(engine: AsyncEngine, accounts: list[str]) -> int:
    """Orders the OMS has not resolved yet (SUBMITTED or PENDING_CANCEL)."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            sa.text("SELECT count(*) FROM oms.orders WHERE account_id = ANY(:a) AND status = ANY(:s)"),
            {"a": accounts, "s": [OrderStatus.SUBMITTED.value, OrderStatus.PENDING_CANCEL.value]},
        )
    return int(count or 0)


async def acknowledged_anomalies(engine: AsyncEngine, outcomes: Outcomes) -> list[str]:
    """Acknowledged orders missing, duplicated, or under another order id in oms.orders."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT client_order_id, order_id FROM oms.orders WHERE client_order_id = ANY(:c)"),
                {"c": list(outcomes.acknowledged)},
            )
        ).all()
    found: dict[str, list[str]] = {}
    for client_order_id, order_id in rows:
        found.setdefault(client_order_id, []).append(str(order_id))
    return [
        f"{client_order_id}: acknowledged {order_id}, stored {found.get(client_order_id)}"
        for client_order_id, (_, order_id) in outcomes.acknowledged.items()
        if found.get(client_order_id) != [order_id]
    ]


async def illegal_orders(engine: AsyncEngine, accounts: list[str]) -> list[str]:
    """Orders whose status and quantities contradict each other."""
    unfilled = [OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.DENIED, OrderStatus.PENDING_APPROVAL]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT client_order_id, status, quantity, filled_quantity FROM oms.orders"
                    " WHERE account_id = ANY(:a)"
                ),
                {"a": accounts},
            )
        ).all()
    known = {status.value for status in OrderStatus}
    wrong = []
    for client_order_id, status, quantity, filled in rows:
        if (
            status not in known
            or not Decimal(0) <= filled <= quantity
            or (status == OrderStatus.FILLED and filled != quantity)
            or (status == OrderStatus.PARTIALLY_FILLED and not Decimal(0) < filled < quantity)
            or (status in unfilled and filled != 0)
        ):
            wrong.append(f"{client_order_id}: {status} {filled}/{quantity}")
    return wrong


async def journal_mismatches(engine: AsyncEngine, accounts: list[str]) -> list[str]:
    """Balances whose total or reserved amount is not the sum of their journal entries."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT b.account_id, b.asset, b.total, b.reserved,"
                    " COALESCE(SUM(j.delta_total), 0) AS journal_total,"
                    " COALESCE(SUM(j.delta_reserved), 0) AS journal_reserved"
                    " FROM oms.balances b LEFT JOIN oms.balance_journal j USING (account_id, asset)"
                    " WHERE b.account_id = ANY(:a) GROUP BY b.account_id, b.asset, b.total, b.reserved"
                ),
                {"a": accounts},
            )
        ).all()
    return [
        f"{row.account_id}/{row.asset}: total {row.total} journal {row.journal_total},"
        f" reserved {row.reserved} journal {row.journal_reserved}"
        for row in rows
        if row.total != row.journal_total or row.reserved != row.journal_reserved
    ]


async def test_r8_network_faults_between_the_oms_and_postgres_corrupt_nothing(
    r8_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    rng = random.Random(f"{reliability_seed}:r8")
    symbol = unique_symbol("RN")
    accounts = [f"r8-{reliability_seed}-{i}" for i in range(ACCOUNTS)]
    plan = [
        [order_body(rng, rng.choice(accounts), f"r8-{phase.name}-{n:04d}", symbol) for n in range(ORDERS_PER_PHASE)]
        for phase in PHASES
    ]
    direct = oms_settings(r8_database_url, redis_url, kafka_bootstrap, [symbol])
    outcomes = Outcomes()
    per_phase: dict[str, dict[str, int]] = {}
    database = make_url(r8_database_url)
    async with toxiproxy_server(reliability_seed, tmp_path / "toxiproxy.log") as toxiproxy:
        proxy = await toxiproxy.proxy("oms-postgres", f"{database.host}:{database.port}")
        proxied_url = database.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        proxied = oms_settings(proxied_url, redis_url, kafka_bootstrap, [symbol], database_pool_size=8)
        async with paper_stack(proxied) as stack:
            await stack.set_book(symbol, *book_levels(best_bid=Decimal("99.9"), best_ask=Decimal("100.0")))
            async with rest_client(proxied, stack.counting, raise_app_exceptions=False) as client:
                for account in accounts:
                    # one reference per account: a retry after a 503 credits once
                    deposit = {"asset": "USD", "amount": str(DEPOSIT_USD), "reference": f"r8-{account}"}
                    response = await client.post(f"/accounts/{account}/paper/deposits", json=deposit)
                    assert response.status_code == 201, response.text
                for phase, bodies in zip(PHASES, plan, strict=True):
                    before = Counter(outcomes.answers)
                    await run_phase(phase, proxy, client, bodies, outcomes)
                    per_phase[phase.name] = dict(Counter(outcomes.answers) - before)

                check_engine = create_async_engine(r8_database_url, pool_size=1)
                try:
                    # The faults are over: the OMS's resolver settles what it left ambiguous.
                    await eventually(
                        lambda: _settled(check_engine, accounts),
                        timeout_s=SETTLE_TIMEOUT_S,
                        message="no SUBMITTED or PENDING_CANCEL order left",
                    )
                finally:
                    await check_engine.dispose()

    # Offline: a new OMS reconciles on a direct connection, then both sides are compared.
    async with paper_stack(direct) as restarted:
        report = await restarted.service(listen=True).reconcile()
    engine = create_async_engine(r8_database_url, pool_size=1)
    try:
        found = await divergences(engine, accounts)
        lost_or_doubled = await acknowledged_anomalies(engine, outcomes)
        illegal = await illegal_orders(engine, accounts)
        journal = await journal_mismatches(engine, accounts)
    finally:
        await engine.dispose()

    # A balance the reconciliation had to adjust had drifted from the venue's under the faults.
    anomalies = found.total + len(lost_or_doubled) + len(illegal) + len(journal) + report.balance_adjustments
    record = {
        "id": "R8-network-faults",
        "seed": reliability_seed,
        "cases": sum(len(bodies) for bodies in plan),
        "violations": anomalies,
        "anomalies": anomalies,
        "acknowledged": len(outcomes.acknowledged),
        "acknowledged_missing_or_duplicated": len(lost_or_doubled),
        "illegal_order_states": len(illegal),
        "ledger_journal_mismatches": len(journal),
        "oms_venue_divergences": found.total,
        "refused_4xx": len(outcomes.refused),
        "given_up": len(outcomes.given_up),
        "retries": outcomes.retries,
        "answers": dict(outcomes.answers),
        "answers_per_phase": per_phase,
        "reconcile_repairs": {name: value for name, value in asdict(report).items() if name != "details"},
        "faults": [phase.name for phase in PHASES],
        "duration_s": round(time.monotonic() - started, 2),
    }
    write_reliability_record(record)

    assert lost_or_doubled == []
    assert illegal == []
    assert journal == []
    assert found.total == 0, found.summary()
    assert report.balance_adjustments == 0, report.details
    faulted = sum(count for name, count in outcomes.answers.items() if name == "broken" or name.startswith("5"))
    assert faulted > 0, "no request failed under the faults: the scenario proved nothing"


async def _settled(engine: AsyncEngine, accounts: list[str]) -> bool:
    return await open_ambiguities(engine, accounts) == 0
