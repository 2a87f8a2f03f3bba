"""R2: a crash loses no acknowledged order.

An OMS process (`oms_crash_worker.py`, forked from a server that imported the OMS once) places seeded
orders on the paper venue and is SIGKILLed at a seeded point of the submit path: before the order
transaction commits, after the commit before the venue is called, after the venue accepted (and maybe
filled) before the OMS applied anything, after the answer was applied, or by the test at a random moment.
Every `place()` that returned was appended and fsynced to an acknowledgement file. After each kill a new
OMS (new engines, a restored paper venue, a new OrderService) runs `reconcile()`, and the OMS database is
compared with the paper venue's own tables: every acknowledged order is in oms.orders and, once past
SUBMITTED, at the venue; one venue order per client id; no open order on one side only; fills, ledger
totals and positions agree. The tests run in a database of their own, because `reconcile()` reconciles
every account it finds.

Size: 200 kills (`AETHER_RELIABILITY_SCALE` multiplies it), one short OMS process per kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.config import OmsSettings
from services.oms.service import ReconcileReport
from shared.domain.types import OrderId
from tests.reliability.oms_crash_worker import (
    ACTOR,
    QUOTE,
    CrashPoint,
    divergences,
    oms_settings,
    own_database,
    publish_book,
    start_oms,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("AETHER_RELIABILITY_SCALE", "1"))
RUNS = max(5, round(200 * SCALE))
ACCOUNTS = 3
DEPOSIT_USD = Decimal("1000000")
MAX_ORDERS_BEFORE_CRASH = 2  # the crash hits order 1, 2 or 3 of its process
EXTERNAL_ORDERS = 8  # an externally killed process places up to this many orders
EXTERNAL_KILL_MAX_DELAY_S = 0.35
MAX_OPEN_PER_ACCOUNT = 2  # older resting orders are canceled between runs, so reconcile stays small
POINTS = list(CrashPoint)
EVENT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def own_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "r2") as url:
        yield url


@pytest.fixture
async def own_engine(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(own_database_url, pool_size=2)
    yield engine
    await engine.dispose()


class ForkServer:
    """The worker's fork server: one OMS child per run spec, events read back as JSON lines."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.reliability.oms_crash_worker",
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert (await self.event())["event"] == "serving"

    async def event(self) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=EVENT_TIMEOUT_S)
        assert line, f"the fork server died: {self.log_path.read_text()[-3_000:]}"
        event: dict[str, Any] = json.loads(line)
        return event

    async def run(self, spec: dict[str, Any], kill_delay_s: float | None) -> dict[str, Any]:
        """Fork a child for `spec`; kill it after `kill_delay_s` once ready (None: it kills itself)."""
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(spec) + "\n").encode())
        await self.process.stdin.drain()
        while True:
            event = await self.event()
            if event["event"] == "ready" and kill_delay_s is not None:
                await asyncio.sleep(kill_delay_s)  # the seeded kill moment, not a wait for a condition
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGKILL)
            elif event["event"] == "placed_all":
                # The crash point was never reached (or every order was placed before an external kill).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event["pid"], signal.SIGKILL)
                spec["missed"] = kill_delay_s is None
            elif event["event"] == "exited":
                return event

    async def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout=15)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class OrderPlan:
    """Seeded order bodies; sells only what the account holds free, so that no order is denied."""

    def __init__(self, rng: random.Random, symbol: str) -> None:
        self.rng = rng
        self.symbol = symbol

    def body(self, account: str, client_order_id: str, free_base: Decimal) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choices(["limit_buy", "limit_sell", "market_buy", "market_sell", "taker_buy"], [3, 2, 3, 2, 1])[0]
        quantity = Decimal(rng.randint(1, 50)) / 100
        if kind in {"limit_sell", "market_sell"}:
            sellable = (free_base / 4).quantize(Decimal("0.0001"))
            if sellable < Decimal("0.01"):
                kind = "limit_buy"
            else:
                quantity = min(quantity, sellable)
        body: dict[str, Any] = {
            "account_id": account,
            "client_order_id": client_order_id,
            "symbol": self.symbol,
            "quantity": str(quantity),
        }
        if kind == "limit_buy":
            price = Decimal(rng.randint(960, 995)) / 10  # below the best bid 99.9: rests
            body.update(side="buy", type="limit", limit_price=str(price))
        elif kind == "limit_sell":
            price = Decimal(rng.randint(1005, 1039)) / 10  # above the best ask 100.0: rests
            body.update(side="sell", type="limit", limit_price=str(price))
        elif kind == "taker_buy":
            body.update(side="buy", type="limit", limit_price="100.4")  # crosses the ask: fills as taker
        else:
            body.update(side="buy" if kind == "market_buy" else "sell", type="market")
        return body


async def free_base(engine: AsyncEngine, account: str, asset: str) -> Decimal:
    async with engine.connect() as conn:
        free = await conn.scalar(
            sa.text("SELECT total - reserved FROM oms.balances WHERE account_id = :a AND asset = :s"),
            {"a": account, "s": asset},
        )
    return Decimal(0) if free is None else Decimal(free)


def read_acks(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Acknowledged orders, and how many torn lines (a kill between write and newline) were skipped."""
    if not path.exists():
        return [], 0
    acks, torn = [], 0
    for line in path.read_text().splitlines():
        try:
            acks.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    return acks, torn


async def lost_acknowledged(engine: AsyncEngine, acks: Sequence[dict[str, Any]]) -> list[str]:
    """Acknowledged orders missing from oms.orders, or past SUBMITTED in the OMS and unknown to the venue."""
    if not acks:
        return []
    keys = [f"{a['account_id']}/{a['client_order_id']}" for a in acks]
    async with engine.connect() as conn:
        oms: dict[str, str] = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT account_id || '/' || client_order_id, status FROM oms.orders"
                        " WHERE account_id || '/' || client_order_id = ANY(:keys)"
                    ),
                    {"keys": keys},
                )
            ).all()
        )
        venue = set(
            (
                await conn.scalars(
                    sa.text(
                        "SELECT account_id || '/' || client_order_id FROM paper.orders"
                        " WHERE account_id || '/' || client_order_id = ANY(:keys)"
                    ),
                    {"keys": keys},
                )
            ).all()
        )
    past_submitted = {"accepted", "partially_filled", "filled", "pending_cancel", "canceled", "expired"}
    return [key for key in keys if key not in oms or (oms[key] in past_submitted and key not in venue)]


async def crash_order_state(engine: AsyncEngine, account: str, client_order_id: str) -> tuple[str | None, str | None]:
    """(OMS status, venue status) of the order the crash interrupted; None where it does not exist."""
    params = {"a": account, "c": client_order_id}
    async with engine.connect() as conn:
        oms = await conn.scalar(
            sa.text("SELECT status FROM oms.orders WHERE account_id = :a AND client_order_id = :c"), params
        )
        venue = await conn.scalar(
            sa.text("SELECT status FROM paper.orders WHERE account_id = :a AND client_order_id = :c"), params
        )
    return oms, venue


def crash_point_holds(point: CrashPoint, oms_status: str | None, venue_status: str | None) -> bool:
    """Did the crash land where it claims? (A check of the test itself.)"""
    if point is CrashPoint.BEFORE_COMMIT:
        return oms_status is None and venue_status is None
    if point is CrashPoint.EXTERNAL:
        return True
    return (
        oms_status is not None and oms_status != "submitted" and (venue_status is not None or oms_status == "rejected")
    )


async def trim_open_orders(engine: AsyncEngine, oms_cancel: Callable[[OrderId, str], Any]) -> int:
    """Cancel the oldest open orders beyond MAX_OPEN_PER_ACCOUNT (through the OMS, as an operator would)."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT order_id, account_id FROM oms.orders WHERE status IN ('accepted', 'partially_filled')"
                    " ORDER BY created_at DESC"
                )
            )
        ).all()
    seen: Counter[str] = Counter()
    canceled = 0
    for order_id, account in rows:
        seen[account] += 1
        if seen[account] > MAX_OPEN_PER_ACCOUNT:
            await oms_cancel(OrderId(order_id), ACTOR)
            canceled += 1
    return canceled


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Tally:
    """What the runs found."""

    def __init__(self) -> None:
        self.kills = 0
        self.not_sigkilled: list[dict[str, Any]] = []
        self.missed_points = 0
        self.lost: list[str] = []
        self.duplicates = 0
        self.orphans = 0
        self.other_divergences: dict[str, int] = defaultdict(int)
        self.repairs: Counter[str] = Counter()
        self.unexpected_repairs = 0
        self.point_failures: list[str] = []
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.reconcile_ms: list[float] = []  # restart (engines, venue restored, market fed) + reconcile()
        self.reconcile_only_ms: list[float] = []
        self.worker_ms: list[float] = []

    def violations(self) -> int:
        return (
            len(self.not_sigkilled)
            + self.missed_points
            + len(self.lost)
            + self.duplicates
            + self.orphans
            + sum(self.other_divergences.values())
            + self.unexpected_repairs
            + len(self.point_failures)
        )

    def add_report(self, report: ReconcileReport) -> None:
        for name in ("fills_applied", "statuses_applied", "resubmitted", "unknown_to_venue", "external_canceled"):
            self.repairs[name] += getattr(report, name)
        self.repairs["balance_adjustments"] += report.balance_adjustments
        # After a crash of our own OMS none of these may be needed: each would hide a lost order or fill.
        self.unexpected_repairs += report.unknown_to_venue + report.external_canceled + report.balance_adjustments


async def test_sigkill_on_the_submit_path_loses_no_acknowledged_order(
    own_database_url: str,
    own_engine: AsyncEngine,
    redis_url: str,
    reliability_seed: int,
    write_reliability_record: Callable[[dict[str, Any]], Path],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    rng = random.Random(f"{reliability_seed}:r2")
    tag = uuid.uuid4().hex[:6].upper()
    symbol, base = f"R2{tag}/{QUOTE}", f"R2{tag}"
    accounts = [f"r2-{tag.lower()}-{n}" for n in range(ACCOUNTS)]
    settings = oms_settings(own_database_url, redis_url, [symbol])
    redis = Redis.from_url(redis_url)
    await publish_book(redis, [symbol])
    setup = await start_oms(settings)
    for account in accounts:
        await setup.service.deposit(account, QUOTE, DEPOSIT_USD, ACTOR, reference=uuid.uuid4().hex)
    await setup.close()

    ack_path = tmp_path / "acks.jsonl"
    server = ForkServer(tmp_path / "oms-worker.log")
    plan = OrderPlan(rng, symbol)
    tally = Tally()
    points = [POINTS[i % len(POINTS)] for i in range(RUNS)]
    rng.shuffle(points)
    await server.start()
    try:
        for run, point in enumerate(points):
            await one_run(run, point, rng, plan, server, settings, own_engine, accounts, base, ack_path, tally)
    finally:
        await server.stop()
        await redis.delete(f"marketdata:book:{symbol}")
        await redis.aclose()

    acks, torn = read_acks(ack_path)
    tally.lost = await lost_acknowledged(own_engine, acks)  # every acknowledgement of every run, at the end
    final = await divergences(own_engine, accounts)
    record = {
        "id": "R2-crash",
        "seed": reliability_seed,
        "cases": RUNS,
        "violations": tally.violations() + final.total,
        "runs": RUNS,
        "kills": tally.kills,
        "lost": len(tally.lost),
        "duplicate_venue_orders": tally.duplicates,
        "orphans_after_reconcile": tally.orphans,
        "other_divergences": dict(tally.other_divergences),
        "final_divergences": final.total,
        "time_to_reconciled_ms": {
            "p50": round(percentile(tally.reconcile_ms, 0.50), 1),
            "p95": round(percentile(tally.reconcile_ms, 0.95), 1),
            "max": round(max(tally.reconcile_ms), 1),
        },
        "reconcile_call_ms": {
            "p50": round(percentile(tally.reconcile_only_ms, 0.50), 1),
            "p95": round(percentile(tally.reconcile_only_ms, 0.95), 1),
        },
        "worker_process_ms": {
            "p50": round(percentile(tally.worker_ms, 0.50), 1),
            "p95": round(percentile(tally.worker_ms, 0.95), 1),
        },
        "crash_points": dict(Counter(point.value for point in points)),
        "crash_order_outcomes": {point: dict(counts) for point, counts in sorted(tally.outcomes.items())},
        "acknowledged_orders": len(acks),
        "torn_ack_lines": torn,
        "repairs": dict(tally.repairs),
        "scale": SCALE,
        "duration_s": round(time.monotonic() - started, 1),
    }
    write_reliability_record(record)

    assert not tally.not_sigkilled, tally.not_sigkilled[:5]
    assert tally.kills == RUNS
    assert tally.missed_points == 0, "a crash point was never reached"
    assert tally.lost == []
    assert tally.duplicates == 0
    assert tally.orphans == 0
    assert dict(tally.other_divergences) == {}
    assert final.total == 0, final.summary()
    assert tally.unexpected_repairs == 0, dict(tally.repairs)
    assert tally.point_failures == [], tally.point_failures[:5]
    assert tally.repairs["resubmitted"] > 0, "no order was left SUBMITTED by a crash: the scenario proved little"
    assert tally.repairs["fills_applied"] > 0, "no fill was left for reconcile to apply: the scenario proved little"


async def one_run(
    run: int,
    point: CrashPoint,
    rng: random.Random,
    plan: OrderPlan,
    server: ForkServer,
    settings: OmsSettings,
    engine: AsyncEngine,
    accounts: list[str],
    base: str,
    ack_path: Path,
    tally: Tally,
) -> None:
    """Kill one OMS process at `point`, restart, reconcile, compare with the venue."""
    account = rng.choice(accounts)
    external = point is CrashPoint.EXTERNAL
    count = EXTERNAL_ORDERS if external else rng.randint(0, MAX_ORDERS_BEFORE_CRASH) + 1
    base_free = await free_base(engine, account, base)
    orders = [plan.body(account, f"r{run:04d}-{i}", base_free) for i in range(count)]
    spec = {
        "run": run,
        "database_url": settings.database_url.get_secret_value(),
        "redis_url": settings.redis_url.get_secret_value(),
        "symbols": list(settings.instruments),
        "orders": orders,
        "crash_point": point.value,
        "crash_at": count - 1,
        "ack_path": str(ack_path),
    }
    forked_at = time.perf_counter()
    exited = await server.run(spec, rng.uniform(0, EXTERNAL_KILL_MAX_DELAY_S) if external else None)
    tally.worker_ms.append((time.perf_counter() - forked_at) * 1_000)
    if exited["signal"] == signal.SIGKILL:
        tally.kills += 1
    else:
        tally.not_sigkilled.append(exited)
    tally.missed_points += 1 if spec.get("missed") else 0

    restart_started = time.perf_counter()
    oms = await start_oms(settings)
    try:
        reconcile_started = time.perf_counter()
        report = await oms.service.reconcile()
        done = time.perf_counter()
        tally.reconcile_ms.append((done - restart_started) * 1_000)
        tally.reconcile_only_ms.append((done - reconcile_started) * 1_000)
        tally.add_report(report)
        found = await divergences(engine, accounts)
        tally.duplicates += found.duplicate_venue_orders + found.duplicate_oms_orders
        tally.orphans += found.orphans
        for name, value in found.summary().items():
            if name not in {"duplicate_venue_orders", "duplicate_oms_orders", "orphans_at_venue", "orphans_in_oms"}:
                tally.other_divergences[name] += value if isinstance(value, int) else len(value)
        acks, _ = read_acks(ack_path)
        tally.lost += await lost_acknowledged(engine, [a for a in acks if a["run"] == run])
        crashed = orders[-1]
        oms_status, venue_status = await crash_order_state(engine, account, crashed["client_order_id"])
        tally.outcomes[point.value][f"{oms_status}/{venue_status}"] += 1
        if not crash_point_holds(point, oms_status, venue_status):
            tally.point_failures.append(f"run {run} {point.value}: oms={oms_status} venue={venue_status}")
        await trim_open_orders(engine, oms.service.cancel)
    finally:
        await oms.close()
