"""The hedge service's NAV comes from the OMS's balances over REST, read with a service token."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import text

from services.hedge.app import create_app as create_hedge
from services.hedge.config import HedgeSettings
from services.hedge.schemas import OverrideSet
from services.hedge.service import HedgeService
from services.oms.app import create_app as create_oms
from services.oms.config import OmsSettings
from services.oms.consumers import handle_command
from services.oms.service import OrderService
from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem
from shared.auth.roles import Role
from shared.auth.tokens import TokenIssuer
from shared.config import AetherSettings
from shared.db import UnitOfWork
from shared.events import Envelope
from tests.fake_venue import FakeVenue
from tests.helpers import eventually, own_database

KEY = generate_private_key()
OPERATOR = {
    "Authorization": "Bearer "
    + TokenIssuer(private_key_pem(KEY), "aether", "aether-platform").issue("op", [Role.OPERATOR], accounts=["*"])
}


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_nav") as url:
        yield url


def _common(settings: AetherSettings, url: str) -> dict[str, object]:
    return {
        **settings.model_dump(
            exclude={"jwt_public_key", "jwt_private_key", "service_name", "log_level", "database_url"}
        ),
        "database_url": SecretStr(url),
        "jwt_public_key": SecretStr(public_key_pem(KEY.public_key()).decode()),
        "log_level": "WARNING",
    }


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_nav_is_polled_from_the_oms_balances(
    settings: AetherSettings, module_database_url: str, redis_url: str
) -> None:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(redis_url)
    book = {"bids": [{"price": "99.9", "qty": "50"}], "asks": [{"price": "100", "qty": "50"}]}
    await redis.set("marketdata:book:BTC/USD", json.dumps(book))
    await redis.aclose()
    oms = create_oms(OmsSettings(**_common(settings, module_database_url)), venue=FakeVenue(price=Decimal(100)))
    async with oms.router.lifespan_context(oms):
        oms_transport = httpx.ASGITransport(app=oms)
        async with httpx.AsyncClient(transport=oms_transport, base_url="http://oms") as client:
            await eventually(lambda: _ready(client), timeout_s=20, message="oms ready")
            deposit = {"asset": "USD", "amount": "10000"}
            response = await client.post(f"/accounts/{account}/paper/deposits", json=deposit, headers=OPERATOR)
            assert response.status_code == 201, response.text
            order = {"account_id": account, "client_order_id": "nav-1", "symbol": "BTC/USD", "side": "buy"}
            response = await client.post(
                "/orders", json={**order, "type": "market", "quantity": "0.5"}, headers=OPERATOR
            )
            assert response.json()["status"] == "filled", response.text

        hedge_settings = HedgeSettings(
            **_common(settings, module_database_url),
            jwt_private_key=SecretStr(private_key_pem(KEY).decode()),
            oms_url="http://oms",
            accounts=[account],
            nav_poll_interval_s=0.1,
            commands_topic=f"test.hedge-nav-commands.{uuid.uuid4().hex[:10]}.v1",
            hedge_symbol="BTC/USD",
            order_events_topic=f"test.hedge-nav.{uuid.uuid4().hex[:10]}.v1",
            marketdata_book_topic=f"test.hedge-nav-book.{uuid.uuid4().hex[:10]}.v1",
            marketdata_trade_topic=f"test.hedge-nav-trade.{uuid.uuid4().hex[:10]}.v1",
        )
        hedge_app = create_hedge(hedge_settings, oms_transport=oms_transport)
        async with hedge_app.router.lifespan_context(hedge_app):
            service: HedgeService = hedge_app.state.runtime.extras["hedge"]
            async with UnitOfWork(service.sessionmaker) as uow:
                await service.observe_price(uow.session, "BTC/USD", Decimal(110), datetime.now(UTC))

            async def valued() -> bool:
                statuses = await service.statuses([account])
                return bool(statuses) and statuses[0].nav == Decimal("10004.8")  # 9,949.80 USD + 0.5 BTC x 110

            await eventually(valued, timeout_s=20, message="NAV from the OMS balances")
            status = await service.status(account)
            assert status.peak_nav == Decimal("10004.8")
            assert (status.current_fraction, status.computed_target) == (0, 0)
            assert status.open_order is None  # nothing hedged, nothing to hedge
            await _override_trades_once_through_the_oms(oms, service, account)


async def _override_trades_once_through_the_oms(oms: FastAPI, service: HedgeService, account: str) -> None:
    """An override to 0.5 sells base to the band edge (0.45 of 0.5 BTC); the command, delivered twice, is one OMS order."""
    expires = datetime.now(UTC) + timedelta(hours=1)
    await service.set_override(
        account, OverrideSet(target_fraction=Decimal("0.5"), reason="test", expires_at=expires), "user:risk"
    )
    status = await service.status(account)
    assert status.open_order is not None
    assert (status.open_order.client_order_id, status.open_order.side) == (f"hedge-{account}-1", "sell")
    assert status.open_order.quantity == Decimal("0.225")
    async with UnitOfWork(service.sessionmaker) as uow:
        rows = await uow.session.execute(
            text("SELECT payload FROM hedge.outbox WHERE event_type = 'SubmitOrder' AND key = :account"),
            {"account": account},
        )
        commands = [Envelope.model_validate(row.payload) for row in rows]
    assert len(commands) == 1
    orders: OrderService = oms.state.runtime.extras["orders"]
    for _ in range(2):  # at-least-once delivery: the OMS dedups on the deterministic client order id
        async with UnitOfWork(orders.sessionmaker) as uow:
            await handle_command(orders, uow.session, commands[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=oms), base_url="http://oms") as client:
        placed = (await client.get("/orders", params={"account_id": account}, headers=OPERATOR)).json()["items"]
    hedge_orders = [order for order in placed if order["client_order_id"].startswith("hedge-")]
    assert [(o["client_order_id"], o["side"], o["quantity"]) for o in hedge_orders] == [
        (f"hedge-{account}-1", "sell", "0.225")
    ]
