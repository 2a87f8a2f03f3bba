"""The service identities of the platform's own workers, and their provisioning.

The hedge and risk workers hold no signing key: each authenticates to the accounts service as a service identity
(`POST /auth/service-token`, client credentials) and gets a short-lived `service` token carrying exactly the
scopes it needs. `aether up` (aether/runner.py) provisions them before it starts the services, giving each worker
a fresh secret (stored argon2-hashed, like passwords) in its own environment only; tests/kit does the same.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from services.accounts.passwords import hash_password
from services.accounts.repository import AccountsRepository
from shared.audit import append as audit_append
from shared.auth.roles import Scope
from shared.auth.tokens import ALL_ACCOUNTS
from shared.clock import utc_now
from shared.db import UnitOfWork, sessionmaker_for

PROVISIONER = "system:provisioning"
AUDIT_CHAIN = "accounts"
# The environment of a worker that authenticates as its identity (read by shared.auth.service_tokens).
CLIENT_ID_ENV = "AETHER_SERVICE_CLIENT_ID"
CLIENT_SECRET_ENV = "AETHER_SERVICE_CLIENT_SECRET"  # noqa: S105 - the name of a variable


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """What a worker may do: its identity's name, scopes and accounts."""

    name: str
    scopes: frozenset[str]
    accounts: frozenset[str] = frozenset({ALL_ACCOUNTS})


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    client_id: str
    client_secret: str


# Service name -> its identity. The hedge places and cancels hedge orders, risk places exit orders and cancels
# them: both are `oms.commands.v1` commands, nothing else (no admin, user, key, fund or approval scope). The OMS
# trades on the paper venue process (`venue:trade`) for every account.
WORKER_IDENTITIES: Mapping[str, WorkerIdentity] = MappingProxyType(
    {
        "hedge": WorkerIdentity("hedge-worker", frozenset({Scope.ORDERS_WRITE})),
        "risk": WorkerIdentity("risk-worker", frozenset({Scope.ORDERS_WRITE})),
        "oms": WorkerIdentity("oms-venue-client", frozenset({Scope.VENUE_TRADE})),
    }
)


async def provision(sessionmaker: async_sessionmaker[AsyncSession], identity: WorkerIdentity) -> ServiceCredentials:
    """Create the identity, or rotate its secret (the old one stops working) and reset its scopes; audited."""
    client_secret = secrets.token_urlsafe(32)
    scopes, accounts = sorted(identity.scopes), sorted(identity.accounts)
    values = {
        "client_id": f"svc_{identity.name}",
        "name": identity.name,
        "secret_hash": await asyncio.to_thread(hash_password, client_secret),
        "scopes": scopes,
        "accounts": accounts,
        "status": "active",
        "created_at": utc_now(),
    }
    async with UnitOfWork(sessionmaker) as uow:
        client_id = await AccountsRepository(uow.session).provision_service_identity(values)
        await audit_append(
            uow.session,
            actor=PROVISIONER,
            action="service_identity.provisioned",
            target=client_id,
            details={"name": identity.name, "scopes": list(scopes), "accounts": list(accounts)},
            chain=AUDIT_CHAIN,
        )
    return ServiceCredentials(client_id, client_secret)


async def provision_workers(
    sessionmaker: async_sessionmaker[AsyncSession], services: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Per service of `services` that runs as a worker identity, the environment that lets it authenticate."""
    environments: dict[str, dict[str, str]] = {}
    for service in services:
        identity = WORKER_IDENTITIES.get(service)
        if identity is not None:
            credentials = await provision(sessionmaker, identity)
            environments[service] = {
                CLIENT_ID_ENV: credentials.client_id,
                CLIENT_SECRET_ENV: credentials.client_secret,
            }
    return environments


def provision_for_platform(database_url: str, services: Sequence[str]) -> dict[str, dict[str, str]]:
    """`provision_workers` for `aether up`, which is not async: one short-lived engine on `database_url`."""

    async def run() -> dict[str, dict[str, str]]:
        engine = create_async_engine(database_url, pool_size=1)
        try:
            return await provision_workers(sessionmaker_for(engine), services)
        finally:
            await engine.dispose()

    return asyncio.run(run())
