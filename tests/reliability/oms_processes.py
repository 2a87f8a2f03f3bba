"""Several OMS apps (`create_app`, each with `AETHER_PAPER_VENUE_URL` set) on one database, trading on one paper
venue process served by uvicorn on a loopback port: what runs when the platform runs several OMS processes.

The venue process is wrapped by `SubmitCounter`, the network between it and the OMS apps, which counts every
order submit that reaches it per (account, client order id).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.oms.adapters import oms_adapters
from services.oms.app import create_app
from services.oms.config import OmsSettings
from shared.db import create_engine
from shared.domain.book import OrderBook
from shared.marketdata import BookSnapshot, Level
from shared.venues.paper_feed import book_json, book_key
from shared.venues.paper_http import PaperHttpVenue
from shared.venues.paper_wire import API_PREFIX
from tests.helpers import eventually
from tests.kit.controls import seed_defaults
from tests.kit.paper_process import VENUE_TOKEN, PaperProcess, paper_process, paper_settings
from tests.reliability.oms_harness import BookLevels, operator_headers

SUBMIT_PATH = f"{API_PREFIX}/orders"


class SubmitCounter:
    """Passes every request to the venue app; counts order submits per (account, client order id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.submits: Counter[tuple[str, str]] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = json.loads(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request") or b"{}")
        self.submits[(body.get("account_id", ""), body.get("client_order_id", ""))] += 1
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)


@dataclass
class OmsProcesses:
    """`clients[i]` talks to OMS app i; all trade on `venue` (the process) and one database."""

    clients: list[httpx.AsyncClient]
    venue: PaperProcess
    counter: SubmitCounter
    redis: Redis

    async def set_book(self, symbol: str, bids: BookLevels, asks: BookLevels) -> None:
        """The book to the venue process (its engines and its update stream) and, as the paper feed does, the
        latest book to Redis (the OMS prices market buys from it)."""
        now = datetime.now(UTC)
        book = OrderBook(symbol)
        book.apply_snapshot(bids, asks, now)
        await self.redis.set(book_key(symbol), book_json(book))
        snapshot = BookSnapshot(
            venue="test",
            symbol=symbol,
            bids=[Level(price=p, qty=q) for p, q in bids],
            asks=[Level(price=p, qty=q) for p, q in asks],
            timestamp=now,
            sequence=1,
        )
        await self.venue.venue.on_book_snapshot(snapshot)


@asynccontextmanager
async def oms_processes(settings: OmsSettings, count: int) -> AsyncIterator[OmsProcesses]:
    """One paper venue process and `count` OMS apps on it (settings' database, Redis, Kafka), each ready."""
    engine = create_engine(settings, application_name="reliability-seed")
    try:
        await seed_defaults(engine)  # the controls' defaults (the OMS apps read private, silent controls topics)
    finally:
        await engine.dispose()
    counters: list[SubmitCounter] = []

    def network(app: ASGIApp) -> ASGIApp:
        counters.append(SubmitCounter(app))
        return counters[-1]

    venue_settings = paper_settings(settings, instruments=settings.instruments)
    async with AsyncExitStack() as stack:
        venue = await stack.enter_async_context(paper_process(venue_settings, network=network))
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        stack.push_async_callback(redis.aclose)
        clients = []
        for n in range(count):
            app = create_app(
                settings.model_copy(update={"paper_venue_url": venue.url, "paper_venue_token": SecretStr(VENUE_TOKEN)})
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=transport, base_url=f"http://oms-{n}", headers=operator_headers(), timeout=60
                )
            )

            async def ready(client: httpx.AsyncClient = client) -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=30, message=f"oms {n} ready")
            http_venue = oms_adapters(app.state.runtime).venue
            assert isinstance(http_venue, PaperHttpVenue)  # AETHER_PAPER_VENUE_URL: the OMS trades over HTTP

            async def following(http_venue: PaperHttpVenue = http_venue) -> bool:
                return http_venue.connected.is_set()

            await eventually(following, timeout_s=20, message=f"oms {n} follows the venue's stream")
            clients.append(client)
        try:
            yield OmsProcesses(clients, venue, counters[0], redis)
        finally:
            for symbol in settings.instruments:
                await redis.delete(book_key(symbol))
