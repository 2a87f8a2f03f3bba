"""Composition root of the accounts service."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.accounts import api, consumers
from services.accounts.auth import AuthService
from services.accounts.config import AccountsSettings, get_settings
from services.accounts.errors import TooManyAttempts
from services.accounts.ratelimit import LoginLimiter
from services.accounts.service import AccountsService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.auth.tokens import TokenIssuer
from shared.config import AetherSettings
from shared.crypto import KeyProvider, key_provider_from_settings
from shared.errors import error_response


def build_services(runtime: ServiceRuntime, settings: AccountsSettings, keys: KeyProvider) -> None:
    """The admin and auth use cases over the runtime's engine and Redis."""
    issuer = None
    if settings.jwt_private_key is not None:
        issuer = TokenIssuer(settings.jwt_private_key.get_secret_value(), settings.jwt_issuer, settings.jwt_audience)
    accounts = AccountsService(
        settings, runtime.sessionmaker, runtime.tables, runtime.redis, keys, on_commit=runtime.relay.wake
    )
    limiter = LoginLimiter(
        runtime.redis, settings.login_max_failures_per_user, settings.login_max_failures_per_ip, settings.login_window_s
    )
    auth = AuthService(settings, runtime.sessionmaker, runtime.redis, keys, issuer, limiter, accounts)
    runtime.extras.update(accounts=accounts, auth=auth, keys=keys)


async def _too_many_attempts(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TooManyAttempts)  # noqa: S101 - registered for this type only
    headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers=headers)


def create_app(settings: AetherSettings | None = None, keys: KeyProvider | None = None) -> FastAPI:
    """Build the accounts app; settings default to the environment, the key provider to the configured one."""
    if settings is None:
        accounts_settings = get_settings()
    elif isinstance(settings, AccountsSettings):
        accounts_settings = settings
    else:
        accounts_settings = AccountsSettings(**settings.model_dump(exclude={"service_name"}))
    provider = keys or key_provider_from_settings(accounts_settings)  # fails at start-up, never at first use

    async def on_startup(runtime: ServiceRuntime) -> None:
        build_services(runtime, accounts_settings, provider)

    spec = ServiceSpec(
        name="accounts",
        title="Aether Accounts",
        description="Trading accounts, users, roles, grants, login and encrypted exchange keys.",
        routers=[api.router],
        workers=consumers.WORKERS,
        on_startup=on_startup,
    )
    app = build_service_app(spec, accounts_settings)
    app.add_exception_handler(TooManyAttempts, _too_many_attempts)
    return app
