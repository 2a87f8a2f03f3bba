"""Accounts service over REST against real PostgreSQL, Redis and Kafka: users, grants, login, refresh, TOTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.accounts.adapters import accounts_adapters
from services.accounts.app import create_app
from services.accounts.config import AccountsSettings
from services.accounts.repository import AccountsRepository, Visibility
from shared.auth.keys import private_key_pem, public_key_pem
from shared.auth.roles import Role, default_scopes
from shared.auth.tokens import TokenVerifier
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.kit.auth import ISSUER, KEY, TotpClock

PUBLIC_PEM = public_key_pem(KEY.public_key())
PASSWORD = "Correct horse 42 battery"


def admin_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {ISSUER.issue('admin-test', [Role.ADMIN], scopes=default_scopes([Role.ADMIN]), accounts=['*'])}"
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    verifier = TokenVerifier(PUBLIC_PEM, "aether", "aether-platform")
    principal = verifier.verify_without_revocation(token)
    return {
        "sub": principal.subject,
        "roles": sorted(principal.roles),
        "accounts": sorted(principal.accounts),
        "amr": sorted(principal.amr),
        "auth_time": principal.auth_time,
    }


@pytest.fixture(scope="module")
def accounts_settings(settings: AetherSettings, tmp_path_factory: pytest.TempPathFactory) -> AccountsSettings:
    keyring = tmp_path_factory.mktemp("keys") / "kek.json"
    return AccountsSettings(
        **settings.model_dump(
            exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level", "local_kek_file"}
        ),
        jwt_public_key=SecretStr(PUBLIC_PEM.decode()),
        jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
        local_kek_file=Path(keyring),
        log_level="WARNING",
        login_max_failures_per_user=3,
        login_max_failures_per_ip=1000,
    )


@pytest.fixture
def totp_clock() -> TotpClock:
    return TotpClock()


@pytest.fixture
async def app(accounts_settings: AccountsSettings, totp_clock: TotpClock) -> AsyncIterator[FastAPI]:
    app = create_app(accounts_settings)
    async with app.router.lifespan_context(app):
        accounts_adapters(app.state.runtime).auth.totp.clock = totp_clock
        yield app


def random_address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    """An in-process client whose requests come from `address`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 1)), base_url="http://accounts")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_at(app, random_address()) as client:
        await eventually(lambda: _ready(client), timeout_s=20, message="accounts ready")
        yield client


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create_user(client: httpx.AsyncClient, *roles: str, password: str = PASSWORD) -> dict[str, Any]:
    body = {"username": unique("user"), "password": password, "roles": list(roles)}
    response = await client.post("/users", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text
    return dict(response.json())


async def create_account(client: httpx.AsyncClient, kind: str = "company") -> str:
    account_id = unique("acct")
    body = {"account_id": account_id, "name": "Desk", "kind": kind, "venue": "paper"}
    response = await client.post("/accounts", json=body, headers=admin_headers())
    assert response.status_code == 201, response.text
    return account_id


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password, **extra})


async def enroll_totp(client: httpx.AsyncClient, token: str, clock: TotpClock, password: str = PASSWORD) -> pyotp.TOTP:
    enrolled = await client.post("/auth/totp/enroll", json={"password": password}, headers=bearer(token))
    assert enrolled.status_code == 200, enrolled.text
    uri = enrolled.json()["provisioning_uri"]
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    code = clock.next_code(totp)
    confirmed = await client.post("/auth/totp/confirm", json={"totp_code": code}, headers=bearer(token))
    assert confirmed.status_code == 204, confirmed.text
    return totp


async def test_login_returns_the_contract_shape_and_claims(client: httpx.AsyncClient) -> None:
    account = await create_account(client)
    user = await create_user(client, "operator")
    granted = await client.post(
        f"/users/{user['user_id']}/grants", json={"account_id": account}, headers=admin_headers()
    )
    assert granted.status_code == 200, granted.text
    response = await login(client, user["username"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "EdDSA"
    got = claims(body["access_token"])
    assert got["sub"] == user["user_id"]
    assert got["roles"] == ["operator"]
    assert got["accounts"] == [account]
    assert got["amr"] == ["pwd"]
    assert got["auth_time"] is not None


async def test_failures_do_not_reveal_whether_the_user_exists(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "viewer")
    wrong_password = await login(client, user["username"], "Wrong horse 42 battery")
    unknown_user = await login(client, unique("nobody"), "Wrong horse 42 battery")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()
    assert wrong_password.json()["error"]["code"] == "invalid_credentials"


async def test_lockout_after_failures_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "viewer")
    for _ in range(3):
        assert (await login(client, user["username"], "Wrong horse 42 battery")).status_code == 401
    locked = await login(client, user["username"])  # even the right password
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(locked.headers["Retry-After"]) <= 900
    # an unknown username is rate limited the same way
    ghost = unique("ghost")
    for _ in range(3):
        assert (await login(client, ghost, "Wrong horse 42 battery")).status_code == 401
    assert (await login(client, ghost, "Wrong horse 42 battery")).status_code == 429


async def test_per_ip_limit(accounts_settings: AccountsSettings) -> None:
    app = create_app(accounts_settings.model_copy(update={"login_max_failures_per_ip": 4}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(f"192.0.2.{uuid.uuid4().int % 250}", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://accounts") as client:
            await eventually(lambda: _ready(client), timeout_s=20, message="accounts ready")
            await client.post("/auth/login", json={"username": "x-warmup", "password": "y"})  # may be 401 or 429
            statuses = [(await login(client, unique("spray"), "Wrong horse 42 battery")).status_code for _ in range(5)]
    assert statuses[-1] == 429
    assert statuses.count(401) <= 4


async def test_totp_enrollment_login_and_wrong_code_counts(client: httpx.AsyncClient, totp_clock: TotpClock) -> None:
    user = await create_user(client, "operator")
    first = (await login(client, user["username"])).json()["access_token"]
    totp = await enroll_totp(client, first, totp_clock)
    again = await client.post("/auth/totp/enroll", json={"password": PASSWORD}, headers=bearer(first))
    assert again.status_code == 409
    ok = await login(client, user["username"], totp_code=totp_clock.next_code(totp))
    assert ok.status_code == 200, ok.text
    assert claims(ok.json()["access_token"])["amr"] == ["otp", "pwd"]
    wrong_password = await login(client, user["username"], "Wrong horse 42 battery")
    missing = await login(client, user["username"])
    # a missing code answers like a wrong password: the answer never confirms the password
    assert missing.status_code == 401
    assert missing.json() == wrong_password.json()
    wrong = f"{(int(totp_clock.next_code(totp)) + 1) % 1_000_000:06d}"
    bad = await login(client, user["username"], totp_code=wrong)
    assert bad.status_code == 401
    assert bad.json() == wrong_password.json()
    assert (await login(client, user["username"], totp_code=totp_clock.next_code(totp))).status_code == 429


async def test_director_must_enroll_totp_then_step_up(client: httpx.AsyncClient, totp_clock: TotpClock) -> None:
    director = await create_user(client, "director")
    refused = await login(client, director["username"])
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "totp_enrollment_required"
    enrollment_token = error["details"]["enrollment_token"]
    enrollment = claims(enrollment_token)
    assert enrollment["roles"] == []
    assert enrollment["accounts"] == []
    # the enrollment token opens nothing but /auth/totp/*
    assert (await client.get("/accounts", headers=bearer(enrollment_token))).status_code == 403
    totp = await enroll_totp(client, enrollment_token, totp_clock)
    ok = await login(client, director["username"], totp_code=totp_clock.next_code(totp))
    assert ok.status_code == 200, ok.text
    stepped = await client.post(
        "/auth/step-up", json={"totp_code": totp_clock.next_code(totp)}, headers=bearer(ok.json()["access_token"])
    )
    assert stepped.status_code == 200, stepped.text
    fresh = claims(stepped.json()["access_token"])
    assert fresh["amr"] == ["otp", "pwd"]
    assert (datetime.now(UTC) - fresh["auth_time"]).total_seconds() < 5
    wrong = await client.post("/auth/step-up", json={"totp_code": "000000"}, headers=bearer(ok.json()["access_token"]))
    assert wrong.status_code == 401 or totp.verify("000000")


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "viewer")
    first = (await login(client, user["username"])).json()
    second = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert (await client.get("/accounts", headers=bearer(rotated["access_token"]))).status_code == 200
    reuse = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "invalid_refresh_token"
    # the whole family is dead: the newer refresh token and the access tokens it issued
    assert (await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})).status_code == 401
    assert (await client.get("/accounts", headers=bearer(rotated["access_token"]))).status_code == 401


async def test_logout_revokes_access_and_refresh(client: httpx.AsyncClient) -> None:
    user = await create_user(client, "viewer")
    tokens = (await login(client, user["username"])).json()
    out = await client.post(
        "/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=bearer(tokens["access_token"])
    )
    assert out.status_code == 204
    after = await client.get("/accounts", headers=bearer(tokens["access_token"]))
    assert after.status_code == 401
    assert after.json()["error"]["message"] == "token revoked"
    assert (await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).status_code == 401


@pytest.mark.parametrize(
    ("password", "rule"),
    [("short1A!", "min_length"), ("onlylowercaseletters", "character_classes"), ("Password1234", "common_password")],
)
async def test_weak_passwords_are_refused_naming_the_rule(client: httpx.AsyncClient, password: str, rule: str) -> None:
    body = {"username": unique("weak"), "password": password, "roles": ["viewer"]}
    response = await client.post("/users", json=body, headers=admin_headers())
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "weak_password"
    assert response.json()["error"]["details"]["rule"] == rule


async def test_password_containing_the_username_is_refused(client: httpx.AsyncClient) -> None:
    name = unique("carol")
    body = {"username": name, "password": f"X9{name}!", "roles": ["viewer"]}
    response = await client.post("/users", json=body, headers=admin_headers())
    assert response.json()["error"]["details"]["rule"] == "contains_username"


async def test_unknown_roles_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    body = {"username": unique("dave"), "password": PASSWORD, "roles": ["superuser"]}
    response = await client.post("/users", json=body, headers=admin_headers())
    assert response.status_code == 422
    assert response.json()["error"]["details"]["fields"][0]["field"] == "body.roles.0"
    user = await create_user(client, "viewer")
    update = await client.put(f"/users/{user['user_id']}/roles", json={"roles": ["root"]}, headers=admin_headers())
    assert update.status_code == 422
    service = await client.put(f"/users/{user['user_id']}/roles", json={"roles": ["service"]}, headers=admin_headers())
    assert service.status_code == 422


async def test_admin_changes_are_audited_and_non_admins_are_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await create_account(client)
    user = await create_user(client, "viewer")
    await client.put(
        f"/users/{user['user_id']}/roles", json={"roles": ["operator"], "reason": "desk move"}, headers=admin_headers()
    )
    await client.post(f"/users/{user['user_id']}/grants", json={"account_id": account}, headers=admin_headers())
    revoked = await client.delete(f"/users/{user['user_id']}/grants/{account}", headers=admin_headers())
    assert revoked.status_code == 200
    assert revoked.json()["accounts"] == []
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT action, target FROM audit.audit_log WHERE chain = 'accounts' AND (target = :u OR target = :a)"
            ),
            {"u": user["user_id"], "a": account},
        )
        actions = sorted(row.action for row in rows)
    assert actions == ["account.created", "grant.added", "grant.revoked", "user.created", "user.roles_set"]
    operator = bearer(ISSUER.issue("op", [Role.OPERATOR], scopes=default_scopes([Role.OPERATOR]), accounts=["*"]))
    assert (
        await client.post(
            "/users", json={"username": "zz", "password": PASSWORD, "roles": ["viewer"]}, headers=operator
        )
    ).status_code == 403
    assert (await client.get("/users")).status_code == 401


async def test_grants_are_enforced_in_the_repository(
    client: httpx.AsyncClient, accounts_settings: AccountsSettings
) -> None:
    own, foreign = await create_account(client), await create_account(client)
    user = await create_user(client, "operator")
    await client.post(f"/users/{user['user_id']}/grants", json={"account_id": own}, headers=admin_headers())
    token = (await login(client, user["username"])).json()["access_token"]
    listed = await client.get("/accounts", headers=bearer(token))
    assert [row["account_id"] for row in listed.json()] == [own]
    assert (await client.get(f"/accounts/{foreign}", headers=bearer(token))).status_code == 404
    # directly through the repository, even when the token claims the foreign account too
    from shared.db import UnitOfWork, create_engine, sessionmaker_for

    engine = create_engine(accounts_settings)
    try:
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            repo = AccountsRepository(uow.session)
            visibility = Visibility.granted_to(user["user_id"], [own, foreign])
            assert [row["account_id"] for row in await repo.list_accounts(visibility)] == [own]
            assert await repo.account(foreign, visibility) is None
            assert await repo.account(own, visibility) is not None
    finally:
        await engine.dispose()


async def test_service_identity_gets_a_service_token(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/service-identities",
        json={"name": unique("hedge"), "scopes": ["orders:write"], "accounts": ["*"]},
        headers=admin_headers(),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = await client.post(
        "/auth/service-token", json={"client_id": body["client_id"], "client_secret": body["client_secret"]}
    )
    assert token.status_code == 200, token.text
    assert claims(token.json()["access_token"])["roles"] == ["service"]
    wrong = await client.post("/auth/service-token", json={"client_id": body["client_id"], "client_secret": "nope"})
    assert wrong.status_code == 401
