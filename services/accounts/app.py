"""Composition root of the accounts service."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.accounts import api, consumers
from services.accounts.adapters import build_accounts_adapters
from services.accounts.config import AccountsSettings, get_settings
from services.accounts.errors import RetryLater
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings
from shared.crypto import KeyProvider, key_provider_from_settings
from shared.errors import error_response


async def _retry_later(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RetryLater)  # noqa: S101 - registered for this type only
    headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(exc.status_code, exc.code, exc.message, exc.details, headers=headers)


def create_app(settings: AetherSettings | None = None, keys: KeyProvider | None = None) -> FastAPI:
    """Build the accounts app; settings default to the environment, the key provider to the configured one."""
    accounts_settings = service_settings(settings, AccountsSettings, get_settings)
    provider = keys or key_provider_from_settings(accounts_settings)  # fails at start-up, never at first use

    async def on_startup(runtime: ServiceRuntime) -> None:
        build_accounts_adapters(runtime, accounts_settings, provider)

    spec = ServiceSpec(
        name="accounts",
        title="Aether Accounts",
        description="Trading accounts, users, roles, grants, login and encrypted exchange keys.",
        routers=[api.router],
        workers=consumers.WORKERS,
        on_startup=on_startup,
        body_limits=api.BODY_LIMITS,
    )
    app = build_service_app(spec, accounts_settings)
    app.add_exception_handler(RetryLater, _retry_later)
    return app
