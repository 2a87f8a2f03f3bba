"""The hedge service's NAV comes from the OMS's `BalanceChanged` events on Kafka (its own copy in `hedge.balances`,
stale versions dropped, contract violations dead-lettered), not from the OMS's REST API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from services.hedge.adapters import HedgeAdapters
from services.hedge.app import create_app as create_hedge
from services.hedge.config import HedgeSettings
from services.hedge.errors import AccountNotTracked
from services.hedge.schemas import OverrideSet
from shared.app_factory import adapters_of
from shared.config import AetherSettings
from shared.contracts.balances import BalanceChanged
from shared.contracts.orders import SubmitOrder
from shared.contracts.registry import parse_as
from shared.db import UnitOfWork
from shared.events import Envelope
from shared.events.producer import EventProducer
from tests.helpers import eventually, own_database
from tests.kit.auth import jwt_settings
from tests.kit.events import TopicReader
from tests.kit.hedge import balance_changed


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_nav") as url:
        yield url


def _topic(name: str) -> str:
    return f"test.hedge-nav-{name}.{uuid.uuid4().hex[:10]}.v1"


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


def _broken(account: str) -> Envelope:
    """A BalanceChanged whose amounts do not add up (reserved + available != total)."""
    payload: dict[str, Any] = {
        "account_id": account,
        "asset": "BTC",
        "total": "1",
        "available": "1",
        "reserved": "1",
        "version": 99,
        "changed_at": datetime.now(UTC).isoformat(),
    }
    return Envelope.new(type=BalanceChanged.TYPE, producer="oms", aggregate_id=account, payload=payload)


async def test_nav_follows_balance_events_drops_stale_ones_and_sizes_within_the_free_balance(
    settings: AetherSettings, module_database_url: str, kafka_bootstrap: str
) -> None:
    account, untracked = f"acct-{uuid.uuid4().hex[:10]}", f"acct-{uuid.uuid4().hex[:10]}"
    balance_topic = _topic("balances")
    hedge_settings = HedgeSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        **jwt_settings(),
        log_level="WARNING",
        accounts=[account],
        revalue_interval_s=0.2,
        balance_quiet_s=0.2,
        hedge_symbol="BTC/USD",
        volatility_source="ewma",  # no analytics service here: the NAV is valued from prices
        balance_events_topic=balance_topic,
        commands_topic=_topic("commands"),
        order_events_topic=_topic("orders"),
        target_topic=_topic("targets"),
        recommendation_topic=_topic("recommendations"),
        marketdata_book_topic=_topic("book"),
        marketdata_trade_topic=_topic("trade"),
    )
    app = create_hedge(hedge_settings)
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="hedge-nav-test")
    await producer.start()
    try:
        async with (
            TopicReader(kafka_bootstrap, f"{balance_topic}.dlq") as dead_letters,
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hedge") as client,
        ):
            await eventually(lambda: _ready(client), timeout_s=20, message="hedge ready")
            hedge = adapters_of(app.state.runtime, HedgeAdapters)
            async with UnitOfWork(hedge.context.sessionmaker) as uow:
                await hedge.evaluation.observe_price(uow.session, "BTC/USD", Decimal(110), datetime.now(UTC))

            async def publish(*envelopes: Envelope) -> None:
                for envelope in envelopes:
                    await producer.send(balance_topic, envelope, key=envelope.aggregate_id)

            async def nav_is(expected: str) -> bool:
                statuses = await hedge.queries.statuses([account])
                return bool(statuses) and statuses[0].nav == Decimal(expected)

            await publish(
                balance_changed(account, "USD", "9949.8", version=1),
                balance_changed(account, "BTC", "0.5", reserved="0.3", version=1),
                balance_changed(untracked, "USD", "100", version=1),
            )
            await eventually(lambda: nav_is("10004.8"), timeout_s=20, message="NAV from the balance events")

            # A redelivered version and an older one arriving late are dropped; the violation goes to the DLQ.
            await publish(
                balance_changed(account, "USD", "1", version=1),
                _broken(account),
                balance_changed(account, "BTC", "0.6", reserved="0.45", version=3),
                balance_changed(account, "BTC", "5", version=2),
            )
            await eventually(lambda: nav_is("10015.8"), timeout_s=20, message="NAV from the newest versions")
            (dead,) = await dead_letters.until(1, timeout_s=30)
            assert (dead.payload["version"], dict(dead_letters.headers[0])["reason"]) == (99, b"contract_violation")
            async with UnitOfWork(hedge.context.sessionmaker) as uow:
                rows = await uow.session.execute(
                    text("SELECT account_id, asset, total, reserved, version FROM hedge.balances ORDER BY 1, 2")
                )
                stored = {(r.account_id, r.asset): (r.total, r.reserved, r.version) for r in rows}
            assert stored[(account, "USD")] == (Decimal("9949.8"), 0, 1)
            assert stored[(account, "BTC")] == (Decimal("0.6"), Decimal("0.45"), 3)
            assert stored[(untracked, "USD")] == (100, 0, 1)  # kept, but the account is not hedged
            with pytest.raises(AccountNotTracked):
                await hedge.queries.status(untracked)

            # An override to 0.5 would sell 0.27 of 0.6 BTC: only 0.15 is free, so the order is 0.15.
            expires = datetime.now(UTC) + timedelta(hours=1)
            body = OverrideSet(target_fraction=Decimal("0.5"), reason="test", expires_at=expires)
            status = await hedge.overrides.set_override(account, body, "user:risk")
            assert status.open_order is not None
            assert (status.open_order.side, status.open_order.quantity) == ("sell", Decimal("0.15"))
            async with UnitOfWork(hedge.context.sessionmaker) as uow:
                rows = await uow.session.execute(
                    text("SELECT payload FROM hedge.outbox WHERE event_type = 'SubmitOrder' AND key = :account"),
                    {"account": account},
                )
                commands = [parse_as(SubmitOrder, Envelope.model_validate(row.payload)) for row in rows]
            assert [(c.order.client_order_id, c.order.side.value, c.order.quantity) for c in commands] == [
                (f"hedge-{account}-1", "sell", Decimal("0.15"))
            ]
    finally:
        await producer.stop()
