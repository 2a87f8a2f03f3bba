"""Composition root of the accounts service."""

from __future__ import annotations

from fastapi import FastAPI

from services.accounts import api, consumers
from services.accounts.config import AccountsSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app

SPEC = ServiceSpec(
    name="accounts",
    title="Aether Accounts",
    description="Trading accounts, users, roles, grants and encrypted exchange keys.",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: AccountsSettings | None = None) -> FastAPI:
    """Build the accounts app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
