"""The director inbox page (server-rendered) against the real stack: cookies, CSRF, listing and voting.

The login round trip through the accounts service is covered by tests/e2e/test_director_page.py; here the
session cookie carries a token minted for the test, so the page's own rules are checked in isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import SecretStr

from services.hitl.app import create_app
from services.hitl.config import HitlSettings
from services.hitl.ui import CSRF_COOKIE, SESSION_COOKIE
from shared.auth.roles import Role, default_scopes
from shared.config import AetherSettings
from shared.web import CLIENT_ADDRESS_HEADER, RELAY_TOKEN_HEADER
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import hitl_settings, new_account, open_request, running
from tests.kit.auth import ISSUER


@pytest.fixture(scope="module")
def ui_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hitl_ui") as url:
        yield url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ui_settings(settings: AetherSettings, ui_database_url: str) -> HitlSettings:
    # Nothing listens on this port: a login attempt must fail visibly (503), never fall back.
    return hitl_settings(settings, ui_database_url, accounts_url=f"http://127.0.0.1:{_closed_port()}")


@pytest.fixture
async def client(ui_settings: HitlSettings) -> AsyncIterator[httpx.AsyncClient]:
    # https: the inbox cookies are Secure (__Host- prefix), a client sends them back over https only
    async with running(create_app(ui_settings), "https://hitl") as http:
        yield http


def session_cookie(subject: str, roles: list[Role]) -> str:
    now = datetime.now(UTC)
    return ISSUER.issue(
        subject, roles, scopes=default_scopes(roles), accounts=["*"], amr=["pwd", "otp"], auth_time=now, now=now
    )


async def csrf_of(client: httpx.AsyncClient, path: str = "/hitl/ui/login") -> str:
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def test_inbox_without_a_session_redirects_to_login(client: httpx.AsyncClient) -> None:
    answer = await client.get("/hitl/ui")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/hitl/ui/login")


async def test_login_page_sets_a_strict_httponly_csrf_cookie(
    client: httpx.AsyncClient, ui_settings: HitlSettings
) -> None:
    page = await client.get("/hitl/ui/login")
    assert page.status_code == 200
    assert 'name="totp_code"' in page.text
    cookie = page.headers["set-cookie"].lower()
    assert f"{CSRF_COOKIE.lower()}=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/;" in cookie
    assert "domain" not in cookie
    # Secure even when a proxy in front speaks plain http to the inbox: the __Host- prefix demands it
    async with running(create_app(ui_settings), "http://hitl") as plain:
        behind_proxy = await plain.get("/hitl/ui/login")
        assert "secure" in behind_proxy.headers["set-cookie"].lower()


async def test_login_refuses_a_wrong_csrf_token_and_reports_an_unreachable_accounts_service(
    client: httpx.AsyncClient,
) -> None:
    token = await csrf_of(client)
    form = {"username": "dir", "password": "pw", "totp_code": "123456"}
    forged = await client.post("/hitl/ui/login", data={**form, "csrf": "forged"})
    assert forged.status_code == 403
    down = await client.post("/hitl/ui/login", data={**form, "csrf": token})
    assert down.status_code == 503
    assert "unavailable" in down.text
    assert SESSION_COOKIE not in down.headers.get("set-cookie", "")


async def test_logout_forgets_the_cookie_and_says_when_revocation_failed(client: httpx.AsyncClient) -> None:
    client.cookies.set(SESSION_COOKIE, session_cookie("dir-out", [Role.DIRECTOR]))
    token = await csrf_of(client, "/hitl/ui")
    out = await client.post("/hitl/ui/logout", data={"csrf": token})
    assert out.status_code == 303
    assert "could%20not%20revoke" in out.headers["location"]  # nothing listens at accounts_url here
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]


async def test_director_sees_pending_requests_and_votes_through_the_forms(client: httpx.AsyncClient) -> None:
    account = new_account()
    approved = await open_request(client, account, requester="op-page")
    rejected = await open_request(client, account, requester="op-page")
    client.cookies.set(SESSION_COOKIE, session_cookie("dir-page", [Role.DIRECTOR]))
    page = await client.get("/hitl/ui")
    assert page.status_code == 200
    for request in (approved, rejected):
        assert request["subject_id"] in page.text
        assert request["payload_hash"] in page.text
    assert "op-page" in page.text
    assert "symbol: BTC/USD" in page.text
    assert "quantity: 20" in page.text
    token = await csrf_of(client, "/hitl/ui")

    forged = await client.post(
        f"/hitl/ui/requests/{approved['request_id']}/approve",
        data={"payload_hash": approved["payload_hash"], "csrf": "forged"},
    )
    assert forged.status_code == 303
    assert await _status(client, approved["request_id"]) == "pending"

    vote = await client.post(
        f"/hitl/ui/requests/{approved['request_id']}/approve",
        data={"payload_hash": approved["payload_hash"], "csrf": token, "reason": "fine"},
    )
    assert vote.status_code == 303
    assert await _status(client, approved["request_id"]) == "approved"

    no_reason = await client.post(
        f"/hitl/ui/requests/{rejected['request_id']}/reject",
        data={"payload_hash": rejected["payload_hash"], "csrf": token, "reason": " "},
    )
    assert "needs%20a%20reason" in no_reason.headers["location"]
    assert await _status(client, rejected["request_id"]) == "pending"
    await client.post(
        f"/hitl/ui/requests/{rejected['request_id']}/reject",
        data={"payload_hash": rejected["payload_hash"], "csrf": token, "reason": "too large"},
    )
    assert await _status(client, rejected["request_id"]) == "rejected"
    history = await client.get("/hitl/ui")
    assert f'id="history-{rejected["request_id"]}"' in history.text
    assert "too large" in history.text


async def test_the_page_refuses_the_requester_and_non_directors(client: httpx.AsyncClient) -> None:
    account = new_account()
    request = await open_request(client, account, requester="dir-self")
    client.cookies.set(SESSION_COOKIE, session_cookie("dir-self", [Role.DIRECTOR]))
    token = await csrf_of(client, "/hitl/ui")
    own = await client.post(
        f"/hitl/ui/requests/{request['request_id']}/approve",
        data={"payload_hash": request["payload_hash"], "csrf": token},
    )
    assert "self_approval" in own.headers["location"]
    assert await _status(client, request["request_id"]) == "pending"
    client.cookies.set(SESSION_COOKIE, session_cookie("op-x", [Role.OPERATOR]))
    assert (await client.get("/hitl/ui")).status_code == 403


async def _status(client: httpx.AsyncClient, request_id: str) -> str:
    token = session_cookie("reader", [Role.AUDITOR])
    answer = await client.get(f"/hitl/requests/{request_id}", headers={"Authorization": f"Bearer {token}"})
    return str(answer.json()["status"])


async def test_the_inbox_of_a_director_who_is_also_risk_holds_only_the_directors_accounts(
    client: httpx.AsyncClient,
) -> None:
    own, other = new_account(), new_account()
    mine = await open_request(client, own, requester="op-page")
    foreign = await open_request(client, other, requester="op-page")
    roles = [Role.DIRECTOR, Role.RISK]
    now = datetime.now(UTC)
    cookie = ISSUER.issue(
        "dir-risk",
        roles,
        scopes=default_scopes(roles),
        grants={Role.DIRECTOR: [own], Role.RISK: ["*"]},  # what a login grants a director+risk granted `own`
        amr=["pwd", "otp"],
        auth_time=now,
        now=now,
    )
    client.cookies.set(SESSION_COOKIE, cookie, path="/")
    page = await client.get("/hitl/ui")
    assert page.status_code == 200
    assert mine["subject_id"] in page.text
    assert foreign["subject_id"] not in page.text  # the risk role's every-account grant does not reach the inbox
    token = await csrf_of(client, "/hitl/ui")
    vote = await client.post(
        f"/hitl/ui/requests/{foreign['request_id']}/approve",
        data={"payload_hash": foreign["payload_hash"], "csrf": token, "reason": "not mine"},
    )
    assert vote.status_code == 303
    assert await _status(client, foreign["request_id"]) == "pending"


@contextlib.asynccontextmanager
async def fake_accounts(seen: list[dict[str, str]]) -> AsyncIterator[str]:
    """A stand-in accounts service on a real port that records the headers of each login and grants it."""
    accounts = FastAPI()

    @accounts.post("/auth/service-token")
    async def service_token() -> dict[str, object]:
        return {"access_token": "relay-token", "token_type": "bearer", "expires_in": 300}

    @accounts.post("/auth/login")
    async def login(request: Request) -> dict[str, object]:
        seen.append(dict(request.headers))
        return {"access_token": "session-token", "token_type": "bearer", "expires_in": 900}

    port = _closed_port()
    server = uvicorn.Server(uvicorn.Config(accounts, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _serving(server), timeout_s=20, message="fake accounts service")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


async def _serving(server: uvicorn.Server) -> bool:
    return server.started


async def test_login_rotates_the_csrf_token_and_relays_the_directors_address(
    settings: AetherSettings, ui_database_url: str
) -> None:
    seen: list[dict[str, str]] = []
    async with fake_accounts(seen) as accounts_url:
        relaying = hitl_settings(
            settings,
            ui_database_url,
            accounts_url=accounts_url,
            accounts_client_id="svc_inbox",
            accounts_client_secret=SecretStr("inbox-secret-for-tests"),
        )
        async with running(create_app(relaying), "https://hitl") as client:
            planted = await csrf_of(client)
            form = {"username": "dir", "password": "pw", "totp_code": "123456", "csrf": planted}
            answer = await client.post("/hitl/ui/login", data=form)
            assert answer.status_code == 303
            assert client.cookies.get(SESSION_COOKIE) == "session-token"
            assert client.cookies.get(CSRF_COOKIE) not in (None, planted)  # a planted token dies at login
    assert seen[0][CLIENT_ADDRESS_HEADER.lower()] == "127.0.0.1"  # httpx's in-process client address
    assert seen[0][RELAY_TOKEN_HEADER.lower()] == "relay-token"
