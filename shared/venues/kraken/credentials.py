"""Where the Kraken adapter gets an account's API key pair: decrypted in the signing process only.

`StoredCredentials` (venue-neutral: each venue passes its own `check`, Coinbase included) reads `AETHER_ACCOUNT_SECRETS_DIR/<account>/api_key|api_secret` first, then the accounts
service's encrypted row (`shared.crypto.store.load_venue_credentials`, envelope encryption). A missing or
undecryptable key makes that account's venue NOT READY with the reason (`AccountNotReady`): never a fallback to
another venue, never the secret in a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.crypto.errors import SecretDecryptionError
from shared.crypto.providers import KeyProvider
from shared.crypto.secrets_dir import MountedSecretError, VenueCredentials, read_mounted_credentials
from shared.crypto.store import CredentialsUnavailable, load_venue_credentials
from shared.venues.base import TemporaryError, VenueNotReady
from shared.venues.kraken.signing import InvalidSecret, api_sign


class AccountNotReady(VenueNotReady):
    """The account's venue keys (Kraken's, Binance's or Coinbase's, from the same stores) are missing or unusable:
    its venue is not ready (`reason` says why)."""

    def __init__(self, account_id: str, reason: str, venue: str | None = None) -> None:
        super().__init__(account_id, reason)
        if venue is not None:
            self.args = (f"the {venue} venue of account {account_id} is not ready: {reason}",)


class CredentialSource(Protocol):
    async def get(self, account_id: str) -> VenueCredentials:
        """The account's key pair; `AccountNotReady` when there is none usable."""
        ...


async def unusable_keys(source: CredentialSource, account_ids: Iterable[str]) -> dict[str, str]:
    """The accounts of `account_ids` whose keys `source` cannot give, with the reason (they cannot trade)."""
    reasons: dict[str, str] = {}
    for account_id in account_ids:
        try:
            await source.get(account_id)
        except AccountNotReady as exc:
            reasons[account_id] = exc.reason
    return reasons


def check_credentials(credentials: VenueCredentials) -> VenueCredentials:
    """The pair, once its secret is known to be usable for signing (`AccountNotReady` otherwise)."""
    try:
        api_sign("/0/private/Balance", "0", "nonce=0", credentials.api_secret)
    except InvalidSecret:
        raise AccountNotReady(credentials.account_id, "the API secret is not base64") from None
    return credentials


class StoredCredentials:
    """Mounted files first, else the encrypted accounts store; decrypted once per account and kept in memory.

    `check` proves the pair usable by the venue's signer (Kraken's by default; Binance passes its own)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession] | None,
        keys: KeyProvider | None,
        secrets_dir: Path | None,
        *,
        check: Callable[[VenueCredentials], VenueCredentials] = check_credentials,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._check = check
        self._keys = keys
        self._secrets_dir = secrets_dir
        self._cache: dict[str, VenueCredentials] = {}
        self._lock = asyncio.Lock()

    async def get(self, account_id: str) -> VenueCredentials:
        """The account's key pair (cached after the first successful read)."""
        cached = self._cache.get(account_id)
        if cached is not None:
            return cached
        async with self._lock:
            if account_id not in self._cache:
                self._cache[account_id] = self._check(await self._load(account_id))
            return self._cache[account_id]

    def forget(self, account_id: str) -> None:
        """Drop the cached pair (after a key rotation or an `EAPI:Invalid key`)."""
        self._cache.pop(account_id, None)

    async def _load(self, account_id: str) -> VenueCredentials:
        if self._sessionmaker is None or self._keys is None:
            if self._secrets_dir is None:
                raise AccountNotReady(account_id, "no credential store configured")
            try:
                mounted = read_mounted_credentials(self._secrets_dir, account_id)
            except MountedSecretError as exc:
                raise AccountNotReady(account_id, str(exc)) from None
            if mounted is None:
                raise AccountNotReady(account_id, "no exchange credentials")
            return mounted
        try:
            async with self._sessionmaker() as session:
                return await load_venue_credentials(session, self._keys, account_id, self._secrets_dir)
        except CredentialsUnavailable:
            raise AccountNotReady(account_id, "no exchange credentials") from None
        except MountedSecretError as exc:
            raise AccountNotReady(account_id, str(exc)) from None
        except SecretDecryptionError as exc:
            raise AccountNotReady(account_id, f"credentials cannot be decrypted ({type(exc).__name__})") from None
        except SQLAlchemyError as exc:
            raise TemporaryError(f"credential store unreachable: {type(exc).__name__}") from exc
