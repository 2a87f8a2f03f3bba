"""The accounts service's typed composition root: its use cases and adapters, built once per process.

`services/accounts/app.py` builds it in the lifespan and stores it in `runtime.adapters`; routers read it through
the `Adapters` dependency (or `accounts_adapters(runtime)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.accounts.auth import AuthService
from services.accounts.config import AccountsSettings
from services.accounts.passwords import PasswordWorkers
from services.accounts.ratelimit import LoginLimiter
from services.accounts.service import AccountsService
from services.accounts.sessions import SessionService
from services.accounts.totp import TotpVerifier
from shared.app_factory import ServiceRuntime, adapters_of
from shared.auth.tokens import TokenIssuer
from shared.crypto import KeyProvider


@dataclass(frozen=True, slots=True)
class AccountsAdapters:
    settings: AccountsSettings
    accounts: AccountsService
    auth: AuthService
    sessions: SessionService
    keys: KeyProvider


def build_accounts_adapters(runtime: ServiceRuntime, settings: AccountsSettings, keys: KeyProvider) -> None:
    """The admin, auth and session use cases over the runtime's engine and Redis."""
    issuer = None
    if settings.jwt_private_key is not None:
        issuer = TokenIssuer(settings.jwt_private_key.get_secret_value(), settings.jwt_issuer, settings.jwt_audience)
    accounts = AccountsService(
        settings, runtime.sessionmaker, runtime.tables, runtime.redis, keys, on_commit=runtime.relay.wake
    )
    limiter = LoginLimiter(
        runtime.redis,
        max_per_name=settings.login_max_failures_per_user,
        max_per_client=settings.login_max_failures_per_ip,
        name_slowdown_after=settings.login_user_slowdown_after,
        window_s=settings.login_window_s,
    )
    passwords = PasswordWorkers(settings.password_workers, settings.password_max_pending)

    async def close_passwords() -> None:
        passwords.close()

    runtime.closers.append(close_passwords)
    sessions = SessionService(settings, runtime.sessionmaker, runtime.redis, issuer, limiter)
    totp = TotpVerifier(keys, runtime.sessionmaker)
    auth = AuthService(settings, runtime.sessionmaker, keys, limiter, accounts, passwords, sessions, totp)
    runtime.adapters = AccountsAdapters(settings=settings, accounts=accounts, auth=auth, sessions=sessions, keys=keys)


def accounts_adapters(runtime: ServiceRuntime) -> AccountsAdapters:
    return adapters_of(runtime, AccountsAdapters)


def _from_request(request: Request) -> AccountsAdapters:
    return accounts_adapters(request.app.state.runtime)


Adapters = Annotated[AccountsAdapters, Depends(_from_request)]
