"""Every service skeleton: probes, metrics, auth on everything else, readiness that tells the truth."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict
from pydantic import SecretStr as Secret

from shared import service_catalog
from shared.app_factory import ServiceSpec, build_service_app
from shared.auth.keys import private_key_pem, public_key_pem
from shared.auth.roles import Role
from shared.auth.tokens import TokenIssuer
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.kit.auth import KEY as PRIVATE_KEY
from tests.kit.controls import oms_settings_on, open_controls


@pytest.fixture(scope="module")
def app_settings(settings: AetherSettings) -> AetherSettings:
    public_pem = public_key_pem(PRIVATE_KEY.public_key()).decode()
    return settings.model_copy(update={"jwt_public_key": Secret(public_pem), "log_level": "WARNING"})


@pytest.fixture(scope="module")
def token(app_settings: AetherSettings) -> str:
    issuer = TokenIssuer(private_key_pem(PRIVATE_KEY), app_settings.jwt_issuer, app_settings.jwt_audience)
    return issuer.issue("tester", [Role.VIEWER])


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


async def _drained(client: httpx.AsyncClient, service: str, token: str) -> bool:
    info = await client.get(f"/{service}/info", headers={"Authorization": f"Bearer {token}"})
    return bool(info.json()["outbox_backlog"] == 0)


async def _ready(client: httpx.AsyncClient) -> httpx.Response | None:
    response = await client.get("/readyz")
    return response if response.status_code == 200 else None


@pytest.mark.parametrize("service", service_catalog.SERVICE_NAMES)
async def test_service_skeleton(service: str, app_settings: AetherSettings, token: str, kafka_bootstrap: str) -> None:
    module = importlib.import_module(service_catalog.service(service).app_module)
    settings = app_settings
    if service == "oms":  # ready once it holds the risk and hitl controls: this test's own, the defaults published
        async with open_controls(kafka_bootstrap) as controls:
            settings = oms_settings_on(app_settings, controls)
    app = module.create_app(settings)
    async with running(app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await eventually(lambda: _ready(client), timeout_s=20, message=f"{service} ready")
        assert ready is not None
        assert {"postgresql", "redis", "kafka"} <= set(ready.json()["checks"])

        unauthenticated = await client.get(f"/{service}/info")
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()["error"]["code"] == "unauthorized"

        info = await client.get(f"/{service}/info", headers={"Authorization": f"Bearer {token}"})
        assert info.status_code == 200
        assert info.json()["service"] == service
        # Risk and hitl publish their controls snapshot at start: the relay drains it.
        await eventually(lambda: _drained(client, service, token), timeout_s=20, message=f"{service} outbox drained")

        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert f'route="/{service}/info"' in metrics.text

        correlated = await client.get("/healthz", headers={"X-Correlation-ID": "corr-123"})
        assert correlated.headers["X-Correlation-ID"] == "corr-123"

        schema = (await client.get("/openapi.json")).json()
        assert f"/{service}/info" in schema["paths"]


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        ({"redis_url": Secret("redis://127.0.0.1:1/0")}, "redis"),
        ({"database_url": Secret("postgresql+psycopg://aether:aether@127.0.0.1:1/aether")}, "postgresql"),
        ({"kafka_bootstrap": "127.0.0.1:1"}, "kafka"),
    ],
)
async def test_unreachable_backend_is_503_with_reason(
    override: dict[str, object], failing: str, app_settings: AetherSettings
) -> None:
    from services.risk.app import create_app

    app = create_app(app_settings.model_copy(update=override))
    async with running(app) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks[failing]["ok"] is False
        assert checks[failing]["reason"].startswith(f"{failing}:")
        assert all(check["ok"] for name, check in checks.items() if name != failing)


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


async def test_malformed_json_is_400_and_schema_violations_422(app_settings: AetherSettings) -> None:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Echo) -> Echo:
        return body

    app = build_service_app(ServiceSpec(name="oms", title="t", description="d", routers=[router]), app_settings)
    async with running(app) as client:
        malformed = await client.post("/echo", content=b'{"text": ', headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_json"
        invalid = await client.post("/echo", json={"text": "hi", "extra": 1})
        assert invalid.status_code == 422
        assert invalid.json()["error"]["details"]["fields"][0]["field"] == "body.extra"
        assert (await client.post("/echo", json={"text": "hi"})).json() == {"text": "hi"}


def test_bad_configuration_stops_startup_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_JWT")}
    env["AETHER_DATABASE_POOL_SIZE"] = "lots"
    result = subprocess.run(
        [sys.executable, "-m", "aether", "serve", "oms"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "AETHER_DATABASE_POOL_SIZE" in lines[0]
