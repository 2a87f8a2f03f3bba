"""OMS processes that start together reconcile in turns: the second waits on the PostgreSQL advisory lock until
the first's walk is over (several OMS processes, docs/oms.md)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oms.consumers import RECONCILE_LOCK_KEY, reconciliation_turn
from tests.helpers import eventually


async def _waiting_on_the_lock(engine: AsyncEngine) -> bool:
    """A session waits for the reconciliation lock (pg_locks splits the 64-bit key into classid and objid)."""
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"
            ),
            {"high": (RECONCILE_LOCK_KEY >> 32) & 0xFFFFFFFF, "low": RECONCILE_LOCK_KEY & 0xFFFFFFFF},
        )
    return bool(waiting)


async def test_a_second_start_up_reconciliation_waits_for_the_first(engine: AsyncEngine) -> None:
    walks: list[str] = []

    async def second() -> None:
        async with reconciliation_turn(engine):
            walks.append("second")

    async with reconciliation_turn(engine):
        waiting = asyncio.create_task(second())
        await eventually(lambda: _waiting_on_the_lock(engine), message="the second walk waits for the lock")
        walks.append("first")
    await waiting

    assert walks == ["first", "second"]
    async with reconciliation_turn(engine):  # released: a later start takes its turn at once
        walks.append("third")
    assert walks == ["first", "second", "third"]
