"""One OMS, two venues: a paper account on the in-process paper venue and Kraken accounts (`AETHER_ACCOUNT_VENUES`)
on the Kraken protocol fake (a real HTTP server on loopback, its own database), against real PostgreSQL, Redis and
Kafka. Each account's orders reach its own venue, fills are recorded under it, start-up reconciliation runs against
both, and a Kraken account without keys is refused with the reason, never traded on paper.

Kraken's private `executions` stream feeding the OMS (its fake: the private WebSocket v2, tokens checked against the
REST fake's GetWebSocketsToken; the tests share this module's databases, each costs a migration): a resting order
filled at the exchange reaches the OMS through the stream (the REST sync held off, TradesHistory never called); a
duplicated execution is applied once; a malformed frame and expired tokens are recovered from; with the stream down
the REST backstop catches the fill, and the stream's snapshot of it on reconnecting is not applied again."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr

from services.oms.adapters import oms_adapters
from services.oms.app import create_app as create_oms_app
from services.oms.config import OmsSettings
from services.oms.tables import fills
from shared.auth.roles import Role
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.crypto import LocalFileKeyProvider, encrypt_secret
from shared.crypto.store import credential_row_id
from shared.db import create_engine, sessionmaker_for
from shared.domain.types import AccountId, Asset
from shared.venues.kraken.adapter import KrakenVenue
from shared.venues.kraken.rate_limit import Tier
from shared.venues.kraken.ws_private import KrakenExecutions, KrakenExecutionStreams
from shared.venues.paper import PaperVenue
from shared.venues.router import VenueRouter
from tests.fakes.kraken_rest import KrakenRestFake
from tests.fakes.kraken_ws_private import INVALID_TOKEN, KrakenPrivateWsFake
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.factories import book_snapshot, trade
from tests.kit.oms import oms_settings, serving
from tests.kit.paper import PaperMarket
from tests.kit.paper_process import free_port

OPERATOR = token(Role.OPERATOR)
USD = Asset("USD")
_HELD_OFF_S = 3_600.0  # a REST sync interval no test waits for


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_venue_choice") as url:
        yield url


@pytest.fixture(scope="module")
def exchange_database_url(database_url: str) -> Iterator[str]:
    """The Kraken fake's matching engine keeps its books apart from the OMS's paper venue (another exchange)."""
    with own_database(database_url, "kraken_exchange") as url:
        yield url


@dataclass
class Exchange:
    """The Kraken fake and the mounted keys folder (`AETHER_ACCOUNT_SECRETS_DIR`)."""

    fake: KrakenRestFake
    secrets_dir: Path

    async def funded_account(self, account: AccountId | None = None, usd: str = "10000") -> AccountId:
        """A Kraken account (new unless given) with keys mounted and USD at the exchange."""
        account = account or AccountId(f"kr-{uuid.uuid4().hex[:10]}")
        api_key, secret = self.fake.register(account)
        (self.secrets_dir / account).mkdir()
        (self.secrets_dir / account / "api_key").write_text(api_key)
        (self.secrets_dir / account / "api_secret").write_text(secret)
        await self.fake.venue.deposit(account, USD, Decimal(usd), uuid.uuid4().hex)
        return account


@contextlib.asynccontextmanager
async def exchange(settings: OmsSettings, database_url: str) -> AsyncIterator[Exchange]:
    engine = create_engine(settings.model_copy(update={"database_url": SecretStr(database_url)}))
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments=settings.instrument_specs(),
        fee_schedules=settings.fee_schedules(),
        clock=utc_now,
        name="kraken-fake",
    )
    try:
        await venue.restore()
        await venue.on_book_snapshot(book_snapshot())  # bid 99.9, ask 100, like the paper market
        fake = KrakenRestFake(venue)
        with tempfile.TemporaryDirectory(prefix="kraken-secrets-") as folder:
            async with fake.serve():
                yield Exchange(fake, Path(folder))
    finally:
        await engine.dispose()


def venue_settings(
    settings: AetherSettings, database_url: str, market: PaperMarket, kraken: Exchange, routes: dict[str, str]
) -> OmsSettings:
    return oms_settings(
        settings,
        database_url,
        market,
        account_venues=",".join(f"{account}={venue}" for account, venue in routes.items()),
        kraken_url=kraken.fake.url,
        kraken_tier=Tier.PRO,
        kraken_timeout_s=5.0,
        kraken_maintain_interval_s=0.2,
        kraken_ws_auth_url=None,  # REST sync only here (test_kraken_executions.py runs the private stream)
        venue_retry_s=0.2,
        account_secrets_dir=kraken.secrets_dir,
    )


@contextlib.asynccontextmanager
async def oms(oms_config: OmsSettings, market: PaperMarket) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_oms_app(oms_config)
    async with serving(app, "http://oms") as client:
        await market.publish_book()
        yield client, oms_adapters(app.state.runtime)


async def order(client: httpx.AsyncClient, account: str, **fields: Any) -> httpx.Response:
    body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
    return await client.post("/orders", json=body, headers=OPERATOR)


async def deposit(client: httpx.AsyncClient, account: str, usd: str = "10000") -> httpx.Response:
    return await client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": usd, "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )


async def balances(client: httpx.AsyncClient, account: str) -> dict[str, dict[str, str]]:
    response = await client.get("/balances", params={"account_id": account}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    return {row["asset"]: row for row in response.json()["items"]}


async def fill_venues(config: OmsSettings, *accounts: str) -> dict[str, list[str]]:
    """The venue each account's recorded fills are under."""
    engine = create_engine(config)
    try:
        async with engine.connect() as conn:
            query = sa.select(fills.c.account_id, fills.c.venue).where(fills.c.account_id.in_(accounts))
            rows = (await conn.execute(query)).all()
    finally:
        await engine.dispose()
    found: dict[str, list[str]] = {account: [] for account in accounts}
    for account_id, venue in rows:
        found[account_id].append(venue)
    return found


async def test_each_account_trades_on_its_own_venue_and_one_without_keys_is_refused(
    settings: AetherSettings, module_database_url: str, exchange_database_url: str, paper_market: PaperMarket
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with exchange(base, exchange_database_url) as kraken:
        on_kraken = await kraken.funded_account()
        no_keys = AccountId(f"kr-nokeys-{uuid.uuid4().hex[:8]}")
        routes = {on_kraken: "kraken", no_keys: "kraken"}
        async with oms(venue_settings(settings, module_database_url, paper_market, kraken, routes), paper_market) as (
            client,
            adapters,
        ):
            router = adapters.venue
            assert isinstance(router, VenueRouter)
            report = adapters.reconciliation_status.report
            assert report.not_ready == {no_keys: "no exchange credentials"}
            # The Kraken account's ledger starts from the exchange's balances (reconciliation aligned them).
            assert (await balances(client, on_kraken))["USD"]["total"] == "10000"
            on_paper = f"pp-{uuid.uuid4().hex[:10]}"
            assert (await deposit(client, on_paper)).status_code == 201

            paper_buy = await order(client, on_paper, side="buy", type="market", quantity="0.5")
            kraken_buy = await order(client, on_kraken, side="buy", type="market", quantity="0.5")

            assert paper_buy.status_code == kraken_buy.status_code == 201, (paper_buy.text, kraken_buy.text)
            assert paper_buy.json()["status"] == "filled"

            async def kraken_filled() -> bool:
                got = await client.get(f"/orders/{kraken_buy.json()['order_id']}", headers=OPERATOR)
                return bool(got.json()["status"] == "filled")

            await eventually(kraken_filled, message="the Kraken fill reached the OMS")
            assert kraken.fake.seen.add_orders == [kraken_buy.json()["client_order_id"]]  # paper's never went there
            paper = router.venues["paper"]
            assert await paper.fills_since(AccountId(on_kraken), 0) == []  # nor Kraken's to paper
            assert len(await paper.fills_since(AccountId(on_paper), 0)) == 1
            assert await fill_venues(base, on_paper, on_kraken) == {
                on_paper: ["paper"],
                on_kraken: ["kraken"],
            }
            assert (await balances(client, on_kraken))["BTC"]["total"] == "0.5"

            refused = await order(client, no_keys, side="buy", type="market", quantity="0.5")
            not_funded = await deposit(client, no_keys)

            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "venue_not_ready"
            assert "no exchange credentials" in refused.json()["error"]["message"]
            assert not_funded.status_code == 409  # a Kraken account is never credited on paper
            assert kraken.fake.seen.add_orders == [kraken_buy.json()["client_order_id"]]
            assert await paper.open_orders(no_keys) == []
            assert await paper.balances(no_keys) == []

            # Its keys are mounted later: it is reconciled (ledger from Kraken's balances), then it trades there.
            await kraken.funded_account(no_keys, usd="500")

            async def admitted() -> bool:
                return no_keys not in adapters.orders.ctx.not_ready

            await eventually(admitted, message="the account is reconciled once its keys are there")
            assert (await balances(client, no_keys))["USD"]["total"] == "500"
            late = await order(client, no_keys, side="buy", type="limit", quantity="1", limit_price="95")
            assert (late.status_code, late.json()["status"]) == (201, "accepted"), late.text
            assert kraken.fake.seen.add_orders[-1] == late.json()["client_order_id"]
            canceled = await client.post(f"/orders/{late.json()['order_id']}/cancel", headers=OPERATOR)
            assert canceled.json()["status"] == "canceled"  # at Kraken: CancelOrder by its client id
            assert await kraken.fake.venue.open_orders(no_keys) == []


async def test_startup_reconciliation_runs_against_both_venues(
    settings: AetherSettings, module_database_url: str, exchange_database_url: str, paper_market: PaperMarket
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with exchange(base, exchange_database_url) as kraken:
        on_kraken = await kraken.funded_account()
        config = venue_settings(settings, module_database_url, paper_market, kraken, {on_kraken: "kraken"})
        async with oms(config, paper_market) as (client, _):
            on_paper = f"pp-{uuid.uuid4().hex[:10]}"
            assert (await deposit(client, on_paper)).status_code == 201
            paper_rest = (
                await order(client, on_paper, side="buy", type="limit", quantity="1", limit_price="95")
            ).json()
            kraken_rest = (
                await order(client, on_kraken, side="buy", type="limit", quantity="1", limit_price="95")
            ).json()
            assert paper_rest["status"] == kraken_rest["status"] == "accepted"

        # The OMS is down: both resting orders fill at their venues (a print through 95 at each).
        await kraken.fake.venue.on_trade(trade("94.9", "1"))
        paper_engine = create_engine(base)
        try:
            paper = PaperVenue(
                sessionmaker_for(paper_engine),
                instruments=base.instrument_specs(),
                fee_schedules=base.fee_schedules(),
                clock=utc_now,
            )
            await paper.restore()
            await paper.on_trade(trade("94.9", "1", at=datetime.now(UTC)))
        finally:
            await paper_engine.dispose()

        async with oms(config, paper_market) as (client, adapters):
            report = adapters.reconciliation_status.report
            for placed in (paper_rest, kraken_rest):
                got = (await client.get(f"/orders/{placed['order_id']}", headers=OPERATOR)).json()
                assert (got["status"], got["filled_quantity"]) == ("filled", "1"), got
            assert report.accounts_by_venue.get("kraken") == 1
            assert report.accounts_by_venue.get("paper", 0) >= 1
            # The paper fill is applied by the start-up reconciliation; Kraken's by it or by the REST sync worker,
            # which starts alongside it: each exactly once either way (fill_venues below).
            assert report.fills_applied >= 1
            assert not report.not_ready.keys() & {on_paper, on_kraken}
            venues = await fill_venues(base, on_paper, on_kraken)
            assert venues == {on_paper: ["paper"], on_kraken: ["kraken"]}
            # maker fill at 95, Kraken-fake fee schedule as paper's: the exchange's balance is the ledger's
            assert (await balances(client, on_kraken))["BTC"]["total"] == "1"


async def test_an_unreachable_kraken_keeps_readiness_red_until_it_answers(
    settings: AetherSettings,
    module_database_url: str,
    exchange_database_url: str,
    paper_market: PaperMarket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with exchange(base, exchange_database_url) as kraken:
        account = await kraken.funded_account()
        port = free_port()
        config = venue_settings(settings, module_database_url, paper_market, kraken, {account: "kraken"})
        app = create_oms_app(config.model_copy(update={"kraken_url": f"http://127.0.0.1:{port}"}))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://o") as client,
        ):

            async def reconciler_failed() -> bool:
                return any(
                    "background_task_failed" in r.getMessage() and "kraken Assets: ConnectError" in r.getMessage()
                    for r in caplog.records
                )

            await eventually(reconciler_failed, message="a start-up attempt met the unreachable Kraken")
            red = await client.get("/readyz")
            assert red.status_code == 503
            assert "reconciliation" in red.text
            assert not oms_adapters(app.state.runtime).reconciliation_status.done

            server = uvicorn.Server(uvicorn.Config(kraken.fake.app, host="127.0.0.1", port=port, log_config=None))
            serving_task = asyncio.create_task(server.serve())
            try:

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready, timeout_s=60, message="ready once Kraken answers")
                assert (await balances(client, account))["USD"]["total"] == "10000"
            finally:
                server.should_exit = True
                await serving_task


@contextlib.asynccontextmanager
async def streamed_oms(
    settings: AetherSettings,
    database_url: str,
    market: PaperMarket,
    kraken: Exchange,
    private: KrakenPrivateWsFake,
    account: AccountId,
    *also_routed: AccountId,
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, KrakenVenue, KrakenExecutions]]:
    """The OMS with `account` (and `also_routed`) on Kraken, once `account`'s executions stream is subscribed."""
    routes = dict.fromkeys((account, *also_routed), "kraken")
    config: OmsSettings = venue_settings(settings, database_url, market, kraken, routes)
    config = config.model_copy(update={"kraken_ws_auth_url": private.url, **overrides})
    async with oms(config, market) as (client, adapters):
        router = adapters.venue
        assert isinstance(router, VenueRouter)
        adapter = router.venues["kraken"]
        assert isinstance(adapter, KrakenVenue)

        async def subscribed() -> KrakenExecutions | None:
            streams = adapter.executions
            if not isinstance(streams, KrakenExecutionStreams):
                return None
            stream = streams.streams.get(account)
            return stream if stream is not None and stream.up() else None

        stream = await eventually(subscribed, timeout_s=30, message="the executions stream subscribed")
        yield client, adapters, adapter, stream


async def order_status(client: httpx.AsyncClient, placed: dict[str, Any]) -> str:
    got = await client.get(f"/orders/{placed['order_id']}", headers=OPERATOR)
    return str(got.json()["status"])


async def test_a_fill_reaches_the_oms_through_the_stream_once_and_faults_are_recovered_from(
    settings: AetherSettings, module_database_url: str, exchange_database_url: str, paper_market: PaperMarket
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with exchange(base, exchange_database_url) as kraken, KrakenPrivateWsFake(kraken.fake) as private:
        account = await kraken.funded_account()
        async with streamed_oms(
            settings,
            module_database_url,
            paper_market,
            kraken,
            private,
            account,
            kraken_maintain_interval_s=_HELD_OFF_S,
            kraken_backstop_interval_s=_HELD_OFF_S,
        ) as (client, _adapters, adapter, stream):
            placed = (await order(client, account, side="buy", type="limit", quantity="1", limit_price="95")).json()
            assert placed["status"] == "accepted", placed
            history_calls = kraken.fake.seen.calls.get("TradesHistory", 0)

            private.duplicate_next()  # the fill's execution is sent twice
            await kraken.fake.venue.on_trade(trade("94.9", "1"))

            await eventually(lambda: _is(order_status(client, placed), "filled"), message="the fill reached the OMS")
            assert adapter.delivered_by == {"stream": 1}  # told by the stream, never by the REST sync
            assert kraken.fake.seen.calls.get("TradesHistory", 0) == history_calls
            await eventually(lambda: _true(stream.stats.faults.get("duplicate") == 1), message="duplicate seen")
            assert await fill_venues(base, account) == {account: ["kraken"]}  # applied once
            assert (await balances(client, account))["BTC"]["total"] == "1"

            await private.send_malformed()
            await eventually(lambda: _true(stream.stats.faults.get("malformed") == 1), message="malformed counted")
            assert stream.up()

            # Tokens expire and the next ones are refused: the stream fetches a new token for every connection
            # until one is accepted.
            tokens = stream.stats.tokens
            kraken.fake.ws_token_lifetime_s = 0
            await private.expire_tokens()
            await eventually(
                lambda: _true(stream.stats.faults.get("subscribe_refused", 0) >= 1), message="expired token refused"
            )
            kraken.fake.ws_token_lifetime_s = 900
            await eventually(lambda: _true(stream.up()), timeout_s=30, message="subscribed with a fresh token")
            assert stream.stats.tokens >= tokens + 2
            assert private.refused
            assert set(private.refused) == {INVALID_TOKEN}

            # Still live after all that: the next fill arrives by the stream too.
            second = (await order(client, account, side="sell", type="limit", quantity="0.4", limit_price="101")).json()
            await kraken.fake.venue.on_trade(trade("101.5", "1"))
            await eventually(lambda: _is(order_status(client, second), "filled"), message="second fill")
            assert adapter.delivered_by == {"stream": 2}
            assert kraken.fake.seen.calls.get("TradesHistory", 0) == history_calls


async def sealed_credentials(config: OmsSettings, folder: Path) -> AccountId:
    """A Kraken account whose keys are in the accounts store, sealed with a key the OMS does not have."""
    account = AccountId(f"kr-sealed-{uuid.uuid4().hex[:8]}")
    other = LocalFileKeyProvider(folder / "another-kek.json")
    key_id = f"key-{uuid.uuid4().hex[:8]}"
    secret = base64.b64encode(os.urandom(64)).decode()
    engine = create_engine(config)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO accounts.trading_accounts (account_id, name, kind, venue)"
                    " VALUES (:a, :a, 'company', 'kraken')"
                ),
                {"a": account},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO accounts.exchange_credentials"
                    " (account_id, key_id, api_key, api_secret, fingerprint, kek_id) VALUES (:a, :k, :pk, :sk, 'fp', :kek)"
                ),
                {
                    "a": account,
                    "k": key_id,
                    "pk": encrypt_secret(other, b"K-sealed", credential_row_id(account, key_id, "api_key")),
                    "sk": encrypt_secret(other, secret.encode(), credential_row_id(account, key_id, "api_secret")),
                    "kek": other.current_key_id(),
                },
            )
    finally:
        await engine.dispose()
    return account


async def test_with_the_stream_down_the_rest_backstop_catches_the_fill_and_the_snapshot_is_not_applied_again(
    settings: AetherSettings,
    module_database_url: str,
    exchange_database_url: str,
    paper_market: PaperMarket,
    tmp_path: Path,
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with exchange(base, exchange_database_url) as kraken, KrakenPrivateWsFake(kraken.fake) as private:
        account = await kraken.funded_account()
        sealed = await sealed_credentials(base, tmp_path)
        async with streamed_oms(
            settings,
            module_database_url,
            paper_market,
            kraken,
            private,
            account,
            sealed,
            kraken_maintain_interval_s=_HELD_OFF_S,
            kraken_backstop_interval_s=0.2,
        ) as (client, adapters, adapter, stream):
            # Item 5: keys that cannot be decrypted keep that account's venue not ready with the reason; no token,
            # no stream, no order anywhere (never paper).
            not_ready = adapters.reconciliation_status.report.not_ready
            assert not_ready[sealed].startswith("credentials cannot be decrypted"), not_ready
            refused = await order(client, sealed, side="buy", type="market", quantity="0.5")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "venue_not_ready"
            assert "credentials cannot be decrypted" in refused.json()["error"]["message"]
            assert sealed not in adapter.accounts()
            assert sealed not in adapter.executions.streams
            assert kraken.fake.seen.add_orders == []

            placed = (await order(client, account, side="buy", type="limit", quantity="1", limit_price="95")).json()
            assert placed["status"] == "accepted", placed

            await private.set_down(True)
            await eventually(lambda: _true(not stream.up()), message="the stream is down")
            await kraken.fake.venue.on_trade(trade("94.9", "1"))

            await eventually(
                lambda: _is(order_status(client, placed), "filled"), message="the backstop caught the fill"
            )
            assert adapter.delivered_by == {"rest": 1}
            assert private.sent_executions == 0  # nothing could reach the OMS by the stream
            assert stream.stats.faults.get("disconnect", 0) >= 1

            await private.set_down(False)
            await eventually(lambda: _true(stream.up()), timeout_s=30, message="the stream is back")
            # Its snapshot lists the same trade (snap_trades): told already, so not told again.
            await eventually(lambda: _true(stream.stats.faults.get("duplicate") == 1), message="snapshot deduplicated")
            assert adapter.delivered_by == {"rest": 1}
            assert await fill_venues(base, account) == {account: ["kraken"]}
            assert (await balances(client, account))["BTC"]["total"] == "1"


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value
