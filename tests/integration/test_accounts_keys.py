"""`aether keys rotate` as a real subprocess against its own database, and where venue signing reads credentials."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from shared.crypto import LocalFileKeyProvider, MalformedBlob, blob_key_id, encrypt_secret
from shared.crypto.secrets_dir import MountedSecretError
from shared.crypto.store import CredentialsUnavailable, credential_row_id, load_venue_credentials
from tests.helpers import own_database

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "keys") as url:
        yield url


@pytest.fixture
async def engine(keys_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(keys_database_url)
    yield engine
    await engine.dispose()


async def store(engine: AsyncEngine, keys: LocalFileKeyProvider, secret: str, totp_user: bool = False) -> str:
    account_id = f"k-{uuid.uuid4().hex[:10]}"
    key_id = f"key_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO accounts.trading_accounts (account_id, name, kind, venue) VALUES (:a, 'K', 'company', 'kraken')"
            ),
            {"a": account_id},
        )
        await connection.execute(
            sa.text(
                "INSERT INTO accounts.exchange_credentials (account_id, key_id, api_key, api_secret, fingerprint, kek_id) "
                "VALUES (:a, :k, :ak, :as, 'f', :kek)"
            ),
            {
                "a": account_id,
                "k": key_id,
                "ak": encrypt_secret(
                    keys, b"KEY-" + account_id.encode(), credential_row_id(account_id, key_id, "api_key")
                ),
                "as": encrypt_secret(keys, secret.encode(), credential_row_id(account_id, key_id, "api_secret")),
                "kek": keys.current_key_id(),
            },
        )
    return account_id


async def test_keys_rotate_cli_rewraps_everything_with_progress(
    engine: AsyncEngine, keys_database_url: str, tmp_path: Path
) -> None:
    keys = LocalFileKeyProvider(tmp_path / "kek.json")
    old_key = keys.current_key_id()
    accounts = {await store(engine, keys, f"secret-{n}"): f"secret-{n}" for n in range(5)}
    env = {
        **os.environ,
        "AETHER_DATABASE_URL": keys_database_url,
        "AETHER_LOCAL_KEK_FILE": str(keys.path),
        "COLUMNS": "120",
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "aether", "keys", "rotate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    new_key = keys.current_key_id()
    assert new_key != old_key
    assert f"5 secrets now wrapped under {new_key}" in " ".join(result.stdout.split())
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                sa.text("SELECT account_id, api_secret, kek_id FROM accounts.exchange_credentials")
            )
        ).all()
        audited = await connection.scalar(
            sa.text("SELECT count(*) FROM audit.audit_log WHERE action = 'keys.rotated' AND target = :k"),
            {"k": new_key},
        )
    assert {blob_key_id(row.api_secret) for row in rows} == {new_key}
    assert {row.kek_id for row in rows} == {new_key}
    assert audited == 1
    async with async_sessionmaker(engine)() as session:
        for account_id, secret in accounts.items():
            assert (await load_venue_credentials(session, keys, account_id)).api_secret == secret
    for secret in accounts.values():
        assert secret not in result.stdout + result.stderr


async def test_mounted_secrets_win_and_a_broken_mount_is_an_error(engine: AsyncEngine, tmp_path: Path) -> None:
    keys = LocalFileKeyProvider(tmp_path / "kek.json")
    account_id = await store(engine, keys, "from-the-database")
    secrets_dir = tmp_path / "mounted"
    async with async_sessionmaker(engine)() as session:
        from_db = await load_venue_credentials(session, keys, account_id, secrets_dir)
        assert (from_db.api_secret, from_db.source) == ("from-the-database", "database")
        (secrets_dir / account_id).mkdir(parents=True)
        (secrets_dir / account_id / "api_key").write_text("MOUNTED-KEY\n")
        (secrets_dir / account_id / "api_secret").write_text("mounted-secret\n")
        mounted = await load_venue_credentials(session, keys, account_id, secrets_dir)
        assert (mounted.api_key, mounted.api_secret, mounted.source) == ("MOUNTED-KEY", "mounted-secret", "mounted")
        (secrets_dir / account_id / "api_secret").write_text("")
        with pytest.raises(MountedSecretError):
            await load_venue_credentials(session, keys, account_id, secrets_dir)
        with pytest.raises(CredentialsUnavailable):
            await load_venue_credentials(session, keys, "k-unknown", secrets_dir)
        await session.execute(
            sa.text("UPDATE accounts.exchange_credentials SET api_secret = :b WHERE account_id = :a"),
            {"b": b"XX\x01", "a": account_id},
        )
        with pytest.raises(MalformedBlob):
            await load_venue_credentials(session, keys, account_id)


async def test_bootstrap_creates_the_first_admin_once(engine: AsyncEngine, keys_database_url: str) -> None:
    def bootstrap(password: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "AETHER_DATABASE_URL": keys_database_url, "AETHER_BOOTSTRAP_PASSWORD": password}
        command = [sys.executable, "-m", "services.accounts.bootstrap", "create-admin", "Root-Admin"]
        return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)

    weak = await asyncio.to_thread(bootstrap, "short")
    assert weak.returncode == 2
    assert "at least 12 characters" in weak.stdout
    password = "Bootstrap horse 93 battery"
    first = await asyncio.to_thread(bootstrap, password)
    assert first.returncode == 0, first.stderr + first.stdout
    assert password not in first.stdout + first.stderr
    again = await asyncio.to_thread(bootstrap, password)
    assert again.returncode == 1
    async with engine.connect() as connection:
        rows = (await connection.execute(sa.text("SELECT username, roles, password_hash FROM accounts.users"))).all()
    assert [(row.username, row.roles) for row in rows] == [("root-admin", ["admin"])]
    assert rows[0].password_hash.startswith("$argon2id$")
