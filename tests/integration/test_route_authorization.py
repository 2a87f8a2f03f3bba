"""Issue 12, items 1 and 2, through real tokens: the accounts service issues them (login, service token) and the
OMS and hitl services enforce them.

Item 1: every route needs its scope as well as its role; a service identity holding only `market_data:read`
cannot place or cancel orders, raise approval requests or read balances. Item 2: grants are per role; an
operator+auditor granted account A trades on A only (reads B through the auditor role), and a director+risk
granted A approves on A only.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pyotp
import pytest
from pydantic import SecretStr

from services.accounts.app import create_app as create_accounts_app
from services.accounts.config import AccountsSettings
from services.hitl.app import create_app as create_hitl_app
from services.hitl.config import HitlSettings
from shared.auth.roles import Role, default_scopes
from shared.clock import utc_now
from shared.config import AetherSettings
from tests.helpers import own_database
from tests.kit.auth import jwt_settings, token
from tests.kit.oms import paper_oms, serving
from tests.kit.paper import PaperMarket

PASSWORD = "Correct horse 42 battery"
ADMIN = token(Role.ADMIN)
TRADER = token(Role.OPERATOR, subject="op-seed")


@dataclass
class Platform:
    accounts: httpx.AsyncClient
    oms: httpx.AsyncClient
    hitl: httpx.AsyncClient


@pytest.fixture(scope="module")
def authz_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "authz") as url:
        yield url


@pytest.fixture
async def platform(
    settings: AetherSettings, authz_database_url: str, paper_market: PaperMarket, tmp_path: Path
) -> AsyncIterator[Platform]:
    database = SecretStr(authz_database_url)
    base = settings.model_dump(exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level"})
    accounts_settings = AccountsSettings(
        **{**base, "database_url": database, "local_kek_file": tmp_path / "kek.json"},
        **jwt_settings(private=True),
        log_level="WARNING",
    )
    suffix = uuid.uuid4().hex[:10]
    hitl_settings = HitlSettings(
        **{**base, "database_url": database},
        **jwt_settings(),
        log_level="WARNING",
        decisions_topic=f"test.hitl-decisions.{suffix}.v1",
        order_events_topic=f"test.order-events.{suffix}.v1",
        requests_consumer_group=f"hitl.test.{suffix}",
    )
    async with (
        serving(create_accounts_app(accounts_settings), "http://accounts") as accounts,
        serving(create_hitl_app(hitl_settings), "http://hitl") as hitl,
        paper_oms(settings, authz_database_url, paper_market) as (_, oms),
    ):
        yield Platform(accounts, oms, hitl)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def order(account: str) -> dict[str, Any]:
    return {
        "account_id": account,
        "client_order_id": unique("authz"),
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": "0.001",
        "limit_price": "1000",
    }


def approval_request(account: str) -> dict[str, Any]:
    return {
        "subject_type": "manual_trade",
        "subject_id": unique("authz"),
        "account_id": account,
        "payload": {"note": "authz"},
    }


async def funded_account(platform: Platform) -> str:
    """A trading account known to the accounts service, funded on the paper venue."""
    account = unique("acct")
    body = {"account_id": account, "name": "Desk", "kind": "company", "venue": "paper"}
    created = await platform.accounts.post("/accounts", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    deposit = {"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex}
    funded = await platform.oms.post(f"/accounts/{account}/paper/deposits", json=deposit, headers=ADMIN)
    assert funded.status_code in (200, 201), funded.text
    return account


async def user_granted(platform: Platform, roles: list[str], account: str) -> str:
    """A user holding `roles`, granted `account` only; returns the username."""
    body = {"username": unique("user"), "password": PASSWORD, "roles": roles}
    created = await platform.accounts.post("/users", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    user_id = created.json()["user_id"]
    granted = await platform.accounts.post(f"/users/{user_id}/grants", json={"account_id": account}, headers=ADMIN)
    assert granted.status_code == 200, granted.text
    return str(body["username"])


async def service_token(platform: Platform, scopes: list[str], account: str) -> dict[str, str]:
    body = {"name": unique("svc"), "scopes": scopes, "accounts": [account]}
    created = await platform.accounts.post("/service-identities", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    credentials = {key: created.json()[key] for key in ("client_id", "client_secret")}
    issued = await platform.accounts.post("/auth/service-token", json=credentials)
    assert issued.status_code == 200, issued.text
    return bearer(issued.json()["access_token"])


def claims_of(headers: dict[str, str]) -> dict[str, Any]:
    # The token was just issued by the accounts service under test; its claims are read back, not trusted.
    return dict(jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False}))


async def test_a_market_data_service_identity_cannot_trade_request_approvals_or_read_balances(
    platform: Platform,
) -> None:
    account = await funded_account(platform)
    seeded = await platform.oms.post("/orders", json=order(account), headers=TRADER)
    assert seeded.status_code == 201, seeded.text
    narrow = await service_token(platform, ["market_data:read"], account)
    assert claims_of(narrow)["scopes"] == ["market_data:read"]

    refused = {
        "place": await platform.oms.post("/orders", json=order(account), headers=narrow),
        "cancel": await platform.oms.post(f"/orders/{seeded.json()['order_id']}/cancel", headers=narrow),
        "balances": await platform.oms.get("/balances", params={"account_id": account}, headers=narrow),
        "request": await platform.hitl.post("/hitl/requests", json=approval_request(account), headers=narrow),
    }
    for name, response in refused.items():
        assert response.status_code == 403, (name, response.text)
        assert response.json()["error"]["code"] == "insufficient_scope", name
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"], name

    # Nothing refused was stored: the seeded order is the account's only one, still open; no approval request.
    listed = await platform.oms.get("/orders", params={"account_id": account}, headers=TRADER)
    assert [item["order_id"] for item in listed.json()["items"]] == [seeded.json()["order_id"]]
    assert listed.json()["items"][0]["status"] not in ("canceled", "pending_cancel")
    requests = await platform.hitl.get("/hitl/requests", params={"account_id": account}, headers=token(Role.AUDITOR))
    assert requests.status_code == 200, requests.text
    assert requests.json()["items"] == []

    # The same identity kind with the scopes for the job gets through.
    trading = await service_token(platform, ["orders:write", "accounts:read"], account)
    assert (await platform.oms.post("/orders", json=order(account), headers=trading)).status_code == 201
    assert (await platform.oms.get("/balances", params={"account_id": account}, headers=trading)).status_code == 200


async def test_an_operator_auditor_trades_only_on_the_granted_account_and_reads_the_others(
    platform: Platform,
) -> None:
    own, other = await funded_account(platform), await funded_account(platform)
    others_order = await platform.oms.post("/orders", json=order(other), headers=TRADER)
    assert others_order.status_code == 201, others_order.text
    other_id = others_order.json()["order_id"]
    username = await user_granted(platform, ["operator", "auditor"], own)
    logged_in = await platform.accounts.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    user = bearer(logged_in.json()["access_token"])

    assert (await platform.oms.post("/orders", json=order(own), headers=user)).status_code == 201
    foreign_place = await platform.oms.post("/orders", json=order(other), headers=user)
    assert foreign_place.status_code == 403, foreign_place.text
    foreign_cancel = await platform.oms.post(f"/orders/{other_id}/cancel", headers=user)
    assert foreign_cancel.status_code == 404, foreign_cancel.text  # the OMS hides other accounts' orders
    # Reading the other account passes through the auditor role.
    read = await platform.oms.get(f"/orders/{other_id}", headers=user)
    assert read.status_code == 200, read.text
    assert read.json()["status"] not in ("canceled", "pending_cancel")
    listed = await platform.oms.get("/orders", params={"account_id": other}, headers=user)
    assert [item["order_id"] for item in listed.json()["items"]] == [other_id]
    # What the login issued: one grant per role, the roles' default scopes.
    claims = claims_of(user)
    assert claims["grants"] == {"auditor": ["*"], "operator": [own]}
    assert set(claims["scopes"]) == default_scopes([Role.OPERATOR, Role.AUDITOR])


async def test_a_director_risk_approves_only_on_the_directors_granted_account(platform: Platform) -> None:
    own, other = unique("acct"), unique("acct")
    for account in (own, other):
        body = {"account_id": account, "name": "Desk", "kind": "company", "venue": "paper"}
        assert (await platform.accounts.post("/accounts", json=body, headers=ADMIN)).status_code == 201
    username = await user_granted(platform, ["director", "risk"], own)
    first = await platform.accounts.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert first.status_code == 403, first.text
    enrollment = bearer(first.json()["error"]["details"]["enrollment_token"])
    enrolled = await platform.accounts.post("/auth/totp/enroll", json={"password": PASSWORD}, headers=enrollment)
    assert enrolled.status_code == 200, enrolled.text
    totp = pyotp.parse_uri(enrolled.json()["provisioning_uri"])
    assert isinstance(totp, pyotp.TOTP)
    # The previous time step (accepted within the window) confirms; the current one logs in: two distinct codes.
    previous_code = totp.at(utc_now() - timedelta(seconds=30))
    confirmed = await platform.accounts.post(
        "/auth/totp/confirm", json={"totp_code": previous_code}, headers=enrollment
    )
    assert confirmed.status_code == 204, confirmed.text
    login = {"username": username, "password": PASSWORD, "totp_code": totp.now()}
    logged_in = await platform.accounts.post("/auth/login", json=login)
    assert logged_in.status_code == 200, logged_in.text
    director = bearer(logged_in.json()["access_token"])

    raised = {}
    for account in (own, other):
        created = await platform.hitl.post("/hitl/requests", json=approval_request(account), headers=TRADER)
        assert created.status_code == 201, created.text
        raised[account] = created.json()

    def vote(account: str) -> dict[str, str]:
        return {"payload_hash": raised[account]["payload_hash"], "reason": "authz check"}

    foreign = await platform.hitl.post(
        f"/hitl/requests/{raised[other]['request_id']}/approve", json=vote(other), headers=director
    )
    assert foreign.status_code == 404, foreign.text  # the risk role's reach does not widen the director's grants
    hidden = await platform.hitl.get(f"/hitl/requests/{raised[other]['request_id']}", headers=director)
    assert hidden.status_code == 404, hidden.text
    untouched = await platform.hitl.get(f"/hitl/requests/{raised[other]['request_id']}", headers=token(Role.AUDITOR))
    assert untouched.json()["status"] == "pending"
    approved = await platform.hitl.post(
        f"/hitl/requests/{raised[own]['request_id']}/approve", json=vote(own), headers=director
    )
    assert approved.status_code == 200, approved.text
    assert claims_of(director)["grants"] == {"director": [own], "risk": ["*"]}


async def test_an_enrollment_token_reaches_only_the_totp_routes(platform: Platform) -> None:
    username = (
        await platform.accounts.post(
            "/users", json={"username": unique("user"), "password": PASSWORD, "roles": ["director"]}, headers=ADMIN
        )
    ).json()["username"]
    first = await platform.accounts.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert first.status_code == 403, first.text
    enrollment = bearer(first.json()["error"]["details"]["enrollment_token"])
    beyond = {
        "step-up": await platform.accounts.post("/auth/step-up", json={"totp_code": "123456"}, headers=enrollment),
        "logout": await platform.accounts.post("/auth/logout", headers=enrollment),
        "accounts info": await platform.accounts.get("/accounts/info", headers=enrollment),
        "notifications": await platform.hitl.get("/hitl/notifications", headers=enrollment),
        "oms info": await platform.oms.get("/oms/info", headers=enrollment),
    }
    assert {name: response.status_code for name, response in beyond.items()} == dict.fromkeys(beyond, 403)
    assert (
        await platform.accounts.post("/auth/totp/enroll", json={"password": PASSWORD}, headers=enrollment)
    ).status_code == 200
