"""A backend outage answers 503 `backend_unavailable`, naming the backend; any other failure stays a 500."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.errors import BACKEND_UNAVAILABLE, install_error_handlers


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/boom")


@pytest.mark.parametrize(
    ("error", "backend"),
    [
        (OperationalError("SELECT 1", {}, ConnectionResetError("connection reset by peer")), "postgresql"),
        (PoolTimeoutError("QueuePool limit reached"), "postgresql"),
        (RedisConnectionError("Connection refused"), "redis"),
    ],
)
async def test_a_backend_outage_is_a_503_naming_the_backend(error: Exception, backend: str) -> None:
    response = await get(app_raising(error))
    assert response.status_code == 503
    body = response.json()["error"]
    assert body["code"] == BACKEND_UNAVAILABLE
    assert body["details"] == {"backend": backend}


async def test_a_bug_is_still_a_500() -> None:
    response = await get(app_raising(KeyError("bug")))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
