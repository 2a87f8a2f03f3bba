"""Stopping the real Kafka broker turns `/readyz` 503 with the reason; restarting it turns it 200 again,
without restarting the service."""

from __future__ import annotations

import asyncio

import httpx
from pydantic import SecretStr

from ops import stack
from services.oms.app import create_app
from shared.auth.keys import generate_private_key, public_key_pem
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.kit.controls import oms_settings_on, open_controls


async def test_readiness_follows_kafka_outage(settings: AetherSettings, kafka_bootstrap: str) -> None:
    public_pem = public_key_pem(generate_private_key().public_key()).decode()
    async with open_controls(kafka_bootstrap) as controls:  # the OMS is ready once it holds the controls
        oms_settings = oms_settings_on(settings.model_copy(update={"jwt_public_key": SecretStr(public_pem)}), controls)
    app = create_app(oms_settings)

    async def readyz(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/readyz")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://oms") as client:

            async def status_is(code: int) -> httpx.Response | None:
                response = await readyz(client)
                return response if response.status_code == code else None

            await eventually(lambda: status_is(200), timeout_s=20, message="ready before the outage")
            await asyncio.to_thread(stack.stop_kafka)
            try:
                down = await eventually(lambda: status_is(503), timeout_s=30, message="503 while Kafka is down")
                assert down is not None
                kafka = down.json()["checks"]["kafka"]
                assert kafka["ok"] is False
                assert kafka["reason"].startswith("kafka:")
                assert down.json()["checks"]["postgresql"]["ok"] is True
            finally:
                await asyncio.to_thread(stack.start_kafka)
            back = await eventually(lambda: status_is(200), timeout_s=60, message="ready again after restart")
            assert back is not None
