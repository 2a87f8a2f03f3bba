"""The daily-loss figure the pre-trade chain reads, against the size of the account's fill history.

Workload: one account with 0, 10,000 and 100,000 fills of history (alternating buys and sells of BTC/USD, spread
over the past 100 days), on a fresh migrated database. For each size, 500 reads of today's realized loss:
- `maintained`: what the pre-trade check runs now, the one row of `oms.daily_realized_pnl` (kept in each fill's
  transaction);
- `replay`: what it ran before, every fill of the account read and replayed at average cost
  (`shared.domain.risk_limits.realized_loss_since`).
Prints one JSON line: per size, the p50 and p99 of each in milliseconds.

Run: `python -m bench.oms_daily_loss` with the stack up (`make up` or `ops.stack_cli up`; AETHER_DATABASE_URL wins).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.common import fresh_database, stack_env
from services.oms.ledger_repository import LedgerRepository
from shared.clock import utc_day
from shared.db import UnitOfWork, sessionmaker_for
from shared.domain.risk_limits import FillRecord, realized_loss_since
from shared.domain.types import OrderSide

SIZES = (0, 10_000, 100_000)
READS = 500
ACCOUNT = "bench-daily-loss"


async def seed(engine: AsyncEngine, fills: int) -> None:
    """`fills` fills of one order of the account, and today's maintained figure."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("TRUNCATE oms.fills, oms.orders, oms.daily_realized_pnl CASCADE"))
        await conn.execute(
            sa.text("INSERT INTO oms.trading_accounts (account_id, venue) VALUES (:a, 'paper') ON CONFLICT DO NOTHING"),
            {"a": ACCOUNT},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO oms.orders (order_id, account_id, client_order_id, request_hash, venue, symbol, side,"
                " type, quantity, time_in_force, post_only, status, version, created_at, updated_at)"
                " VALUES ('bench-order', :a, 'bench-order', 'x', 'paper', 'BTC/USD', 'buy', 'market', 1e12, 'gtc',"
                " false, 'accepted', 1, now(), now())"
            ),
            {"a": ACCOUNT},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO oms.fills (venue, trade_id, order_id, account_id, symbol, side, quantity, price, fee,"
                " fee_asset, liquidity, filled_at)"
                " SELECT 'paper', 'bench-' || n, 'bench-order', :a, 'BTC/USD',"
                " CASE WHEN n % 2 = 0 THEN 'buy' ELSE 'sell' END, 0.01, 60000 + (n % 97), 0.24, 'USD', 'taker',"
                " now() - (:n - n) * interval '86 seconds'"
                " FROM generate_series(1, :n) AS n"
            ),
            {"a": ACCOUNT, "n": fills},
        )
        await conn.execute(
            sa.text("INSERT INTO oms.daily_realized_pnl (account_id, day, realized_pnl) VALUES (:a, :d, -12.5)"),
            {"a": ACCOUNT, "d": utc_day(datetime.now(UTC))},
        )


async def maintained(engine: AsyncEngine) -> Decimal:
    async with UnitOfWork(sessionmaker_for(engine)) as uow:
        pnl = await LedgerRepository(uow.session).realized_pnl_on(ACCOUNT, utc_day(datetime.now(UTC)))
    return max(Decimal(0), -pnl)


async def replay(engine: AsyncEngine) -> Decimal:
    query = sa.text(
        "SELECT symbol, side, quantity, price, fee, filled_at FROM oms.fills WHERE account_id = :a ORDER BY fill_id"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query, {"a": ACCOUNT})).all()
    fills = [FillRecord(r.symbol, OrderSide(r.side), r.quantity, r.price, r.fee, r.filled_at) for r in rows]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return realized_loss_since(fills, midnight)


async def timed(
    read: Callable[[AsyncEngine], Awaitable[Decimal]], engine: AsyncEngine, reads: int
) -> tuple[float, float]:
    samples = []
    for _ in range(reads):
        started = time.perf_counter()
        await read(engine)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return round(statistics.median(samples), 3), round(samples[int(len(samples) * 0.99) - 1], 3)


async def main() -> None:
    admin_url = os.environ.get("AETHER_DATABASE_URL") or stack_env()["AETHER_DATABASE_URL"]
    engine = create_async_engine(fresh_database(admin_url, "bench_daily_loss"), pool_size=2)
    figures: dict[str, dict[str, float]] = {}
    try:
        for size in SIZES:
            await seed(engine, size)
            await maintained(engine)  # warm the connection
            m50, m99 = await timed(maintained, engine, READS)
            r50, r99 = await timed(replay, engine, max(5, READS // max(1, size // 2_000)))
            figures[str(size)] = {
                "maintained_p50_ms": m50,
                "maintained_p99_ms": m99,
                "replay_p50_ms": r50,
                "replay_p99_ms": r99,
            }
    finally:
        await engine.dispose()
    print(json.dumps({"bench": "oms_daily_loss", "reads": READS, "history_fills": figures}))


if __name__ == "__main__":
    asyncio.run(main())
