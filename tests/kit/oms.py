"""The OMS as `make up` runs it, on the paper venue it builds itself, fed from a test's `PaperMarket`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from services.oms.app import create_app as create_oms_app
from services.oms.config import OmsSettings
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.kit.auth import jwt_settings
from tests.kit.factories import ASKS, BIDS, Levels
from tests.kit.paper import PaperMarket


def oms_settings(settings: AetherSettings, database_url: str, market: PaperMarket, **overrides: Any) -> OmsSettings:
    """OMS settings for a test: its own database, the test key, quiet logs, fed from `market`."""
    fields: dict[str, Any] = {
        "database_url": SecretStr(database_url),
        **jwt_settings(),
        "log_level": "WARNING",
        "resolve_after_s": 0.2,
        "resolver_interval_s": 0.1,
        # The kit publishes a book once per test: staleness has its own test (test_oms_stale_market_data.py).
        "market_data_max_age_s": 3_600.0,
        **market.topics,
        **overrides,
    }
    return OmsSettings(**settings.model_dump(exclude={"service_name", "jwt_private_key", *fields}), **fields)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@asynccontextmanager
async def serving(app: FastAPI, base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client once its /readyz answers 200."""
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        await eventually(lambda: _ready(client), timeout_s=60, message=f"{base_url} ready")
        yield client


@asynccontextmanager
async def paper_oms(
    settings: AetherSettings,
    database_url: str,
    market: PaperMarket,
    *,
    bids: Levels = BIDS,
    asks: Levels = ASKS,
    **overrides: Any,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The OMS on the paper venue fed from `market`, ready, with the book `bids`/`asks` of BTC/USD applied."""
    app = create_oms_app(oms_settings(settings, database_url, market, **overrides))
    async with serving(app, "http://oms") as client:
        await market.publish_book(bids, asks)
        yield app, client
