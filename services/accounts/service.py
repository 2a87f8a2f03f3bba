"""Use cases of the accounts service: repositories, the audit log and the outbox inside one unit of work.

Login, TOTP and step-up live in `services.accounts.auth`, refresh (rotation with reuse detection) and logout in
`services.accounts.sessions`; this module holds user, account, grant, credential and service-identity management.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.accounts.config import AccountsSettings
from services.accounts.errors import (
    AccountExists,
    AccountNotFound,
    CredentialsNotFound,
    UnknownServiceIdentity,
    UsernameTaken,
    UserNotFound,
)
from services.accounts.passwords import (
    check_password_strength,
    hash_password,
    refuse_secret_in_field,
    secret_digest,
)
from services.accounts.repository import AccountsRepository, Row, Visibility
from services.accounts.schemas import AccountCreate, CredentialsPut, ServiceIdentityCreate, UserCreate
from shared.audit import append as audit_append
from shared.clock import utc_now
from shared.contracts.accounts import (
    AccountCreated,
    AccountsEvent,
    CredentialsStored,
    GrantAdded,
    GrantRevoked,
    ServiceIdentityCreated,
    UserCreated,
    UserRolesSet,
)
from shared.contracts.registry import new_envelope
from shared.crypto import KeyProvider, encrypt_secret
from shared.crypto.store import credential_row_id
from shared.db import UnitOfWork
from shared.events import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import entity_events

ACCOUNT_EVENTS = entity_events("accounts", "account")  # "accounts.account-events.v1"
AUDIT_CHAIN = "accounts"
PRODUCER = "accounts"
# Digests of submitted secrets, so a logged field carrying one of them verbatim is refused (no plaintext kept).
SECRET_DIGESTS_KEY = "accounts:secret-digests"  # noqa: S105 - a Redis key name


def event_type(action: str) -> str:
    """The event type of an audit action: "user.roles_set" -> "UserRolesSet"."""
    return "".join(part.capitalize() for part in re.split(r"[._]", action))


# The contract model of each audited action's event (`accounts.account-events.v1`), named after the action.
EVENT_OF_ACTION: Mapping[str, type[AccountsEvent]] = MappingProxyType(
    {
        "user.created": UserCreated,
        "user.roles_set": UserRolesSet,
        "grant.added": GrantAdded,
        "grant.revoked": GrantRevoked,
        "account.created": AccountCreated,
        "credentials.stored": CredentialsStored,
        "service_identity.created": ServiceIdentityCreated,
    }
)
assert all(event_type(action) == model.TYPE for action, model in EVENT_OF_ACTION.items())  # noqa: S101 - names agree


def key_fingerprint(api_key: str) -> str:
    """SHA-256 of the API key (not the secret), first 16 hex digits grouped: matches what the exchange shows."""
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


@dataclass
class AccountsService:
    """User, account, grant, credential and service-identity management (admin side)."""

    settings: AccountsSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    tables: EventTables
    redis: Redis
    keys: KeyProvider
    clock: Callable[[], datetime] = utc_now
    on_commit: Callable[[], None] | None = None

    async def known_secret_digests(self) -> frozenset[str]:
        """Digests of every secret submitted so far (compared against logged fields)."""
        members = await self.redis.smembers(SECRET_DIGESTS_KEY)
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def guard_logged_fields(self, fields: Mapping[str, str | None]) -> None:
        """Refuse the request when a field that is logged or stored in clear carries a secret."""
        digests = await self.known_secret_digests()
        for name, value in fields.items():
            refuse_secret_in_field(name, value, digests)

    async def _record(
        self, session: AsyncSession, actor: str, action: str, target: str, details: Mapping[str, Any]
    ) -> None:
        """Audit entry and outbox event for one change, in the caller's transaction."""
        await audit_append(session, actor=actor, action=action, target=target, details=dict(details), chain=AUDIT_CHAIN)
        message = EVENT_OF_ACTION[action].model_validate({"actor": actor, "target": target, **details})
        envelope = new_envelope(message, producer=PRODUCER, aggregate_id=target)
        await add_to_outbox(session, self.tables, topic=ACCOUNT_EVENTS, envelope=envelope, key=target)

    def _uow(self) -> UnitOfWork:
        uow = UnitOfWork(self.sessionmaker)
        if self.on_commit is not None:
            uow.after_commit(self.on_commit)
        return uow

    # users ------------------------------------------------------------------------------------------------

    async def create_user(self, actor: str, body: UserCreate) -> Row:
        """A new user with an argon2id hash; weak passwords and secrets in the username are refused."""
        username = body.username.lower()
        await self.guard_logged_fields({"username": username})
        check_password_strength(body.password, username)
        now = self.clock()
        roles = sorted({role.value for role in body.roles})
        user_id = f"usr_{uuid.uuid4().hex}"
        values: Row = {
            "user_id": user_id,
            "username": username,
            "password_hash": await asyncio.to_thread(hash_password, body.password),  # off the event loop
            "roles": roles,
            "status": "active",
            "created_at": now,
            "updated_at": now,
        }
        async with self._uow() as uow:
            if not await AccountsRepository(uow.session).insert_user(values):
                raise UsernameTaken(f"username: {username!r} is taken")
            await self._record(uow.session, actor, "user.created", user_id, {"username": username, "roles": roles})
        return values

    async def user(self, user_id: str) -> tuple[Row, list[str]]:
        """A user and the accounts granted to them."""
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            row = await repo.user(user_id)
            if row is None:
                raise UserNotFound(f"user {user_id} does not exist")
            return row, await repo.granted_accounts(user_id)

    async def list_users(self) -> list[tuple[Row, list[str]]]:
        """Every user with their grants."""
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            return [(row, await repo.granted_accounts(row["user_id"])) for row in await repo.list_users()]

    async def set_roles(self, actor: str, user_id: str, roles: list[str], reason: str | None) -> None:
        """Replace a user's roles (audited with the old and new sets)."""
        await self.guard_logged_fields({"reason": reason})
        async with self._uow() as uow:
            repo = AccountsRepository(uow.session)
            row = await repo.user(user_id, for_update=True)
            if row is None:
                raise UserNotFound(f"user {user_id} does not exist")
            new_roles = sorted(set(roles))
            await repo.update_user(user_id, self.clock(), roles=new_roles)
            details = {"previous": list(row["roles"]), "roles": new_roles, "reason": reason}
            await self._record(uow.session, actor, "user.roles_set", user_id, details)

    async def grant(self, actor: str, user_id: str, account_id: str, reason: str | None) -> bool:
        """Grant `account_id` to the user; False when it was already granted."""
        await self.guard_logged_fields({"reason": reason})
        async with self._uow() as uow:
            repo = AccountsRepository(uow.session)
            await self._require_user_and_account(repo, user_id, account_id)
            added = await repo.add_grant(user_id, account_id, actor, self.clock())
            if added:
                details = {"account_id": account_id, "reason": reason}
                await self._record(uow.session, actor, "grant.added", user_id, details)
            return added

    async def revoke_grant(self, actor: str, user_id: str, account_id: str) -> None:
        """Remove a grant (404 when there was none)."""
        async with self._uow() as uow:
            if not await AccountsRepository(uow.session).remove_grant(user_id, account_id):
                raise AccountNotFound(f"account {account_id} is not granted to user {user_id}")
            await self._record(uow.session, actor, "grant.revoked", user_id, {"account_id": account_id})

    @staticmethod
    async def _require_user_and_account(repo: AccountsRepository, user_id: str, account_id: str) -> None:
        if await repo.user(user_id) is None:
            raise UserNotFound(f"user {user_id} does not exist")
        if await repo.account(account_id, Visibility.everything()) is None:
            raise AccountNotFound(f"account_id: account {account_id} does not exist")

    # accounts ---------------------------------------------------------------------------------------------

    async def create_account(self, actor: str, body: AccountCreate) -> Row:
        """A trading account (company or director) on a venue."""
        await self.guard_logged_fields({"name": body.name})
        now = self.clock()
        values = {**body.model_dump(mode="json"), "status": "active", "created_at": now, "updated_at": now}
        async with self._uow() as uow:
            repo = AccountsRepository(uow.session)
            if body.owner_user_id is not None and await repo.user(body.owner_user_id) is None:
                raise UserNotFound(f"owner_user_id: user {body.owner_user_id} does not exist")
            if not await repo.insert_account(values):
                raise AccountExists(f"account_id: account {body.account_id} exists")
            details = {"name": body.name, "kind": body.kind.value, "venue": body.venue.value}
            await self._record(uow.session, actor, "account.created", body.account_id, details)
        return values

    async def list_accounts(self, visibility: Visibility) -> list[Row]:
        """Accounts the visibility allows (grants enforced in SQL)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            return await AccountsRepository(uow.session).list_accounts(visibility)

    async def account(self, account_id: str, visibility: Visibility) -> Row:
        """One account, 404 when it does not exist or is not visible."""
        async with UnitOfWork(self.sessionmaker) as uow:
            row = await AccountsRepository(uow.session).account(account_id, visibility)
        if row is None:
            raise AccountNotFound(f"account {account_id} does not exist")
        return row

    # exchange credentials ---------------------------------------------------------------------------------

    async def put_credentials(self, actor: str, account_id: str, body: CredentialsPut, visibility: Visibility) -> Row:
        """Store (or replace) an account's exchange key pair, envelope-encrypted; the response never has the secret."""
        submitted = {secret_digest(body.api_key), secret_digest(body.api_secret)}
        await self.redis.sadd(SECRET_DIGESTS_KEY, *submitted)
        await self.guard_logged_fields({"label": body.label})
        key_id = f"key_{uuid.uuid4().hex[:16]}"
        now = self.clock()
        values = {
            "account_id": account_id,
            "key_id": key_id,
            "api_key": encrypt_secret(
                self.keys, body.api_key.encode(), credential_row_id(account_id, key_id, "api_key")
            ),
            "api_secret": encrypt_secret(
                self.keys, body.api_secret.encode(), credential_row_id(account_id, key_id, "api_secret")
            ),
            "fingerprint": key_fingerprint(body.api_key),
            "kek_id": self.keys.current_key_id(),
            "created_at": now,
        }
        async with self._uow() as uow:
            repo = AccountsRepository(uow.session)
            if await repo.account(account_id, visibility) is None:
                raise AccountNotFound(f"account {account_id} does not exist")
            await repo.upsert_credentials(values)
            details = {"key_id": key_id, "fingerprint": values["fingerprint"], "label": body.label}
            await self._record(uow.session, actor, "credentials.stored", account_id, details)
            stored = await repo.credentials(account_id)
        assert stored is not None  # noqa: S101 - just written in this transaction
        return stored

    async def credentials(self, account_id: str, visibility: Visibility) -> Row:
        """Metadata of an account's stored credentials (key id, fingerprint, times)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            if await repo.account(account_id, visibility) is None:
                raise AccountNotFound(f"account {account_id} does not exist")
            row = await repo.credentials(account_id)
        if row is None:
            raise CredentialsNotFound(f"account {account_id} has no stored credentials")
        return row

    # service identities -----------------------------------------------------------------------------------

    async def create_service_identity(self, actor: str, body: ServiceIdentityCreate) -> tuple[str, str]:
        """A client id and secret (shown once) for service-to-service tokens."""
        client_id = f"svc_{body.name}_{uuid.uuid4().hex[:8]}"
        client_secret = secrets.token_urlsafe(32)
        values = {
            "client_id": client_id,
            "name": body.name,
            "secret_hash": await asyncio.to_thread(hash_password, client_secret),
            "scopes": sorted(set(body.scopes)),
            "accounts": sorted(set(body.accounts)),
            "status": "active",
            "created_at": self.clock(),
        }
        async with self._uow() as uow:
            if not await AccountsRepository(uow.session).insert_service_identity(values):
                raise AccountExists(f"name: service identity {body.name} exists")
            details = {"name": body.name, "scopes": values["scopes"], "accounts": values["accounts"]}
            await self._record(uow.session, actor, "service_identity.created", client_id, details)
        await self.redis.sadd(SECRET_DIGESTS_KEY, secret_digest(client_secret))
        return client_id, client_secret

    async def service_identity(self, client_id: str) -> Row:
        """An active service identity (UnknownServiceIdentity otherwise)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            row = await AccountsRepository(uow.session).service_identity(client_id)
        if row is None or row["status"] != "active":
            raise UnknownServiceIdentity("invalid client credentials")
        return row
