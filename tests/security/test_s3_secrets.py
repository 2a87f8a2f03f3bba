"""RELIABILITY S3: stored exchange secrets fail closed and never leak.

Against the real stack (own database): tampered ciphertext, a blob swapped into another row, single-bit flips at
every byte position of a stored blob, an unknown version prefix and an unknown KEK must each raise a
`SecretDecryptionError` (100 %); 1,000 secrets stay readable after `rewrap_all` (the work of `aether keys rotate`)
even with the old KEK deleted; a canary secret stored through the REST API appears in no captured log line, no
API response, no Kafka payload of the topics the service produced to, and no `pg_dump` output.
Writes reports/reliability/S3-secrets.json.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from services.accounts.adapters import accounts_adapters
from services.accounts.app import create_app
from services.accounts.config import AccountsSettings
from shared.auth.keys import private_key_pem, public_key_pem
from shared.auth.roles import Role, default_scopes
from shared.config import AetherSettings
from shared.crypto import LocalFileKeyProvider, SecretDecryptionError, decrypt_secret, encrypt_secret
from shared.crypto.store import credential_row_id, load_venue_credentials, rewrap_all
from shared.observability.logging import get_logger
from tests.conftest import libpq_url
from tests.helpers import eventually, own_database
from tests.kit.auth import ISSUER, KEY
from tests.reliability.conftest import RecordWriter

ADMIN = {
    "Authorization": f"Bearer {ISSUER.issue('s3-admin', [Role.ADMIN], scopes=default_scopes([Role.ADMIN]), accounts=['*'])}"
}
PG_DUMP = Path("/usr/lib/postgresql/15/bin/pg_dump")
ROTATED_SECRETS = 1_000


@pytest.fixture(scope="module")
def s3_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "s3") as url:
        yield url


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path_factory.mktemp("s3keys") / "kek.json")


@pytest.fixture(scope="module")
def s3_settings(settings: AetherSettings, s3_database_url: str, keyring: LocalFileKeyProvider) -> AccountsSettings:
    excluded = {"jwt_public_key", "jwt_private_key", "service_name", "log_level", "database_url", "local_kek_file"}
    return AccountsSettings(
        **settings.model_dump(exclude=excluded),
        database_url=SecretStr(s3_database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
        local_kek_file=keyring.path,
        log_level="DEBUG",
    )


@pytest.fixture
async def engine(s3_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(s3_database_url)
    yield engine
    await engine.dispose()


async def store_credentials(
    client: httpx.AsyncClient, api_key: str, api_secret: str
) -> tuple[str, list[httpx.Response]]:
    account_id = f"s3-{uuid.uuid4().hex[:10]}"
    created = await client.post(
        "/accounts", json={"account_id": account_id, "name": "S3", "kind": "company", "venue": "kraken"}, headers=ADMIN
    )
    put = await client.put(
        f"/accounts/{account_id}/credentials", json={"api_key": api_key, "api_secret": api_secret}, headers=ADMIN
    )
    got = await client.get(f"/accounts/{account_id}/credentials", headers=ADMIN)
    assert (created.status_code, put.status_code, got.status_code) == (201, 200, 200), put.text
    return account_id, [created, put, got]


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = sorted(consumer.assignment())
        end_offsets = await consumer.end_offsets(tps)
        raw: list[bytes] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < end_offsets[tp]]:
            assert time.monotonic() < deadline, "topic not read to its end in time"
            for batch in (await consumer.getmany(*tps, timeout_ms=200)).values():
                for record in batch:
                    headers = b"".join(value for _, value in record.headers)
                    raw.append((record.key or b"") + (record.value or b"") + headers)
        return raw
    finally:
        await consumer.stop()


async def outbox_flushed(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        unsent = await connection.scalar(sa.text("SELECT count(*) FROM accounts.outbox WHERE sent_at IS NULL"))
    return unsent == 0


def pg_dump(superuser_url: str, database: str) -> str:
    assert PG_DUMP.exists(), "PostgreSQL 15 pg_dump is missing"
    url = libpq_url(make_url(superuser_url).set(database=database).render_as_string(hide_password=False))
    result = subprocess.run([str(PG_DUMP), "--dbname", url], capture_output=True, check=True, timeout=120)
    return result.stdout.decode("utf-8", errors="replace")


def leaks(canary: str, texts: list[str]) -> int:
    variants = {canary, canary.encode().hex(), json.dumps(canary)[1:-1]}
    return sum(1 for text in texts if any(variant in text for variant in variants))


async def test_s3_canary_never_leaks(
    s3_settings: AccountsSettings,
    engine: AsyncEngine,
    superuser_url: str,
    kafka_bootstrap: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    write_reliability_record: RecordWriter,
    reliability_seed: int,
) -> None:
    canary = f"CANARY-{secrets.token_hex(16)}"
    control = f"CONTROL-{secrets.token_hex(8)}"  # logged on purpose: proves the capture sees the service's log lines
    app = create_app(s3_settings)
    captured = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(root.handlers[0].formatter if root.handlers else None)
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    responses: list[httpx.Response] = []
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as client:
                await eventually(lambda: _ready(client), timeout_s=20, message="accounts ready")
                account_id, responses = await store_credentials(client, "KEY-" + secrets.token_hex(8), canary)
                # the same secret pasted into a logged field is refused (exact match of a submitted secret)
                refused = await client.put(
                    f"/accounts/{account_id}/credentials",
                    json={"api_key": "KEY-2" + secrets.token_hex(8), "api_secret": "x" * 12 + "Y1", "label": canary},
                    headers=ADMIN,
                )
                responses.append(refused)
                assert refused.status_code == 422
                assert refused.json()["error"]["code"] == "secret_in_logged_field"
                await eventually(lambda: outbox_flushed(engine), timeout_s=30, message="outbox relayed")
                get_logger("s3.control").info("s3_capture_control", marker=control)
            # positive control: the venue-signing path does get the secret back
            async with async_sessionmaker(engine)() as session:
                credentials = await load_venue_credentials(
                    session, accounts_adapters(app.state.runtime).keys, account_id
                )
            assert credentials.api_secret == canary
    finally:
        root.removeHandler(handler)
    async with engine.connect() as connection:
        topics = [row[0] for row in await connection.execute(sa.text("SELECT DISTINCT topic FROM accounts.outbox"))]
    assert topics, "the service produced no events"
    kafka_payloads = [
        payload.decode("utf-8", errors="replace")
        for topic in topics
        for payload in await read_topic(kafka_bootstrap, topic)
    ]
    assert any(account_id in payload for payload in kafka_payloads), "our CredentialsStored event is on Kafka"
    out, err = capfd.readouterr()
    log_lines = (
        captured.getvalue().splitlines()
        + out.splitlines()
        + err.splitlines()
        + [r.getMessage() for r in caplog.records]
    )
    assert leaks(control, log_lines) >= 1, "log capture saw nothing"
    dump = pg_dump(superuser_url, make_url(s3_settings.database_url.get_secret_value()).database or "")
    assert "exchange_credentials" in dump
    surfaces = {
        "log_lines": (len(log_lines), leaks(canary, log_lines)),
        "api_responses": (len(responses), leaks(canary, [r.text + json.dumps(dict(r.headers)) for r in responses])),
        "kafka_payloads": (len(kafka_payloads), leaks(canary, kafka_payloads)),
        "pg_dump": (1, leaks(canary, [dump])),
    }
    record_leak_surfaces(surfaces, reliability_seed)
    assert all(count == 0 for _, count in surfaces.values()), surfaces


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


LEAK_SURFACES: dict[str, tuple[int, int]] = {}
TAMPER_RESULTS: dict[str, tuple[int, int]] = {}
ROTATION_RESULT: dict[str, Any] = {}


def record_leak_surfaces(surfaces: dict[str, tuple[int, int]], seed: int) -> None:
    LEAK_SURFACES.update(surfaces)


async def _insert_credentials(session: AsyncSession, keys: LocalFileKeyProvider, account_id: str, secret: str) -> None:
    key_id = f"key_{uuid.uuid4().hex[:16]}"
    await session.execute(
        sa.text(
            "INSERT INTO accounts.trading_accounts (account_id, name, kind, venue) VALUES (:a, 'S3', 'company', 'paper')"
        ),
        {"a": account_id},
    )
    await session.execute(
        sa.text(
            "INSERT INTO accounts.exchange_credentials (account_id, key_id, api_key, api_secret, fingerprint, kek_id) "
            "VALUES (:a, :k, :ak, :as, 'f', :kek)"
        ),
        {
            "a": account_id,
            "k": key_id,
            "ak": encrypt_secret(keys, f"key-{account_id}".encode(), credential_row_id(account_id, key_id, "api_key")),
            "as": encrypt_secret(keys, secret.encode(), credential_row_id(account_id, key_id, "api_secret")),
            "kek": keys.current_key_id(),
        },
    )


def _fails_closed(keys: LocalFileKeyProvider, blob: bytes, row_id: str) -> bool:
    try:
        decrypt_secret(keys, blob, row_id)
    except SecretDecryptionError:
        return True
    return False


async def test_s3_tampering_fails_closed(engine: AsyncEngine, keyring: LocalFileKeyProvider, tmp_path: Path) -> None:
    sessions = async_sessionmaker(engine)
    a, b = f"s3t-{uuid.uuid4().hex[:8]}", f"s3t-{uuid.uuid4().hex[:8]}"
    async with sessions() as session, session.begin():
        await _insert_credentials(session, keyring, a, "secret-a-" + secrets.token_hex(8))
        await _insert_credentials(session, keyring, b, "secret-b-" + secrets.token_hex(8))
    async with sessions() as session:
        rows = {
            row.account_id: row
            for row in await session.execute(
                sa.text(
                    "SELECT account_id, key_id, api_secret FROM accounts.exchange_credentials WHERE account_id IN (:a, :b)"
                ),
                {"a": a, "b": b},
            )
        }
    blob, row_id = bytes(rows[a].api_secret), credential_row_id(a, rows[a].key_id, "api_secret")
    assert decrypt_secret(keyring, blob, row_id).startswith(b"secret-a-")  # positive control
    # every byte position, each of its 8 bits
    flips = [
        bytes(blob[:i]) + bytes([blob[i] ^ (1 << bit)]) + bytes(blob[i + 1 :])
        for i in range(len(blob))
        for bit in range(8)
    ]
    TAMPER_RESULTS["bit_flips"] = (len(flips), sum(_fails_closed(keyring, f, row_id) for f in flips))
    tampered = blob[:-20] + bytes(x ^ 0xFF for x in blob[-20:])
    TAMPER_RESULTS["tampered_ciphertext"] = (1, int(_fails_closed(keyring, tampered, row_id)))
    TAMPER_RESULTS["truncated"] = (len(blob), sum(_fails_closed(keyring, blob[:n], row_id) for n in range(len(blob))))
    TAMPER_RESULTS["unknown_version"] = (
        254,
        sum(_fails_closed(keyring, blob[:2] + bytes([v]) + blob[3:], row_id) for v in range(2, 256)),
    )
    other = LocalFileKeyProvider(tmp_path / "other-kek.json")
    TAMPER_RESULTS["unknown_kek"] = (1, int(_fails_closed(other, blob, row_id)))
    # cross-row swap in the database: b's row now holds a's blob; the venue-signing path must refuse it
    async with sessions() as session, session.begin():
        await session.execute(
            sa.text("UPDATE accounts.exchange_credentials SET api_secret = :blob WHERE account_id = :b"),
            {"blob": blob, "b": b},
        )
    swapped_refused = 0
    async with sessions() as session:
        try:
            await load_venue_credentials(session, keyring, b)
        except SecretDecryptionError:
            swapped_refused = 1
    TAMPER_RESULTS["cross_row_swap"] = (1, swapped_refused)
    # swapping api_key and api_secret within one row is refused too (the column is bound)
    TAMPER_RESULTS["cross_column_swap"] = (
        1,
        int(_fails_closed(keyring, blob, credential_row_id(a, rows[a].key_id, "api_key"))),
    )
    assert all(cases == refused for cases, refused in TAMPER_RESULTS.values()), TAMPER_RESULTS
    assert TAMPER_RESULTS["bit_flips"][0] >= 200


async def test_s3_thousand_secrets_readable_after_rotation(engine: AsyncEngine, keyring: LocalFileKeyProvider) -> None:
    sessions = async_sessionmaker(engine)
    expected: dict[str, str] = {}
    async with sessions() as session, session.begin():
        await session.execute(sa.text("DELETE FROM accounts.exchange_credentials WHERE account_id LIKE 's3t-%'"))
        for index in range(ROTATED_SECRETS):
            account_id = f"s3r-{index:04d}-{uuid.uuid4().hex[:6]}"
            expected[account_id] = secrets.token_urlsafe(24)
            await _insert_credentials(session, keyring, account_id, expected[account_id])
    old_key = keyring.current_key_id()
    new_key = keyring.create_key()
    started = time.monotonic()
    result = await rewrap_all(sessions, keyring, new_key)
    rotate_s = time.monotonic() - started
    # the old KEK is gone: every secret must now open with the new one alone
    data = json.loads(keyring.path.read_text())
    del data["keys"][old_key]
    keyring.path.write_text(json.dumps(data))
    readable = 0
    async with sessions() as session:
        for account_id, secret in expected.items():
            credentials = await load_venue_credentials(session, keyring, account_id)
            readable += credentials.api_secret == secret
        kek_ids = {
            row[0]
            for row in await session.execute(sa.text("SELECT DISTINCT kek_id FROM accounts.exchange_credentials"))
        }
    ROTATION_RESULT.update(
        secrets=len(expected), readable=readable, rewrapped=result.rewrapped, rotate_s=round(rotate_s, 3)
    )
    assert readable == ROTATED_SECRETS
    assert kek_ids == {new_key}


def test_s3_record(write_reliability_record: RecordWriter, reliability_seed: int) -> None:
    assert LEAK_SURFACES, "the canary test did not run"
    assert TAMPER_RESULTS, "the tamper test did not run"
    assert ROTATION_RESULT, "the rotation test did not run"
    tamper_cases = sum(cases for cases, _ in TAMPER_RESULTS.values())
    tamper_accepted = sum(cases - refused for cases, refused in TAMPER_RESULTS.values())
    leaked = sum(count for _, count in LEAK_SURFACES.values())
    unreadable = ROTATION_RESULT["secrets"] - ROTATION_RESULT["readable"]
    write_reliability_record(
        {
            "id": "S3-secrets",
            "seed": reliability_seed,
            "cases": tamper_cases + ROTATION_RESULT["secrets"] + len(LEAK_SURFACES),
            "violations": tamper_accepted + leaked + unreadable,
            "tamper": {name: {"cases": c, "failed_closed": r} for name, (c, r) in TAMPER_RESULTS.items()},
            "fail_closed_rate": (tamper_cases - tamper_accepted) / tamper_cases,
            "rotation": ROTATION_RESULT,
            "canary": {name: {"inspected": n, "leaks": k} for name, (n, k) in LEAK_SURFACES.items()},
        }
    )
    assert tamper_accepted == 0
    assert leaked == 0
    assert unreadable == 0


def test_pg_dump_binary_is_postgresql_15() -> None:
    assert shutil.which(str(PG_DUMP))
    version = subprocess.run([str(PG_DUMP), "--version"], capture_output=True, text=True, check=True).stdout
    assert " 15." in version
