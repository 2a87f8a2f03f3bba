"""The OMS trading through the paper venue process over HTTP (`AETHER_PAPER_VENUE_URL`), against real PostgreSQL,
Redis and Kafka: the venue process's feed reads the test's market topics (book: bid 99.9, ask 100; Kraken's first
fee tier), the OMS follows the venue's update stream. Faults: the venue unreachable, and an answer that comes back
after the OMS stopped waiting."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import ASGIApp

from services.oms.adapters import oms_adapters
from services.oms.app import create_app as create_oms_app
from services.oms.metrics import VENUE_ERRORS
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.domain.types import AccountId, ClientOrderId
from shared.venues.base import VenueOrderStatus
from shared.venues.paper_http import PaperHttpVenue
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.factories import ASKS, BIDS
from tests.kit.oms import oms_settings, serving
from tests.kit.paper import PaperMarket
from tests.kit.paper_process import (
    VENUE_TOKEN,
    PaperProcess,
    SlowAnswers,
    free_port,
    paper_process,
    paper_settings,
    venue_token,
)

OPERATOR = token(Role.OPERATOR)
OMS_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_venue") as url:
        yield url


@dataclass
class Platform:
    """The OMS at `client`, the venue process (restartable on its port), the market."""

    client: httpx.AsyncClient
    market: PaperMarket
    venue_port: int
    start_venue: Callable[..., Any]
    stack: contextlib.AsyncExitStack
    process: PaperProcess | None = None

    async def order(self, account: str, **fields: Any) -> httpx.Response:
        body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
        return await self.client.post("/orders", json=body, headers=OPERATOR)

    async def get(self, order_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/orders/{order_id}", headers=OPERATOR)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def balances(self, account: str) -> dict[str, dict[str, str]]:
        response = await self.client.get("/balances", params={"account_id": account}, headers=OPERATOR)
        return {row["asset"]: row for row in response.json()["items"]}

    async def funded(self, usd: str = "10000") -> str:
        account = f"acct-{uuid.uuid4().hex[:10]}"
        response = await self.client.post(
            f"/accounts/{account}/paper/deposits",
            json={"asset": "USD", "amount": usd, "reference": uuid.uuid4().hex},
            headers=OPERATOR,
        )
        assert response.status_code == 201, response.text
        return account

    def venue_client(self) -> PaperHttpVenue:
        """A client of the venue process of our own (as another OMS would hold)."""
        return PaperHttpVenue(f"http://127.0.0.1:{self.venue_port}", venue_token)


@contextlib.asynccontextmanager
async def platform(
    settings: AetherSettings,
    database_url: str,
    market: PaperMarket,
    network: Callable[[ASGIApp], ASGIApp] | None = None,
) -> AsyncIterator[Platform]:
    port = free_port()
    venue_settings = paper_settings(
        settings,
        database_url=SecretStr(database_url),
        marketdata_book_topic=market.book_topic,
        marketdata_trade_topic=market.trade_topic,
    )
    async with contextlib.AsyncExitStack() as outer:
        venue_stack = contextlib.AsyncExitStack()
        outer.push_async_callback(venue_stack.aclose)

        async def start_venue() -> PaperProcess:
            return await venue_stack.enter_async_context(paper_process(venue_settings, port=port, network=network))

        process = await start_venue()
        app = create_oms_app(
            oms_settings(
                settings,
                database_url,
                market,
                paper_venue_url=process.url,
                paper_venue_token=SecretStr(VENUE_TOKEN),
                paper_venue_timeout_s=OMS_TIMEOUT_S,
            )
        )
        client = await outer.enter_async_context(serving(app, "http://oms"))
        venue = oms_adapters(app.state.runtime).venue
        assert isinstance(venue, PaperHttpVenue)  # AETHER_PAPER_VENUE_URL: the OMS trades over HTTP
        await eventually(_connected(venue), timeout_s=20, message="the OMS follows the venue's stream")
        await market.publish_book(BIDS, ASKS)
        yield Platform(client, market, port, start_venue, venue_stack, process)


def _connected(venue: PaperHttpVenue) -> Callable[[], Any]:
    async def probe() -> bool:
        return venue.connected.is_set()

    return probe


async def test_a_market_buy_fills_through_the_venue_process(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    async with platform(settings, module_database_url, paper_market) as oms:
        account = await oms.funded()

        response = await oms.order(account, side="buy", type="market", quantity="0.5")

        assert response.status_code == 201, response.text
        order = response.json()
        # The stream delivered the fill before the venue's answer was applied: filled in the answer already.
        assert (order["status"], order["average_fill_price"]) == ("filled", "100")
        balances = await oms.balances(account)
        # 0.5 x 100 = 50 USD, taker fee 0.4 % of 50 = 0.20 USD
        assert (balances["USD"]["total"], balances["USD"]["reserved"], balances["BTC"]["total"]) == (
            "9949.8",
            "0",
            "0.5",
        )


async def test_a_resting_limit_order_fills_from_the_stream_and_another_is_canceled(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    async with platform(settings, module_database_url, paper_market) as oms:
        account = await oms.funded()
        resting = (await oms.order(account, side="buy", type="limit", quantity="1", limit_price="95")).json()
        other = (await oms.order(account, side="buy", type="limit", quantity="2", limit_price="90")).json()
        assert resting["status"] == other["status"] == "accepted"

        await oms.market.publish_trade("94.9", "1")  # prints through 95 in the venue process: a maker fill

        async def filled() -> bool:
            return (await oms.get(resting["order_id"]))["status"] == "filled"

        await eventually(filled, message="the maker fill reached the OMS over the stream")
        canceled = await oms.client.post(f"/orders/{other['order_id']}/cancel", headers=OPERATOR)
        assert canceled.json()["status"] == "canceled"
        balances = await oms.balances(account)
        # maker fill 95 + 0.2375 fee; the cancel released the other reservation
        assert (balances["USD"]["total"], balances["USD"]["reserved"]) == ("9904.7625", "0")


async def test_venue_unreachable_leaves_the_order_submitted_and_the_resolver_places_it_once(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    async with platform(settings, module_database_url, paper_market) as oms:
        account = await oms.funded()
        await oms.stack.aclose()  # the venue process stops: connections to its port are refused

        response = await oms.order(account, side="buy", type="limit", quantity="1", limit_price="95")

        assert response.status_code == 201, response.text
        placed = response.json()
        assert placed["status"] == "submitted"  # recorded, nothing happened at the venue (TemporaryError)
        await oms.start_venue()

        async def accepted() -> bool:
            return (await oms.get(placed["order_id"]))["status"] == "accepted"

        await eventually(accepted, timeout_s=30, message="the resolver placed the order once the venue was back")
        venue = oms.venue_client()
        try:
            opened = await venue.open_orders(AccountId(account))
        finally:
            await venue.close()
        assert [o.client_order_id for o in opened] == [placed["client_order_id"]]


async def test_an_answer_after_the_timeout_is_ambiguous_and_resolved_by_query_not_resubmitted(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    slow: list[SlowAnswers] = []

    def network(app: ASGIApp) -> ASGIApp:
        slow.append(SlowAnswers(app, "POST", "/v1/orders", delay_s=OMS_TIMEOUT_S * 2))
        return slow[-1]

    async with platform(settings, module_database_url, paper_market, network=network) as oms:
        account = await oms.funded()
        ambiguous_before = _ambiguous_submits()

        response = await oms.order(account, side="buy", type="limit", quantity="1", limit_price="95")

        assert response.status_code == 201, response.text
        placed = response.json()
        # The venue placed it; the OMS gave up waiting for the answer (AmbiguousOutcome) and kept it SUBMITTED; the
        # resolver (every 0.1 s here) may have settled it by the time the response is read.
        assert _ambiguous_submits() == ambiguous_before + 1
        assert placed["status"] in ("submitted", "accepted")

        async def accepted() -> bool:
            return (await oms.get(placed["order_id"]))["status"] == "accepted"

        await eventually(accepted, timeout_s=30, message="the resolver learned the outcome by client id")
        venue = oms.venue_client()
        try:
            seen = await venue.query(AccountId(account), ClientOrderId(placed["client_order_id"]))
            opened = await venue.open_orders(AccountId(account))
        finally:
            await venue.close()
        assert seen is not None
        assert seen.status is VenueOrderStatus.OPEN
        assert [o.client_order_id for o in opened] == [placed["client_order_id"]]  # one order, never a new id
        assert slow[0].delayed == 1  # one submit reached the venue: the resolver queried, it did not resubmit


def _ambiguous_submits() -> float:
    return VENUE_ERRORS.labels(operation="submit", kind="AmbiguousOutcome")._value.get()


async def test_two_oms_processes_trade_one_account_on_the_one_venue_process(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    async with platform(settings, module_database_url, paper_market) as first:
        assert first.process is not None
        second_app = create_oms_app(
            oms_settings(
                settings,
                module_database_url,
                paper_market,
                paper_venue_url=first.process.url,
                paper_venue_token=SecretStr(VENUE_TOKEN),
                paper_venue_timeout_s=OMS_TIMEOUT_S,
            )
        )
        async with serving(second_app, "http://oms-2") as second_client:
            second_venue = oms_adapters(second_app.state.runtime).venue
            assert isinstance(second_venue, PaperHttpVenue)
            await eventually(_connected(second_venue), timeout_s=20, message="the second OMS follows the stream")
            second = Platform(second_client, paper_market, first.venue_port, first.start_venue, first.stack)
            account = await first.funded()

            bought = [
                await oms.order(account, side="buy", type="market", quantity="0.1")
                for oms in (first, second, first, second)
            ]

            assert [r.status_code for r in bought] == [201] * 4, [r.text for r in bought]
            assert {r.json()["status"] for r in bought} == {"filled"}
            venue = first.venue_client()
            try:
                fills = await venue.fills_since(AccountId(account), 0)
            finally:
                await venue.close()
            assert len(fills) == 4  # one venue order and one fill per OMS order: nothing doubled
            # 4 x 0.1 x 100 = 40 USD + 0.4 % taker fee 0.16 = 40.16; both OMS processes read the same ledger
            for oms in (first, second):
                balances = await oms.balances(account)
                assert (balances["USD"]["total"], balances["BTC"]["total"]) == ("9959.84", "0.4")
            listed = await first.client.get("/fills", params={"account_id": account}, headers=OPERATOR)
            assert len(listed.json()["items"]) == 4  # each fill booked once though both OMS heard every fill
