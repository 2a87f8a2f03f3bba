"""Every SQL statement of the accounts service (schema `accounts`).

Account reads take a `Visibility`: a query for a user's accounts joins the grants table, so a repository call
made for an operator cannot return an account that was not granted to them (enforced here, not only in routers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

SCHEMA = "accounts"
TS = sa.DateTime(timezone=True)
metadata = sa.MetaData(schema=SCHEMA)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("username", sa.Text),
    sa.Column("password_hash", sa.Text),
    sa.Column("roles", ARRAY(sa.Text)),
    sa.Column("status", sa.Text),
    sa.Column("totp_secret", sa.LargeBinary),
    sa.Column("totp_confirmed_at", TS),
    sa.Column("totp_last_step", sa.BigInteger),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
)
trading_accounts = sa.Table(
    "trading_accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("kind", sa.Text),
    sa.Column("venue", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("owner_user_id", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
)
grants = sa.Table(
    "grants",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("granted_by", sa.Text),
    sa.Column("created_at", TS),
)
refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("family_id", sa.Text),
    sa.Column("user_id", sa.Text),
    sa.Column("access_jti", sa.Text),
    sa.Column("amr", ARRAY(sa.Text)),
    sa.Column("auth_time", TS),
    sa.Column("created_at", TS),
    sa.Column("expires_at", TS),
    sa.Column("rotated_at", TS),
    sa.Column("revoked_at", TS),
)
service_identities = sa.Table(
    "service_identities",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("secret_hash", sa.Text),
    sa.Column("scopes", ARRAY(sa.Text)),
    sa.Column("accounts", ARRAY(sa.Text)),
    sa.Column("status", sa.Text),
    sa.Column("created_at", TS),
)
exchange_credentials = sa.Table(
    "exchange_credentials",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("key_id", sa.Text),
    sa.Column("api_key", sa.LargeBinary),
    sa.Column("api_secret", sa.LargeBinary),
    sa.Column("fingerprint", sa.Text),
    sa.Column("kek_id", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("rotated_at", TS),
)

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which accounts a read may return: all of them, or those granted to `user_id` AND named by the token."""

    all_accounts: bool
    user_id: str | None = None
    token_accounts: tuple[str, ...] = ()

    @classmethod
    def everything(cls) -> Visibility:
        return cls(all_accounts=True)

    @classmethod
    def granted_to(cls, user_id: str, token_accounts: Sequence[str]) -> Visibility:
        return cls(all_accounts=False, user_id=user_id, token_accounts=tuple(token_accounts))

    def clause(self) -> sa.ColumnElement[bool]:
        """The WHERE condition on `trading_accounts` that this visibility allows."""
        if self.all_accounts:
            return sa.true()
        granted = sa.select(grants.c.account_id).where(grants.c.user_id == self.user_id)
        return sa.and_(
            trading_accounts.c.account_id.in_(granted),
            trading_accounts.c.account_id.in_(self.token_accounts),
        )


def _row(result: sa.Row[Any] | None) -> Row | None:
    return dict(result._mapping) if result is not None else None


class AccountsRepository:
    """SQL of the accounts schema inside the caller's transaction (never commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _one(self, statement: sa.Executable) -> Row | None:
        return _row((await self.session.execute(statement)).first())

    async def _all(self, statement: sa.Executable) -> list[Row]:
        return [dict(row._mapping) for row in (await self.session.execute(statement)).all()]

    # users
    async def insert_user(self, values: Row) -> bool:
        statement = pg_insert(users).values(**values).on_conflict_do_nothing(index_elements=[users.c.username])
        result = await self.session.execute(statement.returning(users.c.user_id))
        return result.first() is not None

    async def user_by_username(self, username: str) -> Row | None:
        return await self._one(sa.select(users).where(users.c.username == username))

    async def user(self, user_id: str, *, for_update: bool = False) -> Row | None:
        statement = sa.select(users).where(users.c.user_id == user_id)
        return await self._one(statement.with_for_update() if for_update else statement)

    async def list_users(self) -> list[Row]:
        return await self._all(sa.select(users).order_by(users.c.username))

    async def update_user(self, user_id: str, now: datetime, **values: Any) -> None:
        await self.session.execute(sa.update(users).where(users.c.user_id == user_id).values(updated_at=now, **values))

    async def claim_totp_step(self, user_id: str, step: int) -> bool:
        """Record `step` as the newest accepted TOTP time step; False when it (or a later one) was used already."""
        statement = (
            sa.update(users)
            .where(
                users.c.user_id == user_id,
                sa.or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .returning(users.c.user_id)
        )
        return (await self.session.execute(statement)).first() is not None

    # accounts and grants
    async def insert_account(self, values: Row) -> bool:
        statement = pg_insert(trading_accounts).values(**values).on_conflict_do_nothing()
        result = await self.session.execute(statement.returning(trading_accounts.c.account_id))
        return result.first() is not None

    async def list_accounts(self, visibility: Visibility) -> list[Row]:
        statement = sa.select(trading_accounts).where(visibility.clause()).order_by(trading_accounts.c.account_id)
        return await self._all(statement)

    async def account(self, account_id: str, visibility: Visibility) -> Row | None:
        statement = sa.select(trading_accounts).where(trading_accounts.c.account_id == account_id, visibility.clause())
        return await self._one(statement)

    async def add_grant(self, user_id: str, account_id: str, granted_by: str, now: datetime) -> bool:
        statement = pg_insert(grants).values(
            user_id=user_id, account_id=account_id, granted_by=granted_by, created_at=now
        )
        result = await self.session.execute(statement.on_conflict_do_nothing().returning(grants.c.user_id))
        return result.first() is not None

    async def remove_grant(self, user_id: str, account_id: str) -> bool:
        statement = sa.delete(grants).where(grants.c.user_id == user_id, grants.c.account_id == account_id)
        result = await self.session.execute(statement.returning(grants.c.user_id))
        return result.first() is not None

    async def granted_accounts(self, user_id: str) -> list[str]:
        statement = sa.select(grants.c.account_id).where(grants.c.user_id == user_id).order_by(grants.c.account_id)
        return list((await self.session.execute(statement)).scalars())

    # refresh tokens
    async def insert_refresh_token(self, values: Row) -> None:
        await self.session.execute(sa.insert(refresh_tokens).values(**values))

    async def lock_refresh_token(self, token_hash: str) -> Row | None:
        statement = sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).with_for_update()
        return await self._one(statement)

    async def mark_rotated(self, token_hash: str, now: datetime) -> None:
        statement = sa.update(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).values(rotated_at=now)
        await self.session.execute(statement)

    async def revoke_family(self, family_id: str, now: datetime) -> list[Row]:
        """Revoke every token of the family; returns each token's access jti and expiry (to revoke in Redis)."""
        statement = (
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(refresh_tokens.c.access_jti, refresh_tokens.c.created_at)
        )
        return await self._all(statement)

    async def family_of_access_token(self, user_id: str, access_jti: str) -> str | None:
        """The refresh-token family whose token was issued together with this access token (None when none was)."""
        statement = sa.select(refresh_tokens.c.family_id).where(
            refresh_tokens.c.user_id == user_id, refresh_tokens.c.access_jti == access_jti
        )
        return (await self.session.execute(statement)).scalars().first()

    async def live_families(self, user_id: str) -> list[str]:
        """Every refresh-token family of the user that still has an unrevoked token."""
        statement = (
            sa.select(refresh_tokens.c.family_id)
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .distinct()
        )
        return list((await self.session.execute(statement)).scalars())

    # service identities
    async def insert_service_identity(self, values: Row) -> bool:
        statement = pg_insert(service_identities).values(**values).on_conflict_do_nothing()
        result = await self.session.execute(statement.returning(service_identities.c.client_id))
        return result.first() is not None

    async def provision_service_identity(self, values: Row) -> str:
        """Create the identity named `values["name"]`, or give the existing one this secret, scopes and accounts
        (and reactivate it); returns its client id."""
        statement = pg_insert(service_identities).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[service_identities.c.name],
            set_={
                "secret_hash": statement.excluded.secret_hash,
                "scopes": statement.excluded.scopes,
                "accounts": statement.excluded.accounts,
                "status": statement.excluded.status,
            },
        )
        return str(await self.session.scalar(statement.returning(service_identities.c.client_id)))

    async def service_identity(self, client_id: str) -> Row | None:
        return await self._one(sa.select(service_identities).where(service_identities.c.client_id == client_id))

    # exchange credentials
    async def upsert_credentials(self, values: Row) -> None:
        statement = pg_insert(exchange_credentials).values(**values)
        updated = {
            name: statement.excluded[name] for name in ("key_id", "api_key", "api_secret", "fingerprint", "kek_id")
        }
        statement = statement.on_conflict_do_update(
            index_elements=[exchange_credentials.c.account_id],
            set_={**updated, "rotated_at": statement.excluded.created_at},
        )
        await self.session.execute(statement)

    async def credentials(self, account_id: str) -> Row | None:
        return await self._one(sa.select(exchange_credentials).where(exchange_credentials.c.account_id == account_id))
