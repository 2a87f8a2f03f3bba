"""The encrypted columns of the platform, read for venue signing and re-wrapped on KEK rotation.

`load_venue_credentials` is the ONLY way to obtain a decrypted exchange key pair: the venue-signing code calls
it in-process; no REST route returns a secret. `rewrap_all` re-wraps every encrypted column under a new KEK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.crypto.envelope import decrypt_secret, rewrap_secret
from shared.crypto.providers import KeyProvider
from shared.crypto.secrets_dir import VenueCredentials, read_mounted_credentials


class CredentialsUnavailable(Exception):
    """No credentials for the account (neither mounted nor stored)."""


def credential_row_id(account_id: str, key_id: str, field: str) -> str:
    """Associated data of an encrypted credential column (must match services.accounts.service)."""
    return f"accounts.exchange_credentials/{account_id}/{key_id}/{field}"


def totp_row_id(user_id: str) -> str:
    """Associated data of an encrypted TOTP secret."""
    return f"accounts.users/{user_id}/totp_secret"


_SELECT_CREDENTIALS = sa.text(
    "SELECT key_id, api_key, api_secret FROM accounts.exchange_credentials WHERE account_id = :account_id"
)


async def load_venue_credentials(
    session: AsyncSession, keys: KeyProvider, account_id: str, secrets_dir: Path | None = None
) -> VenueCredentials:
    """The account's decrypted API key pair: mounted files first (Kubernetes), else the encrypted row; fails closed."""
    if secrets_dir is not None:
        mounted = read_mounted_credentials(secrets_dir, account_id)
        if mounted is not None:
            return mounted
    row = (await session.execute(_SELECT_CREDENTIALS, {"account_id": account_id})).first()
    if row is None:
        raise CredentialsUnavailable(f"account {account_id} has no exchange credentials")
    key_id, key_blob, secret_blob = row
    api_key = decrypt_secret(keys, key_blob, credential_row_id(account_id, key_id, "api_key"))
    api_secret = decrypt_secret(keys, secret_blob, credential_row_id(account_id, key_id, "api_secret"))
    return VenueCredentials(account_id, api_key.decode(), api_secret.decode(), source="database")


@dataclass(frozen=True)
class RewrapResult:
    rewrapped: int
    key_id: str


async def _rewrap_credentials(
    session: AsyncSession, keys: KeyProvider, new_key_id: str, tick: Callable[[], None]
) -> int:
    rows = (
        await session.execute(
            sa.text("SELECT account_id, key_id, api_key, api_secret FROM accounts.exchange_credentials FOR UPDATE")
        )
    ).all()
    for account_id, key_id, key_blob, secret_blob in rows:
        params = {
            "account_id": account_id,
            "k": rewrap_secret(keys, key_blob, credential_row_id(account_id, key_id, "api_key"), new_key_id),
            "s": rewrap_secret(keys, secret_blob, credential_row_id(account_id, key_id, "api_secret"), new_key_id),
            "kek": new_key_id,
        }
        await session.execute(
            sa.text(
                "UPDATE accounts.exchange_credentials SET api_key = :k, api_secret = :s, kek_id = :kek "
                "WHERE account_id = :account_id"
            ),
            params,
        )
        tick()
    return len(rows)


async def _rewrap_totp(session: AsyncSession, keys: KeyProvider, new_key_id: str, tick: Callable[[], None]) -> int:
    rows = (
        await session.execute(
            sa.text("SELECT user_id, totp_secret FROM accounts.users WHERE totp_secret IS NOT NULL FOR UPDATE")
        )
    ).all()
    for user_id, blob in rows:
        rewrapped = rewrap_secret(keys, blob, totp_row_id(user_id), new_key_id)
        await session.execute(
            sa.text("UPDATE accounts.users SET totp_secret = :b WHERE user_id = :u"), {"b": rewrapped, "u": user_id}
        )
        tick()
    return len(rows)


async def count_encrypted(session: AsyncSession) -> int:
    """How many encrypted values `rewrap_all` will touch (for progress bars)."""
    credentials = await session.scalar(sa.text("SELECT count(*) FROM accounts.exchange_credentials"))
    totp = await session.scalar(sa.text("SELECT count(*) FROM accounts.users WHERE totp_secret IS NOT NULL"))
    return int(credentials or 0) + int(totp or 0)


async def rewrap_all(
    sessionmaker: async_sessionmaker[AsyncSession],
    keys: KeyProvider,
    new_key_id: str,
    tick: Callable[[], None] = lambda: None,
) -> RewrapResult:
    """Re-wrap every encrypted column under `new_key_id` in one transaction (all or nothing), audited."""
    from shared.audit import append as audit_append

    async with sessionmaker() as session, session.begin():
        total = await _rewrap_credentials(session, keys, new_key_id, tick)
        total += await _rewrap_totp(session, keys, new_key_id, tick)
        await audit_append(
            session,
            actor="aether-cli",
            action="keys.rotated",
            target=new_key_id,
            details={"rewrapped": total},
            chain="accounts",
        )
    return RewrapResult(total, new_key_id)
