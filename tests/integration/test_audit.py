"""Audit log on real PostgreSQL: appends join the caller's transaction, writers serialize, triggers refuse changes."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import sys
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    CanonicalizationError,
    JsonValue,
    append,
    append_many,
    chain_hash,
    verify_chain,
)
from shared.audit.log import entry_of
from shared.db import UnitOfWork, sessionmaker_for
from shared.observability.correlation import correlation_scope

REPO_ROOT = Path(__file__).resolve().parents[2]


class Abort(Exception):
    """Raised inside a unit of work to make it roll back."""


def new_chain() -> str:
    return f"t-{uuid.uuid4().hex}"


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return sessionmaker_for(engine)


async def append_entries(sessionmaker: async_sessionmaker[AsyncSession], chain: str, count: int) -> list[AuditRecord]:
    async with UnitOfWork(sessionmaker) as uow:
        return [
            await append(
                uow.session,
                actor="operator-1",
                action="order.submit",
                target=f"order:{index}",
                details={"quantity": Decimal("0.5"), "index": index},
                chain=chain,
            )
            for index in range(count)
        ]


async def stored_counts(engine: AsyncEngine, chain: str) -> tuple[int, int]:
    async with engine.connect() as connection:
        entries = await connection.scalar(
            text("SELECT count(*) FROM audit.audit_log WHERE chain = :chain"), {"chain": chain}
        )
        heads = await connection.scalar(
            text("SELECT count(*) FROM audit.chain_heads WHERE chain = :chain"), {"chain": chain}
        )
    return int(entries or 0), int(heads or 0)


async def test_rolled_back_append_leaves_nothing(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    positions: list[int] = []

    async def append_then_fail() -> None:
        async with UnitOfWork(sessionmaker) as uow:
            record = await append(
                uow.session, actor="op", action="limit.change", target="acct:1", details={}, chain=chain
            )
            positions.append(record.position)
            raise Abort

    with pytest.raises(Abort):
        await append_then_fail()

    assert positions == [1]

    assert await stored_counts(engine, chain) == (0, 0)
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    assert report.ok
    assert report.checked_rows == 0


async def test_appends_form_a_valid_chain(engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    chain = new_chain()
    records = await append_entries(sessionmaker, chain, 5)
    for _ in range(10):  # and one entry per transaction
        records += await append_entries(sessionmaker, chain, 1)

    assert [record.position for record in records] == list(range(1, 16))
    assert records[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(records))
    last = records[-1]
    entry = entry_of(
        chain=chain,
        position=last.position,
        occurred_at=last.occurred_at,
        actor=last.actor,
        action=last.action,
        target=last.target,
        details=last.details,
        correlation_id=last.correlation_id,
    )
    assert chain_hash(last.prev_hash, entry) == last.hash
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    async with UnitOfWork(sessionmaker) as uow:  # a session works as well as a connection
        through_session = await verify_chain(uow.session, chain)
    assert report.ok, report.first_break
    assert (report.checked_rows, report.head_length, report.head_hash) == (15, 15, last.hash)
    assert through_session == report


async def test_details_hash_the_same_after_the_jsonb_round_trip(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    details: dict[str, JsonValue] = {
        "price": Decimal("64000.50"),
        "ratio": 0.1,
        "tiny": 1e-7,
        "whole_float": 2.0,
        "negative_zero": -0.0,
        "largest_int": 2**53 - 1,
        "at": datetime(2025, 3, 1, 12, 0, 0, 7, tzinfo=UTC) + timedelta(hours=1),
        "day": date(2025, 3, 1),
        "id": uuid.UUID(int=7),
        "nested": {"list": [1, "two", None, True, {"z": [], "a": {}}], "tuple": (1, 2)},
        "unicode": 'é ü 😀 \u2028 \t"quoted"',
        "\u00e9key": "accented key",
    }
    occurred_at = datetime(2025, 3, 1, 9, 30, 0, 123_456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    async with UnitOfWork(sessionmaker) as uow:
        record = await append(
            uow.session,
            actor="op",
            action="key.rotate",
            target="k",
            details=details,
            chain=chain,
            occurred_at=occurred_at,
        )
    assert record.details["price"] == "64000.50"
    assert record.occurred_at == occurred_at
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT details FROM audit.audit_log WHERE chain = :c"), {"c": chain})
        report = await verify_chain(connection, chain)
    assert stored == record.details
    assert report.ok, report.first_break


@pytest.mark.parametrize(
    "bad_details",
    [
        {"x": math.nan},
        {"x": math.inf},
        {"x": Decimal("NaN")},
        {"x": 2**53},
        {"x": 1e20},
        {"x": datetime(2025, 1, 1)},  # noqa: DTZ001 - a naive datetime is the point
        {"x": "nul \x00 inside"},
        {"x": "lone surrogate \ud800"},
        {"x": {1: "int key"}},
        {"x": {1, 2}},
        {"x": b"bytes"},
    ],
    ids=[
        "nan",
        "inf",
        "decimal-nan",
        "int-2**53",
        "float-1e20",
        "naive",
        "nul",
        "surrogate",
        "int-key",
        "set",
        "bytes",
    ],
)
async def test_unstorable_details_are_refused_before_the_chain_is_touched(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], bad_details: dict[str, JsonValue]
) -> None:
    chain = new_chain()
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(CanonicalizationError):
            await append(uow.session, actor="op", action="a", target="t", details=bad_details, chain=chain)
    assert await stored_counts(engine, chain) == (0, 0)


async def test_naive_occurred_at_and_empty_actor_are_refused(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(CanonicalizationError):
            await append(
                uow.session,
                actor="op",
                action="a",
                target="t",
                details={},
                chain=new_chain(),
                occurred_at=datetime(2025, 1, 1),  # noqa: DTZ001 - a naive datetime is the point
            )
        with pytest.raises(CanonicalizationError):
            await append(uow.session, actor="", action="a", target="t", details={}, chain=new_chain())


async def test_correlation_id_defaults_to_the_current_one(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    chain = new_chain()
    async with UnitOfWork(sessionmaker) as uow:
        with correlation_scope("req-42"):
            from_context = await append(uow.session, actor="op", action="a", target="t", details={}, chain=chain)
            explicit = await append(
                uow.session, actor="op", action="a", target="t", details={}, chain=chain, correlation_id="given"
            )
        outside = await append(uow.session, actor="op", action="a", target="t", details={}, chain=chain)
    assert (from_context.correlation_id, explicit.correlation_id, outside.correlation_id) == ("req-42", "given", None)


async def test_concurrent_appends_from_separate_transactions_form_one_chain(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()  # a new chain, so the writers also race to create its genesis head
    writers, appends_each = 10, 5
    barrier = asyncio.Barrier(writers)

    async def writer(index: int) -> list[int]:
        await barrier.wait()
        positions = []
        for attempt in range(appends_each):
            async with UnitOfWork(sessionmaker) as uow:
                record = await append(
                    uow.session, actor=f"writer-{index}", action="a", target="t", details={"n": attempt}, chain=chain
                )
            positions.append(record.position)
        return positions

    results = await asyncio.gather(*(writer(index) for index in range(writers)))

    positions = sorted(position for result in results for position in result)
    assert positions == list(range(1, writers * appends_each + 1))
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    assert report.ok, report.first_break
    assert report.checked_rows == report.head_length == writers * appends_each


async def refused(engine: AsyncEngine, statement: str, chain: str) -> DBAPIError:
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError) as caught:
            await connection.execute(text(statement), {"chain": chain})
    return caught.value


async def test_app_role_is_not_a_superuser(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        is_superuser = await connection.scalar(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    assert is_superuser is False


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.audit_log SET details = '{\"forged\": true}' WHERE chain = :chain",
        "UPDATE audit.audit_log SET position = position + 100 WHERE chain = :chain",
        "DELETE FROM audit.audit_log WHERE chain = :chain",
        "TRUNCATE audit.audit_log",
        "TRUNCATE audit.audit_log CASCADE",
    ],
    ids=["update-details", "update-position", "delete", "truncate", "truncate-cascade"],
)
async def test_app_role_cannot_change_entries(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], statement: str
) -> None:
    chain = new_chain()
    await append_entries(sessionmaker, chain, 3)

    error = await refused(engine, statement, chain)

    assert error.orig is not None
    assert getattr(error.orig, "sqlstate", None) == "42501"
    assert error.orig.diag.message_primary == "audit.audit_log is append-only"  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    assert report.ok
    assert report.checked_rows == 3


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("DELETE FROM audit.chain_heads WHERE chain = :chain", "audit.chain_heads rows cannot be deleted"),
        ("TRUNCATE audit.chain_heads", "audit.chain_heads rows cannot be deleted"),
        (
            "UPDATE audit.chain_heads SET length = length - 1 WHERE chain = :chain",
            "audit.chain_heads may only advance to the newest entry of its chain",
        ),
        (
            "INSERT INTO audit.audit_log (chain, position, occurred_at, actor, action, target, details, prev_hash, hash)"
            " VALUES (:chain, 9, now(), 'x', 'x', 'x', '{}', repeat('0', 64), repeat('0', 64))",
            "audit.audit_log: entry does not extend the head of chain",
        ),
    ],
    ids=["delete-head", "truncate-heads", "shrink-head", "insert-off-head"],
)
async def test_app_role_cannot_rewind_or_bypass_the_chain_head(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession], statement: str, message: str
) -> None:
    chain = new_chain()
    await append_entries(sessionmaker, chain, 2)

    error = await refused(engine, statement, chain)

    assert error.orig is not None
    assert error.orig.diag.message_primary is not None  # type: ignore[attr-defined]
    assert error.orig.diag.message_primary.startswith(message)  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    assert report.ok
    assert report.checked_rows == 2


async def test_cli_verify_exits_zero_for_an_intact_chain(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    await append_entries(sessionmaker, chain, 4)
    # The URL comes from the environment here, as `aether audit verify` reads it in production.
    environment = {**os.environ, "AETHER_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.audit.cli", "verify", "--chain", chain, "--json",
        cwd=REPO_ROOT, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    document = json.loads(stdout)
    assert document["ok"] is True
    assert [(c["chain"], c["checked_rows"], c["first_break"]) for c in document["chains"]] == [(chain, 4, None)]


async def test_append_many_chains_a_transactions_entries_in_order(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    first = await append_entries(sessionmaker, chain, 2)
    batch = [AuditEntry(actor="op", action="order.OrderCreated", target="order:1", details={"n": n}) for n in range(3)]
    async with UnitOfWork(sessionmaker) as uow:
        records = await append_many(uow.session, batch, chain=chain)
        assert await append_many(uow.session, [], chain=chain) == []

    assert [record.position for record in records] == [3, 4, 5]
    assert [record.details for record in records] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert records[0].prev_hash == first[-1].hash
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(records))
    assert [record.seq for record in records] == sorted(record.seq for record in records)
    assert records[0].seq > first[-1].seq
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
        stored = (
            await connection.execute(
                text("SELECT seq, hash FROM audit.audit_log WHERE chain = :chain AND position > 2 ORDER BY position"),
                {"chain": chain},
            )
        ).all()
    assert report.ok, report.first_break
    assert (report.head_length, report.head_hash) == (5, records[-1].hash)
    assert [(row.seq, row.hash) for row in stored] == [(record.seq, record.hash) for record in records]


async def test_append_many_refuses_a_bad_entry_before_the_chain_is_touched(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    good = AuditEntry(actor="op", action="a", target="t", details={})
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(CanonicalizationError):
            await append_many(
                uow.session, [good, AuditEntry(actor="", action="a", target="t", details={})], chain=chain
            )
    assert await stored_counts(engine, chain) == (0, 0)


async def test_concurrent_batches_form_one_chain(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    chain = new_chain()
    writers, batch = 6, 3
    barrier = asyncio.Barrier(writers)

    async def writer(index: int) -> list[int]:
        await barrier.wait()
        entries = [AuditEntry(actor=f"writer-{index}", action="a", target="t", details={"n": n}) for n in range(batch)]
        async with UnitOfWork(sessionmaker) as uow:
            records = await append_many(uow.session, entries, chain=chain)
        return [record.position for record in records]

    results = await asyncio.gather(*(writer(index) for index in range(writers)))

    assert all(positions == list(range(positions[0], positions[0] + batch)) for positions in results)
    assert sorted(position for positions in results for position in positions) == list(range(1, writers * batch + 1))
    async with engine.connect() as connection:
        report = await verify_chain(connection, chain)
    assert report.ok, report.first_break
