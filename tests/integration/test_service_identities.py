"""Workers hold no signing key: the hedge and risk services authenticate as service identities (client
credentials at the accounts service) with exactly `orders:write`; their commands carry the identity's token (added
by the outbox relay at publish time) and the OMS refuses a command without a valid one. Real PostgreSQL, Redis and
Kafka; the accounts and OMS apps in process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from aether.runner import service_environments
from services.accounts.app import create_app as create_accounts_app
from services.accounts.config import AccountsSettings
from services.accounts.service_identities import (
    CLIENT_ID_ENV,
    CLIENT_SECRET_ENV,
    WORKER_IDENTITIES,
    ServiceCredentials,
    provision,
)
from services.hedge.config import HedgeSettings
from services.oms.adapters import oms_adapters
from services.oms.command_auth import CommandCredentials
from services.oms.config import OmsSettings
from services.oms.consumers import handle_command
from services.oms.service import OrderService
from services.risk.config import RiskSettings
from shared.auth.roles import Role, Scope
from shared.auth.service_tokens import ServiceTokenSource, ServiceTokenUnavailable
from shared.config import AetherSettings
from shared.contracts.base import outbox_payload
from shared.contracts.orders import OrderCreate, SubmitOrder
from shared.db import UnitOfWork, sessionmaker_for
from shared.domain.types import OrderSide, OrderType
from shared.events import Envelope, EventProducer, EventTables, OutboxRelay, header_value
from shared.events.envelope import HEADER_AUTHORIZATION
from shared.service_catalog import SERVICES
from tests.helpers import eventually, own_database
from tests.kit.auth import PRIVATE_PEM, VERIFIER, bearer, jwt_settings, worker_bearer
from tests.kit.events import numbered_event, read_all, write_outbox
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

HEDGE = WORKER_IDENTITIES["hedge"]


# --- no signing key outside the issuer -----------------------------------------------------------------------


def test_worker_settings_hold_no_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_JWT_PRIVATE_KEY", PRIVATE_PEM.decode())
    for worker in (HedgeSettings, RiskSettings, OmsSettings, AetherSettings):
        assert "jwt_private_key" not in worker.model_fields, worker.__name__
        assert PRIVATE_PEM.decode() not in repr(worker().model_dump()), worker.__name__
    signing_key = AccountsSettings().jwt_private_key
    assert signing_key is not None
    assert signing_key.get_secret_value() == PRIVATE_PEM.decode()


def test_aether_up_gives_the_signing_key_to_the_accounts_service_alone(database_url: str) -> None:
    environments = service_environments(SERVICES, {"AETHER_DATABASE_URL": database_url})
    holders = {name for name, env in environments.items() if "AETHER_JWT_PRIVATE_KEY_FILE" in env}
    assert holders == {"accounts"}
    identified = {name for name, env in environments.items() if CLIENT_ID_ENV in env}
    assert identified == {"hedge", "risk", "oms"}
    assert environments["hedge"][CLIENT_ID_ENV] == f"svc_{HEDGE.name}"
    # Every OMS trades on the one paper venue process `aether up` runs (the catalog's "paper").
    assert environments["oms"]["AETHER_PAPER_VENUE_URL"] == "http://127.0.0.1:8009"
    assert "AETHER_PAPER_VENUE_URL" not in environments["hedge"]
    assert environments["hedge"][CLIENT_SECRET_ENV] != environments["risk"][CLIENT_SECRET_ENV]


# --- the client-credentials grant ----------------------------------------------------------------------------


@pytest.fixture
async def accounts(settings: AetherSettings, tmp_path: Path) -> AsyncIterator[FastAPI]:
    accounts_settings = AccountsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "local_kek_file"}),
        **jwt_settings(private=True),
        local_kek_file=tmp_path / "kek.json",
        log_level="WARNING",
    )
    app = create_accounts_app(accounts_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(accounts: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    address = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    transport = httpx.ASGITransport(app=accounts, client=(address, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as client:
        await eventually(lambda: _ready(client), timeout_s=20, message="accounts ready")
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def hedge_identity(engine: AsyncEngine) -> ServiceCredentials:
    return await provision(sessionmaker_for(engine), HEDGE)


async def audited(engine: AsyncEngine, action: str, target: str) -> list[dict[str, Any]]:
    query = "SELECT actor, details FROM audit.audit_log WHERE action = :action AND target = :target ORDER BY seq"
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(sa.text(query), {"action": action, "target": target})]


async def service_token(client: httpx.AsyncClient, credentials: ServiceCredentials, secret: str | None = None) -> Any:
    body = {"client_id": credentials.client_id, "client_secret": secret or credentials.client_secret}
    return await client.post("/auth/service-token", json=body)


async def test_a_worker_token_is_narrow_short_lived_and_reaches_no_admin_route(
    client: httpx.AsyncClient, hedge_identity: ServiceCredentials, engine: AsyncEngine
) -> None:
    issued = await service_token(client, hedge_identity)
    assert issued.status_code == 200, issued.text
    assert issued.json()["expires_in"] == 300
    principal = await VERIFIER.verify(issued.json()["access_token"])
    assert (principal.roles, principal.scopes) == (frozenset({Role.SERVICE}), frozenset({Scope.ORDERS_WRITE}))
    headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert (await client.get("/users", headers=headers)).status_code == 403
    escalate = {"name": f"evil-{uuid.uuid4().hex[:6]}", "scopes": ["users:write"], "accounts": ["*"]}
    assert (await client.post("/service-identities", json=escalate, headers=headers)).status_code == 403
    issuances = await audited(engine, "service_token.issued", hedge_identity.client_id)
    assert issuances[-1]["details"]["scopes"] == [Scope.ORDERS_WRITE]


async def test_a_wrong_secret_is_401_and_audited_and_provisioning_rotates_the_secret(
    client: httpx.AsyncClient, hedge_identity: ServiceCredentials, engine: AsyncEngine
) -> None:
    wrong = await service_token(client, hedge_identity, secret="not-the-secret")
    assert wrong.status_code == 401, wrong.text
    refusals = await audited(engine, "service_token.refused", hedge_identity.client_id)
    assert refusals[-1]["details"]["reason"] == "wrong_secret"
    rotated = await provision(sessionmaker_for(engine), HEDGE)
    assert rotated.client_id == hedge_identity.client_id
    assert (await service_token(client, hedge_identity)).status_code == 401
    assert (await service_token(client, rotated)).status_code == 200


async def test_the_token_source_fetches_a_new_token_before_the_old_one_expires(
    client: httpx.AsyncClient, hedge_identity: ServiceCredentials
) -> None:
    now = [0.0]
    source = ServiceTokenSource(
        client, hedge_identity.client_id, SecretStr(hedge_identity.client_secret), clock=lambda: now[0]
    )
    first = await source.token()
    now[0] = 149.0  # of 300 s
    assert await source.token() == first
    now[0] = 151.0
    second = await source.token()
    assert second != first
    assert (await VERIFIER.verify(second)).subject == hedge_identity.client_id
    refused = ServiceTokenSource(client, hedge_identity.client_id, SecretStr("wrong"))
    with pytest.raises(ServiceTokenUnavailable):
        await refused.token()


# --- commands carry the identity's token ---------------------------------------------------------------------


async def test_the_relay_adds_the_token_to_the_authenticated_topics_only(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    async def credentials() -> str:
        return "token-1"

    relay = OutboxRelay(sessions, tables, producer)
    relay.authenticate([f"{unique_topic}.other"], credentials)
    await write_outbox(sessions, tables, unique_topic, [numbered_event("order-1", 1)])
    assert await relay.run_once() == 1
    relay.authenticate([unique_topic], credentials)
    await write_outbox(sessions, tables, unique_topic, [numbered_event("order-1", 2)])
    assert await relay.run_once() == 1

    async def refused() -> str:
        raise ServiceTokenUnavailable("accounts down")

    relay.authenticate([unique_topic], refused)
    await write_outbox(sessions, tables, unique_topic, [numbered_event("order-1", 3)])
    with pytest.raises(ServiceTokenUnavailable):
        await relay.run_once()
    assert await relay.relay_lag() == 1  # not published: retried once a token can be had

    records = await read_all(kafka_bootstrap, unique_topic)
    assert [header_value(record.headers, HEADER_AUTHORIZATION) for record in records] == [None, "Bearer token-1"]


@pytest.fixture(scope="module")
def oms_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "svc_identities") as url:
        yield url


@pytest.fixture
async def orders(
    settings: AetherSettings, oms_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[OrderService]:
    async with paper_oms(settings, oms_database_url, paper_market) as (app, _client):
        yield oms_adapters(app.state.runtime).orders


@pytest.fixture
async def oms_engine(oms_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(oms_database_url)
    yield engine
    await engine.dispose()


def submit_order(account: str) -> Envelope:
    order = OrderCreate(
        account_id=account,
        client_order_id=f"hedge-{uuid.uuid4().hex[:8]}",
        symbol="BTC/USD",
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        quantity="0.001",
        limit_price="1000",
    )
    message = SubmitOrder(order=order)
    return Envelope.new(type=message.TYPE, producer="hedge", aggregate_id=account, payload=outbox_payload(message))


async def command(orders: OrderService, envelope: Envelope, authorization: str | None) -> None:
    async with UnitOfWork(orders.sessionmaker) as uow:
        await handle_command(orders, uow.session, envelope, CommandCredentials(VERIFIER, authorization))


async def test_the_oms_refuses_commands_without_a_service_identity_allowed_to_write_orders(
    orders: OrderService, oms_engine: AsyncEngine
) -> None:
    engine = oms_engine
    account = f"acct-{uuid.uuid4().hex[:8]}"
    await orders.deposit(account, "USD", Decimal(10_000), "test", reference="seed")
    cases = {
        "no token": (None, "unauthenticated"),
        "not a bearer token": ("Basic abc", "unauthenticated"),
        "forged token": ("Bearer e30.e30.e30", "unauthenticated"),
        "an operator's token": (f"Bearer {bearer(Role.OPERATOR)}", "forbidden"),
        "no orders:write": (f"Bearer {worker_bearer('hedge', scopes=[Scope.ORDERS_READ])}", "forbidden"),
        "another account": (f"Bearer {worker_bearer('hedge', accounts=['someone-else'])}", "forbidden"),
    }
    for name, (authorization, code) in cases.items():
        envelope = submit_order(account)
        await command(orders, envelope, authorization)
        refusals = await audited(engine, "command.refused", account)
        assert refusals[-1]["details"]["code"] == code, name
        async with engine.connect() as conn:
            recorded = await conn.scalar(
                sa.text("SELECT count(*) FROM oms.orders WHERE account_id = :a"), {"a": account}
            )
        assert recorded == 0, name
    assert len(await audited(engine, "command.refused", account)) == len(cases)


async def test_a_command_of_the_hedge_identity_is_recorded_under_that_identity(
    orders: OrderService, oms_engine: AsyncEngine
) -> None:
    engine = oms_engine
    account = f"acct-{uuid.uuid4().hex[:8]}"
    await orders.deposit(account, "USD", Decimal(10_000), "test", reference="seed")
    envelope = submit_order(account)
    await command(orders, envelope, f"Bearer {worker_bearer('hedge')}")
    async with engine.connect() as conn:
        actor = await conn.scalar(
            sa.text(
                "SELECT actor FROM audit.audit_log WHERE chain = :c AND action LIKE 'order.%' ORDER BY seq LIMIT 1"
            ),
            {"c": f"oms:{account}"},
        )
    assert actor == f"service:svc_{HEDGE.name}"
