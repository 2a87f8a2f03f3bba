"""RELIABILITY S5 (extended, issue 12): replayed TOTP codes and ended sessions get nothing.

Against the real accounts service (PostgreSQL, Redis): every replay of an accepted TOTP code (login, step-up,
enrollment, an older step inside the drift window, ten concurrent logins with one code) and every token of a
session that logout ended (with or without the refresh token, from a step-up token) must be refused. Writes
reports/reliability/S5-login-sessions.json; accepted must be 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.accounts.adapters import accounts_adapters
from services.accounts.app import create_app
from services.accounts.config import AccountsSettings
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.integration.test_accounts_api import PASSWORD, bearer, client_at, create_user, login, random_address
from tests.kit.auth import PRIVATE_PEM, PUBLIC_PEM, TotpClock
from tests.reliability.conftest import RecordWriter

CONCURRENT_LOGINS = 10


@pytest.fixture
def totp_clock() -> TotpClock:
    return TotpClock()


@pytest.fixture
async def app(settings: AetherSettings, tmp_path: Path, totp_clock: TotpClock) -> AsyncIterator[FastAPI]:
    accounts_settings = AccountsSettings(
        **settings.model_dump(
            exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level", "local_kek_file"}
        ),
        jwt_public_key=SecretStr(PUBLIC_PEM),
        jwt_private_key=SecretStr(PRIVATE_PEM.decode()),
        local_kek_file=tmp_path / "kek.json",
        log_level="WARNING",
        login_max_failures_per_user=100,  # replays are refused by the step check, not by the lockout
    )
    app = create_app(accounts_settings)
    async with app.router.lifespan_context(app):
        accounts_adapters(app.state.runtime).auth.totp.clock = totp_clock
        async with client_at(app, random_address()) as probe:
            await eventually(lambda: _ready(probe), timeout_s=20, message="accounts ready")
        yield app


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _replays(app: FastAPI, clock: TotpClock) -> dict[str, int]:
    """Status of each replayed code (200 = accepted = a violation)."""
    async with client_at(app, random_address()) as client:
        user = await create_user(client, "director")
        enrollment = (await login(client, user["username"])).json()["error"]["details"]["enrollment_token"]
        enrolled = await client.post("/auth/totp/enroll", json={"password": PASSWORD}, headers=bearer(enrollment))
        totp = pyotp.parse_uri(enrolled.json()["provisioning_uri"])
        assert isinstance(totp, pyotp.TOTP)
        confirm_code = clock.next_code(totp)
        assert (
            await client.post("/auth/totp/confirm", json={"totp_code": confirm_code}, headers=bearer(enrollment))
        ).status_code == 204
        cases = {"login with the enrollment code": (await login(client, user["username"], totp_code=confirm_code))}
        login_code = clock.next_code(totp)
        session = await login(client, user["username"], totp_code=login_code)
        assert session.status_code == 200, session.text
        access = bearer(session.json()["access_token"])
        cases["login code again"] = await login(client, user["username"], totp_code=login_code)
        cases["step-up with the login code"] = await client.post(
            "/auth/step-up", json={"totp_code": login_code}, headers=access
        )
        step_code = clock.next_code(totp)
        assert (await client.post("/auth/step-up", json={"totp_code": step_code}, headers=access)).status_code == 200
        cases["step-up code again"] = await client.post("/auth/step-up", json={"totp_code": step_code}, headers=access)
        cases["login with the step-up code"] = await login(client, user["username"], totp_code=step_code)
        older = totp.at(clock() - timedelta(seconds=30))
        cases["older step inside the drift window"] = await login(client, user["username"], totp_code=older)
        fresh = clock.next_code(totp)
    others = [client_at(app, random_address()) for _ in range(CONCURRENT_LOGINS)]
    try:
        answers = await asyncio.gather(*(login(other, user["username"], totp_code=fresh) for other in others))
    finally:
        for other in others:
            await other.aclose()
    assert any(answer.status_code == 200 for answer in answers)  # the code itself was good
    statuses = {name: answer.status_code for name, answer in cases.items()}
    # one of the concurrent logins is the legitimate use of the code; every further 200 is a replay
    statuses["concurrent logins with one code, beyond the first"] = (
        200 if sum(answer.status_code == 200 for answer in answers) > 1 else 401
    )
    return statuses


async def _ended_sessions(app: FastAPI, clock: TotpClock) -> dict[str, int]:
    """Status of each token of a session that logout ended (200 = accepted = a violation)."""
    async with client_at(app, random_address()) as client:
        user = await create_user(client, "viewer")
        plain = (await login(client, user["username"])).json()
        assert (await client.post("/auth/logout", headers=bearer(plain["access_token"]))).status_code == 204
        cases = {
            "access token after logout without refresh token": (
                await client.get("/accounts", headers=bearer(plain["access_token"]))
            ).status_code,
            "refresh token after logout without it": (
                await client.post("/auth/refresh", json={"refresh_token": plain["refresh_token"]})
            ).status_code,
        }
        rotated = (await login(client, user["username"])).json()
        newer = (await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})).json()
        assert (await client.post("/auth/logout", headers=bearer(newer["access_token"]))).status_code == 204
        cases["rotated session's refresh token after logout without it"] = (
            await client.post("/auth/refresh", json={"refresh_token": newer["refresh_token"]})
        ).status_code
        cases["rotated session's first access token"] = (
            await client.get("/accounts", headers=bearer(rotated["access_token"]))
        ).status_code
        with_token = (await login(client, user["username"])).json()
        out = await client.post(
            "/auth/logout",
            json={"refresh_token": with_token["refresh_token"]},
            headers=bearer(with_token["access_token"]),
        )
        assert out.status_code == 204
        cases["refresh token after logout with it"] = (
            await client.post("/auth/refresh", json={"refresh_token": with_token["refresh_token"]})
        ).status_code
    return cases


async def test_s5_replayed_codes_and_ended_sessions_get_nothing(
    app: FastAPI, totp_clock: TotpClock, write_reliability_record: RecordWriter, reliability_seed: int
) -> None:
    results = {**await _replays(app, totp_clock), **await _ended_sessions(app, totp_clock)}
    accepted = sorted(name for name, status in results.items() if status < 400)
    write_reliability_record(
        {
            "id": "S5-login-sessions",
            "seed": reliability_seed,
            "cases": len(results),
            "violations": len(accepted),
            "accepted": len(accepted),
            "results": results,
        }
    )
    assert accepted == [], results
