"""Hedge service against real PostgreSQL and Kafka: overrides that survive a restart with their history,
kill-switch recommendations raised once and re-armed, hedge commands with deterministic ids."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.hedge.adapters import HedgeAdapters
from services.hedge.app import create_app
from services.hedge.config import HedgeSettings
from services.hedge.consumers import handle_balance_event
from services.hedge.repository import HedgeRepository
from shared.app_factory import adapters_of
from shared.auth.keys import public_key_pem
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.balances import BalanceChanged
from shared.contracts.base import outbox_payload
from shared.contracts.orders import OrderFilled, SubmitOrder
from shared.contracts.registry import new_envelope, parse_as
from shared.db import UnitOfWork
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.marketdata import Trade, to_envelope
from tests.helpers import eventually, own_database
from tests.kit.auth import KEY, token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


RISK = token(Role.RISK)
DIRECTOR = token(Role.DIRECTOR)
VIEWER = token(Role.VIEWER)
OPERATOR = token(Role.OPERATOR)


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_api") as url:
        yield url


@pytest.fixture
def topics() -> dict[str, str]:
    """Every topic the service writes or reads, unique to the test."""
    names = ("commands", "order_events", "recommendation", "target", "marketdata_book", "marketdata_trade")
    return {f"{name}_topic": f"test.hedge-{name.replace('_', '-')}.{uuid.uuid4().hex[:10]}.v1" for name in names}


@pytest.fixture
def hedge_settings(settings: AetherSettings, module_database_url: str, topics: dict[str, str]) -> HedgeSettings:
    return HedgeSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        log_level="WARNING",
        vol_sample_interval_s=0,
        revalue_interval_s=3_600,  # balances come from the test (test_hedge_nav.py publishes them to Kafka)
        hedge_symbol=f"X{uuid.uuid4().hex[:8].upper()}/USD",  # volatility state is per symbol: one per test
        **topics,
    )


VERSIONS = itertools.count(1)  # BalanceChanged versions only grow, across restarts of the service too


def balance_changed(account: str, asset: str, total: str, reserved: str = "0", version: int | None = None) -> Envelope:
    """What the OMS publishes on oms.balance-events.v1 after a change of one asset balance."""
    event = BalanceChanged(
        account_id=account,
        asset=asset,
        total=Decimal(total),
        available=Decimal(total) - Decimal(reserved),
        reserved=Decimal(reserved),
        version=next(VERSIONS) if version is None else version,
        changed_at=datetime.now(UTC),
    )
    return Envelope.new(type=BalanceChanged.TYPE, producer="oms", aggregate_id=account, payload=outbox_payload(event))


class Hedge:
    def __init__(self, client: httpx.AsyncClient, adapters: HedgeAdapters) -> None:
        self.client = client
        self.adapters = adapters

    @property
    def symbol(self) -> str:
        return self.adapters.settings.hedge_symbol

    async def price(self, price: str, at: datetime) -> None:
        async with UnitOfWork(self.adapters.context.sessionmaker) as uow:
            await self.adapters.evaluation.observe_price(uow.session, self.symbol, Decimal(price), at)

    async def balances(self, account: str, totals: dict[str, str]) -> None:
        """One BalanceChanged per asset through the balance consumer's handler, then what the tick does once they
        are quiet; the account is tracked first (as a fill, an override or a policy would make it)."""
        for asset, total in totals.items():
            async with UnitOfWork(self.adapters.context.sessionmaker) as uow:
                await HedgeRepository(uow.session).ensure_account(account)
                await handle_balance_event(self.adapters, uow.session, balance_changed(account, asset, total))
        await self.adapters.evaluation.revalue(account)

    async def holdings(self, account: str, usd: str, base: str) -> None:
        await self.balances(account, {"USD": usd, self.adapters.settings.base_asset: base})

    async def status(self, account: str) -> dict[str, Any]:
        response = await self.client.get(f"/hedge/status/{account}", headers=VIEWER)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


HedgeFactory = Callable[..., AbstractAsyncContextManager[Hedge]]


@pytest.fixture
def start_hedge(hedge_settings: HedgeSettings) -> HedgeFactory:
    @asynccontextmanager
    async def start(**changes: Any) -> AsyncIterator[Hedge]:
        settings = hedge_settings.model_copy(update=changes) if changes else hedge_settings
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hedge") as client:
                await eventually(lambda: _ready(client), timeout_s=20, message="hedge ready")
                yield Hedge(client, adapters_of(app.state.runtime, HedgeAdapters))

    return start


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


def account_id() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


class TopicReader:
    """Reads every envelope of one topic from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=uuid.uuid4().hex
        )
        self.seen: list[Envelope] = []
        self.headers: list[list[tuple[str, bytes]]] = []  # of each envelope in `seen`

    def _take(self, batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                self.seen.append(Envelope.from_bytes(record.value))
                self.headers.append(list(record.headers or ()))

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, count: int, *, timeout_s: float = 20) -> list[Envelope]:
        async def enough() -> bool:
            self._take(await self.consumer.getmany(timeout_ms=200))
            return len(self.seen) >= count

        await eventually(enough, timeout_s=timeout_s, message=f"{count} envelopes")
        return self.seen

    async def settle(self, idle_ms: int = 1_500) -> list[Envelope]:
        """Whatever else arrives within `idle_ms` (to show that nothing more was published)."""
        self._take(await self.consumer.getmany(timeout_ms=idle_ms))
        return self.seen


# --- overrides ---------------------------------------------------------------------------------------------


async def test_override_survives_a_restart_with_its_history_and_audit(
    start_hedge: HedgeFactory, module_database_url: str
) -> None:
    account = account_id()
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    async with start_hedge() as hedge:
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "100")
        first = {"target_fraction": "0.3", "reason": "event risk into FOMC", "expires_at": expires}
        response = await hedge.client.put(f"/hedge/overrides/{account}", json=first, headers=RISK)
        assert response.status_code == 200, response.text
        second = {**first, "target_fraction": "0.45", "reason": "widen before the print"}
        response = await hedge.client.put(f"/hedge/overrides/{account}", json=second, headers=DIRECTOR)
        assert response.status_code == 200, response.text
        assert response.json()["effective_target"] == "0.45"

    async with start_hedge() as hedge:  # a new app on the same database
        status = await hedge.status(account)
        assert status["override"]["target_fraction"] == "0.45"
        assert status["override"]["active"] is True
        assert status["override"]["set_by"] == "user:alice"
        assert status["effective_target"] == "0.45"
        assert status["peak_nav"] == "10000"
        assert status["computed_target"] == "0"

        response = await hedge.client.request(
            "DELETE", f"/hedge/overrides/{account}", json={"reason": "print is out"}, headers=RISK
        )
        assert response.status_code == 200, response.text
        assert response.json()["override"] is None
        assert response.json()["effective_target"] == "0"
        history = (await hedge.client.get(f"/hedge/overrides/{account}/history", headers=VIEWER)).json()

    assert [(h["action"], h["target_fraction"], h["previous_fraction"]) for h in history] == [
        ("clear", None, "0.45"),
        ("set", "0.45", "0.3"),
        ("set", "0.3", None),
    ]
    assert [h["reason"] for h in history] == ["print is out", "widen before the print", "event risk into FOMC"]
    assert all(h["actor"] == "user:alice" for h in history)
    engine = create_async_engine(module_database_url)
    try:
        async with engine.connect() as conn:
            actions = (
                await conn.execute(
                    text("SELECT action FROM audit.audit_log WHERE chain = :chain ORDER BY position"),
                    {"chain": f"hedge:{account}"},
                )
            ).scalars()
            assert [a for a in actions if a.startswith("hedge.override")] == [
                "hedge.override_set",
                "hedge.override_set",
                "hedge.override_clear",
            ]
    finally:
        await engine.dispose()


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


async def test_overrides_need_risk_or_director_and_a_granted_account(start_hedge: HedgeFactory) -> None:
    account = account_id()
    body = {
        "target_fraction": "0.2",
        "reason": "test run",
        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    async with start_hedge() as hedge:
        for headers in (OPERATOR, VIEWER, token(Role.ADMIN)):
            response = await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=headers)
            assert response.status_code == 403
        foreign = token(Role.RISK, accounts=("someone-else",))
        assert (await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=foreign)).status_code == 403
        assert (await hedge.client.get(f"/hedge/status/{account}", headers=foreign)).status_code == 403
        assert (await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=RISK)).status_code == 200
        listed = (await hedge.client.get("/hedge/status", headers=token(Role.AUDITOR, accounts=(account,)))).json()
        assert [row["account_id"] for row in listed] == [account]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"target_fraction": "1.5"}, "target_fraction"),
        ({"target_fraction": "-0.1"}, "target_fraction"),
        ({"target_fraction": 0.2}, "target_fraction"),
        ({"reason": ""}, "reason"),
        ({"expires_at": "2020-01-01T00:00:00+00:00"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"surprise": "x"}, "surprise"),
    ],
)
async def test_bad_overrides_are_422_naming_the_field(
    start_hedge: HedgeFactory, change: dict[str, Any], field: str
) -> None:
    body = {"target_fraction": "0.2", "reason": "test run", "expires_at": "2099-01-01T00:00:00+00:00", **change}
    async with start_hedge() as hedge:
        response = await hedge.client.put(f"/hedge/overrides/{account_id()}", json=body, headers=RISK)
    assert response.status_code == 422, response.text
    assert field in response.text


# --- recommendations ---------------------------------------------------------------------------------------


async def test_recommendation_raised_once_rearmed_and_raised_again(
    start_hedge: HedgeFactory, topics: dict[str, str], kafka_bootstrap: str
) -> None:
    account = account_id()
    async with (
        TopicReader(kafka_bootstrap, topics["recommendation_topic"]) as events,
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


async def test_rearm_without_a_raised_recommendation_is_409(start_hedge: HedgeFactory) -> None:
    async with start_hedge() as hedge:
        response = await hedge.client.post(
            f"/hedge/recommendations/{account_id()}/rearm", json={"reason": "nothing"}, headers=DIRECTOR
        )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "nothing_to_rearm"


# --- hedge orders ------------------------------------------------------------------------------------------


async def test_hedge_command_has_a_deterministic_id_and_is_not_repeated(
    start_hedge: HedgeFactory, topics: dict[str, str], kafka_bootstrap: str
) -> None:
    account = account_id()
    async with (
        TopicReader(kafka_bootstrap, topics["commands_topic"]) as commands,
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
            await producer.send(topics["order_events_topic"], filled, key=account)
            await producer.send(topics["order_events_topic"], filled, key=account)
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
    start_hedge: HedgeFactory, topics: dict[str, str], kafka_bootstrap: str, hedge_settings: HedgeSettings
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
            await producer.send(topics["marketdata_trade_topic"], to_envelope(trade, "replay"), key=trade.symbol)
        finally:
            await producer.stop()

        async def priced() -> bool:
            await hedge.holdings(account, "0", "2")
            return (await hedge.status(account))["nav"] == "247"

        await eventually(priced, timeout_s=20, message="trade price used for NAV")


# --- per-account policy ------------------------------------------------------------------------------------

POLICY = {
    "vol_weight": "0.5",
    "drawdown_weight": "0.5",
    "vol_saturation": "0.02",
    "drawdown_saturation": "0.2",
    "floor": "0.3",
    "cap": "0.6",
    "band": "0.05",
    "pause_drawdown": "0.05",
    "reduce_only_drawdown": "0.1",
    "flatten_drawdown": None,
    "rearm_hysteresis": "0.02",
    "reason": "tighter for the treasury account",
}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        # A value out of its own range breaks the schema (request validation); a contradiction between two
        # schema-valid fields is the domain's `invalid_policy`.
        ({"floor": "0.7", "cap": "0.6"}, "cap", "invalid_policy"),
        ({"vol_weight": "-1"}, "vol_weight", "validation_error"),
        ({"drawdown_saturation": "0"}, "drawdown_saturation", "validation_error"),
        ({"band": "1"}, "band", "validation_error"),
        ({"pause_drawdown": "0.2", "reduce_only_drawdown": "0.1"}, "reduce_only_drawdown", "invalid_policy"),
        ({"flatten_drawdown": "0.08"}, "flatten_drawdown", "invalid_policy"),
        ({"cap": "1.2"}, "cap", "validation_error"),
    ],
)
async def test_contradicting_policies_are_422_naming_the_field(
    start_hedge: HedgeFactory, change: dict[str, Any], field: str, code: str
) -> None:
    account = account_id()
    async with start_hedge() as hedge:
        response = await hedge.client.put(f"/hedge/policies/{account}", json={**POLICY, **change}, headers=RISK)
        assert response.status_code == 422, response.text
        policy = (await hedge.client.get(f"/hedge/policies/{account}", headers=RISK)).json()
    error = response.json()["error"]
    assert (error["code"], error["details"]["field"]) == (code, field)
    assert policy["version"] == 0


async def test_account_policy_is_versioned_audited_and_drives_the_target(
    start_hedge: HedgeFactory, module_database_url: str
) -> None:
    account = account_id()
    async with start_hedge(orders_enabled=False) as hedge:
        default = (await hedge.client.get(f"/hedge/policies/{account}", headers=VIEWER)).json()
        assert (default["version"], default["floor"], default["cap"]) == (0, "0", "0.8")
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "10")
        assert (await hedge.status(account))["computed_target"] == "0"
        assert (await hedge.client.put(f"/hedge/policies/{account}", json=POLICY, headers=OPERATOR)).status_code == 403
        response = await hedge.client.put(f"/hedge/policies/{account}", json=POLICY, headers=RISK)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1
        status = await hedge.status(account)
        assert (status["computed_target"], status["policy_version"]) == ("0.3", 1)
        response = await hedge.client.put(
            f"/hedge/policies/{account}", json={**POLICY, "band": "0.1"}, headers=DIRECTOR
        )
        assert response.json()["version"] == 2
    async with start_hedge(orders_enabled=False) as hedge:
        policy = (await hedge.client.get(f"/hedge/policies/{account}", headers=VIEWER)).json()
        assert (policy["version"], policy["band"], policy["set_by"]) == (2, "0.1", "user:alice")
        assert (await hedge.status(account))["rebalance_band"] == "0.1"
    engine = create_async_engine(module_database_url)
    try:
        async with engine.connect() as conn:
            details = (
                await conn.execute(
                    text(
                        "SELECT details FROM audit.audit_log WHERE chain = :chain AND action = 'hedge.policy_set'"
                        " ORDER BY position"
                    ),
                    {"chain": f"hedge:{account}"},
                )
            ).scalars()
            assert [(d["version"], d["policy"]["band"], (d["previous"] or {}).get("band")) for d in details] == [
                (1, "0.05", None),
                (2, "0.1", "0.05"),
            ]
    finally:
        await engine.dispose()


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
