"""Hedge service against real PostgreSQL and Kafka, what it does by itself: the peak NAV kept across a
restart, kill-switch recommendations raised once and re-armed, hedge commands with deterministic ids settled
once, prices from the market-data topic, unpriced assets, the status read model's few queries.

Overrides and per-account policies are in test_hedge_api_controls.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import event

from services.hedge.config import HedgeSettings
from services.hedge.repository import HedgeRepository
from shared.auth.roles import Role
from shared.contracts.orders import OrderFilled, SubmitOrder
from shared.contracts.registry import new_envelope, parse_as
from shared.db import UnitOfWork
from shared.domain.hedge import HedgeLevel
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.marketdata import Trade, to_envelope
from shared.observability.metrics import REGISTRY
from tests.helpers import eventually
from tests.kit.auth import token
from tests.kit.events import TopicReader
from tests.kit.factories import account_id
from tests.kit.hedge import DIRECTOR, OPERATOR, RISK, T0, Hedge, HedgeFactory

# --- NAV --------------------------------------------------------------------------------------------------


async def test_peak_nav_survives_a_restart(start_hedge: HedgeFactory) -> None:
    account = account_id()
    async with start_hedge(orders_enabled=False) as hedge:
        await hedge.price("100", T0)
        await hedge.holdings(account, "1000", "90")
    async with start_hedge(orders_enabled=False) as hedge:
        await hedge.price("80", T0 + timedelta(minutes=1))
        await hedge.holdings(account, "1000", "90")
        status = await hedge.status(account)
    assert (status["nav"], status["peak_nav"], status["drawdown"]) == ("8200", "10000", "0.18")


# --- recommendations ---------------------------------------------------------------------------------------


async def test_recommendation_raised_once_rearmed_and_raised_again(
    start_hedge: HedgeFactory, hedge_topics: dict[str, str], kafka_bootstrap: str
) -> None:
    account = account_id()
    async with (
        TopicReader(kafka_bootstrap, hedge_topics["recommendation_topic"]) as events,
        start_hedge(orders_enabled=False) as hedge,
    ):
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "100")  # peak 10,000
        await hedge.price("94", T0 + timedelta(minutes=1))
        for _ in range(3):  # drawdown 6 % three times: raised once
            await hedge.holdings(account, "0", "100")
        seen = await events.until(1)
        status = await hedge.status(account)
        assert [r["level"] for r in status["active_recommendations"]] == ["pause"]
        await eventually(lambda: _open_recommendations_exported(hedge), message="open recommendations exported")
        info = (await hedge.client.get("/hedge/info", headers=token(Role.VIEWER, accounts=(account,)))).json()
        assert [r["account_id"] for r in info["active_recommendations"]] == [account]

        await hedge.price("96", T0 + timedelta(minutes=2))  # 4 % drawdown: within the hysteresis
        await hedge.holdings(account, "0", "100")
        assert len(await events.settle()) == 1
        await hedge.price("99", T0 + timedelta(minutes=3))  # 1 % < 5 % - 2 %: re-armed by itself
        await hedge.holdings(account, "0", "100")
        await hedge.price("89", T0 + timedelta(minutes=4))  # 11 %: pause again, and reduce_only
        await hedge.holdings(account, "0", "100")
        await hedge.holdings(account, "0", "100")

        response = await hedge.client.post(
            f"/hedge/recommendations/{account}/rearm",
            json={"reason": "acknowledged", "level": "pause"},
            headers=OPERATOR,
        )
        assert response.status_code == 403
        response = await hedge.client.post(
            f"/hedge/recommendations/{account}/rearm", json={"reason": "acknowledged", "level": "pause"}, headers=RISK
        )
        assert response.status_code == 200, response.text
        assert [r["level"] for r in response.json()] == ["pause"]
        await hedge.holdings(account, "0", "100")  # still 11 %: pause is raised again after the re-arm
        seen = await events.until(6)
        seen = await events.settle()
        metrics = (await hedge.client.get("/metrics")).text
        assert account not in metrics  # /metrics is public: no account id in any label
        assert "aether_hedge_drawdown_max_ratio" in metrics
        assert 'aether_hedge_recommendations_rearmed_total{how="manual"}' in metrics

    described = [(e.type, e.payload["level"], e.payload.get("actor")) for e in seen]
    assert described == [
        ("KillSwitchRecommended", "pause", None),
        ("RecommendationRearmed", "pause", "hedge:auto-rearm"),
        ("KillSwitchRecommended", "pause", None),
        ("KillSwitchRecommended", "reduce_only", None),
        ("RecommendationRearmed", "pause", "user:alice"),
        ("KillSwitchRecommended", "pause", None),
    ]
    first = seen[0].payload
    assert set(first) == {"recommendation_id", "account_id", "level", "drawdown", "threshold", "raised_at"}
    assert (first["account_id"], first["drawdown"], first["threshold"]) == (account, "0.06", "0.05")
    assert all(e.aggregate_id == account for e in seen)


async def _open_recommendations_exported(hedge: Hedge) -> bool:
    """aether_hedge_open_recommendations equals the stored open rows of each level, pause among them."""
    async with UnitOfWork(hedge.adapters.context.sessionmaker) as uow:
        stored = await HedgeRepository(uow.session).count_open_recommendations()
    exported = {
        level.value: REGISTRY.get_sample_value("aether_hedge_open_recommendations", {"level": level.value})
        for level in HedgeLevel
    }
    return stored.get("pause", 0) >= 1 and exported == {level.value: stored.get(level.value, 0) for level in HedgeLevel}


async def test_rearm_without_a_raised_recommendation_is_409(start_hedge: HedgeFactory) -> None:
    async with start_hedge() as hedge:
        response = await hedge.client.post(
            f"/hedge/recommendations/{account_id()}/rearm", json={"reason": "nothing"}, headers=DIRECTOR
        )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "nothing_to_rearm"


# --- hedge orders ------------------------------------------------------------------------------------------


async def test_hedge_command_has_a_deterministic_id_and_is_not_repeated(
    start_hedge: HedgeFactory, hedge_topics: dict[str, str], kafka_bootstrap: str
) -> None:
    account = account_id()
    async with (
        TopicReader(kafka_bootstrap, hedge_topics["commands_topic"]) as commands,
        start_hedge() as hedge,
    ):
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "100")
        await hedge.price("90", T0 + timedelta(minutes=1))  # return -10 %: volatility saturates
        await hedge.holdings(account, "0", "100")  # drawdown 10 %: target 0.8 x (0.5 + 0.25) = 0.6
        await hedge.holdings(account, "0", "100")  # same again: the open order blocks a second one
        sent = await commands.until(1)
        status = await hedge.status(account)
        assert status["computed_target"] == "0.6"
        assert status["open_order"]["client_order_id"] == f"hedge-{account}-1"

        # The OMS fills it; the event comes twice (redelivery): the order is settled once.
        filled = _order_event(account, f"hedge-{account}-1", "filled", "55")
        producer = EventProducer(bootstrap=kafka_bootstrap, client_id="hedge-test")
        await producer.start()
        try:
            await producer.send(hedge_topics["order_events_topic"], filled, key=account)
            await producer.send(hedge_topics["order_events_topic"], filled, key=account)
        finally:
            await producer.stop()

        async def settled() -> bool:
            return (await hedge.status(account))["open_order"] is None

        await eventually(settled, message="hedge order settled")
        # Balances after selling 55 BTC at 90: at the band edge, so nothing more to do.
        await hedge.holdings(account, "4950", "45")
        sent = await commands.settle()
        status = await hedge.status(account)

    assert len(sent) == 1
    command = sent[0]
    assert command.type == "SubmitOrder"
    order = parse_as(SubmitOrder, command).order
    assert (order.client_order_id, order.side.value, order.type.value, order.quantity) == (
        f"hedge-{account}-1",
        "sell",
        "market",
        Decimal(55),
    )
    assert (status["current_fraction"], status["hedged_quantity"]) == ("0.55", "55")
    assert status["target_version"] == 1


def _order_event(account: str, client_order_id: str, status: str, filled: str) -> Envelope:
    """An OrderFilled as the OMS publishes it (one execution of the whole quantity)."""
    order_id = uuid.uuid4().hex
    event = OrderFilled(
        order_id=order_id,
        occurred_at=datetime.now(UTC),
        version=3,
        account_id=account,
        client_order_id=client_order_id,
        symbol="BTC/USD",
        side=OrderSide.SELL,
        status=OrderStatus(status),
        trade_id=uuid.uuid4().hex,
        quantity=Decimal(filled),
        price=Decimal(90),
        fee=Decimal(0),
        liquidity=Liquidity.TAKER,
        filled_quantity=Decimal(filled),
        leaves_quantity=Decimal(0),
        is_final=True,
    )
    return new_envelope(event, producer="oms", aggregate_id=order_id)


async def test_trades_from_the_marketdata_topic_move_the_price(
    start_hedge: HedgeFactory, hedge_topics: dict[str, str], kafka_bootstrap: str, hedge_settings: HedgeSettings
) -> None:
    account = account_id()
    trade = Trade(
        venue="paper",
        symbol=hedge_settings.hedge_symbol,
        trade_id=uuid.uuid4().hex,
        price=Decimal("123.5"),
        qty=Decimal(1),
        side="buy",
        timestamp=datetime.now(UTC),
    )
    async with start_hedge(orders_enabled=False) as hedge:
        producer = EventProducer(bootstrap=kafka_bootstrap, client_id="hedge-test")
        await producer.start()
        try:
            await producer.send(hedge_topics["marketdata_trade_topic"], to_envelope(trade, "replay"), key=trade.symbol)
        finally:
            await producer.stop()

        async def priced() -> bool:
            await hedge.holdings(account, "0", "2")
            return (await hedge.status(account))["nav"] == "247"

        await eventually(priced, timeout_s=20, message="trade price used for NAV")


async def test_an_unpriced_asset_holds_the_nav_instead_of_faking_a_drawdown(start_hedge: HedgeFactory) -> None:
    account = account_id()
    async with start_hedge(orders_enabled=False) as hedge:
        await hedge.price("100", T0)
        await hedge.holdings(account, "5000", "50")
        # The 5,000 USD went into an asset never priced.
        await hedge.balances(account, {"NOPRICE": "7", "USD": "0"})
        status = await hedge.status(account)
    assert (status["nav"], status["drawdown"], status["unpriced_assets"]) == ("10000", "0", ["NOPRICE"])
    assert status["active_recommendations"] == []


async def test_statuses_take_the_same_few_queries_for_any_number_of_accounts(start_hedge: HedgeFactory) -> None:
    async with start_hedge(orders_enabled=False) as hedge:
        await hedge.price("100", T0)
        statements: list[tuple[int, str]] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append((id(conn), statement))

        engine = hedge.adapters.context.sessionmaker.kw["bind"].sync_engine
        accounts: list[str] = []
        per_size = []
        for size in (1, 6):
            while len(accounts) < size:
                accounts.append(account_id())
                await hedge.holdings(accounts[-1], "100", "1")
            event.listen(engine, "before_cursor_execute", count)
            try:
                statuses = await hedge.adapters.queries.statuses(accounts)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert [s.account_id for s in statuses] == sorted(accounts)
            # The relay and the tick share the engine: count what ran on the connection of the read model.
            (own,) = {conn for conn, statement in statements if "DISTINCT ON (hedge.policies.account_id)" in statement}
            per_size.append(sum(1 for conn, _ in statements if conn == own))
            statements.clear()
    assert per_size[0] == per_size[1] <= 10
