"""Issue 12 login hardening against the real stack: TOTP replay, one answer for every wrong factor, TOTP binding
needs the password, logout semantics, per-(name, client) lockout, trusted proxies, the inbox relay, limits on
every credential endpoint and body size limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.accounts.adapters import accounts_adapters
from services.accounts.app import create_app
from services.accounts.config import AccountsSettings
from shared.auth.keys import private_key_pem
from shared.config import AetherSettings
from shared.web import CLIENT_ADDRESS_HEADER, RELAY_SCOPE, RELAY_TOKEN_HEADER
from tests.helpers import eventually
from tests.integration.test_accounts_api import (
    PASSWORD,
    PUBLIC_PEM,
    admin_headers,
    bearer,
    client_at,
    create_user,
    enroll_totp,
    login,
    random_address,
    unique,
)
from tests.kit.auth import KEY, TotpClock

WRONG = "Wrong horse 42 battery"


@pytest.fixture(scope="module")
def hardened_settings(settings: AetherSettings, tmp_path_factory: pytest.TempPathFactory) -> AccountsSettings:
    return AccountsSettings(
        **settings.model_dump(
            exclude={
                "jwt_public_key",
                "jwt_private_key",
                "service_name",
                "log_level",
                "local_kek_file",
                "trusted_proxies",
            }
        ),
        jwt_public_key=SecretStr(PUBLIC_PEM.decode()),
        jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
        local_kek_file=Path(tmp_path_factory.mktemp("keys") / "kek.json"),
        log_level="WARNING",
        login_max_failures_per_user=3,
        login_max_failures_per_ip=1000,
        login_user_slowdown_after=6,
        trusted_proxies=["127.0.0.2"],
    )


@pytest.fixture
def totp_clock() -> TotpClock:
    return TotpClock()


async def _started(settings: AccountsSettings, clock: TotpClock) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        accounts_adapters(app.state.runtime).auth.totp.clock = clock
        async with client_at(app, random_address()) as probe:
            await eventually(lambda: _ready(probe), timeout_s=20, message="accounts ready")
        yield app


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def app(hardened_settings: AccountsSettings, totp_clock: TotpClock) -> AsyncIterator[FastAPI]:
    async for started in _started(hardened_settings, totp_clock):
        yield started


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_at(app, random_address()) as client:
        yield client


async def totp_user(client: httpx.AsyncClient, clock: TotpClock, *roles: str) -> tuple[dict[str, Any], pyotp.TOTP]:
    user = await create_user(client, *(roles or ("operator",)))
    token = (await login(client, user["username"])).json()["access_token"]
    return user, await enroll_totp(client, token, clock)


async def test_a_totp_code_is_accepted_once_for_login_and_step_up(
    client: httpx.AsyncClient, totp_clock: TotpClock
) -> None:
    user, totp = await totp_user(client, totp_clock)
    code = totp_clock.next_code(totp)
    first = await login(client, user["username"], totp_code=code)
    assert first.status_code == 200, first.text
    replayed = await login(client, user["username"], totp_code=code)
    assert replayed.status_code == 401
    assert replayed.json()["error"]["code"] == "invalid_credentials"
    access = bearer(first.json()["access_token"])
    step_code = totp_clock.next_code(totp)
    assert (await client.post("/auth/step-up", json={"totp_code": step_code}, headers=access)).status_code == 200
    again = await client.post("/auth/step-up", json={"totp_code": step_code}, headers=access)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "invalid_totp"
    # an older code inside the drift window is spent too: steps only move forward
    older = totp.at(totp_clock() - timedelta(seconds=30))
    assert (await login(client, user["username"], totp_code=older)).status_code == 401


async def test_concurrent_logins_with_one_code_open_one_session(app: FastAPI, totp_clock: TotpClock) -> None:
    async with client_at(app, random_address()) as client:
        user, totp = await totp_user(client, totp_clock)
        code = totp_clock.next_code(totp)
        clients = [client_at(app, random_address()) for _ in range(8)]
        try:
            answers = await asyncio.gather(*(login(c, user["username"], totp_code=code) for c in clients))
        finally:
            for other in clients:
                await other.aclose()
    assert sorted(answer.status_code for answer in answers) == [200] + [401] * 7


async def test_wrong_password_and_wrong_code_answer_the_same(client: httpx.AsyncClient, totp_clock: TotpClock) -> None:
    user, totp = await totp_user(client, totp_clock)
    code = totp_clock.next_code(totp)
    wrong_password = await login(client, user["username"], WRONG, totp_code=code)
    wrong_code = await login(client, user["username"], totp_code=f"{(int(code) + 1) % 1_000_000:06d}")
    assert wrong_password.status_code == wrong_code.status_code == 401
    assert wrong_password.json() == wrong_code.json()
    assert wrong_code.json()["error"]["message"] == "invalid username, password or code"


async def test_binding_totp_needs_the_password(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    user = await create_user(client, "operator")
    token = bearer((await login(client, user["username"])).json()["access_token"])
    without = await client.post("/auth/totp/enroll", headers=token)
    wrong = await client.post("/auth/totp/enroll", json={"password": WRONG}, headers=token)
    assert without.status_code == 422
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT totp_secret FROM accounts.users WHERE user_id = :id"), {"id": user["user_id"]}
        )
    assert stored is None  # nothing refused is stored


async def test_logout_without_the_refresh_token_ends_that_session_only(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "viewer")
    ending = (await login(client, user["username"])).json()
    other = (await login(client, user["username"])).json()
    out = await client.post("/auth/logout", headers=bearer(ending["access_token"]))
    assert out.status_code == 204
    assert (await client.post("/auth/refresh", json={"refresh_token": ending["refresh_token"]})).status_code == 401
    assert (await client.get("/accounts", headers=bearer(ending["access_token"]))).status_code == 401
    # the user's other session (another device) lives on
    assert (await client.post("/auth/refresh", json={"refresh_token": other["refresh_token"]})).status_code == 200


async def test_logout_with_a_step_up_token_ends_every_session(client: httpx.AsyncClient, totp_clock: TotpClock) -> None:
    user, totp = await totp_user(client, totp_clock)
    session = (await login(client, user["username"], totp_code=totp_clock.next_code(totp))).json()
    stepped = await client.post(
        "/auth/step-up",
        json={"totp_code": totp_clock.next_code(totp)},
        headers=bearer(session["access_token"]),
    )
    assert stepped.status_code == 200, stepped.text
    assert (await client.post("/auth/logout", headers=bearer(stepped.json()["access_token"]))).status_code == 204
    assert (await client.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})).status_code == 401


async def test_strangers_failing_do_not_lock_the_user_out(app: FastAPI) -> None:
    async with client_at(app, random_address()) as admin:
        user = await create_user(admin, "viewer")
    attackers = [client_at(app, random_address()) for _ in range(3)]
    try:
        for attacker in attackers[:2]:
            statuses = [(await login(attacker, user["username"], WRONG)).status_code for _ in range(3)]
            assert statuses == [401, 401, 401]
        assert (await login(attackers[0], user["username"])).status_code == 429  # locked from that client only
        # past the per-name slowdown (6 failures), a clean client gets one try, then it is refused at once
        assert (await login(attackers[2], user["username"], WRONG)).status_code == 401
        assert (await login(attackers[2], user["username"], WRONG)).status_code == 429
    finally:
        for attacker in attackers:
            await attacker.aclose()
    async with client_at(app, random_address()) as real_user:
        assert (await login(real_user, user["username"])).status_code == 200


async def test_forwarded_addresses_count_only_from_trusted_proxies(app: FastAPI) -> None:
    async with client_at(app, random_address()) as admin:
        user = await create_user(admin, "viewer")
    # an untrusted peer cannot pick its own counter with X-Forwarded-For
    async with client_at(app, random_address()) as direct:
        for index in range(3):
            forged = {"X-Forwarded-For": f"198.51.100.{index}"}
            await direct.post("/auth/login", json={"username": user["username"], "password": WRONG}, headers=forged)
        fresh = {"X-Forwarded-For": "198.51.100.200"}
        locked = await direct.post(
            "/auth/login", json={"username": user["username"], "password": PASSWORD}, headers=fresh
        )
        assert locked.status_code == 429
    # the trusted proxy (127.0.0.2) names each client: one client's failures do not lock another
    async with client_at(app, "127.0.0.2") as proxy:
        bad = {"X-Forwarded-For": "203.0.113.7"}
        for _ in range(3):
            await proxy.post("/auth/login", json={"username": user["username"], "password": WRONG}, headers=bad)
        clean = {"X-Forwarded-For": "203.0.113.8"}
        ok = await proxy.post("/auth/login", json={"username": user["username"], "password": PASSWORD}, headers=clean)
        assert ok.status_code == 200, ok.text
        assert (
            await proxy.post("/auth/login", json={"username": user["username"], "password": PASSWORD}, headers=bad)
        ).status_code == 429


async def _service_token(client: httpx.AsyncClient, scopes: list[str]) -> str:
    created = await client.post(
        "/service-identities", json={"name": unique("inbox"), "scopes": scopes}, headers=admin_headers()
    )
    assert created.status_code == 201, created.text
    body = created.json()
    issued = await client.post(
        "/auth/service-token", json={"client_id": body["client_id"], "client_secret": body["client_secret"]}
    )
    assert issued.status_code == 200, issued.text
    return str(issued.json()["access_token"])


async def test_only_a_relay_token_may_name_the_client(app: FastAPI) -> None:
    async with client_at(app, random_address()) as inbox:
        user = await create_user(inbox, "viewer")
        relay = await _service_token(inbox, [RELAY_SCOPE])
        other = await _service_token(inbox, ["orders:read"])
        body = {"username": user["username"], "password": WRONG}
        bare = await inbox.post("/auth/login", json=body, headers={CLIENT_ADDRESS_HEADER: "203.0.113.9"})
        unscoped = await inbox.post(
            "/auth/login", json=body, headers={CLIENT_ADDRESS_HEADER: "203.0.113.9", RELAY_TOKEN_HEADER: other}
        )
        assert bare.status_code == unscoped.status_code == 401
        assert bare.json()["error"]["code"] == unscoped.json()["error"]["code"] == "invalid_client_relay"
        # relayed: each director keeps their own counters behind the one inbox process
        for _ in range(3):
            headers = {CLIENT_ADDRESS_HEADER: "203.0.113.10", RELAY_TOKEN_HEADER: relay}
            assert (await inbox.post("/auth/login", json=body, headers=headers)).status_code == 401
        locked = {CLIENT_ADDRESS_HEADER: "203.0.113.10", RELAY_TOKEN_HEADER: relay}
        clean = {CLIENT_ADDRESS_HEADER: "203.0.113.11", RELAY_TOKEN_HEADER: relay}
        good = {"username": user["username"], "password": PASSWORD}
        assert (await inbox.post("/auth/login", json=good, headers=locked)).status_code == 429
        assert (await inbox.post("/auth/login", json=good, headers=clean)).status_code == 200


async def test_service_token_endpoint_is_rate_limited(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/service-identities", json={"name": unique("svc"), "scopes": ["orders:read"]}, headers=admin_headers()
    )
    client_id = created.json()["client_id"]
    statuses = [
        (await client.post("/auth/service-token", json={"client_id": client_id, "client_secret": "guess"})).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


async def test_credential_bodies_over_the_limit_are_413_and_not_parsed(client: httpx.AsyncClient) -> None:
    big = {"username": "x", "password": "p" * 10_000}
    declared = await client.post("/auth/login", json=big)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1_000

    streamed = await client.post("/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413  # no Content-Length: the bytes that arrive are counted
    small = await client.post("/auth/login", json={"username": unique("nobody"), "password": WRONG})
    assert small.status_code == 401
