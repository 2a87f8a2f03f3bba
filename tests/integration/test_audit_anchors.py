"""Audit anchors end to end: the reports service's anchoring job signs and publishes anchors on its cadence,
`GET /audit` and `GET /audit/anchors` serve auditors only, and `aether audit verify --anchors-from kafka` checks the
log against the anchors read back from `audit.anchors.v1` with the public key only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import rfc8785
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.reports.app import create_app
from services.reports.config import ReportsSettings
from shared.audit import append
from shared.audit.anchor_verify import anchors_from_envelopes, read_anchor_topic
from shared.audit.anchors import (
    Anchor,
    AnchorPolicy,
    InvalidAnchor,
    anchor_signature_valid,
    load_anchor_public_key,
    load_anchors_from_table,
    sign_anchor,
)
from shared.auth.keys import generate_private_key, public_key_pem, write_key_pair
from shared.auth.roles import Role
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db import UnitOfWork, sessionmaker_for
from shared.events.topics import AUDIT_ANCHORS
from tests.conftest import libpq_url
from tests.helpers import eventually, own_database
from tests.kit.auth import KEY as TOKEN_KEY
from tests.kit.auth import token as kit_token

REPO_ROOT = Path(__file__).resolve().parents[2]
EVERY_ENTRIES = 3
EVERY_S = 0.6


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The anchoring job anchors every chain of its database: this module keeps its own."""
    with own_database(database_url, "audit_anchors") as url:
        yield url


@pytest.fixture(scope="module")
def anchor_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    files = write_key_pair(tmp_path_factory.mktemp("anchor-keys"))
    return files.private_path, files.public_path


@pytest.fixture
async def engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def reports(
    settings: AetherSettings, module_database_url: str, anchor_keys: tuple[Path, Path]
) -> AsyncIterator[httpx.AsyncClient]:
    reports_settings = ReportsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        jwt_public_key=SecretStr(public_key_pem(TOKEN_KEY.public_key()).decode()),
        log_level="WARNING",
        audit_anchor_every_entries=EVERY_ENTRIES,
        audit_anchor_every_s=EVERY_S,
        audit_anchor_poll_s=0.05,
        audit_anchor_private_key_file=anchor_keys[0],
        audit_anchor_public_key_file=anchor_keys[1],
    )
    app = create_app(reports_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as client:
            yield client


def token(*roles: Role) -> dict[str, str]:
    return kit_token(*roles, subject="audrey")


AUDITOR = token(Role.AUDITOR)


async def append_entries(engine: AsyncEngine, chain: str, count: int, *, actor: str = "operator-1") -> None:
    async with UnitOfWork(sessionmaker_for(engine)) as uow:
        for index in range(count):
            await append(
                uow.session, actor=actor, action="risk.halt", target=f"account:{index}",
                details={"reason": "test", "index": index}, chain=chain,
            )  # fmt: skip


async def anchored_lengths(engine: AsyncEngine, chain: str) -> list[int]:
    async with engine.connect() as connection:
        return [anchor.length for anchor in await load_anchors_from_table(connection, chains=[chain])]


def test_policy_anchors_on_count_or_time() -> None:
    policy = AnchorPolicy(every_entries=3, every_s=10)
    now = datetime.now(UTC)
    assert policy.due(length=1, last_length=0, last_at=None, now=now)  # first entries: at once
    assert not policy.due(length=5, last_length=3, last_at=now, now=now)
    assert policy.due(length=6, last_length=3, last_at=now, now=now)
    assert policy.due(length=4, last_length=3, last_at=now - timedelta(seconds=10), now=now)
    assert not policy.due(length=3, last_length=3, last_at=now - timedelta(days=1), now=now)


def test_an_anchor_is_signed_over_rfc8785_and_any_change_breaks_it() -> None:
    key = generate_private_key()
    anchor = sign_anchor(key, chain="main", length=7, head_hash="ab" * 32, anchored_at=datetime(2026, 1, 2, tzinfo=UTC))
    assert anchor.signed_bytes() == rfc8785.dumps(anchor.signed_fields())
    assert anchor.signed_bytes().startswith(b'{"anchored_at":"2026-01-02T00:00:00.000000Z","chain":"main"')
    assert anchor_signature_valid(key.public_key(), anchor)
    assert Anchor.from_payload(json.loads(json.dumps(anchor.as_payload()))) == anchor
    changes: list[dict[str, Any]] = [
        {"chain": "other"},
        {"length": 8},
        {"head_hash": "cd" * 32},
        {"anchored_at": anchor.anchored_at + timedelta(microseconds=1)},
        {"key_id": "x"},
    ]
    for change in changes:
        assert not anchor_signature_valid(key.public_key(), dataclasses.replace(anchor, **change)), change
    assert not anchor_signature_valid(generate_private_key().public_key(), anchor)
    with pytest.raises(InvalidAnchor):
        Anchor.from_payload({**anchor.as_payload(), "length": "7"})


def test_production_requires_the_anchor_key(tmp_path: Path) -> None:
    production = {
        "env": "production",
        "database_url": "postgresql+psycopg://app:s3cret-Value@db.internal:5432/aether?sslmode=require",
        "redis_url": "rediss://redis.internal:6380/0",
        "kafka_security_protocol": "SSL",
        "key_provider": "kms",
        "jwt_public_key": public_key_pem(TOKEN_KEY.public_key()).decode(),
    }
    with pytest.raises(ConfigurationError, match="AETHER_AUDIT_ANCHOR_PRIVATE_KEY_FILE"):
        load_settings(ReportsSettings, **production)
    configured = load_settings(ReportsSettings, **production, audit_anchor_private_key_file=tmp_path / "k.pem")
    assert configured.audit_anchor_private_key_file == tmp_path / "k.pem"


async def test_the_job_anchors_every_n_entries_or_t_seconds_and_publishes(
    engine: AsyncEngine, reports: httpx.AsyncClient, anchor_keys: tuple[Path, Path]
) -> None:
    chain = f"job-{uuid.uuid4().hex[:12]}"
    await append_entries(engine, chain, 2)
    assert await eventually(lambda: _has(engine, chain, 2), timeout_s=10) == [2]  # first anchor at once

    await append_entries(engine, chain, 1)  # 1 pending < 3 entries: only the time rule anchors it
    await eventually(lambda: _has(engine, chain, 3), timeout_s=10)
    # The time rule counts from the previous anchor (not from the append), so that is the gap to check.
    async with engine.connect() as connection:
        by_length = {a.length: a for a in await load_anchors_from_table(connection, chains=[chain])}
    assert (by_length[3].anchored_at - by_length[2].anchored_at).total_seconds() >= EVERY_S

    await append_entries(engine, chain, EVERY_ENTRIES)  # 3 pending: anchored by count
    assert await eventually(lambda: _has(engine, chain, 6), timeout_s=10) == [2, 3, 6]

    public_key = load_anchor_public_key(anchor_keys[1])

    async def published() -> list[int]:
        values = await read_anchor_topic(_bootstrap(), AUDIT_ANCHORS)
        anchors, _ = anchors_from_envelopes(values)
        mine = [anchor for anchor in anchors if anchor.chain == chain]
        assert all(anchor_signature_valid(public_key, anchor) for anchor in mine)
        return sorted(anchor.length for anchor in mine) if len(mine) >= 3 else []

    assert await eventually(published, timeout_s=20) == [2, 3, 6]


async def _has(engine: AsyncEngine, chain: str, length: int) -> list[int]:
    lengths = await anchored_lengths(engine, chain)
    return lengths if length in lengths else []


def _bootstrap() -> str:
    return os.environ["AETHER_KAFKA_BOOTSTRAP"]


async def test_get_audit_pages_filters_and_refuses_non_auditors(
    engine: AsyncEngine, reports: httpx.AsyncClient
) -> None:
    chain = f"api-{uuid.uuid4().hex[:12]}"
    await append_entries(engine, chain, 5, actor="alice")
    await append_entries(engine, chain, 2, actor="bob")

    first = await reports.get("/audit", params={"chain": chain, "limit": 3}, headers=AUDITOR)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [item["position"] for item in page["items"]] == [1, 2, 3]
    second = await reports.get(
        "/audit", params={"chain": chain, "limit": 3, "cursor": page["next_cursor"]}, headers=AUDITOR
    )
    assert [item["position"] for item in second.json()["items"]] == [4, 5, 6]
    bob = await reports.get("/audit", params={"chain": chain, "actor": "bob"}, headers=AUDITOR)
    assert [item["position"] for item in bob.json()["items"]] == [6, 7]
    assert bob.json()["next_cursor"] is None
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await reports.get("/audit", params={"chain": chain, "since": future}, headers=AUDITOR)
    assert later.json()["items"] == []

    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        assert (await reports.get("/audit", headers=token(role))).status_code == 403
        assert (await reports.get("/audit/anchors", headers=token(role))).status_code == 403
    assert (await reports.get("/audit")).status_code == 401

    now = datetime.now(UTC)
    backwards = {"since": now.isoformat(), "until": (now - timedelta(seconds=1)).isoformat()}
    bad = await reports.get("/audit", params=backwards, headers=AUDITOR)
    assert bad.status_code == 422
    assert "until" in bad.text
    naive = await reports.get("/audit", params={"since": "2025-01-01T00:00:00"}, headers=AUDITOR)
    assert naive.status_code == 422
    assert "since" in naive.text

    anchors = await eventually(lambda: _anchor_page(reports, chain), timeout_s=10)
    assert anchors[-1]["length"] == 7
    assert {"signature", "key_id", "head_hash", "anchored_at"} <= anchors[-1].keys()


async def _anchor_page(reports: httpx.AsyncClient, chain: str) -> list[dict[str, Any]]:
    response = await reports.get("/audit/anchors", params={"chain": chain}, headers=AUDITOR)
    items: list[dict[str, Any]] = response.json()["items"]
    return items if items and items[-1]["length"] == 7 else []


async def test_verify_from_kafka_detects_truncation_with_a_moved_head(
    engine: AsyncEngine,
    reports: httpx.AsyncClient,
    module_database_url: str,
    superuser_url: str,
    anchor_keys: tuple[Path, Path],
) -> None:
    chain = f"kafka-{uuid.uuid4().hex[:12]}"
    await append_entries(engine, chain, 4)
    await eventually(lambda: _has(engine, chain, 4), timeout_s=10)

    async def cli() -> tuple[int | None, dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.audit.cli", "verify", "--database-url", module_database_url,
            "--chain", chain, "--anchors", "--anchors-from", "kafka", "--public-key", str(anchor_keys[1]), "--json",
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert stdout, stderr.decode()
        document: dict[str, Any] = json.loads(stdout)
        return process.returncode, document

    async def intact() -> dict[str, Any] | None:
        code, document = await cli()
        report = document["chains"][0]
        return document if code == 0 and report["anchored_length"] == 4 else None

    await eventually(intact, timeout_s=30, interval_s=0.5)

    # A superuser deletes the anchored tail AND the anchors table, and moves the head back: only Kafka remembers.
    own_super = libpq_url(
        make_url(superuser_url).set(database=make_url(module_database_url).database).render_as_string(False)
    )
    async with await psycopg.AsyncConnection.connect(own_super, autocommit=True) as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position > 2", (chain,))
        await conn.execute(
            "UPDATE audit.chain_heads SET length = 2,"
            " head_hash = (SELECT hash FROM audit.audit_log WHERE chain = %s AND position = 2) WHERE chain = %s",
            (chain, chain),
        )
        await conn.execute("DELETE FROM anchors.audit_anchors WHERE chain = %s", (chain,))

    code, document = await cli()
    [report] = document["chains"]
    assert code == 1
    assert (report["first_break"]["kind"], report["first_break"]["position"]) == ("truncated", 3)
